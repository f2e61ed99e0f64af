"""Parameter records for the fused ReLU → LRN → MaxPool chain (shared by reference and kernels)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LRNParams:
    """Local response normalisation in the AlexNet paper's convention.

    b_c = a_c / (k + alpha * sum_{c' in window(c)} a_{c'}^2) ** beta, where the window holds the
    ``size`` channels centred on c, clipped to c's tower.  Note ``alpha`` is NOT divided by
    ``size`` (torch.nn.LocalResponseNorm divides it; see ``reference.py`` for the mapping).
    """

    size: int
    alpha: float
    beta: float
    k: float

    def __post_init__(self) -> None:
        if self.size < 1 or self.size % 2 == 0:
            raise ValueError(f"LRN size must be a positive odd integer, got {self.size}")


@dataclass(frozen=True)
class PoolParams:
    """Max pooling (floor mode, -inf padding as in F.max_pool2d)."""

    size: int
    stride: int
    pad: int = 0

    def __post_init__(self) -> None:
        if self.size < 1 or self.stride < 1 or self.pad < 0:
            raise ValueError(f"bad pool parameters {self}")
        if 2 * self.pad > self.size:
            raise ValueError("pool padding must be at most half the pool size (as F.max_pool2d)")

    def out_size(self, n: int) -> int:
        """Output length along one spatial axis of input length ``n`` (floor mode)."""
        return (n + 2 * self.pad - self.size) // self.stride + 1


def to_scalars(lrn: LRNParams | None,
               pool: PoolParams | None) -> tuple[int, float, float, float, int, int, int]:
    """The records as the custom op's scalars (torch.library ops take no records): size 0
    stands for no LRN, pool size 0 for no pool."""
    return (lrn.size if lrn else 0, lrn.alpha if lrn else 0.0, lrn.beta if lrn else 0.0,
            lrn.k if lrn else 1.0, pool.size if pool else 0, pool.stride if pool else 1,
            pool.pad if pool else 0)


def from_scalars(lrn_size: int, alpha: float, beta: float, k: float, pool_size: int,
                 pool_stride: int, pool_pad: int) -> tuple[LRNParams | None, PoolParams | None]:
    """The records back from the custom op's scalars (see `to_scalars`)."""
    return (LRNParams(lrn_size, alpha, beta, k) if lrn_size > 0 else None,
            PoolParams(pool_size, pool_stride, pool_pad) if pool_size > 0 else None)
