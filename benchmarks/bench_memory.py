"""The checker's memory plan against a real training step on a GPU.

For the paper's AlexNet at two batch sizes, fp32 and bf16 autocast, on one device (each layer
whole) and as two towers run one after the other on the same card: one training step as
backends/train/loop.py runs it (forward, the loss on fp32 logits, backward, the paper's
momentum SGD, the gradients let go), after one warm-up step so the momentum exists. The
figure is `torch.cuda.max_memory_allocated` over the step against the plan's peak (`alexnetc
check --batch N`), and the bytes autograd keeps (saved_tensors_hooks) against the plan's.

    python benchmarks/bench_memory.py [--out FILE.md] [--batches 64,128]
    python benchmarks/bench_memory.py --device cpu   (what autograd keeps only: no CUDA peak)
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F

from alexnetc.backends.lowering import build_module
from alexnetc.backends.train.optim import PaperSGD
from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.memory.plan import plan
from alexnetc.compiler.memory.walk import Target
from alexnetc.compiler.pipeline import load

ROOT = Path(__file__).resolve().parent.parent
MIB = 2**20


def kept(model: torch.nn.Module, x: torch.Tensor, amp: bool, device: str) -> int:
    own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    found: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in own:
            found[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), _autocast(device, amp):
        model(x)
    return sum(found.values())


def _autocast(device: str, amp: bool) -> contextlib.AbstractContextManager[None]:
    return (torch.autocast(device, dtype=torch.bfloat16) if amp
            else contextlib.nullcontext())


def step(model: torch.nn.Module, opt: PaperSGD, x: torch.Tensor, y: torch.Tensor, amp: bool,
         device: str) -> None:
    """One step as loop.train_step takes it."""
    with _autocast(device, amp):
        logits = model(x)  # N x classes
    F.cross_entropy(logits.float(), y, reduction="sum").backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def measure(net: CheckedNetwork, batch: int, amp: bool, merged: bool,
            device: str) -> tuple[int, int, int | None, int]:
    """(kept planned, kept measured, peak measured or None on the CPU, peak planned)."""
    towers = net.towers
    model = build_module(net, devices=[device] * (1 if merged else towers), seed=0,
                         merge=merged).train()
    opt = PaperSGD(model.parameters(), lr=1e-9)
    x = torch.randn(batch, net.input.c, net.input.h, net.input.w, device=device)  # N x C x H x W
    y = torch.randint(0, net.output.c, (batch,), device=device)  # N
    target = Target(batch, "bf16" if amp else "fp32", "cuda" if device == "cuda" else "cpu",
                    devices=None if merged else (0,) * towers)
    p = plan(net, target)
    step(model, opt, x, y, amp, device)  # the momentum, and every kernel chosen and compiled
    peak = None
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step(model, opt, x, y, amp, device)  # weights, momentum and the batch included
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    planned_kept = sum(d.kept.at(batch) for d in p.devices)
    measured_kept = kept(model, x, amp, device)
    return planned_kept, measured_kept, peak, max(d.peak(batch) for d in p.devices)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(ROOT / "specs" / "alexnet.net"))
    ap.add_argument("--batches", default="64,128")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", help="write the table as Markdown here too")
    args = ap.parse_args()
    net, _ = load(args.spec)
    card = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    rows = [f"memory plan vs a training step, {net.name}, on {card}, torch {torch.__version__}",
            "", "| batch | precision | map | kept planned MiB | kept measured MiB | error | "
            "peak planned MiB | peak measured MiB | error |", "|---|---|---|---:|---:|---:|---:|"
            "---:|---:|"]
    for batch in (int(b) for b in args.batches.split(",")):
        for amp in (False, True):
            for merged in (True, False):
                pk, mk, peak, pp = measure(net, batch, amp, merged, args.device)
                where = "one device" if merged else f"{net.towers} towers, one card"
                err = f"{100 * (pk - mk) / mk:+.2f} %"
                peak_cells = (f"{peak / MIB:,.1f} | {100 * (pp - peak) / peak:+.1f} %"
                              if peak else "– | –")
                rows.append(f"| {batch} | {'bf16' if amp else 'fp32'} | {where} | "
                            f"{pk / MIB:,.1f} | {mk / MIB:,.1f} | {err} | {pp / MIB:,.1f} | "
                            f"{peak_cells} |")
                print(rows[-1], flush=True)
                if args.device == "cuda":
                    torch.cuda.empty_cache()
    text = "\n".join(rows) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
