"""Data parallelism across processes: torchrun + DistributedDataParallel.

Each process (rank) is one replica of the network, which may itself span several devices
(the paper's towers). Every global batch of `batch` images is split evenly over the ranks;
each rank's loss is its summed loss × world / (images in the global batch), so DDP's
gradient average is exactly the gradient of the global batch's mean loss — the same step a
single process takes on the whole batch. Only rank 0 writes checkpoints, metrics and
pictures; every rank reads the same checkpoint on `--resume`.
`launcher.py` starts the processes.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """Where this process stands among the replicas (all 1-process defaults without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    """The rank and world size torchrun put in the environment."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    return Dist(int(env.get("RANK", "0")), world, int(env.get("LOCAL_RANK", "0")),
                int(env.get("LOCAL_WORLD_SIZE", str(world))))


def rank_devices(d: Dist, towers: int, requested: str | None) -> str | None:
    """This rank's device map: what --devices says, else its own share of the node's GPUs
    (one per tower when it has enough, all towers on its first GPU otherwise), else the CPU."""
    if requested is not None or not d.active:
        return requested
    if not torch.cuda.is_available():
        return "cpu"
    per = max(1, torch.cuda.device_count() // d.local_world)
    first = (d.local_rank * per) % torch.cuda.device_count()
    if per >= towers:
        return ",".join(f"cuda:{first + t}" for t in range(towers))
    return f"cuda:{first}"


def init(d: Dist, device: torch.device) -> None:
    """Join the process group: NCCL between GPUs, gloo on the CPU."""
    if not d.active or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")


def shutdown() -> None:
    """Leave the process group, after whatever DDP objects are garbage: a DDP reducer freed
    after its group is destroyed can hang in gloo's teardown."""
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def shard(order: list[int], batch: int, d: Dist) -> list[list[int]]:
    """This rank's share of each global batch of `batch` images: one list per step.

    Every rank gets a list for every step, an empty one where a last batch smaller than the
    world runs out before this rank, so that all ranks take the same steps and with them the
    same collectives. With batch divisible by the world size a full batch gives each rank
    batch/world images.
    """
    steps: list[list[int]] = []
    for i in range(0, len(order), batch):
        chunk = order[i:i + batch]
        q, r = divmod(len(chunk), d.world)
        start = d.rank * q + min(d.rank, r)
        steps.append(chunk[start:start + q + (1 if d.rank < r else 0)])
    return steps


def agree(values: list[float], device: torch.device, d: Dist) -> list[float]:
    """Sum small per-rank numbers over all ranks (flags, counts) in one collective."""
    if not d.active:
        return values
    t = torch.tensor(values, dtype=torch.float64,
                     device=device if device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return [float(v) for v in t.tolist()]


def check_in_sync(model: torch.nn.Module, device: torch.device, d: Dist) -> None:
    """Raise if the replicas' weights differ: each rank's per-tensor sums must be identical."""
    if not d.active:
        return
    with torch.no_grad():
        mine = torch.stack([p.detach().double().sum().cpu() for p in model.parameters()])  # P
    t = mine.to(device if device.type == "cuda" else "cpu")
    low, high = t.clone(), t.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError("the data-parallel replicas hold different weights")


def wrap(model: torch.nn.Module, device: torch.device, d: Dist) -> torch.nn.Module:
    """DistributedDataParallel around the replica; a replica over several devices (towers on
    different GPUs) or on the CPU takes no device_ids, as DDP requires. The gradients are
    views of DDP's all-reduce buckets, so the replica holds them once (as the memory plan
    counts), not once in each parameter's .grad and again in the buckets."""
    if not d.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    devices = {p.device for p in model.parameters()}
    single_gpu = len(devices) == 1 and device.type == "cuda"
    return DistributedDataParallel(model, device_ids=[device] if single_gpu else None,
                                   gradient_as_bucket_view=True)
