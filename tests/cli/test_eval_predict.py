"""`alexnetc eval` and `predict`: the exit-code rule for paths and checkpoints, their flags'
checks, top-5 error only where it means something, and folders of images."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

from alexnetc.backends.train.loop import EvalResult, describe
from alexnetc.cli.main import main

# Three classes: every label is among the top 5, so top-5 error says nothing.
TINY3 = """\
network Tiny3
input 17x17x3
train batch=32, epochs=1, lr=0.01
augment flip=false, ten_crop=false
init std=0.05
conv1: Conv(5,2, std=0.01) x8 + ReLU; MaxPool(3,2)   -> 3x3x8
fc2: FC(3) + Softmax
"""


@pytest.fixture(scope="module")
def run3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two steps of a 3-class network on synthetic data: a checkpoint to evaluate."""
    tmp = tmp_path_factory.mktemp("run3")
    (tmp / "tiny3.net").write_text(TINY3)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", str(tmp / "tiny3.net"), "--out", str(tmp / "run"), "--data",
                     "synthetic", "--max-steps", "2", "--devices", "cpu", "--workers", "0"]) == 0
    finally:
        torch.set_num_threads(before)
    return tmp / "run"


@pytest.fixture
def images(tmp_path: Path) -> Path:
    """A folder of two images, one in a subfolder, and a stray non-image file."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    Image.new("RGB", (20, 24), (200, 30, 30)).save(folder / "a.png")
    Image.new("RGB", (24, 20), (30, 30, 200)).save(folder / "sub" / "b.jpg")
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_eval_leaves_out_top5_with_three_classes(
        run3: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With 5 classes or fewer every label is among the top 5: the rate would say nothing."""
    assert main(["eval", str(run3), "--ten-crop", "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("top-1 error") == 2 and "top-5" not in out  # centre crop and 10-crop


def test_describe_keeps_top5_when_it_was_measured() -> None:
    result = EvalResult(images=10, loss=1.0, top1=0.25, top5=0.125, ten_top1=0.2, ten_top5=0.1)
    text = describe(result)
    assert "top-1 error 25.00% (accuracy 75.00%), top-5 error 12.50% on 10 images" in text
    assert "10-crop: top-1 error 20.00% (accuracy 80.00%), top-5 error 10.00%" in text
    few = describe(EvalResult(10, 1.0, 0.25, math.nan, 0.2, math.nan))
    assert "top-5" not in few and "10-crop: top-1 error 20.00%" in few


@pytest.mark.parametrize("flags, message", [
    (["--batch-size", "0"], "--batch-size must be at least 1, got 0"),
    (["--workers", "-3"], "--workers must be at least 0, got -3"),
])
def test_eval_checks_its_flags_as_train_does(flags: list[str], message: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path), *flags]) == 2
    assert f"alexnetc: error: {message}" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["eval"], ["predict", "--top", "1"]])
def test_missing_checkpoint_is_a_usage_error(command: list[str], tmp_path: Path,
                                             images: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    extra = [str(images / "a.png")] if command[0] == "predict" else []
    assert main([*command, str(empty), *extra]) == 2
    assert f"no checkpoint at {empty / 'checkpoint.pt'}" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["eval"], ["predict"]])
def test_corrupt_checkpoint_is_an_error(command: list[str], run3: Path, tmp_path: Path,
                                        images: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(run3, run)
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:3000])
    extra = [str(images / "a.png")] if command[0] == "predict" else []
    assert main([*command, str(run), *extra]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"alexnetc: error: {ckpt} is truncated or corrupt and cannot be read")
    assert err.rstrip().endswith(")") and "miniz" not in err and "Traceback" not in err


def test_predict_missing_image_is_a_usage_error(run3: Path, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    gone = [str(tmp_path / "a.png"), str(tmp_path / "b.png")]
    assert main(["predict", str(run3), *gone]) == 2
    assert f"no such images: {gone[0]}, {gone[1]}" in capsys.readouterr().err


def test_predict_reads_every_image_in_a_folder(run3: Path, images: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", str(run3), str(images), "--top", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(images / "a.png") and lines[3] == str(images / "sub" / "b.jpg")
    assert len(lines) == 6 and "notes.txt" not in "".join(lines)


def test_predict_folder_without_images_is_an_error(run3: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("no images here")
    assert main(["predict", str(run3), str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path} is a folder with no images in it" in err
    assert "no such image" not in err


def test_eval_flags_obey_the_settings_rule(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(tmp_path), "--batch-size", str(2**31)]) == 2
    assert "--batch-size is 2,147,483,648, more than the limit" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--workers", "9" * 23]) == 2
    assert "--workers must be at most" in capsys.readouterr().err


def _misfit(state: dict, damage: str) -> None:
    """Damage a checkpoint as a hand-written file or another version's might be."""
    weights = state["model"]
    if damage == "missing":
        for name in [k for k in weights if k.startswith("fc2.")]:
            del weights[name]
    elif damage == "shape":
        name = next(k for k in weights if k.startswith("conv1.") and k.endswith("weight"))
        weights[name] = torch.zeros(3)
    elif damage == "unexpected":
        weights.update({f"extra{i}": torch.zeros(1) for i in range(5)})
    elif damage in ("classes", "stats"):
        del state[damage]
    elif damage == "class count":
        state["classes"] = ["a", "b", "c", "d"]


MISFITS = {
    "missing": "missing fc2.",
    "shape": "has shape 3, not 8x3x5x5",
    "unexpected": "unexpected extra0, extra1, extra2 and 2 more",
    "classes": "its class names (classes) are missing",
    "stats": "its pixel statistics (stats) are missing",
    "class count": "it names 4 classes for the spec's 3 outputs",
}


@pytest.mark.parametrize("damage", MISFITS)
@pytest.mark.parametrize("command", ["eval", "predict", "resume"])
def test_checkpoint_that_does_not_fit_its_spec(command: str, damage: str, run3: Path,
                                               tmp_path: Path, images: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """Written by hand or by another version: one line naming what does not fit, exit 1."""
    run = tmp_path / "run"
    shutil.copytree(run3, run)
    ckpt = run / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    _misfit(state, damage)
    torch.save(state, ckpt)
    argv = {"eval": ["eval", str(run), "--workers", "0"],
            "predict": ["predict", str(run), str(images / "a.png")],
            "resume": ["train", str(run / "spec.net"), "--out", str(run), "--resume",
                       "--workers", "0", "--devices", "cpu"]}[command]
    assert main(argv) == 1
    err = capsys.readouterr().err
    spec = run / "spec.net" if command == "resume" else "the spec it holds (network Tiny3)"
    assert err.startswith(f"alexnetc: error: {ckpt} does not fit {spec}: ")
    assert MISFITS[damage] in err and "internal error" not in err
    assert len(err.strip().splitlines()) == 1


def test_resume_refuses_velocities_of_other_shapes(run3: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(run3, run)
    ckpt = run / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)
    state["optimiser"]["state"][0]["velocity"] = torch.zeros(2)
    torch.save(state, ckpt)
    assert main(["train", str(run / "spec.net"), "--out", str(run), "--resume"]) == 1
    err = capsys.readouterr().err
    assert "optimiser.state.0.velocity has shape 2, not 8x3x5x5" in err
    assert "internal error" not in err


@pytest.mark.timeout(60)  # before the fix, opening the pipe waited for a writer forever
@pytest.mark.parametrize("command", ["eval", "predict", "resume"])
def test_a_named_pipe_as_checkpoint_is_refused_unopened(command: str, run3: Path,
                                                       tmp_path: Path, images: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    run = tmp_path / "run"
    shutil.copytree(run3, run)
    ckpt = run / "checkpoint.pt"
    ckpt.unlink()
    os.mkfifo(ckpt)
    argv = {"eval": ["eval", str(run)],
            "predict": ["predict", str(run), str(images / "a.png")],
            "resume": ["train", str(run / "spec.net"), "--out", str(run), "--resume"]}[command]
    assert main(argv) == 1
    assert f"{ckpt} is a named pipe, not a checkpoint file" in capsys.readouterr().err


@pytest.mark.timeout(60)
def test_a_named_pipe_as_image_is_refused_unopened(run3: Path, tmp_path: Path, images: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    pipe = tmp_path / "pipe.png"
    os.mkfifo(pipe)
    assert main(["predict", str(run3), str(images / "a.png"), str(pipe)]) == 1
    err = capsys.readouterr().err
    assert f"{pipe} is a named pipe, not an image file" in err and "internal" not in err
