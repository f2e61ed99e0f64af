"""`alexnetc train --nproc N`: start the processes, stop them, say how they ended.

torchrun's elastic agent runs in the launcher's own process (as `torchrun --standalone` would
run it), so that SIGINT/SIGTERM stop the processes the way one process stops (checkpoint,
then exit) and a failure is told in one line, in the words of the process that failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

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
