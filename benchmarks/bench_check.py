"""How long `alexnetc SPEC --check-shapes` takes as a whole process, against baselines timed
in the same run, so the figure means the same on a fast and a busy machine.

Rows: `python -c pass` (the interpreter alone), `python -c "import alexnetc.cli.main"` (the
imports the check path cannot avoid) and the check of each spec: by default the paper's
AlexNet and GoogLeNet, whose 9 Inception modules expand to 57 convolutions in 51 stages. Each
is the median of --runs processes after one warm-up, the processes of all rows interleaved so
that a change in the machine's load falls on every row alike; the ratios divide by the two
baselines and by the first spec's check.

    python benchmarks/bench_check.py [--runs 15] [--spec specs/alexnet.net --spec ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def median_seconds(argvs: list[list[str]], runs: int) -> list[float]:
    """Median wall time of `runs` processes of each command, after one untimed run of each
    that warms the file cache; the commands take turns."""
    for argv in argvs:
        subprocess.run(argv, cwd=ROOT, capture_output=True, check=True)
    times: list[list[float]] = [[] for _ in argvs]
    for _ in range(runs):
        for argv, row in zip(argvs, times, strict=True):
            start = time.perf_counter()
            subprocess.run(argv, cwd=ROOT, capture_output=True, check=True)
            row.append(time.perf_counter() - start)
    return [statistics.median(row) for row in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--spec", action="append",
                        help="a spec to check (repeatable; default: AlexNet and GoogLeNet)")
    args = parser.parse_args()
    specs = args.spec or ["specs/alexnet.net", "specs/googlenet.net"]
    python = sys.executable
    rows = [
        ("python -c pass", [python, "-c", "pass"]),
        ("import alexnetc.cli.main", [python, "-c", "import alexnetc.cli.main"]),
        *((f"alexnetc {spec} --check-shapes", [python, "-m", "alexnetc", spec, "--check-shapes"])
          for spec in specs),
    ]
    times = median_seconds([argv for _, argv in rows], args.runs)
    first = times[2]
    print(f"median of {args.runs} processes each, {sys.version.split()[0]}")
    print(f"| {'process':<44} | {'ms':>5} | {'× python':>8} | {'× imports':>9} "
          f"| {'× first spec':>12} |")
    print(f"|{'-' * 46}|{'-' * 6}:|{'-' * 9}:|{'-' * 10}:|{'-' * 13}:|")
    for (name, _), seconds in zip(rows, times, strict=True):
        print(f"| {name:<44} | {seconds * 1e3:>5.0f} | {seconds / times[0]:>8.2f} "
              f"| {seconds / times[1]:>9.2f} | {seconds / first:>12.2f} |")

if __name__ == "__main__":
    main()
