"""Whether a run will fit in memory, told before it starts rather than by the kernel's
out-of-memory killer part way through.

The estimate is the checker's, kept simple: the activations that backward keeps are about the
forward's outputs (`activation_bytes` per image, fp32) for each image of a process's batch,
plus every parameter three times in fp32 (weights, gradients, momentum).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import torch

from alexnetc.backends.train.distributed import Dist, rank_devices
from alexnetc.backends.train.run import Trainer
from alexnetc.compiler.graph import CheckedNetwork

PARAM_COPIES = 3  # weights, gradients, momentum
GIB = 2**30


def need(net: CheckedNetwork, batch: int) -> int:
    """Bytes one process needs, about, to train `net` on batches of `batch` images."""
    total = net.total()
    return total.activation_bytes * batch + total.params * 4 * PARAM_COPIES


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
              sharing: Callable[[torch.device], int]) -> str | None:
    """A one-line warning when a process training on `batch` images per step, with its towers
    on `devices`, likely needs more memory than a device has free, counting the `sharing(d)`
    processes of this machine that use device d; else None."""
    one = need(net, batch)
    for device in dict.fromkeys(devices):
        have = available(device)
        if have is None:
            continue
        processes = sharing(device)
        share = devices.count(device) / len(devices)  # of the towers, so of the memory
        needed = round(one * share) * processes
        if needed > have:
            return _warning(net, batch, processes, needed, have, device)
    return None


def _warning(net: CheckedNetwork, batch: int, processes: int, needed: int, have: int,
             device: torch.device) -> str:
    what = (f"activations of {net.total().activation_bytes / 2**20:.1f} MiB per image × "
            f"{batch} images, plus weights, gradients and momentum")
    if processes > 1:
        what = f"{processes} processes, each with {what}"
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
    devices = [torch.device(x) for x in getattr(tr.model, "devices", [tr.device])]
    message = shortfall(tr.net, tr.cfg.batch_size // tr.dist.world, devices,
                        sharing(tr.dist, tr.net.towers, tr.cfg.devices))
    if message is not None:
        warn(message)
