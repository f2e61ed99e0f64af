"""Data parallelism without processes: every rank iterates the same steps whatever the data
size, and a rank with no images for a step still takes it (so that the collectives match)."""

from __future__ import annotations

import math
import multiprocessing
import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image
from rich.progress import Progress

from alexnetc.backends.train import distributed, launcher, loop
from alexnetc.backends.train.config import SYNTHETIC, TrainConfig
from alexnetc.backends.train.data import Batch, FolderImages, TensorImages, collate
from alexnetc.backends.train.distributed import Dist
from alexnetc.backends.train.run import Totals, Trainer, start, step_batches
from alexnetc.compiler.pipeline import check

TINY = """\
network Tiny
input 8x8x1
train batch=4, epochs=1
augment resize=8, flip=false, pca=0
conv1: Conv(3,1) x2 + ReLU; MaxPool(2,2) -> 3x3x2
fc: FC(10) + Softmax
"""


def _epoch(n: int, batch: int, rank: int, world: int, monkeypatch: pytest.MonkeyPatch
           ) -> list[list[int]]:
    """The images (labels 0…n-1) `rank` trains on at each step of one epoch of n images: the
    loop's own iteration, with train_step recorded instead of run."""
    steps: list[list[int]] = []

    def record(tr: Any, b: Batch, stop: Any = None) -> float:
        steps.append(b.labels.tolist())
        tr.step += 1
        return 0.0

    monkeypatch.setattr(loop, "train_step", record)
    tr = SimpleNamespace(
        cfg=TrainConfig(spec="t.net", batch_size=batch, epochs=1, workers=0),
        data=SimpleNamespace(train=TensorImages(torch.zeros(1, 1, 1, 1, dtype=torch.uint8),
                                                torch.arange(n))),
        epoch=0, step=0, batch_in_epoch=0, totals=Totals(), epoch_rng=lambda: None,
        schedule=SimpleNamespace(lr=0.1), model=torch.nn.Identity(),
        dist=Dist(rank, world, rank, world), device=torch.device("cpu"),
        bad=SimpleNamespace(add=lambda problems: None))
    with Progress(disable=True) as progress:
        assert loop.train_one_epoch(cast(Trainer, tr), loop.Stop(), progress) == "done"
    return steps


@given(n=st.integers(1, 120), world=st.sampled_from([2, 3]), per_rank=st.integers(1, 6))
@example(n=20, world=2, per_rank=2)  # nothing left over
@example(n=21, world=2, per_rank=2)  # 1 image left over for 2 ranks
@example(n=1437, world=2, per_rank=2)  # the digits at --batch-size 4: 359 × 4 + 1
@example(n=25, world=3, per_rank=2)  # 1 left over for 3 ranks
@example(n=26, world=3, per_rank=2)  # N − 1 = 2 left over
def test_every_rank_takes_every_step(n: int, world: int, per_rank: int) -> None:
    batch = world * per_rank
    with pytest.MonkeyPatch.context() as mp:
        ranks = [_epoch(n, batch, r, world, mp) for r in range(world)]
    steps = math.ceil(n / batch)
    assert [len(r) for r in ranks] == [steps] * world
    for s in range(steps):
        shares = [r[s] for r in ranks]
        sizes = [len(x) for x in shares]
        assert sum(sizes) == min(batch, n - s * batch)  # the whole global batch, once
        assert max(sizes) - min(sizes) <= 1 and max(sizes) <= per_rank
    seen = sorted(i for r in ranks for share in r for i in share)
    assert seen == list(range(n))


def _trainer(tmp_path: Path) -> Trainer:
    result = check(TINY, "tiny.net")
    assert result.network is not None and result.recipe is not None
    cfg = TrainConfig.from_recipe(result.recipe, "tiny.net", data=SYNTHETIC, workers=0,
                                  devices="cpu", out=str(tmp_path / "run"))
    return start(cfg, result.network, result.recipe, TINY)


def test_a_signal_after_the_steps_agreement_stops_at_the_next_step(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replicas stop where they agreed to: a signal that reaches this one after a step's
    agreement (the other replica, not yet signalled, goes on to the next step) is agreed on
    at the next step, not acted on alone."""
    tr = _trainer(tmp_path)
    tr.dist = Dist(0, 2, 0, 2)  # rank 0 of 2; the peer, never signalled, adds nothing
    monkeypatch.setattr(distributed, "agree", lambda values, device, d: values)
    real_step, stop = loop.train_step, loop.Stop()

    def step_then_signal(tr: Trainer, batch: Batch, stop: loop.Stop | None = None) -> float:
        value = real_step(tr, batch, stop)
        if tr.step == 3 and stop is not None:
            stop.signum = signal.SIGTERM
        return value

    monkeypatch.setattr(loop, "train_step", step_then_signal)
    with Progress(disable=True) as progress:
        assert loop.train_one_epoch(tr, stop, progress) == "stopped"
    assert tr.step == 4


def test_a_step_with_no_images_still_steps(tmp_path: Path) -> None:
    """An empty share (the end of an epoch, or every image of it unreadable) is a step with a
    placeholder image that contributes nothing: DDP needs every rank's backward."""
    tr = _trainer(tmp_path)
    for empty in (collate([]), collate([(None, 3, "x.png: unreadable")])):
        assert math.isnan(loop.train_step(tr, empty))
    assert tr.step == 2 and tr.totals.seen == 0


PEER_LOST = ("alexnetc: internal error: RuntimeError: [pair.cc:553] Connection closed by peer\n"
             "  this is a bug in alexnetc; rerun with ALEXNETC_DEBUG=1 for the traceback\n")
CORRUPT = "alexnetc: error: run/checkpoint.pt is truncated or corrupt\n"


def test_a_process_says_its_last_message_with_its_indented_lines() -> None:
    noise = "[W socket.cpp:755] [c10d] The client socket has failed to connect.\n"
    assert launcher.last_message(noise + "alexnetc: error: first\n" + noise + PEER_LOST
                                    + noise) == PEER_LOST.rstrip("\n")
    assert launcher.last_message(noise) == ""


@pytest.mark.parametrize(("failed", "stderr", "rank"), [
    ({0: 1, 1: -9}, [PEER_LOST, ""], 1),  # killed (out of memory): its peer only lost it
    ({0: 1}, [PEER_LOST, CORRUPT], 1),  # its own error, though it exited after its peer
    ({0: 1, 1: -15}, [CORRUPT, ""], 0),  # the agent's SIGTERM to the other explains nothing
    ({0: 1, 1: 1}, [CORRUPT, CORRUPT], 0),  # the same error everywhere: the first rank's
])
def test_the_root_cause_is_the_failure_that_explains_the_others(
        failed: dict[int, int], stderr: list[str], rank: int) -> None:
    root = launcher.root_cause(failed, stderr)
    assert root.rank == rank and root.exitcode == failed.get(rank, 1)
    assert root.stderr == stderr[rank] and root.message == stderr[rank].rstrip("\n")


def test_how_a_launched_run_ended() -> None:
    said = ["rank 0's warning\n", ""]
    assert launcher.ended({}, said) == launcher.Ended(0, stderr=said[0])
    # the processes were signalled themselves: they stopped together, as one process does
    assert launcher.ended({0: 143, 1: -15}, said) == launcher.Ended(143, stderr=said[0])
    usage = "alexnetc: error: no checkpoint at run/checkpoint.pt\n"
    assert launcher.ended({0: 2, 1: -15}, [usage, ""]).code == 2
    failed = launcher.ended({0: 1, 1: -9}, [PEER_LOST, ""])
    assert failed.code == 1 and failed.failure is not None
    assert failed.failure.killed_by == signal.SIGKILL


def test_dataloader_workers_leave_sigterm_to_their_process(tmp_path: Path) -> None:
    """`--nproc` stops a process by signalling its process group: its DataLoader workers must
    leave SIGTERM to it (it checkpoints, then ends them) instead of dying under it."""
    for i in range(40):
        Image.new("L", (8, 8), i).save(tmp_path / f"{i}.png")
    images = FolderImages([(tmp_path / f"{i}.png", i % 10) for i in range(40)], 8, 1)
    stream = step_batches(images, [[i, i + 1] for i in range(0, 40, 2)], workers=1)
    first = next(stream)
    (worker,) = multiprocessing.active_children()
    subprocess.run(["kill", "-TERM", str(worker.pid)], check=True)  # not from its parent
    rest = [b.labels.tolist() for b in stream]
    assert first.labels.tolist() == [0, 1] and rest[-1] == [8, 9] and len(rest) == 19
