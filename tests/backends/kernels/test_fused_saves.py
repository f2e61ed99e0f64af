"""What the fused kernel keeps for backward is what the memory plan says it keeps: its input
and, for a chain that pools, a one-byte argmax per output (CPU interpreter, and CUDA)."""

from __future__ import annotations

import pytest
import torch

from alexnetc.backends.kernels import LRNParams, PoolParams, fused_relu_lrn_pool
from alexnetc.compiler.memory.plan import plan
from alexnetc.compiler.memory.walk import Target
from alexnetc.compiler.pipeline import check

CHAINS = {
    "relu_lrn_pool": ("ReLU; ResNorm(5); MaxPool(3,2)", LRNParams(5, 1e-4, 0.75, 2.0),
                      PoolParams(3, 2, 0)),
    "relu_pool": ("ReLU; MaxPool(3,2)", None, PoolParams(3, 2, 0)),
    "relu_lrn": ("ReLU; ResNorm(5)", LRNParams(5, 1e-4, 0.75, 2.0), None),
}


@pytest.mark.parametrize("kernel", list(CHAINS))
def test_the_kernel_keeps_what_the_plan_says(kernel: str, device: str) -> None:
    ops, lrn, pool = CHAINS[kernel]
    net = check(f"input 9x9x8\nc: Conv(1,1) x8 + {ops}\n").network
    assert net is not None
    head = next(layer for layer in net.layers() if layer.fusion is not None)
    assert head.fusion is not None and head.fusion.kernel == kernel
    planned = plan(net, Target(2, device="cuda", kernels=True)).kept(head.id).at(2)

    x = torch.randn(2, 8, 9, 9, device=device, requires_grad=True)  # N x C x H x W
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fused_relu_lrn_pool(x, lrn, pool)
    assert sum(kept.values()) == planned


def test_the_fusion_pass_leaves_out_what_the_kernel_declines() -> None:
    """A chain outside the kernel's limits runs as the reference ops, so it is not marked
    fused: the report's kernels and the memory plan are what runs."""
    from alexnetc.backends.kernels import lrn_pool
    from alexnetc.compiler.registry import FUSED_MAX_LRN

    assert FUSED_MAX_LRN == lrn_pool.MAX_LRN_SIZE
    for ops in (f"Conv(1,1) x16 + ReLU; ResNorm({FUSED_MAX_LRN + 2})",
                "Conv(1,1) x16 + ReLU; MaxPool(5,2)", "FC(16) + ReLU; ResNorm(3)"):
        net = check(f"input 9x9x16\nc: {ops}\n").network
        assert net is not None
        assert all(layer.fusion is None for layer in net.layers()), ops
    net = check(f"input 9x9x16\nc: Conv(1,1) x16 + ReLU; ResNorm({FUSED_MAX_LRN})\n").network
    assert net is not None and any(layer.fusion for layer in net.layers())
