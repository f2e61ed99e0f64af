"""benchmarks/bench_scaling.py still drives the checker's phases as `pipeline.check` does (it
called `graph.build` without the expanded stages after blocks arrived, and failed at once)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_scaling",
                                                  ROOT / "benchmarks" / "bench_scaling.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_phases_of_a_small_generated_spec_run() -> None:
    bench = _bench()
    times = bench.phases(bench.spec(3))
    assert len(times) == 3 and all(t >= 0 for t in times)
