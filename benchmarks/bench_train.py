"""Whole-network training throughput on one GPU: hand-written PyTorch vs alexnetc.

One run, one card, synthetic data, the paper's two-tower AlexNet at batch 256:
  (a) a hand-written eager AlexNet with nn.LocalResponseNorm (fp32, and bf16 channels_last),
  (b) the same under torch.compile (bf16 autocast, channels_last),
  (c) alexnetc's module with its best options: bf16 autocast, channels_last, the fused Triton
      ReLU+LRN+MaxPool kernels, torch.compile of the rest,
plus the eager network with LRN removed (what LRN costs), a check that (c) computes the same
loss as (a) on the same weights and batch, and the compute floor: the measured bf16 matrix
rate against the network's 3 × 724 M multiply-adds per training image.

    python benchmarks/bench_train.py [--batch 256] [--steps 20] [--out FILE.md] [--profile]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alexnetc.backends.kernels.choose import eager_first

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "alexnet.net"
MACS = 724_406_816


class TowerLRN(nn.Module):
    """The paper's LRN (α not divided by the window) inside each tower's half of the maps."""

    def __init__(self, towers: int = 2):
        super().__init__()
        self.towers = towers
        self.lrn = nn.LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)

    def forward(self, x: Tensor) -> Tensor:  # N x C x H x W
        return torch.cat([self.lrn(h) for h in x.chunk(self.towers, 1)], 1)  # N x C x H x W


class HandAlexNet(nn.Module):
    """AlexNet as one writes it by hand on one GPU: the towers as groups=2 convolutions."""

    def __init__(self, lrn: bool = True):
        super().__init__()
        norm: Callable[[], nn.Module] = TowerLRN if lrn else nn.Identity
        self.features = nn.Sequential(
            nn.Conv2d(3, 96, 11, 4), nn.ReLU(inplace=True), norm(), nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, 1, 2, groups=2), nn.ReLU(inplace=True), norm(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3, 1, 1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, 1, 1, groups=2), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, 1, 1, groups=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(9216, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
            nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(4096, 1000))

    def forward(self, x: Tensor) -> Tensor:  # N x 3 x 227 x 227
        return self.classifier(self.features(x))  # N x 1000


def copy_weights(src: nn.Module, dst: HandAlexNet) -> None:
    """Give the hand-written net alexnetc's weights: each layer's towers concatenated."""
    from alexnetc.backends.lowering import canonical_state_dict

    full = canonical_state_dict(src)  # {"conv1.conv.weight": 96 x 3 x 11 x 11, ...}, in order
    layers = [m for m in dst.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    weights = [w for k, w in full.items() if k.endswith(".weight")]
    biases = [b for k, b in full.items() if k.endswith(".bias")]
    with torch.no_grad():
        for layer, w, b in zip(layers, weights, biases, strict=True):
            layer.weight.copy_(w)
            assert layer.bias is not None
            layer.bias.copy_(b)


def make_step(model: nn.Module, batch: int, amp: bool, channels_last: bool,
              forward: Callable[[Tensor], Tensor] | None = None) -> Callable[[], None]:
    """One full training step (forward, loss, backward, SGD update) on a fixed synthetic batch;
    ``forward`` is the model's compiled form, if any."""
    run_model = forward or model
    dev = torch.device("cuda")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(batch, 3, 227, 227, device=dev).to(memory_format=fmt)  # N x 3 x 227 x 227
    y = torch.randint(0, 1000, (batch,), device=dev)  # N

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(run_model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def bench_step(step: Callable[[], None], batch: int, steps: int) -> float:
    """Images per second of ``steps`` training steps after 3 warm-up steps."""
    for _ in range(3):  # warm-up: compilation, autotuning, allocator
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - t)


def profile_step(step: Callable[[], None], name: str, top: int = 15) -> list[str]:
    """Where a (warmed-up) step's GPU time goes: the ``top`` kernels by total time over 3 steps,
    as a share of the step.  The first question about any throughput gap."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()

    def device_us(e: object) -> float:  # renamed from self_cuda_time_total in newer torch
        t = getattr(e, "self_device_time_total", None)
        return float(getattr(e, "self_cuda_time_total", 0.0) if t is None else t)

    events = [(device_us(e), e.key, e.count) for e in prof.key_averages()]
    events = sorted((ev for ev in events if ev[0] > 0), reverse=True)
    total = sum(t for t, _, _ in events)
    lines = [f"GPU time of {name}: {total / 3 / 1e3:.2f} ms per step (3 profiled steps)", "",
             "| kernel | ms per step | share | calls per step |", "| --- | ---: | ---: | ---: |"]
    for t, key, count in events[:top]:
        lines.append(f"| `{key[:90]}` | {t / 3 / 1e3:.3f} | {t / total:.1%} | {count / 3:g} |")
    return lines


def matmul_rate() -> float:
    """Measured bf16 matrix rate in multiply-adds per second (8192³ products)."""
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(10):
        a @ b
    torch.cuda.synchronize()
    return 10 * 8192**3 / (time.perf_counter() - t)


def alexnetc_module(channels_last: bool, fused: bool | None) -> nn.Module:
    from alexnetc.backends.lowering import build_module
    from alexnetc.compiler.pipeline import load

    net, recipe = load(SPEC)
    model = build_module(net, recipe, devices=["cuda:0"], seed=0, fused=fused)
    if not channels_last:
        return model
    # Module.to takes memory_format (documented); torch's overloads leave it out
    return model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]


def check_same_loss(batch: int) -> list[str]:
    """(c) and (a) on the same weights and batch: the loss must agree."""
    torch.manual_seed(0)
    ours = alexnetc_module(channels_last=True, fused=None).cuda().eval()
    hand = HandAlexNet().cuda().eval()
    copy_weights(ours, hand)
    x = torch.randn(batch, 3, 227, 227, device="cuda")  # N x 3 x 227 x 227
    y = torch.randint(0, 1000, (batch,), device="cuda")  # N
    with torch.no_grad():
        ref = F.cross_entropy(hand(x), y).item()
        fp32 = F.cross_entropy(ours(x), y).item()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            bf16 = F.cross_entropy(torch.compile(ours)(x.to(
                memory_format=torch.channels_last)), y).item()
    lines = [f"loss, same weights and batch of {batch}: hand-written fp32 {ref:.6f}; "
             f"alexnetc fp32 {fp32:.6f} (rel. diff {abs(fp32 - ref) / ref:.1e}); "
             f"alexnetc bf16+compile {bf16:.6f} (rel. diff {abs(bf16 - ref) / ref:.1e})"]
    assert abs(fp32 - ref) / ref < 1e-4, lines[0]
    assert abs(bf16 - ref) / ref < 2e-2, lines[0]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--out", type=Path)
    p.add_argument("--profile", action="store_true",
                   help="also list the kernels that take each compiled step's GPU time")
    p.add_argument("--profile-top", type=int, default=15, help="kernels listed per profile")
    p.add_argument("--quick", action="store_true",
                   help="only (a) eager fp32, (b) torch.compile and (c) alexnetc")
    args = p.parse_args()
    torch.backends.cudnn.benchmark = True
    card = torch.cuda.get_device_name()
    lines = [f"# Training throughput, {card}, batch {args.batch}, synthetic data",
             f"torch {torch.__version__}", ""]
    try:
        lines += check_same_loss(16)
    except Exception as e:  # report, then measure the rest with the other kernel variant
        from alexnetc.backends.kernels import library

        lines.append(f"same-loss check FAILED with the '{library.VARIANT}' kernel: "
                     f"{type(e).__name__}: {str(e)[:300]}")
        library.VARIANT = "windows" if library.VARIANT == "rows" else "rows"
        lines += check_same_loss(16)
    print("\n".join(lines), flush=True)
    rate = matmul_rate()
    floor = rate / (3 * MACS)
    rows: list[tuple[str, float]] = []
    profiles: list[str] = []

    def run(name: str, make: Callable[[], nn.Module], amp: bool, cl: bool,
            compiled: bool = False) -> float:
        torch.manual_seed(0)
        try:
            model = make().cuda()
            if cl:
                # Module.to's overloads leave out its documented memory_format
                model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
            forward = None
            if compiled:  # as `alexnetc train --compile` does: the first (warm-up) call eager,
                # which times the fused kernels' variants (no effect on a hand-written model)
                forward = eager_first(model, torch.compile(model))
            step = make_step(model, args.batch, amp, cl, forward)
            ips = bench_step(step, args.batch, args.steps)
            if args.profile and compiled:
                profiles.extend(["", *profile_step(step, name, args.profile_top)])
                print("\n".join(profiles[-(args.profile_top + 5):]), flush=True)
        except Exception as e:  # one failing configuration must not hide the others
            print(f"{name}: FAILED {type(e).__name__}: {str(e)[:500]}", flush=True)
            ips = float("nan")
        rows.append((name, ips))
        print(f"{name}: {ips:,.0f} images/s", flush=True)
        torch.cuda.empty_cache()
        return ips

    run("(a) hand-written eager, fp32", HandAlexNet, False, False)
    if not args.quick:
        run("(a) hand-written eager, bf16 channels_last", HandAlexNet, True, True)
        run("hand-written eager without LRN, bf16 channels_last",
            lambda: HandAlexNet(lrn=False), True, True)
    base = run("(b) hand-written torch.compile, bf16 channels_last", HandAlexNet, True, True, True)
    if not args.quick:
        run("alexnetc eager, fp32, fused kernels", lambda: alexnetc_module(False, None), False,
            False)
    best = run("(c) alexnetc: bf16, channels_last, fused kernels, torch.compile",
               lambda: alexnetc_module(True, None), True, True, True)
    lines += ["", f"bf16 matrix rate {rate * 2 / 1e12:.0f} TFLOP/s → compute floor "
              f"{floor:,.0f} images/s (3 × {MACS:,} multiply-adds per training image)", "",
              "| configuration | images/s | vs (b) torch.compile | of compute floor |",
              "| --- | ---: | ---: | ---: |"]
    lines += [f"| {n} | {v:,.0f} | {v / base:.2f}x | {v / floor:.0%} |" for n, v in rows]
    from alexnetc.backends.kernels import choose, library

    shown = []
    for k, v in choose.chosen().items():  # k: choose.signature's (kind, shape, stride, dtype, ..)
        shape = cast("tuple[int, ...]", k[1])
        shown.append(f"{k[0]} {'x'.join(map(str, shape))} {str(k[3]).removeprefix('torch.')}"
                     f"{' argmax' if k[0] == 'fwd' and k[5] else ''}: {v}")
    picks = ", ".join(shown)
    lines += ["", f"alexnetc / torch.compile: {best / base:.2f}x (LRN kernels: forward "
              f"{library.VARIANT}, backward {library.BWD_VARIANT}; "
              f"measured choices: {picks or 'none'})"]
    text = "\n".join(lines + profiles)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
