"""One typed record of everything a training run needs, built from the spec's recipe and flags.

The recipe is the spec author's intent; command-line flags override it for one run. The
resulting `TrainConfig` is stored in every checkpoint, so `--resume`, `eval` and `predict`
see exactly the settings the run was started with.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from alexnetc.compiler.recipe import Recipe

DIGITS = "digits"  # the embedded data set used when no --data is given
SYNTHETIC = "synthetic"  # random tensors, for throughput measurements
WORKERS_PER_CPU = 4  # DataLoader workers per CPU beyond which they only wait on each other


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one run; every field has a single source (recipe default or flag)."""

    spec: str  # path of the spec the run was started from (for messages only)
    data: str = DIGITS  # DIGITS, SYNTHETIC or a folder with train/ and val/
    out: str = "runs/run"
    # optimisation (recipe `train`)
    epochs: int = 90
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    lr_drop: float = 0.1
    patience: int = 1
    min_lr: float = 1e-5
    seed: int = 0
    # augmentation (recipe `augment`)
    resize: int = 0
    flip: bool = True
    pca: float = 0.1
    mean: bool = True
    ten_crop: bool = True
    # execution (flags only)
    devices: str | None = None
    amp: str | None = None  # None or "bf16"
    compile: bool = False
    workers: int = 2
    max_steps: int | None = None  # stop (with a checkpoint) after this many steps in all

    @classmethod
    def from_recipe(cls, recipe: Recipe, spec: str, **flags: Any) -> TrainConfig:
        """The recipe's values, then every flag that is not None on top."""
        t, a = recipe.train, recipe.augment
        base = cls(spec=spec, epochs=t.epochs, batch_size=t.batch, lr=t.lr, momentum=t.momentum,
                   weight_decay=t.weight_decay, lr_drop=t.lr_drop, patience=t.patience,
                   min_lr=t.min_lr, seed=t.seed, resize=a.resize, flip=a.flip, pca=a.pca,
                   mean=a.mean, ten_crop=a.ten_crop)
        return base.override(**flags)

    def override(self, **flags: Any) -> TrainConfig:
        """A copy with the flags that were given (not None) applied."""
        known = {f.name for f in fields(self)}
        unknown = set(flags) - known
        if unknown:
            raise TypeError(f"unknown TrainConfig fields: {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in flags.items() if v is not None})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def shorter_side(input_size: int, resize: int) -> int:
    """Side of the square each image is scaled and centre-cropped to before random crops.

    The paper scales to 256 for its 224 (really 227) crops; other inputs scale in proportion.
    """
    if resize:
        return resize
    if input_size in (224, 227):
        return 256
    return round(input_size * 256 / 224)


def workers_limit() -> int:
    """The most DataLoader workers a run may ask for here. Each is a process: a number far
    beyond the CPUs gains nothing and exhausts the machine (a million would fork until the
    system refuses), so `--workers` is refused beyond WORKERS_PER_CPU per CPU."""
    return WORKERS_PER_CPU * usable_cpus()


def usable_cpus() -> int:
    """The CPUs this process may run on (fewer than the machine's under a container's or
    taskset's limit)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1
