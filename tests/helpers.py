"""Paths and helpers the tests share (importable as `helpers`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


def fill(folder: Path) -> None:
    """Fill the file system holding `folder` to its last byte."""
    for name, chunk in ((".filler", 65536), (".filler-bytes", 1)):
        with open(folder / name, "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError:
                pass
