"""Triton forward kernel for relu → LRN (paper convention, per tower) → max-pool.

Access pattern (the point of the kernel): one program owns (sample n, tower, a chunk of CB
channels, a BLOCK_OH x BLOCK_OW tile of pooled outputs) and walks its channels in order.
For every output it loads the K*K input positions of its pool window as one [KK, BP] tensor,
so each channel plane of the tile is read from DRAM once (the overlap of neighbouring
windows is served by L1).  The LRN window sum needs the ``size`` neighbouring channels: they
live in a register ring (r1..r8 = the planes loaded 1..8 steps ago), so nothing is re-read.
Channels outside the tower load as 0, which is exactly the paper's clipped window.

Only the pooled result is written (plus, when autograd needs it, an int8 argmax per output:
the row-major offset of the first maximum inside the window, as F.max_pool2d picks it).

Strides are passed explicitly, so NCHW, channels_last and any other strided layout are read
natively (no copy); the output is written with the strides of the given ``y``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .params import LRNParams, PoolParams

try:
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # CPU-only installs without triton fall back to the reference
    HAVE_TRITON = False

# The ring holds at most 8 previous planes: LRN sizes up to 9.
MAX_LRN_SIZE = 9
INTERPRET = False  # set below: True when triton.jit produced interpreter functions

# What every autotuner keys on: the geometry and each constexpr that changes the compiled
# code (FAST is True on every launch that autotunes: compiled CUDA kernels).
# Triton's key holds only the listed arguments (plus tensor dtypes), so without SAVE_IDX
# inference and training would share whichever tuning ran first.  The batch is not a kernel
# argument: a shape is tuned at the batch of its first call.
TUNE_KEY = ["H", "W", "CPT", "towers", "HALF", "HAS_LRN", "K", "S", "P", "alpha", "beta", "k"]
FWD_TUNE_KEY = [*TUNE_KEY, "SAVE_IDX", "sxc", "sxw", "syc"]
BWD_TUNE_KEY = [*TUNE_KEY, "sxc", "sxw", "sdc"]

# Tile used when not autotuning (the CPU interpreter, and tests that force a config).
DEFAULT_FWD_CONFIG = {"BLOCK_OH": 8, "BLOCK_OW": 8, "CB": 16, "num_warps": 4}


def _next_pow2(v: int) -> int:
    return 1 << max(0, (v - 1).bit_length())


if HAVE_TRITON:

    @triton.jit
    def _pick(a, r1, r2, r3, r4, r5, r6, r7, r8, D: tl.constexpr):
        """The plane loaded D steps before ``a`` (D is a compile-time constant)."""
        if D == 0:
            v = a
        elif D == 1:
            v = r1
        elif D == 2:
            v = r2
        elif D == 3:
            v = r3
        elif D == 4:
            v = r4
        elif D == 5:
            v = r5
        elif D == 6:
            v = r6
        elif D == 7:
            v = r7
        else:
            v = r8
        return v

    @triton.jit
    def _keep(v, FAST: tl.constexpr):
        """v as a fresh value (a register move, which ptxas deletes).  A ring slot that is just
        the previous iteration's slot makes the loop "distance > 1" in Triton's eyes, and its
        software pipeliner then refuses to prefetch the loop's loads (tl.range num_stages);
        passing each moved slot through here keeps every carried value one iteration old.
        Compiled CUDA only (FAST): the interpreter cannot run PTX and does not pipeline."""
        if FAST:
            out = tl.inline_asm_elementwise(
                "mov.b32 $0, $1;", "=r,r", [v], dtype=tl.float32, is_pure=True, pack=1
            )
        else:
            out = v
        return out

    @triton.jit
    def _push(a, r1, r2, r3, r4, r5, r6, r7, FAST: tl.constexpr):
        """The ring after step a: (r1, .., r8) becomes (a, r1, .., r7)."""
        return (
            a, _keep(r1, FAST), _keep(r2, FAST), _keep(r3, FAST), _keep(r4, FAST),
            _keep(r5, FAST), _keep(r6, FAST), _keep(r7, FAST),
        )  # fmt: skip

    @triton.jit
    def _window_sum(a, r1, r2, r3, r4, r5, r6, r7, r8, N: tl.constexpr, SQUARE: tl.constexpr):
        """Σ over the newest N ring entries (of their squares when SQUARE): recomputed each step
        rather than kept as a running sum, so an inf/NaN cannot poison later channels."""
        if SQUARE:  # noqa: SIM108 (static if: only one branch is compiled)
            acc = a * a
        else:
            acc = a
        for d in tl.static_range(1, N):
            v = _pick(a, r1, r2, r3, r4, r5, r6, r7, r8, d)
            if SQUARE:
                acc += v * v
            else:
                acc += v
        return acc

    @triton.jit
    def program_coords(n_tiles, CPT, CB: tl.constexpr, towers):
        """Which (spatial tile, sample, tower, channel chunk) this program owns: the grid is
        N x towers x chunks x tiles, tiles fastest.  Returns tile, n (int64), the tower's
        channel range [t_lo, t_hi) and the chunk's [c0, c1)."""
        pid = tl.program_id(0)
        tile = pid % n_tiles
        rest = pid // n_tiles
        chunk = rest % tl.cdiv(CPT, CB)
        rest = rest // tl.cdiv(CPT, CB)
        t_lo = (rest % towers) * CPT  # first channel of this tower
        t_hi = t_lo + CPT
        n = (rest // towers).to(tl.int64)
        c0 = t_lo + chunk * CB
        c1 = tl.minimum(c0 + CB, t_hi)
        return tile, n, t_lo, t_hi, c0, c1

    @triton.jit
    def _pow_neg(s, e, FAST: tl.constexpr, FTZ: tl.constexpr):
        """s ** -e for s > 0 as exp2(-e * log2(s)).  tl.log2 lowers to a ~20-instruction precise
        routine; FAST uses the MUFU lg2.approx (rel. error ~2^-22), which the forward runs 9x
        per output and channel.  The CPU interpreter cannot run PTX, hence the flag.  FTZ adds
        .ftz: without it ptxas wraps every lg2 in a denormal rescale (3 more instructions per
        element on sm_90); s = k + α Σa² ≥ k is never denormal for k > 0."""
        if FAST:
            if FTZ:
                lg = tl.inline_asm_elementwise(
                    "lg2.approx.ftz.f32 $0, $1;", "=r,r", [s], dtype=tl.float32, is_pure=True,
                    pack=1,
                )
            else:
                lg = tl.inline_asm_elementwise(
                    "lg2.approx.f32 $0, $1;", "=r,r", [s], dtype=tl.float32, is_pure=True,
                    pack=1,
                )
        else:
            lg = tl.log2(s)
        return tl.exp2(-e * lg)

    @triton.jit
    def _fwd_kernel(
        x_ptr, y_ptr, idx_ptr,
        H, W, OH, OW, CPT, towers,
        sxn, sxc, sxh, sxw, syn, syc, syh, syw,
        alpha: tl.constexpr, beta: tl.constexpr, k: tl.constexpr,  # constexpr: inductor
        # would pass Python floats as fp64 and promote the loop-carried ring to fp64
        HALF: tl.constexpr, HAS_LRN: tl.constexpr,
        K: tl.constexpr, S: tl.constexpr, P: tl.constexpr, KK: tl.constexpr,
        SAVE_IDX: tl.constexpr, FAST: tl.constexpr,
        BLOCK_OH: tl.constexpr, BLOCK_OW: tl.constexpr, CB: tl.constexpr,
    ):  # fmt: skip
        BP: tl.constexpr = BLOCK_OH * BLOCK_OW
        n_tw = tl.cdiv(OW, BLOCK_OW)
        n_tiles = tl.cdiv(OH, BLOCK_OH) * n_tw
        tile, n, t_lo, t_hi, c0, c1 = program_coords(n_tiles, CPT, CB, towers)

        p = tl.arange(0, BP)  # [BP] output positions of the tile
        oh = (tile // n_tw) * BLOCK_OH + p // BLOCK_OW  # [BP]
        ow = (tile % n_tw) * BLOCK_OW + p % BLOCK_OW  # [BP]
        out_ok = (oh < OH) & (ow < OW)  # [BP]
        # Window offsets on the leading axis: each thread then holds a whole window (the max is
        # an in-thread reduction) and a warp's lanes walk along ow (coalesced for NCHW).
        j = tl.arange(0, KK)  # [KK] window offset, row-major (dy, dx)
        ih = oh[None, :] * S - P + (j // K)[:, None]  # [KK, BP]
        iw = ow[None, :] * S - P + (j % K)[:, None]  # [KK, BP]
        cand_ok = (
            out_ok[None, :] & (j < K * K)[:, None] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        )  # [KK, BP]
        x_tile = x_ptr + n.to(tl.int64) * sxn + ih * sxh + iw * sxw  # [KK, BP] pointers
        y_off = n.to(tl.int64) * syn + oh * syh + ow * syw  # [BP]

        # Ring slots need distinct initial values: triton finds loop-carried variables by
        # comparing IR handles, so `r2 = r1` with r1 and r2 both the same `zero` would not be
        # carried (and the compiled ring would silently stay zero).
        r1 = tl.zeros([KK, BP], dtype=tl.float32)
        r2 = tl.zeros([KK, BP], dtype=tl.float32)
        r3 = tl.zeros([KK, BP], dtype=tl.float32)
        r4 = tl.zeros([KK, BP], dtype=tl.float32)
        r5 = tl.zeros([KK, BP], dtype=tl.float32)
        r6 = tl.zeros([KK, BP], dtype=tl.float32)
        r7 = tl.zeros([KK, BP], dtype=tl.float32)
        r8 = tl.zeros([KK, BP], dtype=tl.float32)
        # Pre-roll: fill the ring with channels c0-HALF .. c0+HALF-1 (0 outside the tower).
        for m in range(c0 - HALF, c0 + HALF):
            mv = m + tl.zeros([1], dtype=tl.int32)  # [1]; a tensor so masks broadcast (interp.)
            ok = cand_ok & (mv >= t_lo) & (mv < t_hi)
            a = tl.maximum(tl.load(x_tile + m * sxc, mask=ok, other=0.0).to(tl.float32), 0.0)
            r8, r7, r6, r5, r4, r3, r2, r1 = r7, r6, r5, r4, r3, r2, r1, a
        # Main loop: load channel m = c + HALF, emit pooled channel c.  (Prefetching the next
        # plane one step ahead measured slower on H200: it costs registers, hence occupancy.)
        for m in range(c0 + HALF, c1 + HALF):
            ok = cand_ok & ((m + tl.zeros([1], dtype=tl.int32)) < t_hi)
            a = tl.maximum(tl.load(x_tile + m * sxc, mask=ok, other=0.0).to(tl.float32), 0.0)
            if HAS_LRN:
                sumsq = _window_sum(a, r1, r2, r3, r4, r5, r6, r7, r8, 2 * HALF + 1, True)
                a_c = _pick(a, r1, r2, r3, r4, r5, r6, r7, r8, HALF)  # [KK, BP]
                b = a_c * _pow_neg(k + alpha * sumsq, beta, FAST, False)  # a_c * s^-beta
            else:
                b = a
            b = tl.where(cand_ok, b, float("-inf"))  # [KK, BP]
            c = m - HALF
            if SAVE_IDX:
                best, arg = tl.max(
                    b, axis=0, return_indices=True, return_indices_tie_break_left=True
                )  # [BP] first maximum in row-major window order, as F.max_pool2d
                tl.store(idx_ptr + y_off + c * syc, arg.to(tl.int8), mask=out_ok)
            else:
                best = tl.max(b, axis=0)  # [BP]
            tl.store(y_ptr + y_off + c * syc, best.to(y_ptr.dtype.element_ty), mask=out_ok)
            r1, r2, r3, r4, r5, r6, r7, r8 = _push(a, r1, r2, r3, r4, r5, r6, r7, FAST)

    from triton.runtime.jit import JITFunction

    INTERPRET = not isinstance(_fwd_kernel, JITFunction)

    _FWD_CONFIGS = [
        triton.Config({"BLOCK_OH": oh, "BLOCK_OW": ow, "CB": cb}, num_warps=nw)
        for (oh, ow, cb, nw) in [(2, 32, 32, 4), (4, 32, 32, 4), (8, 16, 32, 4), (8, 32, 48, 8)]
    ]
    _fwd_tuned: Any = (
        _fwd_kernel
        if INTERPRET
        else triton.autotune(_FWD_CONFIGS, key=FWD_TUNE_KEY)(_fwd_kernel)
    )


def _identity(kernel: Any) -> Any:
    return kernel


def fast_math(x: Tensor) -> bool:
    """Use PTX approximations (compiled CUDA kernels only, not the interpreter)."""
    return x.is_cuda and not INTERPRET and torch.version.hip is None


def pool_geometry(h: int, w: int, pool: PoolParams | None) -> tuple[int, int, int, int, int]:
    """(K, S, P, OH, OW); no pool is a 1x1/1 pool, which is the identity."""
    if pool is None:
        return 1, 1, 0, h, w
    return pool.size, pool.stride, pool.pad, pool.out_size(h), pool.out_size(w)


def lrn_scalars(lrn: LRNParams | None) -> tuple[float, float, float]:
    """(alpha, beta, k) as every kernel takes them (unused without an LRN)."""
    return (float(lrn.alpha), float(lrn.beta), float(lrn.k)) if lrn else (0.0, 0.0, 1.0)


def lrn_consts(lrn: LRNParams | None) -> dict[str, Any]:
    """The LRN's compile-time constants every kernel takes."""
    return {"HALF": lrn.size // 2 if lrn else 0, "HAS_LRN": lrn is not None}


def forward_launch(
    x: Tensor, y: Tensor, idx: Tensor | None, lrn: LRNParams | None, pool: PoolParams | None,
    towers: int,
) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """Check y/idx against x's pooled shape; the arguments and constants every forward kernel
    takes (None when there is nothing to write)."""
    N, C, H, W = x.shape
    K, S, P, OH, OW = pool_geometry(H, W, pool)
    if tuple(y.shape) != (N, C, OH, OW):
        raise ValueError(f"output shape {tuple(y.shape)} != {(N, C, OH, OW)}")
    if idx is not None and idx.stride() != y.stride():
        raise ValueError("idx must have the strides of y")
    if y.numel() == 0:
        return None
    args = (
        x, y, y if idx is None else idx,
        H, W, OH, OW, C // towers, towers,
        *x.stride(), *y.stride(),
        *lrn_scalars(lrn),
    )  # fmt: skip
    consts: dict[str, Any] = {
        **lrn_consts(lrn),
        "K": K, "S": S, "P": P, "SAVE_IDX": idx is not None, "FAST": fast_math(x),
    }  # fmt: skip
    return args, consts


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
    """Write relu→LRN→pool of x (N,C,H,W) into y (N,C,OH,OW); idx (int8, y's strides) if given.

    lrn / pool None drop that stage.  ``wrap`` is torch.library.wrap_triton inside the custom
    op; ``config`` forces a tile (tests use it to hit chunk/tile edges).
    """
    launch = forward_launch(x, y, idx, lrn, pool, towers)
    if launch is None:
        return
    args, consts = launch
    N, cpt, OH, OW = x.shape[0], x.shape[1] // towers, y.shape[2], y.shape[3]
    consts["KK"] = _next_pow2(consts["K"] * consts["K"])

    def grid(meta: dict[str, int]) -> tuple[int]:
        tiles = triton.cdiv(OH, meta["BLOCK_OH"]) * triton.cdiv(OW, meta["BLOCK_OW"])
        return (N * towers * triton.cdiv(cpt, meta["CB"]) * tiles,)

    if config is None and not INTERPRET:
        wrap(_fwd_tuned)[grid](*args, **consts)
    else:
        cfg = dict(DEFAULT_FWD_CONFIG if config is None else config)
        wrap(_fwd_kernel)[grid](*args, **consts, **cfg)


def alloc_pooled(x: Tensor, oh: int, ow: int, dtype: torch.dtype | None = None) -> Tensor:
    """Output buffer in x's memory format (channels_last in → channels_last out, like pooling)."""
    n, c = x.shape[:2]
    fmt = (
        torch.channels_last
        if x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format
    )
    return torch.empty((n, c, oh, ow), dtype=dtype or x.dtype, device=x.device, memory_format=fmt)
