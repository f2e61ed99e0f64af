"""Whether a run will fit in memory, told before it starts rather than by the kernel's
out-of-memory killer part way through.

The figure is the checker's memory plan (`alexnetc check SPEC --batch N`) for this run: its
batch per process, precision, device kind and device map, the peak of a training step on
each of the process's devices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from alexnetc.backends.train.distributed import Dist, rank_devices
from alexnetc.backends.train.run import Trainer
from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.memory.plan import plan
from alexnetc.compiler.memory.walk import Target
from alexnetc.compiler.records import DeviceKind

GIB = 2**30


def need(net: CheckedNetwork, batch: int, devices: Sequence[torch.device],
         amp: str | None = None, merged: bool | None = None,
         replicas: bool = False) -> dict[torch.device, int]:
    """Bytes one process needs on each of its devices (one per tower, as the lowering places
    them) at the peak of a training step on `batch` images, with the fused kernels where they
    run. `merged`: every tower on one device runs each layer whole (None: when they share one,
    as the lowering does); `replicas`: one of several data-parallel processes. Under
    --compile the plan is the eager step's."""
    from alexnetc.backends.lowering.fused import kernel_available

    distinct = list(dict.fromkeys(devices))
    whole = len(distinct) == 1 if merged is None else merged
    kind: DeviceKind = "cuda" if any(d.type == "cuda" for d in distinct) else "cpu"
    target = Target(batch, "bf16" if amp else "fp32", kind,
                    kernels=any(d.type == "cuda" and kernel_available(d) for d in distinct),
                    devices=None if whole else tuple(distinct.index(d) for d in devices),
                    replicas=replicas)
    peaks = [d.peak(batch) for d in plan(net, target).devices]
    return dict(zip(distinct, peaks, strict=True))


def available(device: torch.device) -> int | None:
    """Bytes free for a process on `device`: the GPU's free memory, or the machine's
    available memory for the CPU; None where it cannot be told."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        return meminfo_available()
    return None


def meminfo_available(path: Path = Path("/proc/meminfo")) -> int | None:
    """Linux's MemAvailable (what can be allocated without swapping), in bytes."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "MemAvailable":
                return int(value.split()[0]) * 1024  # "  23718048 kB"
    except (OSError, ValueError, IndexError):
        pass
    return None


def shortfall(net: CheckedNetwork, batch: int, devices: Sequence[torch.device],
              sharing: Callable[[torch.device], int], amp: str | None = None,
              merged: bool | None = None, replicas: bool = False) -> str | None:
    """A one-line warning when a process training on `batch` images per step, with its towers
    on `devices`, likely needs more memory than a device has free, counting the `sharing(d)`
    processes of this machine that use device d; else None."""
    for device, one in need(net, batch, devices, amp, merged, replicas).items():
        have = available(device)
        if have is None:
            continue
        processes = sharing(device)
        if one * processes > have:
            return _warning(batch, processes, one * processes, have, device)
    return None


def _warning(batch: int, processes: int, needed: int, have: int, device: torch.device) -> str:
    what = (f"the peak of a training step on {batch} images: weights, gradients, momentum and "
            "the activations kept for backward")
    if processes > 1:
        what = f"{processes} processes, each at {what}"
    has = ("the machine has {:.1f} GiB available" if device.type == "cpu"
           else f"{device} has {{:.1f}} GiB free").format(have / GIB)
    return (f"warning: training needs about {needed / GIB:.1f} GiB of memory ({what}) but "
            f"{has}: it will likely run out of memory; use a smaller --batch-size"
            + (" or fewer --nproc" if processes > 1 else ""))


def sharing(d: Dist, towers: int, requested: str | None) -> Callable[[torch.device], int]:
    """How many of this machine's processes use a device: all of them the CPU's memory, and a
    GPU those whose share of the GPUs (distributed.rank_devices) includes it."""
    from alexnetc.backends.lowering import parse_devices

    def count(device: torch.device) -> int:
        if device.type != "cuda":
            return d.local_world
        return sum(device in parse_devices(rank_devices(replace(d, local_rank=r), towers,
                                                         requested), towers)
                   for r in range(d.local_world)) or 1

    return count


def warn_if_short(tr: Trainer, warn: Callable[[str], None]) -> None:
    """`shortfall` for a trainer about to start."""
    model = tr.model
    devices = [torch.device(x) for x in getattr(model, "devices", [tr.device])]
    message = shortfall(tr.net, tr.cfg.batch_size // tr.dist.world, devices,
                        sharing(tr.dist, tr.net.towers, tr.cfg.devices), tr.cfg.amp,
                        getattr(model, "merged", None), tr.dist.world > 1)
    if message is not None:
        warn(message)
