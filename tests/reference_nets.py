"""Hand-written ResNet-18/34 and GoogLeNet, built as torchvision builds them.

torchvision cannot be installed here, yet tests need an independent, published definition of
these networks to check the compiler's output against: same layers, same shapes, same
parameter counts and the same `state_dict` keys (so torchvision checkpoints load unchanged).
Each model also has `stage_outputs(x)`, the output of each top-level stage in order, so a test
can compare shapes (or values) stage by stage instead of only at the logits.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["BasicBlock", "GoogLeNet", "Inception", "ResNet", "googlenet", "load_reference",
           "randomise", "resnet18", "resnet34"]


# --------------------------------------------------------------------------------------------
# ResNet (torchvision.models.resnet, BasicBlock variants only)
# --------------------------------------------------------------------------------------------


def _conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions and a shortcut. As in torchvision, the stride sits in the first 3x3
    and the add comes before the last ReLU (post-activation), which the outputs depend on."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ResNet trunk, restricted to BasicBlock (ResNet-18/34)."""

    def __init__(self, layers: list[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * BasicBlock.expansion, num_classes)

        # torchvision's initialisation, so that freshly built models are statistically alike.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * BasicBlock.expansion, stride),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers.extend(BasicBlock(self.inplanes, planes) for _ in range(1, blocks))
        return nn.Sequential(*layers)

    def stage_outputs(self, x: Tensor) -> dict[str, Tensor]:
        """Outputs after the stem ("maxpool"), each of layer1..layer4, "avgpool" (N x 512 x 1 x 1)
        and "fc" (the logits, the same as `forward`)."""
        out: dict[str, Tensor] = {}
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out["maxpool"] = x
        for name in ("layer1", "layer2", "layer3", "layer4", "avgpool"):
            x = getattr(self, name)(x)
            out[name] = x
        out["fc"] = self.fc(torch.flatten(x, 1))
        return out

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(num_classes: int = 1000) -> ResNet:
    return ResNet([2, 2, 2, 2], num_classes=num_classes)


def resnet34(num_classes: int = 1000) -> ResNet:
    return ResNet([3, 4, 6, 3], num_classes=num_classes)


# --------------------------------------------------------------------------------------------
# GoogLeNet (torchvision.models.googlenet, aux_logits=False, transform_input=False)
# --------------------------------------------------------------------------------------------


class BasicConv2d(nn.Module):
    """Conv (no bias: the BN's shift replaces it) + BN(eps=1e-3) + ReLU; eps=1e-3 matches the
    TF-ported weights torchvision ships, and changes outputs if left at PyTorch's 1e-5."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                              padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(x)))


class Inception(nn.Module):
    """torchvision's Inception block. Branch 3 uses a 3x3 convolution where the paper has a
    5x5: a known torchvision quirk, kept because its pretrained weights are shaped for it."""

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int,
                 ch5x5red: int, ch5x5: int, pool_proj: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1),
            BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1),
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1),
            BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1),
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
            BasicConv2d(in_channels, pool_proj, kernel_size=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        branches = (self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x))
        return torch.cat(branches, 1)


# Top-level stages in forward order, up to the pooled features (dropout and fc follow).
_GOOGLENET_STAGES = (
    "conv1", "maxpool1", "conv2", "conv3", "maxpool2",
    "inception3a", "inception3b", "maxpool3",
    "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
    "inception5a", "inception5b", "avgpool",
)


class GoogLeNet(nn.Module):
    """torchvision's GoogLeNet without the auxiliary classifiers (as its pretrained model is
    used for inference) and without `transform_input` (inputs are normalised by the caller)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
        self.conv2 = BasicConv2d(64, 64, kernel_size=1)
        self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)

        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)

        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(1024, num_classes)

        # torchvision's initialisation (init_weights=True for a model built from scratch).
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.trunc_normal_(m.weight, mean=0.0, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def stage_outputs(self, x: Tensor) -> dict[str, Tensor]:
        """Outputs of "maxpool1", "conv2", "conv3", "maxpool2", inception3a..inception5b with
        maxpool3/maxpool4 between, "avgpool" (N x 1024 x 1 x 1) and "fc" (the logits, the same
        as `forward`). conv1 is left out, as the stem's first reported stage is its pool."""
        out: dict[str, Tensor] = {}
        for name in _GOOGLENET_STAGES:
            x = getattr(self, name)(x)
            if name != "conv1":
                out[name] = x
        out["fc"] = self.fc(self.dropout(torch.flatten(x, 1)))
        return out

    def forward(self, x: Tensor) -> Tensor:
        for name in _GOOGLENET_STAGES:
            x = getattr(self, name)(x)
        return self.fc(self.dropout(torch.flatten(x, 1)))


def googlenet(num_classes: int = 1000) -> GoogLeNet:
    return GoogLeNet(num_classes=num_classes)


# --------------------------------------------------------------------------------------------
# Weights shared with an alexnetc module
# --------------------------------------------------------------------------------------------


def randomise(ref: nn.Module, seed: int) -> None:
    """He-scaled weights, and BatchNorm scales, shifts and running statistics far from their
    1/0 initial values, so that eval mode tests them (and activations stay O(1) through deep
    stacks)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in ref.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.normal_(0.0, (2.0 / m.weight[0].numel()) ** 0.5, generator=g)
                if m.bias is not None:
                    m.bias.uniform_(-0.1, 0.1, generator=g)
            elif isinstance(m, nn.BatchNorm2d):
                assert m.running_mean is not None and m.running_var is not None
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
                m.running_mean.uniform_(-0.5, 0.5, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)


def load_reference(model: nn.Module, ref: nn.Module) -> dict[str, str]:
    """The reference's tensors into an alexnetc module, in network order, each pair agreeing
    in its tensor name (weight, running_mean, ...) and shape; returns our name → the
    reference's."""
    from alexnetc.backends.lowering.weights import (
        canonical_state_dict,
        load_canonical_state_dict,
    )

    ours = list(canonical_state_dict(model).items())
    theirs = list(ref.state_dict().items())
    assert len(ours) == len(theirs)
    state, names = {}, {}
    for (name, mine), (ref_name, tensor) in zip(ours, theirs, strict=True):
        assert name.rsplit(".", 1)[1] == ref_name.rsplit(".", 1)[1], (name, ref_name)
        assert mine.shape == tensor.shape, (name, ref_name)
        state[name], names[name] = tensor.clone(), ref_name
    load_canonical_state_dict(model, state)
    for name, mine in canonical_state_dict(model).items():
        assert torch.equal(mine, ref.state_dict()[names[name]]), name
    return names
