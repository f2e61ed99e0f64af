"""`alexnetc train --nproc 2`: two gloo processes on the CPU equal one process on the same
global batch, and a killed run resumes from its last checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from alexnetc.cli.main import main

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
    deadline = time.monotonic() + 240
    while not (run / "checkpoint.pt").exists():
        assert p.poll() is None, p.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.2)
    victim = _replica(run, rank=1)
    os.kill(victim, signal.SIGKILL)  # one replica dies without warning; torchrun ends the rest
    p.communicate(timeout=120)
    assert p.returncode != 0
    epoch = torch.load(run / "checkpoint.pt", weights_only=True)["epoch"]
    assert epoch >= 1
    q = _torchrun(spec, "--nproc", "2", "--epochs", str(epoch + 1), "--resume", *flags)
    out, _ = q.communicate(timeout=300)
    assert q.returncode == 0, out
    assert f"resuming at epoch {epoch + 1}" in out
    assert torch.load(run / "checkpoint.pt", weights_only=True)["epoch"] == epoch + 1
