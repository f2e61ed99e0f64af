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


# Two branches of a block joined by a Concat, then added to the stage they branched from.
BRANCHING = """network Small
input 8x8x4

block two(c) {
  a: Conv(1,1) xc + ReLU
  b(in): Conv(3,1, pad=1) xc + ReLU
  cat(a, b): Concat
}

stem: Conv(3,1, pad=1) x8 + ReLU
m: two(4)
sum(m, stem): Add + ReLU
fc: FC(10) + Softmax
"""


def copy_files(src: Path, dst: Path) -> Path:
    """A copy of the files directly in `src` (a prepared set, say) in a new folder `dst`, for
    a test to damage without touching the original."""
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst
