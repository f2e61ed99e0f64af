"""The op registry: one entry per op holds everything the front half needs to know about it.

An op's arguments are a frozen dataclass (`ConvArgs`, `LRNArgs`, ...) whose fields say, once,
how the language takes each one (`arg`: positional or not, bounds, doc; the field's type gives
its kind: int, float, `float | None` for a value that defaults from elsewhere, a `Literal` of
the allowed words). Binding a call (passes/verify.py) returns that record; every later stage
reads its attributes. The `OpDef` holds the rest: the shape rule, the counts, how the op
behaves across towers, whether `+` may tie it, its warnings and its fusion role.

The passes, the report and the backends ask the `OpDef`; none of them branches on an op's
name or reads an argument by name. An op's backend side (its modules, its whole-layer
tensors) is its entry in `alexnetc.backends.lowering.layers.LAYERS`, keyed by the op's name.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from alexnetc.compiler.errors import TOWERS
from alexnetc.compiler.records import INT32_MAX, Counts, Lowered, Saved, Shape, Window

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
else:  # pragma: no cover - the type checker runs on 3.11+
    def dataclass_transform(**_: Any) -> Callable[[Any], Any]:
        return lambda f: f

Reads = Literal["tower", "all", "gather"]

REQUIRED: Any = object()  # the default of an argument a call must give


@dataclass(frozen=True)
class Pair:
    """A window's size, stride, padding or dilation down and across, written HxW like the
    input line (`1x7`: one row of seven) or as one number for both (`7`).

    `text` is the value as the spec wrote it, so messages and the table quote the spec
    (`Conv(1x7,1)`, and `Conv(11,4)`, not `Conv(11x11,4x4)`); it takes no part in equality.
    """

    h: int
    w: int
    text: str = field(default="", compare=False)

    @classmethod
    def of(cls, n: int) -> Pair:
        return cls(n, n, str(n))

    @property
    def square(self) -> bool:
        return self.h == self.w

    @property
    def hw(self) -> tuple[int, int]:
        """(h, w), as PyTorch's conv and pool functions take a size."""
        return self.h, self.w

    def __str__(self) -> str:
        return self.text or (str(self.h) if self.square else f"{self.h}x{self.w}")


Value = int | float | str | Pair


# --- arguments ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArgSpec:
    """How the language takes one argument (the field's metadata; see `arg`)."""

    positional: bool = False
    minimum: float | None = None
    maximum: float | None = None
    doc: str = ""


_SPEC = "alexnetc"  # the metadata key of an ArgSpec


def arg(default: Any = REQUIRED, *, positional: bool = False, minimum: float | None = None,
        maximum: float | None = None, doc: str = "") -> Any:
    """A field of an op's argument record, with its description for the language.

    No `default`: the call must give it. `None` as the default of a `float | None` field: the
    value comes from elsewhere (the spec's `init` line for `bias=` and `std=`)."""
    spec = {_SPEC: ArgSpec(positional, minimum, maximum, doc)}
    if default is REQUIRED:
        return field(metadata=spec)
    return field(default=default, metadata=spec)


@dataclass_transform(frozen_default=True, field_specifiers=(arg,))
def op_args(cls: type) -> type:
    """Make `cls` an op's argument record: a frozen dataclass whose fields are `arg`s."""
    return dataclass(frozen=True)(cls)


@dataclass(frozen=True)
class Param:
    """One argument as the language sees it (derived from the record's field)."""

    name: str
    kind: type | tuple[str, ...]  # int, float, Pair, or the allowed words
    default: object = REQUIRED
    positional: bool = False
    minimum: float | None = None
    maximum: float | None = None
    doc: str = ""
    words: tuple[str, ...] = ()  # words a number argument also takes (`bias=false`)


_PARAMS: dict[type, tuple[Param, ...]] = {}


def params_of(args_type: type) -> tuple[Param, ...]:
    """The language's view of an argument record: its fields, kinds, defaults and bounds."""
    known = _PARAMS.get(args_type)
    if known is None:
        known = _PARAMS[args_type] = _params(args_type)
    return known


def _params(args_type: type) -> tuple[Param, ...]:
    hints = typing.get_type_hints(args_type)
    out = []
    for f in dataclasses.fields(args_type):
        spec = f.metadata.get(_SPEC)
        if not isinstance(spec, ArgSpec):
            raise TypeError(f"{args_type.__name__}.{f.name} is not declared with arg()")
        default = REQUIRED if f.default is dataclasses.MISSING else f.default
        hint = hints[f.name]
        out.append(Param(f.name, _kind(args_type, f.name, hint, default), default,
                         spec.positional, spec.minimum, spec.maximum, spec.doc, _words(hint)))
    return tuple(out)


def _kind(owner: type, name: str, hint: Any, default: object) -> type | tuple[str, ...]:
    if typing.get_origin(hint) is Literal:
        return tuple(str(w) for w in typing.get_args(hint))
    if hint in (int, float, Pair):
        return typing.cast(type, hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        plain = {a for a in typing.get_args(hint) if typing.get_origin(a) is not Literal}
        if default is None and plain == {float, type(None)}:
            return float  # given (a number or one of its words), or None until the init line
        if plain == {Pair}:
            return Pair  # a size or one of its words (`pad=same`)
    raise TypeError(f"{owner.__name__}.{name}: arguments are int, float, Pair, `float | None` "
                    f"(default None), each optionally `| Literal[...]` of words it also takes, "
                    f"or a Literal of words, not {hint}")


def _words(hint: Any) -> tuple[str, ...]:
    """The words a `float | Literal[...] | None` argument takes besides numbers."""
    if typing.get_origin(hint) not in (typing.Union, types.UnionType):
        return ()
    return tuple(str(w) for a in typing.get_args(hint) if typing.get_origin(a) is Literal
                 for w in typing.get_args(a))


def as_dict(args: Any) -> dict[str, object]:
    """An argument record as plain data (JSON): the values set, in declaration order; a size
    as one number when square, else [h, w]."""
    return {f.name: _plain(getattr(args, f.name)) for f in dataclasses.fields(args)
            if getattr(args, f.name) is not None}


def _as_pair(value: object) -> object:
    if isinstance(value, int):
        return Pair.of(value)
    if isinstance(value, list | tuple) and len(value) == 2:
        return Pair(*value)
    return value  # a Pair already, or one of its words


def _plain(value: object) -> object:
    if isinstance(value, Pair):
        return value.h if value.square else [value.h, value.w]
    return value


@op_args
class NoArgs:
    """The arguments of an op that takes none."""


@op_args
class PoolArgs:
    size: Pair = arg(positional=True, minimum=1, doc="window size, N or HxW")
    stride: Pair = arg(positional=True, minimum=1, doc="step between windows, N or HxW")
    pad: Pair = arg(Pair.of(0), minimum=0, doc="zero padding on both sides, N or HxW")
    remainder: Literal["error", "drop", "ceil"] = arg(
        "error", doc="what to do when the windows do not tile the input: error, drop the edge, "
        "or ceil: one more window over it (Caffe's pools, PyTorch's ceil_mode)")


@op_args
class ConvArgs:
    size: Pair = arg(positional=True, minimum=1, doc="kernel size, N or HxW")
    stride: Pair = arg(positional=True, minimum=1, doc="step between windows, N or HxW")
    pad: Pair | Literal["same"] = arg(
        Pair.of(0), minimum=0, doc="zero padding on both sides, N or HxW; same: the output "
        "keeps the input's size (stride 1 only; an even span pads one more at the bottom/right)")
    remainder: Literal["error", "drop", "ceil"] = arg(
        "error", doc="what to do when the windows do not tile the input: error, drop the edge, "
        "or ceil: one more window over it, zero-padded past the edge (cuda-convnet2's convs)")
    groups: int = arg(1, minimum=1, doc="channel groups; groups=towers keeps each tower to itself")
    bias: float | Literal["false"] | None = arg(
        None, doc="initial bias (default: the init section's bias); false: no bias at all")
    std: float | None = arg(None, minimum=0.0, doc="std of the N(0, std) initial weights")
    dilation: Pair = arg(Pair.of(1), minimum=1, doc="spacing of the kernel's taps, N or HxW")


@op_args
class FCArgs:
    out: int = arg(positional=True, minimum=1, doc="output features")
    bias: float | Literal["false"] | None = arg(
        None, doc="initial bias (default: the init section's bias); false: no bias at all")
    std: float | None = arg(None, minimum=0.0, doc="std of the N(0, std) initial weights")


@op_args
class LRNArgs:
    size: int = arg(positional=True, minimum=1, doc="channels in the window (odd)")
    k: float = arg(2.0, doc="additive offset")
    alpha: float = arg(1e-4, minimum=0.0,
                       doc="scale of the sum of squares (NOT divided by size, unlike PyTorch)")
    beta: float = arg(0.75, minimum=0.0, doc="exponent")


@op_args
class MapNormArgs:
    size: int = arg(positional=True, minimum=1,
                    doc="side of the square window of pixels around each pixel (odd)")
    k: float = arg(1.0, doc="additive offset")
    alpha: float = arg(1e-4, minimum=0.0, doc="scale of the window's sum of squares (NOT "
                       "divided by size², unlike Caffe's and cuda-convnet2's)")
    beta: float = arg(0.75, minimum=0.0, doc="exponent")


@op_args
class LeakyReLUArgs:
    slope: float = arg(0.01, positional=True, minimum=0.0, doc="slope·x for x < 0")


@op_args
class AdaptiveArgs:
    size: Pair = arg(positional=True, minimum=1, doc="output size, N or HxW, whatever the input's")


@op_args
class BatchNormArgs:
    eps: float = arg(1e-5, minimum=0.0, doc="added to the variance before its square root")
    momentum: float = arg(0.1, minimum=0.0, maximum=1.0,
                          doc="weight of each batch in the running statistics")


@op_args
class DropoutArgs:
    p: float = arg(0.5, positional=True, minimum=0.0, maximum=1.0, doc="drop probability")


# --- the definition of an op -------------------------------------------------------------------

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
class OpWarning:
    """Something legal but probably unintended about one use of an op (located at the call)."""

    kind: str
    message: str
    hint: str


A = TypeVar("A")


def _same_shape(in_shape: Shape, args: object, channels: int | None) -> Shape:
    return in_shape


def _same_bytes(i: Shape, o: Shape, args: object) -> Counts:
    return Counts(activation_bytes=o.elements * 4)


def _own_tower(args: object, towers: int) -> Reads:
    return "tower"


def _keeps_field(args: object, in_shape: Shape) -> Window | None:
    return None


def _no_warnings(args: object, in_shape: Shape, out_shape: Shape,
                 shares: int) -> Sequence[OpWarning]:
    return ()


def _saves_nothing(args: object, i: Shape, o: Shape, low: Lowered) -> Sequence[Saved]:
    """Backward needs only sizes (a sum, a concatenation, a mean over whole maps)."""
    return ()


def _no_scratch(args: object, i: Shape, o: Shape, low: Lowered) -> int:
    return 0


def _saves_input(args: object, i: Shape, o: Shape, low: Lowered) -> Sequence[Saved]:
    return (Saved("input"),)


def _saves_output(args: object, i: Shape, o: Shape, low: Lowered) -> Sequence[Saved]:
    """The derivative is a function of the result (ReLU, tanh, sigmoid, softmax)."""
    return (Saved("output"),)


@dataclass(frozen=True)
class OpDef(Generic[A]):
    """Everything the front half knows about one op.

    - `args_type`: its argument record; `params` (the language's view) derive from it.
    - `example`: a small valid use (on an 8x8x4 input, with 2 towers), which the registry's
      tests check, count, lower and export.
    - `infer`, `count`: the shape rule (raising `ShapeProblem`) and the counts per image.
    - `takes_channels`: written with `xC`; `channels_hint` says what to write instead when a
      channel count is given to an op that takes none.
    - towers: `splits_maps` (each tower holds C/T of its output maps: its parameters split
      with them), `reads(args, towers)` ("tower": its own maps, "all": every tower's, an
      all-gather; "gather": collected on the first tower).
    - `tie`: `+` may tie it to the op before (activations, Softmax).
    - `final`: as the network's last op it is left out of forward: folded into the loss for
      training and applied by predict (Softmax).
    - `warnings(args, in_shape, out_shape, shares)`: op-specific warnings, `shares` being the
      number of tower shares its input is split into (1: whole).
    - `fusion_role`: what the fusion pass may chain it as (relu, lrn, maxpool);
      `fuses(args)`: whether this use of it may be chained (the kernel's limits).
    - `merge`: the shape rule of an op that reads several stages (Concat, Add), given each
      input's name and shape; such an op is a stage's first op, and only it may be.
    - `window(args, in_shape)`: the spatial window each output reads, for receptive fields;
      None for an op whose output position sees only the same input position (activations,
      BatchNorm, ResNorm, which reaches across channels, Dropout, merges).
    - `saves(args, in_shape, out_shape, lowered)`: the tensors its lowering keeps for the
      backward pass (the memory planner's input; a test holds it to what autograd keeps).
    - `autocast`: under mixed precision it computes in the low precision, its input and
      weight cast (autocast's lower-precision list: convolutions, linear layers, PReLU).
    - `autocast_fp32`: the device kinds whose autocast runs it in fp32 (CUDA's Softmax).
    - `training_only`: outside training it hands its input on untouched (Dropout).
    - `scratch(args, in_shape, out_shape, lowered)`: fp32 elements per image its backward
      holds at once besides its input's and output's gradients (the reference ResNorm's
      composite of PyTorch ops); a library's own workspace (cuDNN's, oneDNN's) is not counted.
    """

    name: str
    doc: str
    args_type: type[A]
    example: str
    infer: Callable[[Shape, A, int | None], Shape] = _same_shape
    count: Callable[[Shape, Shape, A], Counts] = _same_bytes
    takes_channels: bool = False
    channels_hint: str = ""
    splits_maps: bool = False
    reads: Callable[[A, int], Reads] = _own_tower
    tie: bool = False
    final: bool = False
    warnings: Callable[[A, Shape, Shape, int], Sequence[OpWarning]] = _no_warnings
    fusion_role: str | None = None
    fuses: Callable[[A], bool] = lambda args: True
    aliases: tuple[str, ...] = ()
    merge: Callable[[Sequence[tuple[str, Shape]], A], Shape] | None = None
    window: Callable[[A, Shape], Window | None] = _keeps_field
    saves: Callable[[A, Shape, Shape, Lowered], Sequence[Saved]] = _saves_nothing
    autocast: bool = False
    autocast_fp32: tuple[str, ...] = ()
    training_only: bool = False
    scratch: Callable[[A, Shape, Shape, Lowered], int] = _no_scratch

    @property
    def params(self) -> tuple[Param, ...]:
        return params_of(self.args_type)

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    @property
    def positional(self) -> tuple[Param, ...]:
        return tuple(p for p in self.params if p.positional)

    def bind(self, values: Mapping[str, object]) -> A:
        """The argument record of checked values (defaults filled in by the record); a size
        may also be given as plain data, as `as_dict` writes it (7, or [1, 7])."""
        return self.args_type(**{k: _as_pair(v) if (p := self.param(k)) and p.kind is Pair
                                 else v for k, v in values.items()})

    def signature(self) -> str:
        parts = [p.name for p in self.positional]
        # None defaults come from elsewhere (the spec's init line): shown as `bias=…`, not as
        # Python's None, which the language does not have
        parts += [f"{p.name}={'…' if p.default is None else p.default}"
                  for p in self.params if not p.positional]
        sig = f"{self.name}({', '.join(parts)})" if parts else self.name
        return sig + (" xC" if self.takes_channels else "")

    @property
    def example_stage(self) -> str:
        """The example as a stage `s` after a stage `c` of 8x8x4 maps (a merge reads `c` twice)."""
        return f"s{'(c, c)' if self.merge else ''}: {self.example}"

    def stray_channels_hint(self) -> str:
        return self.channels_hint or f"{self.name} keeps its input's channels"


# --- shape rules and counts --------------------------------------------------------------------

def _window_out(size: int, stride: int, pad: int, length: int, remainder: str, axis: str,
                what: str, pool: bool = False,
                pad_text: Callable[[int], str] = str, square: bool = True) -> int:
    """Output length of a sliding window along one axis; uneven tiling is an error unless
    remainder=drop (floor) or remainder=ceil (one more window).

    `size` is the span of the window (a dilated kernel's taps and the gaps between them).
    A ceil conv counts as cuda-convnet2 does, 1 + ⌈(length + 2·pad − size) / stride⌉, its last
    window reading zeros past the edge; a ceil pool (`pool`) also drops a last window that
    would start wholly in the right padding, as PyTorch and Caffe do.
    A window that differs down and across (`square` False) names the axis in its messages,
    and `pad_text` writes the `pad=` that would tile this axis, keeping the other's."""
    span = length + 2 * pad - size
    if span < 0:
        raise ShapeProblem(
            f"{what} window of {size} is larger than its {length}-pixel "
            + ("input" if square else axis)
            + (f" padded by {pad}" if pad else ""),
            f"use a window of at most {length + 2 * pad}, or more padding",
            "size",
        )
    dropped = span % stride
    if dropped and remainder == "ceil":
        out = span // stride + 2
        # PyTorch's (and Caffe's) pools: the last window starts inside the input or its left
        # padding, never wholly in the right padding
        return out - 1 if pool and (out - 1) * stride >= length + pad else out
    if dropped and remainder != "drop":
        # input lengths that tile: the next larger and smaller, within PyTorch's sizes
        fits = [n for n in (length + (stride - dropped), length - dropped)
                if size - 2 * pad <= n <= INT32_MAX]
        options = []
        if fits:
            options.append(f"a {fits[0]}-pixel input here"
                           + (f" (or {fits[1]})" if len(fits) > 1 else ""))
        tiling_pad = first_tiling_pad(length, size, stride, pad)
        if tiling_pad is not None:
            options.append(f"pad={pad_text(tiling_pad)}")
        options.append("remainder=drop to floor as PyTorch does"
                       + (" (remainder=ceil: one more window, as Caffe)" if pool else ""))
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


def _span(size: Pair, dilation: Pair) -> Pair:
    """What a window reaches across per axis: its taps and, dilated, the gaps between them."""
    return Pair(dilation.h * (size.h - 1) + 1, dilation.w * (size.w - 1) + 1)


def _spatial(in_shape: Shape, args: ConvArgs | PoolArgs, what: str) -> tuple[int, int]:
    """Each axis on its own: a `1x7` kernel is a 1-row window down and a 7-column one across."""
    if in_shape.flat:
        raise ShapeProblem(f"{what} needs HxWxC maps, but its input is a flat vector of "
                           f"{in_shape.c} features", "put convolutions and pools before any FC")
    size, stride = args.size, args.stride
    dilation = args.dilation if isinstance(args, ConvArgs) else Pair.of(1)
    span = _span(size, dilation)
    if args.pad == "same":
        if stride.hw != (1, 1):
            half = Pair(span.h // 2, span.w // 2)
            raise ShapeProblem(f"pad=same keeps the input's size, which needs stride 1, not "
                               f"stride {stride}", f"use stride 1 (PyTorch's padding='same' takes "
                               f"no other), or an explicit pad such as pad={half}", "pad")
        return in_shape.h, in_shape.w
    pad = args.pad
    if pad.h > span.h // 2 or pad.w > span.w // 2:
        window = f"the window {size}" if dilation.hw == (1, 1) else \
            f"the window {size} dilated by {dilation} ({Pair(*span.hw)})"
        raise ShapeProblem(f"padding {pad} is more than half {window}",
                           f"use pad ≤ {Pair(span.h // 2, span.w // 2)}", "pad")
    square = all(p.square for p in (size, stride, pad, dilation))
    pool = isinstance(args, PoolArgs)
    h = _window_out(span.h, stride.h, pad.h, in_shape.h, args.remainder, "height", what,
                    pool, lambda p: str(p) if square else str(Pair(p, pad.w)), square)
    w = _window_out(span.w, stride.w, pad.w, in_shape.w, args.remainder, "width", what,
                    pool, lambda p: str(p) if square else str(Pair(pad.h, p)), square)
    return h, w


def _conv_infer(in_shape: Shape, args: ConvArgs, channels: int | None) -> Shape:
    assert channels is not None
    groups = args.groups
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
    h, w = _spatial(in_shape, args, f"Conv({args.size},{args.stride})")
    return Shape(h, w, channels)


def _conv_count(i: Shape, o: Shape, args: ConvArgs) -> Counts:
    per_out = args.size.h * args.size.w * (i.c // args.groups)
    weights = per_out * o.c
    biases = 0 if args.bias == "false" else o.c
    return Counts(weights, biases, o.elements, o.elements * per_out, o.elements * 4)


def _conv_window(args: ConvArgs, in_shape: Shape) -> Window:
    """A dilated kernel spans its taps and the gaps between them; pad=same pads (span − 1) // 2
    before the first pixel (an even span's extra row goes after the last)."""
    span = _span(args.size, args.dilation)
    pad = ((span.h - 1) // 2, (span.w - 1) // 2) if args.pad == "same" else args.pad.hw
    return Window(span.hw, args.stride.hw, pad)


def conv_padding(args: ConvArgs, into: Shape, out: Shape) -> tuple[int, int, int, int]:
    """The zeros a conv from `into` to `out` reads around its input: (top, bottom, left,
    right). `pad=same` with an even span pads one more at the bottom and right, as PyTorch's
    padding='same' does; `remainder=ceil` pads the bottom and right by what its extra window
    reads past the edge (cuda-convnet2's zeros)."""
    span = _span(args.size, args.dilation)
    th, tw = span.h - 1, span.w - 1  # each axis's span, less one
    if args.pad == "same":
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    (sh, sw), (ph, pw) = args.stride.hw, args.pad.hw
    bottom = max((out.h - 1) * sh + th + 1 - (into.h + 2 * ph), 0)
    right = max((out.w - 1) * sw + tw + 1 - (into.w + 2 * pw), 0)
    return ph, ph + bottom, pw, pw + right


def _conv_saves(args: ConvArgs, i: Shape, o: Shape, low: Lowered) -> Sequence[Saved]:
    """Its input (padded first when the padding is uneven, which conv2d cannot do itself)
    and its weight, both in the compute dtype."""
    top, bottom, left, right = conv_padding(args, i, o)
    if (top, left) == (bottom, right):
        return Saved("input", dtype="compute"), Saved("weight", dtype="compute")
    padded = (i.h + top + bottom) * (i.w + left + right) * i.c
    return Saved("new", padded, "compute"), Saved("weight", dtype="compute")


def _pool_window(args: PoolArgs, in_shape: Shape) -> Window:
    return Window(args.size.hw, args.stride.hw, args.pad.hw)


def _whole_window(args: object, in_shape: Shape) -> Window:
    """Each output sees the whole input (an FC's flat input is one position: it keeps the
    field it has)."""
    return Window((in_shape.h, in_shape.w), (in_shape.h, in_shape.w))


def _adaptive_window(args: AdaptiveArgs, in_shape: Shape) -> Window:
    """Output i averages input [⌊i·n/m⌋, ⌈(i+1)·n/m⌉): exact when m divides n (span = stride =
    n/m); otherwise the largest bin and the mean step rounded down, a field no output exceeds."""
    def axis(n: int, m: int) -> tuple[int, int]:
        if n % m == 0:
            return n // m, n // m
        return max(-(-(i + 1) * n // m) - i * n // m for i in range(m)), max(n // m, 1)

    (kh, sh), (kw, sw) = axis(in_shape.h, args.size.h), axis(in_shape.w, args.size.w)
    return Window((kh, kw), (sh, sw))


def _fc_saves(args: object, i: Shape, o: Shape, low: Lowered) -> Sequence[Saved]:
    """A matrix product keeps its input for the weight's gradient and its weight for the
    input's, in the compute dtype."""
    return (Saved("input", dtype="compute"),
            Saved("weight", dtype="compute", for_input_grad=True))


def _prelu_saves(args: object, i: Shape, o: Shape, low: Lowered) -> Sequence[Saved]:
    """PReLU keeps its input and its slopes, in the compute dtype, whatever needs a gradient."""
    return Saved("input", dtype="compute"), Saved("weight", dtype="compute")


def _max_pool_saves(args: PoolArgs, i: Shape, o: Shape, low: Lowered) -> Sequence[Saved]:
    """Its input and the argmax of each window as int64 (max_pool2d_with_indices)."""
    return Saved("input"), Saved("new", o.elements, "int64")


def _adaptive_saves(args: AdaptiveArgs, i: Shape, o: Shape, low: Lowered) -> Sequence[Saved]:
    """PyTorch averages to 1x1 with a mean, which keeps nothing; other sizes keep the input."""
    return () if args.size.hw == (1, 1) else (Saved("input"),)


def _lrn_saves(args: LRNArgs, i: Shape, o: Shape, low: Lowered) -> Sequence[Saved]:
    """The reference LRN (backends' local_response_norm) computes in fp32 on each tower share:
    it keeps its input as fp32, each share's squares padded by size − 1 channels, the
    denominator before and after the power."""
    share = i.c // low.shares
    padded = low.shares * (share + args.size - 1) * i.h * i.w
    return (Saved("input", dtype="fp32"), Saved("new", padded, "fp32"),
            Saved("new", o.elements, "fp32"), Saved("new", o.elements, "fp32"))


def _norm_scratch(args: object, i: Shape, o: Shape, low: Lowered) -> int:
    """The reference ResNorm's and MapNorm's backward run through their composites' ops,
    three input-sized fp32 temporaries at once at the peak (measured on the CPU, the same
    high-water mark for both)."""
    return 3 * i.elements


def _map_norm_infer(in_shape: Shape, args: MapNormArgs, channels: int | None) -> Shape:
    if args.size % 2 == 0:
        raise ShapeProblem(f"MapNorm window {args.size} is even; it must be centred on "
                           "each pixel", f"use an odd size such as {args.size + 1}", "size")
    _maps(in_shape, f"MapNorm({args.size})")
    return in_shape


def _map_norm_window(args: MapNormArgs, in_shape: Shape) -> Window:
    """size×size around each pixel: stride 1, padded by size // 2 (the shape it keeps)."""
    return Window((args.size, args.size), (1, 1), (args.size // 2, args.size // 2))


def _map_norm_saves(args: MapNormArgs, i: Shape, o: Shape, low: Lowered) -> Sequence[Saved]:
    """The reference MapNorm (backends' map_response_norm) computes in fp32: it keeps its
    input as fp32, the squares it averages, and the denominator before and after the power.
    Each map is normalised on its own, so tower shares keep what the whole does."""
    return (Saved("input", dtype="fp32"), Saved("new", i.elements, "fp32"),
            Saved("new", o.elements, "fp32"), Saved("new", o.elements, "fp32"))


def _batch_norm_saves(args: BatchNormArgs, i: Shape, o: Shape,
                      low: Lowered) -> Sequence[Saved]:
    """Its input and the batch's mean and inverse deviation per channel (fp32 whatever the
    input's dtype); the weights and running statistics it also keeps are the layer's own."""
    return Saved("input"), Saved("new", 2 * o.c, "fp32", per_step=True)


def _dropout_saves(args: DropoutArgs, i: Shape, o: Shape, low: Lowered) -> Sequence[Saved]:
    """CUDA's fused dropout keeps a one-byte mask; the CPU's keeps the scaled noise it
    multiplied by, in the input's dtype."""
    return (Saved("new", o.elements, "bool" if low.device == "cuda" else "same"),)


def _conv_reads(args: ConvArgs, towers: int) -> Reads:
    return "tower" if args.groups % towers == 0 else "all"


def _fc_infer(in_shape: Shape, args: FCArgs, channels: int | None) -> Shape:
    return Shape(1, 1, args.out, flat=True)


def _fc_count(i: Shape, o: Shape, args: FCArgs) -> Counts:
    biases = 0 if args.bias == "false" else o.c
    return Counts(i.elements * o.c, biases, o.c, i.elements * o.c, o.c * 4)


def _pool_infer(in_shape: Shape, args: PoolArgs, channels: int | None) -> Shape:
    h, w = _spatial(in_shape, args, f"pool({args.size},{args.stride})")
    return Shape(h, w, in_shape.c)


def _maps(in_shape: Shape, what: str) -> None:
    if in_shape.flat:
        raise ShapeProblem(f"{what} needs HxWxC maps, but its input is a flat vector of "
                           f"{in_shape.c} features", "put it before any FC")


def _global_infer(in_shape: Shape, args: NoArgs, channels: int | None) -> Shape:
    _maps(in_shape, "GlobalAvgPool")
    return Shape(1, 1, in_shape.c)


def _adaptive_infer(in_shape: Shape, args: AdaptiveArgs, channels: int | None) -> Shape:
    _maps(in_shape, f"AdaptiveAvgPool({args.size})")
    return Shape(args.size.h, args.size.w, in_shape.c)


def _lrn_infer(in_shape: Shape, args: LRNArgs, channels: int | None) -> Shape:
    if args.size % 2 == 0:
        raise ShapeProblem(f"ResNorm window {args.size} is even; it must be centred on "
                           "each channel", f"use an odd size such as {args.size + 1}", "size")
    return in_shape


def _lrn_warnings(args: LRNArgs, in_shape: Shape, out_shape: Shape,
                  shares: int) -> Sequence[OpWarning]:
    """The window never crosses a tower's edge, so one wider than a tower's maps is clipped."""
    maps = out_shape.c // shares
    if args.size <= maps:
        return ()
    where = f"a tower's {maps}" if shares > 1 else f"the {maps}"
    return (OpWarning(TOWERS, f"the ResNorm window of {args.size} channels is wider than "
                      f"{where} maps", "the window is clipped at the "
                      + ("tower's edge" if shares > 1 else "first and last map")),)


def _per_channel_count(i: Shape, o: Shape, args: object) -> Counts:
    """One parameter per channel (or per feature of a flat vector)."""
    return Counts(weights=o.c, activation_bytes=o.elements * 4)


def _batch_norm_count(i: Shape, o: Shape, args: BatchNormArgs) -> Counts:
    """A scale and a shift per channel; a running mean and variance per channel and the
    batch counter are buffers."""
    return Counts(weights=o.c, biases=o.c, activation_bytes=o.elements * 4, buffers=2 * o.c + 1)


def _concat_merge(inputs: Sequence[tuple[str, Shape]], args: NoArgs) -> Shape:
    """Channels side by side: every input the same height and width (or all flat)."""
    (first, a), *rest = inputs
    for name, b in rest:
        if a.flat != b.flat:
            flat, maps = (first, name) if a.flat else (name, first)
            raise ShapeProblem(f"Concat joins maps or flat vectors, not both: '{flat}' is flat "
                               f"({a if a.flat else b}), '{maps}' is {b if a.flat else a}",
                               f"flatten '{maps}' with an FC first, or pool it to 1x1 "
                               "(GlobalAvgPool) and concatenate maps")
        if (a.h, a.w) != (b.h, b.w):
            raise ShapeProblem(
                f"Concat needs inputs of the same height and width: '{first}' is {a}, "
                f"'{name}' is {b}", _resize_hint(first, a, name, b, None) + "; channels may "
                "differ")
    return Shape(a.h, a.w, sum(s.c for _, s in inputs), a.flat)


def _add_merge(inputs: Sequence[tuple[str, Shape]], args: NoArgs) -> Shape:
    """Element-wise sum: every input the same shape."""
    (first, a), *rest = inputs
    for name, b in rest:
        if a == b:
            continue
        c = max(a.c, b.c)
        if (a.h, a.w, a.flat) != (b.h, b.w, b.flat):
            hint = _resize_hint(first, a, name, b, c)
        else:
            narrow = name if b.c < a.c else first
            proj = f"FC({c}, bias=false)" if a.flat else f"Conv(1,1, bias=false) x{c}"
            hint = (f"project '{narrow}' to {c} {'features' if a.flat else 'channels'}, e.g. "
                    f"`proj({narrow}): {proj}; BatchNorm`, and add `proj` in place of "
                    f"'{narrow}'")
        raise ShapeProblem(f"Add needs inputs of one shape: '{first}' is {a}, '{name}' is "
                           f"{b}", hint)
    return a


def _resize_hint(first: str, a: Shape, name: str, b: Shape, channels: int | None) -> str:
    """What would bring two maps to one height and width: a stride (or, for an Add, a strided
    projection to `channels`) on the larger's branch, or more padding on the smaller's."""
    if a.flat or b.flat:
        return "flatten both with FC layers, or neither"
    (big_name, big), (small_name, small) = sorted(((first, a), (name, b)),
                                                  key=lambda x: -x[1].h * x[1].w)
    dh, dw = big.h - small.h, big.w - small.w
    if small.h and small.w and big.h % small.h == 0 and big.w % small.w == 0 \
            and big.h // small.h == big.w // small.w:
        s = big.h // small.h
        after = (f"`proj({big_name}): Conv(1,{s}, bias=false) x{channels}; BatchNorm`, added"
                 if channels is not None else f"`pool({big_name}): MaxPool({s},{s})`, "
                 "concatenated")
        return (f"'{big_name}' is {s} times as large each way: a stride of {s} on its branch "
                f"would make them agree, or after it {after} in place of '{big_name}'")
    if dh >= 0 and dw >= 0 and dh % 2 == 0 and dw % 2 == 0:
        pad = dh // 2 if dh == dw else f"{dh // 2}x{dw // 2}"
        less = f"{dh} smaller each way" if dh == dw else f"{dh} shorter and {dw} narrower"
        return (f"'{small_name}' comes out {less}: {pad} more padding on each side of its "
                "branch (`pad=` on a stride-1 window) would make them agree; a kxk window "
                "keeps its input's size with pad=(k-1)/2")
    return (f"give both branches the same strides and padding, so '{big_name}' also comes out "
            f"{small.h}x{small.w}")


# The fused kernel's limits (backends/kernels: lrn_pool.MAX_LRN_SIZE, and at most two windows
# covering a pixel along each axis); a chain outside them is not fused, so what the report
# and the memory plan say runs is what runs.
FUSED_MAX_LRN = 9


def _fused_pool(args: PoolArgs) -> bool:
    """The fused kernel takes square windows, floored (no remainder=ceil), that overlap at
    most two deep (size ≤ 2·stride)."""
    return (args.remainder != "ceil" and all(p.square for p in (args.size, args.stride, args.pad))
            and args.size.h <= 2 * args.stride.h)


def _fused_lrn(args: LRNArgs) -> bool:
    return args.size <= FUSED_MAX_LRN


def _all_towers(args: object, towers: int) -> Reads:
    return "all"


def _gather(args: object, towers: int) -> Reads:
    return "gather"


# --- the ops ----------------------------------------------------------------------------------

OPS: dict[str, OpDef[Any]] = {}


def register(op: OpDef[Any]) -> OpDef[Any]:
    """Add an op under its name and aliases (each name once)."""
    for name in (op.name, *op.aliases):
        if name in OPS:
            raise ValueError(f"op name {name!r} is registered twice")
        OPS[name] = op
    params_of(op.args_type)  # a malformed record fails here, at import, not in a user's check
    return op


register(OpDef(
    "Conv", "2-D convolution, `Conv(size, stride) xC`", ConvArgs, "Conv(3,1, pad=1) x4",
    infer=_conv_infer, count=_conv_count, takes_channels=True, splits_maps=True,
    reads=_conv_reads, window=_conv_window, saves=_conv_saves, autocast=True,
))
register(OpDef(
    "FC", "fully connected layer, `FC(out)`; flattens HxWxC first", FCArgs, "FC(4)",
    infer=_fc_infer, count=_fc_count, channels_hint="FC gives its size as FC(out)",
    splits_maps=True, reads=_all_towers, aliases=("Linear",), window=_whole_window,
    saves=_fc_saves, autocast=True,
))
register(OpDef("ReLU", "max(0, x)", NoArgs, "ReLU", tie=True, fusion_role="relu",
               saves=_saves_output))
register(OpDef("Tanh", "tanh(x)", NoArgs, "Tanh", tie=True, saves=_saves_output))
register(OpDef("Sigmoid", "1 / (1 + exp(-x))", NoArgs, "Sigmoid", tie=True,
               saves=_saves_output))
register(OpDef("LeakyReLU", "x for x ≥ 0, slope·x below", LeakyReLUArgs, "LeakyReLU(0.1)",
               tie=True, saves=_saves_input))
register(OpDef("ReLU6", "min(max(0, x), 6)", NoArgs, "ReLU6", tie=True, saves=_saves_input))
register(OpDef("PReLU", "x for x ≥ 0, a·x below, one learnt a per channel (initially 0.25)",
               NoArgs, "PReLU", count=_per_channel_count, splits_maps=True, tie=True,
               saves=_prelu_saves, autocast=True))
register(OpDef(
    "ResNorm",
    "local response normalisation across channels, paper convention: "
    "b = a / (k + alpha·Σ a²)^beta over `size` neighbouring channels",
    LRNArgs, "ResNorm(3)", infer=_lrn_infer, warnings=_lrn_warnings, fusion_role="lrn",
    fuses=_fused_lrn,
    aliases=("LRN",), saves=_lrn_saves, scratch=_norm_scratch,
))
register(OpDef(
    "MapNorm",
    "local response normalisation within each map: b = a / (k + alpha·Σ a²)^beta over the "
    "size×size pixels around each pixel, zero padded (alpha not divided by size², as ResNorm's "
    "is not by size)",
    MapNormArgs, "MapNorm(3)", infer=_map_norm_infer, window=_map_norm_window,
    saves=_map_norm_saves, scratch=_norm_scratch,
))
register(OpDef(
    "BatchNorm", "batch normalisation per channel (per feature after an FC), as PyTorch's "
    "BatchNorm2d/1d; with towers each tower normalises its own channels",
    BatchNormArgs, "BatchNorm(momentum=0.2)", count=_batch_norm_count, splits_maps=True,
    saves=_batch_norm_saves,
))
register(OpDef("MaxPool", "max over each window", PoolArgs, "MaxPool(2,2)",
               infer=_pool_infer, fusion_role="maxpool",
               fuses=_fused_pool, window=_pool_window, saves=_max_pool_saves))
register(OpDef("AvgPool", "mean over each window", PoolArgs, "AvgPool(3,1, pad=1)",
               infer=_pool_infer, window=_pool_window, saves=_saves_input))
register(OpDef("GlobalAvgPool", "mean over each whole map: HxWxC to 1x1xC", NoArgs,
               "GlobalAvgPool", infer=_global_infer, window=_whole_window))
register(OpDef("AdaptiveAvgPool", "average pooling to HxW maps, whatever the input's",
               AdaptiveArgs, "AdaptiveAvgPool(2)", infer=_adaptive_infer,
               window=_adaptive_window, saves=_adaptive_saves))
register(OpDef("Dropout", "zero each activation with probability p while training",
               DropoutArgs, "Dropout(0.5)", saves=_dropout_saves, training_only=True))
register(OpDef(
    "Concat", "the stages it reads, their channels side by side (GoogLeNet's Inception "
    "modules): `out(b1, b2, b3): Concat`; with towers each tower joins its own shares",
    NoArgs, "Concat", merge=_concat_merge))
register(OpDef(
    "Add", "the element-wise sum of the stages it reads (ResNet's shortcuts): "
    "`sum(b, in): Add + ReLU`", NoArgs, "Add", merge=_add_merge))
register(OpDef("Softmax", "probabilities over the classes; folded into the loss for training",
               NoArgs, "Softmax", reads=_gather, tie=True, final=True,
               saves=_saves_output, autocast_fp32=("cuda",)))


def lookup(name: str) -> OpDef[Any] | None:
    return OPS.get(name)


def suggest(name: str, blocks: Sequence[str] = ()) -> str | None:
    """The known op (or the spec's block) a misspelt name most likely meant (`Relu` → `ReLU`)."""
    by_lower = {k.lower(): k for k in (*OPS, *blocks)}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[close[0]] if close else None


def known_names() -> list[str]:
    return sorted({op.name for op in OPS.values()})


def definitions() -> list[OpDef[Any]]:
    """Every registered op once (aliases folded), in registration order."""
    return list({id(op): op for op in OPS.values()}.values())
