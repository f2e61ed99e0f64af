"""The "rows" forward kernel for relu → LRN (paper convention, per tower) → max-pool.

Why a second kernel: the "windows" kernel (lrn_pool.py) loads every output's K x K window as
its own [KK, BP] tensor, so each input element is loaded and LRN-normalised about
K*K/S² ≈ 2.25x (x16/9 for the padding of KK to 16): ~4 pows per input element, and 16
strided masked loads per output, which makes it issue-bound rather than memory-bound.

Here one program owns (sample n, tower, a chunk of CB channels, a band of BOH pooled rows) and
the FULL pooled width.  Per channel it loads the band's input footprint as one [IR, IWP] tile
(IR = the power of two ≥ (BOH-1)*S + K input rows, IWP = the power of two ≥ (OW-1)*S + K
input columns): for NCHW every row is one contiguous, coalesced segment.  Each loaded element's
LRN is computed exactly once (one pow), with the same register ring over channels as the
windows kernel (so nothing is re-read along C).  The pooling then happens in registers with
``tl.gather``: first along the columns (K gathers, [IR, IWP] → [IR, BOW]), then along the
rows ([IR, BOW] → [BOHP, BOW]).  AlexNet's 3x3/2 pool takes a shorter path: the tile splits
into even and odd columns (a reshape, no data movement), window j's columns are even j, odd j
and even j+1, so only the last needs a gather; the same along the rows.  That is 2 gathers a
step instead of 6 (with _plane's single mask, sm_90 code takes 219 instructions a step instead
of 294, 268 instead of 389 with the argmax).  Rows first-max then column first-max with
strict '>' gives the row-major first maximum, i.e. exactly F.max_pool2d's choice, so the int8
argmax (dy*K+dx) has the windows kernel's format and its backward consumes it unchanged.

Only neighbouring bands overlap (K - S input rows), so the input is read ≈ once.

Hiding memory latency (the loop loads one plane per step and waits for it): PREFETCH issues
the next plane's load into registers before the step's math; STAGES > 1 lets Triton's
pipeliner prefetch planes into shared memory with cp.async (possible because the ring is
rotated through lrn_pool._push); UNROLL unrolls the loop by the ring's period, which removes
the ring's register moves.  The autotuner measures which wins; benchmarks/sass_report.py shows
what each costs in registers and instructions.

Routed to the windows kernel instead (``supported`` is False): no pool (the windows kernel
is then already one load per element), a pooled width whose footprint exceeds MAX_IWP
columns, or a pool taller than the largest band.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from . import lrn_pool
from .lrn_pool import (
    FWD_TUNE_KEY,
    HAVE_TRITON,
    INTERPRET,
    _identity,
    _next_pow2,
    pool_geometry,
)
from .params import LRNParams, PoolParams

if HAVE_TRITON:
    import triton
    import triton.language as tl

    from .lrn_pool import _pick, _pow_neg, _push, _window_sum, program_coords

# Widest input footprint (columns) one program holds: OW ≤ 64 for a 3x3/2 pool.
MAX_IWP = 128
# Input rows per band tried by the autotuner (and the cap on the pool height).
_IR_CHOICES = (8, 16, 32)
# Tile used when not autotuning (interpreter); tests force others.  IR=8 → BOH=3 for 3x3/2.
DEFAULT_ROWS_CONFIG = {"IR": 8, "CB": 8, "num_warps": 4, "PREFETCH": 0, "STAGES": 1, "UNROLL": 0}


def band_rows(ir: int, k: int, s: int) -> int:
    """Pooled rows a band of ``ir`` input rows produces: (BOH-1)*S + K ≤ IR."""
    return (ir - k) // s + 1


def band_meta(ir: int, k: int, s: int) -> dict[str, int]:
    """IR, BOH and BOHP (the pooled tile's height: the 3x3/2 path pools the band into IR/2
    rows, the gather path into the power of two ≥ BOH)."""
    boh = band_rows(ir, k, s)
    return {"IR": ir, "BOH": boh, "BOHP": ir // 2 if (k, s) == (3, 2) else _next_pow2(boh)}


if HAVE_TRITON:

    @triton.jit
    def _plane(x_tile, m, t_lo, t_hi, sxc):
        """relu(x) of channel m on the footprint tile; 0 outside the tower (the paper's clipped
        LRN window).  The tile's pointers are clamped into the image, so the only mask is this
        one channel test, the same for every element (a per-element image mask cost ~2
        instructions an element): positions outside the image hold a copy of an edge pixel,
        whose LRN only ever meets its own position's, and the pool never lets them win."""
        mv = m + tl.zeros([1], dtype=tl.int32)  # [1]; a tensor so masks broadcast (interp.)
        ok = (mv >= t_lo) & (mv < t_hi)  # [1], broadcast over the tile
        return tl.maximum(tl.load(x_tile + m * sxc, mask=ok, other=0.0).to(tl.float32), 0.0)

    @triton.jit
    def _first_max3(v0, v1, v2, p0, p1, p2, SAVE_IDX: tl.constexpr):
        """Max of three candidates in window order, and the payload of the first maximum
        (strict '>': F.max_pool2d's tie rule)."""
        best = v0
        arg = p0
        if SAVE_IDX:
            arg = tl.where(v1 > best, p1, arg)
        best = tl.maximum(best, v1)
        if SAVE_IDX:
            arg = tl.where(v2 > best, p2, arg)
        best = tl.maximum(best, v2)
        return best, arg

    @triton.jit
    def _pool3s2(b, SAVE_IDX: tl.constexpr, IR: tl.constexpr, IWP: tl.constexpr):
        """3x3 stride-2 max-pool of the [IR, IWP] footprint tile → [IR/2, IWP/2] (row i, column
        j pools rows 2i..2i+2, columns 2j..2j+2; the last row/column are junk, masked later),
        and the row-major offset of the first maximum.  Splitting into even/odd columns (rows)
        leaves one shifted operand per axis: one gather each, not three."""
        HW: tl.constexpr = IWP // 2
        HR: tl.constexpr = IR // 2
        e, o = tl.split(tl.reshape(b, [IR, HW, 2]))  # columns 2j, 2j+1: [IR, HW]
        nxt = tl.minimum(tl.arange(0, HW) + 1, HW - 1)[None, :] + tl.zeros([IR, HW], tl.int32)
        e1 = tl.gather(e, nxt, axis=1)  # column 2j+2
        z = tl.zeros([IR, HW], dtype=tl.int32)
        hm, hdx = _first_max3(e, o, e1, z, z + 1, z + 2, SAVE_IDX)  # [IR, HW]
        he, ho = tl.split(tl.permute(tl.reshape(hm, [HR, 2, HW]), (0, 2, 1)))  # [HR, HW]
        dn = tl.minimum(tl.arange(0, HR) + 1, HR - 1)[:, None] + tl.zeros([HR, HW], tl.int32)
        he1 = tl.gather(he, dn, axis=0)  # row 2i+2
        if SAVE_IDX:
            de, do = tl.split(tl.permute(tl.reshape(hdx, [HR, 2, HW]), (0, 2, 1)))
            de1 = tl.gather(de, dn, axis=0)
        else:
            de = tl.zeros([HR, HW], dtype=tl.int32)
            do = de
            de1 = de
        return _first_max3(he, ho, he1, de, do + 3, de1 + 6, SAVE_IDX)

    @triton.jit
    def _pool_gather(b, hcol, vrow, SAVE_IDX: tl.constexpr, K: tl.constexpr,
                     IR: tl.constexpr, IWP: tl.constexpr):
        """Any K x K / S pool of the footprint tile by gathers: K along the columns
        ([IR, IWP] → [IR, BOW]), then K along the rows (→ [BOHP, BOW]); first max kept."""
        hm = tl.gather(b, tl.minimum(hcol, IWP - 1), axis=1)  # [IR, BOW]
        hdx = hcol * 0  # [IR, BOW] argmax column offset
        for d in tl.static_range(1, K):
            v = tl.gather(b, tl.minimum(hcol + d, IWP - 1), axis=1)  # [IR, BOW]
            if SAVE_IDX:
                hdx = tl.where(v > hm, d, hdx)
            hm = tl.maximum(hm, v)
        best = tl.gather(hm, tl.minimum(vrow, IR - 1), axis=0)  # [BOHP, BOW]
        arg = vrow * 0
        if SAVE_IDX:
            arg = tl.gather(hdx, tl.minimum(vrow, IR - 1), axis=0)  # [BOHP, BOW]
        for d in tl.static_range(1, K):
            v = tl.gather(hm, tl.minimum(vrow + d, IR - 1), axis=0)  # [BOHP, BOW]
            if SAVE_IDX:
                vdx = tl.gather(hdx, tl.minimum(vrow + d, IR - 1), axis=0)  # [BOHP, BOW]
                arg = tl.where(v > best, d * K + vdx, arg)
            best = tl.maximum(best, v)
        return best, arg

    @triton.jit
    def _rows_fwd_kernel(
        x_ptr, y_ptr, idx_ptr,
        H, W, OH, OW, CPT, towers,
        sxn, sxc, sxh, sxw, syn, syc, syh, syw,
        alpha: tl.constexpr, beta: tl.constexpr, k: tl.constexpr,  # constexpr: inductor
        # would pass Python floats as fp64 and promote the loop-carried ring to fp64
        HALF: tl.constexpr, HAS_LRN: tl.constexpr,
        K: tl.constexpr, S: tl.constexpr, P: tl.constexpr,
        SAVE_IDX: tl.constexpr, FAST: tl.constexpr,
        IWP: tl.constexpr, BOW: tl.constexpr,
        IR: tl.constexpr, BOH: tl.constexpr, BOHP: tl.constexpr, CB: tl.constexpr,
        PREFETCH: tl.constexpr, STAGES: tl.constexpr, UNROLL: tl.constexpr,
    ):  # fmt: skip
        band, n, t_lo, t_hi, c0, c1 = program_coords(tl.cdiv(OH, BOH), CPT, CB, towers)

        # Input footprint of the band: rows band*BOH*S - P + [0, IR), columns -P + [0, IWP).
        ih = band * (BOH * S) - P + tl.arange(0, IR)  # [IR]
        iw = tl.arange(0, IWP) - P  # [IWP]
        in_ok = ((ih >= 0) & (ih < H))[:, None] & ((iw >= 0) & (iw < W))[None, :]  # [IR, IWP]
        ihc = tl.minimum(tl.maximum(ih, 0), H - 1)  # [IR] clamped: every load in bounds
        iwc = tl.minimum(tl.maximum(iw, 0), W - 1)  # [IWP]
        x_tile = x_ptr + n * sxn + ihc[:, None] * sxh + iwc[None, :] * sxw  # [IR, IWP] pointers

        # Pooled outputs of the band: rows band*BOH + [0, BOHP) (valid < BOH), all columns.
        oi = tl.arange(0, BOHP)  # [BOHP]
        oj = tl.arange(0, BOW)  # [BOW]
        oh = band * BOH + oi  # [BOHP]
        out_ok = ((oi < BOH) & (oh < OH))[:, None] & (oj < OW)[None, :]  # [BOHP, BOW]
        y_off = n * syn + oh[:, None] * syh + oj[None, :] * syw  # [BOHP, BOW]
        # Gather sources: column S*j + d of the footprint, row S*i + d of the column maxima.
        # In range for every valid output; clamped (and masked at the store) for the others.
        hcol = oj[None, :] * S + tl.zeros([IR, BOW], dtype=tl.int32)  # [IR, BOW]
        vrow = oi[:, None] * S + tl.zeros([BOHP, BOW], dtype=tl.int32)  # [BOHP, BOW]

        # Distinct initial values per ring slot: see the note in lrn_pool._fwd_kernel (triton
        # detects loop-carried variables by IR handle; shared zeros would not be carried).
        r1 = tl.zeros([IR, IWP], dtype=tl.float32)
        r2 = tl.zeros([IR, IWP], dtype=tl.float32)
        r3 = tl.zeros([IR, IWP], dtype=tl.float32)
        r4 = tl.zeros([IR, IWP], dtype=tl.float32)
        r5 = tl.zeros([IR, IWP], dtype=tl.float32)
        r6 = tl.zeros([IR, IWP], dtype=tl.float32)
        r7 = tl.zeros([IR, IWP], dtype=tl.float32)
        r8 = tl.zeros([IR, IWP], dtype=tl.float32)
        # Pre-roll: channels c0-HALF .. c0+HALF-1 into the ring.
        for m in range(c0 - HALF, c0 + HALF):
            a = _plane(x_tile, m, t_lo, t_hi, sxc)  # [IR, IWP]
            r8, r7, r6, r5, r4, r3, r2, r1 = r7, r6, r5, r4, r3, r2, r1, a
        if PREFETCH:  # next plane's load issued before this plane's math (costs registers)
            xn = _plane(x_tile, c0 + HALF, t_lo, t_hi, sxc)  # [IR, IWP]
        # Main loop: load channel m = c + HALF, emit pooled channel c.
        RING: tl.constexpr = 2 * HALF if UNROLL and HALF > 0 else 1  # unroll by the ring period
        for m in tl.range(c0 + HALF, c1 + HALF, num_stages=STAGES, loop_unroll_factor=RING):
            if PREFETCH:
                a = xn
                xn = _plane(x_tile, m + 1, t_lo, t_hi, sxc)  # [IR, IWP]
            else:
                a = _plane(x_tile, m, t_lo, t_hi, sxc)  # [IR, IWP]
            if HAS_LRN:
                sumsq = _window_sum(a, r1, r2, r3, r4, r5, r6, r7, r8, 2 * HALF + 1, True)
                a_c = _pick(a, r1, r2, r3, r4, r5, r6, r7, r8, HALF)  # [IR, IWP]
                b = a_c * _pow_neg(k + alpha * sumsq, beta, FAST, True)  # one pow per element
            else:
                b = a
            if P > 0:  # -inf = pool padding.  Without padding every valid output's window
                # lies inside the image, and positions outside feed only outputs not stored.
                b = tl.where(in_ok, b, float("-inf"))  # [IR, IWP]
            if K == 3 and S == 2:
                best, arg = _pool3s2(b, SAVE_IDX, IR, IWP)  # [BOHP, BOW] = [IR/2, IWP/2]
            else:
                best, arg = _pool_gather(b, hcol, vrow, SAVE_IDX, K, IR, IWP)
            c = m - HALF
            if SAVE_IDX:
                tl.store(idx_ptr + y_off + c * syc, arg.to(tl.int8), mask=out_ok)
            tl.store(y_ptr + y_off + c * syc, best.to(y_ptr.dtype.element_ty), mask=out_ok)
            r1, r2, r3, r4, r5, r6, r7, r8 = _push(a, r1, r2, r3, r4, r5, r6, r7, FAST)

    # (IR, CB, num_warps, PREFETCH, STAGES, UNROLL): few, because every config is one more
    # compile per (shape, dtype).  IR=16 (1024-element planes for OW ≤ 32 at 3x3/2) at 4 and 8
    # warps, a taller band (fewer halo rows, more registers), one register-prefetching
    # variant; two whose planes the pipeliner prefetches with cp.async (the H200 ran the
    # unpipelined forward at 2.3x the time its instructions take to issue: memory latency,
    # not issue, bound it), and three unrolled by the ring period (no ring moves: -20%
    # instructions per step, more registers).  benchmarks/sass_report.py shows each one's
    # registers, occupancy and instructions per step.  IR=8 is left out: 3-row bands load
    # 72 rows for conv1's 55 (+30% work).
    _CONFIG_CHOICES = [
        (16, 16, 4, 0, 1, 0), (16, 32, 8, 0, 1, 0), (16, 32, 4, 1, 1, 0),
        (16, 16, 4, 0, 2, 0), (16, 32, 8, 0, 2, 0),
        (16, 16, 4, 0, 1, 1), (16, 32, 8, 0, 1, 1), (32, 32, 8, 0, 1, 1),
    ]
    _tuned_cache: dict[tuple[int, int, int], Any] = {}

    def _configs(k: int, s: int, iwp: int) -> list[Any]:
        out = []
        for ir, cb, nw, pf, stages, unroll in _CONFIG_CHOICES:
            if ir < k or ir * iwp > 4096:
                continue
            meta = {**band_meta(ir, k, s), "CB": cb, "PREFETCH": pf,
                    "STAGES": stages, "UNROLL": unroll}
            out.append(triton.Config(meta, num_warps=nw))
        return out

    def _tuned(k: int, s: int, iwp: int) -> Any:
        """An autotuned kernel per pool geometry (the band height BOH follows from IR, K, S)."""
        key = (k, s, iwp)
        if key not in _tuned_cache:
            _tuned_cache[key] = triton.autotune(_configs(k, s, iwp), key=FWD_TUNE_KEY)(
                _rows_fwd_kernel
            )
        return _tuned_cache[key]


def footprint(w: int, pool: PoolParams | None) -> tuple[int, int]:
    """(IWP, BOW): footprint columns and pooled columns of the full-width band, powers of 2
    (the 3x3/2 path pools the footprint into IWP/2 columns)."""
    K, S, _, _, OW = pool_geometry(1, w, pool)
    iwp = _next_pow2(max(1, (OW - 1) * S + K))
    return iwp, iwp // 2 if (K, S) == (3, 2) else _next_pow2(max(1, OW))


def supported(x: Tensor, pool: PoolParams | None) -> bool:
    """Whether the rows kernel handles this geometry (else launch_forward uses "windows")."""
    if pool is None or pool.size > max(_IR_CHOICES):
        return False
    iwp, _ = footprint(x.shape[3], pool)
    return iwp <= MAX_IWP


def launch_forward(
    x: Tensor,
    y: Tensor,
    idx: Tensor | None,
    lrn: LRNParams | None,
    pool: PoolParams | None,
    towers: int,
    wrap: Callable[[Any], Any] = _identity,
    config: dict[str, int] | None = None,
) -> None:
    """Same contract as lrn_pool.launch_forward (y, idx written; strides honoured).

    ``config`` forces {"IR", "CB", "num_warps"} and optionally "PREFETCH", "STAGES", "UNROLL"
    (default 0, 1, 0; tests: band and chunk edges, each loop form); geometries the rows kernel
    does not take (see ``supported``) go to the windows kernel.
    """
    if not supported(x, pool):
        lrn_pool.launch_forward(x, y, idx, lrn, pool, towers, wrap=wrap)
        return
    launch = lrn_pool.forward_launch(x, y, idx, lrn, pool, towers)
    if launch is None:
        return
    args, consts = launch
    N, cpt, OH = x.shape[0], x.shape[1] // towers, y.shape[2]
    K, S = consts["K"], consts["S"]
    iwp, bow = footprint(x.shape[3], pool)
    consts.update(IWP=iwp, BOW=bow)

    def grid(meta: dict[str, int]) -> tuple[int]:
        return (N * towers * triton.cdiv(cpt, meta["CB"]) * triton.cdiv(OH, meta["BOH"]),)

    if config is None and not INTERPRET:
        wrap(_tuned(K, S, iwp))[grid](*args, **consts)
        return
    cfg = {"PREFETCH": 0, "STAGES": 1, "UNROLL": 0,
           **(DEFAULT_ROWS_CONFIG if config is None else config)}
    ir = max(cfg["IR"], _next_pow2(K))
    cfg.update(band_meta(ir, K, S))
    wrap(_rows_fwd_kernel)[grid](*args, **consts, **cfg)
