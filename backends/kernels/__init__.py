"""Fused ReLU → LRN → MaxPool (AlexNet conv1/conv2 blocks) with a pure-PyTorch fallback.

``fused_relu_lrn_pool`` runs the Triton custom op ``alexnetc::relu_lrn_pool`` (one kernel reads
the conv output once and writes the pooled result once; its backward is one gather kernel)
when ``kernels_available`` says so and the parameters are supported, else the reference.
Inputs: NCHW, any strides (contiguous and channels_last are read natively, no copy; the
output keeps channels_last), fp32/bf16/fp16 on the kernel path (fp32 accumulation, output in
the input dtype); anything else goes to the reference.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from . import choose, lrn_pool
from .params import LRNParams, PoolParams, to_scalars
from .reference import check_towers, reference_relu_lrn_pool

__all__ = [
    "LRNParams",
    "PoolParams",
    "choose",
    "fused_relu_lrn_pool",
    "kernels_available",
    "reference_relu_lrn_pool",
]

_KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _ops_registered() -> bool:
    from . import library

    return library.REGISTERED


def kernels_available(device: torch.device | str) -> bool:
    """True when the Triton op can run on ``device``: CUDA with triton importable, or CPU when
    the Triton interpreter is on (TRITON_INTERPRET=1 before triton was imported; tests)."""
    dev = torch.device(device)
    if not lrn_pool.HAVE_TRITON or not _ops_registered():
        return False
    if dev.type == "cuda":
        return torch.cuda.is_available()
    return dev.type == "cpu" and lrn_pool.INTERPRET and os.environ.get("TRITON_INTERPRET") == "1"


def _kernel_supports(x: Tensor, lrn: LRNParams | None, pool: PoolParams | None) -> bool:
    return (
        x.dim() == 4
        and x.dtype in _KERNEL_DTYPES
        and (lrn is None or lrn.size <= lrn_pool.MAX_LRN_SIZE)
        and (pool is None or pool.size <= 2 * pool.stride)  # ≤ 2 covering windows per axis
    )


def fused_relu_lrn_pool(
    x: Tensor, lrn: LRNParams | None, pool: PoolParams | None, towers: int = 1
) -> Tensor:
    """relu(x) → LRN (paper convention, window clipped to each of ``towers`` channel groups)
    → max_pool2d, as one Triton kernel when available (see module docstring), else the
    reference.  Differentiable either way."""
    if lrn is not None:
        check_towers(x.shape[1], towers)
    else:
        towers = 1  # towers only matter for the cross-channel LRN
    if not (kernels_available(x.device) and _kernel_supports(x, lrn, pool)):
        return reference_relu_lrn_pool(x, lrn, pool, towers)
    save_idx = pool is not None and torch.is_grad_enabled() and x.requires_grad
    y, _ = torch.ops.alexnetc.relu_lrn_pool(x, *to_scalars(lrn, pool), towers, save_idx)
    return y
