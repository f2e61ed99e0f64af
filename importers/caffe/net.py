"""The net as Caffe runs it: its `layer`/`layers` entries in today's type spelling, those of
the TRAIN phase, the bottoms each reads, and the path to the network's output.

Caffe's blobs are names that in-place layers rewrite; `Versions` turns them into versions, so
that "this layer alone reads that output" (what ties a ReLU to its conv) is a lookup.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from alexnetc.compiler.errors import SourceLoc
from alexnetc.importers.caffe.fields import (
    Problem,
    enum,
    opt,
    scalar,
    signed,
    single,
    string,
    text_of,
    value_loc,
)
from alexnetc.importers.prototxt import Field, Message
from alexnetc.importers.source import INCONSISTENT, MALFORMED, UNSUPPORTED, Source, closest

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
    "Bias": "alexnetc adds biases only inside Conv and FC",
    "EuclideanLoss": "alexnetc trains classifiers with the softmax cross-entropy loss",
    "SigmoidCrossEntropyLoss": "alexnetc trains classifiers with the softmax cross-entropy loss",
    "HingeLoss": "alexnetc trains classifiers with the softmax cross-entropy loss",
    "InfogainLoss": "alexnetc trains classifiers with the softmax cross-entropy loss",
    "ContrastiveLoss": "alexnetc trains classifiers with the softmax cross-entropy loss",
}


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
        return [text_of(f) for f in self.bottoms]

    @property
    def top_names(self) -> list[str]:
        return [text_of(f) for f in self.tops]


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
    return layer.type in ("Split", "Flatten", "Reshape") or (layer.type == "Concat"
                                                  and len(layer.bottoms) == 1)


def read_layers(net: Message, source: Source) -> tuple[list[Layer], set[int]]:
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
    name_f = single(msg, "name")
    for b in (*msg.all("bottom"), *msg.all("top")):
        string(b)
    name = string(name_f) if name_f is not None else f"layer{index}"
    type_f = msg.get("type")
    return Layer(index, msg, f.loc, name, "", value_loc(type_f) if type_f else f.loc,
                 msg.all("bottom"), msg.all("top"))


def _layer_type(f: Field) -> str:
    msg = f.value
    assert isinstance(msg, Message)
    v1 = f.name == "layers"
    type_f = single(msg, "type")
    if type_f is None:
        raise Problem(MALFORMED, f.loc, f"`{f.name}` has no `type`",
                      "write e.g. `type: CONVOLUTION`" if v1 else
                      'write e.g. `type: "Convolution"`')
    return _v1_type(type_f) if v1 else _new_type(type_f)


def _new_type(f: Field) -> str:
    v = scalar(f, "a string")
    if v.kind != "string":
        new = V1_TYPES.get(v.text, v.text)
        raise Problem(MALFORMED, v.loc, f"a `layer {{ }}` names its type as a string, not "
                      f"`{v.text}`", f'write `type: "{new}"` (the enum `{v.text}` is for V1 '
                      "`layers { }`)")
    if v.text in CAFFE_TYPES:
        return v.text
    by_lower = {t.lower(): t for t in CAFFE_TYPES}
    lower = v.text.lower()
    close = lower if lower in by_lower else closest(lower, by_lower, cutoff=0.75)
    if close is not None:
        meant = by_lower[close]
        raise Problem(MALFORMED, v.loc, f"unknown layer type \"{v.text}\"",
                      f'did you mean "{meant}"?')
    return v.text  # a fork's or a custom layer: unsupported if the network needs it


def _v1_type(f: Field) -> str:
    v = scalar(f, "an enum")
    if v.kind == "string":
        raise Problem(MALFORMED, v.loc, f"a V1 `layers {{ }}` names its type with an enum, not "
                      f"\"{v.text}\"", "write e.g. `type: CONVOLUTION`, or use `layer { type: "
                      f"\"{v.text}\" }}`")
    if v.text in V1_TYPES:
        return V1_TYPES[v.text]
    close = closest(v.text.upper(), V1_TYPES)
    raise Problem(MALFORMED, v.loc, f"unknown V1 layer type `{v.text}`",
                  f"did you mean {close}?" if close else
                  "V1 types are enums such as CONVOLUTION, POOLING, RELU")


def in_train_phase(layer: Layer) -> bool:
    """NetStateRule against Caffe's TRAIN state (level 0, no stages): included if any
    `include` rule holds (or there is none), excluded if any `exclude` rule holds."""
    def holds(rule: Message) -> bool:
        if opt(rule, "phase", enum("TRAIN", "TEST"), "TRAIN") != "TRAIN":
            return False
        if opt(rule, "min_level", signed, 0) > 0 or opt(rule, "max_level", signed, 0) < 0:
            return False
        return not rule.all("stage")

    includes, excludes = layer.msg.messages("include"), layer.msg.messages("exclude")
    if includes and not any(holds(r) for r in includes):
        return False
    return not any(holds(r) for r in excludes)


def known_bottoms(layers: list[Layer], inputs: Iterable[str], source: Source) -> set[int]:
    """Caffe runs the layers in the order written: each bottom must be a top above it (or a
    net input). Reports each that is not; returns the layers that read one."""
    made: set[str] = set(inputs)
    first_maker: dict[str, Layer] = {}
    for layer in layers:
        for t in layer.top_names:
            first_maker.setdefault(t, layer)
    bad: set[int] = set()
    for i, layer in enumerate(layers):
        for b in layer.bottoms:
            name = text_of(b)
            if name in made:
                continue
            bad.add(layer.index)
            loc = value_loc(b)
            maker = first_maker.get(name)
            if maker is not None and maker is not layer:
                source.error(INCONSISTENT, loc, f"bottom \"{name}\" of '{layer.name}' is made "
                             f"only later, by '{maker.name}' (line {maker.loc.line})",
                             "Caffe runs the layers in the order written: move this layer "
                             "below it")
                continue
            source.error(INCONSISTENT, loc, f"bottom \"{name}\" of '{layer.name}' is made by "
                         "no layer above it", _missing_hint(name, made, layers[:i]))
        made.update(layer.top_names)
    return bad


def _missing_hint(name: str, made: set[str], above: list[Layer]) -> str:
    """A layer above named like the blob, whose top is spelt otherwise, is the likelier slip
    than the closest spelling among all tops."""
    for layer in reversed(above):
        if layer.name == name and layer.top_names:
            return (f"layer '{name}' writes its output as \"{layer.top_names[0]}\": did you "
                    f"mean \"{layer.top_names[0]}\"?")
    close = closest(name, sorted(made))
    return (f'did you mean "{close}"?' if close else
            "a bottom names a top of an earlier layer, or a net `input`")


def output_path(layers: list[Layer]) -> tuple[list[Layer], list[Layer]]:
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
