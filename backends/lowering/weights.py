"""Whole-layer weights: each conv/FC layer's tower shards joined, as the checker counts them.

The module stores one shard per tower (so any device map has the same state_dict); users who
want a layer's weights as one tensor (to draw conv1's kernels, to compare with a hand-written
network, to load weights from elsewhere) read and write them here.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from alexnetc.backends.lowering.layers import Sharded


def whole_layers(model: nn.Module) -> dict[str, Sharded]:
    """Every layer with weights, by module path (e.g. "conv1.conv"), in network order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, Sharded)}


def canonical_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """{"conv1.conv.weight": 96 x 3 x 11 x 11, "conv1.conv.bias": 96, ...} on the CPU."""
    out: dict[str, Tensor] = {}
    for name, layer in whole_layers(model).items():
        for kind in ("weight", "bias"):
            parts = [dict(s.named_parameters())[kind].detach().cpu() for s in layer.towers]
            out[f"{name}.{kind}"] = torch.cat(parts)  # C x ... (all towers' output channels)
    return out


def load_canonical_state_dict(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Split whole-layer tensors back into the tower shards (shapes must match exactly)."""
    layers = whole_layers(model)
    expected = {f"{n}.{k}" for n in layers for k in ("weight", "bias")}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"whole-layer weights do not match the network: missing {missing}, "
                         f"unexpected {extra}")
    with torch.no_grad():
        for name, layer in layers.items():
            for kind in ("weight", "bias"):
                shards = [dict(s.named_parameters())[kind] for s in layer.towers]
                whole = state[f"{name}.{kind}"]
                if whole.shape[0] != sum(p.shape[0] for p in shards) or \
                        whole.shape[1:] != shards[0].shape[1:]:
                    raise ValueError(f"{name}.{kind}: shape {tuple(whole.shape)} does not fit "
                                     f"{len(shards)} shards of {tuple(shards[0].shape)}")
                for p, part in zip(shards, whole.split([q.shape[0] for q in shards]),
                                   strict=True):
                    p.copy_(part)
