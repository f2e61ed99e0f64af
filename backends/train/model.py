"""The lowered network for training, evaluation and prediction, plus its first-layer kernels."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.recipe import Recipe

if TYPE_CHECKING:
    from alexnetc.backends.lowering import AlexnetcModule


class DeviceError(ValueError):
    """A --devices value this machine cannot honour (message fit for the command line)."""


def build(net: CheckedNetwork, recipe: Recipe, devices: str | None, seed: int
          ) -> AlexnetcModule:
    """`build_module` with the paper's initialisation, seeded so a run is reproducible."""
    from alexnetc.backends.lowering import build_module, parse_devices

    try:
        placed = parse_devices(devices, net.towers)
    except ValueError as e:
        raise DeviceError(f"--devices: {e}") from None
    torch.manual_seed(seed)  # the global stream also drives dropout from here on
    return build_module(net, recipe, devices=placed, seed=seed, fused=None)


def memory_format(device: torch.device) -> torch.memory_format:
    """NHWC (channels_last) on a GPU, where cuDNN's tensor-core convolutions and the fused
    kernels run fastest on it (the configuration of the throughput benchmark); NCHW on the
    CPU."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def in_format(forward: Callable[[Tensor], Tensor], fmt: torch.memory_format
              ) -> Callable[[Tensor], Tensor]:
    """``forward`` fed batches in memory format ``fmt`` (the model's own)."""
    if fmt == torch.contiguous_format:
        return forward
    return lambda x: forward(x.contiguous(memory_format=fmt))  # N x C x H x W, NHWC strides


def input_device(model: nn.Module) -> torch.device:
    """Where batches go: the lowered module's first device."""
    devices: Any = getattr(model, "devices", None)
    if devices:
        return torch.device(devices[0])
    return next(model.parameters()).device


def first_layer_kernels(model: nn.Module, net: CheckedNetwork) -> Tensor | None:
    """The first convolution's weights, all towers together: K x C x k x k on the CPU; None for
    a network without convolutions (an MLP is a valid spec: there is just nothing to draw)."""
    from alexnetc.backends.lowering import canonical_state_dict

    weights = [w for key, w in canonical_state_dict(_unwrap(model)).items()
               if key.endswith(".weight") and w.dim() == 4]  # convolutions' kernels
    return weights[0].float() if weights else None  # K x C x k x k


def _unwrap(model: nn.Module) -> nn.Module:
    """The lowered module inside DDP / torch.compile wrappers."""
    for attr in ("module", "_orig_mod"):
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module):
            return _unwrap(inner)
    return model
