"""`alexnetc prepare` end to end: killed or interrupted and run again it ends with the bytes
of a run never stopped; train refuses damaged sets in one line and --verify finds a flipped
byte; a prepared set trains as its folder does, bit-reproducibly, and under --nproc 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnetc.backends.train import metrics
from alexnetc.cli.main import main

from helpers import copy_files

pytestmark = pytest.mark.torch_threads(1)

SMALL = """\
network Small
input 10x10x3
train batch=8, epochs=1, lr=0.01
augment resize=12, ten_crop=false
conv: Conv(3,1) x4 + ReLU; MaxPool(2,2) -> 4x4x4
fc: FC(2)
"""

# The embedded digits as a grey image folder, and a small net whose recipe learns them.
DIGITS = """\
network DigitsSmall
input 16x16x1
train batch=32, epochs=4, lr=0.05, patience=2, seed=3
augment resize=16, flip=false, pca=0, ten_crop=false
init std=0.1
c1: Conv(3,1, pad=1, bias=false) x8; BatchNorm + ReLU; MaxPool(2,2)   -> 8x8x8
c2: Conv(3,1, pad=1, bias=false) x16; BatchNorm + ReLU; MaxPool(2,2)  -> 4x4x16
fc: FC(10)
"""


def make_data(root: Path, per_class: int = 30) -> Path:
    rng = np.random.default_rng(4)
    for split, n in (("train", per_class), ("val", 3)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                arr = rng.integers(0, 256, (int(rng.integers(12, 30)), 24, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def prepare_argv(data: Path, out: Path, *more: str) -> list[str]:
    return [sys.executable, "-m", "alexnetc", "prepare", str(data), "-o", str(out), "--side",
            "12", *more]


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _records(out: Path) -> int:
    try:
        return (out / ".prepare" / "journal").read_text().count("\n")
    except FileNotFoundError:
        return 0


def _run_until_journalled(p: subprocess.Popen[str], out: Path, records: int) -> list[int]:
    """Let the conversion's worker run in short slices, stopped in between, until the journal
    holds `records` chunks: it can never finish behind the test's back. Returns the worker,
    stopped."""
    while not (workers := _children(p.pid)):
        assert p.poll() is None, p.communicate()[0]
        time.sleep(0.01)
    for w in workers:
        os.kill(w, signal.SIGSTOP)
    while _records(out) < records:
        for w in workers:
            os.kill(w, signal.SIGCONT)
        time.sleep(0.005)
        for w in workers:
            os.kill(w, signal.SIGSTOP)
        for _ in range(20):  # the main process journals within FLUSH_S
            if _records(out) >= records:
                break
            time.sleep(0.05)
    return workers


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_a_stopped_prepare_continues_to_the_bytes_of_a_whole_run(tmp_path: Path,
                                                                 signum: int) -> None:
    data = make_data(tmp_path / "data")
    out = tmp_path / "p"
    argv = prepare_argv(data, out, "--workers", "1", "--chunk", "1")
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    workers: list[int] = []
    try:
        workers = _run_until_journalled(p, out, 3)
        if signum == signal.SIGKILL:
            os.kill(p.pid, signal.SIGKILL)
            p.communicate(timeout=60)
            # a worker dies with its parent: waited for without a clock (a busy machine may
            # take its time); one that never dies fails the test at the suite's timeout
            while any(_alive(w) for w in workers):
                time.sleep(0.05)
        else:  # Ctrl-C at a terminal: the whole process group
            os.killpg(p.pid, signal.SIGINT)
            for w in workers:
                os.kill(w, signal.SIGCONT)
            told = p.communicate(timeout=60)[0]
            assert p.returncode == 130, told
            assert "interrupted by SIGINT: " in told and " of 66 images are converted and " \
                "kept; continue with: alexnetc prepare " in told and "Traceback" not in told
            assert told.rstrip().endswith("--side 12 --chunk 1"), told
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
    assert not (out / "prepared.json").exists()
    assert 3 <= _records(out) < 66
    again = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "of them done before" in again.stdout
    whole = subprocess.run(prepare_argv(data, tmp_path / "whole", "--chunk", "1"),
                           capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    assert files_of(out) == files_of(tmp_path / "whole")
    assert sorted(p.name for p in out.iterdir()) == [
        "mean.npy", "prepared.json", "train.labels", "train.u8", "val.labels", "val.u8"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    data = make_data(root / "data", per_class=8)
    assert main(["prepare", str(data), "-o", str(root / "p"), "--side", "12", "--chunk",
                 "4", "--workers", "0"]) == 0
    return root / "p"


@pytest.fixture
def copy(prepared: Path, tmp_path: Path) -> Path:
    return copy_files(prepared, tmp_path / "p")


def _spec(tmp: Path, text: str = SMALL) -> Path:
    (tmp / "s.net").write_text(text)
    return tmp / "s.net"


def test_an_unfinished_set_is_refused_with_the_command_that_finishes_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_data(tmp_path / "data", per_class=4)
    out = tmp_path / "p"
    (out / ".prepare").mkdir(parents=True)
    (out / ".prepare" / "plan.json").write_text('{"command": "alexnetc prepare D -o P"}')
    assert main(["train", str(_spec(tmp_path)), "--data", str(out), "--out",
                 str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert err == (f"alexnetc: error: {out} is an unfinished `alexnetc prepare` (stopped before "
                   "its end); finish it with: alexnetc prepare D -o P\n")
    assert data.exists()


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "train.u8").write_bytes((p / "train.u8").read_bytes()[:-432]),
     "train.u8 holds 6,480 bytes, not the 6,912 its header says (truncated?)"),
    (lambda p: (p / "prepared.json").write_text(
        (p / "prepared.json").read_text().replace('"side": 12', '"side": 13')),
     "prepared.json does not match its checksum (it was edited or is corrupt)"),
    (lambda p: (p / "prepared.json").write_text(
        (p / "prepared.json").read_text().replace('"chunks": [\n    "', '"chunks": [\n    "0')),
     "prepared.json does not match its checksum (it was edited or is corrupt)"),
], ids=["truncated", "changed-header", "wrong-checksum"])
def test_train_refuses_a_damaged_set_in_one_line(copy: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  damage: Callable[[Path], object],
                                                  message: str) -> None:
    damage(copy)
    assert main(["train", str(_spec(tmp_path)), "--data", str(copy), "--out",
                 str(tmp_path / "r"), "--devices", "cpu"]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert "; prepare the set again: alexnetc prepare " in err and f" -o {copy}" in err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_verify_finds_a_flipped_byte(copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "--verify", str(copy)]) == 0
    assert "every checksum matches (16 train and 6 val images at 12x12, 6 chunks)" in \
        capsys.readouterr().out
    with open(copy / "val.u8", "r+b") as f:
        f.seek(5 * 432 + 100)
        byte = f.read(1)[0]
        f.seek(5 * 432 + 100)
        f.write(bytes([byte ^ 1]))
    assert main(["prepare", "--verify", str(copy), "--workers", "2"]) == 1
    first, last = capsys.readouterr().err.splitlines()
    assert first == (f"alexnetc: error: {copy / 'val.u8'}: images 4–5 (chunk 2 of 2) do not "
                     "match their checksum")
    assert last.startswith(f"alexnetc: error: {copy}: 1 of 6 chunks do not match their "
                           "checksums; prepare the set again: alexnetc prepare ")
    assert last.endswith(f" -o {copy} --side 12")


@pytest.mark.parametrize("argv, message", [
    (["prepare", "NOPE", "-o", "OUT"], "no such data folder: NOPE"),
    (["prepare", "DATA"], "-o PREPARED is required"),
    (["prepare", "--verify", "NOPE"], "no such prepared folder: NOPE"),
    (["prepare", "DATA", "-o", "FILE"], "is a file; name a folder"),
    (["prepare", "DATA", "-o", "DATA"], "is the image folder itself"),
    (["prepare", "DATA", "-o", "OTHER"], "a folder with other files in it"),
    (["prepare", "DATA", "-o", "OUT", "--side", "0"], "--side must be at least 1"),
    (["prepare", "DATA", "-o", "OUT", "--side", "5000"], "--side must be at most 4096"),
    (["prepare", "DATA", "-o", "OUT", "--workers", "-1"], "--workers must be at least 0"),
    (["prepare", "DATA", "-o", "OUT", "--val-labels", "NOPE"], "no such labels file"),
])
def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                      message: str) -> None:
    make_data(tmp_path / "DATA", per_class=1)
    (tmp_path / "FILE").write_text("x")
    (tmp_path / "OTHER").mkdir()
    (tmp_path / "OTHER" / "mine.txt").write_text("x")
    names = {"NOPE", "OUT", "DATA", "FILE", "OTHER"}
    args = [str(tmp_path / a) if a in names else a for a in argv]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message.replace("NOPE", str(tmp_path / "NOPE")) in err and "Traceback" not in err


def test_other_options_on_a_finished_set_are_a_usage_error(prepared: Path,
                                                           capsys: pytest.CaptureFixture[str]
                                                           ) -> None:
    data = prepared.parent / "data"
    assert main(["prepare", str(data), "-o", str(prepared), "--side", "12", "--workers",
                 "0"]) == 0
    assert "already holds" in capsys.readouterr().out
    assert main(["prepare", str(data), "-o", str(prepared), "--side", "16"]) == 2
    assert "already holds" in capsys.readouterr().err


def test_a_damaged_finished_set_is_not_nothing_to_do(copy: Path, prepared: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    (copy / "val.u8").write_bytes((copy / "val.u8").read_bytes()[:-1])
    assert main(["prepare", str(prepared.parent / "data"), "-o", str(copy), "--side", "12",
                 "--workers", "0"]) == 2
    out, err = capsys.readouterr()
    assert "nothing to do" not in out
    assert err.startswith(f"alexnetc: error: {copy} holds a prepared set that cannot be used (")
    assert "val.u8 holds" in err and err.endswith("; delete it and prepare again\n")


def test_verify_of_a_folder_that_is_no_prepared_set(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["prepare", "--verify", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"alexnetc: error: {tmp_path} is not a prepared set "
                                       "(no prepared.json)\n")


def test_a_disk_too_small_fails_at_once(tmp_path: Path, small_disk: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    data = make_data(tmp_path / "data", per_class=8)
    assert main(["prepare", str(data), "-o", str(small_disk / "p"), "--side", "256"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"alexnetc: error: cannot write {small_disk / 'p'}: the prepared set "
                          "needs 4.3 MB more and its disk has 0.5 MB free")
    assert err.count("\n") == 1


def _digits_folder(root: Path) -> Path:
    """500 training and 150 held-out digits as 8x8 grey PNGs in class folders."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (d.images * (255 / 16)).round().astype(np.uint8)
    for i, (image, label) in enumerate(zip(images[:650], d.target[:650], strict=True)):
        folder = root / ("train" if i < 500 else "val") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "L").save(folder / f"{i}.png")
    return root


def _final(run: Path) -> list[dict[str, float]]:
    return [{k: v for k, v in row.items() if k not in ("images_per_s", "seconds")}
            for row in metrics.read(run / "metrics.csv")]


def test_prepared_digits_train_as_their_folder_does_and_reproducibly(tmp_path: Path) -> None:
    data = _digits_folder(tmp_path / "digits")
    spec = _spec(tmp_path, DIGITS)
    assert main(["prepare", str(data), "-o", str(tmp_path / "p"), "--side", "16", "--channels",
                 "1", "--workers", "0"]) == 0
    runs = {}
    for name, source in (("folder", data), ("prepared", tmp_path / "p"),
                         ("again", tmp_path / "p")):
        assert main(["train", str(spec), "--data", str(source), "--out", str(tmp_path / name),
                     "--devices", "cpu", "--workers", "0"]) == 0
        runs[name] = _final(tmp_path / name)
    accuracy = {k: 1 - rows[-1]["val_top1_err"] for k, rows in runs.items()}
    assert accuracy["prepared"] > 0.8, accuracy  # it learns the digits
    assert abs(accuracy["prepared"] - accuracy["folder"]) <= 0.02, accuracy  # within noise
    assert runs["again"] == runs["prepared"]  # on the CPU, to the bit
    a = torch.load(tmp_path / "prepared" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "again" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_prepared_set_trains_with_two_processes(prepared: Path, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "alexnetc", "train", str(spec), "--data",
                           str(prepared), "--nproc", "2", "--devices", "cpu", "--workers", "1",
                           "--max-steps", "2", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, env=env, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert f"on {prepared} (prepared, 12x12): 16 train / 6 val images" in out
    assert "global batch 8 = 2 processes × 4" in out and "Traceback" not in out
    assert torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["step"] == 2


def test_training_takes_the_prepared_statistics_without_reading_a_sample(
        prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The mean and PCA come from the set's own exact sums: no images are read for them."""
    from alexnetc.backends.train import checkpoint, run
    from alexnetc.backends.train.prepared import read_header

    def sampled(*args: object) -> None:
        raise AssertionError("the training statistics were sampled from the images")

    monkeypatch.setattr(run, "training_stats", sampled)
    assert main(["train", str(_spec(tmp_path)), "--data", str(prepared), "--devices", "cpu",
                 "--workers", "0", "--max-steps", "1", "--out", str(tmp_path / "r")]) == 0
    saved = checkpoint.load(tmp_path / "r" / "checkpoint.pt")["stats"]
    exact = read_header(prepared).sums.stats().as_dict()
    assert saved.keys() == exact.keys()
    assert all(torch.equal(saved[k], exact[k]) for k in exact)
