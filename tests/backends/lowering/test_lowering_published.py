"""Published networks against independently written PyTorch: VGG-16-BN (torchvision's vgg16_bn)
and Network in Network.

Each reference below is a plain `nn.Sequential` of stock torch modules, written here from the
papers and torchvision's code, not from the spec. The reference's own (randomised) weights and
BatchNorm statistics are loaded into the module alexnetc builds from the spec, by position with
shape and tensor-name checks, and both run the same batch: in eval mode (running statistics,
dropout off) and in train mode (batch statistics, the running statistics updated alike, dropout
masks drawn from the same seed).  VGG-16-BN's parameter count is also worked out here in closed
form.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from alexnetc.backends.lowering import build_module
from alexnetc.backends.lowering.layers import Dropout
from alexnetc.backends.lowering.weights import canonical_state_dict
from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.pipeline import check

from helpers import SPECS
from reference_nets import load_reference, randomise

VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


pytestmark = pytest.mark.torch_threads(2)


def vgg16_bn_params(classes: int = 1000) -> int:
    """torchvision's vgg16_bn, counted by hand: 3x3 convs with biases, BatchNorm's scale and
    shift per channel, then 7·7·512 → 4096 → 4096 → classes."""
    total, c_in = 0, 3
    for v in VGG16:
        if v == "M":
            continue
        assert isinstance(v, int)
        total += (3 * 3 * c_in + 1) * v + 2 * v
        c_in = v
    for n_in, n_out in ((7 * 7 * 512, 4096), (4096, 4096), (4096, classes)):
        total += (n_in + 1) * n_out
    return total


def vgg16_bn_reference() -> nn.Sequential:
    """torchvision.models.vgg16_bn's layers, written out (torchvision is not a dependency)."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            assert isinstance(v, int)
            layers += [nn.Conv2d(c_in, v, kernel_size=3, padding=1), nn.BatchNorm2d(v),
                       nn.ReLU(inplace=True)]
            c_in = v
    return nn.Sequential(
        *layers, nn.AdaptiveAvgPool2d((7, 7)), nn.Flatten(),
        nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(0.5),
        nn.Linear(4096, 1000))


def nin_reference() -> nn.Sequential:
    """The Caffe model zoo's NIN for ImageNet (Lin et al.): mlpconv blocks, ceil-mode pools,
    dropout after the third block, global average pooling of 1000 maps into the logits."""
    def mlpconv(c_in: int, c: int, size: int, stride: int, pad: int,
                c_last: int | None = None) -> list[nn.Module]:
        return [nn.Conv2d(c_in, c, size, stride, pad), nn.ReLU(),
                nn.Conv2d(c, c, 1), nn.ReLU(),
                nn.Conv2d(c, c_last or c, 1), nn.ReLU()]

    def pool() -> nn.Module:
        return nn.MaxPool2d(3, 2, ceil_mode=True)

    return nn.Sequential(
        *mlpconv(3, 96, 11, 4, 0), pool(),
        *mlpconv(96, 256, 5, 1, 2), pool(),
        *mlpconv(256, 384, 3, 1, 1), pool(), nn.Dropout(0.5),
        *mlpconv(384, 1024, 3, 1, 1, c_last=1000),
        nn.AdaptiveAvgPool2d(1), nn.Flatten())


def vgg_text(side: int) -> str:
    """specs/vgg16-bn.net at another input side (a multiple of 32), every stage's `->`
    expectation rescaled with it; the adaptive pool still gives 7x7x512."""
    text = (SPECS / "vgg16-bn.net").read_text()
    assert "input 224x224x3\n" in text
    text = text.replace("input 224x224x3\n", f"input {side}x{side}x3\n")
    for before in (112, 56, 28, 14):
        after = before * side // 224
        text, n = re.subn(rf"-> {before}x{before}x", f"-> {after}x{after}x", text)
        assert n == 1, before
    return text


def checked(text: str) -> CheckedNetwork:
    r = check(text, "published.net")
    assert r.network is not None, [d.message for d in r.diagnostics]
    return r.network






def train_mode(model: nn.Module, ref: nn.Sequential, dropout: bool) -> None:
    model.train()
    ref.train()
    if not dropout:  # batch statistics, but no dropout
        for m in [*model.modules(), *ref.modules()]:
            if isinstance(m, (Dropout, nn.Dropout)):
                m.eval()


def assert_same(model: nn.Module, ref: nn.Sequential, x: torch.Tensor,
                dropout: bool = True) -> None:
    """Eval mode, then two train-mode steps (so the second uses once-updated statistics of
    both), then eval again with the running statistics those steps left.  `dropout`: in
    train mode both draw their masks after the same `torch.manual_seed` (False: the dropout
    layers stay in eval mode while the BatchNorms use batch statistics)."""
    model.eval()
    ref.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
        train_mode(model, ref, dropout)
        for step in range(2):
            torch.manual_seed(100 + step)
            y = model(x)
            torch.manual_seed(100 + step)
            torch.testing.assert_close(y, ref(x))
        # The dropout was live: the same seed draws the same masks, another seed others
        # (train-mode BatchNorm reads the batch, not the running statistics these calls
        # update, which are put back to stay in step with the reference's).
        saved = {k: v.clone() for k, v in model.state_dict().items()}
        torch.manual_seed(101)
        assert torch.equal(model(x), y)
        torch.manual_seed(999)
        assert torch.allclose(model(x), y) != dropout
        model.load_state_dict(saved)
        model.eval()
        ref.eval()
        torch.testing.assert_close(model(x), ref(x))
    # Identical running statistics and batch counters after the same train-mode calls.
    after = canonical_state_dict(model)
    for (name, mine), (_, tensor) in zip(after.items(), ref.state_dict().items(), strict=True):
        torch.testing.assert_close(mine, tensor, msg=name)


def test_vgg16_bn_has_torchvisions_parameter_count() -> None:
    assert vgg16_bn_params() == 138_365_992  # torchvision's published figure
    net = checked((SPECS / "vgg16-bn.net").read_text())
    assert net.input.h == net.input.w == 224
    assert sum(layer.counts.params for layer in net.layers()) == vgg16_bn_params()
    assert sum(p.numel() for p in vgg16_bn_reference().parameters()) == vgg16_bn_params()
    # 224 → 112 → 56 → 28 → 14 → 7, as the spec's expectations say, at every input side.
    shapes = {name: layers[-1].shape.dims() for name, layers in net.stages()}
    assert shapes == {"conv1": (112, 112, 64), "conv2": (56, 56, 128),
                      "conv3": (28, 28, 256), "conv4": (14, 14, 512), "conv5": (7, 7, 512),
                      "fc6": (4096,), "fc7": (4096,), "fc8": (1000,)}
    for side in (32, 64, 256):
        small = checked(vgg_text(side))
        assert sum(layer.counts.params for layer in small.layers()) == vgg16_bn_params()


@pytest.mark.parametrize("towers", [1, 2])
def test_vgg16_bn_equals_a_plain_pytorch_vgg16_bn(towers: int) -> None:
    """At 64 pixels (conv5 ends at 2x2, which the adaptive pool spreads over 7x7), so that
    it runs in the default suite: the classifier is the full 25088 → 4096 → 4096 → 1000
    one.  With two towers each layer's maps are split over two CPU "devices", each tower's
    BatchNorm normalising its own channels."""
    text = vgg_text(64)
    if towers == 2:
        text = text.replace("input 64x64x3\n", "input 64x64x3\ntowers 2\n")
    net = checked(text)
    model = build_module(net, devices=["cpu"] * towers, seed=0, merge=False)
    ref = vgg16_bn_reference()
    randomise(ref, seed=1)
    load_reference(model, ref)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    # Two towers draw a dropout mask each, for their half of the maps: other random
    # numbers than one whole-layer mask, so the seeded comparison is the one-tower one's.
    assert_same(model, ref, x, dropout=towers == 1)


@pytest.mark.slow
def test_vgg16_bn_equals_a_plain_pytorch_vgg16_bn_at_224() -> None:
    net = checked((SPECS / "vgg16-bn.net").read_text())
    model = build_module(net, devices=["cpu"], seed=0)
    ref = vgg16_bn_reference()
    randomise(ref, seed=1)
    load_reference(model, ref)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    assert_same(model, ref, x)


def test_nin_equals_a_plain_pytorch_nin() -> None:
    net = checked((SPECS / "nin.net").read_text())
    assert [layers[-1].shape.dims() for _, layers in net.stages()] == [
        (27, 27, 96), (13, 13, 256), (6, 6, 384), (1, 1, 1000)]
    model = build_module(net, devices=["cpu"], seed=0)
    ref = nin_reference()
    randomise(ref, seed=3)
    load_reference(model, ref)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(4))
    assert model(x).shape == (2, 1000)
    assert_same(model, ref, x)
