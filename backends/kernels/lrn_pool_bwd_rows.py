"""The "rows" backward kernel of relu → LRN → max-pool (library.BWD_VARIANT "rows", or timed by
"auto").

Same math and contract as lrn_pool_bwd (read that docstring), different access pattern.  With
a = relu(x), s_c = k + α Σ_{window(c)} a², g = dL/db (dL/dy routed to each pool window's saved
argmax):  dL/da_j = g_j s_j^-β − 2αβ a_j Σ_{c ∈ window(j)} g_c a_c s_c^(-β-1),  dx = dL/da·[x>0].

One program owns (sample n, tower, a chunk of CB channels, a band of BR input rows) at FULL
width (IWP = the power of two ≥ W columns) and walks the tower's channels in order with the
gather kernel's three register rings (a; suffix sums of t_c = g_c a_c s_c^(-β-1); u_c =
g_c s_c^-β), lagging HALF channels for s/g/t and 2*HALF for dx.  Each input element's LRN is
evaluated once per program (one pow), and every load is a row load: x as one [BR, IWP] tile
(one contiguous segment per row for NCHW), dL/dy and the argmax as [BR, OWP] tiles whose row r
is the pool-window row covering input row r (every window touching the band, the band edges
included; each dy/argmax row is read by ≤ 3 input rows, from L1/L2).  Each program stores only
its own rows: no atomics, deterministic.

Routing dL/dy to input positions (choice: row loads + tl.gather along the columns, like
lrn_pool_rows's pooling, rather than per-element masked loads at each input's 4 covering
windows, which is what lrn_pool_bwd does: 8 load instructions per input element and channel;
here 4 dy + 4 argmax loads of half-width tiles):
  1. rows: the (≤ 2, as K ≤ 2S) pool-window rows covering input row r are i = (r+P)//S - wy
     with row offset oy = r + P - i*S.  Load the dy/argmax rows i as [BR, OWP] tiles; the
     argmax (row-major dy*K+dx) lies in row oy iff argmax - oy*K is in [0, K), and is then its
     column offset ox (no integer division).
  2. columns: for each ox < K, Q_ox[r, j] = Σ_wy dy where the offset is ox; input column col
     gets Q_ox[r, (col+P-ox)/S] when S divides col+P-ox: K gathers along the columns
     ([BR, OWP] → [BR, IWP]; 3 for 3x3/2).
An earlier version loaded [OR, OWP] tiles of just the needed window rows and gathered the rows
with tl.gather along axis 0: fewer loads, but the two gather axes need two layouts, and the
layout conversions cost shared-memory round trips (16 barriers per channel step; now 6).

STAGES and UNROLL mean what they mean in lrn_pool_rows (cp.async prefetch of the loop's
loads; unrolling by the ring period).

Routed to lrn_pool_bwd instead (``supported`` is False): no pool (that kernel is then already
one load per element), pools with K > 2*S (lrn_pool_bwd refuses them too), and widths whose
footprint exceeds MAX_IWP columns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from . import lrn_pool_bwd
from .lrn_pool import (
    BWD_TUNE_KEY,
    HAVE_TRITON,
    INTERPRET,
    _identity,
    _next_pow2,
    fast_math,
    lrn_consts,
    lrn_scalars,
    pool_geometry,
)
from .params import LRNParams, PoolParams

if HAVE_TRITON:
    import triton
    import triton.language as tl

    from .lrn_pool import _push, program_coords
    from .lrn_pool_bwd import lrn_grad_step

# Widest band (input columns) one program holds.
MAX_IWP = 128
# Tile used when not autotuning (interpreter); tests force others.
DEFAULT_BWD_ROWS_CONFIG = {"BR": 8, "CB": 8, "num_warps": 4, "STAGES": 1, "UNROLL": 0}


if HAVE_TRITON:

    @triton.jit
    def _zeros4(BR: tl.constexpr, IWP: tl.constexpr):
        """Four distinct zero tiles (distinct IR values, so each can be loop-carried)."""
        return (
            tl.zeros([BR, IWP], dtype=tl.float32),
            tl.zeros([BR, IWP], dtype=tl.float32),
            tl.zeros([BR, IWP], dtype=tl.float32),
            tl.zeros([BR, IWP], dtype=tl.float32),
        )

    @triton.jit
    def _rows_of(dy_r, idx_r, ok, oy, K: tl.constexpr):
        """Step 1 for one covering window row: the dy/argmax rows of the windows covering each
        band row ([BR, OWP] loads, row r reading window row i(r)); keep (dy, argmax column
        offset): argmax - oy*K, which lies in [0, K) exactly when the argmax's row offset is
        oy (the masked -1 never does), so step 2's compare with ox needs no division."""
        d = tl.load(dy_r, mask=ok, other=0.0).to(tl.float32)  # [BR, OWP]
        v = tl.load(idx_r, mask=ok, other=-1).to(tl.int32)  # [BR, OWP]
        return d, v - oy * K

    @triton.jit
    def _g_plane(
        dy0, ix0, ok0, oy0, dy1, ix1, ok1, oy1, col, W, OW,
        K: tl.constexpr, S: tl.constexpr, P: tl.constexpr, TWO_ROWS: tl.constexpr,
        BR: tl.constexpr, IWP: tl.constexpr, OWP: tl.constexpr,
    ):  # fmt: skip
        """g = dL/db on the band [BR, IWP] of one channel (pointers already at the channel)."""
        d0, x0 = _rows_of(dy0, ix0, ok0, oy0, K)  # [BR, OWP] each
        if TWO_ROWS:
            d1, x1 = _rows_of(dy1, ix1, ok1, oy1, K)
        g = tl.zeros([BR, IWP], dtype=tl.float32)
        for ox in tl.static_range(K):
            q = tl.where(x0 == ox, d0, 0.0)  # [BR, OWP]
            if TWO_ROWS:
                q += tl.where(x1 == ox, d1, 0.0)
            cc = col + P - ox  # [1, IWP]; window j = cc / S covers col at offset ox
            jx = tl.maximum(cc, 0) // S
            okx = (cc >= 0) & (cc - jx * S == 0) & (jx < OW) & (col < W)  # [1, IWP]
            jidx = tl.minimum(jx, OWP - 1) + tl.zeros([BR, IWP], dtype=tl.int32)  # [BR, IWP]
            g += tl.where(okx, tl.gather(q, jidx, axis=1), 0.0)
        return g

    @triton.jit
    def _g_plane_3s2(
        dy0, ix0, ok0, oy0, dy1, ix1, ok1, oy1,
        BR: tl.constexpr, IWP: tl.constexpr, OWP: tl.constexpr,
    ):  # fmt: skip
        """_g_plane for AlexNet's 3x3/2 pool without padding, where OWP = IWP/2: window j
        covers columns 2j (offset 0), 2j+1 (1) and 2j+2 (2), so even column 2j collects window
        j's offset 0 and window j-1's offset 2, odd column 2j+1 window j's offset 1.  One
        gather (the j-1 shift) instead of 3, and the even/odd halves interleave by a reshape."""
        d0, x0 = _rows_of(dy0, ix0, ok0, oy0, 3)  # [BR, OWP] each
        d1, x1 = _rows_of(dy1, ix1, ok1, oy1, 3)
        q0 = tl.where(x0 == 0, d0, 0.0) + tl.where(x1 == 0, d1, 0.0)  # to column 2j
        q1 = tl.where(x0 == 1, d0, 0.0) + tl.where(x1 == 1, d1, 0.0)  # to column 2j+1
        q2 = tl.where(x0 == 2, d0, 0.0) + tl.where(x1 == 2, d1, 0.0)  # to column 2j+2
        j = tl.arange(0, OWP)[None, :] + tl.zeros([BR, OWP], dtype=tl.int32)  # [BR, OWP]
        prev = tl.gather(q2, tl.maximum(j - 1, 0), axis=1)  # window j-1's offset 2
        even = q0 + tl.where(j >= 1, prev, 0.0)  # [BR, OWP]
        return tl.reshape(tl.join(even, q1), [BR, IWP])  # columns 2j, 2j+1 interleaved

    @triton.jit
    def _bwd_rows_kernel(
        x_ptr, dy_ptr, idx_ptr, dx_ptr,
        H, W, OH, OW, CPT, towers,
        sxn, sxc, sxh, sxw, sdn, sdc, sdh, sdw, sin, sic, sih, siw, sgn, sgc, sgh, sgw,
        alpha: tl.constexpr, beta: tl.constexpr, k: tl.constexpr,  # constexpr: inductor
        # would pass Python floats as fp64 and promote the loop-carried ring to fp64
        HALF: tl.constexpr, HAS_LRN: tl.constexpr,
        K: tl.constexpr, S: tl.constexpr, P: tl.constexpr, FAST: tl.constexpr,
        IWP: tl.constexpr, OWP: tl.constexpr, BR: tl.constexpr, CB: tl.constexpr,
        STAGES: tl.constexpr, UNROLL: tl.constexpr,
    ):  # fmt: skip
        band, n, t_lo, t_hi, c0, c1 = program_coords(tl.cdiv(H, BR), CPT, CB, towers)
        TWO_ROWS: tl.constexpr = K > S
        r0 = band * BR

        # The band: input rows r0 + [0, BR), all columns.
        rr = r0 + tl.arange(0, BR)  # [BR]
        col = tl.arange(0, IWP)[None, :]  # [1, IWP]
        in_ok = (rr < H)[:, None] & (col < W)  # [BR, IWP]
        x_tile = x_ptr + n * sxn + rr[:, None] * sxh + col * sxw  # [BR, IWP] pointers
        dx_tile = dx_ptr + n * sgn + rr[:, None] * sgh + col * sgw  # [BR, IWP] pointers

        # The two window rows covering input row r: i = (r+P)//S - wy, offset oy = r+P - i*S;
        # row r of the [BR, OWP] dy/argmax tiles reads window row i (all window columns).
        q = (rr + P) // S  # [BR]; r + P ≥ 0
        oy0 = (rr + P - q * S)[:, None]  # [BR, 1]
        oy1 = oy0 + S
        oj = tl.arange(0, OWP)[None, :]  # [1, OWP]
        ok0 = ((rr < H) & (q < OH))[:, None] & (oy0 < K) & (oj < OW)  # [BR, OWP]
        ok1 = ((rr < H) & (q >= 1) & (q - 1 < OH))[:, None] & (oy1 < K) & (oj < OW)
        q1 = tl.maximum(q - 1, 0)
        dy0 = dy_ptr + n * sdn + q[:, None] * sdh + oj * sdw  # [BR, OWP] pointers
        dy1 = dy_ptr + n * sdn + q1[:, None] * sdh + oj * sdw
        ix0 = idx_ptr + n * sin + q[:, None] * sih + oj * siw
        ix1 = idx_ptr + n * sin + q1[:, None] * sih + oj * siw

        # Distinct initial values per ring slot: see the note in lrn_pool._fwd_kernel.
        r1, r2, r3, r4 = _zeros4(BR, IWP)
        r5, r6, r7, r8 = _zeros4(BR, IWP)
        t1, t2, t3, t4 = _zeros4(BR, IWP)
        t5, t6, t7, t8 = _zeros4(BR, IWP)
        u1, u2, u3, u4 = _zeros4(BR, IWP)
        zero = tl.zeros([BR, IWP], dtype=tl.float32)
        # One loop over the loaded channel m from c0-2*HALF (the first 2*HALF steps only fill
        # the rings; their stores are masked off): a at m, s/g/t/u at m-HALF, dx at m-2*HALF.
        RING: tl.constexpr = 2 * HALF if UNROLL and HALF > 0 else 1  # unroll by the ring period
        for m in tl.range(c0 - 2 * HALF, c1 + 2 * HALF, num_stages=STAGES, loop_unroll_factor=RING):
            mv = m + tl.zeros([1], dtype=tl.int32)  # [1]; a tensor so masks broadcast (interp.)
            x_ok = in_ok & (mv >= t_lo) & (mv < t_hi)
            a = tl.maximum(tl.load(x_tile + m * sxc, mask=x_ok, other=0.0).to(tl.float32), 0.0)
            cg = mv - HALF  # [1]
            c_ok = (cg >= t_lo) & (cg < t_hi)  # [1]
            cd, ci = (m - HALF) * sdc, (m - HALF) * sic
            if K == 3 and S == 2 and P == 0:
                g = _g_plane_3s2(
                    dy0 + cd, ix0 + ci, ok0 & c_ok, oy0, dy1 + cd, ix1 + ci, ok1 & c_ok, oy1,
                    BR, IWP, OWP,
                )  # fmt: skip  # [BR, IWP] g at channel m-HALF
            else:
                g = _g_plane(
                    dy0 + cd, ix0 + ci, ok0 & c_ok, oy0, dy1 + cd, ix1 + ci, ok1 & c_ok, oy1,
                    col, W, OW, K, S, P, TWO_ROWS, BR, IWP, OWP,
                )  # fmt: skip  # [BR, IWP] g at channel m-HALF
            dx, t1, t2, t3, t4, t5, t6, t7, t8, u1, u2, u3, u4 = lrn_grad_step(
                a, g, r1, r2, r3, r4, r5, r6, r7, r8, t1, t2, t3, t4, t5, t6, t7, t8,
                u1, u2, u3, u4, zero, alpha, beta, k, HALF, HAS_LRN, FAST, True,
            )  # fmt: skip  # dx of channel m-2*HALF
            j = mv - 2 * HALF  # [1] channel whose dx is complete now
            tl.store(
                dx_tile + (m - 2 * HALF) * sgc, dx.to(dx_ptr.dtype.element_ty),
                mask=in_ok & (j >= c0),
            )  # fmt: skip
            r1, r2, r3, r4, r5, r6, r7, r8 = _push(a, r1, r2, r3, r4, r5, r6, r7, FAST)

    # (BR, CB, num_warps, maxnreg, STAGES, UNROLL): few, as every config is one more compile
    # per (shape, dtype).  sm_90 code for conv1's block (benchmarks/sass_report.py): 4 elements
    # per thread (BR*64/threads) take ~133 registers (12 warps/SM) and ~278 instructions a
    # step; maxnreg=128 reaches 16 warps/SM without spills; 2 elements per thread (BR=8 at 8
    # warps, BR=4 at 4) take 64-74 registers, 24-32 warps/SM, for ~15% more instructions per
    # element: the trade between issue and latency hiding that only a GPU can settle.  Then
    # one whose planes the pipeliner prefetches with cp.async, one unrolled by the ring period
    # (no ring moves).  CB=48 is a whole tower of conv1: no chunk repeats the 2*HALF lag steps.
    _CONFIG_CHOICES = [
        (8, 32, 4, 0, 1, 0), (8, 32, 4, 128, 1, 0), (4, 32, 2, 128, 1, 0), (8, 48, 8, 0, 1, 0),
        (4, 32, 4, 0, 1, 0), (8, 32, 4, 128, 2, 0), (8, 32, 4, 0, 1, 1),
    ]
    _tuned_cache: dict[int, Any] = {}

    def _configs(iwp: int) -> list[Any]:
        out = []
        for br, cb, nw, maxr, stages, unroll in _CONFIG_CHOICES:
            if br * iwp > 4096:
                continue
            meta = {"BR": br, "CB": cb, "STAGES": stages, "UNROLL": unroll}
            out.append(triton.Config(meta, num_warps=nw, maxnreg=maxr or None))
        return out or [triton.Config({"BR": 1, "CB": 32, "STAGES": 1, "UNROLL": 0}, num_warps=4)]

    def _tuned(iwp: int) -> Any:
        """An autotuned kernel per band width (the configs depend on IWP only)."""
        if iwp not in _tuned_cache:
            _tuned_cache[iwp] = triton.autotune(_configs(iwp), key=BWD_TUNE_KEY)(
                _bwd_rows_kernel
            )
        return _tuned_cache[iwp]


def supported(x: Tensor, pool: PoolParams | None) -> bool:
    """Whether the rows backward handles this geometry (else lrn_pool_bwd runs)."""
    if pool is None or pool.size > 2 * pool.stride:
        return False
    return _next_pow2(x.shape[3]) <= MAX_IWP


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
    """Same contract as lrn_pool_bwd.launch_backward.  ``config`` forces {"BR", "CB",
    "num_warps"} and optionally "STAGES", "UNROLL" (default 1, 0), "maxnreg" (tests: band and
    chunk edges, each loop form); unsupported geometries (see ``supported``) go to
    lrn_pool_bwd (with its default config)."""
    if not supported(x, pool):
        lrn_pool_bwd.launch_backward(x, dy, idx, dx, lrn, pool, towers, wrap=wrap)
        return
    N, C, H, W = x.shape
    K, S, P, OH, OW = pool_geometry(H, W, pool)
    if tuple(dy.shape) != (N, C, OH, OW) or tuple(dx.shape) != tuple(x.shape):
        raise ValueError("dy/dx shapes do not match x and the pool geometry")
    if idx is None or idx.shape != dy.shape:
        raise ValueError("the pooled backward needs the forward's argmax")
    if dx.numel() == 0:
        return
    if dy.numel() == 0:  # nothing pooled (a map narrower than the pool): no gradient
        dx.zero_()
        return
    cpt = C // towers
    iwp, owp = _next_pow2(W), _next_pow2(max(OW, 1))
    if (K, S, P) == (3, 2, 0):
        owp = iwp // 2  # _g_plane_3s2 interleaves two [BR, OWP] halves into [BR, IWP]
    args = (
        x, dy, idx, dx,
        H, W, OH, OW, cpt, towers,
        *x.stride(), *dy.stride(), *idx.stride(), *dx.stride(),
        *lrn_scalars(lrn),
    )  # fmt: skip
    consts = {
        **lrn_consts(lrn),
        "K": K, "S": S, "P": P, "FAST": fast_math(x), "IWP": iwp, "OWP": owp,
    }  # fmt: skip

    def grid(meta: dict[str, int]) -> tuple[int]:
        return (N * towers * triton.cdiv(cpt, meta["CB"]) * triton.cdiv(H, meta["BR"]),)

    if config is None and not INTERPRET:
        wrap(_tuned(iwp))[grid](*args, **consts)
        return
    cfg = {"STAGES": 1, "UNROLL": 0, **(DEFAULT_BWD_ROWS_CONFIG if config is None else config)}
    wrap(_bwd_rows_kernel)[grid](*args, **consts, **cfg)
