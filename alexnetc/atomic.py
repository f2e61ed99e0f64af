"""Every file alexnetc writes goes through here, so none is ever left half-written.

The data goes to a temporary file beside the target, is fsynced, then renamed over the target
(atomic on POSIX) and the folder fsynced: a crash, a kill or a full disk at any instant leaves
either the previous file or the new one under the target's name, never a mixture. The
temporary file keeps the target's suffix (writers such as matplotlib pick a format from it)
and is created with the usual 0666 & ~umask mode, like any file the user's shell creates.
"""

from __future__ import annotations

import errno
import io
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO


class WriteFailed(OSError):
    """A file could not be written; the previous file under its name, if any, is intact.

    Its message names the file and says why in the user's terms (a full disk, a read-only
    folder), so commands can show it as it is."""

    def __str__(self) -> str:
        return str(self.strerror)


def _temp_beside(path: Path) -> Path:
    return path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")


def fsync_dir(folder: Path) -> None:
    """Make the renames in `folder` durable, where its file system lets a folder be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # some filesystems do not open folders; the rename itself is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def explain(e: OSError, path: Path) -> str:
    """`cannot write PATH: the disk is full` and the like, for an OSError of writing `path`."""
    why = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is used up",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied (is the folder read-only?)",
        errno.EPERM: "permission denied",
        errno.ENOENT: "its folder does not exist",
        errno.ENOTDIR: "a part of its folder path is a file, not a folder",
        errno.EISDIR: "it is a folder",
        errno.EFBIG: "the file is larger than this system allows",
    }.get(e.errno or 0, e.strerror or str(e))
    return f"cannot write {path}: {why}"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write the file to; on success it replaces `path` atomically.

    For writers that take a file name (torch.export.save, onnx.save, savefig). On any
    exception the temporary file is removed and the target left as it was; an OSError
    becomes a `WriteFailed` that says why."""
    target = Path(path)
    tmp = _temp_beside(target)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as e:
        raise WriteFailed(e.errno, explain(e, target)) from e
    os.close(fd)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, WriteFailed):
            raise
        raise WriteFailed(e.errno, explain(e, target)) from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_with(path: str | Path, writer: Callable[[Path], object]) -> None:
    """`writer(tmp)` writes the whole file to `tmp`; then it replaces `path` atomically."""
    with atomic_path(path) as tmp:
        writer(tmp)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one existing file (through links and `..` too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class _Recording(io.BufferedWriter):
    """A file that remembers its first failed write, for writers that swallow the OSError."""

    error: OSError | None = None

    def write(self, data: Any, /) -> int:
        try:
            return super().write(data)
        except OSError as e:
            self.error = self.error or e
            raise


def write_stream(path: str | Path, writer: Callable[[BinaryIO], object]) -> None:
    """`writer(f)` writes the whole file to the open file `f`; then it replaces `path`
    atomically. A failed write is a WriteFailed even where `writer` turned the OSError into
    its own exception, as torch's zip writer does (given a path instead of a file, it even
    aborts the process on a full disk)."""
    with atomic_path(path) as tmp, _Recording(io.FileIO(tmp, "w")) as f:
        try:
            writer(f)
        except Exception:
            if f.error is not None:
                raise f.error from None
            raise


def make_folder(path: str | Path) -> None:
    """mkdir -p, failing as a WriteFailed that says why (a read-only disk, a file in the way)."""
    try:
        Path(path).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteFailed(e.errno, explain(e, Path(path))) from e
