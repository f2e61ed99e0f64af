"""The training loop as a few named functions: train_one_epoch, evaluate, fit.

Nothing bad is ever checkpointed: a non-finite loss stops the run *before* the optimiser
step, a non-finite validation loss before the epoch's checkpoint, and checkpoint.save refuses
weights that a step made non-finite, so RUN_DIR/checkpoint.pt always holds the last good
state. SIGINT/SIGTERM set a flag that the loop checks after each step; it then
checkpoints (mid-epoch, resumable exactly) and returns.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from torch import Tensor

from alexnetc.backends.train import distributed
from alexnetc.backends.train.augment import Augmenter
from alexnetc.backends.train.data import Batch, epoch_order
from alexnetc.backends.train.metrics import MetricsLog
from alexnetc.backends.train.run import Totals, Trainer, batches, step_batches


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; the run stops without checkpointing."""


@dataclass
class Stop:
    """Set by the signal handler; the loop checks it between steps."""

    signum: int | None = None
    agreed: bool = False  # whether the replicas agreed, at the last step, to stop

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""


@contextlib.contextmanager
def catch_signals(stop: Stop) -> Iterator[Stop]:
    """SIGINT/SIGTERM ask the loop to checkpoint and stop; a second one stops at once."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.signum is not None:
            raise KeyboardInterrupt
        stop.signum = signum

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@dataclass
class EvalResult:
    images: int
    loss: float
    top1: float  # error rates in [0, 1], centre crop
    top5: float
    ten_top1: float | None = None  # the paper's 10-crop average, when asked for
    ten_top5: float | None = None


def _autocast(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager[None]:
    if amp == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _top_k_wrong(scores: Tensor, labels: Tensor, k: int) -> int:
    """How many labels are not among the k highest scores (N x K scores, N labels)."""
    top = scores.topk(min(k, scores.shape[1]), dim=1).indices  # N x k
    return int((top != labels[:, None]).all(dim=1).sum())


def train_one_epoch(tr: Trainer, stop: Stop, progress: Progress) -> str:
    """Train on the rest of epoch `tr.epoch`; returns "done", "stopped" or "max_steps"."""
    cfg = tr.cfg
    n = len(tr.data.train)
    order = epoch_order(n, cfg.seed, tr.epoch)  # the global order; each rank takes its share
    if tr.batch_in_epoch == 0:
        tr.totals = Totals()
        tr.aug_rng = tr.epoch_rng()
    total_batches = math.ceil(n / cfg.batch_size)
    task = progress.add_task(f"epoch {tr.epoch + 1}/{cfg.epochs}", total=total_batches,
                             completed=tr.batch_in_epoch, loss=math.nan, ips=0.0,
                             lr=tr.schedule.lr)
    tr.model.train()
    steps = distributed.shard(order[tr.batch_in_epoch * cfg.batch_size:], cfg.batch_size,
                              tr.dist)
    pin = tr.device.type == "cuda"
    started, images, loss = time.perf_counter(), 0, math.nan
    for batch in step_batches(tr.data.train, steps, cfg.workers, pin):
        tr.bad.add(batch.bad)
        if batch.labels.numel() or tr.dist.active:  # every replica joins every step
            loss = train_step(tr, batch, stop)
            images += batch.labels.numel()
        tr.batch_in_epoch += 1
        elapsed = time.perf_counter() - started
        progress.update(task, advance=1, loss=loss, ips=images / max(elapsed, 1e-9),
                        lr=tr.schedule.lr)
        if cfg.max_steps is not None and tr.step >= cfg.max_steps:
            tr.totals.seconds += time.perf_counter() - started
            return "max_steps"
        if _stop_now(tr, stop):
            tr.totals.seconds += time.perf_counter() - started
            return "stopped"
    tr.totals.seconds += time.perf_counter() - started
    progress.remove_task(task)
    return "done"


def train_step(tr: Trainer, batch: Batch, stop: Stop | None = None) -> float:
    """One SGD step on one (global) batch; raises NonFiniteLoss before touching the weights.

    The loss is this rank's summed loss × world / (images in the global batch): with one
    process the batch mean, and under DDP, whose gradients are averaged over the ranks, the
    gradient of the global batch's mean. The ranks agree on three numbers each step (images,
    a non-finite loss, a stop request), so all of them stop together or not at all.
    """
    empty = batch.labels.numel() == 0  # a replica with no images this step still takes part
    if empty:  # one placeholder image, whose loss counts for nothing
        x = torch.zeros(1, tr.net.input.c, *tr.augment.crop, device=tr.device)  # 1 x C x h x w
        y = torch.zeros(1, dtype=torch.long, device=tr.device)  # 1
    else:
        x = tr.augment.train(batch.images, tr.aug_rng)  # N x C x h x w
        y = batch.labels.to(tr.device, non_blocking=True)  # N
    with _autocast(tr.device, tr.cfg.amp):
        logits = tr.forward(x)  # N x classes
    loss_sum = F.cross_entropy(logits.float(), y, reduction="sum")
    if empty:
        loss_sum = loss_sum * 0.0
    local = float(loss_sum.item())
    n_all, bad, stopping = distributed.agree(
        [float(batch.labels.numel()), float(not math.isfinite(local)),
         float(stop is not None and stop.signum is not None)], tr.device, tr.dist)
    if bad:
        raise NonFiniteLoss(f"the loss became {local if not math.isfinite(local) else 'NaN'} "
                            f"at epoch {tr.epoch + 1}, step {tr.step + 1}")
    _join(stop, stopping)
    loss = loss_sum * (tr.dist.world / max(n_all, 1.0))
    loss.backward()
    tr.optimiser.step()
    # let the gradients go at once, so that the next forward's activations need not share
    # memory with them (the checker's memory plan counts them from backward to the step)
    tr.optimiser.zero_grad(set_to_none=True)
    tr.step += 1
    if empty:
        return math.nan
    n = batch.labels.numel()
    tr.totals.loss += local
    tr.totals.correct += int((logits.argmax(1) == y).sum())
    tr.totals.seen += n
    return local / n


def _join(stop: Stop | None, asked: float) -> None:
    """Stop with the other replicas when any of them was asked to."""
    if stop is not None:
        stop.agreed = bool(asked)
        if asked and stop.signum is None:
            stop.signum = signal.SIGTERM


def _stop_now(tr: Trainer, stop: Stop) -> bool:
    """Whether to stop after this step: as the replicas agreed in it (a signal that reaches
    one of them after that is agreed on at the next step), or, for a lone process, whether
    it was asked at all."""
    return stop.agreed if tr.dist.active else stop.signum is not None


def _asked_to_stop(tr: Trainer, stop: Stop) -> bool:
    """Whether any replica was asked to stop, agreed in one collective: a signal may reach
    one replica just after another has looked, and all must leave the loop together."""
    (asked,) = distributed.agree([float(stop.signum is not None)], tr.device, tr.dist)
    _join(stop, asked)
    return bool(asked)


@torch.no_grad()
def evaluate(forward: Callable[[Tensor], Tensor], model: torch.nn.Module,
             stream: Iterator[Batch], augment: Augmenter, *, ten_crop: bool = False,
             amp: str | None = None, on_bad: Callable[[list[str]], None] | None = None,
             stop: Stop | None = None) -> EvalResult:
    """Top-1/top-5 error of the centre crop, and of the 10-crop average if asked for."""
    was_training = model.training
    model.eval()
    n = loss = wrong1 = wrong5 = ten1 = ten5 = 0.0
    classes = 0
    for batch in stream:
        if on_bad is not None:
            on_bad(batch.bad)
        if not batch.labels.numel():
            continue
        y = batch.labels.to(augment.device)  # N
        with _autocast(augment.device, amp):
            logits = forward(augment.centre(batch.images)).float()  # N x K
        classes = logits.shape[1]
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        wrong1 += _top_k_wrong(logits, y, 1)
        wrong5 += _top_k_wrong(logits, y, 5)
        if ten_crop:
            crops = augment.ten_crop(batch.images)  # 10 x N x C x h x w
            with _autocast(augment.device, amp):
                out = forward(crops.flatten(0, 1)).float()  # 10N x K
            probs = out.softmax(1).view(10, y.numel(), -1).mean(0)  # N x K
            ten1 += _top_k_wrong(probs, y, 1)
            ten5 += _top_k_wrong(probs, y, 5)
        n += y.numel()
        if stop is not None and stop.signum is not None:
            break
    model.train(was_training)
    if n == 0:
        return EvalResult(0, math.nan, math.nan, math.nan)
    if classes <= 5:  # every label is among the top 5: the rate says nothing
        wrong5 = ten5 = math.nan
    return EvalResult(int(n), loss / n, wrong1 / n, wrong5 / n,
                      ten1 / n if ten_crop else None, ten5 / n if ten_crop else None)


def validate(tr: Trainer, ten_crop: bool = False, stop: Stop | None = None) -> EvalResult:
    n = len(tr.data.val)
    stream = batches(tr.data.val, range(n), tr.cfg.batch_size, tr.cfg.workers,
                     tr.device.type == "cuda")
    return evaluate(tr.forward, tr.model, stream, tr.augment, ten_crop=ten_crop,
                    amp=tr.cfg.amp, on_bad=tr.bad.add, stop=stop)


def make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("{task.fields[ips]:.0f} img/s"),
        TextColumn("lr {task.fields[lr]:.2g}"), TimeRemainingColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )


@dataclass
class Outcome:
    status: str  # "finished", "stopped", "max_steps"
    final: EvalResult | None = None


# A finite loss this many times a uniform guess's is divergence, not slow learning.
DIVERGED = 100


def _num(x: float) -> str:
    """A loss for the console: 4 decimals, or 3 significant digits once it has blown up."""
    return f"{x:.4f}" if abs(x) < 1e4 else f"{x:.3g}"


def _pct(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{100 * x:.2f}%"


def end_of_epoch(tr: Trainer, log: MetricsLog | None, console: Console) -> None:
    """Validate, log, adjust ε, checkpoint, and print the epoch's one-line summary.

    Every replica validates on the whole validation set (their weights are identical), so
    they take the same ε decision without talking, and all stop on a NaN validation loss
    (finite weights that predict only NaN); the training totals are summed over them.
    """
    val = validate(tr)
    if val.images and not math.isfinite(val.loss):
        raise NonFiniteLoss(f"the validation loss became {val.loss} at the end of epoch "
                            f"{tr.epoch + 1}")
    lr_used = tr.schedule.lr
    loss, correct, seen = distributed.agree(
        [tr.totals.loss, float(tr.totals.correct), float(tr.totals.seen)], tr.device, tr.dist)
    t = Totals(loss, int(correct), int(seen), tr.totals.seconds)
    train_loss = t.loss / max(t.seen, 1)
    ips = t.seen / max(t.seconds, 1e-9)
    if log is not None:
        log.append({"epoch": tr.epoch + 1, "step": tr.step, "lr": lr_used,
                    "train_loss": train_loss, "train_top1_err": 1 - t.correct / max(t.seen, 1),
                    "val_loss": val.loss, "val_top1_err": val.top1, "val_top5_err": val.top5,
                    "images_per_s": ips, "seconds": t.seconds})
    distributed.check_in_sync(tr.model, tr.device, tr.dist)
    dropped = tr.schedule.step(val.top1)
    tr.epoch += 1
    tr.batch_in_epoch = 0
    tr.save()
    note = f"  ε → {tr.schedule.lr:.2g}" if dropped else ""
    top5 = "" if math.isnan(val.top5) else f" (top-5 {_pct(val.top5)})"
    console.print(f"epoch {tr.epoch}/{tr.cfg.epochs}  loss {_num(train_loss)}  "
                  f"train err {_pct(1 - t.correct / max(t.seen, 1))}  val loss {_num(val.loss)}  "
                  f"val err {_pct(val.top1)}{top5}  lr {lr_used:.2g}  "
                  f"{ips:.0f} img/s  {t.seconds:.1f} s{note}", highlight=False)
    chance = math.log(max(len(tr.data.classes), 2))  # the loss of a uniform guess
    if train_loss > DIVERGED * chance:
        console.print(f"[yellow]warning: the training loss {train_loss:.3g} is over {DIVERGED}x "
                      f"a uniform guess's {chance:.2f}: training has diverged. Try a smaller "
                      "--lr, or smaller weights (`init std=` in the spec).[/]", highlight=False)


def fit(tr: Trainer, console: Console, stop: Stop) -> Outcome:
    """Train until cfg.epochs are done, a signal arrives or max_steps is reached."""
    # Tiny activations are denormal floats, 10-100x slower on CPUs. The flag is the whole
    # process's (hypothesis, numpy, the caller's own maths), so it is put back afterwards.
    torch.set_flush_denormal(True)
    try:
        return _fit(tr, console, stop)
    finally:
        torch.set_flush_denormal(False)  # PyTorch's default; there is no getter to restore


def _fit(tr: Trainer, console: Console, stop: Stop) -> Outcome:
    log = MetricsLog(tr.run_dir, resume_epoch=tr.epoch if tr.step else None) \
        if tr.dist.main else None
    try:
        with make_progress(console) as progress:
            while tr.epoch < tr.cfg.epochs:
                status = train_one_epoch(tr, stop, progress)
                if status != "done":
                    distributed.check_in_sync(tr.model, tr.device, tr.dist)
                    tr.save()
                    return Outcome(status)
                end_of_epoch(tr, log, console)
                if _asked_to_stop(tr, stop):
                    return Outcome("stopped")
    finally:
        if log is not None:
            log.close()
    final = validate(tr, ten_crop=tr.cfg.ten_crop, stop=stop)
    return Outcome("finished", final)


def _top5(x: float | None) -> str:
    """`, top-5 error 1.00%`; nothing where top-5 means nothing (5 classes or fewer)."""
    return "" if x is None or math.isnan(x) else f", top-5 error {_pct(x)}"


def describe(result: EvalResult) -> str:
    """`top-1 error 2.50% (accuracy 97.50%), top-5 0.00% [10-crop: ...]` for the console."""
    s = (f"top-1 error {_pct(result.top1)} (accuracy {_pct(1 - result.top1)})"
         f"{_top5(result.top5)} on {result.images} images, centre crop")
    if result.ten_top1 is not None:
        s += (f"; 10-crop: top-1 error {_pct(result.ten_top1)} (accuracy "
              f"{_pct(1 - result.ten_top1)}){_top5(result.ten_top5)}")
    return s
