"""Benchmark the fused ReLU → LRN → MaxPool kernel against eager PyTorch and torch.compile.

Run on one GPU:  python benchmarks/bench_fused.py [--out FILE] [--only conv1:fp32 ...] [--warm]
Times both forward kernel variants (library.VARIANT: "windows" and "rows") side by side, each
with the "gather" backward, and with the "rows" backward (library.BWD_VARIANT, columns
"windows+rows-bwd" and "rows+rows-bwd"), and the default "auto" (each call signature times the
variants once and keeps the fastest: what a user gets); a variant that fails to compile or run
prints its error and the rest of the table still runs.
Checks each kernel against the float64 reference on the benchmark shapes (batch 4) and
times (triton.testing.do_bench medians) forward and forward+backward for the AlexNet
conv1 block (128x96x55x55) and conv2 block (128x256x27x27), fp32 and bf16.  Each time is also
shown as a multiple of a bandwidth floor measured on this card: a large tensor copy_ gives the
copy bandwidth; the floor moves x once + y once (forward) or additionally reads x and dy and
writes dx (forward+backward).  Each kernel is then also timed alone (both forwards writing the
argmax, both backwards), which splits forward+backward into its parts.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
from triton.testing import do_bench

from alexnetc.backends.kernels import (
    LRNParams,
    PoolParams,
    fused_relu_lrn_pool,
    kernels_available,
    library,
    lrn_pool,
    lrn_pool_bwd,
    lrn_pool_bwd_rows,
    lrn_pool_rows,
    reference_relu_lrn_pool,
)

LRN = LRNParams(5, 1e-4, 0.75, 2.0)  # AlexNet's
POOL = PoolParams(3, 2)
SHAPES = {"conv1": (128, 96, 55, 55), "conv2": (128, 256, 27, 27)}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Timed side by side in one run: label -> (library.VARIANT, library.BWD_VARIANT).
RUNS = ({v: (v, "gather") for v in library.VARIANTS}
        | {"windows+rows-bwd": ("windows", "rows"), "rows+rows-bwd": ("rows", "rows")}
        | {"auto": ("auto", "auto")})  # auto: what a user gets, the variants timed per call
VARIANTS = tuple(RUNS)


def eager_chain(x: torch.Tensor) -> torch.Tensor:
    """relu → F.local_response_norm (alpha*size) → max_pool2d."""
    return reference_relu_lrn_pool(x, LRN, POOL)


def fused_chain(x: torch.Tensor) -> torch.Tensor:
    return fused_relu_lrn_pool(x, LRN, POOL)


def bench_ms(fn: Callable[[], object]) -> float:
    return float(do_bench(fn, warmup=10, rep=40, return_mode="median"))


def copy_bandwidth() -> float:
    """Bytes/s of a 1 GiB device-to-device copy_ (read + write)."""
    a = torch.empty(2**28, dtype=torch.float32, device="cuda")
    b = torch.empty_like(a)
    ms = bench_ms(lambda: b.copy_(a))
    return 2 * a.numel() * 4 / (ms * 1e-3)


def near_tie_inputs(x64: torch.Tensor) -> torch.Tensor:
    """Bool mask of the inputs whose gradient depends on a pool window whose two largest
    candidates differ by a nonzero amount below 1e-5 relative.  There fp32 (which rounds
    s = k + alpha * Σa² to ~1e-7, i.e. drops a Σa² difference below ~2e-3 at AlexNet's
    alpha) cannot tell which one float64 picks, so dL/dy goes to the other pixel: a precision
    limit of any fp32 evaluation, not a kernel bug; bf16 inputs (many equal values) hit it."""
    k, st, n = POOL.size, POOL.stride, LRN.size
    b = reference_relu_lrn_pool(x64, LRN, None)  # N, C, H, W
    win = b.unfold(2, k, st).unfold(3, k, st).flatten(-2)  # N, C, OH, OW, K*K
    top = win.topk(2, dim=-1).values
    gap = top[..., 0] - top[..., 1]
    tie = ((gap > 0) & (gap <= 1e-5 * top[..., 0].abs())).double()  # N, C, OH, OW
    N, C, H, W = x64.shape
    cols = tie.flatten(2).unsqueeze(2).expand(N, C, k * k, -1).reshape(N, C * k * k, -1)
    hit = F.fold(cols, (H, W), k, stride=st) > 0  # N, C, H, W: pixel lies in a tied window
    hit = F.max_pool3d(hit.double().unsqueeze(1), (n, 1, 1), 1, (n // 2, 0, 0)).squeeze(1) > 0
    return hit  # dilated over the LRN channel window: dx_j reads g_c for c near j


def check(shape: tuple[int, ...], dtype: torch.dtype) -> tuple[float, float, float]:
    """Relative max error of the kernel's forward and gradient vs float64 (batch 4), and the
    fraction of gradient entries left out of the comparison as near-ties."""
    x = (3 * torch.randn(4, *shape[1:], device="cuda")).to(dtype).requires_grad_()
    y = fused_chain(x)
    dy = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, dy)
    x64 = x.detach().double().requires_grad_()
    y64 = eager_chain(x64)
    (gx64,) = torch.autograd.grad(y64, x64, dy.double())
    keep = ~near_tie_inputs(x64.detach())

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a.double() - b).abs().max() / b.abs().max()).item()

    err_b = rel(gx * keep, gx64 * keep)
    return rel(y, y64), err_b, 1.0 - keep.double().mean().item()


def grad_of(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, dy: torch.Tensor) -> object:
    """One forward + backward of f at x with output gradient dy."""
    return torch.autograd.grad(f(x), x, dy)


def time_variant(
    variant: str,
    x: torch.Tensor,
    xg: torch.Tensor,
    dy: torch.Tensor,
    shape: tuple[int, ...],
    dtype: torch.dtype,
) -> tuple[float, float, float, float, float]:
    """(fwd ms, fwd+bwd ms, fwd err, grad err, near-tie fraction) of one RUNS entry."""
    before = library.VARIANT, library.BWD_VARIANT
    library.VARIANT, library.BWD_VARIANT = RUNS[variant]
    try:
        with torch.no_grad():
            t_f = bench_ms(partial(fused_chain, x))
        t_fb = bench_ms(partial(grad_of, fused_chain, xg, dy))
        # after timing: the autotuner's cache key has no batch size, so let it tune on 128
        err_f, err_b, tied = check(shape, dtype)
    finally:
        library.VARIANT, library.BWD_VARIANT = before
    return t_f, t_fb, err_f, err_b, tied


def time_parts(x: torch.Tensor, dy: torch.Tensor) -> dict[str, float]:
    """µs of each kernel launched alone into preallocated buffers (no autograd, no allocation):
    both forwards writing the argmax as training does, and both backwards.  fwd+bwd above is
    roughly one of the first two plus one of the last two; what is left is the op overhead."""
    flat = (LRN, POOL, 1)  # the launchers' parameters: LRN, pool, towers
    y, idx = torch.empty_like(dy), torch.empty_like(dy, dtype=torch.int8)
    dx = torch.empty_like(x)
    lrn_pool.launch_forward(x, y, idx, *flat)  # the argmax both backwards read
    parts = {
        "rows fwd+argmax": partial(lrn_pool_rows.launch_forward, x, y, idx, *flat),
        "windows fwd+argmax": partial(lrn_pool.launch_forward, x, y, idx, *flat),
        "gather bwd": partial(lrn_pool_bwd.launch_backward, x, dy, idx, dx, *flat),
        "rows bwd": partial(lrn_pool_bwd_rows.launch_backward, x, dy, idx, dx, *flat),
    }
    out = {}
    for label, fn in parts.items():
        try:
            out[label] = bench_ms(fn) * 1e3
        except Exception as e:  # one failing kernel must not hide the others
            print(f"{label}: FAILED {type(e).__name__}: {e}", flush=True)
            out[label] = math.nan
    return out


def warm(only: list[str] | None) -> None:
    """Run every variant, part and the torch.compile baseline once per block, timing nothing:
    Triton compiles each autotune configuration into its disk cache (and Inductor its kernels),
    so a timed run started afterwards spends its minutes timing.  gpu_check.sh runs one of
    these per block in parallel; their autotuning choices die with them."""
    for name, shape in SHAPES.items():
        for dname, dtype in DTYPES.items():
            if only and f"{name}:{dname}" not in only:
                continue
            x = (3 * torch.randn(shape, device="cuda")).to(dtype)
            xg = x.detach().requires_grad_()
            dy = torch.randn_like(eager_chain(x))
            runs = {v: fused_chain for v in VARIANTS}
            runs["torch.compile"] = torch.compile(eager_chain, dynamic=False)
            for label, fn in runs.items():
                library.VARIANT, library.BWD_VARIANT = RUNS.get(label, RUNS["auto"])
                try:
                    with torch.no_grad():
                        fn(x)  # inference: the forward without the argmax
                    grad_of(fn, xg, dy)
                except Exception as e:  # the timed run reports it
                    print(f"warm {name} {dname} {label}: {type(e).__name__}: {e}", flush=True)
            try:
                time_parts(x, dy)
            except Exception as e:
                print(f"warm {name} {dname} parts: {type(e).__name__}: {e}", flush=True)
    torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="also write the markdown table to this file")
    ap.add_argument("--only", nargs="*", help="blocks to time, e.g. conv1:fp32 conv2:bf16 "
                    "(default: all four)", choices=[f"{b}:{d}" for b in SHAPES for d in DTYPES])
    ap.add_argument("--warm", action="store_true",
                    help="compile every kernel configuration (disk caches) and time nothing")
    args = ap.parse_args()
    if not torch.cuda.is_available() or not kernels_available("cuda"):
        sys.exit("needs a CUDA device and triton")
    if args.warm:
        warm(args.only)
        return
    t_start = time.perf_counter()
    torch.backends.cudnn.benchmark = True
    card = torch.cuda.get_device_name()
    bw = copy_bandwidth()
    head = " | ".join(f"{v} µs (x floor) | {v} err" for v in VARIANTS)
    lines = [
        f"Card: {card}; torch {torch.__version__}; triton {triton.__version__}; "
        f"copy bandwidth {bw / 1e12:.2f} TB/s",
        "",
        f"| block | dtype | pass | floor µs | eager µs | compile µs | {head} "
        "| best speedup vs compile |",
        "|---|---|---|---|---|---|" + "---|---|" * len(VARIANTS) + "---|",
    ]
    print("\n".join(lines), flush=True)
    parts_lines: list[str] = []
    for name, shape in SHAPES.items():
        for dname, dtype in DTYPES.items():
            if args.only and f"{name}:{dname}" not in args.only:
                continue
            t_block = time.perf_counter()
            x = (3 * torch.randn(shape, device="cuda")).to(dtype)
            n_out = shape[0] * shape[1] * POOL.out_size(shape[2]) * POOL.out_size(shape[3])
            in_b, out_b = x.numel() * x.element_size(), n_out * x.element_size()
            xg = x.detach().requires_grad_()
            dy = torch.randn(n_out, device="cuda").to(dtype).reshape(eager_chain(x).shape)
            base: dict[str, tuple[float, float]] = {}
            for label, f in (("eager", eager_chain), ("compile", None)):
                try:
                    fn = f or torch.compile(eager_chain, dynamic=False)
                    with torch.no_grad():
                        t_f = bench_ms(partial(fn, x))
                    t_fb = bench_ms(partial(grad_of, fn, xg, dy))
                    base[label] = (t_f, t_fb)
                except Exception as e:  # report and go on with the other columns
                    print(f"{name} {dname} {label}: FAILED {type(e).__name__}: {e}", flush=True)
                    base[label] = (math.nan, math.nan)
            res: dict[str, tuple[float, float, float, float, float]] = {}
            for v in VARIANTS:
                try:
                    res[v] = time_variant(v, x, xg, dy, shape, dtype)
                except Exception as e:  # one failing variant must not hide the other
                    print(f"{name} {dname} {v}: FAILED {type(e).__name__}: {e}", flush=True)
                    res[v] = (math.nan,) * 5
            for i, (pas, floor_b) in enumerate(
                (("fwd", in_b + out_b), ("fwd+bwd", 3 * in_b + 2 * out_b))
            ):
                floor_us = floor_b / bw * 1e6
                cells = []
                for v in VARIANTS:
                    t, err, tied = res[v][i] * 1e3, res[v][2 + i], res[v][4]
                    tie = f" ({tied:.1e} near-tie)" if pas != "fwd" else ""
                    cells.append(f"{t:.0f} ({t / floor_us:.2f}x) | {err:.1e}{tie}")
                best = min((res[v][i] for v in VARIANTS), key=lambda t: math.inf if t != t else t)
                row = (
                    f"| {name} {'x'.join(map(str, shape))} | {dname} | {pas} | {floor_us:.0f} "
                    f"| {base['eager'][i] * 1e3:.0f} | {base['compile'][i] * 1e3:.0f} | "
                    + " | ".join(cells)
                    + f" | {base['compile'][i] / best:.1f}x |"
                )
                lines.append(row)
                print(row, flush=True)
            parts = time_parts(x, dy)
            part = f"  kernels alone, {name} {dname}: " + ", ".join(
                f"{label} {t:.0f} µs" for label, t in parts.items()
            )
            parts_lines.append(part)
            print(part, flush=True)
            print(f"  ({name} {dname}: {time.perf_counter() - t_block:.0f} s)", flush=True)
            if args.out:  # after every block: a run cut short by its time limit keeps them
                Path(args.out).write_text("\n".join([*lines, "", *parts_lines]) + "\n")
    lines += ["", *parts_lines, "",
        "floor = bytes / copy bandwidth; fwd moves x + y, fwd+bwd moves 3 x + 2 y "
        "(x, y; again x, dy; dx).  Variants: library.VARIANT (windows = lrn_pool, rows = "
        "lrn_pool_rows forward) with the gather backward (lrn_pool_bwd); windows+rows-bwd and "
        "rows+rows-bwd: those forwards with the rows backward (lrn_pool_bwd_rows).  Errors: "
        "fused vs float64 reference, batch 4; gradient entries next to near-tied pool windows (see "
        "near_tie_inputs) are left out, fraction shown.",
    ]
    print("\n".join(lines[-2:]))
    print(f"total {time.perf_counter() - t_start:.0f} s")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
