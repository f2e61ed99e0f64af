"""Pure-PyTorch reference of the ReLU → LRN → MaxPool chain (any device/dtype, autograd-able)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .params import LRNParams, PoolParams


def check_towers(channels: int, towers: int) -> None:
    """Towers split channels into equal contiguous groups; reject shapes that do not split."""
    if towers < 1 or channels % towers != 0:
        raise ValueError(f"{channels} channels cannot be split into {towers} equal towers")


def reference_relu_lrn_pool(
    x: Tensor, lrn: LRNParams | None, pool: PoolParams | None, towers: int = 1
) -> Tensor:
    """relu(x) → LRN per tower → max_pool2d, built from stock torch ops.

    x is NCHW (any strides).  The paper's LRN divides by (k + alpha * Σ a²)^beta, whereas
    F.local_response_norm divides by (k + alpha/size * Σ a²)^beta, so we pass
    ``alpha * size`` to it.  Its window is zero-padded at the channel ends, which matches the
    paper's clipped window (zeros add nothing to Σ a²); applying it per tower chunk keeps
    the window inside a tower.
    """
    if x.dim() != 4:
        raise ValueError(f"expected NCHW input, got shape {tuple(x.shape)}")
    y = torch.relu(x)
    if lrn is not None:
        check_towers(x.shape[1], towers)
        chunks = torch.chunk(y, towers, dim=1) if towers > 1 else (y,)
        y = torch.cat(
            [
                F.local_response_norm(
                    c, lrn.size, alpha=lrn.alpha * lrn.size, beta=lrn.beta, k=lrn.k
                )
                for c in chunks
            ],
            dim=1,
        )
    if pool is not None:
        y = F.max_pool2d(y, pool.size, pool.stride, pool.pad)
    return y
