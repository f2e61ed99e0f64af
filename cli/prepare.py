"""`alexnetc prepare DATA -o PREPARED`: the paper's 256x256 data set, made once.

Decoding and scaling every photo again each epoch starves a GPU; the paper down-sampled its
images once (section 2). This does the same, into memory-mappable files that
`alexnetc train --data PREPARED` reads directly. Interrupted, the same command continues;
`alexnetc prepare --verify PREPARED` checks every checksum.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from alexnetc.cli.common import check_at_least, check_workers, run_errors
from alexnetc.cli.main import RunError, UsageError

if TYPE_CHECKING:
    from alexnetc.backends.train.prepare import Summary

MAX_SIDE = 4096  # a side beyond this is a typo: 4096² x 3 bytes is 50 MB an image


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("prepare", help="convert an image folder once into the paper's "
                       "256x256 uint8 images, memory-mapped by train --data",
                       description="Scale every image's shorter side to --side, centre-crop "
                       "it and store it as uint8 in memory-mappable files, with the labels, "
                       "the per-pixel mean and the PCA statistics of the training images. "
                       "Interrupted, the same command continues where it stopped.")
    p.add_argument("data", metavar="DATA", help="the image folder: train/CLASS/* and "
                   "val/CLASS/*, or val/* with a labels file (val/labels.csv or ILSVRC's "
                   "ground truth); with --verify and no -o, the prepared folder to check")
    p.add_argument("-o", "--out", metavar="PREPARED",
                   help="the prepared folder to write (created if missing)")
    p.add_argument("--side", type=int, default=256, metavar="N", help="the side images are "
                   "scaled and cropped to: the side the spec trains on, 256 (the default) for "
                   "224/227 inputs, round(input × 256/224) for others, or its `augment "
                   "resize=`")
    p.add_argument("--channels", type=int, choices=(1, 3), default=3,
                   help="3 for colour (default), 1 for grey")
    p.add_argument("--workers", type=int, metavar="N", help="worker processes (default: one "
                   "per CPU; 0 converts in this process)")
    p.add_argument("--chunk", type=int, metavar="N", help="images per chunk, the unit of "
                   "work, checksums and resuming; each worker holds about two (default: 8 MiB "
                   "of images)")
    p.add_argument("--val-labels", metavar="FILE", help="the labels file of loose validation "
                   "images, where it is not in val/ or DATA")
    p.add_argument("--verify", action="store_true", help="check every chunk's checksum (of "
                   "-o once written, else of the folder named)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_at_least(args, side=1, chunk=1)
    check_workers(args)
    if args.side > MAX_SIDE:
        raise UsageError(f"--side must be at most {MAX_SIDE}, got {args.side}")
    from alexnetc.backends.train.config import usable_cpus

    workers = usable_cpus() if args.workers is None else args.workers

    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    if args.out is None:
        if not args.verify:
            raise UsageError("-o PREPARED is required: the folder to write the prepared set "
                             "to (or --verify PREPARED to check one)")
        return _verify(Path(args.data), workers, console)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {out} is a file; name a folder for the prepared set")
    if out.resolve() == Path(args.data).resolve():
        raise UsageError(f"-o {out} is the image folder itself; name another folder")
    code = _prepare(args, out, workers, console)
    if code == 0 and args.verify:
        return _verify(out, workers, console)
    return code




def _prepare(args: argparse.Namespace, out: Path, workers: int, console: Any) -> int:
    from alexnetc.atomic import WriteFailed
    from alexnetc.backends.train.prepare import Conflict, Interrupted, Options, prepare
    from alexnetc.backends.train.prepared import unfinished_command

    labels = Path(args.val_labels) if args.val_labels else None
    if labels is not None and not labels.is_file():
        raise UsageError(f"no such labels file: {labels}")
    opts = Options(Path(args.data), out, args.side, args.channels, workers, args.chunk, labels)
    bar = _Bar(console, out, workers)
    try:
        with _stop_on_sigterm(), bar, run_errors():
            try:
                summary = prepare(opts, bar)
            except Conflict as e:
                raise UsageError(str(e)) from None
            except WriteFailed as e:  # a full disk, say: the chunks done are kept
                command = unfinished_command(out)
                raise RunError(f"{e}" + (f"; what is converted is kept: rerun to continue: "
                                         f"{command}" if command else "")) from None
    except KeyboardInterrupt as e:
        signum = e.signum if isinstance(e, Interrupted) else signal.SIGINT
        command = unfinished_command(out)
        console.print(f"interrupted by {signal.Signals(signum).name}: {bar.done:,} of "
                      f"{bar.total:,} images are converted and kept; continue with: "
                      f"{command or 'the same command'}")
        return 128 + signum
    console.print(_described(summary, out))
    return 0


def _described(s: Summary, out: Path) -> str:
    h = s.header
    sizes = f"{h.splits['train'].kept:,} train / {h.splits['val'].kept:,} val images at " \
            f"{h.side}x{h.side}"
    if s.already:
        return f"{out} already holds {h.source} prepared: {sizes}; nothing to do"
    left = f", {len(h.left_out)} unreadable left out" if h.left_out else ""
    rate = s.converted / max(s.seconds, 1e-9)
    again = f" (and {s.before:,} before an interruption)" if s.before else ""
    size = f"{s.bytes / 1e9:.2f} GB" if s.bytes >= 1e8 else f"{s.bytes / 1e6:.2f} MB"
    return (f"prepared {h.source} → {out}: {sizes}{left}, {size}; "
            f"{s.converted:,} images converted{again} in {s.seconds:.1f} s ({rate:,.0f} "
            f"images/s); train with: alexnetc train SPEC --data {out}")


def _verify(folder: Path, workers: int, console: Any) -> int:
    if not folder.is_dir():
        raise UsageError(f"no such prepared folder: {folder}")
    from alexnetc.backends.train.prepare import verify

    bar = _Bar(console, folder, workers, verb="verifying")
    with run_errors(), bar:
        header, problems = verify(folder, workers, bar)
    chunks = sum(len(s.chunks) for s in header.splits.values())
    if problems:
        for line in problems:
            print(f"alexnetc: error: {line}", file=sys.stderr)
        raise RunError(f"{folder}: {len(problems)} of {chunks} chunks do not match their "
                       f"checksums; prepare the set again: {header.command(folder)}")
    console.print(f"{folder}: every checksum matches ({header.splits['train'].kept:,} train "
                  f"and {header.splits['val'].kept:,} val images at {header.side}x"
                  f"{header.side}, {chunks} chunks)")
    return 0


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM stops the conversion as Ctrl-C does: what is converted is kept."""
    from alexnetc.backends.train.prepare import Interrupted

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class _Bar:
    """The progress bar (images, images/s, ETA) and the warnings, for a terminal; the first
    line says what is converted with how many processes."""

    def __init__(self, console: Any, out: Path, workers: int, verb: str = "preparing"):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self.out = out
        self.workers = workers
        self.verb = verb
        self.progress = Progress(
            TextColumn(verb), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[ips]:,.0f} img/s"), TimeRemainingColumn(),
            console=console, transient=True, disable=not console.is_terminal)
        self.task: Any = None
        self.total = self.done = self.this_run = 0
        self.started = time.monotonic()

    def __enter__(self) -> _Bar:
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.progress.stop()

    def start(self, total: int, done: int) -> None:
        self.total, self.done = total, done
        processes = ("this process" if not self.workers else "1 worker process"
                     if self.workers == 1 else f"{self.workers} worker processes")
        already = f", {done:,} of them done before" if done else ""
        where = f"→ {self.out}" if self.verb == "preparing" else f"in {self.out}"
        self.console.print(f"{self.verb} {total:,} images {where}{already}, with {processes}")
        self.task = self.progress.add_task(self.verb, total=total, completed=done, ips=0.0)
        self.started = time.monotonic()

    def advance(self, images: int) -> None:
        self.done += images
        self.this_run += images
        ips = self.this_run / max(time.monotonic() - self.started, 1e-9)
        self.progress.update(self.task, advance=images, ips=ips)

    def warn(self, message: str) -> None:
        self.console.print(message, style="yellow", markup=False)
