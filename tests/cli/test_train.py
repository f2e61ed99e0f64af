"""`alexnetc train/eval/predict/plot` end to end on a tiny AlexNet-family spec and the digits."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from alexnetc.backends.train import loop, metrics
from alexnetc.cli.main import main

from helpers import fill

TINY = """\
network Tiny
input 17x17x3
towers 2
train batch=32, epochs=2, lr=0.01, patience=2
augment flip=false, ten_crop=true
init std=0.05
conv1: Conv(5,2, std=0.01) x8 + ReLU; ResNorm(3); MaxPool(3,2)   -> 3x3x8
conv2: Conv(3,1, pad=1, groups=2, bias=1) x16 + ReLU; MaxPool(3,2) -> 1x1x16
fc6: FC(32, bias=1) + ReLU; Dropout(0.5)
fc7: FC(CLASSES) + Softmax
"""


pytestmark = pytest.mark.torch_threads(1)


def spec(tmp: Path, classes: int = 10, name: str = "tiny.net") -> Path:
    path = tmp / name
    path.write_text(TINY.replace("CLASSES", str(classes)))
    return path


def train(*args: str | Path) -> int:
    """On the CPU, where resuming is exact to the bit (cuDNN's backward need not be)."""
    return main(["train", *map(str, args), "--devices", "cpu"])


def weights(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    out = {f"model.{k}": v for k, v in state["model"].items()}
    for i, s in state["optimiser"]["state"].items():
        out[f"velocity.{i}"] = s["velocity"]
    return out


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-epoch run of the tiny spec on the digits, shared by the read-only tests."""
    tmp = tmp_path_factory.mktemp("trained")
    torch.set_num_threads(1)
    assert train(spec(tmp), "--out", tmp / "run", "--epochs", "2") == 0
    return tmp / "run"


def test_training_leaves_no_global_float_state(tmp_path: Path) -> None:
    """fit flushes denormals to zero while it runs (CPU speed) and puts the flag back: the
    caller's own maths, and every later test, see IEEE subnormals again."""
    tiny = 1e-40  # a float32 subnormal
    assert train(spec(tmp_path), "--out", tmp_path / "r", "--max-steps", "1") == 0
    assert torch.tensor([tiny]).item() != 0.0


def test_compiled_training_matches_eager(tmp_path: Path) -> None:
    """--compile: the first step runs eagerly (it times the fused kernels on a GPU), the rest
    compiled; three steps end at the eager run's weights, to float rounding.  Without dropout:
    compiled code draws its random masks from another generator than eager PyTorch."""
    s = spec(tmp_path)
    s.write_text(s.read_text().replace("; Dropout(0.5)", ""))
    assert train(s, "--out", tmp_path / "e", "--max-steps", "3") == 0
    assert train(s, "--out", tmp_path / "c", "--max-steps", "3", "--compile") == 0
    we, wc = weights(tmp_path / "e"), weights(tmp_path / "c")
    assert we.keys() == wc.keys()
    for k in we:
        torch.testing.assert_close(wc[k], we[k], rtol=1e-4, atol=1e-6, msg=k)


def test_channels_last_training_matches_nchw(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU the model and its batches are channels_last (NHWC): the same training, to
    float rounding, and a checkpoint that resumes.  Forced here on the CPU."""
    from alexnetc.backends.train import run

    s = spec(tmp_path)
    assert train(s, "--out", tmp_path / "nchw", "--max-steps", "4") == 0
    monkeypatch.setattr(run, "memory_format", lambda device: torch.channels_last)
    assert train(s, "--out", tmp_path / "nhwc", "--max-steps", "2") == 0
    state = torch.load(tmp_path / "nhwc" / "checkpoint.pt", weights_only=True)
    conv = state["model"]["conv1.conv.towers.0.weight"]
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert train(s, "--out", tmp_path / "nhwc", "--max-steps", "4", "--resume") == 0
    a, b = weights(tmp_path / "nchw"), weights(tmp_path / "nhwc")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.gpu
def test_gpu_training_with_every_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                        ) -> None:
    """The GPU path end to end: channels_last, bf16, torch.compile after an eager first step
    that times the fused kernels' variants, then a resume and eval (synthetic data: the GPU
    machine need not have scikit-learn)."""
    from alexnetc.backends.kernels import choose

    choose.forget()
    s = spec(tmp_path)
    gpu = ["--devices", "cuda:0", "--amp", "bf16", "--compile", "--data", "synthetic"]
    assert main(["train", str(s), "--out", str(tmp_path / "r"), "--max-steps", "4", *gpu]) == 0
    kinds = {key[0] for key in choose.chosen()}
    assert kinds == {"fwd", "bwd"}, choose.chosen()  # measured in the eager first step
    assert main(["train", str(s), "--out", str(tmp_path / "r"), "--resume", "--epochs", "1",
                 *gpu]) == 0
    assert main(["eval", str(tmp_path / "r")]) == 0
    assert "top-1 error" in capsys.readouterr().out


def test_short_digits_run_learns(trained: Path) -> None:
    rows = metrics.read(trained / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1.0, 2.0]
    assert rows[-1]["val_top1_err"] < 0.6  # chance is 0.9
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert {"checkpoint.pt", "metrics.csv", "spec.net", "config.json", "curves.png",
            "kernels.png"} <= {p.name for p in trained.iterdir()}


def test_resume_after_an_epoch_ends_with_the_same_weights(trained: Path, tmp_path: Path) -> None:
    s = spec(tmp_path)
    assert train(s, "--out", tmp_path / "b", "--epochs", "1") == 0
    assert train(s, "--out", tmp_path / "b", "--epochs", "2", "--resume") == 0
    assert_same_weights(trained, tmp_path / "b")
    a, b = metrics.read(trained / "metrics.csv"), metrics.read(tmp_path / "b" / "metrics.csv")
    for key in ("train_loss", "val_loss", "val_top1_err", "lr", "step"):
        assert [r[key] for r in a] == [r[key] for r in b]


def test_sigterm_mid_epoch_checkpoints_and_resumes_exactly(
        trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    real_step = loop.train_step

    def step_then_signal(tr: loop.Trainer, batch: loop.Batch, stop: loop.Stop | None = None
                         ) -> float:
        value = real_step(tr, batch, stop)
        if tr.step == 50:  # epoch 2, batch 5 of 45
            os.kill(os.getpid(), signal.SIGTERM)
        return value

    s = spec(tmp_path)
    monkeypatch.setattr(loop, "train_step", step_then_signal)
    assert train(s, "--out", tmp_path / "b", "--epochs", "2") == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM at epoch 2, batch 5" in capsys.readouterr().out
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 50
    monkeypatch.setattr(loop, "train_step", real_step)
    assert train(s, "--out", tmp_path / "b", "--resume") == 0
    assert_same_weights(trained, tmp_path / "b")


def test_max_steps_stops_with_a_resumable_checkpoint(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert train(spec(tmp_path), "--out", tmp_path / "r", "--max-steps", "3") == 0
    out = capsys.readouterr().out
    assert "stopped after --max-steps 3 at epoch 1, batch 3" in out and "--resume" in out
    assert not (tmp_path / "r" / "curves.png").exists()


def test_resume_after_max_steps_runs_to_the_end(trained: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """--max-steps holds for one invocation: the resume command it prints finishes the run,
    to the weights of a run never stopped (step 30 is mid-epoch 1 of 45 batches)."""
    s = spec(tmp_path)
    assert train(s, "--out", tmp_path / "b", "--max-steps", "30") == 0
    assert "stopped after --max-steps 30" in capsys.readouterr().out
    assert train(s, "--out", tmp_path / "b", "--resume") == 0
    assert "stopped after" not in capsys.readouterr().out
    assert_same_weights(trained, tmp_path / "b")
    assert train(s, "--out", tmp_path / "b", "--resume", "--epochs", "3", "--max-steps", "5") == 2
    assert "--max-steps 5 is not beyond the 90 steps" in capsys.readouterr().err


def test_network_without_convolutions_trains_and_plots(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """An MLP is a valid spec: curves are drawn, kernels are skipped with a note."""
    s = tmp_path / "mlp.net"
    s.write_text("network MLP\ninput 8x8x3\ntrain epochs=1\nfc1: FC(32) + ReLU\n"
                 "fc2: FC(10) + Softmax\n")
    assert train(s, "--out", tmp_path / "r") == 0
    out = capsys.readouterr().out
    assert "no kernels.png: MLP has no convolution" in out
    assert (tmp_path / "r" / "curves.png").exists()
    assert not (tmp_path / "r" / "kernels.png").exists()
    assert main(["plot", str(tmp_path / "r")]) == 0
    assert "no kernels.png: MLP has no convolution" in capsys.readouterr().out


def test_a_diverging_run_is_told_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A finite but exploded loss (raw ±100 pixels into N(0, 1) weights) gets a warning that
    names the fix, before any NaN."""
    s = tmp_path / "big.net"
    s.write_text("input 17x17x3\ntrain epochs=1\ninit std=1\nc: Conv(5,2) x8 + ReLU\n"
                 "f: FC(10)\n")
    train(s, "--out", tmp_path / "r")
    out = capsys.readouterr().out
    assert "training has diverged" in out and "smaller --lr" in out


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(
        trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = (run / "checkpoint.pt").read_bytes()
    assert train(run / "spec.net", "--out", run, "--resume", "--epochs", "4", "--lr", "1e9") == 1
    err = capsys.readouterr().err
    assert "the loss became" in err and "last good checkpoint" in err
    assert "Traceback" not in err
    assert (run / "checkpoint.pt").read_bytes() == before


def test_resume_with_a_different_spec_is_refused(trained: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    other = spec(tmp_path, name="other.net")
    other.write_text(other.read_text().replace("FC(32", "FC(48"))
    assert train(other, "--out", trained, "--resume") == 1
    assert "was written for a different spec" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_checkpoint_is_a_clear_error(trained: Path, tmp_path: Path, damage: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    ckpt = run / "checkpoint.pt"
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 3] if damage == "truncate" else b"\x13" * 1000)
    assert train(run / "spec.net", "--out", run, "--resume") == 1
    assert main(["eval", str(run)]) == 1
    err = capsys.readouterr().err
    assert err.count(f"{ckpt} is truncated or corrupt") == 2 and "Traceback" not in err


def test_existing_run_needs_resume(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train(trained / "spec.net", "--out", trained) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_resume_without_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train(spec(tmp_path), "--out", tmp_path / "none", "--resume") == 2  # a missing path
    assert "no checkpoint at" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--lr", "-1"], "--lr must be at least 0"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--devices", "cuda:7"], "--devices"),
])
def test_bad_flags_are_usage_errors(tmp_path: Path, flags: list[str], message: str,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    if "cuda:7" in flags and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    args = ["train", str(spec(tmp_path)), "--out", str(tmp_path / "r"), *flags]
    assert main(args) == 2
    assert message in capsys.readouterr().err


def test_missing_data_folder_names_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train(spec(tmp_path), "--out", tmp_path / "r", "--data", tmp_path / "nope") == 2
    err = capsys.readouterr().err
    assert f"no such data folder: {tmp_path / 'nope'}" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # refused before anything was built or written
    assert main(["eval", str(tmp_path), "--data", str(tmp_path / "nope")]) == 2


def test_eval_centre_and_ten_crop(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(trained), "--ten-crop"]) == 0
    out = capsys.readouterr().out
    last = metrics.read(trained / "metrics.csv")[-1]
    assert f"top-1 error {100 * last['val_top1_err']:.2f}%" in out  # same model, same images
    assert "10-crop: top-1 error" in out and "on 360 images" in out
    assert main(["eval", str(trained), "--no-ten-crop"]) == 0
    assert "10-crop" not in capsys.readouterr().out


def test_predict_prints_top5_labels_with_probabilities(trained: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    paths = []
    for i in (0, 1):
        img = Image.fromarray((d.images[i] * 255 / 16).astype("uint8")).resize((40, 40))
        paths.append(tmp_path / f"digit{d.target[i]}.png")
        img.save(paths[-1])
    assert main(["predict", str(trained), *map(str, paths)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 12 and lines[0] == str(paths[0]) and lines[6] == str(paths[1])
    for block in (lines[1:6], lines[7:12]):
        labels = [ln.split()[0] for ln in block]
        probs = [float(ln.split()[1].rstrip("%")) for ln in block]
        assert len(set(labels)) == 5 and set(labels) <= {str(c) for c in range(10)}
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 100.01


def test_predict_unreadable_image(trained: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    assert main(["predict", str(trained), str(bad)]) == 1
    assert f"cannot read image {bad}" in capsys.readouterr().err


def test_plot_writes_pngs(trained: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    for name in ("curves.png", "kernels.png"):
        (run / name).unlink()
    assert main(["plot", str(run)]) == 0
    for name in ("curves.png", "kernels.png"):
        assert (run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_trains_on_an_image_folder_skipping_a_bad_file(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 16), ("val", 4)):
        for c, colour in enumerate(((200, 30, 30), (30, 30, 200))):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                noise = torch.randint(-20, 20, (3,), generator=g).tolist()
                Image.new("RGB", (24, 20), tuple(v + d for v, d in zip(colour, noise,
                                                                        strict=True))).save(
                    folder / f"{i}.jpg")
    (root / "train" / "class0" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    s = spec(tmp_path, classes=2)
    assert train(s, "--data", root, "--out", tmp_path / "r", "--epochs", "2",
                 "--batch-size", "8", "--workers", "1") == 0
    out = capsys.readouterr().out
    assert f"skipping unreadable image {root / 'train' / 'class0' / 'broken.jpg'}" in out
    assert "1 unreadable image(s) were skipped" in out
    assert f"on {root}: 33 train / 8 val images" in out  # listed, then one skipped
    assert "top-5" not in out  # 2 classes: every label is in the top 5
    assert math.isnan(metrics.read(tmp_path / "r" / "metrics.csv")[-1]["val_top5_err"])


def test_check_path_does_not_import_torch() -> None:
    code = ("import sys; from alexnetc.cli.main import build_parser; build_parser(); "
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.slow
def test_alexnet_small_reaches_95_percent_on_digits(tmp_path: Path) -> None:
    """The README's main job: the shipped spec, no flags but --out, ≥ 95% test accuracy."""
    torch.set_num_threads(2)
    spec_path = Path(__file__).parents[2] / "specs" / "alexnet-small.net"
    assert train(spec_path, "--out", tmp_path / "run") == 0
    rows = metrics.read(tmp_path / "run" / "metrics.csv")
    assert rows[-1]["val_top1_err"] <= 0.05


def test_lenet5_learns_the_digits_with_its_own_recipe(tmp_path: Path) -> None:
    """The shipped LeNet-5 with no flags: its recipe, not AlexNet's defaults (which leave it at
    chance), takes it past 94 % in its 20 short epochs."""
    spec_path = Path(__file__).parents[2] / "specs" / "lenet5.net"
    assert train(spec_path, "--out", tmp_path / "run") == 0
    rows = metrics.read(tmp_path / "run" / "metrics.csv")
    assert len(rows) == 20 and rows[-1]["val_top1_err"] <= 0.06


@pytest.mark.parametrize("argv", [["eval"], ["predict", "--", "x.png"], ["plot"]])
def test_missing_run_folder_is_a_usage_error(argv: list[str], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    cmd, *rest = argv
    assert main([cmd, str(tmp_path / "nope"), *rest]) == 2
    assert "no such run folder" in capsys.readouterr().err


# Weights of std 1 on raw pixels: an ε of 3e38 sends them to inf in one step, 1e20 keeps them
# finite but so large that the validation loss is NaN.
BIG = "network Big\ninput 17x17x3\ntrain epochs=1\ninit std=1\nc: Conv(5,2) x8 + ReLU\nf: FC(10)\n"


def test_weights_that_became_infinite_are_never_saved(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    s = tmp_path / "big.net"
    s.write_text(BIG)
    assert train(s, "--out", tmp_path / "r", "--lr", "3e38", "--max-steps", "1") == 1
    err = capsys.readouterr().err
    assert "the weights became non-finite (model.c.conv.towers.0.weight holds inf)" in err
    assert "no checkpoint was written" in err and "internal error" not in err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
    # Over a good checkpoint: that one is kept, and the message says which it is.
    run = tmp_path / "good"
    assert train(s, "--out", run, "--lr", "1e-6", "--max-steps", "1") == 0
    before = (run / "checkpoint.pt").read_bytes()
    assert train(s, "--out", run, "--resume", "--lr", "3e38", "--max-steps", "2") == 1
    err = capsys.readouterr().err
    assert f"{run / 'checkpoint.pt'} (step 1, epoch 1 batch 1) is the last good checkpoint" in err
    assert f"alexnetc train {s} --out {run} --resume --lr" in err
    assert (run / "checkpoint.pt").read_bytes() == before
    assert train(s, "--out", run, "--resume", "--lr", "1e-6", "--max-steps", "2") == 0


def test_a_validation_loss_of_nan_is_not_checkpointed(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """One step an epoch (a batch larger than the data), finite weights, NaN predictions."""
    s = tmp_path / "big.net"
    s.write_text(BIG)
    run = tmp_path / "r"
    assert train(s, "--out", run, "--lr", "1e20", "--batch-size", "2048") == 1
    err = capsys.readouterr().err
    assert "the validation loss became nan at the end of epoch 1" in err
    assert "no checkpoint was written" in err and "internal error" not in err
    assert not (run / "checkpoint.pt").exists()
    assert metrics.read(run / "metrics.csv") == []  # no row for an epoch never saved


def test_a_non_finite_checkpoint_on_disk_is_a_clear_error(
        trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """As an older alexnetc wrote them: eval, predict and --resume refuse it in one line."""
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state["model"]["fc7.fc.towers.1.bias"][0] = math.nan
    torch.save(state, run / "checkpoint.pt")
    Image.new("RGB", (20, 20), (9, 9, 9)).save(tmp_path / "a.png")
    assert main(["eval", str(run)]) == 1
    assert main(["predict", str(run), str(tmp_path / "a.png")]) == 1
    assert train(run / "spec.net", "--out", run, "--resume", "--epochs", "3") == 1
    err = capsys.readouterr().err
    assert err.count(f"{run / 'checkpoint.pt'} cannot be used: model.fc7.fc.towers.1.bias "
                     "holds NaN") == 3
    assert "internal error" not in err


def test_every_run_file_has_the_same_mode(trained: Path) -> None:
    """Checkpoints are no more private than the rest: another user can evaluate the run."""
    modes = {p.name: p.stat().st_mode for p in trained.iterdir() if p.is_file()}
    assert modes["checkpoint.pt"] == modes["spec.net"] == modes["metrics.csv"]


def test_out_naming_a_file_is_a_usage_error(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for resume in ([], ["--resume"]):
        assert train(spec(tmp_path), "--out", notes, *resume) == 2
        assert f"--out {notes} is a file, not a run folder" in capsys.readouterr().err
    assert notes.read_text() == "mine"


def test_out_on_a_read_only_disk(small_disk: Path, remount_read_only: Callable[[], None],
                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    remount_read_only()
    run = small_disk / "run"
    assert train(spec(tmp_path), "--out", run, "--max-steps", "1") == 1
    err = capsys.readouterr().err
    assert f"cannot write {run}: the file system is read-only" in err
    assert "no checkpoint was written" in err and "internal error" not in err


@pytest.mark.parametrize("damage", ["full", "read-only"])
def test_a_disk_that_fails_mid_run_keeps_the_last_checkpoint(
        small_disk: Path, remount_read_only: Callable[[], None], tmp_path: Path, damage: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    s, run = spec(tmp_path), small_disk / "run"
    ckpt = run / "checkpoint.pt"
    assert train(s, "--out", run, "--max-steps", "1") == 0
    before = ckpt.read_bytes()
    if damage == "full":
        fill(small_disk)
    else:
        remount_read_only()
    assert train(s, "--out", run, "--resume", "--max-steps", "2") == 1
    err = capsys.readouterr().err
    why = "the disk is full" if damage == "full" else "the file system is read-only"
    assert f"cannot write {ckpt}: {why}" in err and "internal error" not in err
    assert f"{ckpt} (step 1, epoch 1 batch 1) is the last good checkpoint" in err
    assert f"continue from it with: alexnetc train {s} --out {run} --resume" in err
    assert ckpt.read_bytes() == before
    assert torch.load(ckpt, weights_only=True)["step"] == 1
    assert {p.name for p in run.iterdir()} == {"checkpoint.pt", "metrics.csv", "spec.net",
                                               "config.json"}


def test_plot_on_a_full_disk_keeps_the_old_pictures(
        trained: Path, small_disk: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = small_disk / "run"
    shutil.copytree(trained, run)
    before = (run / "curves.png").read_bytes()
    fill(small_disk)
    assert main(["plot", str(run)]) == 1
    err = capsys.readouterr().err
    assert f"cannot write {run / 'curves.png'}: the disk is full" in err
    assert (run / "curves.png").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_a_network_ending_in_a_1x1_map_trains(tmp_path: Path) -> None:
    """Global pooling to 1x1x10 is the class vector: the loss takes it as N x 10."""
    s = tmp_path / "gap.net"
    s.write_text("network Gap\ninput 17x17x3\ntrain batch=16, epochs=1\n"
                 "conv1: Conv(3,2) x8 + ReLU; MaxPool(2,2, remainder=ceil) -> 4x4x8\n"
                 "conv2: Conv(1,1) x10; GlobalAvgPool -> 1x1x10\n")
    assert train(s, "--out", tmp_path / "r", "--max-steps", "3") == 0
    s.write_text(s.read_text().replace("GlobalAvgPool", "AvgPool(4,1)"))
    assert train(s, "--out", tmp_path / "a", "--max-steps", "2") == 0


def test_a_batch_norm_network_trains_and_keeps_its_statistics(tmp_path: Path) -> None:
    s = tmp_path / "bn.net"
    s.write_text("network BN\ninput 17x17x3\ntowers 2\ntrain batch=16, epochs=1\n"
                 "conv1: Conv(3,2, bias=false) x8; BatchNorm + ReLU; MaxPool(2,2, remainder=ceil)"
                 "\nfc: FC(16, bias=false); BatchNorm(momentum=0.2) + ReLU\nout: FC(10)\n")
    assert train(s, "--out", tmp_path / "r", "--max-steps", "3") == 0
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["model"]
    tracked = [v for k, v in state.items() if k.endswith("num_batches_tracked")]
    assert len(tracked) == 4 and all(int(v) == 3 for v in tracked)  # every tower shard's
    means = [v for k, v in state.items() if k.endswith("running_mean")]
    assert all(bool(m.abs().sum() > 0) for m in means)  # moved from their initial zeros
