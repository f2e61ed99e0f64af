"""`alexnetc train SPEC`: compile the spec, train it with its recipe, never lose the work.

Flags override the spec's `train`/`augment` recipe for this run. With no `--data` it trains on
the embedded handwritten digits; `--data DIR` reads DIR/train/CLASS/* and DIR/val/CLASS/*.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alexnetc.cli.common import (
    check_as_settings,
    check_at_least,
    check_workers,
    data_flag,
    load_checked,
    run_errors,
)
from alexnetc.cli.main import RunError, UsageError

if TYPE_CHECKING:
    from alexnetc.backends.train.launcher import Failure

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
    p.add_argument("--nproc", type=int, help="data-parallel processes on this machine, as "
                   "torchrun --standalone --nproc-per-node N would start them (each process one "
                   "replica, DistributedDataParallel; --batch-size is the global batch)")
    p.set_defaults(func=run)


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags that override the recipe, refused as usage errors where the spec's own rule
    for that setting would refuse them. --max-steps has no setting: any count from 1 works."""
    check_as_settings(args, epochs="epochs", batch_size="batch", lr="lr", seed="seed")
    check_workers(args)
    check_at_least(args, max_steps=1)
    return {"data": data_flag(args.data), "epochs": args.epochs, "batch_size": args.batch_size,
            "lr": args.lr, "devices": args.devices, "amp": args.amp, "compile": args.compile,
            "seed": args.seed, "workers": args.workers, "max_steps": args.max_steps}


def launch(args: argparse.Namespace, out: Path) -> int:
    """`--nproc N`: this same command as N processes on this machine, under torchrun's elastic
    agent run here. Rank 0 speaks for the run; SIGINT/SIGTERM stop the processes as they stop
    one process; a failure is one line: which process, its error, how to continue."""
    from alexnetc.backends.train import launcher
    from alexnetc.backends.train.checkpoint import FILE

    rest, skip = [], False
    for a in args.argv[1:]:  # drop --nproc N / --nproc=N
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            rest.append(a)
    threads = os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.nproc)))
    before = _stamp(out / FILE)
    ended = launcher.launch(args.nproc, ["-m", "alexnetc", "train", *rest],
                               {"OMP_NUM_THREADS": threads})
    if len(ended.signals) > 1:  # stopped at once, as one process stops on a second signal
        print("alexnetc: interrupted", file=sys.stderr)
    else:
        sys.stderr.write(ended.stderr)
    if ended.failure is not None:
        if os.environ.get("ALEXNETC_DEBUG"):  # its traceback, say
            sys.stderr.write(ended.failure.stderr)
        written = _stamp(out / FILE) not in (None, before)
        print(_failed(ended.failure, args, out / FILE, written), file=sys.stderr)
    return ended.code


def _failed(f: Failure, args: argparse.Namespace, checkpoint: Path, written: bool) -> str:
    """The line for a process that failed: which, why, and how to continue where its own
    message did not say and the checkpoint on disk is one to continue from (written by this
    run, or there before a process was killed)."""
    if f.exitcode == 2:  # a usage error, the same in every process
        return f.message
    if f.killed_by is not None:
        why = f"was killed by {f.killed_by.name}"
        if f.killed_by == signal.SIGKILL:
            why += (", which is usually the kernel's out-of-memory killer: the processes needed "
                    "more memory than the machine has (use a smaller --batch-size or fewer "
                    "--nproc)")
    elif f.message:
        why = "failed: " + f.message.removeprefix("alexnetc: ").removeprefix("error: ")
    else:
        why = f"exited with code {f.exitcode}"
    line = f"alexnetc: error: rank {f.rank} of {args.nproc} {why}"
    if "--resume" not in f.message and checkpoint.exists() and (written or f.killed_by):
        line += (f"; continue from {checkpoint} with: "
                 f"{resume_command(args.spec, checkpoint.parent, args.nproc)}")
    return line


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """What tells one version of a file from the next (each checkpoint is a new file)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _out_folder(args: argparse.Namespace) -> Path:
    """The run folder, refused at once where a file holds its name: nothing could be saved."""
    out = Path(args.out or Path("runs") / Path(args.spec).stem)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a run folder; name a folder (it is "
                         "created if missing)")
    return out


def run(args: argparse.Namespace) -> int:
    out = _out_folder(args)
    if args.nproc is not None:
        if args.nproc < 1:
            raise UsageError(f"--nproc must be at least 1, got {args.nproc}")
        if "WORLD_SIZE" not in os.environ:
            load_checked(args.spec)  # spec and flag errors once, here, not from every process
            _flags(args)
            return launch(args, out)
    net, recipe, text = load_checked(args.spec)
    flags = _flags(args)

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
    cleared: dict[str, Any] = dict.fromkeys(_NOT_INHERITED)
    stored = replace(stored, **cleared)
    return stored.override(**flags, out=str(out), spec=args.spec), state, lr


def _train(cfg: Any, net: Any, recipe: Any, text: str, state: Any, lr: float | None,
           console: Any) -> int:
    import torch

    from alexnetc.atomic import WriteFailed
    from alexnetc.backends.train import loop, memory, plots
    from alexnetc.backends.train.checkpoint import NonFiniteState
    from alexnetc.backends.train.run import start

    def warn(msg: str) -> None:
        console.print(f"[yellow]{msg}[/]", highlight=False)

    try:
        tr = start(cfg, net, recipe, text, state, warn)
    except WriteFailed as e:  # the run files of a new run: nothing is saved yet
        raise RunError(f"{e}; no checkpoint was written") from None
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
    memory.warn_if_short(tr, warn)
    stop = loop.Stop()
    try:
        with loop.catch_signals(stop):
            outcome = loop.fit(tr, console, stop)
    except (loop.NonFiniteLoss, NonFiniteState) as e:
        raise RunError(f"{e}; stopping: {_kept(tr, diverged=True)}") from None
    except WriteFailed as e:
        raise RunError(f"{e}; {_kept(tr, diverged=False)}") from None
    if tr.bad.count:
        warn(f"warning: {tr.bad.count} unreadable image(s) were skipped")
    if outcome.status in ("stopped", "max_steps"):
        why = f"interrupted by {stop.name}" if outcome.status == "stopped" else (
            f"stopped after --max-steps {cfg.max_steps}")
        console.print(f"{why} at epoch {tr.epoch + 1}, batch {tr.batch_in_epoch}: saved "
                      f"{tr.checkpoint_path}; continue with: {_resume_command(tr)}")
        return 128 + stop.signum if stop.signum is not None else 0
    assert outcome.final is not None
    console.print(f"validation set, final: {loop.describe(outcome.final)}")
    if d.main:
        _figures(tr, plots, warn)
    return 0


def _resume_command(tr: Any) -> str:
    return resume_command(tr.cfg.spec, tr.cfg.out, tr.dist.world if tr.dist.active else None)


def resume_command(spec: str, out: str | Path, nproc: int | None) -> str:
    """The command that continues a run (`--nproc N` where it ran as N processes)."""
    world = ["--nproc", str(nproc)] if nproc else []
    return shlex.join(["alexnetc", "train", spec, "--out", str(out), "--resume", *world])


def _kept(tr: Any, diverged: bool) -> str:
    """The truth about a failed run's checkpoint: the one on disk and how to continue from it
    (with a tenth of the ε when the weights diverged), or that there is none."""
    if tr.saved is None:
        return "no checkpoint was written" + ("; try a smaller --lr" if diverged else "")
    epoch, step, batch = tr.saved
    where = f"epoch {epoch + 1} batch {batch}" if batch else f"after epoch {epoch}"
    lr = f" --lr {tr.schedule.lr / 10:g}" if diverged else ""
    return (f"{tr.checkpoint_path} (step {step}, {where}) is the last good checkpoint; "
            f"continue from it with: {_resume_command(tr)}{lr}")


def _figures(tr: Any, plots: Any, warn: Any) -> None:
    """Curves and conv1's kernels; skipped with a note when matplotlib is missing."""
    from alexnetc.atomic import WriteFailed

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        warn("matplotlib is not installed: no figures (pip install 'alexnetc[plot]')")
        return
    try:
        written, note = plots.write_figures(tr.run_dir, tr.model, tr.net)
    except WriteFailed as e:
        raise RunError(f"{e}; the trained run is saved in {tr.checkpoint_path}; draw the "
                       f"figures later with: alexnetc plot {shlex.quote(str(tr.run_dir))}"
                       ) from None
    print(f"wrote {' and '.join(map(str, written))}")
    if note:
        print(note)
