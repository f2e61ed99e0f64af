"""The published branching networks stage by stage: each top-level stage of specs/resnet18.net,
resnet34.net and googlenet.net gives the shape that a plain PyTorch version of torchvision's
network (tests/reference_nets.py, run on an image) gives at the same point."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.pipeline import check_file

import reference_nets
from helpers import SPECS

# the reference's stage → the spec's top-level stage ending at the same point
RESNET = {"maxpool": "conv1", "layer1": "layer1", "layer2": "layer2", "layer3": "layer3",
          "layer4": "layer4", "fc": "fc"}
GOOGLENET = {"maxpool1": "conv1", "conv2": "conv2", "maxpool2": "conv3", "maxpool3": "pool3",
             "maxpool4": "pool4", "fc": "fc",
             **{f"inception{k}": f"inception{k}" for k in
                ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")}}


def _outputs(net: CheckedNetwork) -> dict[str, tuple[int, ...]]:
    """Each top-level stage's output shape (C, H, W), a block stage's being its last inner
    stage's."""
    out: dict[str, tuple[int, ...]] = {}
    for name, layers in net.stages():
        s = layers[-1].shape
        out[name.split(".")[0]] = (s.c,) if s.flat else (s.c, s.h, s.w)
    return out


@pytest.mark.parametrize(("spec", "factory", "names"), [
    ("resnet18", reference_nets.resnet18, RESNET),
    ("resnet34", reference_nets.resnet34, RESNET),
    ("googlenet", reference_nets.googlenet, GOOGLENET),
])
def test_every_stage_has_the_published_shape(spec: str, factory: Callable[[], nn.Module],
                                             names: dict[str, str]) -> None:
    result = check_file(SPECS / f"{spec}.net")
    assert result.network is not None
    ours = _outputs(result.network)
    model = factory().eval()
    with torch.no_grad():
        theirs = model.stage_outputs(torch.zeros(1, 3, 224, 224))  # type: ignore[operator]
    shapes = {names[k]: tuple(v.shape[1:]) for k, v in theirs.items() if k in names}
    assert set(shapes) == set(names.values())
    assert {k: ours[k] for k in shapes} == shapes
    assert sum(p.numel() for p in model.parameters()) == result.network.total().params
