"""`alexnetc plot RUN_DIR`: PNG curves of loss and top-1/top-5 error, and conv1's kernels."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw a run's loss/error curves and first-layer kernels",
                       description="Write RUN_DIR/curves.png (from metrics.csv) and "
                       "RUN_DIR/kernels.png (from checkpoint.pt).")
    p.add_argument("run_dir", help="the run folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alexnetc.cli.common import run_errors, run_folder
    from alexnetc.cli.main import RunError, UsageError

    run_dir = run_folder(args.run_dir)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("plot needs matplotlib: pip install 'alexnetc[plot]'") from None

    from alexnetc.backends.train import plots
    from alexnetc.backends.train.checkpoint import FILE
    from alexnetc.backends.train.run import load_run

    with run_errors():
        r = load_run(run_dir) if (run_dir / FILE).exists() else None
    try:
        written, note = plots.write_figures(run_dir, r.model if r else None,
                                            r.net if r else None)
    except (OSError, ValueError) as e:  # no metrics.csv yet, or no epoch in it
        raise RunError(str(e)) from None
    for path in written:
        print(f"wrote {path}")
    if note:
        print(note)
    return 0
