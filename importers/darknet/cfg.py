"""A cfg's sections as Darknet's parser.c reads them: the layer kinds and the keys each
takes, values with option_find's rules (the first of a key given twice, C's number parsing),
and the problems that stop a layer (`Stop`: an error recorded; `Unsupported`: alexnetc cannot
express it)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from alexnetc.compiler.errors import SourceLoc
from alexnetc.compiler.records import Shape
from alexnetc.importers.ini import Entry, Section
from alexnetc.importers.source import MALFORMED, Source, closest

# Section names as parser.c's string_to_layer_type spells them, to the kind each names.
KINDS = {
    "convolutional": "conv", "conv": "conv", "connected": "connected", "conn": "connected",
    "maxpool": "maxpool", "max": "maxpool", "avgpool": "avgpool", "avg": "avgpool",
    "dropout": "dropout", "softmax": "softmax", "soft": "softmax", "route": "route",
    "shortcut": "shortcut", "crop": "crop", "cost": "cost", "batchnorm": "batchnorm",
    "activation": "activation", "empty": "empty",
}


NET = ("net", "network")


# Layers alexnetc has no op for, and what each is.
WITHOUT = {
    "local": "a locally connected layer: a separate kernel at every position",
    "region": "a YOLOv2 detection head (box decoding and its loss)",
    "yolo": "a YOLOv3 detection head (box decoding and its loss)",
    "Gaussian_yolo": "a Gaussian YOLOv3 detection head",
    "detection": "a YOLOv1 detection head (box decoding and its loss)",
    "reorg": "space-to-depth reorganisation", "reorg3d": "space-to-depth reorganisation",
    "upsample": "nearest-neighbour upsampling",
    "normalization": "Darknet's local response normalisation, which is not the paper's: its "
                     "running sum over the channel window never adds channel size/2",
    "lrn": "Darknet's local response normalisation, which is not the paper's: its running "
           "sum over the channel window never adds channel size/2",
    "deconvolutional": "a transposed convolution", "deconv": "a transposed convolution",
    "crnn": "a recurrent layer", "rnn": "a recurrent layer", "gru": "a recurrent layer",
    "lstm": "a recurrent layer", "conv_lstm": "a recurrent layer",
    "scale_channels": "channel attention scaled by another layer's output",
    "sam": "spatial attention scaled by another layer's output",
    "local_avgpool": "a local average pool that leaves the padding out of each mean",
    "local_avg": "a local average pool that leaves the padding out of each mean",
    "logistic": "a logistic-regression loss", "l2norm": "L2 normalisation across channels",
    "iseg": "an instance-segmentation head", "implicit_add": "a learnt implicit tensor",
    "implicit_mul": "a learnt implicit tensor", "contrastive": "a contrastive-loss head",
}


# Darknet's activations (activations.c) as alexnetc ops (None: linear, no op).
ACTIVATIONS = {"linear": None, "relu": "ReLU", "leaky": "LeakyReLU(0.1)",
                "relie": "LeakyReLU(0.01)", "logistic": "Sigmoid", "tanh": "Tanh",
                "relu6": "ReLU6"}


OTHER_ACTIVATIONS = ("loggy", "elu", "selu", "plse", "hardtan", "lhtan", "ramp", "stair",
                      "swish", "mish", "hard_mish", "gelu", "silu", "revleaky",
                      "normalize_channels", "normalize_channels_softmax",
                      "normalize_channels_softmax_maxval")


SLOPES = {"leaky": "Darknet leaky: 0.1·x below 0", "relie": "Darknet relie: 0.01·x below 0"}


# Keys each kind reads; keys that change the layer into one alexnetc has not, with the value
# that leaves it alone (None: any value does); keys that only steer Darknet's own training.
KEYS = {
    "conv": {"filters", "size", "stride", "stride_x", "stride_y", "pad", "padding", "groups",
             "activation", "batch_normalize"},
    "connected": {"output", "activation", "batch_normalize"},
    "maxpool": {"size", "stride", "stride_x", "stride_y", "padding"},
    "avgpool": set(), "batchnorm": set(), "empty": set(),
    "dropout": {"probability"},
    "softmax": {"groups"},
    "route": {"layers"},
    "shortcut": {"from", "activation"},
    "crop": {"crop_height", "crop_width", "flip", "angle", "saturation", "exposure", "shift",
             "noadjust"},
    "cost": {"type", "scale", "ratio", "noobject_scale", "thresh"},
    "activation": {"activation"},
}


CHANGES: dict[str, dict[str, float | str | None]] = {
    "conv": {"dilation": 1, "binary": 0, "xnor": 0, "bin_output": 0, "antialiasing": 0,
             "share_index": None, "cbn": 0, "sway": 0, "rotate": 0, "stretch": 0,
             "stretch_sway": 0, "deform": 0, "assisted_excitation": 0, "coordconv": 0},
    "maxpool": {"maxpool_depth": 0, "out_channels": 1, "antialiasing": 0},
    "dropout": {"dropblock": 0, "dropblock_size_rel": 0, "dropblock_size_abs": 0},
    "softmax": {"temperature": 1, "tree": None, "spatial": 0, "noloss": 0},
    "route": {"groups": 1, "group_id": 0},
    "shortcut": {"alpha": 1, "beta": 1, "weights_type": "none",
                 "weights_normalization": "none", "weights_normalizion": "none"},
}


# Why such a key cannot be converted, where its name does not say.
WHY = {
    "dilation": "AlexeyAB's fork sizes a dilated kernel's output as if it were not dilated, "
                "(h + 2·padding − size)/stride + 1, and pjreddie's ignores the key",
    "binary": "binarised weights (XNOR-Net)", "xnor": "binarised weights and inputs (XNOR-Net)",
    "antialiasing": "a blur after the strided window", "share_index": "weights shared with "
    "another layer",
}


TRAINING = {"learning_rate", "stopbackward", "stop_backward", "dont_update", "burnin_update",
             "train_only_bn", "clip", "onlyforward"}


LOADING = {"dontload", "dontloadscales", "flipped", "transpose", "dot", "angle"}


_INT = re.compile(r"[+-]?[0-9]+")


_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


class Stop(Exception):
    """A layer whose values are malformed (already reported): nothing after it is sized."""


@dataclass(eq=False)
class Unsupported(Exception):
    """A layer alexnetc cannot express; `shape`: its Darknet output, if later layers can
    still be sized (to report their problems too)."""

    loc: SourceLoc
    message: str
    hint: str
    shape: Shape | None = None


class Values:
    """A section's `key=value`s as Darknet's option_find reads them: the first of a key given
    twice wins; numbers are checked where atoi/atof would silently read a wrong one."""

    def __init__(self, source: Source, section: Section) -> None:
        self.source = source
        self.section = section
        seen: dict[str, Entry] = {}
        for e in section.entries:
            if e.key in seen:
                source.warning(MALFORMED, e.key_loc, f"`{e.key}` is given twice in "
                               f"[{section.name}]; Darknet reads the first "
                               f"(line {seen[e.key].key_loc.line})",
                               "delete one of them")
            seen.setdefault(e.key, e)
        self.first = seen

    def entry(self, key: str) -> Entry | None:
        return self.first.get(key)

    def loc(self, key: str) -> SourceLoc:
        e = self.entry(key)
        return e.value_loc if e is not None else self.section.loc

    def given(self, key: str) -> bool:
        return key in self.first

    def integer(self, key: str, default: int, least: int | None = None) -> int:
        e = self.entry(key)
        if e is None:
            return default
        if not _INT.fullmatch(e.value):
            raise self.bad(e, "an integer", _c_number(e.value, integer=True))
        value = int(e.value)
        if least is not None and value < least:
            raise self.bad(e, f"an integer of at least {least}")
        return value

    def real(self, key: str, default: float) -> float:
        e = self.entry(key)
        if e is None:
            return default
        if not _FLOAT.fullmatch(e.value):
            raise self.bad(e, "a number", _c_number(e.value, integer=False))
        return float(e.value)

    def text(self, key: str, default: str) -> str:
        e = self.entry(key)
        return default if e is None else e.value

    def numbers(self, key: str) -> list[int]:
        e = self.entry(key)
        if e is None:
            raise self._missing(key)
        items = [item.strip() for item in e.value.split(",")]
        if not all(_INT.fullmatch(item) for item in items):
            raise self.bad(e, "layer numbers separated by commas", "")
        return [int(item) for item in items]

    def bad(self, e: Entry, what: str, read_as: str | None = None) -> Stop:
        """A value that is not what the key takes (reported): reading the layer stops.
        `read_as`: what Darknet's atoi/atof would quietly make of it."""
        self.source.error(MALFORMED, e.value_loc, f"`{e.key}={e.value}`: expected {what}",
                          (f"Darknet would quietly read it as {read_as}; " if read_as else "")
                          + "write the number meant")
        return Stop()

    def _missing(self, key: str) -> Stop:
        self.source.error(MALFORMED, self.section.loc, f"[{self.section.name}] needs `{key}=`",
                          f"name the layers it reads, e.g. `{key}=-1`")
        return Stop()


def _c_number(text: str, integer: bool) -> str:
    """What C's atoi (`integer`) or atof reads from the start of `text`."""
    pattern = r"[+-]?[0-9]+" if integer else r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
    m = re.match(pattern, text)
    return m.group(0) if m else "0"


@dataclass
class CfgLayer:
    index: int
    kind: str  # a key of KINDS' values, or a section name of WITHOUT
    section: Section
    values: Values

    @property
    def title(self) -> str:
        return f"layer {self.index} ([{self.section.name}])"


CUT_HINT = "--skip-unsupported cuts the network before this layer"


def neutral(value: str, neutral: float | str | None) -> bool:
    """Whether a key's value leaves the layer as it is (None: no value does)."""
    if isinstance(neutral, str):
        return value == neutral
    return neutral is not None and bool(_FLOAT.fullmatch(value)) and float(value) == neutral


def ignored(layer: CfgLayer, key: str) -> bool:
    """A key Darknet reads but ignores here (a 1x1 kernel is never dilated)."""
    return key == "dilation" and layer.values.text("size", "1") == "1"


def did_you_mean(key: str, keys: set[str]) -> str:
    close = closest(key, sorted(keys))
    return f"did you mean `{close}`?" if close else ""
