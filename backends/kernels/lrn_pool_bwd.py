"""Triton backward kernel of relu → LRN → max-pool: a gather, so atomic-free and deterministic.

With a = relu(x), s_c = k + α Σ_{window(c)} a², b_c = a_c s_c^-β, y = maxpool(b):
  g_c      = Σ of dL/dy over the (≤ 2x2, as K ≤ 2S) pool windows covering the pixel whose saved
             argmax is this pixel (same first-max rule as F.max_pool2d, so grads match it)
  dL/da_j  = g_j s_j^-β − 2αβ a_j Σ_{c ∈ window(j)} g_c a_c s_c^(-β-1)
  dL/dx_j  = dL/da_j · [x_j > 0]
One program owns (n, tower, CB channels, a BLOCK_H x BLOCK_W tile of input pixels) and walks
channels in order with three register rings: a (planes), t_c = g_c a_c s_c^(-β-1) and
u_c = g_c s_c^-β.  At step m it loads a_m, gathers g at channel m-HALF (whose window is now
complete), and emits dx at channel m-2*HALF (whose t-window is now complete).  Only x (which
autograd holds anyway), dL/dy and the int8 argmax are read; nothing full-size is saved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from .lrn_pool import (
    BWD_TUNE_KEY,
    HAVE_TRITON,
    INTERPRET,
    _identity,
    fast_math,
    lrn_consts,
    lrn_scalars,
    pool_geometry,
)
from .params import LRNParams, PoolParams

if HAVE_TRITON:
    import triton
    import triton.language as tl

    from .lrn_pool import _keep, _pick, _pow_neg, _push, _window_sum, program_coords

    @triton.jit
    def _win(h, i: tl.constexpr, OH, K: tl.constexpr, S: tl.constexpr, P: tl.constexpr):
        """i-th pool window (along one axis) covering input index h: (output index, offset, ok)."""
        o = (h + P) // S - i
        kk = h + P - o * S
        return o, kk, (o >= 0) & (o < OH) & (kk < K)

    @triton.jit
    def _zeros4(BLOCK: tl.constexpr):
        """Four distinct zero tensors (distinct IR values, so each can be loop-carried)."""
        return (
            tl.zeros([BLOCK], dtype=tl.float32),
            tl.zeros([BLOCK], dtype=tl.float32),
            tl.zeros([BLOCK], dtype=tl.float32),
            tl.zeros([BLOCK], dtype=tl.float32),
        )

    @triton.jit
    def _load_step(
        x_t, dy_n, idx_n, mv, t_lo, t_hi, m_end, in_ok, sxc, sdc, sic,
        d00, d01, d10, d11, i00, i01, i10, i11, m00, m01, m10, m11,
        HALF: tl.constexpr, HAS_POOL: tl.constexpr,
    ):  # fmt: skip
        """Raw loads of one step: x at channel mv, and at channel mv-HALF the argmax and dy of
        the four covering pool windows (or dy at the pixel itself without a pool)."""
        x_ok = in_ok & (mv >= t_lo) & (mv < t_hi) & (mv < m_end)
        xv = tl.load(x_t + mv * sxc, mask=x_ok, other=0.0)
        cg = mv - HALF
        cg_ok = (cg >= t_lo) & (cg < t_hi) & (mv < m_end)
        dy_c = dy_n + cg * sdc
        if HAS_POOL:
            idx_c = idx_n + cg * sic
            i0 = tl.load(idx_c + i00, mask=m00 & cg_ok, other=-1)
            i1 = tl.load(idx_c + i01, mask=m01 & cg_ok, other=-1)
            i2 = tl.load(idx_c + i10, mask=m10 & cg_ok, other=-1)
            i3 = tl.load(idx_c + i11, mask=m11 & cg_ok, other=-1)
            d0 = tl.load(dy_c + d00, mask=m00 & cg_ok, other=0.0)
            d1 = tl.load(dy_c + d01, mask=m01 & cg_ok, other=0.0)
            d2 = tl.load(dy_c + d10, mask=m10 & cg_ok, other=0.0)
            d3 = tl.load(dy_c + d11, mask=m11 & cg_ok, other=0.0)
        else:
            d0 = tl.load(dy_c + d00, mask=in_ok & cg_ok, other=0.0)
            i0, i1, i2, i3, d1, d2, d3 = d0, d0, d0, d0, d0, d0, d0  # unused
        return xv, i0, i1, i2, i3, d0, d1, d2, d3

    @triton.jit
    def lrn_grad_step(
        a, g, r1, r2, r3, r4, r5, r6, r7, r8, t1, t2, t3, t4, t5, t6, t7, t8,
        u1, u2, u3, u4, zero,
        alpha: tl.constexpr, beta: tl.constexpr, k: tl.constexpr,
        HALF: tl.constexpr, HAS_LRN: tl.constexpr, FAST: tl.constexpr, FTZ: tl.constexpr,
    ):  # fmt: skip
        """One channel step of the LRN backward, shared by both backward kernels.

        In: a = relu(x) at channel m, the ring r1.. of earlier a's, g = dL/db at m-HALF, and the
        rings of t = g a s^(-β-1) (as suffix sums) and u = g s^-β.  Out: dL/dx at channel
        m-2·HALF, dL/da_j = u_j − 2αβ a_j Σ_{c∈win(j)} t_c gated by relu, and the new t/u rings.
        t_d holds the sum of the last d t's (suffix sums, not the t's themselves): the window
        sum is then one add, and LLVM's SLP vectorizer does not crash on it (it asserts on the
        plain ring-reduction form in triton 3.9).
        """
        if HAS_LRN:
            sumsq = _window_sum(a, r1, r2, r3, r4, r5, r6, r7, r8, 2 * HALF + 1, True)
            s = k + alpha * sumsq  # s at channel m-HALF
            pw = _pow_neg(s, beta + 1.0, FAST, FTZ)  # s^(-β-1)
            t = g * _pick(a, r1, r2, r3, r4, r5, r6, r7, r8, HALF) * pw
            u = g * pw * s  # g s^-β
            tsum = t + _pick(zero, t1, t2, t3, t4, t5, t6, t7, t8, 2 * HALF)  # t alone: size 1
            u_j = _pick(u, u1, u2, u3, u4, zero, zero, zero, zero, HALF)
            a_j = _pick(a, r1, r2, r3, r4, r5, r6, r7, r8, 2 * HALF)
            da = u_j - (2.0 * alpha * beta) * a_j * tsum
            t8, t7, t6, t5 = t7 + t, t6 + t, t5 + t, t4 + t
            t4, t3, t2, t1 = t3 + t, t2 + t, t1 + t, t
            u1, u2, u3, u4 = u, _keep(u1, FAST), _keep(u2, FAST), _keep(u3, FAST)
        else:
            a_j = a
            da = g
        dx = tl.where(a_j > 0.0, da, 0.0)  # relu gate: x_j > 0 ⇔ a_j > 0
        return dx, t1, t2, t3, t4, t5, t6, t7, t8, u1, u2, u3, u4

    @triton.jit
    def _bwd_kernel(
        x_ptr, dy_ptr, idx_ptr, dx_ptr,
        H, W, OH, OW, CPT, towers,
        sxn, sxc, sxh, sxw, sdn, sdc, sdh, sdw, sin, sic, sih, siw, sgn, sgc, sgh, sgw,
        alpha: tl.constexpr, beta: tl.constexpr, k: tl.constexpr,  # constexpr: inductor
        # would pass Python floats as fp64 and promote the loop-carried ring to fp64
        HALF: tl.constexpr, HAS_LRN: tl.constexpr, HAS_POOL: tl.constexpr,
        K: tl.constexpr, S: tl.constexpr, P: tl.constexpr, FAST: tl.constexpr,
        BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, CB: tl.constexpr,
    ):  # fmt: skip
        BLOCK: tl.constexpr = BLOCK_H * BLOCK_W
        n_tw = tl.cdiv(W, BLOCK_W)
        n_tiles = tl.cdiv(H, BLOCK_H) * n_tw
        tile, n, t_lo, t_hi, c0, c1 = program_coords(n_tiles, CPT, CB, towers)

        p = tl.arange(0, BLOCK)  # [BLOCK] input pixels of the tile
        h = (tile // n_tw) * BLOCK_H + p // BLOCK_W  # [BLOCK]
        w = (tile % n_tw) * BLOCK_W + p % BLOCK_W  # [BLOCK]
        in_ok = (h < H) & (w < W)  # [BLOCK]
        x_t = x_ptr + n * sxn + h * sxh + w * sxw  # [BLOCK] pointers
        dx_t = dx_ptr + n * sgn + h * sgh + w * sgw  # [BLOCK] pointers
        dy_n = dy_ptr + n * sdn
        idx_n = idx_ptr + n * sin
        if HAS_POOL:
            oy0, ky0, vy0 = _win(h, 0, OH, K, S, P)  # [BLOCK] each
            oy1, ky1, vy1 = _win(h, 1, OH, K, S, P)
            ox0, kx0, vx0 = _win(w, 0, OW, K, S, P)
            ox1, kx1, vx1 = _win(w, 1, OW, K, S, P)
            d00 = oy0 * sdh + ox0 * sdw
            d01 = oy0 * sdh + ox1 * sdw
            d10 = oy1 * sdh + ox0 * sdw
            d11 = oy1 * sdh + ox1 * sdw
            i00 = oy0 * sih + ox0 * siw
            i01 = oy0 * sih + ox1 * siw
            i10 = oy1 * sih + ox0 * siw
            i11 = oy1 * sih + ox1 * siw
            m00 = in_ok & vy0 & vx0
            m01 = in_ok & vy0 & vx1
            m10 = in_ok & vy1 & vx0
            m11 = in_ok & vy1 & vx1
        else:  # no pool: dy at the pixel itself; the window operands are unused
            d00 = h * sdh + w * sdw  # [BLOCK]
            d01, d10, d11, i00, i01, i10, i11 = d00, d00, d00, d00, d00, d00, d00
            m00, m01, m10, m11 = in_ok, in_ok, in_ok, in_ok

        # Distinct initial values per ring slot: see the note in the forward kernel.
        r1, r2, r3, r4 = _zeros4(BLOCK)
        r5, r6, r7, r8 = _zeros4(BLOCK)
        t1, t2, t3, t4 = _zeros4(BLOCK)
        t5, t6, t7, t8 = _zeros4(BLOCK)
        u1, u2, u3, u4 = _zeros4(BLOCK)
        zero = tl.zeros([BLOCK], dtype=tl.float32)
        # One loop over the loaded channel m from c0-2*HALF (the first steps only fill the
        # rings; their stores are masked off).  Step m+1's loads are issued before step m's
        # math (the *_n values) so DRAM latency overlaps compute; idx and dy are loaded
        # independently (no idx → dy dependency) and combined with a select.
        m_end = c1 + 2 * HALF
        xn, i0n, i1n, i2n, i3n, d0n, d1n, d2n, d3n = _load_step(
            x_t, dy_n, idx_n, c0 - 2 * HALF + tl.zeros([1], dtype=tl.int32), t_lo, t_hi, m_end,
            in_ok, sxc, sdc, sic, d00, d01, d10, d11, i00, i01, i10, i11, m00, m01, m10, m11,
            HALF, HAS_POOL,
        )  # fmt: skip
        for m in range(c0 - 2 * HALF, m_end):
            mv = m + tl.zeros([1], dtype=tl.int32)  # [1]; a tensor so masks broadcast (interp.)
            a = tl.maximum(xn.to(tl.float32), 0.0)  # [BLOCK] relu(x) at channel m
            if HAS_POOL:  # g at channel m-HALF: dy of the covering windows whose argmax is here
                g = tl.where(i0n.to(tl.int32) == ky0 * K + kx0, d0n.to(tl.float32), 0.0)
                g += tl.where(i1n.to(tl.int32) == ky0 * K + kx1, d1n.to(tl.float32), 0.0)
                g += tl.where(i2n.to(tl.int32) == ky1 * K + kx0, d2n.to(tl.float32), 0.0)
                g += tl.where(i3n.to(tl.int32) == ky1 * K + kx1, d3n.to(tl.float32), 0.0)
            else:
                g = d0n.to(tl.float32)
            xn, i0n, i1n, i2n, i3n, d0n, d1n, d2n, d3n = _load_step(
                x_t, dy_n, idx_n, mv + 1, t_lo, t_hi, m_end,
                in_ok, sxc, sdc, sic, d00, d01, d10, d11, i00, i01, i10, i11, m00, m01, m10, m11,
                HALF, HAS_POOL,
            )  # fmt: skip
            dx, t1, t2, t3, t4, t5, t6, t7, t8, u1, u2, u3, u4 = lrn_grad_step(
                a, g, r1, r2, r3, r4, r5, r6, r7, r8, t1, t2, t3, t4, t5, t6, t7, t8,
                u1, u2, u3, u4, zero, alpha, beta, k, HALF, HAS_LRN, FAST, False,
            )  # fmt: skip  # dx of channel m-2*HALF
            j = mv - 2 * HALF  # [1] channel whose dx is complete now
            tl.store(dx_t + j * sgc, dx.to(dx_ptr.dtype.element_ty), mask=in_ok & (j >= c0))
            r1, r2, r3, r4, r5, r6, r7, r8 = _push(a, r1, r2, r3, r4, r5, r6, r7, FAST)

    _BWD_CONFIGS = [
        triton.Config({"BLOCK_H": bh, "BLOCK_W": bw, "CB": cb}, num_warps=nw)
        for (bh, bw, cb, nw) in [(4, 64, 32, 4), (8, 32, 32, 4), (16, 32, 48, 8), (4, 32, 32, 2)]
    ]
    _bwd_tuned: Any = (
        _bwd_kernel
        if INTERPRET
        else triton.autotune(_BWD_CONFIGS, key=[*BWD_TUNE_KEY, "HAS_POOL"])(_bwd_kernel)
    )

DEFAULT_BWD_CONFIG = {"BLOCK_H": 16, "BLOCK_W": 16, "CB": 16, "num_warps": 4}


def launch_backward(
    x: Tensor,
    dy: Tensor,
    idx: Tensor | None,
    dx: Tensor,
    lrn: LRNParams | None,
    pool: PoolParams | None,
    towers: int,
    wrap: Callable[[Any], Any] = _identity,
    config: dict[str, int] | None = None,
) -> None:
    """Write dL/dx into dx (x's shape, any strides) from dL/dy and the forward's int8 argmax."""
    N, C, H, W = x.shape
    K, S, P, OH, OW = pool_geometry(H, W, pool)
    if tuple(dy.shape) != (N, C, OH, OW) or tuple(dx.shape) != tuple(x.shape):
        raise ValueError("dy/dx shapes do not match x and the pool geometry")
    has_pool = pool is not None
    if has_pool and (idx is None or idx.shape != dy.shape):
        raise ValueError("the pooled backward needs the forward's argmax")
    if has_pool and K > 2 * S:
        raise ValueError("the gather handles pools with size <= 2*stride only")
    if dx.numel() == 0:
        return
    cpt = C // towers
    idx_t = idx if idx is not None else dy
    args = (
        x, dy, idx_t, dx,
        H, W, OH, OW, cpt, towers,
        *x.stride(), *dy.stride(), *idx_t.stride(), *dx.stride(),
        *lrn_scalars(lrn),
    )  # fmt: skip
    consts = {
        **lrn_consts(lrn),
        "HAS_POOL": has_pool, "K": K, "S": S, "P": P, "FAST": fast_math(x),
    }  # fmt: skip

    def grid(meta: dict[str, int]) -> tuple[int]:
        tiles = triton.cdiv(H, meta["BLOCK_H"]) * triton.cdiv(W, meta["BLOCK_W"])
        return (N * towers * triton.cdiv(cpt, meta["CB"]) * tiles,)

    if config is None and not INTERPRET:
        wrap(_bwd_tuned)[grid](*args, **consts)
    else:
        cfg = dict(DEFAULT_BWD_CONFIG if config is None else config)
        wrap(_bwd_kernel)[grid](*args, **consts, **cfg)
