"""`alexnetc train SPEC`: compile the spec, train it with its recipe, never lose the work.

Flags override the spec's `train`/`augment` recipe for this run. With no `--data` it trains on
the embedded handwritten digits; `--data DIR` reads DIR/train/CLASS/* and DIR/val/CLASS/*.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from alexnetc.cli.common import check_at_least, data_flag, load_checked, run_errors
from alexnetc.cli.main import UsageError

# Flags that change the maths of a run: resuming with a different value would not continue it.
_FIXED_ON_RESUME = ("data", "batch_size", "seed")
# Flags that hold for one invocation only: a resumed run does not inherit them (the stored
# --max-steps would stop the continuation after its first step).
_NOT_INHERITED = ("max_steps",)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a spec with its recipe (digits data by default)",
                       description="Train a spec. Defaults come from its train/augment lines; "
                       "flags override them.")
    p.add_argument("spec", help="the .net file")
    p.add_argument("--data", help="image folder with train/CLASS/* and val/CLASS/*, 'digits' "
                   "(the default: scikit-learn's handwritten digits) or 'synthetic'")
    p.add_argument("--epochs", type=int, help="epochs in all (default: the recipe's)")
    p.add_argument("--batch-size", type=int, help="images per step (default: the recipe's)")
    p.add_argument("--lr", type=float, help="initial ε; with --resume, the ε to continue with")
    p.add_argument("--devices", help="e.g. cpu, cuda:0 or cuda:0,cuda:1 (one per tower)")
    p.add_argument("--amp", choices=["bf16"], help="mixed precision with bf16 autocast")
    p.add_argument("--compile", action="store_true", default=None, help="use torch.compile")
    p.add_argument("--out", help="run folder (default: runs/SPEC-NAME)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--seed", type=int, help="random seed (default: the recipe's)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default 2)")
    p.add_argument("--max-steps", type=int, help="stop after this many steps in all, with a "
                   "checkpoint (for tests and quick looks)")
    p.add_argument("--nproc", type=int, help="data-parallel processes on this machine: runs "
                   "torchrun --standalone --nproc-per-node N (each process one replica, "
                   "DistributedDataParallel; --batch-size is the global batch)")
    p.set_defaults(func=run)


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    check_at_least(args, epochs=1, batch_size=1, workers=0, max_steps=1)
    if args.lr is not None and not (args.lr > 0 and math.isfinite(args.lr)):
        raise UsageError(f"--lr must be a positive finite number, got {args.lr}")
    return {"data": data_flag(args.data), "epochs": args.epochs, "batch_size": args.batch_size,
            "lr": args.lr, "devices": args.devices, "amp": args.amp, "compile": args.compile,
            "seed": args.seed, "workers": args.workers, "max_steps": args.max_steps}


def launch(args: argparse.Namespace) -> int:
    """`--nproc N`: run this same command under torchrun, N processes on this machine."""
    import subprocess

    rest, skip = [], False
    for a in args.argv[1:]:  # drop --nproc N / --nproc=N
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={args.nproc}", "-m", "alexnetc", "train", *rest]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc)))
    env.setdefault("TORCHELASTIC_ERROR_FILE", "")
    return subprocess.call(cmd, env=env)


def run(args: argparse.Namespace) -> int:
    if args.nproc is not None:
        if args.nproc < 1:
            raise UsageError(f"--nproc must be at least 1, got {args.nproc}")
        if "WORLD_SIZE" not in os.environ:
            load_checked(args.spec)  # spec errors once, here, not from every process
            return launch(args)
    net, recipe, text = load_checked(args.spec)
    flags = _flags(args)
    out = Path(args.out or Path("runs") / Path(args.spec).stem)

    from rich.console import Console

    rank = int(os.environ.get("RANK", "0"))
    console = Console(highlight=False, soft_wrap=True, quiet=rank != 0)  # rank 0 speaks
    try:
        with run_errors():
            cfg, state, lr = _config(args, flags, recipe, text, out)
            return _train(cfg, net, recipe, text, state, lr, console)
    finally:
        from alexnetc.backends.train.distributed import shutdown

        shutdown()


def _config(args: argparse.Namespace, flags: dict[str, Any], recipe: Any, text: str,
            out: Path) -> tuple[Any, Any, float | None]:
    """(config, checkpoint state or None, ε to continue with or None): a new run from the
    recipe and flags, or the stored run's config with this invocation's flags on top."""
    from alexnetc.backends.train.checkpoint import FILE, load
    from alexnetc.backends.train.config import TrainConfig

    if not args.resume:
        if (out / FILE).exists():
            raise UsageError(f"{out} already holds a run; continue it with --resume or "
                             "choose another --out")
        return TrainConfig.from_recipe(recipe, args.spec, **flags, out=str(out)), None, None
    state = load(out / FILE, text)
    stored = TrainConfig.from_dict(state["config"])
    for name in _FIXED_ON_RESUME:
        if flags[name] is not None and flags[name] != getattr(stored, name):
            raise UsageError(f"--{name.replace('_', '-')} {flags[name]} differs from the "
                             f"run's {getattr(stored, name)}; a resumed run keeps it")
    if flags["max_steps"] is not None and flags["max_steps"] <= state["step"]:
        raise UsageError(f"--max-steps {flags['max_steps']} is not beyond the {state['step']} "
                         f"steps {out} has trained (it counts steps in all)")
    lr = flags.pop("lr")
    stored = replace(stored, **{name: None for name in _NOT_INHERITED})
    return stored.override(**flags, out=str(out), spec=args.spec), state, lr


def _train(cfg: Any, net: Any, recipe: Any, text: str, state: Any, lr: float | None,
           console: Any) -> int:
    import torch

    from alexnetc.backends.train import loop, plots
    from alexnetc.backends.train.run import start

    def warn(msg: str) -> None:
        console.print(f"[yellow]{msg}[/]", highlight=False)

    tr = start(cfg, net, recipe, text, state, warn)
    if lr is not None:  # the paper lowered ε by hand; --lr on --resume does the same
        tr.schedule.lr = lr
        tr.schedule.load_state_dict(tr.schedule.state_dict())
    if state is not None and tr.epoch >= cfg.epochs:
        console.print(f"{cfg.out} has already trained {tr.epoch} epochs; pass a larger "
                      "--epochs to train longer")
        return 0
    where = f"resuming at epoch {tr.epoch + 1}, step {tr.step}" if state else "training"
    d = tr.dist
    batch = (f"global batch {cfg.batch_size} = {d.world} processes × {cfg.batch_size // d.world}"
             if d.active else f"batch {cfg.batch_size}")
    console.print(f"{where} {net.name} on {tr.data.source}: {len(tr.data.train)} train / "
                  f"{len(tr.data.val)} val images, {cfg.epochs} epochs, {batch}, "
                  f"ε {tr.schedule.lr:g} (not rescaled for the batch), device "
                  f"{', '.join(str(x) for x in getattr(tr.model, 'devices', [tr.device]))}, "
                  f"{torch.get_num_threads()} CPU threads → {cfg.out}")
    stop = loop.Stop()
    try:
        with loop.catch_signals(stop):
            outcome = loop.fit(tr, console, stop)
    except loop.NonFiniteLoss as e:
        kept = (f"the last good checkpoint, {tr.checkpoint_path}, is kept" if
                tr.checkpoint_path.exists() else "no checkpoint was written")
        print(f"alexnetc: error: {e}; stopping ({kept}). Try a smaller --lr.", file=sys.stderr)
        return 1
    if tr.bad.count:
        warn(f"warning: {tr.bad.count} unreadable image(s) were skipped")
    if outcome.status in ("stopped", "max_steps"):
        why = f"interrupted by {stop.name}" if outcome.status == "stopped" else (
            f"stopped after --max-steps {cfg.max_steps}")
        console.print(f"{why} at epoch {tr.epoch + 1}, batch {tr.batch_in_epoch}: saved "
                      f"{tr.checkpoint_path}; continue with: alexnetc train {cfg.spec} --out "
                      f"{cfg.out} --resume")
        return 128 + stop.signum if stop.signum is not None else 0
    assert outcome.final is not None
    console.print(f"validation set, final: {loop.describe(outcome.final)}")
    if d.main:
        _figures(tr, plots, warn)
    return 0


def _figures(tr: Any, plots: Any, warn: Any) -> None:
    """Curves and conv1's kernels; skipped with a note when matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        warn("matplotlib is not installed: no figures (pip install 'alexnetc[plot]')")
        return
    written, note = plots.write_figures(tr.run_dir, tr.model, tr.net)
    print(f"wrote {' and '.join(map(str, written))}")
    if note:
        print(note)
