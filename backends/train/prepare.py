"""`alexnetc prepare`: an image folder converted once into a prepared set (see `prepared`).

The images are cut into chunks, converted in parallel by worker processes that write each
chunk straight into its place in the arrays (`convert_chunk`), a few chunks in memory at a
time whatever the set's size. Nothing is taken on trust after an interruption (Ctrl-C,
kill -9, a full disk):

- the arrays grow in WORK/ and move to their names only when complete, and the header, the
  mark of a finished set, is written after everything else;
- a chunk is done once its record is in WORK/journal, appended only after the chunk's bytes
  were fsynced: a rerun converts exactly the chunks without a record (a torn last record is
  dropped), and so ends with the bytes a run never stopped would have written;
- the training pixels' statistics are exact integer sums, which neither the order chunks
  finish in nor any number of reruns can change. The per-pixel sum, too large to journal, is
  saved now and then with the chunks it holds; a rerun adds the others back from the array.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import itertools
import json
import os
import shlex
import shutil
import signal
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
import torch

from alexnetc import atomic
from alexnetc.backends.train.data import (
    READ_ERRORS,
    BadImages,
    DataError,
    load_image,
    scan_folder,
)
from alexnetc.backends.train.prepared import (
    HEADER,
    MEAN,
    PLAN,
    SPLITS,
    WORK,
    Header,
    PixelSums,
    PreparedError,
    SplitInfo,
    array_name,
    check_files,
    file_sha256,
    labels_name,
    read_header,
)

CHUNK_BYTES = 8 << 20  # the default chunk: this many bytes of images
FLUSH_S = 0.5  # a finished chunk is fsynced and journalled within about this long
PIXEL_SUM_S = 60.0  # how often the per-pixel sum is saved (a rerun re-reads what came after)
JOURNAL = "journal"
PIXEL_SUM = "pixel-sum.npz"
PR_SET_PDEATHSIG = 1  # Linux prctl: a signal for this process when its parent dies


class Conflict(DataError):
    """The output folder holds something this command must not continue or overwrite (a set
    prepared with other options, other files): a usage error."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM, stopping the conversion as Ctrl-C does: what is done is kept."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class Reporter(Protocol):
    """Where a conversion tells its progress (the command's progress bar)."""

    def start(self, total: int, done: int) -> None: ...
    def advance(self, images: int) -> None: ...
    def warn(self, message: str) -> None: ...


class Quiet:
    """A reporter that says nothing; warnings are kept."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def start(self, total: int, done: int) -> None:
        pass

    def advance(self, images: int) -> None:
        pass

    def warn(self, message: str) -> None:
        self.warnings.append(message)


@dataclass(frozen=True)
class Options:
    source: Path
    out: Path
    side: int = 256
    channels: int = 3
    workers: int = 0  # worker processes; 0 converts in this process
    chunk: int | None = None  # images per chunk; None: the interrupted run's, else CHUNK_BYTES
    labels: Path | None = None  # the validation labels file, if not found in the folder

    def command(self, chunk: int | None = None) -> str:
        """The command that continues this conversion (in chunks of `chunk`, if given)."""
        words = ["alexnetc", "prepare", str(self.source), "-o", str(self.out), "--side",
                 str(self.side)]
        if self.channels != 3:
            words += ["--channels", str(self.channels)]
        if self.labels is not None:
            words += ["--val-labels", str(self.labels)]
        if chunk is not None and chunk != default_chunk(self.side, self.channels):
            words += ["--chunk", str(chunk)]
        return shlex.join(words)


def default_chunk(side: int, channels: int) -> int:
    return max(1, CHUNK_BYTES // (side * side * channels))


@dataclass(frozen=True)
class Plan:
    """What is converted, fixed by the first run and checked by every rerun."""

    source: str
    side: int
    channels: int
    chunk: int
    classes: list[str]
    slots: dict[str, int]
    fingerprint: str  # of every (file, label), in order
    command: str

    @property
    def image_bytes(self) -> int:
        return self.channels * self.side * self.side

    def chunks(self, split: str) -> list[tuple[int, int]]:
        n = self.slots[split]
        return [(i, min(i + self.chunk, n)) for i in range(0, n, self.chunk)]


@dataclass(frozen=True)
class Task:
    """One chunk to convert: images `start`.. of a split, written into `array`."""

    split: str
    chunk: int
    start: int
    files: list[str]
    array: str
    side: int
    channels: int
    stats: bool  # sum the pixels (the training split)


@dataclass
class ChunkResult:
    split: str
    chunk: int
    images: int
    sha256: str
    bad: list[tuple[int, str]]  # (slot, "path: reason")
    pixels: int = 0
    sum: list[int] = field(default_factory=list)  # C
    outer: list[list[int]] = field(default_factory=list)  # C x C
    pixel_sum: np.ndarray | None = None  # C x S x S uint32; never journalled

    def record(self) -> str:
        d = asdict(self)
        del d["pixel_sum"]
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_record(cls, line: str) -> ChunkResult:
        d = json.loads(line)
        d["bad"] = [(int(slot), str(why)) for slot, why in d["bad"]]
        return cls(**d)


@dataclass
class Summary:
    header: Header
    converted: int  # images converted by this run
    before: int  # images converted by earlier, interrupted runs
    seconds: float
    already: bool = False  # the set was finished before this run
    bytes: int = 0


# ---- the workers ----------------------------------------------------------------------------

_ARRAYS: dict[str, int] = {}  # this process's open arrays: path → fd


def _worker_init(parent: int) -> None:
    """Workers leave Ctrl-C to the main process, die with it (even of kill -9: an orphan
    would go on writing), and decode on one thread each."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Elsewhere than Linux, an orphan finishes its chunk: the bytes a rerun writes too.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)
    torch.set_num_threads(1)


def _array_fd(path: str) -> int:
    fd = _ARRAYS.get(path)
    if fd is None:
        fd = _ARRAYS[path] = os.open(path, os.O_WRONLY)
    return fd


def _close_arrays() -> None:
    while _ARRAYS:
        os.close(_ARRAYS.popitem()[1])


def write_at(fd: int, data: np.ndarray, offset: int) -> None:
    view = data.data.cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _outer(p: np.ndarray) -> np.ndarray:
    """Σ x xᵀ over the pixels (the columns of C x P float64 `p`), exact: float64 holds these
    sums of products of bytes while below 2^53, ample for one image. One einsum per pair of
    channels is faster than `p @ p.T`, and stays off BLAS, whose threads in every worker
    would fight over the cores."""
    c = p.shape[0]
    out = np.empty((c, c), np.int64)
    for i in range(c):
        for j in range(i, c):
            out[i, j] = out[j, i] = int(np.einsum("i,i->", p[i], p[j]))
    return out


def convert_chunk(task: Task) -> ChunkResult:
    """Decode, scale and crop a chunk's images, write them at their place in the array, and
    sum their pixels; an unreadable image is left as zeros and reported."""
    c, s = task.channels, task.side
    images = np.zeros((len(task.files), c, s, s), dtype=np.uint8)  # N x C x S x S
    bad: list[tuple[int, str]] = []
    total, outer = np.zeros(c, np.int64), np.zeros((c, c), np.int64)
    for i, path in enumerate(task.files):
        try:
            images[i] = load_image(Path(path), s, c).numpy()
        except READ_ERRORS as e:
            bad.append((task.start + i, f"{path}: {e}"))
            continue
        if task.stats:
            p = images[i].reshape(c, -1).astype(np.float64)  # C x S·S
            total += p.sum(1).astype(np.int64)
            outer += _outer(p)
    try:
        write_at(_array_fd(task.array), images, task.start * c * s * s)
    except OSError as e:  # a full disk, say: said in the user's terms, in any process
        raise atomic.WriteFailed(e.errno, atomic.explain(e, Path(task.array))) from None
    result = ChunkResult(task.split, task.chunk, len(task.files),
                         hashlib.sha256(images.data.cast("B")).hexdigest(), bad)
    if task.stats:
        result.pixels = (len(task.files) - len(bad)) * s * s
        result.sum, result.outer = total.tolist(), outer.tolist()
        result.pixel_sum = images.sum(0, dtype=np.uint32)  # C x S x S
    return result


@dataclass(frozen=True)
class VerifyTask:
    split: str
    chunk: int
    array: str
    offset: int
    length: int
    sha256: str


def verify_chunk(task: VerifyTask) -> tuple[VerifyTask, bool]:
    h = hashlib.sha256()
    with open(task.array, "rb") as f:
        f.seek(task.offset)
        left = task.length
        while left:
            block = f.read(min(left, 1 << 20))
            if not block:
                break
            h.update(block)
            left -= len(block)
    return task, h.hexdigest() == task.sha256


# ---- running tasks --------------------------------------------------------------------------

T = TypeVar("T")
R = TypeVar("R")


class _Inline:
    """An executor that runs each task when submitted, in this process (--workers 0)."""

    def submit(self, fn: Callable[[T], R], task: T) -> Future[R]:
        f: Future[R] = Future()
        try:
            f.set_result(fn(task))
        except Exception as e:
            f.set_exception(e)
        return f

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        _close_arrays()


def run_tasks(fn: Callable[[T], R], tasks: Iterable[T], workers: int,
              on_result: Callable[[R], None], tick: Callable[[], None] = lambda: None) -> None:
    """fn(task) for every task over `workers` processes, at most two tasks per worker in
    flight (the bound on memory); on_result in this process as each ends, tick between."""
    runner: _Inline | ProcessPoolExecutor = (
        _Inline() if workers == 0 else
        ProcessPoolExecutor(workers, initializer=_worker_init, initargs=(os.getpid(),)))
    window = max(2, 2 * workers)
    pending: set[Future[R]] = set()
    it = iter(tasks)
    try:
        while True:
            for task in itertools.islice(it, window - len(pending)):
                pending.add(runner.submit(fn, task))
            if not pending:
                return
            done, pending = wait(pending, timeout=FLUSH_S, return_when=FIRST_COMPLETED)
            for f in done:
                on_result(f.result())
            tick()
    except BrokenProcessPool:
        raise DataError("a conversion process died (killed, perhaps by the system for want "
                        "of memory: use fewer --workers); rerun the command to continue") from None
    finally:
        runner.shutdown(wait=True, cancel_futures=True)


# ---- the conversion -------------------------------------------------------------------------


class Journal:
    """The records of finished chunks, each appended once its bytes are on disk."""

    def __init__(self, path: Path, arrays: dict[str, int]):
        self.path = path
        self.arrays = arrays  # split → fd of its array, to fsync
        self.pending: list[ChunkResult] = []
        self.last = time.monotonic()

    def load(self) -> dict[tuple[str, int], ChunkResult]:
        """The complete records; a torn or garbled last line (a kill mid-append) is none."""
        done: dict[tuple[str, int], ChunkResult] = {}
        try:
            text = self.path.read_bytes().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return done
        for line in text.split("\n"):
            try:
                r = ChunkResult.from_record(line)
            except (ValueError, TypeError, KeyError):
                break
            done[(r.split, r.chunk)] = r
        return done

    def rewrite(self, records: Iterable[ChunkResult]) -> None:
        atomic.write_text(self.path, "".join(r.record() + "\n" for r in records))
        self.last = time.monotonic()

    def add(self, result: ChunkResult) -> None:
        self.pending.append(result)

    def flush(self, due_only: bool = False) -> None:
        if not self.pending or (due_only and time.monotonic() - self.last < FLUSH_S):
            return
        text = "".join(r.record() + "\n" for r in self.pending)
        try:
            for fd in self.arrays.values():  # the chunks' bytes first, then their records
                os.fsync(fd)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise atomic.WriteFailed(e.errno, atomic.explain(e, self.path)) from e
        self.pending.clear()
        self.last = time.monotonic()


@dataclass
class State:
    """What the conversion has so far: every finished chunk, and the per-pixel sum of the
    training chunks in `summed`."""

    done: dict[tuple[str, int], ChunkResult]
    pixel_sum: np.ndarray  # C x S x S uint64
    summed: set[int]  # training chunks in pixel_sum
    saved: float = field(default_factory=time.monotonic)

    def images(self) -> int:
        return sum(r.images for r in self.done.values())


def prepare(opts: Options, report: Reporter | None = None) -> Summary:
    """Convert opts.source into opts.out, or continue an interrupted conversion there."""
    report = report or Quiet()
    started = time.monotonic()
    if (opts.out / HEADER).is_file():  # before scanning a source of perhaps a million files
        return _already(opts, started)
    classes, train, val = scan_folder(opts.source, opts.labels)
    files = {"train": [str(p) for p, _ in train], "val": [str(p) for p, _ in val]}
    labels = {"train": [y for _, y in train], "val": [y for _, y in val]}
    plan = _plan(opts, classes, files, labels, opts.out / WORK)
    arrays = {split: _open_array(opts.out, split, plan) for split in SPLITS}
    try:
        state, before = _convert(opts, plan, files, arrays, report)
        header = _finish(opts.out, plan, state, labels, arrays)
    finally:
        for fd in arrays.values():
            os.close(fd)
    total = sum(header.splits[s].slots for s in SPLITS) * header.image_bytes
    return Summary(header, state.images() - before, before, time.monotonic() - started,
                   bytes=total)


def _convert(opts: Options, plan: Plan, files: dict[str, list[str]], arrays: dict[str, int],
             report: Reporter) -> tuple[State, int]:
    """Every chunk not done before, journalled as it ends, whatever ends the run; the state
    and how many images earlier runs had converted."""
    work = opts.out / WORK
    journal = Journal(work / JOURNAL, arrays)
    state = _resume(work, plan, arrays, journal)
    _check_space(opts.out, plan, arrays)
    before = state.images()
    bad = BadImages(sum(plan.slots.values()), report.warn)
    bad.add([why for r in state.done.values() for _, why in r.bad])
    report.start(sum(plan.slots.values()), before)

    def finished(result: ChunkResult) -> None:
        _add(state, result)
        journal.add(result)
        report.advance(result.images)
        bad.add([why for _, why in result.bad])  # too many: DataError, this chunk journalled

    def tick() -> None:
        journal.flush(due_only=True)
        if time.monotonic() - state.saved >= PIXEL_SUM_S:
            journal.flush()
            _save_pixel_sum(work, state)

    try:
        run_tasks(convert_chunk, _tasks(plan, files, work, state), opts.workers, finished, tick)
    finally:
        journal.flush()
        _save_pixel_sum(work, state)
    return state, before


def _already(opts: Options, started: float) -> Summary:
    """A finished set: the same options are nothing to do; others are a conflict, and so is
    a damaged set (the cheap checks), which no rerun would mend."""
    try:
        header = read_header(opts.out)
        check_files(opts.out, header)
    except PreparedError as e:
        raise Conflict(f"{opts.out} holds a prepared set that cannot be used ({e}); delete "
                       "it and prepare again") from None
    if header.source != str(opts.source.resolve()) or header.side != opts.side \
            or header.channels != opts.channels:
        raise Conflict(f"{opts.out} already holds {header.source} prepared at --side "
                       f"{header.side} --channels {header.channels}; choose another -o, or "
                       "delete it first")
    shutil.rmtree(opts.out / WORK, ignore_errors=True)  # a run killed after its header
    total = sum(s.slots for s in header.splits.values()) * header.image_bytes
    return Summary(header, 0, 0, time.monotonic() - started, already=True, bytes=total)


def _fingerprint(files: dict[str, list[str]], labels: dict[str, list[int]], root: Path) -> str:
    h = hashlib.sha256()
    for split in SPLITS:
        for path, label in zip(files[split], labels[split], strict=True):
            h.update(f"{split}\t{os.path.relpath(path, root)}\t{label}\n".encode())
    return h.hexdigest()


def _plan(opts: Options, classes: list[str], files: dict[str, list[str]],
          labels: dict[str, list[int]], work: Path) -> Plan:
    """The plan of a new conversion (written to WORK), or of the interrupted one found there,
    which must be the same conversion."""
    old = _read_plan(work)
    if old is None and opts.out.is_dir() and any(opts.out.iterdir()):
        raise Conflict(f"{opts.out} is a folder with other files in it; name a new or empty "
                       "folder for the prepared set")
    chunk = opts.chunk or (old.chunk if old else default_chunk(opts.side, opts.channels))
    plan = Plan(str(opts.source.resolve()), opts.side, opts.channels, chunk, classes,
                {s: len(files[s]) for s in SPLITS}, _fingerprint(files, labels, opts.source),
                opts.command(chunk))
    if old is None:
        atomic.make_folder(work)
        atomic.write_text(work / PLAN, json.dumps(asdict(plan), indent=1) + "\n")
        return plan
    for name, flag in (("source", "DATA"), ("side", "--side"), ("channels", "--channels"),
                       ("chunk", "--chunk")):
        if getattr(old, name) != getattr(plan, name):
            raise Conflict(f"{opts.out} holds an unfinished prepare of {old.source} with "
                           f"{flag} {getattr(old, name)}; finish it with: {old.command}; or "
                           "delete it to start again")
    if old.fingerprint != plan.fingerprint or old.classes != plan.classes:
        raise DataError(f"the images in {opts.source} changed since the unfinished prepare in "
                        f"{opts.out} began (files or classes added, removed or renamed); "
                        "delete it to start again")
    return old


def _read_plan(work: Path) -> Plan | None:
    try:
        return Plan(**json.loads((work / PLAN).read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError) as e:
        raise DataError(f"{work / PLAN} cannot be read ({e}); delete {work.parent} to start "
                        "again") from None


def _open_array(out: Path, split: str, plan: Plan) -> int:
    """The split's array in WORK, created sparse at its full size; one moved to its final name
    by a run killed before writing the header is moved back."""
    path, final = out / WORK / array_name(split), out / array_name(split)
    if not path.exists() and final.exists():
        os.replace(final, path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        size = plan.slots[split] * plan.image_bytes
        if os.fstat(fd).st_size != size:
            os.ftruncate(fd, size)
    except OSError as e:
        raise atomic.WriteFailed(e.errno, atomic.explain(e, path)) from e
    return fd


def _resume(work: Path, plan: Plan, arrays: dict[str, int], journal: Journal) -> State:
    """The finished chunks of earlier runs, and the per-pixel sum over them: the one saved,
    plus the chunks journalled after it, read back from the array (and dropped, to convert
    again, where their bytes no longer match their checksum)."""
    done = journal.load()
    shape = (plan.channels, plan.side, plan.side)
    pixel_sum, summed = _load_pixel_sum(work, shape)
    train_done = {c for s, c in done if s == "train"}
    if not summed <= train_done:
        pixel_sum, summed = np.zeros(shape, np.uint64), set()
    for c in sorted(train_done - summed):
        start, stop = plan.chunks("train")[c]
        size = (stop - start) * plan.image_bytes
        data = os.pread(arrays["train"], size, start * plan.image_bytes)
        if hashlib.sha256(data).hexdigest() != done[("train", c)].sha256:
            del done[("train", c)]
            continue
        images = np.frombuffer(data, np.uint8).reshape(stop - start, *shape)
        pixel_sum += images.sum(0, dtype=np.uint64)
        summed.add(c)
    journal.rewrite(done.values())
    return State(done, pixel_sum, summed)


def _load_pixel_sum(work: Path, shape: tuple[int, int, int]) -> tuple[np.ndarray, set[int]]:
    try:
        with np.load(work / PIXEL_SUM) as f:
            pixel_sum, chunks = f["sum"], f["chunks"]
        if pixel_sum.shape == shape and pixel_sum.dtype == np.uint64:
            return pixel_sum.copy(), {int(c) for c in chunks}
    except (OSError, ValueError, KeyError):
        pass
    return np.zeros(shape, np.uint64), set()


def _save_pixel_sum(work: Path, state: State) -> None:
    chunks = np.array(sorted(state.summed), dtype=np.int64)
    atomic.write_stream(work / PIXEL_SUM,
                        lambda f: np.savez(f, sum=state.pixel_sum, chunks=chunks))
    state.saved = time.monotonic()


def _check_space(out: Path, plan: Plan, arrays: dict[str, int]) -> None:
    """Refuse at once a disk that cannot hold the arrays, rather than fill it for hours."""
    needed = 0
    for split, fd in arrays.items():
        st = os.fstat(fd)
        needed += max(0, plan.slots[split] * plan.image_bytes - st.st_blocks * 512)
    free = shutil.disk_usage(out).free
    if needed > free:
        raise atomic.WriteFailed(errno.ENOSPC, f"cannot write {out}: the prepared set needs "
                                 f"{_gb(needed)} more and its disk has {_gb(free)} free")


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _tasks(plan: Plan, files: dict[str, list[str]], work: Path, state: State
           ) -> Iterator[Task]:
    for split in SPLITS:
        array = str(work / array_name(split))
        for k, (start, stop) in enumerate(plan.chunks(split)):
            if (split, k) not in state.done:
                yield Task(split, k, start, files[split][start:stop], array, plan.side,
                           plan.channels, split == "train")


def _add(state: State, result: ChunkResult) -> None:
    state.done[(result.split, result.chunk)] = result
    if result.pixel_sum is not None:
        state.pixel_sum += result.pixel_sum
        state.summed.add(result.chunk)
        result.pixel_sum = None


def _finish(out: Path, plan: Plan, state: State, labels: dict[str, list[int]],
            arrays: dict[str, int]) -> Header:
    """Labels, mean and the arrays under their names, then the header: the set is finished."""
    left_out: list[str] = []
    splits = {split: _write_labels(out, plan, state, split, labels[split], left_out)
              for split in SPLITS}
    mean = (state.pixel_sum / splits["train"].kept).astype(np.float32)  # C x S x S
    atomic.write_stream(out / MEAN, lambda f: np.save(f, mean))
    for split, fd in arrays.items():
        os.fsync(fd)
        os.replace(out / WORK / array_name(split), out / array_name(split))
    atomic.fsync_dir(out)
    header = Header(plan.source, plan.side, plan.channels, plan.chunk, plan.classes, splits,
                    _pixel_sums(plan, state), file_sha256(out / MEAN), left_out)
    atomic.write_text(out / HEADER, header.to_json())
    shutil.rmtree(out / WORK, ignore_errors=True)
    return header


def _write_labels(out: Path, plan: Plan, state: State, split: str, labels: list[int],
                  left_out: list[str]) -> SplitInfo:
    """The split's labels file, -1 for each image left out (added to `left_out`)."""
    records = [state.done[(split, k)] for k in range(len(plan.chunks(split)))]
    column = np.array(labels, dtype="<i4")  # slots
    for r in records:
        for slot, why in r.bad:
            column[slot] = -1
            left_out.append(why)
    kept = int((column >= 0).sum())
    if kept == 0:
        raise DataError(f"{plan.source}/{split} has no readable image: none of its "
                        f"{plan.slots[split]} image files could be read")
    atomic.write_bytes(out / labels_name(split), column.tobytes())
    return SplitInfo(plan.slots[split], kept, [r.sha256 for r in records],
                     file_sha256(out / labels_name(split)))


def _pixel_sums(plan: Plan, state: State) -> PixelSums:
    train = [state.done[("train", k)] for k in range(len(plan.chunks("train")))]
    c = plan.channels
    return PixelSums(sum(r.pixels for r in train),
                     [sum(r.sum[i] for r in train) for i in range(c)],
                     [[sum(r.outer[i][j] for r in train) for j in range(c)] for i in range(c)])


# ---- verifying ------------------------------------------------------------------------------


def verify(folder: Path, workers: int, report: Reporter | None = None) -> tuple[Header, list[str]]:
    """Every chunk's checksum, after the cheap checks (which raise PreparedError): the set's
    header and one line per chunk that does not match."""
    report = report or Quiet()
    header = read_header(folder)
    check_files(folder, header)
    tasks = []
    for split, info in header.splits.items():
        for k, sha in enumerate(info.chunks):
            start = k * header.chunk
            stop = min(start + header.chunk, info.slots)
            tasks.append(VerifyTask(split, k, str(folder / array_name(split)),
                                    start * header.image_bytes,
                                    (stop - start) * header.image_bytes, sha))
    report.start(sum(s.slots for s in header.splits.values()), 0)
    problems: list[str] = []

    def checked(result: tuple[VerifyTask, bool]) -> None:
        task, ok = result
        first = task.offset // header.image_bytes
        last = first + task.length // header.image_bytes - 1
        report.advance(last - first + 1)
        if not ok:
            problems.append(f"{task.array}: images {first:,}–{last:,} (chunk {task.chunk + 1} "
                            f"of {len(header.splits[task.split].chunks)}) do not match their "
                            "checksum")

    run_tasks(verify_chunk, tasks, workers, checked)
    problems.sort()
    return header, problems
