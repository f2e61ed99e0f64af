"""Pure-PyTorch reference of the ReLU → LRN → MaxPool chain (any device/dtype, autograd-able).

The one PyTorch form of the paper's LRN: the lowering's ResNorm layers and fused chains (where
the Triton kernel does not run, and always for export) and the kernels' tests all use it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .params import LRNParams, PoolParams


def check_towers(channels: int, towers: int) -> None:
    """Towers split channels into equal contiguous groups; reject shapes that do not split."""
    if towers < 1 or channels % towers != 0:
        raise ValueError(f"{channels} channels cannot be split into {towers} equal towers")


def local_response_norm(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    """Paper-convention LRN across dim 1: b_c = a_c / (k + alpha·Σ_{|c'−c| ≤ size//2} a_c'²)^beta.

    torch.nn.LocalResponseNorm(size, alpha', beta, k) computes
    a_c / (k + alpha'/size · Σ a_c'²)^beta over the same zero-padded window, so the paper's
    alpha is torch's ``alpha' = alpha·size`` (the one place that converts). The window is
    clipped at the channel ends (zeros add nothing to the sum), which matches the paper's
    clipped window; callers pass one tower's channels so it never crosses a tower.
    Works on maps (N x C x H x W) and on flat features (N x C).

    It computes a half-width x in fp32 (as the fused kernel does), returning x's dtype:
    under autocast PyTorch would otherwise run parts in fp32 and parts not, differently on
    the CPU and on CUDA, and what it keeps for backward with them (the registry's ResNorm
    entry states what this keeps).
    """
    flat = x.dim() == 2  # N x C: a 1-pixel map for F.local_response_norm
    x32 = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x  # fp32 or fp64: x
    y = F.local_response_norm(x32.unsqueeze(-1) if flat else x32, size, alpha * size, beta, k)
    return (y.squeeze(-1) if flat else y).to(x.dtype)  # the shape and dtype of x


def map_response_norm(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    """LRN within each map: b = a / (k + alpha·Σ a²)^beta, the sum over the size×size pixels
    centred on each pixel (size odd), zero padded at the border; channels never mix.

    Caffe's WITHIN_CHANNEL LRN and cuda-convnet2's rnorm divide their alpha by size², so
    theirs is this alpha·size². The sum is an average pool of the squares times size²:
    counting the padding (count_include_pad), every window divides by size², as Caffe's AVE
    pooling over its padded square does. A half-width x computes in fp32, as
    `local_response_norm` does (the registry's MapNorm entry states what this keeps).
    """
    x32 = x.float() if x.dtype in (torch.bfloat16, torch.float16) else x  # N x C x H x W
    mean = F.avg_pool2d(x32.square(), size, 1, size // 2,
                        count_include_pad=True)  # N x C x H x W: each window's Σ a² / size²
    return (x32 * (k + alpha * size * size * mean).pow(-beta)).to(x.dtype)  # N x C x H x W


def lrn_per_tower(x: Tensor, lrn: LRNParams, towers: int = 1) -> Tensor:
    """`local_response_norm` on each of ``towers`` equal channel shares of x, concatenated."""
    check_towers(x.shape[1], towers)
    if towers == 1:
        return local_response_norm(x, lrn.size, lrn.alpha, lrn.beta, lrn.k)
    return torch.cat([local_response_norm(p, lrn.size, lrn.alpha, lrn.beta, lrn.k)
                      for p in x.chunk(towers, dim=1)], dim=1)  # same shape as x


def reference_relu_lrn_pool(
    x: Tensor, lrn: LRNParams | None, pool: PoolParams | None, towers: int = 1
) -> Tensor:
    """relu(x) → LRN per tower → max_pool2d, built from stock torch ops.

    x is NCHW (any strides), or N x C features when there is no pool.  The LRN is
    `local_response_norm` on each tower's channels, so its window stays inside a tower.
    """
    if x.dim() != 4 and not (x.dim() == 2 and pool is None):
        raise ValueError(f"expected NCHW input, got shape {tuple(x.shape)}")
    y = torch.relu(x)
    if lrn is not None:
        y = lrn_per_tower(y, lrn, towers)
    if pool is not None:
        y = F.max_pool2d(y, pool.size, pool.stride, pool.pad)
    return y
