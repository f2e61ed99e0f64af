"""Whole-layer tensors: each layer's tower shards joined, as the checker counts them.

The module stores one shard per tower (so any device map has the same state_dict); users who
want a layer's tensors whole (to draw conv1's kernels, to compare with a hand-written network,
to export, to load weights from elsewhere) read and write them here. Each layer module says
how its shards join (`Sharded.whole_tensors`), for every parameter and buffer it holds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from alexnetc.backends.lowering.layers import Sharded


def whole_layers(model: nn.Module) -> dict[str, Sharded]:
    """Every layer with parameters or buffers, by module path (e.g. "conv1.conv"), in network
    order. Raises TypeError should any tensor of the model sit outside such a layer (export
    would lose it)."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, Sharded)}
    covered = {f"{name}.{key}" for name, layer in layers.items()
               for key in layer.state_dict()}
    stray = sorted(set(model.state_dict()) - covered)
    if stray:
        raise TypeError(f"{', '.join(stray)} belong to no Sharded layer, so whole-layer "
                        "tensors would leave them out: build the op's module from Sharded "
                        "shards (alexnetc.backends.lowering.layers)")
    return layers


def canonical_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """{"conv1.conv.weight": 96 x 3 x 11 x 11, "conv1.conv.bias": 96, ...} on the CPU: every
    parameter and buffer of each layer, its towers' shards joined."""
    out: dict[str, Tensor] = {}
    with torch.no_grad():
        for name, layer in whole_layers(model).items():
            for key, tensor in layer.whole_tensors(device="cpu").items():
                out[f"{name}.{key}"] = tensor.detach()  # C x ... (all towers' output channels)
    return out


def load_canonical_state_dict(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Split whole-layer tensors back into the tower shards (shapes must match exactly)."""
    layers = whole_layers(model)
    names = {name: layer.tensor_names() for name, layer in layers.items()}
    expected = {f"{n}.{k}" for n, keys in names.items() for k in keys}
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"whole-layer weights do not match the network: missing {missing}, "
                         f"unexpected {extra}")
    for name, layer in layers.items():
        layer.load_whole_tensors({k: state[f"{name}.{k}"] for k in names[name]}, f"{name}.")
