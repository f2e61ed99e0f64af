"""What autograd keeps for the backward pass of a module, measured, to hold the checker's
memory plan (compiler/memory) to: each storage once, however many views of it are kept."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn


def kept_for_backward(model: nn.Module, x: Tensor, amp: bool = False) -> int:
    """Bytes of the storages autograd keeps for backward in one forward of `model` on `x`
    (under bf16 autocast with `amp`), besides the model's parameters and buffers: those are
    the weights' own memory, which the plan counts apart."""
    own = {t.untyped_storage().data_ptr() for t in (*model.parameters(), *model.buffers())}
    kept: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in own:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    cast = (torch.autocast(x.device.type, dtype=torch.bfloat16) if amp
            else contextlib.nullcontext())
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), cast:
        model(x)
    return sum(kept.values())
