"""What a path names, told from its status without opening it.

Opening a named pipe waits for a writer and a device may never end, so every command that
reads a file the user named asks here first (no torch: the check path uses it too).
"""

from __future__ import annotations

from pathlib import Path


def special_file(path: str | Path) -> str | None:
    """`a named pipe` (a socket, a device) when `path` exists and is neither a regular file
    nor a folder, else None."""
    p = Path(path)
    if not p.exists() or p.is_file() or p.is_dir():
        return None
    return ("a named pipe" if p.is_fifo() else "a socket" if p.is_socket()
            else "a device" if p.is_char_device() or p.is_block_device()
            else "a special file")
