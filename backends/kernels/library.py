"""torch.library registration of the fused kernels: eager, autograd and torch.compile.

On CUDA the ops are ``torch.library.triton_op``s (torch >= 2.6) whose kernels go through
``wrap_triton``, so torch.compile traces them without a graph break and Inductor sees the
Triton kernels.  Under the CPU interpreter (TRITON_INTERPRET=1, tests) ``wrap_triton`` refuses
interpreter functions, so the same bodies are registered as opaque ``custom_op``s with a fake
implementation instead.

The forward returns (y, argmax): argmax is an int8 tensor shaped like y when ``save_idx`` (the
backward's gather reads it: 1 byte per pooled output instead of any full-size intermediate),
else an empty tensor.  The backward recomputes it with one forward launch if it is missing.

Two forward kernels exist (same outputs, same argmax format): ``VARIANT`` picks one, from the
env var ALEXNETC_LRN_KERNEL ("rows": lrn_pool_rows, full-width bands, one LRN evaluation per
input element; "windows": lrn_pool, one [K*K, tile] window tensor per output; "auto", the
default: the faster of the two for this call's signature, timed on first use (choose.py); where
nothing can be timed, rows when no argmax is needed (inference) and windows when autograd needs
it — on an H200, conv1's block (128x96x55x55 fp32) took 128 µs forward with rows against 298 µs
with windows, but 1062 µs forward+backward against 774 µs; see BENCHMARKS.md).

Two backward kernels exist (same contract): ``BWD_VARIANT``, from the env var ALEXNETC_LRN_BWD,
picks one: "gather" (lrn_pool_bwd, per-pixel loads of the covering windows' dy/argmax), "rows"
(lrn_pool_bwd_rows, full-width bands) or "auto" (the default: timed like the forward; gather
where nothing can be timed).
Both are read at call time, so benchmarks and tests may reassign ``library.VARIANT`` and
``library.BWD_VARIANT``.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import torch
from torch import Tensor

from . import choose, lrn_pool, lrn_pool_bwd, lrn_pool_bwd_rows, lrn_pool_rows
from .params import LRNParams, PoolParams, from_scalars

REGISTERED = False

VARIANTS = ("rows", "windows")  # the kernels; "auto" chooses between them per call
VARIANT = os.environ.get("ALEXNETC_LRN_KERNEL", "auto")
if VARIANT not in (*VARIANTS, "auto"):
    raise ValueError(f"ALEXNETC_LRN_KERNEL must be one of {(*VARIANTS, 'auto')}, "
                     f"got {VARIANT!r}")

BWD_VARIANTS = ("gather", "rows")
BWD_VARIANT = os.environ.get("ALEXNETC_LRN_BWD", "auto")
if BWD_VARIANT not in (*BWD_VARIANTS, "auto"):
    raise ValueError(f"ALEXNETC_LRN_BWD must be one of {(*BWD_VARIANTS, 'auto')}, "
                     f"got {BWD_VARIANT!r}")

_FORWARDS = {"rows": lrn_pool_rows, "windows": lrn_pool}
_BACKWARDS = {"gather": lrn_pool_bwd, "rows": lrn_pool_bwd_rows}

_OP_NS = "alexnetc"


def _wrap(kernel: Any) -> Any:
    if lrn_pool.INTERPRET:
        return kernel
    from torch.library import wrap_triton

    return wrap_triton(kernel)


def _pooled_shape(x: Tensor, pool: PoolParams | None) -> tuple[int, int]:
    _, _, _, oh, ow = lrn_pool.pool_geometry(x.shape[2], x.shape[3], pool)
    return oh, ow


def _launch_forward(x: Tensor, y: Tensor, idx: Tensor | None, lrn: LRNParams | None,
                    pool: PoolParams | None, towers: int) -> None:
    """The selected variant's forward launcher (both share lrn_pool.launch_forward's contract)."""
    variant = VARIANT
    if variant == "auto":
        variant = choose.choose(
            choose.signature("fwd", x, idx is not None, lrn, pool, towers),
            "rows" if idx is None else "windows", (x,),
            lambda: {name: partial(mod.launch_forward, x, y, idx, lrn, pool, towers, wrap=_wrap)
                     for name, mod in _FORWARDS.items()},
        )
    _FORWARDS[variant].launch_forward(x, y, idx, lrn, pool, towers, wrap=_wrap)


def _launch_backward(x: Tensor, dy: Tensor, idx: Tensor | None, dx: Tensor,
                     lrn: LRNParams | None, pool: PoolParams | None, towers: int) -> None:
    """The selected variant's backward launcher (both share one contract)."""
    variant = BWD_VARIANT
    if variant == "auto":
        dy_key = choose.signature("dy", dy)
        variant = choose.choose(
            None if dy_key is None else choose.signature("bwd", x, dy_key[2], lrn, pool, towers),
            "gather", (x, dy),
            lambda: {name: partial(mod.launch_backward, x, dy, idx, dx, lrn, pool, towers,
                                   wrap=_wrap)
                     for name, mod in _BACKWARDS.items()},
        )
    _BACKWARDS[variant].launch_backward(x, dy, idx, dx, lrn, pool, towers, wrap=_wrap)


# The custom ops' signatures stay flat (torch.library takes no records): the LRN's size,
# alpha, beta, k, the pool's size, stride, pad (size 0: none; params.to_scalars), the towers.

def _fwd(
    x: Tensor, lrn_size: int, alpha: float, beta: float, k: float,
    pool_size: int, pool_stride: int, pool_pad: int, towers: int, save_idx: bool,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    lrn, pool = from_scalars(lrn_size, alpha, beta, k, pool_size, pool_stride, pool_pad)
    oh, ow = _pooled_shape(x, pool)
    y = lrn_pool.alloc_pooled(x, oh, ow)
    idx = (
        lrn_pool.alloc_pooled(x, oh, ow, torch.int8)
        if save_idx
        else torch.empty(0, dtype=torch.int8, device=x.device)
    )
    _launch_forward(x, y, idx if save_idx else None, lrn, pool, towers)
    return y, idx


def _bwd(
    dy: Tensor, x: Tensor, idx: Tensor, lrn_size: int, alpha: float, beta: float, k: float,
    pool_size: int, pool_stride: int, pool_pad: int, towers: int,
) -> Tensor:  # fmt: skip
    lrn, pool = from_scalars(lrn_size, alpha, beta, k, pool_size, pool_stride, pool_pad)
    if pool is not None and idx.numel() == 0:  # forward ran without save_idx: recompute argmax
        oh, ow = _pooled_shape(x, pool)
        idx = lrn_pool.alloc_pooled(x, oh, ow, torch.int8)
        _launch_forward(x, lrn_pool.alloc_pooled(x, oh, ow), idx, lrn, pool, towers)
    dx = torch.empty_like(x)
    _launch_backward(x, dy, idx if pool is not None else None, dx, lrn, pool, towers)
    return dx


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    x = inputs[0]
    ctx.save_for_backward(x, output[1])
    ctx.params = inputs[1:9]
    ctx.mark_non_differentiable(output[1])


def _backward(ctx: Any, gy: Tensor | None, _gidx: Tensor | None) -> tuple[Tensor | None, ...]:
    x, idx = ctx.saved_tensors
    none9 = (None,) * 9
    if gy is None:
        return (None, *none9)
    dx = torch.ops.alexnetc.relu_lrn_pool_backward(gy, x, idx, *ctx.params)
    return (dx, *none9)


def _register() -> bool:
    if not lrn_pool.HAVE_TRITON:
        return False
    lib = torch.library
    use_triton_op = hasattr(lib, "triton_op") and not lrn_pool.INTERPRET
    if use_triton_op:
        fwd_op = lib.triton_op(f"{_OP_NS}::relu_lrn_pool", _fwd, mutates_args=())
        bwd_op = lib.triton_op(f"{_OP_NS}::relu_lrn_pool_backward", _bwd, mutates_args=())
    else:
        fwd_op = lib.custom_op(f"{_OP_NS}::relu_lrn_pool", _fwd, mutates_args=())
        bwd_op = lib.custom_op(f"{_OP_NS}::relu_lrn_pool_backward", _bwd, mutates_args=())

        @fwd_op.register_fake
        def _(x, lrn_size, alpha, beta, k, pool_size, pool_stride, pool_pad, towers, save_idx):
            _, pool = from_scalars(lrn_size, alpha, beta, k, pool_size, pool_stride, pool_pad)
            oh, ow = _pooled_shape(x, pool)
            y = lrn_pool.alloc_pooled(x, oh, ow)
            if save_idx:
                return y, lrn_pool.alloc_pooled(x, oh, ow, torch.int8)
            return y, x.new_empty(0, dtype=torch.int8)

        @bwd_op.register_fake
        def _(dy, x, idx, *params):
            return torch.empty_like(x)

    fwd_op.register_autograd(_backward, setup_context=_setup_context)  # type: ignore[attr-defined]
    return True


REGISTERED = _register()
