"""The checker's memory plan against a real training step on a GPU.

For the paper's AlexNet at two batch sizes, fp32 and bf16 autocast, on one device (each layer
whole) and as two towers run one after the other on the same card: one training step as
backends/train/loop.py runs it (forward, the loss on fp32 logits, backward, the paper's
momentum SGD, the gradients let go), after one warm-up step so the momentum exists. The
figure is `torch.cuda.max_memory_allocated` over the step against the plan's peak (`alexnetc
check --batch N`), and the bytes autograd keeps (saved_tensors_hooks) against the plan's.

    python benchmarks/bench_memory.py [--out FILE.md] [--batches 64,128]
    python benchmarks/bench_memory.py --device cpu   (the peak from the resident set's growth)
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from alexnetc.backends.lowering import build_module
from alexnetc.backends.lowering.saved import kept_for_backward
from alexnetc.backends.train.optim import PaperSGD
from alexnetc.compiler.memory.plan import plan
from alexnetc.compiler.memory.walk import Target
from alexnetc.compiler.pipeline import load

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "alexnet.net"
MIB = 2**20


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


def _status(field: str) -> int:
    """A field of /proc/self/status in bytes (VmRSS: resident now; VmHWM: the most so far)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def _cpu_peak(spec: str, batch: int, amp: bool, merged: bool) -> int:
    """The CPU has no allocator statistics: a fresh process takes a small step (its caches),
    then the real one; the growth of its resident set's high-water mark, plus the tensors
    resident before the step (weights, momentum, buffers, the batch), is the step's peak."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import bench_memory as b; "
            "print(b.rss_peak(sys.argv[2], int(sys.argv[3]), sys.argv[4] == '1', "
            "sys.argv[5] == '1'))")
    out = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent),
                          spec, str(batch), str(int(amp)),
                          str(int(merged))], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def rss_peak(spec: str, batch: int, amp: bool, merged: bool) -> int:
    torch.set_num_threads(1)
    net, _ = load(spec)
    model = build_module(net, devices=["cpu"] * (1 if merged else net.towers), seed=0,
                         merge=merged).train()
    opt = PaperSGD(model.parameters(), lr=1e-9)
    x = torch.randn(batch, net.input.c, net.input.h, net.input.w)  # N x C x H x W
    y = torch.randint(0, net.output.c, (batch,))  # N
    step(model, opt, x[:2], y[:2], amp, "cpu")  # the momentum, and the libraries' caches
    tensors = [*model.parameters(), *model.buffers(), x, y,
               *(v for s in opt.state.values() for v in s.values())]
    resident = sum(t.numel() * t.element_size() for t in tensors)
    base = _status("VmRSS")
    step(model, opt, x, y, amp, "cpu")
    return _status("VmHWM") - base + resident


def measure(spec: str, batch: int, amp: bool, merged: bool,
            device: str) -> tuple[int, int, int, int]:
    """(kept planned, kept measured, peak measured, peak planned)."""
    net, _ = load(spec)
    towers = net.towers
    model = build_module(net, devices=[device] * (1 if merged else towers), seed=0,
                         merge=merged).train()
    opt = PaperSGD(model.parameters(), lr=1e-9)
    x = torch.randn(batch, net.input.c, net.input.h, net.input.w, device=device)  # N x C x H x W
    y = torch.randint(0, net.output.c, (batch,), device=device)  # N
    target = Target(batch, "bf16" if amp else "fp32", "cuda" if device == "cuda" else "cpu",
                    devices=None if merged else (0,) * towers)
    p = plan(net, target)
    if device == "cuda":
        step(model, opt, x, y, amp, device)  # the momentum, every kernel chosen and compiled
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step(model, opt, x, y, amp, device)  # weights, momentum and the batch included
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
    else:
        peak = _cpu_peak(spec, batch, amp, merged)
    planned_kept = sum(d.kept.at(batch) for d in p.devices)
    measured_kept = kept_for_backward(model, x, amp)
    return planned_kept, measured_kept, peak, max(d.peak(batch) for d in p.devices)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", default=str(SPEC))
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
            for merged in (True, False) if net.towers > 1 else (True,):
                pk, mk, peak, pp = measure(args.spec, batch, amp, merged, args.device)
                where = "one device" if merged else f"{net.towers} towers, one device"
                err = f"{100 * (pk - mk) / mk:+.2f} %"
                peak_cells = f"{peak / MIB:,.1f} | {100 * (pp - peak) / peak:+.1f} %"
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
