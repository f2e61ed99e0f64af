"""The checker's receptive fields against the lowered module, for every spec in specs/.

For one output position of a stage, the input pixels it depends on are found by putting a
NaN in one pixel (every channel) and seeing whether the position turns NaN: unlike a
gradient, which a max pool passes to its window's maximum alone, a NaN reaches every output
whose window holds it. One row and one column through the field's centre are probed (a field
is a rectangle; a dilated one has holes, so its extent is compared), in float64, eval mode
(dropout off). The computed field may run past the image, so its clipped extent is compared.
Specs larger than 67x67 are checked at the smallest input size from 16 up at which they check
(without their stages' `-> HxWxC`, which hold at the full size).

A field is the span of the windows; pixels a window never covers (the edge a floored window
drops, `remainder=drop`) cannot reach any output, so the measured extent is also clipped to the
pixels every layer up to the target still reads. An AdaptiveAvgPool that enlarges its input
(torchvision's AlexNet at a small input) has no uniform stride: its stage is not measured.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from alexnetc.backends.lowering import build_module
from alexnetc.compiler.graph import CheckedNetwork, Layer

from helpers import SPECS, small_net

MAX_SIDE = 67  # the digits AlexNet (alexnet-small.net) at its own size
STAGES_PER_SPEC = 4


NETS = {p.stem: net for p in sorted(SPECS.glob("*.net"))
        if (net := small_net(p, MAX_SIDE)) is not None}


def _enlarges(layer: Layer) -> bool:
    return not layer.shape.flat and (layer.shape.h > layer.in_shape.h
                                     or layer.shape.w > layer.in_shape.w)


def _targets(net: CheckedNetwork) -> list[Layer]:
    """The last layer of a few stages with maps, spread over the network, up to the first
    layer that enlarges its maps."""
    last = []
    for _, layers in net.stages():
        if any(_enlarges(layer) for layer in layers):
            break
        if not layers[-1].shape.flat:
            last.append(layers[-1])
    step = max(1, math.ceil(len(last) / STAGES_PER_SPEC))
    return [*last[::step][:STAGES_PER_SPEC - 1], last[-1]] if last else []


def _clipped(end: int, size: int, centre: float) -> tuple[int, int]:
    """The field's pixels within [0, end]."""
    return max(0, math.ceil(centre - (size - 1) / 2)), min(end,
                                                          math.floor(centre + (size - 1) / 2))


def _read_up_to(net: CheckedNetwork, target: Layer) -> tuple[int, int]:
    """The last row and column that every layer up to `target` reads (its last window's end):
    a floored window drops the pixels past it, for every later layer too."""
    end_h, end_w = net.input.h - 1, net.input.w - 1
    for layer in net.layers():
        f, s = layer.field, layer.shape
        if not s.flat:
            end_h = min(end_h, math.floor(f.offset_h + (s.h - 1) * f.stride_h + (f.h - 1) / 2))
            end_w = min(end_w, math.floor(f.offset_w + (s.w - 1) * f.stride_w + (f.w - 1) / 2))
        if layer.id == target.id:
            break
    return end_h, end_w


def _nan_rows(outputs: Any, i: int, j: int) -> Tensor:
    """Which images of the batch turned position (i, j) NaN, in any channel or tower."""
    parts = outputs if isinstance(outputs, list | tuple) else [outputs]
    return torch.stack([p[:, :, i, j].isnan().any(1) for p in parts]).any(0)


def test_specs_found() -> None:
    assert {"alexnet-small", "googlenet", "resnet18", "digits-inception"} <= set(NETS)


@pytest.mark.parametrize("name", sorted(NETS))
def test_fields_match_the_lowered_module(name: str) -> None:
    net = NETS[name]
    model = build_module(net, merge=False, fused=False).double().eval()
    captured: dict[str, Any] = {}
    targets = _targets(net)
    for layer in targets:
        model.get_submodule(layer.stage).register_forward_hook(
            lambda _m, _i, out, s=layer.stage: captured.__setitem__(s, out))
    H, W, C = net.input.h, net.input.w, net.input.c
    for layer in targets:
        f, oh, ow = layer.field, layer.shape.h, layer.shape.w
        i, j = oh // 2, ow // 2
        end_h, end_w = _read_up_to(net, layer)
        rows = _clipped(end_h, f.h, f.offset_h + i * f.stride_h)
        cols = _clipped(end_w, f.w, f.offset_w + j * f.stride_w)
        y0, x0 = (rows[0] + rows[1]) // 2, (cols[0] + cols[1]) // 2
        x = torch.randn(H + W, C, H, W, dtype=torch.float64, generator=torch.Generator()
                        .manual_seed(0))
        for k in range(W):  # the row through the centre, one pixel per image
            x[k, :, y0, k] = math.nan
        for k in range(H):  # then the column
            x[W + k, :, k, x0] = math.nan
        with torch.no_grad():
            model(x)
        hit = _nan_rows(captured[layer.stage], i, j)
        across = hit[:W].nonzero().flatten().tolist()
        down = hit[W:].nonzero().flatten().tolist()
        assert (down[0], down[-1]) == rows, (name, layer.id, "height", f)
        assert (across[0], across[-1]) == cols, (name, layer.id, "width", f)
