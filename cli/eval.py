"""`alexnetc eval RUN_DIR`: top-1 and top-5 error of a trained run, centre crop and 10-crop."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="top-1/top-5 error of a trained run",
                       description="Evaluate a run's checkpoint on the validation images: "
                       "centre crop, and the paper's 10-crop average.")
    p.add_argument("run_dir", help="the run folder (holds checkpoint.pt)")
    p.add_argument("--data", help="data to evaluate on (default: the run's own); a folder's "
                   "val/ images are used")
    p.add_argument("--ten-crop", action=argparse.BooleanOptionalAction, default=None,
                   help="also average over the 10 crops (default: the recipe's ten_crop)")
    p.add_argument("--batch-size", type=int, default=None, help="images per batch")
    p.add_argument("--workers", type=int, default=None, help="DataLoader worker processes")
    p.add_argument("--devices", help="e.g. cpu or cuda:0")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alexnetc.cli.common import (
        check_as_settings,
        check_workers,
        data_flag,
        run_errors,
        run_folder,
    )

    check_as_settings(args, batch_size="batch")
    check_workers(args)
    run_dir = run_folder(args.run_dir)

    from alexnetc.backends.train.data import BadImages, DataError, open_data
    from alexnetc.backends.train.loop import describe, evaluate
    from alexnetc.backends.train.run import batches, load_run

    with run_errors():
        r = load_run(run_dir, args.devices)
        data = data_flag(args.data) or r.cfg.data
        ds = open_data(data, r.side, r.net.input.c, r.net.output.c)
        if ds.classes != r.classes:
            raise DataError(f"{ds.source} has classes {ds.classes[:5]}… but the run was "
                            f"trained on {r.classes[:5]}…")
        n = len(ds.val)
        bad = BadImages(n)
        ten = r.cfg.ten_crop if args.ten_crop is None else args.ten_crop
        stream = batches(ds.val, range(n), args.batch_size or r.cfg.batch_size,
                         r.cfg.workers if args.workers is None else args.workers)
        result = evaluate(r.model, r.model, stream, r.augment, ten_crop=ten, amp=r.cfg.amp,
                          on_bad=bad.add)
    if bad.count:
        print(f"warning: {bad.count} unreadable image(s) were skipped", file=sys.stderr)
    print(f"{r.net.name} after {r.epoch} epochs on {ds.source}:")
    print(f"  {describe(result)}")
    return 0

