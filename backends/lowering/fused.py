"""The paper's LRN in PyTorch, and the seam to the fused Triton ReLU→LRN→MaxPool kernel.

The compiler's fusion pass marks chains (relu_lrn_pool, relu_pool, relu_lrn); the lowering
runs each chain as one `FusedChain` op: the Triton kernel on a CUDA tensor when
`alexnetc.backends.kernels` provides it, else the reference ops below (always for export).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

try:  # the only optional import: the kernels package may not provide the fused op yet
    from alexnetc.backends.kernels import LRNParams, PoolParams, fused_relu_lrn_pool

    _KERNEL: Callable[..., Tensor] | None = fused_relu_lrn_pool
except ImportError:
    _KERNEL = None


def kernel_available(device: torch.device | str) -> bool:
    """Whether the Triton op runs on `device` (the kernels package says; False if absent)."""
    if _KERNEL is None:
        return False
    from alexnetc.backends.kernels import kernels_available

    return bool(kernels_available(device))


def local_response_norm(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    """Paper-convention LRN across dim 1: b_c = a_c / (k + alpha·Σ_{|c'−c| ≤ size//2} a_c'²)^beta.

    torch.nn.LocalResponseNorm(size, alpha', beta, k) computes
    a_c / (k + alpha'/size · Σ a_c'²)^beta over the same zero-padded window, so the paper's
    alpha is torch's ``alpha' = alpha·size``. The window is clipped at the channel ends (zeros
    add nothing to the sum); callers pass one tower's channels so it never crosses a tower.
    Works on maps (N x C x H x W) and on flat features (N x C).
    """
    if x.dim() == 2:
        return F.local_response_norm(x.unsqueeze(-1), size, alpha * size, beta, k).squeeze(-1)
    return F.local_response_norm(x, size, alpha * size, beta, k)  # N x C x H x W


def towerwise(fn: Callable[[Tensor], Tensor], x: Tensor, towers: int) -> Tensor:
    """`fn` on each tower's share of the channels of x, concatenated (LRN stays in-tower)."""
    if towers == 1:
        return fn(x)
    return torch.cat([fn(part) for part in x.chunk(towers, dim=1)], dim=1)


class FusedChain(nn.Module):
    """ReLU, then optionally LRN, then optionally MaxPool, on one tower's maps, as one op."""

    def __init__(self, kernel: str, lrn: tuple[int, float, float, float] | None,
                 pool: tuple[int, int, int] | None, use_kernel: bool, towers: int = 1):
        super().__init__()
        self.towers = towers
        self.kernel = kernel  # the fusion pass's name for the chain
        self.lrn = lrn  # (size, alpha, beta, k), paper convention
        self.pool = pool  # (size, stride, pad), floor mode
        self.use_kernel = use_kernel and _KERNEL is not None

    def forward(self, x: Tensor, tower: int = 0) -> Tensor:  # N x C x H x W, one tower's maps
        return self._run(x, 1)

    def whole(self, x: Tensor) -> Tensor:  # N x C x H x W: every tower's maps
        return self._run(x, self.towers)

    def _run(self, x: Tensor, towers: int) -> Tensor:
        if self.use_kernel and x.is_cuda and x.dim() == 4 and _KERNEL is not None:
            lrn = LRNParams(self.lrn[0], self.lrn[1], self.lrn[2], self.lrn[3]) if self.lrn \
                else None
            pool = PoolParams(*self.pool) if self.pool else None
            return _KERNEL(x, lrn, pool, towers=towers)  # N x C x H' x W' (falls back itself)
        y = torch.relu(x)  # N x C x H x W
        if self.lrn is not None:
            lrn = self.lrn
            y = towerwise(lambda t: local_response_norm(t, *lrn), y, towers)  # N x C x H x W
        if self.pool is not None:
            y = F.max_pool2d(y, self.pool[0], self.pool[1], self.pool[2])  # N x C x H' x W'
        return y

    def extra_repr(self) -> str:
        return f"{self.kernel}, lrn={self.lrn}, pool={self.pool}, kernel={self.use_kernel}"
