"""Data parallelism across processes: torchrun + DistributedDataParallel.

Each process (rank) is one replica of the network, which may itself span several devices
(the paper's towers). Every global batch of `batch` images is split evenly over the ranks;
each rank's loss is its summed loss × world / (images in the global batch), so DDP's
gradient average is exactly the gradient of the global batch's mean loss — the same step a
single process takes on the whole batch. Only rank 0 writes checkpoints, metrics and
pictures; every rank reads the same checkpoint on `--resume`.

`launch` starts the processes for `alexnetc train --nproc N`: torchrun's elastic agent, run
in the launcher's own process so that it can stop them as one process stops and report a
failure in one line.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

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
    different GPUs) or on the CPU takes no device_ids, as DDP requires."""
    if not d.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    devices = {p.device for p in model.parameters()}
    single_gpu = len(devices) == 1 and device.type == "cuda"
    return DistributedDataParallel(model, device_ids=[device] if single_gpu else None)


# Seconds the processes get to finish their step and checkpoint once the launcher is asked to
# stop; then they are killed. A second signal stops them at once.
GRACE_S = 300
# The signals the agent passes on to the processes (torchrun's).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


@dataclass(frozen=True)
class Failure:
    """The process whose failure explains a launched run's."""

    rank: int
    exitcode: int  # negative: killed by signal -exitcode
    message: str  # its own last `alexnetc: …` message on stderr ("" if it printed none)
    stderr: str = ""  # all it wrote there

    @property
    def killed_by(self) -> signal.Signals | None:
        with contextlib.suppress(ValueError):  # a number that names no signal
            return signal.Signals(-self.exitcode) if self.exitcode < 0 else None
        return None


@dataclass(frozen=True)
class Ended:
    """How a launched run ended, for the launcher to report."""

    code: int  # the launcher's exit code
    signals: tuple[int, ...] = ()  # the stop signals the launcher received, in order
    failure: Failure | None = None
    stderr: str = ""  # rank 0's stderr, to pass on


def launch(nproc: int, args: Sequence[str], env: dict[str, str]) -> Ended:
    """Run `python ARGS` as nproc processes under torchrun's elastic agent, in this process
    (as `torchrun --standalone` would), with `env` added to their environment.

    The agent passes SIGINT/SIGTERM on and waits GRACE_S for the processes to checkpoint and
    exit. Each process's stderr goes to a file, so that a failure is told once, in the words
    of the process that failed, instead of torchrun's traceback."""
    import tempfile
    import uuid

    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, SignalException, Std
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    before = _children()
    with tempfile.TemporaryDirectory(prefix="alexnetc-") as logs, _agent_env(env), \
            _signals() as received:
        config = LaunchConfig(
            min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
            rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
            monitor_interval=0.1, logs_specs=DefaultLogsSpecs(log_dir=logs, redirects=Std.ERR),
            **_known(LaunchConfig, shutdown_timeout=GRACE_S))
        failed: dict[int, int] | None = {}
        signals: list[int] = []
        try:
            elastic_launch(config, sys.executable)(*args)
        except ChildFailedError as e:
            failed = {rank: f.exitcode for rank, f in e.failures.items()}
        except SignalException as e:
            failed, signals = None, received() or [int(e.sigval)]
        finally:
            _kill(_children() - before)  # whatever the agent left behind
        stderr = [_stderr(Path(logs), rank) for rank in range(nproc)]
    if failed is None:
        return Ended(128 + signals[0] if len(signals) == 1 else 130, tuple(signals),
                     stderr=stderr[0])
    return ended(failed, stderr)


def ended(failed: dict[int, int], stderr: Sequence[str]) -> Ended:
    """The outcome of a run that the launcher was not asked to stop: `failed` maps the ranks
    that the agent saw fail to their exit codes, `stderr` is each rank's."""
    if not failed:
        return Ended(0, stderr=stderr[0])
    stopped = [code for code in failed.values() if code - 128 in STOP_SIGNALS]
    if stopped and all(code in stopped or code == -signal.SIGTERM for code in failed.values()):
        # someone signalled the processes themselves: they checkpointed and stopped together
        # (the agent's SIGTERM may have ended the last ones on their way out)
        return Ended(stopped[0], stderr=stderr[0])
    root = root_cause(failed, stderr)
    return Ended(2 if root.exitcode == 2 else 1, failure=root)


def root_cause(failed: dict[int, int], stderr: Sequence[str]) -> Failure:
    """The failure that explains the others. A process killed by a signal other than SIGTERM
    (the kernel's SIGKILL, a crash), else one that reported an error of its own, else one
    that said anything (the others fail on a lost peer, as an internal error, possibly before
    it has exited), else the first seen failing. SIGTERM is what the agent sends the other
    processes when one fails: their deaths explain nothing."""
    messages = [last_message(text) for text in stderr]

    def rank(r: int) -> tuple[bool, bool, bool, bool, int]:
        code = failed.get(r, 0)
        crashed = code < 0 and code != -signal.SIGTERM
        return (not crashed, not messages[r].startswith("alexnetc: error:"), not messages[r],
                code in (0, -signal.SIGTERM), r)

    r = min(range(len(messages)), key=rank)
    return Failure(r, failed.get(r, 1), messages[r], stderr[r])


def last_message(stderr: str) -> str:
    """A process's own last `alexnetc: …` message on stderr, with its indented lines."""
    lines = stderr.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("alexnetc: ")]
    if not starts:
        return ""
    block = [lines[starts[-1]]]
    for line in lines[starts[-1] + 1:]:
        if not line.startswith("  "):
            break
        block.append(line)
    return "\n".join(block)


def _known(cls: Any, **options: Any) -> dict[str, Any]:
    """The options this torch's `cls` has (LaunchConfig grew fields over the versions)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in options.items() if k in names}


def _stderr(logs: Path, rank: int) -> str:
    """What the process of local rank `rank` wrote to stderr (the agent's file for it)."""
    files = sorted(logs.glob(f"*/attempt_*/{rank}/stderr.log"))
    return files[-1].read_text(errors="replace") if files else ""


@contextlib.contextmanager
def _agent_env(env: dict[str, str]) -> Iterator[None]:
    """`env` for the processes the agent starts, and none of the agent's log lines (its
    failure summary is what the launcher says in one line); afterwards os.environ (the agent
    sets variables of its own) and logging as they were."""
    import logging

    saved, level = dict(os.environ), logging.root.manager.disable
    os.environ.update(env)
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(level)
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def _signals() -> Iterator[Callable[[], list[int]]]:
    """The stop signals this process receives meanwhile, in order, whoever handles them (the
    agent installs handlers of its own, which are removed again afterwards)."""
    handlers = {s: signal.getsignal(s) for s in STOP_SIGNALS}
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    got: list[int] = []

    def received() -> list[int]:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(r, 256):
                got.extend(chunk)
        return [s for s in got if s in STOP_SIGNALS]

    try:
        old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except ValueError:  # not the main thread: nothing is counted
        old = None
    try:
        yield received
    finally:
        if old is not None:
            signal.set_wakeup_fd(old)
        for s, h in handlers.items():
            if h is not None:
                signal.signal(s, h)
        os.close(r)
        os.close(w)


def _children() -> set[int]:
    """The pids of this process's children (from /proc; none found elsewhere)."""
    me, kids = str(os.getpid()), set()
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError):
                    stat = Path(entry.path, "stat").read_text()
                    if stat.rsplit(")", 1)[1].split()[1] == me:  # ") STATE PPID …"
                        kids.add(int(entry.name))
    return kids


def _kill(pids: set[int]) -> None:
    """SIGKILL each process and its group (a worker leads one, with its DataLoader workers)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
