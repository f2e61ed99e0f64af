"""One torch lowering per registry op, keyed by the op's name (`LOWERINGS`).

Every lowered op is an `nn.Module` whose ``forward(x, tower)`` runs on ONE tower's tensor:
the stage module routes activations between towers (see `placement.py`) before calling it.
Conv and FC hold one parameter shard per tower (``towers.<t>.weight``, output channels
[t·C/T, (t+1)·C/T)), so the state_dict is the same for every device map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alexnetc.backends.lowering.fused import local_response_norm, towerwise
from alexnetc.compiler.graph import Layer
from alexnetc.compiler.recipe import Init


@dataclass
class Build:
    """What every lowering may read: the tower count, devices, init defaults and the RNG."""

    towers: int
    devices: list[torch.device]
    init: Init
    generator: torch.Generator
    last: str  # id of the network's last layer (a final Softmax is left to predict)

    def normal(self, shape: tuple[int, ...], std: float) -> Tensor:
        """Whole-layer N(0, std) weights drawn on the CPU, so no device map changes them."""
        return torch.empty(shape).normal_(0.0, std, generator=self.generator)

    def init_of(self, layer: Layer) -> tuple[float, float]:
        std = layer.args.get("std")
        bias = layer.args.get("bias")
        return (float(self.init.std if std is None else std),
                float(self.init.bias if bias is None else bias))


# --- layers with weights ----------------------------------------------------------------------

@dataclass(frozen=True)
class ConvCall:
    """One F.conv2d of a tower shard: its output rows, input channels and groups."""

    out_lo: int
    out_hi: int
    in_lo: int
    in_hi: int
    groups: int


class ConvShard(nn.Module):
    """One tower's output channels of a (grouped) convolution."""

    def __init__(self, weight: Tensor, bias: Tensor, stride: int, pad: int,
                 calls: list[ConvCall]):
        super().__init__()
        self.weight = nn.Parameter(weight)  # C/T x Cin/g x k x k
        self.bias = nn.Parameter(bias)  # C/T
        self.stride, self.pad, self.calls = stride, pad, calls

    def forward(self, x: Tensor) -> Tensor:  # N x Cin' x H x W
        outs = [F.conv2d(x[:, c.in_lo:c.in_hi], self.weight[c.out_lo:c.out_hi],
                         self.bias[c.out_lo:c.out_hi], self.stride, self.pad, 1, c.groups)
                for c in self.calls]  # [N x c x H' x W']
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)  # N x C/T x H' x W'


def conv_calls(c_in: int, c_out: int, groups: int, towers: int, t: int,
               own: bool) -> list[ConvCall]:
    """The conv2d calls computing tower t's outputs.

    `own` (groups % towers == 0): the tower reads only its channels, with groups/towers
    groups. Otherwise it reads every channel and its outputs may cut through groups, so
    it runs one call per (partial) group, merged into one call when it holds whole groups.
    """
    per = c_out // towers
    if own:
        return [ConvCall(0, per, 0, c_in // towers, groups // towers)]
    og, ig = c_out // groups, c_in // groups
    lo, hi = t * per, (t + 1) * per
    segs = [(max(j * og, lo), min((j + 1) * og, hi), j) for j in range(groups)
            if max(j * og, lo) < min((j + 1) * og, hi)]
    if all(b - a == og for a, b, _ in segs):
        first, last = segs[0][2], segs[-1][2]
        return [ConvCall(0, per, first * ig, (last + 1) * ig, len(segs))]
    return [ConvCall(a - lo, b - lo, j * ig, (j + 1) * ig, 1) for a, b, j in segs]


class Sharded(nn.Module):
    """A layer with weights: one shard per tower, each on its tower's device.

    `whole` runs the layer as one op when every tower shares a device: the shards
    concatenated along the output channels are exactly the spec's layer (a grouped conv keeps
    its groups), so one cuDNN/GEMM call replaces T smaller ones and the gathers vanish.
    """

    def __init__(self, shards: list[nn.Module], conv: tuple[int, int, int] | None = None):
        super().__init__()
        self.towers = nn.ModuleList(shards)
        self.conv = conv  # (stride, pad, groups) of the whole conv; None: an FC layer

    def forward(self, x: Tensor, tower: int) -> Tensor:
        return self.towers[tower](x)

    def whole(self, x: Tensor) -> Tensor:  # N x Cin x H x W (or N x Fin): every tower's input
        params = [dict(s.named_parameters()) for s in self.towers]
        weight = torch.cat([p["weight"] for p in params])  # C x Cin/g x k x k  (or F x Fin)
        bias = torch.cat([p["bias"] for p in params])  # C
        if self.conv is None:
            return F.linear(x.flatten(1), weight, bias)  # N x F
        stride, pad, groups = self.conv
        return F.conv2d(x, weight, bias, stride, pad, 1, groups)  # N x C x H' x W'


def lower_conv(layer: Layer, b: Build) -> nn.Module:
    a, t = layer.args, b.towers
    c_in, c_out, groups = layer.in_shape.c, layer.shape.c, int(a["groups"])
    k = int(a["size"])
    std, bias = b.init_of(layer)
    weight = b.normal((c_out, c_in // groups, k, k), std)  # C x Cin/g x k x k
    own = layer.tower.reads == "tower"
    shards: list[nn.Module] = [
        ConvShard(w.clone().to(d), torch.full((c_out // t,), bias, device=d), int(a["stride"]),
                  int(a.get("pad", 0)), conv_calls(c_in, c_out, groups, t, i, own))
        for i, (w, d) in enumerate(zip(weight.chunk(t, dim=0), b.devices, strict=True))]
    return Sharded(shards, (int(a["stride"]), int(a.get("pad", 0)), groups))


class FCShard(nn.Module):
    """One tower's output features of a fully connected layer; flattens C, H, W first."""

    def __init__(self, weight: Tensor, bias: Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)  # F/T x Fin
        self.bias = nn.Parameter(bias)  # F/T

    def forward(self, x: Tensor) -> Tensor:  # N x C x H x W or N x Fin
        return F.linear(x.flatten(1), self.weight, self.bias)  # N x F/T


def lower_fc(layer: Layer, b: Build) -> nn.Module:
    t, n_out = b.towers, layer.shape.c
    std, bias = b.init_of(layer)
    weight = b.normal((n_out, layer.in_shape.elements), std)  # F x Fin
    return Sharded([FCShard(w.clone().to(b.devices[i]),
                            torch.full((n_out // t,), bias, device=b.devices[i]))
                    for i, w in enumerate(weight.chunk(t, dim=0))])


# --- ops without weights ----------------------------------------------------------------------

class WholeIsForward:
    """Ops that treat every channel alike run the same on one tower or on all of them."""

    def whole(self, x: Tensor) -> Tensor:
        return self(x)  # type: ignore[operator]


class Elementwise(WholeIsForward, nn.Module):
    def __init__(self, fn: Callable[[Tensor], Tensor], name: str):
        super().__init__()
        self.fn, self.name = fn, name

    def forward(self, x: Tensor, tower: int = 0) -> Tensor:
        return self.fn(x)  # same shape as x

    def extra_repr(self) -> str:
        return self.name


class ResNorm(nn.Module):
    """LRN on one tower's channels (paper convention, see `local_response_norm`)."""

    def __init__(self, size: int, alpha: float, beta: float, k: float, towers: int = 1):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k
        self.towers = towers

    def forward(self, x: Tensor, tower: int = 0) -> Tensor:  # N x C/T x H x W
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def whole(self, x: Tensor) -> Tensor:  # N x C x H x W: every tower's maps
        return towerwise(self.forward, x, self.towers)  # N x C x H x W

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k} (paper)"


class Pool(WholeIsForward, nn.Module):
    """Max or average pooling in floor mode (what both `remainder=` settings compute).

    AvgPool counts the zero padding in each window's mean (count_include_pad=True, torch's
    default and ONNX's AveragePool default), so every window divides by size².
    """

    def __init__(self, kind: str, size: int, stride: int, pad: int):
        super().__init__()
        self.kind, self.size, self.stride, self.pad = kind, size, stride, pad

    def forward(self, x: Tensor, tower: int = 0) -> Tensor:  # N x C x H x W
        if self.kind == "max":
            return F.max_pool2d(x, self.size, self.stride, self.pad)  # N x C x H' x W'
        return F.avg_pool2d(x, self.size, self.stride, self.pad)  # N x C x H' x W'

    def extra_repr(self) -> str:
        return f"{self.kind}, size={self.size}, stride={self.stride}, pad={self.pad}"


class Dropout(WholeIsForward, nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor, tower: int = 0) -> Tensor:
        return F.dropout(x, self.p, self.training)  # same shape as x


class Softmax(WholeIsForward, nn.Module):
    """Probabilities over dim 1; the network's final Softmax is left to predict/the loss."""

    def __init__(self, final: bool):
        super().__init__()
        self.final = final

    def forward(self, x: Tensor, tower: int = 0) -> Tensor:  # N x C (x H x W), on tower 0
        return x if self.final else torch.softmax(x, dim=1)


def _window(layer: Layer) -> tuple[int, int, int]:
    a = layer.args
    return int(a["size"]), int(a["stride"]), int(a.get("pad", 0))


def _lrn(layer: Layer) -> tuple[int, float, float, float]:
    a = layer.args
    return int(a["size"]), float(a["alpha"]), float(a["beta"]), float(a["k"])


Lowering = Callable[[Layer, Build], nn.Module]

LOWERINGS: dict[str, Lowering] = {
    "Conv": lower_conv,
    "FC": lower_fc,
    "ReLU": lambda layer, b: Elementwise(torch.relu, "relu"),
    "Tanh": lambda layer, b: Elementwise(torch.tanh, "tanh"),
    "Sigmoid": lambda layer, b: Elementwise(torch.sigmoid, "sigmoid"),
    "ResNorm": lambda layer, b: ResNorm(*_lrn(layer), towers=b.towers),
    "MaxPool": lambda layer, b: Pool("max", *_window(layer)),
    "AvgPool": lambda layer, b: Pool("avg", *_window(layer)),
    "Dropout": lambda layer, b: Dropout(float(layer.args["p"])),
    "Softmax": lambda layer, b: Softmax(final=layer.id == b.last),
}
