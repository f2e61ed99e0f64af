"""The hand-written reference networks must match torchvision's published models, or every test
that uses them as ground truth checks against the wrong thing. Checked: parameter counts, the
per-stage shapes published for 224x224 inputs, and `state_dict` names and shapes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from reference_nets import GoogLeNet, ResNet, googlenet, resnet18, resnet34

FACTORIES: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18, "resnet34": resnet34, "googlenet": googlenet,
}

# torchvision's documented parameter counts (num_classes=1000; GoogLeNet without aux heads).
PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "googlenet": 6_624_904}

RESNET_SHAPES = {
    "maxpool": (64, 56, 56),
    "layer1": (64, 56, 56),
    "layer2": (128, 28, 28),
    "layer3": (256, 14, 14),
    "layer4": (512, 7, 7),
    "avgpool": (512, 1, 1),
    "fc": (1000,),
}

GOOGLENET_SHAPES = {
    "maxpool1": (64, 56, 56),
    "conv2": (64, 56, 56),
    "conv3": (192, 56, 56),
    "maxpool2": (192, 28, 28),
    "inception3a": (256, 28, 28),
    "inception3b": (480, 28, 28),
    "maxpool3": (480, 14, 14),
    "inception4a": (512, 14, 14),
    "inception4b": (512, 14, 14),
    "inception4c": (512, 14, 14),
    "inception4d": (528, 14, 14),
    "inception4e": (832, 14, 14),
    "maxpool4": (832, 7, 7),
    "inception5a": (832, 7, 7),
    "inception5b": (1024, 7, 7),
    "avgpool": (1024, 1, 1),
    "fc": (1000,),
}

SHAPES = {"resnet18": RESNET_SHAPES, "resnet34": RESNET_SHAPES, "googlenet": GOOGLENET_SHAPES}

# (key, shape) pairs as torchvision names them; num_batches_tracked is a 0-d buffer.
KEYS = {
    "resnet18": {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.running_mean": (64,),
        "layer1.0.conv1.weight": (64, 64, 3, 3),
        "layer1.0.bn1.weight": (64,),
        "layer1.1.conv2.weight": (64, 64, 3, 3),
        "layer1.1.bn2.num_batches_tracked": (),
        "layer2.0.conv1.weight": (128, 64, 3, 3),
        "layer2.0.downsample.0.weight": (128, 64, 1, 1),
        "layer2.0.downsample.1.running_var": (128,),
        "layer4.1.bn2.bias": (512,),
        "fc.weight": (1000, 512),
        "fc.bias": (1000,),
    },
    "resnet34": {
        "layer1.2.conv2.weight": (64, 64, 3, 3),
        "layer2.3.bn2.running_mean": (128,),
        "layer3.5.conv1.weight": (256, 256, 3, 3),
        "layer3.0.downsample.0.weight": (256, 128, 1, 1),
        "layer4.2.bn2.weight": (512,),
        "fc.weight": (1000, 512),
    },
    "googlenet": {
        "conv1.conv.weight": (64, 3, 7, 7),
        "conv1.bn.running_var": (64,),
        "conv2.conv.weight": (64, 64, 1, 1),
        "conv3.conv.weight": (192, 64, 3, 3),
        "inception3a.branch1.conv.weight": (64, 192, 1, 1),
        "inception3a.branch2.0.conv.weight": (96, 192, 1, 1),
        "inception3a.branch2.1.conv.weight": (128, 96, 3, 3),
        # torchvision's 3x3 where the paper has 5x5 in branch 3.
        "inception3a.branch3.1.conv.weight": (32, 16, 3, 3),
        "inception3a.branch4.1.conv.weight": (32, 192, 1, 1),
        "inception4a.branch2.1.bn.weight": (208,),
        "inception5b.branch4.1.bn.num_batches_tracked": (),
        "fc.weight": (1000, 1024),
        "fc.bias": (1000,),
    },
}

# Every entry of torchvision's state_dict: weights, BN affine + running stats + counter, fc.
KEY_COUNTS = {"resnet18": 122, "resnet34": 218, "googlenet": 344}


@pytest.fixture(scope="module")
def nets() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: make().eval() for name, make in FACTORIES.items()}


@pytest.mark.parametrize("name", list(FACTORIES))
def test_parameter_count(nets: dict[str, nn.Module], name: str) -> None:
    assert sum(p.numel() for p in nets[name].parameters()) == PARAMS[name]


@pytest.mark.parametrize("name", list(FACTORIES))
def test_state_dict_names_and_shapes(nets: dict[str, nn.Module], name: str) -> None:
    state = nets[name].state_dict()
    for key, shape in KEYS[name].items():
        assert key in state, key
        assert tuple(state[key].shape) == shape, key
    assert len(state) == KEY_COUNTS[name]
    # No biases on convolutions (the BN after each supplies the shift), no aux heads.
    assert all(m.bias is None for m in nets[name].modules() if isinstance(m, nn.Conv2d))
    assert not [k for k in state if k.startswith("aux")]


@pytest.mark.parametrize("name", list(FACTORIES))
def test_stage_shapes_on_224(nets: dict[str, nn.Module], name: str) -> None:
    net = nets[name]
    assert isinstance(net, ResNet | GoogLeNet)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        stages = net.stage_outputs(x)
        logits = net(x)
    assert list(stages) == list(SHAPES[name])  # in forward order
    assert {k: tuple(v.shape[1:]) for k, v in stages.items()} == SHAPES[name]
    # The last stage is what forward returns, so stage-by-stage comparisons end at the logits.
    torch.testing.assert_close(stages["fc"], logits)


def test_googlenet_batchnorm_eps_and_ceil_pooling(nets: dict[str, nn.Module]) -> None:
    net = nets["googlenet"]
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 57 and all(m.eps == 0.001 for m in bns)
    pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 4 + 9 and all(m.ceil_mode for m in pools)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_num_classes(name: str) -> None:
    net = FACTORIES[name](num_classes=10).eval()
    assert isinstance(net, ResNet | GoogLeNet)
    assert net.fc.out_features == 10
    with torch.no_grad():
        assert net(torch.randn(2, 3, 64, 64)).shape == (2, 10)
