"""The backend side of every op, in one table keyed by the registry's op names (`LAYERS`).

Each entry builds the op's `nn.Module` from its checked layer (the typed argument record in
`layer.args`, the shapes, the towers pass's `TowerInfo`) and, for the ops a fused kernel
chains, gives its part of the chain's parameters. Ops with parameters or buffers build a
`Sharded` module: one shard per tower (``towers.<t>.weight``, output channels
[t·C/T, (t+1)·C/T)), so the state_dict is the same for every device map, and the module
joins the shards into the whole layer's tensors (`whole_tensors`) for export and
`canonical_state_dict`. Towers on one device hold their shards as rows of one tensor
(`shards.py`), so a layer run whole reads its weights in place.

Every lowered op is an `nn.Module` whose ``forward(x, tower)`` runs on ONE tower's tensor
(the stage module routes activations between towers first, see `placement.py`) and whose
``whole(x)`` runs every tower's maps at once (all towers on one device).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alexnetc.backends.kernels.params import LRNParams, PoolParams
from alexnetc.backends.kernels.reference import (
    local_response_norm,
    lrn_per_tower,
    map_response_norm,
)
from alexnetc.backends.lowering.fused import FusedChain
from alexnetc.backends.lowering.shards import adjacent, join, pack
from alexnetc.compiler.graph import Layer
from alexnetc.compiler.recipe import Init
from alexnetc.compiler.records import Shape
from alexnetc.compiler.registry import (
    BatchNormArgs,
    ConvArgs,
    DropoutArgs,
    FCArgs,
    LeakyReLUArgs,
    LRNArgs,
    MapNormArgs,
    PoolArgs,
    conv_padding,
)


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

    def init_of(self, args: ConvArgs | FCArgs) -> tuple[float, float | None]:
        """(std, bias) of a layer: its own `std=`/`bias=`, else the spec's `init` line; bias
        None for `bias=false`, a layer without one."""
        bias = self.init.bias if args.bias is None else args.bias
        return (float(self.init.std if args.std is None else args.std),
                None if bias == "false" else float(bias))

    def bias(self, n: int, value: float | None, device: torch.device) -> Tensor | None:
        return None if value is None else torch.full((n,), value, device=device)


def _parameter(t: Tensor | None) -> nn.Parameter | None:
    """A parameter, or None so that a layer without a bias has no `bias` tensor at all."""
    return None if t is None else nn.Parameter(t)


# --- layers with parameters -------------------------------------------------------------------

class Sharded(nn.Module):
    """A layer with parameters or buffers: one shard per tower, each on its tower's device.

    Every shard holds the same tensors (by name), each its tower's part of the whole layer's
    tensor, cut along `join_dims[name]`: 0 (the output channels) for a name not listed;
    None for a tensor every shard holds whole (equal on every tower). `whole_tensors` joins
    them, `load_whole_tensors` cuts them back; a subclass's `whole` runs the layer as one op
    when every tower shares a device: the shards joined are exactly the spec's layer (a
    grouped conv keeps its groups), so one cuDNN/GEMM call replaces T smaller ones and the
    gathers vanish. On one device the shards of each tensor cut along dim 0 are rows of one
    whole tensor (`shards.pack`), kept so after a move or cast (`_apply`), a load or a copy,
    so that `joined` is a view of it rather than a copy made on every forward.
    """

    join_dims: ClassVar[Mapping[str, int | None]] = {}

    def __init__(self, shards: list[nn.Module]):
        super().__init__()
        self.towers = nn.ModuleList(shards)
        self.pack()
        self.register_load_state_dict_post_hook(_pack_after_load)

    def forward(self, x: Tensor, tower: int) -> Tensor:
        return self.towers[tower](x)

    def whole(self, x: Tensor) -> Tensor:  # every tower's input on one device
        raise NotImplementedError(f"{type(self).__name__} does not run as one op")

    def joined(self, name: str) -> Tensor:
        """The whole layer's tensor `name`, built from the live shards (autograd flows)."""
        joined = self.joined_if_any(name)
        assert joined is not None, f"{type(self).__name__} has no {name}"
        return joined

    def joined_if_any(self, name: str) -> Tensor | None:
        """`joined`, or None for a tensor the layer may lack (a bias with `bias=false`)."""
        parts = [getattr(s, name) for s in self.towers]
        if parts[0] is None:
            return None
        dim = self.join_dims.get(name, 0)
        if dim is None:
            return parts[0]
        return join(parts) if dim == 0 else torch.cat(parts, dim)

    def pack(self) -> None:
        """Each tensor cut along dim 0, with every shard on one device: rows of one tensor."""
        for parts in self._row_parts():
            pack(parts)

    def unpack(self) -> None:
        """Each shard's tensors in storage of their own (`held_apart`): only those that
        share one are copied."""
        for parts in self._row_parts():
            if len(parts) > 1 and adjacent(parts):
                for p in parts:
                    p.data = p.data.clone()  # C/T x ..., alone in its storage

    def _row_parts(self) -> list[list[Tensor]]:
        """Per tensor cut along dim 0 (output channels), every shard's part of it."""
        first = self.towers[0]
        names = [n for n, _ in [*first.named_parameters(recurse=False),
                                *first.named_buffers(recurse=False)]]
        per_name = [[getattr(s, n) for s in self.towers] for n in names
                    if self.join_dims.get(n, 0) == 0]
        return [parts for parts in per_name if all(isinstance(p, Tensor) for p in parts)]

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Sharded:
        # .to(), .cuda(), .double() give each tensor new data of its own: pack them again
        super()._apply(fn, recurse)
        self.pack()
        return self

    def __setstate__(self, state: dict[str, Any]) -> None:
        # copy.deepcopy and pickle rebuild each shard's tensors apart
        super().__setstate__(state)
        self.pack()

    def tensor_names(self) -> list[str]:
        """The names of the layer's parameters and persistent buffers (each shard's)."""
        return list(self.towers[0].state_dict())

    def whole_tensors(self, device: torch.device | str | None = None) -> dict[str, Tensor]:
        """Every parameter and persistent buffer of the layer, whole, by name (on `device`,
        default: where the shards are)."""
        states = [s.state_dict() for s in self.towers]
        out: dict[str, Tensor] = {}
        for name in states[0]:
            parts = [st[name] if device is None else st[name].to(device) for st in states]
            dim = self.join_dims.get(name, 0)
            out[name] = parts[0] if dim is None else torch.cat(parts, dim)
        return out

    def load_whole_tensors(self, tensors: Mapping[str, Tensor], where: str = "") -> None:
        """Cut whole-layer tensors (one per name of `whole_tensors`) into the shards."""
        states = [s.state_dict(keep_vars=True) for s in self.towers]
        for name, whole in tensors.items():
            shards = [st[name] for st in states]
            dim = self.join_dims.get(name, 0)
            if dim is None:
                if whole.shape != shards[0].shape:
                    raise ValueError(f"{where}{name}: shape {tuple(whole.shape)} is not "
                                     f"{tuple(shards[0].shape)}")
                parts = [whole] * len(shards)
            else:
                sizes = [p.shape[dim] for p in shards]
                fits = whole.dim() == shards[0].dim() and whole.shape[dim] == sum(sizes) and all(
                    whole.shape[d] == shards[0].shape[d] for d in range(whole.dim()) if d != dim)
                if not fits:
                    raise ValueError(f"{where}{name}: shape {tuple(whole.shape)} does not fit "
                                     f"{len(shards)} shards of {tuple(shards[0].shape)}")
                parts = list(whole.split(sizes, dim))
            with torch.no_grad():
                for p, part in zip(shards, parts, strict=True):
                    p.copy_(part)


@contextmanager
def held_apart(model: nn.Module) -> Iterator[None]:
    """Every shard of `model` in storage of its own for the block, packed again after it.

    For writers that store tensors by storage: torch.export.save keeps one copy of a shared
    storage, made from its first tensor, which off the CPU holds that tensor's rows alone
    before torch 2.10 (and warns since).
    """
    layers = [m for m in model.modules() if isinstance(m, Sharded)]
    for layer in layers:
        layer.unpack()
    try:
        yield
    finally:
        for layer in layers:
            layer.pack()


def _pack_after_load(module: nn.Module, keys: Any) -> None:
    """load_state_dict(assign=True) puts the loaded tensors in the shards' place."""
    assert isinstance(module, Sharded)
    module.pack()


@dataclass(frozen=True)
class ConvCall:
    """One F.conv2d of a tower shard: its output rows, input channels and groups."""

    out_lo: int
    out_hi: int
    in_lo: int
    in_hi: int
    groups: int


@dataclass(frozen=True)
class Window:
    """A convolution's stride, padding and dilation as F.conv2d takes them.

    `pad` is (top, bottom, left, right), as the registry's `conv_padding` says (uneven for
    `pad=same` with an even span and for `remainder=ceil`). Written as explicit padding
    rather than padding='same' so that .pt2 and ONNX export plain convs.
    """

    stride: tuple[int, int]
    pad: tuple[int, int, int, int]
    dilation: tuple[int, int]

    @classmethod
    def of(cls, a: ConvArgs, into: Shape, out: Shape) -> Window:
        """The window of a conv from `into` to `out` (the checked shapes)."""
        return cls(a.stride.hw, conv_padding(a, into, out), a.dilation.hw)

    def padded(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """x padded where F.conv2d cannot pad it (unevenly: a copy), and the (even) padding
        left for F.conv2d."""
        top, bottom, left, right = self.pad
        if (top, left) == (bottom, right):
            return x, (top, left)
        return F.pad(x, (left, right, top, bottom)), (0, 0)  # N x C x H+t+b x W+l+r

    def conv(self, x: Tensor, weight: Tensor, bias: Tensor | None, groups: int,
             pad: tuple[int, int] | None = None) -> Tensor:
        """The conv of x, or with `pad` of x already `padded`."""
        if pad is None:
            x, pad = self.padded(x)
        return F.conv2d(x, weight, bias, self.stride, pad, self.dilation, groups)


class ConvShard(nn.Module):
    """One tower's output channels of a (grouped) convolution."""

    def __init__(self, weight: Tensor, bias: Tensor | None, window: Window,
                 calls: list[ConvCall]):
        super().__init__()
        self.weight = nn.Parameter(weight)  # C/T x Cin/g x kh x kw
        self.bias = _parameter(bias)  # C/T
        self.window, self.calls = window, calls

    def forward(self, x: Tensor) -> Tensor:  # N x Cin' x H x W
        b = self.bias
        x, pad = self.window.padded(x)  # once for every call, which read slices of it
        outs = [self.window.conv(x[:, c.in_lo:c.in_hi], self.weight[c.out_lo:c.out_hi],
                                 None if b is None else b[c.out_lo:c.out_hi], c.groups, pad)
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


class ShardedConv(Sharded):
    """A convolution's tower shards; whole: the spec's (grouped) conv in one call."""

    def __init__(self, shards: list[nn.Module], window: Window, groups: int):
        super().__init__(shards)
        self.window, self.groups = window, groups

    def whole(self, x: Tensor) -> Tensor:  # N x Cin x H x W
        return self.window.conv(x, self.joined("weight"), self.joined_if_any("bias"),
                                self.groups)  # N x C x H' x W'


def lower_conv(layer: Layer, b: Build) -> nn.Module:
    a: ConvArgs = layer.args
    t = b.towers
    c_in, c_out = layer.in_shape.c, layer.shape.c
    std, bias = b.init_of(a)
    weight = b.normal((c_out, c_in // a.groups, *a.size.hw), std)  # C x Cin/g x kh x kw
    own = layer.tower.shares == t  # its input arrives split: each tower reads its own share
    window = Window.of(a, layer.in_shape, layer.shape)
    shards: list[nn.Module] = [
        ConvShard(w.clone().to(d), b.bias(c_out // t, bias, d), window,
                  conv_calls(c_in, c_out, a.groups, t, i, own))
        for i, (w, d) in enumerate(zip(weight.chunk(t, dim=0), b.devices, strict=True))]
    return ShardedConv(shards, window, a.groups)


class FCShard(nn.Module):
    """One tower's output features of a fully connected layer; flattens C, H, W first."""

    def __init__(self, weight: Tensor, bias: Tensor | None):
        super().__init__()
        self.weight = nn.Parameter(weight)  # F/T x Fin
        self.bias = _parameter(bias)  # F/T

    def forward(self, x: Tensor) -> Tensor:  # N x C x H x W or N x Fin
        return F.linear(x.flatten(1), self.weight, self.bias)  # N x F/T


class ShardedFC(Sharded):
    """A fully connected layer's tower shards; whole: one GEMM."""

    def whole(self, x: Tensor) -> Tensor:  # N x C x H x W or N x Fin
        return F.linear(x.flatten(1), self.joined("weight"), self.joined_if_any("bias"))  # N x F


def lower_fc(layer: Layer, b: Build) -> nn.Module:
    a: FCArgs = layer.args
    t, n_out = b.towers, layer.shape.c
    std, bias = b.init_of(a)
    weight = b.normal((n_out, layer.in_shape.elements), std)  # F x Fin
    return ShardedFC([FCShard(w.clone().to(b.devices[i]), b.bias(n_out // t, bias, b.devices[i]))
                      for i, w in enumerate(weight.chunk(t, dim=0))])


class PReLUShard(nn.Module):
    """One tower's slopes: a learnt slope per channel of its share."""

    def __init__(self, weight: Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)  # C/T

    def forward(self, x: Tensor) -> Tensor:  # N x C/T x H x W or N x C/T
        return F.prelu(x, self.weight)


class ShardedPReLU(Sharded):
    """PReLU's slopes live with their channels, so each tower holds its share's."""

    def whole(self, x: Tensor) -> Tensor:  # N x C x H x W or N x C
        return F.prelu(x, self.joined("weight"))


PRELU_INIT = 0.25  # torch.nn.PReLU's initial slope


def lower_prelu(layer: Layer, b: Build) -> nn.Module:
    per = layer.shape.c // b.towers
    return ShardedPReLU([PReLUShard(torch.full((per,), PRELU_INIT, device=d))
                         for d in b.devices])


class BatchNormShard(nn.Module):
    """One tower's channels of a batch normalisation: torch.nn.BatchNorm's tensors, by its
    names, so the exported state_dict reads as PyTorch's."""

    running_mean: Tensor
    running_var: Tensor
    num_batches_tracked: Tensor

    def __init__(self, channels: int, eps: float, momentum: float, device: torch.device):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(channels, device=device))  # C/T
        self.bias = nn.Parameter(torch.zeros(channels, device=device))  # C/T
        self.register_buffer("running_mean", torch.zeros(channels, device=device))  # C/T
        self.register_buffer("running_var", torch.ones(channels, device=device))  # C/T
        self.register_buffer("num_batches_tracked", torch.tensor(0, device=device))

    def forward(self, x: Tensor) -> Tensor:  # N x C/T x H x W or N x C/T
        if self.training:
            self.num_batches_tracked.add_(1)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, self.momentum, self.eps)


class ShardedBatchNorm(Sharded):
    """Each tower normalises its own channels; a channel's statistics are its own, so this
    is the whole layer's batch norm, with every shard's running statistics kept.

    Training, `whole` runs each shard on its channels' view: F.batch_norm updates the running
    statistics it is given in place, and a joined copy of them would be thrown away. In eval
    mode nothing is updated, so one call on the joined tensors is exact (one ONNX node)."""

    join_dims: ClassVar[Mapping[str, int | None]] = {"num_batches_tracked": None}

    def __init__(self, shards: list[nn.Module], eps: float, momentum: float):
        super().__init__(shards)
        self.eps, self.momentum = eps, momentum

    def whole(self, x: Tensor) -> Tensor:  # N x C x H x W or N x C
        if len(self.towers) == 1:
            return self.towers[0](x)
        if not self.training:
            return F.batch_norm(x, self.joined("running_mean"), self.joined("running_var"),
                                self.joined("weight"), self.joined("bias"), False,
                                self.momentum, self.eps)
        parts = x.chunk(len(self.towers), dim=1)  # T x [N x C/T (x H x W)]
        return torch.cat([s(p) for s, p in zip(self.towers, parts, strict=True)], dim=1)


def lower_batch_norm(layer: Layer, b: Build) -> nn.Module:
    a: BatchNormArgs = layer.args
    return ShardedBatchNorm([BatchNormShard(layer.shape.c // b.towers, a.eps, a.momentum, d)
                             for d in b.devices], a.eps, a.momentum)


# --- ops without parameters -------------------------------------------------------------------

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
    """LRN on one tower's channels (paper convention, see `local_response_norm`); `shares`:
    into how many tower shares its input is split (1: the whole maps)."""

    def __init__(self, lrn: LRNParams, shares: int = 1):
        super().__init__()
        self.lrn = lrn
        self.shares = shares

    def forward(self, x: Tensor, tower: int = 0) -> Tensor:  # N x C/T x H x W (or N x C)
        return local_response_norm(x, self.lrn.size, self.lrn.alpha, self.lrn.beta, self.lrn.k)

    def whole(self, x: Tensor) -> Tensor:  # N x C x H x W: every tower's maps
        return lrn_per_tower(x, self.lrn, self.shares)  # N x C x H x W

    def extra_repr(self) -> str:
        lrn = self.lrn
        return f"size={lrn.size}, alpha={lrn.alpha}, beta={lrn.beta}, k={lrn.k} (paper)"


class MapNorm(WholeIsForward, nn.Module):
    """LRN within each map (see `map_response_norm`): no channel reads another, so one
    tower's maps and every tower's run alike."""

    def __init__(self, args: MapNormArgs):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = args.size, args.alpha, args.beta, args.k

    def forward(self, x: Tensor, tower: int = 0) -> Tensor:  # N x C(/T) x H x W
        return map_response_norm(x, self.size, self.alpha, self.beta,
                                 self.k)  # N x C(/T) x H x W

    def extra_repr(self) -> str:
        return f"size={self.size}x{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class Pool(WholeIsForward, nn.Module):
    """Max or average pooling in floor mode (`remainder=error` and `drop`) or ceil mode.

    AvgPool counts the zero padding in each window's mean (count_include_pad=True, torch's
    default and ONNX's AveragePool default), so every window inside the padded input divides
    by size²; in ceil mode a last window running past the padding divides by the part of it
    that lies inside, as torch and ONNX do.
    """

    def __init__(self, kind: str, size: tuple[int, int], stride: tuple[int, int],
                 pad: tuple[int, int], ceil: bool = False):
        super().__init__()
        self.kind, self.size, self.stride, self.pad, self.ceil = kind, size, stride, pad, ceil

    def forward(self, x: Tensor, tower: int = 0) -> Tensor:  # N x C x H x W
        if self.kind == "max":
            return F.max_pool2d(x, self.size, self.stride, self.pad,
                                ceil_mode=self.ceil)  # N x C x H' x W'
        return F.avg_pool2d(x, self.size, self.stride, self.pad,
                            ceil_mode=self.ceil)  # N x C x H' x W'

    def extra_repr(self) -> str:
        return (f"{self.kind}, size={_hw(self.size)}, stride={_hw(self.stride)}, "
                f"pad={_hw(self.pad)}"
                + (", ceil" if self.ceil else ""))


class AdaptiveAvgPool(WholeIsForward, nn.Module):
    """Average pooling to (h, w) maps; (1, 1) is global average pooling."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = size

    def forward(self, x: Tensor, tower: int = 0) -> Tensor:  # N x C x H x W
        return F.adaptive_avg_pool2d(x, self.size)  # N x C x h x w

    def extra_repr(self) -> str:
        return f"size={self.size}"


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


class Concat(nn.Module):
    """The inputs' channels side by side. With towers each tower joins its own shares, so the
    whole activation (the towers' shares in tower order) interleaves the inputs by tower;
    `whole` builds that order from whole inputs in one cat."""

    def __init__(self, shares: int = 1):
        super().__init__()
        self.shares = shares

    def forward(self, xs: list[Tensor], tower: int = 0) -> Tensor:  # k x [N x Ci(/T) (x H x W)]
        return torch.cat(xs, dim=1)  # N x ΣCi(/T) (x H x W)

    def whole(self, xs: list[Tensor]) -> Tensor:  # k x [N x Ci (x H x W)]
        if self.shares == 1:
            return torch.cat(xs, dim=1)  # N x ΣCi (x H x W)
        parts = [x.unflatten(1, (self.shares, -1)) for x in xs]  # k x [N x T x Ci/T (x H x W)]
        return torch.cat(parts, dim=2).flatten(1, 2)  # N x ΣCi (x H x W), tower by tower

    def extra_repr(self) -> str:
        return f"towers={self.shares}" if self.shares > 1 else ""


class Add(nn.Module):
    """The element-wise sum of the inputs (the same on one tower's shares as on the whole)."""

    def forward(self, xs: list[Tensor], tower: int = 0) -> Tensor:  # k x [N x C x H x W]
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out  # N x C x H x W

    def whole(self, xs: list[Tensor]) -> Tensor:
        return self(xs)


def _lrn(args: LRNArgs) -> LRNParams:
    return LRNParams(args.size, args.alpha, args.beta, args.k)


def _hw(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def _pool(args: PoolArgs) -> PoolParams:
    """The fused kernel's pool: square only (the registry's `fuses` keeps others out)."""
    assert all(p.square for p in (args.size, args.stride, args.pad)), args
    return PoolParams(args.size.h, args.stride.h, args.pad.h)


def _pool_layer(kind: str) -> Callable[[Layer, Build], nn.Module]:
    def build(layer: Layer, b: Build) -> nn.Module:
        a: PoolArgs = layer.args
        return Pool(kind, a.size.hw, a.stride.hw, a.pad.hw, a.remainder == "ceil")
    return build


def _dropout(args: DropoutArgs) -> nn.Module:
    return Dropout(args.p)


def _leaky_relu(args: LeakyReLUArgs) -> nn.Module:
    return Elementwise(partial(F.leaky_relu, negative_slope=args.slope),
                       f"leaky_relu, slope={args.slope}")


# --- the table --------------------------------------------------------------------------------

Chained: TypeAlias = LRNParams | PoolParams | None


@dataclass(frozen=True)
class LayerBackend:
    """The backend side of one op.

    `build`: the op's module for one checked layer. `chained`: for an op the fusion pass may
    chain (a `fusion_role` in the registry), its part of the fused kernel's parameters from
    its argument record (None: nothing to pass, as for the chain's ReLU).
    """

    build: Callable[[Layer, Build], nn.Module]
    chained: Callable[[Any], Chained] | None = None


LAYERS: dict[str, LayerBackend] = {
    "Conv": LayerBackend(lower_conv),
    "FC": LayerBackend(lower_fc),
    "ReLU": LayerBackend(lambda layer, b: Elementwise(torch.relu, "relu"),
                         chained=lambda args: None),
    "Tanh": LayerBackend(lambda layer, b: Elementwise(torch.tanh, "tanh")),
    "Sigmoid": LayerBackend(lambda layer, b: Elementwise(torch.sigmoid, "sigmoid")),
    "LeakyReLU": LayerBackend(lambda layer, b: _leaky_relu(layer.args)),
    "ReLU6": LayerBackend(lambda layer, b: Elementwise(F.relu6, "relu6")),
    "PReLU": LayerBackend(lower_prelu),
    "ResNorm": LayerBackend(lambda layer, b: ResNorm(_lrn(layer.args), layer.tower.shares),
                            chained=_lrn),
    "MapNorm": LayerBackend(lambda layer, b: MapNorm(layer.args)),
    "BatchNorm": LayerBackend(lower_batch_norm),
    "MaxPool": LayerBackend(_pool_layer("max"), chained=_pool),
    "AvgPool": LayerBackend(_pool_layer("avg")),
    "GlobalAvgPool": LayerBackend(lambda layer, b: AdaptiveAvgPool((1, 1))),
    "AdaptiveAvgPool": LayerBackend(lambda layer, b: AdaptiveAvgPool(layer.args.size.hw)),
    "Dropout": LayerBackend(lambda layer, b: _dropout(layer.args)),
    "Softmax": LayerBackend(lambda layer, b: Softmax(final=layer.id == b.last)),
    "Concat": LayerBackend(lambda layer, b: Concat(layer.tower.shares)),
    "Add": LayerBackend(lambda layer, b: Add()),
}


def build_layer(layer: Layer, b: Build) -> nn.Module:
    """The module of one layer, from its op's entry."""
    return LAYERS[layer.op.name].build(layer, b)


def build_chain(layers: list[Layer], use_kernel: bool) -> FusedChain:
    """One fused chain's module: each member's part of the kernel's parameters from its entry."""
    parts = []
    for layer in layers:
        chained = LAYERS[layer.op.name].chained
        assert chained is not None, f"{layer.op.name} has a fusion role but no chained part"
        parts.append(chained(layer.args))
    head = layers[0]
    return FusedChain(head.fusion.kernel if head.fusion else "",
                      next((p for p in parts if isinstance(p, LRNParams)), None),
                      next((p for p in parts if isinstance(p, PoolParams)), None),
                      use_kernel, head.tower.shares)
