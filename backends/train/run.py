"""The objects of one training run, built fresh or restored from a checkpoint.

`Trainer` holds everything that changes while training (model, optimiser, schedule, position,
random streams); `snapshot` and `restore` move exactly that to and from a checkpoint, which is
what makes a resumed run end with the same weights as one that was never stopped.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from alexnetc import atomic
from alexnetc.backends.kernels.choose import eager_first
from alexnetc.backends.train import checkpoint, distributed
from alexnetc.backends.train.augment import Augmenter, PixelStats, pixel_stats
from alexnetc.backends.train.config import TrainConfig, shorter_side
from alexnetc.backends.train.data import (
    BadImages,
    Batch,
    DataError,
    DataSet,
    Item,
    TensorImages,
    collate,
    open_data,
)
from alexnetc.backends.train.model import build, in_format, input_device, memory_format
from alexnetc.backends.train.optim import PaperSGD, PlateauSchedule
from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.pipeline import check
from alexnetc.compiler.recipe import Recipe

if TYPE_CHECKING:
    from alexnetc.backends.lowering import AlexnetcModule

STATS_IMAGES = 1000  # images sampled from a folder for the mean and PCA (all, when in memory)


@dataclass
class Totals:
    """Running sums over the batches of one epoch (kept in checkpoints taken mid-epoch)."""

    loss: float = 0.0  # sum of per-batch mean loss × batch size
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0


@dataclass
class Trainer:
    cfg: TrainConfig
    net: CheckedNetwork
    spec_text: str
    model: nn.Module
    forward: Callable[[Tensor], Tensor]  # the model, or its torch.compile'd version
    optimiser: PaperSGD
    schedule: PlateauSchedule
    data: DataSet
    stats: PixelStats
    augment: Augmenter
    device: torch.device
    run_dir: Path
    bad: BadImages
    dist: distributed.Dist = field(default_factory=distributed.Dist)
    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken in all
    batch_in_epoch: int = 0  # batches of epoch `epoch` already trained on
    totals: Totals = field(default_factory=Totals)
    aug_rng: torch.Generator = field(default_factory=torch.Generator)
    # (epoch, step, batch_in_epoch) of the checkpoint on disk: the one resumed from, then
    # each one written; None while there is none. What a failed run reports as kept.
    saved: tuple[int, int, int] | None = None

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / checkpoint.FILE

    def epoch_rng(self) -> torch.Generator:
        """The augmentation stream of the current epoch: a pure function of (seed, epoch),
        and of the rank when several processes train (each augments its own images)."""
        return torch.Generator().manual_seed(self.cfg.seed * 7_919 + self.epoch + 1
                                             + self.dist.rank * 1_000_003)

    def snapshot(self) -> dict[str, Any]:
        return {
            "spec_text": self.spec_text,
            "spec_sha256": checkpoint.spec_hash(self.spec_text),
            "config": self.cfg.as_dict(),
            "classes": self.data.classes,
            "stats": self.stats.as_dict(),
            "model": self.model.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "schedule": self.schedule.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "batch_in_epoch": self.batch_in_epoch,
            "totals": asdict(self.totals),
            "aug_rng": self.aug_rng.get_state(),
            "rng": checkpoint.rng_state(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from `state`, which `start` has found to fit (checkpoint.ensure_fits)."""
        with checkpoint.applying(self.checkpoint_path):
            self.model.load_state_dict(state["model"])
            self.optimiser.load_state_dict(state["optimiser"])
            self.schedule.load_state_dict(state["schedule"])
            self.epoch = int(state["epoch"])
            self.step = int(state["step"])
            self.batch_in_epoch = int(state["batch_in_epoch"])
            self.totals = Totals(**state["totals"])
            self.aug_rng.set_state(state["aug_rng"])
            checkpoint.set_rng_state(state["rng"])  # last: building the model drew from it
        self.saved = (self.epoch, self.step, self.batch_in_epoch)

    def save(self) -> None:
        """Rank 0 writes; the replicas hold the same weights, so one file is the run. Every
        rank checks that they are finite, so all stop together when they are not."""
        state = self.snapshot()
        if self.dist.main:
            checkpoint.save(self.checkpoint_path, state)
        else:
            checkpoint.ensure_finite(state)
        self.saved = (self.epoch, self.step, self.batch_in_epoch)


# Sent to a whole process group (a terminal's Ctrl-C, the agent of `--nproc` stopping its
# processes), these reach the DataLoader workers too; the main process checkpoints and stops.
_STOP = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[None]:
    """SIGINT/SIGTERM held back from this thread meanwhile: the DataLoader workers it starts
    inherit the mask, so that none dies of a signal before `_leave_signals_to_main`."""
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP)


def _leave_signals_to_main(_: int) -> None:
    """DataLoader workers ignore SIGINT and SIGTERM (one held back meanwhile is dropped)."""
    for s in _STOP:
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP)


def batches(dataset: Dataset[Item], indices: Sequence[int], batch_size: int, workers: int,
            pin: bool = False) -> Iterator[Batch]:
    """Batches of `dataset` in the given order."""
    steps = [list(indices[i:i + batch_size]) for i in range(0, len(indices), batch_size)]
    return step_batches(dataset, steps, workers, pin)


def step_batches(dataset: Dataset[Item], steps: Sequence[list[int]], workers: int,
                 pin: bool = False) -> Iterator[Batch]:
    """One batch per list of indices, an empty list giving an empty batch; in-memory data
    skips the DataLoader."""
    if isinstance(dataset, TensorImages):
        for idx in steps:
            yield dataset.batch(torch.as_tensor(idx, dtype=torch.long))
        return
    loader = DataLoader(dataset, batch_sampler=steps, num_workers=workers, collate_fn=collate,
                        pin_memory=pin, worker_init_fn=_leave_signals_to_main if workers else None)
    with _stop_signals_held():
        stream = iter(loader)  # starts the workers
    yield from stream


def training_stats(data: DataSet, cfg: TrainConfig, bad: BadImages) -> PixelStats:
    """Mean and PCA of the training pixels: every image in memory, else an even sample."""
    n = len(data.train)
    step = 1 if isinstance(data.train, TensorImages) else max(1, n // STATS_IMAGES)
    images = []
    for b in batches(data.train, range(0, n, step), 256, cfg.workers):
        bad.add(b.bad)
        if b.images.numel():
            images.append(b.images)
    return pixel_stats(images)


def data_side(net: CheckedNetwork, cfg: TrainConfig) -> int:
    crop = max(net.input.h, net.input.w)
    side = shorter_side(crop, cfg.resize)
    if side < crop:
        raise DataError(f"augment resize={cfg.resize} is smaller than the spec's "
                        f"{net.input.h}x{net.input.w} input; use resize ≥ {crop} or 0")
    return side


def start(cfg: TrainConfig, net: CheckedNetwork, recipe: Recipe, spec_text: str,
          state: dict[str, Any] | None = None, warn: Callable[[str], None] | None = None
          ) -> Trainer:
    """A trainer at epoch 0, or at the checkpoint `state` when resuming."""
    d = distributed.from_env()
    if cfg.batch_size % d.world:
        raise DataError(f"a batch of {cfg.batch_size} images does not split evenly over "
                        f"{d.world} processes; use a multiple of {d.world}")
    data = open_data(cfg.data, data_side(net, cfg), net.input.c, net.output.c)
    bad = BadImages(len(data.train) + len(data.val), warn)
    model = build(net, recipe, distributed.rank_devices(d, net.towers, cfg.devices), cfg.seed)
    if state is not None:  # refused before any of it is read: the stats below, then restore()
        checkpoint.ensure_fits(Path(cfg.out) / checkpoint.FILE, state, cfg.spec, net, model,
                               resuming=True)
    device = input_device(model)
    fmt = memory_format(device)
    # in place: the optimiser below sees these parameters. Module.to takes memory_format
    # (documented, torch/nn/modules/module.py); torch's overloads leave it out.
    model.to(memory_format=fmt)  # type: ignore[call-overload]
    distributed.init(d, device)
    if d.active:  # same initial weights everywhere (seeded), different dropout masks
        torch.manual_seed(cfg.seed * 7_919 + d.rank)
    # a prepared set carries its training split's exact statistics: no sample to read
    stats = (PixelStats.from_dict(state["stats"]) if state
             else data.stats or training_stats(data, cfg, bad))
    augment = Augmenter(stats, (net.input.h, net.input.w), flip=cfg.flip, pca=cfg.pca,
                        subtract_mean=cfg.mean, device=device)
    optimiser = PaperSGD(model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    schedule = PlateauSchedule(optimiser, cfg.lr, cfg.lr_drop, cfg.patience, cfg.min_lr)
    replica = distributed.wrap(model, device, d)
    forward: Callable[[Tensor], Tensor] = replica
    if cfg.compile:  # first call per mode eager: the fused kernels are timed, then compiled
        forward = eager_first(replica, torch.compile(replica), mode=model)
    forward = in_format(forward, fmt)
    tr = Trainer(cfg, net, spec_text, model, forward, optimiser, schedule, data, stats, augment,
                 device, Path(cfg.out), bad, d)
    if state is not None:
        tr.restore(state)
        if d.active:  # the checkpoint holds rank 0's streams; give each rank its own again
            torch.manual_seed(cfg.seed * 7_919 + d.rank + 104_729 * tr.step)
    else:
        tr.aug_rng = tr.epoch_rng()
        if d.main:
            write_run_files(tr)
    return tr


def write_run_files(tr: Trainer) -> None:
    """The spec and settings as readable files next to the checkpoint."""
    atomic.make_folder(tr.run_dir)
    atomic.write_text(tr.run_dir / "spec.net", tr.spec_text)
    info = {"config": tr.cfg.as_dict(), "classes": tr.data.classes, "data": tr.data.source,
            "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic.write_text(tr.run_dir / "config.json", json.dumps(info, indent=2) + "\n")


@dataclass
class LoadedRun:
    """A finished or interrupted run, rebuilt for `eval` and `predict`."""

    cfg: TrainConfig
    net: CheckedNetwork
    recipe: Recipe
    model: AlexnetcModule
    augment: Augmenter
    classes: list[str]
    side: int
    epoch: int


def load_run(run_dir: Path, devices: str | None = None) -> LoadedRun:
    """The network of RUN_DIR/checkpoint.pt, rebuilt from the spec text it carries."""
    if not run_dir.is_dir():
        raise checkpoint.CheckpointError(f"no such run folder: {run_dir}")
    path = run_dir / checkpoint.FILE
    state = checkpoint.load(path)
    result = check(state["spec_text"], str(run_dir / "spec.net"))
    if result.network is None or result.recipe is None:
        raise checkpoint.CheckpointError(f"{path}: its spec no longer checks with this alexnetc")
    net = result.network
    with checkpoint.applying(path):
        cfg = TrainConfig.from_dict(state["config"]).override(devices=devices)
    model = build(net, result.recipe, cfg.devices, cfg.seed)
    checkpoint.ensure_fits(path, state, f"the spec it holds (network {net.name})", net, model)
    # as in training (Module.to's overloads leave out its documented memory_format)
    model.to(memory_format=memory_format(input_device(model)))  # type: ignore[call-overload]
    with checkpoint.applying(path):
        model.load_state_dict(state["model"])
        stats = PixelStats.from_dict(state["stats"])
        classes, epoch = list(state["classes"]), int(state["epoch"])
    model.eval()
    augment = Augmenter(stats, (net.input.h, net.input.w), flip=False, pca=0.0,
                        subtract_mean=cfg.mean, device=input_device(model))
    return LoadedRun(cfg, net, result.recipe, model, augment, classes, data_side(net, cfg),
                     epoch)
