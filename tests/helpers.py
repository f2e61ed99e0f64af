"""Paths and helpers the tests share (importable as `helpers`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from alexnetc.compiler.graph import CheckedNetwork

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


def small_net(path: Path, max_side: int) -> CheckedNetwork | None:
    """A spec checked at its own input size if no side exceeds `max_side`, else at the
    smallest square input from 16 up at which it checks (without its stages' `-> HxWxC`, which
    hold at the full size); None if it does not check at all. For tests that run every spec
    and need only its structure, not its size."""
    from alexnetc.compiler.pipeline import check

    text = path.read_text()
    result = check(text, str(path))
    if result.network is None:
        return None
    if max(result.network.input.h, result.network.input.w) <= max_side:
        return result.network
    c = result.network.input.c
    text = re.sub(r"\s*->\s*[0-9x]+$", "", text, flags=re.M)
    for side in range(16, max_side + 1):
        smaller = re.sub(r"^input \S+", f"input {side}x{side}x{c}", text, count=1, flags=re.M)
        found = check(smaller, str(path)).network
        if found is not None:
            return found
    return None


def benchmark(name: str) -> ModuleType:
    """A script of benchmarks/ (not a package) loaded as a module, for a test to call."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
