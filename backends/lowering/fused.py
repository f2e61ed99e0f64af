"""The seam to the fused Triton ReLU→LRN→MaxPool kernel.

The compiler's fusion pass marks chains (relu_lrn_pool, relu_pool, relu_lrn); the lowering
runs each chain as one `FusedChain` op: the Triton kernel on a CUDA tensor when
`alexnetc.backends.kernels` provides it, else the kernels' reference ops (always for export).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from alexnetc.backends.kernels.params import LRNParams, PoolParams
from alexnetc.backends.kernels.reference import reference_relu_lrn_pool

try:  # the only optional import: the kernels package may not provide the fused op
    from alexnetc.backends.kernels import fused_relu_lrn_pool

    _KERNEL: Callable[..., Tensor] | None = fused_relu_lrn_pool
except ImportError:
    _KERNEL = None


def kernel_available(device: torch.device | str) -> bool:
    """Whether the Triton op runs on `device` (the kernels package says; False if absent)."""
    if _KERNEL is None:
        return False
    from alexnetc.backends.kernels import kernels_available

    return bool(kernels_available(device))


class FusedChain(nn.Module):
    """ReLU, then optionally LRN, then optionally MaxPool, as one op.

    `shares`: into how many tower shares the chain's input is split (the LRN window stays
    inside each); forward gets one share (or the whole input when it is not split), `whole`
    every share at once.
    """

    def __init__(self, kernel: str, lrn: LRNParams | None, pool: PoolParams | None,
                 use_kernel: bool, shares: int = 1):
        super().__init__()
        self.shares = shares
        self.kernel = kernel  # the fusion pass's name for the chain
        self.lrn = lrn  # paper convention
        self.pool = pool  # floor mode
        self.use_kernel = use_kernel and _KERNEL is not None

    def forward(self, x: Tensor, tower: int = 0) -> Tensor:  # N x C x H x W, one tower's maps
        return self._run(x, 1)

    def whole(self, x: Tensor) -> Tensor:  # N x C x H x W: every tower's maps
        return self._run(x, self.shares)

    def _run(self, x: Tensor, towers: int) -> Tensor:
        if self.use_kernel and x.is_cuda and x.dim() == 4 and _KERNEL is not None:
            return _KERNEL(x, self.lrn, self.pool, towers=towers)  # falls back itself
        return reference_relu_lrn_pool(x, self.lrn, self.pool, towers)  # N x C x H' x W'

    def extra_repr(self) -> str:
        return f"{self.kernel}, lrn={self.lrn}, pool={self.pool}, kernel={self.use_kernel}"
