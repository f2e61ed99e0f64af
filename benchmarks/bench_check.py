"""How long `alexnetc SPEC --check-shapes` takes as a whole process, against baselines timed
in the same run, so the figure means the same on a fast and a busy machine.

Rows: `python -c pass` (the interpreter alone), `python -c "import alexnetc.cli.main"` (the
imports the check path cannot avoid) and the check of the paper's AlexNet. Each is the median
of --runs processes after one warm-up; the ratios divide by the two baselines.

    python benchmarks/bench_check.py [--runs 15] [--spec specs/alexnet.net]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def median_seconds(argv: list[str], runs: int) -> float:
    """Median wall time of `runs` processes, after one untimed run that warms the file cache."""
    subprocess.run(argv, cwd=ROOT, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, cwd=ROOT, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--spec", default="specs/alexnet.net")
    args = parser.parse_args()
    python = sys.executable
    rows = [
        ("python -c pass", [python, "-c", "pass"]),
        ("import alexnetc.cli.main", [python, "-c", "import alexnetc.cli.main"]),
        (f"alexnetc {args.spec} --check-shapes",
         [python, "-m", "alexnetc", args.spec, "--check-shapes"]),
    ]
    times = [median_seconds(argv, args.runs) for _, argv in rows]
    print(f"median of {args.runs} processes each, {sys.version.split()[0]}")
    print(f"| {'process':<42} | {'ms':>5} | {'× python':>8} | {'× imports':>9} |")
    print(f"|{'-' * 44}|{'-' * 6}:|{'-' * 9}:|{'-' * 10}:|")
    for (name, _), seconds in zip(rows, times, strict=True):
        print(f"| {name:<42} | {seconds * 1e3:>5.0f} | {seconds / times[0]:>8.2f} "
              f"| {seconds / times[1]:>9.2f} |")

if __name__ == "__main__":
    main()
