"""`alexnetc train --nproc 2`: two gloo processes on the CPU equal one process on the same
global batch, whatever the data size; a killed run resumes from its last checkpoint; SIGTERM
stops the run as it stops one process; a failed process is told in one line."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from alexnetc.backends.train.launcher import Failure
from alexnetc.cli.main import main
from alexnetc.cli.train import _failed

from helpers import SPECS

# No dropout and no random augmentation (the crop is the whole 16-pixel image, no flips, no
# colour noise): one process and two then see exactly the same numbers.
DETERMINISTIC = """\
network TinyDDP
input 16x16x3
towers 2
train batch=16, epochs=1, lr=0.02
augment resize=16, flip=false, pca=0, ten_crop=false
init std=0.05
conv1: Conv(5,1) x8 + ReLU; ResNorm(3); MaxPool(2,2)     -> 6x6x8
conv2: Conv(3,1, groups=2, bias=1) x8 + ReLU; MaxPool(2,2) -> 2x2x8
fc: FC(10) + Softmax
"""


def _spec(tmp: Path) -> Path:
    path = tmp / "ddp.net"
    path.write_text(DETERMINISTIC)
    return path


def _torchrun(*args: str | Path, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "alexnetc", "train", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, **kw)  # type: ignore[call-overload]


def _replica(run: Path, rank: int) -> int:
    """The pid of the training process of `rank` writing to `run` (found through /proc)."""
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = set((proc / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if str(run).encode() in cmd and f"RANK={rank}".encode() in env \
                and f"LOCAL_RANK={rank}".encode() in env:
            return int(proc.name)
    raise AssertionError(f"no replica of rank {rank} found")


def _model(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


def test_two_processes_equal_one_on_the_same_global_batch(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    flags = ["--devices", "cpu", "--workers", "0", "--max-steps", "4"]
    p = _torchrun(spec, "--nproc", "2", "--out", tmp_path / "two", *flags)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out
    assert "global batch 16 = 2 processes × 8" in out
    torch.set_num_threads(1)
    assert main(["train", str(spec), "--out", str(tmp_path / "one"), *flags]) == 0
    two, one = _model(tmp_path / "two"), _model(tmp_path / "one")
    assert two.keys() == one.keys()
    for key, value in one.items():
        torch.testing.assert_close(two[key], value, rtol=1e-5, atol=1e-6)
    # Rank 1 trained on other images than rank 0: without DDP's gradient average the
    # weights would differ from one process's, and check_in_sync would have stopped the run.
    assert torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)["step"] == 4
    assert "Traceback" not in out


def test_killed_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    run = tmp_path / "run"
    flags = ["--devices", "cpu", "--workers", "0", "--out", str(run)]
    p = _torchrun(spec, "--nproc", "2", "--epochs", "200", *flags)
    try:  # no deadline of its own: on a busy machine the first epoch takes what it takes, and
        # the suite's per-test timeout (pyproject.toml) is the one guard against a hang
        while not (run / "checkpoint.pt").exists():
            assert p.poll() is None, p.communicate()[0]
            time.sleep(0.2)
        victim = _replica(run, rank=1)
        os.kill(victim, signal.SIGKILL)  # one replica dies without warning; torchrun ends the rest
        told = p.communicate(timeout=120)[0]
    finally:  # a failure or that timeout must not leave 200 epochs training in the background
        if p.poll() is None:
            p.terminate()  # the launcher stops its processes as Ctrl-C does
            try:
                p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
    assert p.returncode != 0
    # one line, in the launcher's words: the process, why it is likely dead, how to continue
    assert p.returncode == 1 and "Traceback" not in told, told
    assert ("alexnetc: error: rank 1 of 2 was killed by SIGKILL, which is usually the "
            "kernel's out-of-memory killer") in told, told
    assert told.rstrip().endswith(f"--out {run} --resume --nproc 2"), told
    epoch = torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
    assert epoch >= 1
    q = _torchrun(spec, "--nproc", "2", "--epochs", str(epoch + 1), "--resume", *flags)
    out, _ = q.communicate(timeout=300)
    assert q.returncode == 0, out
    assert f"resuming at epoch {epoch + 1}" in out
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == epoch + 1


def _alive(run: Path) -> set[int]:
    """The processes (zombies aside) whose command line names `run`: a launcher, its
    training processes and their DataLoader workers."""
    pids = set()
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if str(run).encode() in cmd and state != "Z":
            pids.add(int(proc.name))
    return pids


def _end(p: subprocess.Popen[str], run: Path) -> None:
    """Leave nothing of a run behind, whatever a failed test left running."""
    if p.poll() is None:
        p.kill()
        p.wait()
    for pid in _alive(run):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _images(root: Path, train: int = 8, val: int = 2) -> Path:
    """A tiny ImageNet-layout folder of 16x16 noise images in 10 classes."""
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", train), ("val", val)):
        for c in range(10):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8, generator=g)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return root


def test_a_last_batch_smaller_than_the_world_ends_its_epoch(tmp_path: Path) -> None:
    """1,437 digits in global batches of 718 leave 1 image for 2 processes: rank 1 has none
    for the last step and must still take it, or the ranks' collectives cross."""
    run = tmp_path / "run"
    p = _torchrun(SPECS / "lenet5.net", "--nproc", "2", "--epochs", "1", "--batch-size", "718",
                  "--workers", "0", "--devices", "cpu", "--out", run)
    out, _ = p.communicate(timeout=300)
    assert p.returncode == 0, out
    assert "1437 train" in out and "epoch 1/1" in out and "Traceback" not in out
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (1, 3)


def test_sigterm_to_the_launcher_checkpoints_and_stops_every_process(tmp_path: Path) -> None:
    """SIGTERM to `train --nproc 2` stops the run as it stops one process: every process
    (DataLoader workers included) ends, the last step is checkpointed, the launcher exits
    128 + 15 with the command that continues, and that command does."""
    spec, run = _spec(tmp_path), tmp_path / "run"
    flags = ["--devices", "cpu", "--workers", "1", "--batch-size", "4", "--data",
             str(_images(tmp_path / "images")), "--out", str(run)]
    p = _torchrun(spec, "--nproc", "2", "--epochs", "200", *flags)
    try:
        while not (run / "checkpoint.pt").exists():  # an epoch trained: training is under way
            assert p.poll() is None, p.communicate()[0]
            time.sleep(0.1)
        assert len(_alive(run) - {p.pid}) >= 2
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=300)
        survivors = _alive(run)  # the launcher has gone: none of its processes may stay
    finally:
        _end(p, run)
    out = p.communicate()[0]
    assert not survivors and p.returncode == 128 + signal.SIGTERM, out
    assert "Traceback" not in out and "alexnetc: " not in out, out
    said = (r"interrupted by SIGTERM at epoch \d+, batch \d+: saved {}; continue with: "
            r"alexnetc train {} --out {} --resume --nproc 2$")
    assert re.search(said.format(*map(re.escape, map(str, (run / "checkpoint.pt", spec, run)))),
                     out, re.M), out
    epoch = torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
    q = _torchrun(spec, "--nproc", "2", "--epochs", str(epoch + 1), "--resume", *flags)
    out, _ = q.communicate(timeout=300)
    assert q.returncode == 0, out
    assert f"resuming at epoch {epoch + 1}" in out
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == epoch + 1


def test_a_failing_process_is_told_in_one_line(tmp_path: Path) -> None:
    """An error that only the processes meet (here a corrupt checkpoint on --resume) reads
    as one process's own error line, with its rank: no torchrun traceback or summary."""
    spec, run = _spec(tmp_path), tmp_path / "run"
    flags = ["--devices", "cpu", "--workers", "0", "--out", str(run)]
    assert main(["train", str(spec), *flags, "--max-steps", "1"]) == 0
    checkpoint = run / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    p = subprocess.run([sys.executable, "-m", "alexnetc", "train", str(spec), "--resume",
                        "--nproc", "2", *flags], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 1, p.stderr
    assert re.fullmatch(rf"alexnetc: error: rank [01] of 2 failed: {re.escape(str(checkpoint))} "
                        r"is truncated or corrupt and cannot be read \(.*\)\n", p.stderr), p.stderr


def test_a_failure_says_how_to_continue_only_where_there_is_something_to_continue(
        tmp_path: Path) -> None:
    args = argparse.Namespace(spec="s.net", nproc=2)
    checkpoint = tmp_path / "checkpoint.pt"
    resume = f"; continue from {checkpoint} with: alexnetc train s.net --out {tmp_path} " \
             "--resume --nproc 2"
    killed = Failure(1, -signal.SIGKILL, "")
    assert _failed(killed, args, checkpoint, written=False).endswith("fewer --nproc)")  # none yet
    checkpoint.write_bytes(b"a checkpoint")
    assert _failed(killed, args, checkpoint, written=False).endswith(resume)
    corrupt = Failure(0, 1, f"alexnetc: error: {checkpoint} is truncated or corrupt")
    assert _failed(corrupt, args, checkpoint, written=False) == (
        f"alexnetc: error: rank 0 of 2 failed: {checkpoint} is truncated or corrupt")
    assert _failed(corrupt, args, checkpoint, written=True).endswith(resume)  # a later one
    told = Failure(0, 1, "alexnetc: error: the loss became nan; stopping: continue from it "
                   "with: alexnetc train s.net --out run --resume --nproc 2 --lr 0.001")
    assert _failed(told, args, checkpoint, written=True).endswith("--lr 0.001")  # said once
    usage = Failure(0, 2, "alexnetc: error: run already holds a run")  # every process's
    assert _failed(usage, args, checkpoint, written=False) == usage.message
