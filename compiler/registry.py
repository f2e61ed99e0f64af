"""The op registry: one entry per op holds everything the passes need to know about it.

Adding an op is one `OpDef` here (arguments, shape rule, counts, tower behaviour) plus
its lowering in `alexnetc.backends.lowering`; the passes hold no per-op `if` chains.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from alexnetc.compiler.records import INT32_MAX, Counts, Shape

Value = int | float | str
Args = Mapping[str, Value]

REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One argument: positional ones may also be given by name."""

    name: str
    kind: type | tuple[str, ...]  # int, float, or a tuple of allowed words
    default: object = REQUIRED
    positional: bool = False
    minimum: float | None = None
    maximum: float | None = None
    doc: str = ""


class ShapeProblem(Exception):
    """Raised by a shape rule; the shapes pass turns it into a located diagnostic.

    `arg` names the argument to point at (None: the op itself).
    """

    def __init__(self, message: str, hint: str = "", arg: str | None = None,
                 fit: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.arg = arg
        self.fit = fit  # an input size that would tile, for a hint on the `input` line


@dataclass(frozen=True)
class OpDef:
    name: str
    category: str  # conv, fc, activation, norm, pool, dropout, softmax
    doc: str
    params: tuple[Param, ...] = ()
    takes_channels: bool = False
    infer: Callable[[Shape, Args, int | None], Shape] = field(default=lambda s, a, c: s)
    count: Callable[[Shape, Shape, Args], Counts] = field(default=lambda i, o, a: Counts())
    aliases: tuple[str, ...] = ()
    fusion_role: str | None = None  # relu, lrn, maxpool: what the fusion pass can chain

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    @property
    def positional(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.positional)

    def signature(self) -> str:
        parts = [p.name for p in self.positional]
        # None defaults come from elsewhere (the spec's init line): shown as `bias=…`, not as
        # Python's None, which the language does not have
        parts += [f"{p.name}={'…' if p.default is None else p.default}"
                  for p in self.params if not p.positional]
        sig = f"{self.name}({', '.join(parts)})" if parts else self.name
        return sig + (" xC" if self.takes_channels else "")


def _window_out(size: int, stride: int, pad: int, length: int, args: Args, axis: str,
                what: str) -> int:
    """Output length of a sliding window; uneven tiling is an error unless remainder=drop."""
    span = length + 2 * pad - size
    if span < 0:
        raise ShapeProblem(
            f"{what} window of {size} is larger than its {length}-pixel input"
            + (f" padded by {pad}" if pad else ""),
            f"use a window of at most {length + 2 * pad}, or more padding",
            "size",
        )
    dropped = span % stride
    if dropped and args.get("remainder", "error") != "drop":
        # input lengths that tile: the next larger and smaller, within PyTorch's sizes
        fits = [n for n in (length + (stride - dropped), length - dropped)
                if size - 2 * pad <= n <= INT32_MAX]
        options = []
        if fits:
            options.append(f"a {fits[0]}-pixel input here"
                           + (f" (or {fits[1]})" if len(fits) > 1 else ""))
        tiling_pad = first_tiling_pad(length, size, stride, pad)
        if tiling_pad is not None:
            options.append(f"pad={tiling_pad}")
        options.append("remainder=drop to floor as PyTorch does")
        raise ShapeProblem(
            f"{what} does not tile its {length}-pixel {axis}: ({length} + 2·{pad} − {size}) = "
            f"{span} is not a multiple of stride {stride}, so {dropped} "
            f"pixel{'s' if dropped > 1 else ''} at the edge would be dropped",
            "use " + ", or ".join(options),
            None,
            fits[0] if fits else None,
        )
    return span // stride + 1


def first_tiling_pad(length: int, size: int, stride: int, pad: int) -> int | None:
    """The least p in (pad, size // 2] with (length + 2p − size) a multiple of stride, if any.

    Solved as the congruence 2p ≡ size − length (mod stride) rather than by trying each p,
    which took minutes for windows of 2**31 pixels.
    """
    g = math.gcd(2, stride)
    r = (size - length) % stride
    if r % g:
        return None
    period = stride // g
    base = (r // g) * pow(2 // g, -1, period) % period if period > 1 else 0
    p = base + -(-(pad + 1 - base) // period) * period  # the least p ≡ base with p ≥ pad + 1
    return p if p <= size // 2 else None


def _spatial(in_shape: Shape, args: Args, what: str) -> tuple[int, int]:
    if in_shape.flat:
        raise ShapeProblem(f"{what} needs HxWxC maps, but its input is a flat vector of "
                           f"{in_shape.c} features", "put convolutions and pools before any FC")
    size, stride, pad = int(args["size"]), int(args["stride"]), int(args.get("pad", 0))
    if pad > size // 2:
        raise ShapeProblem(f"padding {pad} is more than half the window {size}",
                           f"use pad ≤ {size // 2}", "pad")
    h = _window_out(size, stride, pad, in_shape.h, args, "height", what)
    w = _window_out(size, stride, pad, in_shape.w, args, "width", what)
    return h, w


def _conv_infer(in_shape: Shape, args: Args, channels: int | None) -> Shape:
    assert channels is not None
    groups = int(args["groups"])
    if in_shape.flat:
        raise ShapeProblem(f"Conv needs HxWxC maps, but its input is a flat vector of "
                           f"{in_shape.c} features", "put convolutions before any FC")
    if in_shape.c % groups:
        raise ShapeProblem(f"groups={groups} does not divide the {in_shape.c} input channels",
                           f"use a number of groups that divides {in_shape.c}", "groups")
    if channels % groups:
        raise ShapeProblem(f"groups={groups} does not divide the {channels} output channels",
                           f"use a multiple of {groups} output channels, e.g. "
                           f"x{channels + groups - channels % groups}", "groups")
    h, w = _spatial(in_shape, args, f"Conv({args['size']},{args['stride']})")
    return Shape(h, w, channels)


def _conv_count(i: Shape, o: Shape, args: Args) -> Counts:
    per_out = int(args["size"]) ** 2 * (i.c // int(args["groups"]))
    weights = per_out * o.c
    return Counts(weights, o.c, o.elements, o.elements * per_out, o.elements * 4)


def _fc_infer(in_shape: Shape, args: Args, channels: int | None) -> Shape:
    return Shape(1, 1, int(args["out"]), flat=True)


def _fc_count(i: Shape, o: Shape, args: Args) -> Counts:
    return Counts(i.elements * o.c, o.c, o.c, i.elements * o.c, o.c * 4)


def _pool_infer(in_shape: Shape, args: Args, channels: int | None) -> Shape:
    h, w = _spatial(in_shape, args, f"pool({args['size']},{args['stride']})")
    return Shape(h, w, in_shape.c)


def _lrn_infer(in_shape: Shape, args: Args, channels: int | None) -> Shape:
    if int(args["size"]) % 2 == 0:
        raise ShapeProblem(f"ResNorm window {args['size']} is even; it must be centred on "
                           "each channel", f"use an odd size such as {int(args['size']) + 1}",
                           "size")
    return in_shape


def _same_bytes(i: Shape, o: Shape, args: Args) -> Counts:
    return Counts(activation_bytes=o.elements * 4)


_INIT = (
    Param("bias", float, None, doc="initial bias (default: the init section's bias)"),
    Param("std", float, None, minimum=0.0, doc="std of the N(0, std) initial weights"),
)
_WINDOW = (
    Param("size", int, positional=True, minimum=1, doc="window size (square)"),
    Param("stride", int, positional=True, minimum=1, doc="step between windows"),
    Param("pad", int, 0, minimum=0, doc="zero padding on every side"),
    Param("remainder", ("error", "drop"), "error",
          doc="what to do when the windows do not tile the input: error, or drop the edge"),
)

OPS: dict[str, OpDef] = {}


def _register(op: OpDef) -> None:
    for name in (op.name, *op.aliases):
        OPS[name] = op


_register(OpDef(
    "Conv", "conv", "2-D convolution, `Conv(size, stride) xC`",
    params=(*_WINDOW, Param("groups", int, 1, minimum=1,
                            doc="channel groups; groups=towers keeps each tower to itself"),
            *_INIT),
    takes_channels=True, infer=_conv_infer, count=_conv_count,
))
_register(OpDef(
    "FC", "fc", "fully connected layer, `FC(out)`; flattens HxWxC first",
    params=(Param("out", int, positional=True, minimum=1, doc="output features"), *_INIT),
    infer=_fc_infer, count=_fc_count, aliases=("Linear",),
))
_register(OpDef("ReLU", "activation", "max(0, x)", count=_same_bytes, fusion_role="relu"))
_register(OpDef("Tanh", "activation", "tanh(x)", count=_same_bytes))
_register(OpDef("Sigmoid", "activation", "1 / (1 + exp(-x))", count=_same_bytes))
_register(OpDef(
    "ResNorm", "norm",
    "local response normalisation across channels, paper convention: "
    "b = a / (k + alpha·Σ a²)^beta over `size` neighbouring channels",
    params=(Param("size", int, positional=True, minimum=1, doc="channels in the window (odd)"),
            Param("k", float, 2.0, doc="additive offset"),
            Param("alpha", float, 1e-4, minimum=0.0,
                  doc="scale of the sum of squares (NOT divided by size, unlike PyTorch)"),
            Param("beta", float, 0.75, minimum=0.0, doc="exponent")),
    infer=_lrn_infer, count=_same_bytes, aliases=("LRN",), fusion_role="lrn",
))
_register(OpDef("MaxPool", "pool", "max over each window", params=_WINDOW,
                infer=_pool_infer, count=_same_bytes, fusion_role="maxpool"))
_register(OpDef("AvgPool", "pool", "mean over each window", params=_WINDOW,
                infer=_pool_infer, count=_same_bytes))
_register(OpDef(
    "Dropout", "dropout", "zero each activation with probability p while training",
    params=(Param("p", float, 0.5, positional=True, minimum=0.0, maximum=1.0,
                  doc="drop probability"),),
    count=_same_bytes,
))
_register(OpDef("Softmax", "softmax", "probabilities over the classes; folded into the loss "
                "for training", count=_same_bytes))


def lookup(name: str) -> OpDef | None:
    return OPS.get(name)


def suggest(name: str) -> str | None:
    """The known op a misspelt name most likely meant (`Relu` → `ReLU`)."""
    by_lower = {k.lower(): k for k in OPS}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None


def known_names() -> list[str]:
    return sorted({op.name for op in OPS.values()})
