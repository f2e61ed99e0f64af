"""benchmarks/bench_scaling.py still drives the checker's phases as `pipeline.check` does (it
called `graph.build` without the expanded stages after blocks arrived, and failed at once)."""

from __future__ import annotations

from helpers import benchmark


def test_phases_of_a_small_generated_spec_run() -> None:
    bench = benchmark("bench_scaling")
    times = bench.phases(bench.spec(3))
    assert len(times) == 3 and all(t >= 0 for t in times)
