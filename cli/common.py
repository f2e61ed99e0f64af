"""Helpers the subcommands share: reading a spec, checking paths and flags, and the one rule
that turns a backend's errors into exit codes (`run_errors`)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from alexnetc.atomic import WriteFailed, same_file
from alexnetc.cli.main import RunError, UsageError
from alexnetc.compiler.errors import SpecError
from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.pipeline import check_bytes
from alexnetc.compiler.recipe import Recipe, flag_problem
from alexnetc.compiler.records import show_int
from alexnetc.filekind import special_file


def read_spec(path: str) -> tuple[str, bytes]:
    """(display name, bytes) of a spec file or stdin; a path that is empty, missing or not a
    regular file is a usage error. What the path is comes from stat, before any open: opening
    a named pipe waits for a writer, and a device may never end."""
    if path == "-":
        return "<stdin>", sys.stdin.buffer.read()
    if not path:
        raise UsageError("the spec path is empty: name a .net file, or `-` for standard input")
    p = Path(path)
    try:
        if p.is_dir():
            raise UsageError(f"{path} is a folder, not a spec file")
        kind = special_file(p)
        if kind is not None:
            raise UsageError(f"{path} is {kind}, not a spec file: name a regular file, or `-` "
                             "to read standard input")
        return path, p.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no such spec file: {path}") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None


def run_folder(path: str) -> Path:
    """The RUN_DIR argument of eval/predict/plot; a missing folder is a usage error (exit 2),
    like a missing spec file."""
    p = Path(path)
    if not p.is_dir():
        raise UsageError(f"no such run folder: {path}")
    return p


def output_file(path: str, inputs: Sequence[tuple[str, str | Path]] = (),
                flag: str = "-o") -> Path:
    """A file to write that the user named with `flag`: checked before any work is done, so a
    typo in its folder is a usage error at once, not a failure after the work. `inputs` are
    (what, path) of the files the command reads: writing over one would destroy it. A
    symlink is followed (the file is written where it points, as a shell's `>` would); a
    named pipe or a device is refused, since the atomic write would put a file in its place."""
    p = Path(path)
    if p.is_symlink():
        p = p.resolve()
    if p.is_dir():
        raise UsageError(f"{path} is a folder; give a file name with {flag}")
    kind = special_file(p)
    if kind is not None:
        raise UsageError(f"{path} is {kind}; {flag} writes a regular file (replacing it "
                         "whole when done), so give a file name")
    if not p.parent.is_dir():
        raise UsageError(f"no such folder for {path}: {p.parent}")
    for what, source in inputs:
        if same_file(p, source):
            raise UsageError(f"{flag} {path} is {what}, which this command reads; writing "
                             "there would destroy it: give another file name")
    return p


def check_at_least(args: argparse.Namespace, **least: int) -> None:
    """Integer flags with a floor, e.g. `check_at_least(args, batch_size=1, workers=0)`; a
    value below it is a usage error worded as `train` words it. (Unset flags, None, pass.)"""
    for name, floor in least.items():
        value = getattr(args, name)
        if value is not None and value < floor:
            raise UsageError(f"--{name.replace('_', '-')} must be at least {floor}, got {value}")


def check_as_settings(args: argparse.Namespace, **settings: str) -> None:
    """Flags that override a spec setting obey that setting's rule, one shared code path:
    `check_as_settings(args, batch_size="batch")` refuses `--batch-size 0` as a spec's
    `batch=0` is refused, as a usage error. (Unset flags, None, pass.)"""
    for name, setting in settings.items():
        problem = flag_problem(f"--{name.replace('_', '-')}", setting, getattr(args, name))
        if problem is not None:
            raise UsageError(problem)


def check_workers(args: argparse.Namespace) -> None:
    """--workers: at least 0, and at most what this machine can run (`workers_limit`)."""
    from alexnetc.backends.train.config import WORKERS_PER_CPU, workers_limit

    check_at_least(args, workers=0)
    most = workers_limit()
    if args.workers is not None and args.workers > most:
        raise UsageError(f"--workers must be at most {most} on this machine ({WORKERS_PER_CPU} "
                         f"per CPU), got {show_int(args.workers)}: each worker is a process, "
                         "and more than the CPUs can run only wait on each other")


def data_flag(value: str | None) -> str | None:
    """--data as stored in a run's config: `digits`, `synthetic`, or a normalised folder path
    (so `--resume --data d/` matches a run started with `--data d`)."""
    if value is None or value in ("digits", "synthetic"):
        return value
    return str(Path(value))


@contextmanager
def run_errors() -> Iterator[None]:
    """The one rule for what goes wrong loading a run, a checkpoint, data or images:

    - a path the user named that does not exist (no checkpoint.pt in RUN_DIR, no --data
      folder) and a --devices this machine lacks are usage errors: UsageError, exit 2;
    - a file that exists but cannot be used (unreadable, truncated, corrupt, written for
      another spec or format) and unusable data are errors of the run: RunError, exit 1;
    - so is a file that cannot be written (a full disk, a read-only folder): its message names
      the file and why, and the previous file under its name is intact.

    Imports the backend (torch) when entered: only for commands that load one."""
    from alexnetc.backends.train.checkpoint import CheckpointError, NoCheckpoint
    from alexnetc.backends.train.data import DataError, NoData
    from alexnetc.backends.train.model import DeviceError

    try:
        yield
    except (NoCheckpoint, NoData, DeviceError) as e:
        raise UsageError(str(e)) from None
    except (CheckpointError, DataError, WriteFailed) as e:
        raise RunError(str(e)) from None


def load_checked(path: str) -> tuple[CheckedNetwork, Recipe, str]:
    """Check a spec for a backend command: print its errors and exit 1 if it has any."""
    name, data = read_spec(path)
    result = check_bytes(data, name)
    if result.network is None or result.recipe is None:
        raise SpecError(result.diagnostics, result.source)
    return result.network, result.recipe, result.source
