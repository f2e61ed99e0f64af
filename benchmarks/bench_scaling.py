"""How checking a spec scales with its length: generated specs of 100, 1,000 and 10,000 conv
stages, timed in-process per phase and per stage (flat columns mean linear time), and the whole
`alexnetc SPEC --check-shapes` process for the 1,000-stage spec.

Phases, as the check command runs them: parse (text → AST), passes (blocks expanded, graph
build and every checking pass), report (the table as written to a file or a pipe). Each
in-process figure is the median of --runs checks after one warm-up; the process figure the
median of --runs processes after one warm-up.

    python benchmarks/bench_scaling.py [--runs 5] [--stages 100 1000 10000]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from alexnetc.compiler.errors import Diagnostics
from alexnetc.compiler.expand import expand
from alexnetc.compiler.graph import CheckedNetwork, build
from alexnetc.compiler.parse import parse
from alexnetc.compiler.passes import Context, run_passes
from alexnetc.compiler.pipeline import collector_paused
from alexnetc.compiler.report import report_text

ROOT = Path(__file__).resolve().parent.parent
PROCESS_STAGES = 1000


def spec(stages: int) -> str:
    """A deep, narrow network: every stage a padded 3x3 conv, so every shape stays 32x32x16."""
    lines = ["network Deep", "input 32x32x3"]
    lines += [f"conv{i}: Conv(3,1, pad=1) x16 + ReLU" for i in range(stages)]
    lines.append("fc: FC(10) + Softmax")
    return "\n".join(lines) + "\n"


def phases(text: str) -> tuple[float, float, float]:
    """Seconds to parse, to build the graph and run the passes, and to write the report, with
    the cyclic collector paused as `pipeline.check` pauses it."""
    with collector_paused():
        t0 = time.perf_counter()
        net = parse(text, "deep.net")
        t1 = time.perf_counter()
        diags = Diagnostics()  # as `pipeline.check`: blocks instantiated, then the graph
        ctx = Context(net, build(net, expand(net, diags)), diags)
        run_passes(ctx)
        t2 = time.perf_counter()
    assert not ctx.diags.errors and ctx.input is not None
    checked = CheckedNetwork(net, ctx.graph, net.name, ctx.input, ctx.towers)
    t3 = time.perf_counter()
    report_text(checked)
    t4 = time.perf_counter()
    return t1 - t0, t2 - t1, t4 - t3


def median(run: Callable[[], float], runs: int) -> float:
    run()
    return statistics.median(run() for _ in range(runs))


def process_seconds(path: Path, runs: int) -> float:
    argv = [sys.executable, "-m", "alexnetc", str(path), "--check-shapes"]

    def once() -> float:
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, capture_output=True, check=True)
        return time.perf_counter() - start

    return median(once, runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--stages", type=int, nargs="+", default=[100, 1000, 10000])
    args = parser.parse_args()
    print(f"median of {args.runs} runs each, {sys.version.split()[0]}; µs per stage")
    print(f"| {'stages':>6} | {'parse':>6} | {'passes':>6} | {'report':>6} | {'total':>6} |")
    print(f"|{'-' * 7}:|{'-' * 7}:|{'-' * 7}:|{'-' * 7}:|{'-' * 7}:|")
    for n in args.stages:
        text = spec(n)
        phases(text)
        runs = [phases(text) for _ in range(args.runs)]
        per = [statistics.median(r[i] for r in runs) / n * 1e6 for i in range(3)]
        print(f"| {n:>6,} | {per[0]:>6.0f} | {per[1]:>6.0f} | {per[2]:>6.0f} "
              f"| {sum(per):>6.0f} |")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "deep.net"
        path.write_text(spec(PROCESS_STAGES), encoding="utf-8")
        seconds = process_seconds(path, args.runs)
    print(f"whole process, `alexnetc SPEC --check-shapes` of {PROCESS_STAGES:,} stages: "
          f"{seconds * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
