"""The module → op table: what each nn module (and the function or tensor method equal to
it) becomes as a spec op, with the PyTorch convention it converts said in a comment, or why
the spec cannot express it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from alexnetc.importers.draft import Stage, number, side

SUPPORTED = ("Conv2d, Linear, BatchNorm2d/1d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, ReLU, "
             "ReLU6, LeakyReLU, PReLU, Tanh, Sigmoid, LocalResponseNorm, Dropout, Softmax "
             "(modules or functions), x.mean([2, 3]), flatten, torch.cat and +")


class Unsupported(Exception):
    """What the spec cannot express; `at`: the node to point at, when not the one read."""

    def __init__(self, message: str, hint: str = "", at: Any = None):
        super().__init__(message)
        self.message, self.hint, self.at = message, hint, at


@dataclass(frozen=True)
class SpecOp:
    """One spec op: its text, whether it starts a stage (Conv, FC) or may follow the op
    before in one, the conversion said in a comment, the source module holding its weights."""

    text: str
    head: bool = False
    tied: bool = False  # an activation: joined with `+`
    comment: str = ""
    weights: Any = None
    elementwise: bool = False  # same on a flattened vector as on the maps it came from
    flattens: bool = False  # FC: reads maps as the flattened vector


@dataclass(frozen=True)
class Val:
    """A tensor of the traced network as the spec sees it: the stage whose output it is (None:
    the input), its spec shape ((C, H, W) maps or (F,)), and the node that flattened it while
    the spec keeps its maps for an FC to flatten."""

    node: Any
    stage: Stage | None
    shape: tuple[int, ...]
    flattened_at: Any = None


def _two(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    a, b = v
    return int(a), int(b)


def _hw(x: Val) -> tuple[int, int]:
    return x.shape[1], x.shape[2]


def _untiled(hw: tuple[int, int], span: tuple[int, int], stride: tuple[int, int],
             pad: tuple[int, int]) -> str:
    """Where windows do not tile, as the checker words it: `(224 + 2·2 − 11) = 217 is not a
    multiple of stride 4` (each axis named when they differ); "" where they tile."""
    parts = {}
    for axis, n, k, s, p in zip(("height", "width"), hw, span, stride, pad, strict=True):
        if (n + 2 * p - k) % s:
            parts[axis] = (f"({n} + 2·{p} − {k}) = {n + 2 * p - k} is not a multiple of "
                           f"stride {s}")
    if len(parts) == 2 and len(set(parts.values())) == 1:
        return parts["height"]
    return "; ".join(f"{axis}: {text}" for axis, text in parts.items())


def _conv(mod: Any, x: Val, out: tuple[int, ...], dims: int) -> SpecOp:
    if mod.padding_mode != "zeros":
        raise Unsupported(f"padding_mode='{mod.padding_mode}': alexnetc pads with zeros only")
    k, s, d = _two(mod.kernel_size), _two(mod.stride), _two(mod.dilation)
    span = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
    args = [f"{side(*k)},{side(*s)}"]
    comment = ""
    if mod.padding == "same":
        args.append("pad=same")
    else:
        pad = (0, 0) if mod.padding == "valid" else _two(mod.padding)
        if pad[0] > span[0] // 2 or pad[1] > span[1] // 2:
            raise Unsupported(f"padding {side(*pad)} is more than half the kernel's span "
                               f"{side(*span)}: alexnetc's windows pad at most half their span",
                               "pad the input once before the convolution with a wider "
                               "kernel, or use less padding")
        if pad != (0, 0):
            args.append(f"pad={side(*pad)}")
        untiled = _untiled(_hw(x), span, s, pad)
        if untiled:
            comment = f"PyTorch floors: {untiled}"
    if d != (1, 1):
        args.append(f"dilation={side(*d)}")
    if mod.groups != 1:
        args.append(f"groups={mod.groups}")
    if mod.bias is None:
        args.append("bias=false")
    if comment:
        args.append("remainder=drop")
    return SpecOp(f"Conv({', '.join(args)}) x{mod.out_channels}", head=True, comment=comment,
               weights=mod)


def _linear(mod: Any, x: Val, out: tuple[int, ...], dims: int) -> SpecOp:
    if dims != 2:
        raise Unsupported(f"on a {dims}-D tensor it applies to its last dimension only, "
                           "which alexnetc's FC does not",
                           "flatten each image first: torch.flatten(x, 1)")
    bias = "" if mod.bias is not None else ", bias=false"
    return SpecOp(f"FC({mod.out_features}{bias})", head=True, weights=mod, flattens=True)


def _batch_norm(mod: Any, x: Val, out: tuple[int, ...], dims: int) -> SpecOp:
    want = 4 if type(mod).__name__ == "BatchNorm2d" else 2
    if dims != want:
        raise Unsupported(f"a {dims}-D input: alexnetc normalises maps (N x C x H x W) or "
                           "feature vectors (N x F)")
    if not mod.affine:
        raise Unsupported("affine=False: alexnetc's BatchNorm always learns a scale and "
                           "a shift", "use affine=True (the default)")
    if not mod.track_running_stats or mod.momentum is None:
        what = ("track_running_stats=False: it normalises with each batch's statistics even "
                "in eval mode" if not mod.track_running_stats else
                "momentum=None (a cumulative average of the batches)")
        raise Unsupported(f"{what}, which alexnetc's BatchNorm does not",
                           "use the default running statistics (momentum=0.1)")
    args = ([f"eps={number(mod.eps)}"] if mod.eps != 1e-5 else []) + \
        ([f"momentum={number(mod.momentum)}"] if mod.momentum != 0.1 else [])
    return SpecOp("BatchNorm" + (f"({', '.join(args)})" if args else ""), weights=mod)


def _pool(mod: Any, x: Val, out: tuple[int, ...], dims: int) -> SpecOp:
    kind = "MaxPool" if type(mod).__name__ == "MaxPool2d" else "AvgPool"
    if kind == "MaxPool" and (mod.return_indices or _two(mod.dilation) != (1, 1)):
        raise Unsupported("return_indices=True: alexnetc's MaxPool gives the maxima only"
                           if mod.return_indices else
                           f"dilation={mod.dilation}: alexnetc's pools read whole windows")
    k = _two(mod.kernel_size)
    s = _two(mod.stride) if mod.stride not in (None, [], ()) else k
    pad = _two(mod.padding)
    if kind == "AvgPool":
        if mod.divisor_override is not None:
            raise Unsupported(f"divisor_override={mod.divisor_override}: alexnetc's AvgPool "
                               "divides by the window")
        if not mod.count_include_pad and pad != (0, 0):
            raise Unsupported("count_include_pad=False: alexnetc's AvgPool counts the zero "
                               "padding in each window's mean", "use count_include_pad=True "
                               "(the default), or no padding")
    args = [f"{side(*k)},{side(*s)}"] + ([f"pad={side(*pad)}"] if pad != (0, 0) else [])
    comment = ""
    untiled = _untiled(_hw(x), k, s, pad)
    if untiled and mod.ceil_mode:
        args.append("remainder=ceil")
        comment = f"PyTorch ceil_mode: {untiled}"
    elif untiled:
        args.append("remainder=drop")
        comment = f"PyTorch floors: {untiled}"
    return SpecOp(f"{kind}({', '.join(args)})", comment=comment)


def _adaptive(mod: Any, x: Val, out: tuple[int, ...], dims: int) -> SpecOp:
    size = (out[1], out[2])
    return SpecOp("GlobalAvgPool" if size == (1, 1) else f"AdaptiveAvgPool({side(*size)})")


def _lrn(mod: Any, x: Val, out: tuple[int, ...], dims: int) -> SpecOp:
    n = int(mod.size)
    if n % 2 == 0:
        raise Unsupported(f"a LocalResponseNorm window of {n} channels is not centred on "
                           f"its channel (PyTorch's reaches {n // 2} before it and "
                           f"{n // 2 - 1} after); alexnetc's ResNorm takes odd windows")
    args = [str(n), f"alpha={number(mod.alpha / n)}"]
    if mod.beta != 0.75:
        args.append(f"beta={number(mod.beta)}")
    if mod.k != 2:
        args.append(f"k={number(mod.k)}")
    return SpecOp(f"ResNorm({', '.join(args)})",
               comment=f"PyTorch LRN: alpha {number(mod.alpha)} / size {n}")


def _prelu(mod: Any, x: Val, out: tuple[int, ...], dims: int) -> SpecOp:
    channels = x.shape[0]
    comment = ""
    if mod.num_parameters != channels:
        comment = (f"PyTorch PReLU: 1 slope shared by {channels} channels, here {channels} "
                   f"({channels - 1} more parameters)")
    return SpecOp("PReLU", tied=True, comment=comment, weights=mod)


def _leaky(mod: Any, x: Val, out: tuple[int, ...], dims: int) -> SpecOp:
    if mod.negative_slope < 0:
        raise Unsupported(f"negative_slope={mod.negative_slope}: alexnetc's LeakyReLU takes "
                           "slopes of 0 or more")
    return SpecOp(f"LeakyReLU({number(mod.negative_slope)})", tied=True, elementwise=True)


def _softmax(mod: Any, x: Val, out: tuple[int, ...], dims: int) -> SpecOp:
    dim = mod.dim if mod.dim is not None else (0 if dims in (0, 1, 3) else 1)
    if dim % dims != 1:
        raise Unsupported(f"Softmax over dimension {dim} of a {dims}-D tensor: alexnetc's "
                           "Softmax is over the channels", "use dim=1")
    return SpecOp("Softmax", tied=True)


def _dropout(mod: Any, x: Val, out: tuple[int, ...], dims: int) -> SpecOp:
    return SpecOp(f"Dropout({number(mod.p)})", elementwise=True)


_Rule = Callable[[Any, Val, tuple[int, ...], int], SpecOp]  # (module, input, output, input dims)


def _activation(text: str) -> _Rule:
    return lambda mod, x, out, dims: SpecOp(text, tied=True, elementwise=True)


def module_rules() -> dict[type, _Rule]:
    from torch import nn

    return {nn.Conv2d: _conv, nn.Linear: _linear, nn.BatchNorm2d: _batch_norm,
            nn.BatchNorm1d: _batch_norm, nn.MaxPool2d: _pool, nn.AvgPool2d: _pool,
            nn.AdaptiveAvgPool2d: _adaptive, nn.LocalResponseNorm: _lrn, nn.PReLU: _prelu,
            nn.LeakyReLU: _leaky, nn.Softmax: _softmax, nn.Dropout: _dropout,
            nn.ReLU: _activation("ReLU"), nn.ReLU6: _activation("ReLU6"),
            nn.Tanh: _activation("Tanh"), nn.Sigmoid: _activation("Sigmoid")}


# Functions and tensor methods as the module they equal: (module class name, the names of the
# arguments after the input, in order); `training` is F.dropout's, checked apart.
FUNCTIONS = {
    "F.relu": ("ReLU", ("inplace",)), "torch.relu": ("ReLU", ()), "torch.relu_": ("ReLU", ()),
    "F.relu_": ("ReLU", ()), "F.relu6": ("ReLU6", ("inplace",)),
    "F.leaky_relu": ("LeakyReLU", ("negative_slope", "inplace")),
    "torch.tanh": ("Tanh", ()), "F.tanh": ("Tanh", ()),
    "torch.sigmoid": ("Sigmoid", ()), "F.sigmoid": ("Sigmoid", ()),
    "F.softmax": ("Softmax", ("dim", "_stacklevel", "dtype")),
    "torch.softmax": ("Softmax", ("dim", "dtype")),
    "F.dropout": ("Dropout", ("p", "training", "inplace")),
    "F.local_response_norm": ("LocalResponseNorm", ("size", "alpha", "beta", "k")),
    "F.max_pool2d": ("MaxPool2d", ("kernel_size", "stride", "padding", "dilation",
                                   "ceil_mode", "return_indices")),
    "F.avg_pool2d": ("AvgPool2d", ("kernel_size", "stride", "padding", "ceil_mode",
                                   "count_include_pad", "divisor_override")),
    "torch._C._nn.avg_pool2d": ("AvgPool2d", ("kernel_size", "stride", "padding", "ceil_mode",
                                              "count_include_pad", "divisor_override")),
    "F.adaptive_avg_pool2d": ("AdaptiveAvgPool2d", ("output_size",)),
}


METHODS = {"relu": ("ReLU", ()), "relu_": ("ReLU", ()), "tanh": ("Tanh", ()),
            "tanh_": ("Tanh", ()), "sigmoid": ("Sigmoid", ()), "sigmoid_": ("Sigmoid", ()),
            "softmax": ("Softmax", ("dim", "dtype"))}


# Arguments a function takes that its module does not (checked, then left out).
_NOT_MODULE_ARGS = {"inplace", "_stacklevel", "dtype", "training"}


RESHAPES = {"torch.flatten", "torch.reshape"}


RESHAPE_METHODS = {"view", "reshape", "flatten", "contiguous"}


ADDS = {"operator.add", "operator.iadd", "torch.add"}


MEANS = {"torch.mean"}


def spatial_mean(args: Sequence[Any], kwargs: dict[str, Any], dims: int) -> Any:
    """`x.mean([2, 3])` (torch.mean too) as the nn.AdaptiveAvgPool2d(1) it equals: the mean
    of each whole map; a mean over other dimensions has no alexnetc op."""
    from torch import nn

    given = dict(zip(("dim", "keepdim"), args[1:], strict=False)) | kwargs
    if set(given) - {"dim", "keepdim", "dtype"} or given.get("dtype") is not None:
        raise Unsupported("an argument that alexnetc's GlobalAvgPool does not take")
    dim = given.get("dim")
    axes = {dim} if isinstance(dim, int) else set(dim) if isinstance(dim, list | tuple) else None
    if dims != 4 or axes is None or {int(a) % 4 for a in axes} != {2, 3}:
        over = "every dimension" if axes is None else f"dimension(s) {dim}"
        raise Unsupported(f"the mean over {over} of a {dims}-D tensor: alexnetc averages "
                           "each whole map (GlobalAvgPool) only", "take the mean over "
                           "dimensions [2, 3] of N x C x H x W maps")
    return nn.AdaptiveAvgPool2d(1)


CATS = {"torch.cat", "torch.concat", "torch.concatenate"}


def as_module(name: str, args: Sequence[Any], kwargs: dict[str, Any],
               table: dict[str, tuple[str, tuple[str, ...]]]) -> Any:
    """The nn module a function call equals (F.max_pool2d(x, 2) → nn.MaxPool2d(2))."""
    from torch import fx, nn

    cls, names = table[name]
    given = dict(zip(names, args[1:], strict=False)) | kwargs
    unknown = set(given) - set(names)
    if unknown or len(args) - 1 > len(names):
        raise Unsupported(f"argument(s) {', '.join(sorted(unknown)) or '…'} that alexnetc's "
                           "op does not take")
    if any(isinstance(v, fx.Node) for v in given.values()):
        raise Unsupported("an argument computed by the network")
    if given.get("dtype") is not None:
        raise Unsupported(f"dtype={given['dtype']}: alexnetc computes in the network's own "
                           "precision")
    if given.get("training"):
        raise Unsupported("training=True drops in eval mode too",
                           "pass training=self.training, or use nn.Dropout")
    return getattr(nn, cls)(**{k: v for k, v in given.items() if k not in _NOT_MODULE_ARGS})
