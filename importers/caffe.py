"""Caffe nets (`deploy.prototxt`, `train_val.prototxt`) and their solvers as alexnetc specs.

Caffe lists layers that read and write named blobs; alexnetc writes stages. A Convolution or
InnerProduct starts a stage, and the layers after it that only it feeds (in-place ReLU,
Dropout and BatchNorm with its Scale, then LRN and Pooling) join it, as the paper writes
`conv1: Conv(11,4) x96 + ReLU; ResNorm(5); MaxPool(3,2)`. Concat and Eltwise become merges
reading the stages their bottoms come from. Caffe's conventions are converted on the line
that uses them: its pools round up (`remainder=ceil`), its convolutions round down
(`remainder=drop`), its LRN divides α by the window and defaults k to 1.

Both spellings are read: `layer { type: "Convolution" }` and the V1 `layers { type:
CONVOLUTION }` of BVLC's older model files. The network is Caffe's TRAIN phase, ending at its
last layer (the loss, or `prob` in a deploy file); layers that do not lead there (accuracy,
auxiliary classifiers) are left out. Sizes follow Caffe's own rules (conv_layer.cpp floors,
pooling_layer.cpp takes the ceiling and clips a last window that starts in the padding).
"""

from __future__ import annotations

import difflib
import re
import textwrap
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TypeVar

from alexnetc.compiler.ast import NETWORK_INPUT
from alexnetc.compiler.errors import Diagnostic, Severity, SourceLoc
from alexnetc.compiler.records import Shape
from alexnetc.compiler.registry import lookup
from alexnetc.importers import Format, Imported, Options
from alexnetc.importers.blocks import fold_blocks
from alexnetc.importers.draft import Draft, Op, Stage
from alexnetc.importers.prototxt import Field, Message, Value, parse
from alexnetc.importers.source import INCONSISTENT, MALFORMED, UNSUPPORTED, Source

# --- Caffe's layer types ----------------------------------------------------------------------

# Every layer type BVLC Caffe registers (layer_factory.cpp and REGISTER_LAYER_CLASS).
CAFFE_TYPES = (
    "AbsVal", "Accuracy", "ArgMax", "BatchNorm", "BatchReindex", "Bias", "BNLL", "Clip",
    "Concat", "ContrastiveLoss", "Convolution", "Crop", "Data", "Deconvolution", "Dropout",
    "DummyData", "Eltwise", "ELU", "Embed", "EuclideanLoss", "Exp", "Filter", "Flatten",
    "HDF5Data", "HDF5Output", "HingeLoss", "Im2col", "ImageData", "InfogainLoss",
    "InnerProduct", "Input", "Log", "LRN", "LSTM", "LSTMUnit", "MemoryData",
    "MultinomialLogisticLoss", "MVN", "Parameter", "Pooling", "Power", "PReLU", "Python",
    "Recurrent", "Reduction", "ReLU", "Reshape", "RNN", "Scale", "Sigmoid",
    "SigmoidCrossEntropyLoss", "Silence", "Slice", "Softmax", "SoftmaxWithLoss", "Split", "SPP",
    "Swish", "TanH", "Threshold", "Tile", "WindowData",
)
# V1LayerParameter.LayerType, as Caffe's UpgradeV1LayerType names them today.
V1_TYPES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DATA": "Data", "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}
DATA_TYPES = ("Input", "Data", "ImageData", "MemoryData", "DummyData", "HDF5Data", "WindowData")
# Layers that only watch the network: they never end it and are left out quietly.
OBSERVERS = ("Accuracy", "Silence", "ArgMax")
# Why alexnetc cannot express a Caffe layer type, where there is more to say than its name.
WHY_NOT = {
    "Python": "it runs Python code that alexnetc cannot read",
    "Deconvolution": "alexnetc has no transposed convolution",
    "Crop": "alexnetc has no crop between layers",
    "Slice": "alexnetc cannot split a blob's channels",
    "Reshape": "alexnetc cannot reshape between layers",
    "Bias": "alexnetc adds biases only inside Conv and FC",
    "EuclideanLoss": "alexnetc trains classifiers with the softmax cross-entropy loss",
    "SigmoidCrossEntropyLoss": "alexnetc trains classifiers with the softmax cross-entropy loss",
    "HingeLoss": "alexnetc trains classifiers with the softmax cross-entropy loss",
    "InfogainLoss": "alexnetc trains classifiers with the softmax cross-entropy loss",
    "ContrastiveLoss": "alexnetc trains classifiers with the softmax cross-entropy loss",
}

# The fields of the parameter messages read here (caffe.proto); a near miss is an error.
KNOWN_FIELDS = {
    "convolution_param": (
        "num_output", "bias_term", "pad", "kernel_size", "stride", "dilation", "pad_h", "pad_w",
        "kernel_h", "kernel_w", "stride_h", "stride_w", "group", "weight_filler", "bias_filler",
        "engine", "axis", "force_nd_im2col"),
    "pooling_param": ("pool", "pad", "pad_h", "pad_w", "kernel_size", "kernel_h", "kernel_w",
                      "stride", "stride_h", "stride_w", "engine", "global_pooling",
                      "round_mode"),
    "lrn_param": ("local_size", "alpha", "beta", "norm_region", "k", "engine"),
    "inner_product_param": ("num_output", "bias_term", "weight_filler", "bias_filler", "axis",
                            "transpose"),
    "dropout_param": ("dropout_ratio", "scale_train"),
    "relu_param": ("negative_slope", "engine"),
    "concat_param": ("axis", "concat_dim"),
    "eltwise_param": ("operation", "coeff", "stable_prod_grad"),
    "batch_norm_param": ("use_global_stats", "moving_average_fraction", "eps"),
    "scale_param": ("axis", "num_axes", "filler", "bias_term", "bias_filler"),
    "softmax_param": ("engine", "axis"),
    "prelu_param": ("filler", "channel_shared"),
}


# --- the layers as read ------------------------------------------------------------------------

@dataclass
class Layer:
    """One `layer { }` (or V1 `layers { }`) of the net, its type in today's spelling."""

    index: int
    msg: Message
    loc: SourceLoc  # the `layer` keyword
    name: str
    type: str
    type_loc: SourceLoc
    bottoms: list[Field]
    tops: list[Field]

    @property
    def bottom_names(self) -> list[str]:
        return [_text(f) for f in self.bottoms]

    @property
    def top_names(self) -> list[str]:
        return [_text(f) for f in self.tops]


class Problem(Exception):
    """What stops one layer from converting: a located diagnostic, not yet recorded."""

    def __init__(self, kind: str, loc: SourceLoc, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.diagnostic = Diagnostic(kind, loc, message, hint)


def _text(f: Field) -> str:
    return f.value.text if isinstance(f.value, Value) else ""


# --- reading fields with their types -------------------------------------------------------------

T = TypeVar("T")


def _one(msg: Message, key: str) -> Field | None:
    """A singular field: protobuf refuses one given twice."""
    found = msg.all(key)
    if len(found) > 1:
        raise Problem(MALFORMED, found[1].loc, f"`{key}` is given twice",
                      "a singular field takes one value; remove one")
    return found[0] if found else None


def _opt(msg: Message, key: str, read: Callable[[Field], T], default: T) -> T:
    f = _one(msg, key)
    return default if f is None else read(f)


def _loc(msg: Message, key: str) -> SourceLoc:
    f = msg.get(key)
    return f.loc if f is not None else msg.loc


def _scalar(f: Field, what: str) -> Value:
    if not isinstance(f.value, Value):
        raise Problem(MALFORMED, f.loc, f"`{f.name}` takes {what}, not a message",
                      f"write `{f.name}: VALUE`")
    return f.value


def _int(f: Field, minimum: int = 0) -> int:
    v = _scalar(f, "a whole number")
    try:
        value = int(v.text, 16) if v.text.lower().startswith(("0x", "-0x")) else int(v.text)
    except ValueError:
        raise Problem(MALFORMED, v.loc, f"`{f.name}` takes a whole number, not {_shown(v)}",
                      f"write e.g. `{f.name}: 3`") from None
    if value < minimum:
        raise Problem(MALFORMED, v.loc, f"`{f.name}` must be at least {minimum}, not {value}")
    return value


def _positive(f: Field) -> int:
    return _int(f, 1)


def _signed(f: Field) -> int:
    return _int(f, -(2**31))


def _decimal(f: Field) -> Decimal:
    v = _scalar(f, "a number")
    try:
        if v.kind != "number":
            raise InvalidOperation
        value = Decimal(v.text.rstrip("fF"))
    except InvalidOperation:
        raise Problem(MALFORMED, v.loc, f"`{f.name}` takes a number, not {_shown(v)}",
                      f"write e.g. `{f.name}: 0.5`") from None
    if not value.is_finite():
        raise Problem(MALFORMED, v.loc, f"`{f.name}` must be finite, not {v.text}")
    return value


def _bool(f: Field) -> bool:
    v = _scalar(f, "true or false")
    if v.kind != "string" and v.text in ("true", "True", "t", "1"):
        return True
    if v.kind != "string" and v.text in ("false", "False", "f", "0"):
        return False
    raise Problem(MALFORMED, v.loc, f"`{f.name}` takes true or false, not {_shown(v)}")


def _enum(*choices: str) -> Callable[[Field], str]:
    def read(f: Field) -> str:
        v = _scalar(f, "one of " + ", ".join(choices))
        if v.kind == "word" and v.text in choices:
            return v.text
        close = difflib.get_close_matches(v.text.upper(), choices, n=1, cutoff=0.5)
        raise Problem(MALFORMED, v.loc, f"`{f.name}` takes one of {', '.join(choices)}, "
                      f"not {_shown(v)}", f"did you mean {close[0]}?" if close else "")

    return read


def _string(f: Field) -> str:
    v = _scalar(f, "a string")
    if v.kind != "string":
        raise Problem(MALFORMED, v.loc, f"`{f.name}` takes a \"string\", not {_shown(v)}",
                      f'write `{f.name}: "{v.text}"`')
    return v.text


def _shown(v: Value) -> str:
    return f'"{v.text}"' if v.kind == "string" else f"`{v.text}`"


def _check_fields(msg: Message, key: str, source: Source) -> None:
    """Caffe refuses a field its message lacks: a near miss of a known field is a typo (an
    error); anything else is taken for a fork's extension and ignored with a warning."""
    known = KNOWN_FIELDS[key]
    for f in msg.fields:
        if f.name in known:
            continue
        close = difflib.get_close_matches(f.name, known, n=1, cutoff=0.75)
        if close:
            raise Problem(MALFORMED, f.loc, f"`{key}` has no field `{f.name}`",
                          f"did you mean `{close[0]}`?")
        source.warning(MALFORMED, f.loc, f"`{key}` has no field `{f.name}` in BVLC Caffe; "
                       "alexnetc ignores it", "it may belong to a fork of Caffe")


# --- numbers as the spec writes them -----------------------------------------------------------

def _dec(value: Decimal) -> str:
    """An exact decimal as written (0.00002, not 2e-05), or the float's shortest repr when
    the decimal runs long (0.0001 / 3)."""
    value = value.normalize()
    if value == value.to_integral_value():
        return str(int(value))
    text = format(value, "f")
    return text if len(text) <= 16 else repr(float(value))


def _hw(h: int, w: int) -> str:
    return str(h) if h == w else f"{h}x{w}"


def _call(name: str, positional: Sequence[str], keywords: Sequence[tuple[str, str]]) -> str:
    args = [*positional, *(f"{k}={v}" for k, v in keywords)]
    if not args:
        return name
    head = ",".join(positional)
    rest = ", ".join(f"{k}={v}" for k, v in keywords)
    return f"{name}({head}{', ' if head and rest else ''}{rest})"


# --- sizes, by Caffe's rules ------------------------------------------------------------------

def conv_length(n: int, k: int, s: int, p: int, d: int = 1) -> tuple[int, bool]:
    """conv_layer.cpp: (n + 2p − span) / s + 1 in integers (floor); whether pixels drop."""
    total = n + 2 * p - (d * (k - 1) + 1)
    return total // s + 1, total % s != 0


def pool_length(n: int, k: int, s: int, p: int, ceil: bool) -> tuple[int, bool]:
    """pooling_layer.cpp: the ceiling of (n + 2p − k) / s, plus one; with padding, a last
    window starting in the right padding is dropped; whether the windows do not tile."""
    total = n + 2 * p - k
    out = (-(-total // s) if ceil else total // s) + 1
    if ceil and p and (out - 1) * s >= n + p:
        out -= 1
    return out, total % s != 0


# --- the net: layers in Caffe's TRAIN phase ---------------------------------------------------

@dataclass
class Window:
    """A Convolution's or Pooling's kernel, stride, pad and dilation, each (h, w), and where
    its kernel and pad are written."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int]
    loc: SourceLoc
    pad_loc: SourceLoc


@dataclass
class Blob:
    """What a Caffe blob is in the draft: the stage whose output it is (None: an input), and
    its shape (None: an input whose size nothing states)."""

    stage: Stage | None
    shape: Shape | None
    label: bool = False  # a data layer's labels: read only by losses and accuracies
    flatten: str | None = None  # the Flatten layer that made it (only an FC may read it)


@dataclass
class Versions:
    """Caffe's blobs as versions: an in-place layer writes a new version of its blob. Split,
    Flatten and a one-bottom Concat pass their bottom's version on, so their readers are
    its readers."""

    read: dict[int, list[int]] = field(default_factory=dict)  # layer → versions it reads
    written: dict[int, list[int]] = field(default_factory=dict)  # layer → versions it writes
    readers: dict[int, list[int]] = field(default_factory=dict)  # version → layers reading it

    @classmethod
    def of(cls, layers: list[Layer]) -> Versions:
        out = cls()
        current: dict[str, int] = {}
        fresh = iter(range(1, 1 << 62))
        for layer in layers:
            read = [current.setdefault(b, next(fresh)) for b in layer.bottom_names]
            out.read[layer.index] = read
            alias = _passes_through(layer) and bool(read)
            if not alias:
                for v in dict.fromkeys(read):
                    out.readers.setdefault(v, []).append(layer.index)
            written = [read[0] if alias else next(fresh) for _ in layer.top_names]
            out.written[layer.index] = written
            current.update(zip(layer.top_names, written, strict=True))
        return out

    def sole_reader(self, layer: Layer) -> bool:
        """Whether the layer alone reads the version of its first bottom."""
        read = self.read.get(layer.index) or [0]
        return self.readers.get(read[0], []) == [layer.index]

    def next_readers(self, layer: Layer) -> list[int]:
        """The layers reading the version the layer writes to its first top."""
        written = self.written.get(layer.index) or [0]
        return self.readers.get(written[0], [])


def _passes_through(layer: Layer) -> bool:
    return layer.type in ("Split", "Flatten") or (layer.type == "Concat"
                                                  and len(layer.bottoms) == 1)


def _layers(net: Message, source: Source) -> tuple[list[Layer], set[int]]:
    """Every `layer`/`layers` of the file; those whose type is wrong (reported: Caffe would
    refuse the file) come back as bad, their blobs still known so that readers do not
    report them again."""
    out: list[Layer] = []
    bad: set[int] = set()
    for f in net.fields:
        if f.name not in ("layer", "layers"):
            continue
        if not isinstance(f.value, Message):
            source.error(MALFORMED, f.loc, f"`{f.name}` is a message: `{f.name} {{ … }}`")
            continue
        try:
            layer = _layer(len(out), f)
        except Problem as p:
            source.diagnostics.append(p.diagnostic)
            continue
        try:
            layer.type = _layer_type(f)
        except Problem as p:
            source.diagnostics.append(p.diagnostic)
            bad.add(layer.index)
        out.append(layer)
    return out, bad


def _layer(index: int, f: Field) -> Layer:
    msg = f.value
    assert isinstance(msg, Message)
    if f.name == "layers" and msg.message("layer") is not None:
        raise Problem(UNSUPPORTED, f.loc, "a V0 layer (`layers { layer { … } }`), from before "
                      "Caffe 1.0", "upgrade the file with Caffe's tools/upgrade_net_proto_text")
    name_f = _one(msg, "name")
    for b in (*msg.all("bottom"), *msg.all("top")):
        _string(b)
    name = _string(name_f) if name_f is not None else f"layer{index}"
    type_f = msg.get("type")
    return Layer(index, msg, f.loc, name, "", _value_loc(type_f) if type_f else f.loc,
                 msg.all("bottom"), msg.all("top"))


def _layer_type(f: Field) -> str:
    msg = f.value
    assert isinstance(msg, Message)
    v1 = f.name == "layers"
    type_f = _one(msg, "type")
    if type_f is None:
        raise Problem(MALFORMED, f.loc, f"`{f.name}` has no `type`",
                      "write e.g. `type: CONVOLUTION`" if v1 else
                      'write e.g. `type: "Convolution"`')
    return _v1_type(type_f) if v1 else _new_type(type_f)


def _new_type(f: Field) -> str:
    v = _scalar(f, "a string")
    if v.kind != "string":
        new = V1_TYPES.get(v.text, v.text)
        raise Problem(MALFORMED, v.loc, f"a `layer {{ }}` names its type as a string, not "
                      f"`{v.text}`", f'write `type: "{new}"` (the enum `{v.text}` is for V1 '
                      "`layers { }`)")
    if v.text in CAFFE_TYPES:
        return v.text
    by_lower = {t.lower(): t for t in CAFFE_TYPES}
    close = difflib.get_close_matches(v.text.lower(), list(by_lower), n=1, cutoff=0.75)
    if v.text.lower() in by_lower or close:
        meant = by_lower.get(v.text.lower()) or by_lower[close[0]]
        raise Problem(MALFORMED, v.loc, f"unknown layer type \"{v.text}\"",
                      f'did you mean "{meant}"?')
    return v.text  # a fork's or a custom layer: unsupported if the network needs it


def _v1_type(f: Field) -> str:
    v = _scalar(f, "an enum")
    if v.kind == "string":
        raise Problem(MALFORMED, v.loc, f"a V1 `layers {{ }}` names its type with an enum, not "
                      f"\"{v.text}\"", "write e.g. `type: CONVOLUTION`, or use `layer { type: "
                      f"\"{v.text}\" }}`")
    if v.text in V1_TYPES:
        return V1_TYPES[v.text]
    close = difflib.get_close_matches(v.text.upper(), list(V1_TYPES), n=1, cutoff=0.6)
    raise Problem(MALFORMED, v.loc, f"unknown V1 layer type `{v.text}`",
                  f"did you mean {close[0]}?" if close else
                  "V1 types are enums such as CONVOLUTION, POOLING, RELU")


def _in_train_phase(layer: Layer) -> bool:
    """NetStateRule against Caffe's TRAIN state (level 0, no stages): included if any
    `include` rule holds (or there is none), excluded if any `exclude` rule holds."""
    def holds(rule: Message) -> bool:
        if _opt(rule, "phase", _enum("TRAIN", "TEST"), "TRAIN") != "TRAIN":
            return False
        if _opt(rule, "min_level", _signed, 0) > 0 or _opt(rule, "max_level", _signed, 0) < 0:
            return False
        return not rule.all("stage")

    includes, excludes = layer.msg.messages("include"), layer.msg.messages("exclude")
    if includes and not any(holds(r) for r in includes):
        return False
    return not any(holds(r) for r in excludes)


def _known_bottoms(layers: list[Layer], inputs: Iterable[str], source: Source) -> set[int]:
    """Caffe runs the layers in the order written: each bottom must be a top above it (or a
    net input). Reports each that is not; returns the layers that read one."""
    made: set[str] = set(inputs)
    first_maker: dict[str, Layer] = {}
    for layer in layers:
        for t in layer.top_names:
            first_maker.setdefault(t, layer)
    bad: set[int] = set()
    for layer in layers:
        for b in layer.bottoms:
            name = _text(b)
            if name in made:
                continue
            bad.add(layer.index)
            loc = _value_loc(b)
            maker = first_maker.get(name)
            if maker is not None:
                source.error(INCONSISTENT, loc, f"bottom \"{name}\" of '{layer.name}' is made "
                             f"only later, by '{maker.name}' (line {maker.loc.line})",
                             "Caffe runs the layers in the order written: move this layer "
                             "below it")
                continue
            close = difflib.get_close_matches(name, sorted(made), n=1, cutoff=0.6)
            source.error(INCONSISTENT, loc, f"bottom \"{name}\" of '{layer.name}' is made by "
                         "no layer above it",
                         f'did you mean "{close[0]}"?' if close else
                         "a bottom names a top of an earlier layer, or a net `input`")
        made.update(layer.top_names)
    return bad


def _value_loc(f: Field) -> SourceLoc:
    return f.value.loc if isinstance(f.value, Value) else f.loc


def _output_path(layers: list[Layer]) -> tuple[list[Layer], list[Layer]]:
    """The layers the network's output depends on (the output being the last layer that is
    not an accuracy or the like), and those left out, walking Caffe's blobs backwards (an
    in-place layer keeps its blob needed)."""
    ends = [layer for layer in layers if layer.type not in OBSERVERS]
    if not ends:
        return [], layers
    end = ends[-1]
    needed = set(end.bottom_names)
    kept = [end]
    for layer in reversed(layers[: layers.index(end)]):
        tops = set(layer.top_names)
        if not tops & needed:
            continue
        kept.append(layer)
        needed = (needed - tops) | set(layer.bottom_names)
    kept.reverse()
    chosen = {layer.index for layer in kept}
    return kept, [layer for layer in layers if layer.index not in chosen]


# --- converting the layers --------------------------------------------------------------------

@dataclass
class Fillers:
    """What the fillers of the Convolution and InnerProduct layers state: the init line's
    std and bias (the commonest), and the filler types alexnetc cannot draw, with layers."""

    std: Decimal | None = None
    bias: Decimal | None = None
    other: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Recipe:
    """What the net itself says about training: its TRAIN data layer, its multipliers."""

    batch: int | None = None
    flip: bool | None = None
    scale: str | None = None
    data_layer: bool = False  # a TRAIN data layer states the augmentation
    multipliers: dict[str, list[str]] = field(default_factory=dict)  # pattern → layers
    shared: dict[str, str] = field(default_factory=dict)  # param name → layer


class Converter:
    """Caffe's layers, in order, into the draft's stages."""

    def __init__(self, source: Source, net: Message, options: Options, draft: Draft,
                 layers: list[Layer]) -> None:
        self.source = source
        self.net = net
        self.options = options
        self.draft = draft
        self.layers = {layer.index: layer for layer in layers}
        self.versions = Versions.of(layers)
        self.fillers = _fillers(layers)
        self.recipe = Recipe()
        self.last = layers[-1] if layers else None
        self.blobs: dict[str, Blob] = {}
        self.unusable: dict[str, Problem] = {}  # inputs without an image's size, and why
        self.kinds: dict[str, str] = {}  # stage name → "weighted", "merge" or "other"
        self.image: str | None = None  # the input blob the network reads
        self.stated: tuple[int, int, int] | None = None  # the input size the file states
        self.folded: dict[int, str] = {}  # Scale layers taken into their BatchNorm
        self.poisoned: set[str] = set()  # blobs of layers that failed: readers are skipped
        self.cut = False

    def run(self, bad: set[int]) -> None:
        self._net_inputs()
        handlers = self._handlers()
        for layer in self.layers.values():
            if self.cut:
                break
            if layer.index in bad or any(b in self.poisoned for b in layer.bottom_names):
                self.poisoned.update(layer.top_names)
                continue
            try:
                handlers.get(layer.type, self._unsupported)(layer)
            except Problem as p:
                self._failed(layer, p)

    def _failed(self, layer: Layer, p: Problem) -> None:
        d = p.diagnostic
        if (d.kind == UNSUPPORTED and self.options.skip_unsupported and not self.source.errors
                and self.draft.stages):
            self.source.warning(UNSUPPORTED, d.loc, f"{d.message}; the network is cut before "
                                f"'{layer.name}' (--skip-unsupported)", d.hint)
            self.cut = True
            return
        self.source.diagnostics.append(d)
        self.poisoned.update(layer.top_names)

    def _handlers(self) -> dict[str, Callable[[Layer], None]]:
        table: dict[str, Callable[[Layer], None]] = {
            "Convolution": self._conv, "InnerProduct": self._fc, "Pooling": self._pool,
            "LRN": self._lrn, "ReLU": self._relu, "PReLU": self._prelu,
            "TanH": self._activation, "Sigmoid": self._activation, "Dropout": self._dropout,
            "BatchNorm": self._batch_norm, "Scale": self._scale, "Concat": self._concat,
            "Eltwise": self._eltwise, "Softmax": self._softmax,
            "SoftmaxWithLoss": self._softmax, "Split": self._split, "Flatten": self._flatten,
        }
        return table | dict.fromkeys(DATA_TYPES, self._data)

    # inputs ----------------------------------------------------------------------------------

    def _net_inputs(self) -> None:
        """`input: "data"` with `input_dim` ×4 or `input_shape { dim … }` (deploy files)."""
        names = self.net.all("input")
        dims = self.net.all("input_dim")
        shapes = self.net.messages("input_shape")
        if dims and len(dims) != 4 * len(names):
            raise Problem(MALFORMED, dims[0].loc, f"{len(dims)} `input_dim` values for "
                          f"{len(names)} input(s)", "give four per input: N, C, H and W")
        for i, f in enumerate(names):
            size = ([_positive(d) for d in dims[4 * i: 4 * i + 4]] if dims else
                    [_positive(d) for d in shapes[i].all("dim")] if i < len(shapes) else None)
            self._image_blob(_string(f), size, f.loc, "the net states no `input_dim` or "
                             "`input_shape` for it: give its size with --input HxWxC")

    def _image_blob(self, name: str, dims: list[int] | None, loc: SourceLoc, hint: str) -> None:
        """An input blob of N, C, H, W: its size from --input if given, else from the file.
        One that has no size, or not four dimensions, is an error only once a layer reads
        it (a deploy file may declare labels it never uses)."""
        shape = Shape(dims[2], dims[3], dims[1]) if dims is not None and len(dims) == 4 else None
        if shape is not None and self.stated is None:
            self.stated = (shape.h, shape.w, shape.c)
        if self.options.input is not None:
            shape = Shape(*self.options.input)
        elif dims is not None and shape is None:
            self.unusable[name] = Problem(
                UNSUPPORTED, loc, f"the input \"{name}\" has {len(dims)} dimensions "
                f"({'x'.join(map(str, dims))})", "alexnetc's input is an image: N, C, H and W")
        elif shape is None:
            self.unusable[name] = Problem(INCONSISTENT, loc, f"the size of the input \"{name}\" "
                                          "is not stated", hint)
        self.blobs[name] = Blob(None, shape)

    def _data(self, layer: Layer) -> None:
        """A data layer's first top is the image, its second the labels; the image's size is
        the crop (Data, ImageData, WindowData) or what Input, MemoryData, DummyData state."""
        tops = layer.top_names
        if not tops:
            raise Problem(MALFORMED, layer.loc, f"data layer '{layer.name}' has no `top`")
        if layer.type == "Input":
            param = layer.msg.message("input_param")
            shapes = param.messages("shape") if param is not None else []
            for i, t in enumerate(tops):  # one shape for every top, or one for each
                shape = shapes[0] if len(shapes) == 1 else shapes[i] if i < len(shapes) else None
                self._image_blob(t, [_positive(d) for d in shape.all("dim")] if shape else None,
                                 shape.loc if shape else layer.loc,
                                 "the Input layer states no shape: give it with --input HxWxC")
            return
        dims, hint = self._data_dims(layer)
        self._image_blob(tops[0], dims, layer.loc, hint)
        for t in tops[1:]:
            self.blobs[t] = Blob(None, Shape(1, 1, 1, flat=True), label=True)
        self._data_recipe(layer)

    def _data_dims(self, layer: Layer) -> tuple[list[int] | None, str]:
        """N, C, H, W of a data layer's images (N unknown: 1), and what to do if unknown."""
        msg = layer.msg
        if layer.type in ("MemoryData", "DummyData"):
            return _stated_dims(msg), (f"the {layer.type} layer states no size: give it with "
                                       "--input HxWxC")
        channels = _channels(msg)
        side = _crop(msg)
        if side is not None:
            return [1, channels, *side], ""
        source = ""
        for key in ("data_param", "image_data_param", "hdf5_data_param", "window_data_param"):
            p = msg.message(key)
            if p is not None and p.get("source") is not None:
                source = f" ({_opt(p, 'source', _string, '')})"
        return None, (f"the {layer.type} layer takes its images' size from its data{source}: "
                      f"give it with --input HxWxC, e.g. --input 227x227x{channels}")

    def _data_recipe(self, layer: Layer) -> None:
        """The TRAIN data layer's batch size, mirroring and pixel scale (in transform_param,
        or the older data_param fields it replaced)."""
        self.recipe.data_layer = True
        self.recipe.flip = False  # Caffe's default
        params = [layer.msg.message(k) for k in ("transform_param", "data_param",
                                                  "image_data_param", "window_data_param",
                                                  "memory_data_param", "hdf5_data_param")]
        for p in reversed([p for p in params if p is not None]):
            if p.get("batch_size") is not None:
                self.recipe.batch = _opt(p, "batch_size", _positive, 1)
            if p.get("mirror") is not None:
                self.recipe.flip = _opt(p, "mirror", _bool, False)
            scale = _opt(p, "scale", _decimal, Decimal(1))
            if scale != 1:
                self.recipe.scale = _dec(scale)

    # reading blobs ------------------------------------------------------------------------------

    def _bottom(self, layer: Layer, i: int = 0) -> Blob:
        """The blob a layer reads as an image (never the labels)."""
        name = layer.bottom_names[i]
        loc = _value_loc(layer.bottoms[i])
        blob = self.blobs.get(name)
        if blob is None:
            raise Problem(INCONSISTENT, loc, f"'{layer.name}' reads \"{name}\", which no layer "
                          "alexnetc converts makes", "a bottom names a top of an earlier layer")
        if blob.label:
            raise Problem(UNSUPPORTED, loc, f"'{layer.name}' reads the labels \"{name}\"",
                          "alexnetc's layers read images; only the loss reads labels")
        if name in self.unusable:
            self.poisoned.add(name)  # said once, not again for each reader
            raise self.unusable[name]
        if blob.stage is None:
            if self.image is not None and self.image != name:
                raise Problem(UNSUPPORTED, loc, f"'{layer.name}' reads a second input "
                              f"\"{name}\" (the first is \"{self.image}\")",
                              "alexnetc networks have one input image")
            self.image = name
        if blob.flatten is not None and layer.type != "InnerProduct":
            raise Problem(UNSUPPORTED, loc, f"'{layer.name}' ({layer.type}) reads the output "
                          f"of Flatten '{blob.flatten}'", "alexnetc flattens only into an FC")
        return blob

    def _one_bottom(self, layer: Layer) -> tuple[Blob, Shape]:
        if len(layer.bottoms) != 1 or len(layer.tops) != 1:
            raise Problem(MALFORMED, layer.loc, f"{layer.type} '{layer.name}' takes one bottom "
                          f"and makes one top, not {len(layer.bottoms)} and {len(layer.tops)}")
        blob = self._bottom(layer)
        assert blob.shape is not None
        return blob, blob.shape

    def _param(self, layer: Layer, key: str, required: bool = False) -> Message:
        p = layer.msg.message(key)
        if p is None:
            if required:
                raise Problem(MALFORMED, layer.loc, f"{layer.type} '{layer.name}' has no "
                              f"`{key}`", f"give it, e.g. `{key} {{ num_output: 96 }}`")
            return Message(layer.loc)
        _check_fields(p, key, self.source)
        return p

    # stages ---------------------------------------------------------------------------------------

    def _new_stage(self, layer: Layer, op: str, reads: list[Blob], kind: str,
                   comments: Sequence[str] = ()) -> Stage:
        sources = tuple(b.stage.name if b.stage is not None else NETWORK_INPUT for b in reads)
        above = self.draft.stages[-1].name if self.draft.stages else NETWORK_INPUT
        stage = self.draft.add(layer.name, [Op(op)], comments=list(comments))
        stage.sources = None if sources == (above,) else sources
        self.kinds[stage.name] = kind
        return stage

    def _chain(self, layer: Layer, op: str, shape: Shape, comments: Sequence[str] = (),
               blob: Blob | None = None) -> None:
        """A one-in, one-out layer: appended to the stage its bottom ends where it alone reads
        that blob (after a merge only an activation is), else a stage of its own."""
        blob = blob if blob is not None else self._one_bottom(layer)[0]
        definition = lookup(op.split("(")[0])
        tie = definition is not None and definition.tie
        stage = blob.stage
        if (stage is not None and self.versions.sole_reader(layer)
                and (tie or self.kinds[stage.name] != "merge")):
            stage.ops.append(Op(op, tied=tie))
            stage.comments.extend(comments)
        else:
            stage = self._new_stage(layer, op, [blob], "other", comments)
        self._made(layer, stage, shape)

    def _made(self, layer: Layer, stage: Stage | None, shape: Shape,
              flatten: str | None = None) -> None:
        for t in layer.top_names:
            self.blobs[t] = Blob(stage, shape, flatten=flatten)

    # the layer types --------------------------------------------------------------------------

    def _unsupported(self, layer: Layer) -> None:
        if layer.type in CAFFE_TYPES:
            why = WHY_NOT.get(layer.type, f"alexnetc has no counterpart of Caffe's {layer.type} "
                              "layer")
            python = layer.msg.message("python_param")
            if python is not None:
                code = ".".join(_opt(python, k, _string, "?") for k in ("module", "layer"))
                why = f"it runs Python code ({code}) that alexnetc cannot read"
            raise Problem(UNSUPPORTED, layer.type_loc, f"{layer.type} layer '{layer.name}': "
                          f"{why}", "rewrite the network without it, or import the part "
                          "before it with --skip-unsupported")
        raise Problem(UNSUPPORTED, layer.type_loc, f"layer type \"{layer.type}\" of "
                      f"'{layer.name}' is not BVLC Caffe's (a fork's or a custom layer?)",
                      "alexnetc reads BVLC Caffe's layer types; --skip-unsupported imports "
                      "the part before it")

    def _conv(self, layer: Layer) -> None:
        p = self._param(layer, "convolution_param", required=True)
        blob, shape = self._one_bottom(layer)
        out = _count(p, layer)
        _channel_axis(p, layer)
        window = _window(p, layer, conv=True)
        group = _opt(p, "group", _positive, 1)
        size, uneven = _slide(shape, window, layer, conv=True)
        keywords = _window_keywords(window)
        if group != 1:
            keywords.append(("groups", str(group)))
        comments = []
        if uneven:
            keywords.append(("remainder", "drop"))
            comments.append("Caffe floors: remainder=drop")
        keywords += self._init_keywords(p)
        op = _call("Conv", [_hw(*window.kernel), _hw(*window.stride)], keywords) + f" x{out}"
        stage = self._new_stage(layer, op, [blob], "weighted", comments)
        self._made(layer, stage, Shape(size.h, size.w, out))
        self._multipliers(layer, 2 if _opt(p, "bias_term", _bool, True) else 1)

    def _fc(self, layer: Layer) -> None:
        p = self._param(layer, "inner_product_param", required=True)
        blob, _ = self._one_bottom(layer)
        out = _count(p, layer)
        _channel_axis(p, layer)
        comments = []
        if blob.flatten is not None:
            comments.append(f"Flatten '{blob.flatten}' left out: FC flattens its input")
        op = _call("FC", [str(out)], self._init_keywords(p))
        stage = self._new_stage(layer, op, [blob], "weighted", comments)
        self._made(layer, stage, Shape(1, 1, out, flat=True))
        self._multipliers(layer, 2 if _opt(p, "bias_term", _bool, True) else 1)

    def _init_keywords(self, p: Message) -> list[tuple[str, str]]:
        """`bias=false`, and `std=`/`bias=` where the fillers differ from the init line."""
        weight, bias = p.message("weight_filler"), p.message("bias_filler")
        std = _gaussian_std(weight) if weight is not None else None
        out = [("std", _dec(std))] if std is not None and std != self.fillers.std else []
        if not _opt(p, "bias_term", _bool, True):
            return [("bias", "false"), *out]
        value = _constant(bias) if bias is not None else \
            Decimal(0) if weight is not None else None  # Caffe's default bias filler
        if value is not None and value != self.fillers.bias:
            out.insert(0, ("bias", _dec(value)))
        return out

    def _pool(self, layer: Layer) -> None:
        p = self._param(layer, "pooling_param")
        blob, shape = self._one_bottom(layer)
        method = _opt(p, "pool", _enum("MAX", "AVE", "STOCHASTIC"), "MAX")
        if method == "STOCHASTIC":
            raise Problem(UNSUPPORTED, _loc(p, "pool"), "stochastic pooling",
                          "alexnetc pools by MAX or AVE")
        if _opt(p, "global_pooling", _bool, False):
            self._global_pool(layer, blob, shape, method)
            return
        ceil = _opt(p, "round_mode", _enum("CEIL", "FLOOR"), "CEIL") == "CEIL"
        window = _window(p, layer, conv=False)
        size, uneven = _slide(shape, window, layer, conv=False, ceil=ceil)
        keywords = _window_keywords(window)
        comments = []
        if uneven:
            keywords.append(("remainder", "ceil" if ceil else "drop"))
            comments.append("Caffe rounds up: remainder=ceil" if ceil else
                            "round_mode FLOOR: remainder=drop")
        name = "MaxPool" if method == "MAX" else "AvgPool"
        op = _call(name, [_hw(*window.kernel), _hw(*window.stride)], keywords)
        self._chain(layer, op, size, comments, blob)

    def _global_pool(self, layer: Layer, blob: Blob, shape: Shape, method: str) -> None:
        if shape.flat:
            raise Problem(UNSUPPORTED, layer.loc, f"global pooling of a flat vector in "
                          f"'{layer.name}'", "pool HxWxC maps")
        if method == "AVE":
            self._chain(layer, "GlobalAvgPool", Shape(1, 1, shape.c), (), blob)
            return
        self._chain(layer, f"MaxPool({_hw(shape.h, shape.w)},1)", Shape(1, 1, shape.c),
                    [f"global_pooling over {shape.h}x{shape.w}"], blob)

    def _lrn(self, layer: Layer) -> None:
        p = self._param(layer, "lrn_param")
        blob, shape = self._one_bottom(layer)
        region = _opt(p, "norm_region", _enum("ACROSS_CHANNELS", "WITHIN_CHANNEL"),
                      "ACROSS_CHANNELS")
        if region == "WITHIN_CHANNEL":
            raise Problem(UNSUPPORTED, _loc(p, "norm_region"), f"LRN '{layer.name}' normalises "
                          "within each channel (norm_region: WITHIN_CHANNEL)",
                          "alexnetc's ResNorm normalises across channels, as the paper's")
        size = _opt(p, "local_size", _positive, 5)
        if size % 2 == 0:
            raise Problem(MALFORMED, _loc(p, "local_size"), f"local_size {size} is even",
                          "Caffe's LRN takes odd sizes only")
        alpha = _opt(p, "alpha", _decimal, Decimal(1))
        beta = _opt(p, "beta", _decimal, Decimal("0.75"))
        k = _opt(p, "k", _decimal, Decimal(1))
        keywords = [("alpha", _dec(alpha / size)), ("k", _dec(k))]
        if beta != Decimal("0.75"):
            keywords.append(("beta", _dec(beta)))
        note = (f"Caffe LRN: alpha {_dec(alpha)} / local_size {size}"
                + ("" if p.get("k") else ", default k 1"))
        self._chain(layer, _call("ResNorm", [str(size)], keywords), shape, [note], blob)

    def _relu(self, layer: Layer) -> None:
        p = self._param(layer, "relu_param")
        blob, shape = self._one_bottom(layer)
        slope = _opt(p, "negative_slope", _decimal, Decimal(0))
        if slope < 0:
            raise Problem(UNSUPPORTED, _loc(p, "negative_slope"), f"a negative slope "
                          f"({_dec(slope)})", "alexnetc's LeakyReLU takes slopes of 0 or more")
        self._chain(layer, "ReLU" if slope == 0 else f"LeakyReLU({_dec(slope)})", shape, (),
                    blob)

    def _prelu(self, layer: Layer) -> None:
        p = self._param(layer, "prelu_param")
        blob, shape = self._one_bottom(layer)
        if _opt(p, "channel_shared", _bool, False):
            raise Problem(UNSUPPORTED, _loc(p, "channel_shared"), "one PReLU slope shared by "
                          "every channel", "alexnetc's PReLU learns one slope per channel")
        filler = p.message("filler")
        start = _constant(filler) if filler is not None else Decimal("0.25")
        comments = [] if start == Decimal("0.25") else [
            f"Caffe starts the slopes at {_dec(start) if start is not None else 'its filler'}, "
            "alexnetc at 0.25"]
        self._chain(layer, "PReLU", shape, comments, blob)

    def _activation(self, layer: Layer) -> None:
        blob, shape = self._one_bottom(layer)
        self._chain(layer, "Tanh" if layer.type == "TanH" else "Sigmoid", shape, (), blob)

    def _dropout(self, layer: Layer) -> None:
        p = self._param(layer, "dropout_param")
        blob, shape = self._one_bottom(layer)
        ratio = _opt(p, "dropout_ratio", _decimal, Decimal("0.5"))
        if not 0 <= ratio <= 1:
            raise Problem(MALFORMED, _loc(p, "dropout_ratio"), f"dropout_ratio {_dec(ratio)} "
                          "is not a probability", "give a value from 0 to 1")
        self._chain(layer, f"Dropout({_dec(ratio)})", shape, (), blob)

    def _batch_norm(self, layer: Layer) -> None:
        p = self._param(layer, "batch_norm_param")
        blob, shape = self._one_bottom(layer)
        scale = self._scale_after(layer)
        fraction = _opt(p, "moving_average_fraction", _decimal, Decimal("0.999"))
        eps = _opt(p, "eps", _decimal, Decimal("1e-5"))
        if not 0 <= fraction <= 1:
            raise Problem(MALFORMED, _loc(p, "moving_average_fraction"),
                          f"moving_average_fraction {_dec(fraction)} is not in [0, 1]")
        keywords = [] if eps == Decimal("1e-5") else [("eps", _dec(eps))]
        keywords.append(("momentum", _dec(1 - fraction)))
        note = f"Caffe BatchNorm+Scale: momentum 1 − {_dec(fraction)}"
        self._chain(layer, _call("BatchNorm", [], keywords), shape, [note], blob)
        self.folded[scale.index] = layer.name

    def _scale_after(self, layer: Layer) -> Layer:
        """The Scale layer that alone reads the BatchNorm's output, with a bias: together
        they are alexnetc's BatchNorm (Caffe's BatchNorm learns no scale or shift)."""
        readers = self.versions.next_readers(layer)
        scale = self.layers.get(readers[0]) if len(readers) == 1 else None
        if scale is None or scale.type != "Scale":
            raise Problem(UNSUPPORTED, layer.type_loc, f"BatchNorm '{layer.name}' without a "
                          "Scale layer after it", "Caffe's BatchNorm only normalises; alexnetc's "
                          "also learns a scale and a shift, which Caffe writes as a Scale layer "
                          "(bias_term: true) right after it")
        p = self._param(scale, "scale_param")
        if not _opt(p, "bias_term", _bool, False):
            raise Problem(UNSUPPORTED, scale.type_loc, f"Scale '{scale.name}' after BatchNorm "
                          f"'{layer.name}' has no bias (bias_term: false)", "alexnetc's "
                          "BatchNorm learns a shift as well as a scale: give the Scale "
                          "`bias_term: true`")
        if len(scale.bottoms) != 1 or _opt(p, "axis", _signed, 1) != 1 \
                or _opt(p, "num_axes", _signed, 1) != 1:
            raise Problem(UNSUPPORTED, scale.loc, f"Scale '{scale.name}' scales other than one "
                          "factor per channel", "alexnetc's BatchNorm learns one per channel")
        return scale

    def _scale(self, layer: Layer) -> None:
        if layer.index not in self.folded:
            raise Problem(UNSUPPORTED, layer.type_loc, f"Scale '{layer.name}' does not follow "
                          "a BatchNorm", "alexnetc scales only inside BatchNorm")
        blob, shape = self._one_bottom(layer)
        self._made(layer, blob.stage, shape)

    def _concat(self, layer: Layer) -> None:
        p = self._param(layer, "concat_param")
        if not layer.bottoms or len(layer.tops) != 1:
            raise Problem(MALFORMED, layer.loc, f"Concat '{layer.name}' needs bottoms and one "
                          "top")
        blobs = [self._bottom(layer, i) for i in range(len(layer.bottoms))]
        shapes = [b.shape for b in blobs if b.shape is not None]
        if len(blobs) == 1:
            self._made(layer, blobs[0].stage, shapes[0])
            return
        axis_f = _one(p, "axis") or _one(p, "concat_dim")
        axis = _signed(axis_f) if axis_f is not None else 1
        first = shapes[0]
        if axis not in ((1, -1) if first.flat else (1, -3)):
            raise Problem(UNSUPPORTED, axis_f.loc if axis_f else layer.loc,
                          f"Concat '{layer.name}' joins along axis {axis}",
                          "alexnetc concatenates channels (axis 1) only")
        for i, s in enumerate(shapes[1:], start=1):
            if (s.h, s.w, s.flat) != (first.h, first.w, first.flat):
                raise Problem(INCONSISTENT, _value_loc(layer.bottoms[i]), f"Concat "
                              f"'{layer.name}' joins {first} and {s}", "Caffe concatenates "
                              "maps of one height and width")
        stage = self._new_stage(layer, "Concat", blobs, "merge")
        self._made(layer, stage, Shape(first.h, first.w, sum(s.c for s in shapes), first.flat))

    def _eltwise(self, layer: Layer) -> None:
        p = self._param(layer, "eltwise_param")
        operation = _opt(p, "operation", _enum("PROD", "SUM", "MAX"), "SUM")
        if operation != "SUM":
            raise Problem(UNSUPPORTED, _loc(p, "operation"), f"Eltwise {operation} in "
                          f"'{layer.name}'", "alexnetc adds (Add); it has no element-wise "
                          "product or maximum")
        for f in p.all("coeff"):
            if _decimal(f) != 1:
                raise Problem(UNSUPPORTED, f.loc, f"Eltwise '{layer.name}' weighs a bottom by "
                              f"{_dec(_decimal(f))}", "alexnetc's Add sums its inputs "
                              "unweighted")
        if len(layer.bottoms) < 2 or len(layer.tops) != 1:
            raise Problem(MALFORMED, layer.loc, f"Eltwise '{layer.name}' needs two bottoms or "
                          "more, and one top")
        blobs = [self._bottom(layer, i) for i in range(len(layer.bottoms))]
        shapes = [b.shape for b in blobs if b.shape is not None]
        for i, s in enumerate(shapes[1:], start=1):
            if s != shapes[0]:
                raise Problem(INCONSISTENT, _value_loc(layer.bottoms[i]), f"Eltwise "
                              f"'{layer.name}' adds {shapes[0]} and {s}", "Caffe adds blobs "
                              "of one shape")
        stage = self._new_stage(layer, "Add", blobs, "merge")
        self._made(layer, stage, shapes[0])

    def _softmax(self, layer: Layer) -> None:
        if layer is not self.last:
            raise Problem(UNSUPPORTED, layer.type_loc, f"{layer.type} '{layer.name}' before "
                          "the network's end", "alexnetc applies Softmax as the last op only")
        p = self._param(layer, "softmax_param")
        if _opt(p, "axis", _signed, 1) not in (1, -1):
            raise Problem(UNSUPPORTED, _loc(p, "axis"), "a softmax over another axis than the "
                          "classes", "alexnetc's Softmax is over the classes (axis 1)")
        if layer.type == "Softmax":
            blob, shape = self._one_bottom(layer)
            self._chain(layer, "Softmax", shape, (), blob)
            return
        if not layer.bottoms:
            raise Problem(MALFORMED, layer.loc, f"SoftmaxWithLoss '{layer.name}' has no bottom")
        blob = self._bottom(layer)
        assert blob.shape is not None
        self._chain(layer, "Softmax", blob.shape,
                    [f"SoftmaxWithLoss '{layer.name}': the loss's softmax"], blob)

    def _split(self, layer: Layer) -> None:
        if len(layer.bottoms) != 1:
            raise Problem(MALFORMED, layer.loc, f"Split '{layer.name}' takes one bottom")
        blob = self._bottom(layer)
        assert blob.shape is not None
        self._made(layer, blob.stage, blob.shape)

    def _flatten(self, layer: Layer) -> None:
        blob, shape = self._one_bottom(layer)
        self._made(layer, blob.stage, Shape(1, 1, shape.elements, flat=True), layer.name)

    # per-layer training settings ----------------------------------------------------------------

    def _multipliers(self, layer: Layer, blobs: int) -> None:
        """Caffe's lr_mult/decay_mult (V1: blobs_lr/weight_decay) per parameter blob, and
        weight sharing by param name (which changes what is counted: not expressible)."""
        specs = layer.msg.messages("param")
        if specs:
            pairs = [(_opt(s, "lr_mult", _decimal, Decimal(1)),
                      _opt(s, "decay_mult", _decimal, Decimal(1))) for s in specs]
            for s in specs:
                self._shared(layer, s.get("name"))
        else:
            lrs = [_decimal(f) for f in layer.msg.all("blobs_lr")]
            decays = [_decimal(f) for f in layer.msg.all("weight_decay")]
            pairs = [(lrs[i] if i < len(lrs) else Decimal(1),
                      decays[i] if i < len(decays) else Decimal(1))
                     for i in range(max(len(lrs), len(decays)))]
            for f in layer.msg.all("param"):
                self._shared(layer, f)
        what = ("weights", "biases")
        text = "; ".join(f"{what[i]} lr ×{_dec(lr)}, decay ×{_dec(decay)}"
                         for i, (lr, decay) in enumerate(pairs[:blobs]))
        if text:
            self.recipe.multipliers.setdefault(text, []).append(layer.name)

    def _shared(self, layer: Layer, f: Field | None) -> None:
        name = _string(f) if f is not None else ""
        if not name:
            return
        shared = self.recipe.shared
        if name in shared:
            raise Problem(UNSUPPORTED, f.loc if f else layer.loc, f"'{layer.name}' shares its "
                          f"parameter \"{name}\" with '{shared[name]}'", "alexnetc's layers "
                          "never share weights")
        shared[name] = layer.name


def _stated_dims(msg: Message) -> list[int] | None:
    """The size MemoryData or DummyData states: a `shape`, or channels, height and width."""
    p = msg.message("memory_data_param") or msg.message("dummy_data_param")
    if p is None:
        return None
    shapes = p.messages("shape")
    if shapes:
        return [_positive(d) for d in shapes[0].all("dim")]
    c, h, w = (p.get(k) for k in ("channels", "height", "width"))
    if c is None or h is None or w is None:
        return None
    return [1, _positive(c), _positive(h), _positive(w)]


def _crop(msg: Message) -> tuple[int, int] | None:
    """The crop a data layer takes (transform_param, or the deprecated fields), else the size
    ImageData resizes to."""
    for key in ("transform_param", "data_param", "image_data_param", "window_data_param"):
        p = msg.message(key)
        if p is None:
            continue
        side = _opt(p, "crop_size", _int, 0)
        if side:
            return side, side
        h, w = _opt(p, "crop_h", _int, 0), _opt(p, "crop_w", _int, 0)
        if h and w:
            return h, w
    p = msg.message("image_data_param")
    if p is not None:
        h, w = _opt(p, "new_height", _int, 0), _opt(p, "new_width", _int, 0)
        if h and w:
            return h, w
    return None


def _channels(msg: Message) -> int:
    """Colour unless the layer says grey (`force_gray`, ImageData's `is_color: false`)."""
    t = msg.message("transform_param")
    if t is not None and _opt(t, "force_gray", _bool, False):
        return 1
    p = msg.message("image_data_param")
    return 1 if p is not None and not _opt(p, "is_color", _bool, True) else 3


def _count(p: Message, layer: Layer) -> int:
    f = _one(p, "num_output")
    if f is None:
        raise Problem(MALFORMED, p.loc, f"{layer.type} '{layer.name}' has no `num_output`",
                      "give the number of outputs, e.g. `num_output: 96`")
    return _positive(f)


def _channel_axis(p: Message, layer: Layer) -> None:
    if _opt(p, "axis", _signed, 1) != 1:
        raise Problem(UNSUPPORTED, _loc(p, "axis"), f"{layer.type} '{layer.name}' works on "
                      "another axis than 1", "alexnetc's Conv and FC read whole images")


def _window(p: Message, layer: Layer, conv: bool) -> Window:
    """kernel/stride/pad (each one value, two for HxW, or the _h/_w pair) and dilation, as
    Caffe's base_conv_layer.cpp and pooling_layer.cpp read them."""
    kernel, kernel_loc = _pair(p, "kernel_size", None, layer)
    stride, _ = _pair(p, "stride", 1, layer)
    pad, pad_loc = _pair(p, "pad", 0, layer)
    dilation = _pair(p, "dilation", 1, layer, split=False)[0] if conv else (1, 1)
    if min(*kernel, *stride, *dilation) < 1:
        raise Problem(MALFORMED, kernel_loc, "kernel, stride and dilation must be at least 1",
                      "a window covers at least one pixel and moves by at least one")
    return Window(kernel, stride, pad, dilation, kernel_loc, pad_loc)


def _pair(p: Message, key: str, default: int | None, layer: Layer,
          split: bool = True) -> tuple[tuple[int, int], SourceLoc]:
    """`key` once (square) or twice (HxW), or `kernel_h`/`kernel_w` for `kernel_size` (and
    `stride_h`, `pad_h`); without a default the field is required."""
    values = _ints(p, key)
    stem = key.removesuffix("_size")
    h_f, w_f = (p.get(f"{stem}_h"), p.get(f"{stem}_w")) if split else (None, None)
    if values and (h_f or w_f):
        raise Problem(MALFORMED, (h_f or w_f).loc,  # type: ignore[union-attr]
                      f"both `{key}` and `{stem}_h`/`{stem}_w` are given",
                      "give one or the other")
    if len(values) > 2:
        raise Problem(UNSUPPORTED, values[2][1].loc, f"{len(values)} values of `{key}`: a "
                      f"{len(values)}-D window", "alexnetc's windows are 2-D")
    if values:
        return (values[0][0], values[-1][0]), values[0][1].loc
    if h_f is not None and w_f is not None:
        return (_int(h_f), _int(w_f)), h_f.loc
    if h_f is not None or w_f is not None:
        raise Problem(MALFORMED, (h_f or w_f).loc,  # type: ignore[union-attr]
                      f"`{stem}_h` and `{stem}_w` go together", "give both")
    if default is None:
        raise Problem(MALFORMED, p.loc, f"{layer.type} '{layer.name}' has no `{key}`",
                      f"give its window, e.g. `{key}: 3`")
    return (default, default), p.loc


def _ints(msg: Message, key: str) -> list[tuple[int, Field]]:
    return [(_int(f), f) for f in msg.all(key)]


def _slide(shape: Shape, window: Window, layer: Layer, conv: bool,
           ceil: bool = True) -> tuple[Shape, bool]:
    """The output size by Caffe's rule for the layer, and whether its windows do not tile."""
    if shape.flat:
        raise Problem(UNSUPPORTED, layer.loc, f"{layer.type} '{layer.name}' reads a flat "
                      f"vector of {shape.c}", "alexnetc slides windows over HxWxC maps only")
    sizes = []
    uneven = False
    for n, k, s, p, d in zip((shape.h, shape.w), window.kernel, window.stride, window.pad,
                             window.dilation, strict=True):
        span = d * (k - 1) + 1
        if n + 2 * p < span:
            raise Problem(INCONSISTENT, window.loc, f"the window of {span} is larger than the "
                          f"{n}-pixel input of '{layer.name}'" + (f" padded by {p}" if p else ""),
                          "use a smaller window")
        if p > span // 2:
            raise Problem(UNSUPPORTED, window.pad_loc, f"padding {p} is more than half the "
                          f"window of {span}", "alexnetc pads at most half a window each side")
        out, odd = conv_length(n, k, s, p, d) if conv else pool_length(n, k, s, p, ceil)
        sizes.append(out)
        uneven = uneven or odd
    return Shape(sizes[0], sizes[1], shape.c), uneven


def _window_keywords(window: Window) -> list[tuple[str, str]]:
    out = []
    if window.pad != (0, 0):
        out.append(("pad", _hw(*window.pad)))
    if window.dilation != (1, 1):
        out.append(("dilation", _hw(*window.dilation)))
    return out


def _gaussian_std(filler: Message) -> Decimal | None:
    if (_opt(filler, "type", _string, "constant") == "gaussian"
            and _opt(filler, "mean", _decimal, Decimal(0)) == 0
            and _opt(filler, "sparse", _signed, -1) == -1):
        return _opt(filler, "std", _decimal, Decimal(1))
    return None


def _constant(filler: Message) -> Decimal | None:
    if _opt(filler, "type", _string, "constant") != "constant":
        return None
    return _opt(filler, "value", _decimal, Decimal(0))


def _fillers(layers: list[Layer]) -> Fillers:
    """The init line: the commonest gaussian std and constant bias the Convolution and
    InnerProduct layers state; filler types alexnetc cannot draw, with their layers."""
    stds: Counter[Decimal] = Counter()
    biases: Counter[Decimal] = Counter()
    other: dict[str, list[str]] = {}
    for layer in layers:
        p = layer.msg.message("convolution_param" if layer.type == "Convolution" else
                              "inner_product_param" if layer.type == "InnerProduct" else "")
        if p is None:
            continue
        try:
            weight, bias = p.message("weight_filler"), p.message("bias_filler")
            std = _gaussian_std(weight) if weight is not None else None
            if std is not None:
                stds[std] += 1
            elif weight is not None:
                other.setdefault(_opt(weight, "type", _string, "constant"), []).append(layer.name)
            value = _constant(bias) if bias is not None else \
                Decimal(0) if weight is not None else None
            if value is not None and _opt(p, "bias_term", _bool, True):
                biases[value] += 1
        except Problem:
            continue  # reported where the layer converts
    return Fillers(_commonest(stds), _commonest(biases), other)


def _commonest(counts: Counter[Decimal]) -> Decimal | None:
    return counts.most_common(1)[0][0] if counts else None


# --- the solver ---------------------------------------------------------------------------------

def _solver(source: Source, msg: Message, draft: Draft, batch: int | None) -> None:
    """base_lr, momentum, weight_decay and the lr policy onto the train line; what does not
    map (Caffe's iteration-counted schedule, other solvers) as comments above it."""
    notes = draft.setting_notes
    name = Path(source.path).name
    kind = _solver_type(msg)
    if kind != "SGD":
        notes.append(f"{name}: Caffe's {kind} solver has no counterpart: alexnetc trains with "
                     "the paper's SGD with momentum")
    iter_size = _opt(msg, "iter_size", _positive, 1)
    if batch is not None and iter_size > 1:
        draft.set("train", "batch", batch * iter_size)
        notes.append(f"batch: Caffe accumulates iter_size {iter_size} batches of {batch} per "
                     "step")
    for key, setting in (("base_lr", "lr"), ("momentum", "momentum"),
                         ("weight_decay", "weight_decay")):
        f = _one(msg, key)
        if f is not None:
            draft.set("train", setting, _number(_decimal(f)))
    _policy(msg, draft, name)
    seed = _opt(msg, "random_seed", _signed, -1)
    if seed >= 0:
        draft.set("train", "seed", seed)
    regularisation = _opt(msg, "regularization_type", _string, "L2")
    if regularisation != "L2":
        notes.append(f"{name}: regularization_type {regularisation}: alexnetc's weight decay "
                     "is L2")
    clip = _opt(msg, "clip_gradients", _decimal, Decimal(-1))
    if clip >= 0:
        notes.append(f"{name}: clip_gradients {_dec(clip)}: alexnetc does not clip gradients")
    max_iter = _one(msg, "max_iter")
    if max_iter is not None:
        per = f" of {batch * iter_size} images" if batch else ""
        notes.append(f"{name}: Caffe stops after max_iter {_int(max_iter)} iterations{per}; "
                     "alexnetc counts epochs")


def _solver_type(msg: Message) -> str:
    named = _opt(msg, "type", _string, "")
    if named:
        return named
    old = _opt(msg, "solver_type", _enum("SGD", "NESTEROV", "ADAGRAD", "RMSPROP", "ADADELTA",
                                         "ADAM"), "SGD")
    return {"NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
            "ADADELTA": "AdaDelta", "ADAM": "Adam"}.get(old, "SGD")


def _policy(msg: Message, draft: Draft, name: str) -> None:
    policy = _opt(msg, "lr_policy", _string, "")
    gamma = _opt(msg, "gamma", _decimal, None)
    notes = draft.setting_notes
    if policy == "fixed":
        draft.set("train", "lr_drop", 1)
        notes.append(f"{name}: lr_policy \"fixed\": the learning rate never drops (lr_drop=1)")
    elif policy in ("step", "multistep") and gamma is not None:
        draft.set("train", "lr_drop", _number(gamma))
        steps = [str(_int(f)) for f in msg.all("stepvalue")]
        stepsize = _opt(msg, "stepsize", _positive, 0)
        when = (f"every {stepsize} iterations" if policy == "step" and stepsize else
                f"at iterations {', '.join(steps)}" if steps else "on a fixed schedule")
        notes.append(f"{name}: Caffe multiplies the learning rate by gamma {_dec(gamma)} {when} "
                     f"(lr_policy \"{policy}\"); alexnetc by lr_drop when the validation error "
                     "stops improving")
    elif policy:
        stated = ", ".join(f"{k} {_dec(_decimal(f))}" for k in ("gamma", "power", "stepsize")
                           if (f := _one(msg, k)) is not None)
        notes.append(f"{name}: lr_policy \"{policy}\"" + (f" ({stated})" if stated else "")
                     + " has no counterpart: alexnetc multiplies the learning rate by lr_drop "
                     "when the validation error stops improving")


def _number(value: Decimal) -> float | int:
    return int(value) if value == value.to_integral_value() else float(value)


# --- reading the files --------------------------------------------------------------------------

_NET_FIELDS = ("layer", "layers", "input", "input_dim", "input_shape")
_SOLVER_FIELDS = ("base_lr", "lr_policy", "net", "train_net", "max_iter", "solver_mode",
                  "test_iter", "net_param", "train_net_param")
_LOOKS_CAFFE = re.compile(r"^\s*(?:layers?\s*[:{<]|input(?:_dim|_shape)?\s*[:{]|base_lr\s*:|"
                          r"(?:train_)?net\s*:)", re.MULTILINE)


def _sniff(paths: Sequence[str], texts: Sequence[str] | None) -> bool:
    if texts is None:
        return False
    return all(Path(p).suffix.lower() in (".prototxt", ".pbtxt") or bool(_LOOKS_CAFFE.search(t))
               for p, t in zip(paths, texts, strict=True))


def _is_solver(msg: Message) -> bool:
    names = set(msg.names())
    return not names & set(_NET_FIELDS) and bool(names & set(_SOLVER_FIELDS))


def read(paths: Sequence[str], options: Options) -> Imported:
    """The net (first) and its solver (optional second) as a draft spec."""
    sources = [Source.read(p) for p in paths]
    messages = [parse(s) for s in sources]
    net_i, *rest = sorted(range(len(paths)), key=lambda i: _is_solver(messages[i]))
    source, net = sources[net_i], messages[net_i]
    if _is_solver(net):
        f = net.get("net") or net.get("train_net")
        named = _text(f) if f is not None else ""
        raise source.fail(INCONSISTENT, net.loc, "this is a Caffe solver, not a net",
                          f"give its net first: alexnetc import {named} {paths[net_i]}" if named
                          else "give the net's .prototxt first, then optionally its solver")
    draft, converter = _convert(source, net, options)
    if options.weights is not None:
        source.warning(UNSUPPORTED, net.loc, "--weights: a Caffe net's weights are in its "
                       ".caffemodel, which alexnetc does not read; no checkpoint is written")
    warnings = [d for d in source.diagnostics if d.severity is Severity.WARNING]
    for i in rest:
        if not _is_solver(messages[i]):
            raise sources[i].fail(INCONSISTENT, messages[i].loc, "the second file is a net "
                                  "too, not a solver", "give one net, then optionally its "
                                  "solver.prototxt")
        try:
            _solver(sources[i], messages[i], draft, converter.recipe.batch)
        except Problem as p:
            raise sources[i].fail(p.diagnostic.kind, p.diagnostic.loc, p.diagnostic.message,
                                  p.diagnostic.hint) from None
        draft.notes.append(f"The recipe is from {sources[i].path}.")
        warnings += [d for d in sources[i].diagnostics if d.severity is Severity.WARNING]
    draft.settings = {k: draft.settings[k] for k in ("train", "augment", "init")
                      if k in draft.settings}
    draft.notes, draft.setting_notes = _wrapped(draft.notes), _wrapped(draft.setting_notes)
    return Imported(fold_blocks(draft).draft, warnings)


def _convert(source: Source, net: Message, options: Options) -> tuple[Draft, Converter]:
    draft = Draft(_network_name(net, source))
    layers, bad = _layers(net, source)
    phase = []
    for layer in layers:
        try:
            if _in_train_phase(layer):
                phase.append(layer)
        except Problem as p:
            source.diagnostics.append(p.diagnostic)
    bad |= _known_bottoms(phase, [_text(f) for f in net.all("input")], source)
    kept, dropped = _output_path(phase)
    converter = Converter(source, net, options, draft, kept)
    try:
        converter.run(bad)
    except Problem as p:
        source.diagnostics.append(p.diagnostic)
    if not source.errors and not draft.stages:
        source.error(INCONSISTENT, net.loc, "no layer to import: the file has no convolution, "
                     "pooling or fully connected layer", "give the net's .prototxt (its "
                     "`layer { … }` entries)")
    if source.errors:
        raise source.failure()
    _warn_dropped(source, dropped)
    _finish(draft, converter, len(phase) < len(layers))
    return draft, converter


def _network_name(net: Message, source: Source) -> str:
    f = net.get("name")
    raw = _text(f) if f is not None else Path(source.path).stem
    name = re.sub(r"[^A-Za-z0-9_]+", "_", raw).strip("_") or "Imported"
    return name if not name[0].isdigit() else f"n{name}"


def _warn_dropped(source: Source, dropped: list[Layer]) -> None:
    shown = [layer for layer in dropped if layer.type not in OBSERVERS]
    if not shown:
        return
    names = ", ".join(f"'{layer.name}'" for layer in shown[:4]) + (", …" if len(shown) > 4
                                                                    else "")
    source.warning(UNSUPPORTED, shown[0].loc, f"{len(shown)} layer"
                   f"{'s do' if len(shown) > 1 else ' does'} not lead to the network's output "
                   f"and {'are' if len(shown) > 1 else 'is'} left out: {names}",
                   "alexnetc networks have one output (an auxiliary classifier only helps "
                   "training)")


def _finish(draft: Draft, c: Converter, phased: bool) -> None:
    """The header, input line and recipe from what the net states."""
    spelling = "V1 `layers`" if any(f.name == "layers" for f in c.net.fields) else "`layer`"
    draft.notes.append(f"Imported from {c.source.path} (Caffe, {spelling} format) by "
                       "`alexnetc import`.")
    if phased:
        draft.notes.append("Caffe's TRAIN phase: layers only in its TEST phase are left out.")
    image = c.blobs.get(c.image or "")
    if image is not None and image.shape is not None:
        draft.input = (image.shape.h, image.shape.w, image.shape.c)
        if c.options.input is not None and c.stated not in (None, c.options.input):
            draft.notes.append("The input is --input's (the file states "
                               f"{'x'.join(map(str, c.stated or ()))}).")
    r = c.recipe
    if r.batch is not None:
        draft.set("train", "batch", r.batch)
    if r.data_layer:
        draft.set("augment", "pca", 0)
        draft.setting_notes.append("Caffe's data layer adds no PCA colour noise: pca=0"
                                   + ("" if r.flip else "; it does not mirror: flip=false"))
        if not r.flip:
            draft.set("augment", "flip", False)
    if r.scale is not None:
        draft.setting_notes.append(f"Caffe scales the pixels by {r.scale} (transform_param); "
                                   "alexnetc subtracts the per-channel mean")
    _multiplier_notes(draft, r.multipliers)
    f = c.fillers
    if f.std is not None:
        draft.set("init", "std", _number(f.std))
    if f.bias is not None:
        draft.set("init", "bias", _number(f.bias))
    for kind, names in f.other.items():
        shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
        draft.setting_notes.append(f"Caffe's {kind} weight filler ({shown}) has no "
                                   "counterpart: alexnetc draws normal weights (the init "
                                   "line's std)")


def _multiplier_notes(draft: Draft, patterns: dict[str, list[str]]) -> None:
    if not patterns:
        return
    parts = []
    for text, names in patterns.items():
        where = "every conv and FC layer" if len(patterns) == 1 else \
            ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
        parts.append(f"{text} on {where}")
    draft.setting_notes.append("Caffe's per-parameter multipliers have no counterpart (alexnetc "
                               "applies one lr and weight_decay to every parameter): "
                               + "; ".join(parts))


def _wrapped(notes: list[str]) -> list[str]:
    """Comment lines of at most 96 characters, a long note continuing indented."""
    return [line for note in notes
            for line in textwrap.wrap(note, 94, subsequent_indent="  ", break_on_hyphens=False)]


FORMAT = Format("caffe", "Caffe prototxt", _sniff, read, files=(1, 2))
