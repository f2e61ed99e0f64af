"""The lowered network for training, evaluation and prediction, plus its first-layer kernels."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.recipe import Recipe


class DeviceError(ValueError):
    """A --devices value this machine cannot honour (message fit for the command line)."""


def build(net: CheckedNetwork, recipe: Recipe, devices: str | None, seed: int) -> nn.Module:
    """`build_module` with the paper's initialisation, seeded so a run is reproducible."""
    from alexnetc.backends.lowering import build_module, parse_devices

    try:
        placed = parse_devices(devices, net.towers)
    except ValueError as e:
        raise DeviceError(f"--devices: {e}") from None
    torch.manual_seed(seed)  # the global stream also drives dropout from here on
    return build_module(net, recipe, devices=placed, seed=seed, fused=None)


def input_device(model: nn.Module) -> torch.device:
    """Where batches go: the lowered module's first device."""
    devices: Any = getattr(model, "devices", None)
    if devices:
        return torch.device(devices[0])
    return next(model.parameters()).device


def first_layer_kernels(model: nn.Module, net: CheckedNetwork) -> Tensor:
    """conv1's weights, all towers together: K x C x k x k on the CPU.

    Found by shape rather than by module name, so it works whichever way the lowering
    splits a layer over towers: the first 4-D parameters reading the input's channels.
    """
    first = next((layer for layer in net.layers() if layer.name == "Conv"), None)
    if first is None:
        raise ValueError(f"{net.name} has no convolution to draw")
    size = int(first.args["size"])
    want = first.shape.c
    parts: list[Tensor] = []
    for p in model.parameters():
        if p.dim() == 4 and p.shape[1] == net.input.c and tuple(p.shape[2:]) == (size, size):
            parts.append(p.detach().float().cpu())
            if sum(t.shape[0] for t in parts) >= want:
                break
    if not parts:
        raise ValueError("could not find the first convolution's weights in the model")
    return torch.cat(parts)[:want]  # K x C x k x k
