"""`alexnetc predict RUN_DIR IMAGE…`: the five most probable labels of each image (Figure 4)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top-5 labels of images with a trained run",
                       description="Print each image's most probable labels and probabilities.")
    p.add_argument("run_dir", help="the run folder (holds checkpoint.pt)")
    p.add_argument("images", nargs="+", help="image files, or folders: every image in a folder "
                   "(and its subfolders), in name order")
    p.add_argument("--top", type=int, default=5, help="labels to show per image (default 5)")
    p.add_argument("--ten-crop", action="store_true", help="average over the paper's 10 crops")
    p.add_argument("--devices", help="e.g. cpu or cuda:0")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alexnetc.cli.common import check_at_least, run_errors, run_folder
    from alexnetc.cli.main import UsageError

    check_at_least(args, top=1)
    run_dir = run_folder(args.run_dir)
    missing = [p for p in args.images if not Path(p).exists()]
    if missing:
        raise UsageError(f"no such image{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")

    from alexnetc.backends.train.predict import image_files, predict
    from alexnetc.backends.train.run import load_run

    with run_errors():
        images = image_files([Path(p) for p in args.images])
        r = load_run(run_dir, args.devices)
        results = predict(r, images, args.top, args.ten_crop)
    width = max(len(label) for res in results for label, _ in res.top)
    for res in results:
        print(res.path)
        for label, p in res.top:
            bar = "█" * round(p * 30)
            print(f"  {label:<{width}}  {100 * p:6.2f}%  {bar}")
    return 0
