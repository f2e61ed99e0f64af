"""Darknet's `.cfg` networks (pjreddie/darknet and AlexeyAB's fork) as alexnetc specs.

A cfg is a `[net]` section (input size, optimiser, schedule, augmentation) and then one section
per layer, numbered from 0 as Darknet numbers them; `[route]` and `[shortcut]` name other layers
by number (a negative one counts back from the layer itself). Each layer becomes a stage named
after its kind and number (`conv0`, `pool1`, `route17`), holding what Darknet ties to it
(`batch_normalize=1`, `activation=`, a `[dropout]` or final `[softmax]` after it), so that every
message about a layer names the stage that holds it.

The rules are Darknet's own, from src/parser.c and the layers' sources: a key given twice takes
its first value (option_find), absent keys take parser.c's defaults (a convolution's activation
is logistic), sizes floor ((h + 2·padding − size)/stride + 1), `pad=1` pads size/2, a maxpool
pads size − 1 unless told (padding/2 before the input, the rest after it), `[avgpool]` is global
and `[shortcut]` adds another layer's output to the one before it.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from alexnetc.compiler.ast import NETWORK_INPUT
from alexnetc.compiler.errors import Diagnostic, Severity, SourceLoc
from alexnetc.compiler.records import Shape
from alexnetc.importers import Format, Imported, Options
from alexnetc.importers.blocks import fold_blocks
from alexnetc.importers.draft import Draft, Names, Op, number
from alexnetc.importers.ini import Entry, Section, read_sections
from alexnetc.importers.source import INCONSISTENT, MALFORMED, UNSUPPORTED, Source

# Section names as parser.c's string_to_layer_type spells them, to the kind each names.
_KINDS = {
    "convolutional": "conv", "conv": "conv", "connected": "connected", "conn": "connected",
    "maxpool": "maxpool", "max": "maxpool", "avgpool": "avgpool", "avg": "avgpool",
    "dropout": "dropout", "softmax": "softmax", "soft": "softmax", "route": "route",
    "shortcut": "shortcut", "crop": "crop", "cost": "cost", "batchnorm": "batchnorm",
    "activation": "activation", "empty": "empty",
}
_NET = ("net", "network")

# Layers alexnetc has no op for, and what each is.
_WITHOUT = {
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
_ACTIVATIONS = {"linear": None, "relu": "ReLU", "leaky": "LeakyReLU(0.1)",
                "relie": "LeakyReLU(0.01)", "logistic": "Sigmoid", "tanh": "Tanh",
                "relu6": "ReLU6"}
_OTHER_ACTIVATIONS = ("loggy", "elu", "selu", "plse", "hardtan", "lhtan", "ramp", "stair",
                      "swish", "mish", "hard_mish", "gelu", "silu", "revleaky",
                      "normalize_channels", "normalize_channels_softmax",
                      "normalize_channels_softmax_maxval")
_SLOPES = {"leaky": "Darknet leaky: 0.1·x below 0", "relie": "Darknet relie: 0.01·x below 0"}

# Keys each kind reads; keys that change the layer into one alexnetc has not, with the value
# that leaves it alone (None: any value does); keys that only steer Darknet's own training.
_KEYS = {
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
_CHANGES: dict[str, dict[str, float | str | None]] = {
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
_WHY = {
    "dilation": "AlexeyAB's fork sizes a dilated kernel's output as if it were not dilated, "
                "(h + 2·padding − size)/stride + 1, and pjreddie's ignores the key",
    "binary": "binarised weights (XNOR-Net)", "xnor": "binarised weights and inputs (XNOR-Net)",
    "antialiasing": "a blur after the strided window", "share_index": "weights shared with "
    "another layer",
}
_TRAINING = {"learning_rate", "stopbackward", "stop_backward", "dont_update", "burnin_update",
             "train_only_bn", "clip", "onlyforward"}
_LOADING = {"dontload", "dontloadscales", "flipped", "transpose", "dot", "angle"}

_BATCHNORM = "BatchNorm(momentum=0.01)"
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


class _Stop(Exception):
    """A layer whose values are malformed (already reported): nothing after it is sized."""


@dataclass(eq=False)
class _Unsupported(Exception):
    """A layer alexnetc cannot express; `shape`: its Darknet output, if later layers can
    still be sized (to report their problems too)."""

    loc: SourceLoc
    message: str
    hint: str
    shape: Shape | None = None


class _Values:
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

    def bad(self, e: Entry, what: str, read_as: str | None = None) -> _Stop:
        """A value that is not what the key takes (reported): reading the layer stops.
        `read_as`: what Darknet's atoi/atof would quietly make of it."""
        self.source.error(MALFORMED, e.value_loc, f"`{e.key}={e.value}`: expected {what}",
                          (f"Darknet would quietly read it as {read_as}; " if read_as else "")
                          + "write the number meant")
        return _Stop()

    def _missing(self, key: str) -> _Stop:
        self.source.error(MALFORMED, self.section.loc, f"[{self.section.name}] needs `{key}=`",
                          f"name the layers it reads, e.g. `{key}=-1`")
        return _Stop()


def _c_number(text: str, integer: bool) -> str:
    """What C's atoi (`integer`) or atof reads from the start of `text`."""
    pattern = r"[+-]?[0-9]+" if integer else r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
    m = re.match(pattern, text)
    return m.group(0) if m else "0"


@dataclass
class _Layer:
    index: int
    kind: str  # a key of _KINDS' values, or a section name of _WITHOUT
    section: Section
    values: _Values

    @property
    def title(self) -> str:
        return f"layer {self.index} ([{self.section.name}])"


class _Reader:
    """One cfg read into a draft: layers sized with Darknet's rules as they are converted."""

    def __init__(self, source: Source, options: Options) -> None:
        self.source = source
        self.options = options
        self.draft = Draft(Names().new(Path(source.path).stem))
        self.layers: list[_Layer] = []
        self.reads: dict[int, list[int]] = {}  # route/shortcut: the layers each reads
        self.shapes: dict[int, Shape] = {}  # each layer's output, by Darknet's rules
        self.alias: dict[int, str] = {}  # the stage that holds each layer's output
        self.last = NETWORK_INPUT  # the last stage added
        self.input: Shape | None = None
        self.said: set[str] = set()  # conventions already explained in a comment
        self.pending: list[str] = []  # comments for the next stage
        self.unsupported: list[tuple[_Layer, _Unsupported]] = []

    # --- reading --------------------------------------------------------------------------

    def read(self) -> Imported:
        sections = read_sections(self.source)
        if sections and self._net_first(sections):
            self.layers = [self._layer(i, s) for i, s in enumerate(sections[1:])]
            for layer in self.layers:
                self._references(layer)
            if not self.layers:
                self.source.error(MALFORMED, sections[0].loc, "no layers after [net]",
                                  "add the network's layers, e.g. a [convolutional] section")
            if not self.source.errors:
                self._net(sections[0])
        if not sections:
            self.source.error(MALFORMED, self.source.loc(1), "no sections: a Darknet cfg is "
                              "a [net] section and one section per layer")
        if self.source.errors:
            raise self.source.failure()
        self._walk()
        if self.source.errors or (self.unsupported and not self.options.skip_unsupported):
            for layer, u in self.unsupported:
                self.source.error(UNSUPPORTED, u.loc, f"{layer.title}: {u.message}", u.hint)
            raise self.source.failure()
        warnings = [d for d in self.source.diagnostics if d.severity is Severity.WARNING]
        if self.unsupported:
            warnings.append(self._cut())
        return Imported(self.draft, warnings)

    def _net_first(self, sections: list[Section]) -> bool:
        if sections[0].name in _NET:
            return True
        self.source.error(MALFORMED, sections[0].loc, f"the first section is "
                          f"[{sections[0].name}], not [net]",
                          "Darknet reads the input size and the training settings from a "
                          "[net] (or [network]) section first")
        return False

    def _layer(self, index: int, section: Section) -> _Layer:
        kind = _KINDS.get(section.name, section.name)
        if kind not in _KEYS and kind not in _WITHOUT:
            words = sorted(set(_KINDS) | set(_WITHOUT))
            close = _closest(section.name, words)
            self.source.error(MALFORMED, section.loc, f"unknown section [{section.name}]",
                              f"did you mean [{close}]?" if close else
                              "Darknet's layers are " + ", ".join(f"[{k}]" for k in _KINDS))
        return _Layer(index, kind, section, _Values(self.source, section))

    def _references(self, layer: _Layer) -> None:
        """The layers a [route] or [shortcut] reads, checked before anything is sized."""
        if layer.kind not in ("route", "shortcut"):
            return
        key = "layers" if layer.kind == "route" else "from"
        try:
            given = layer.values.numbers(key)
        except _Stop:
            return
        found = []
        for n in given:
            i = layer.index + n if n < 0 else n
            if not 0 <= i < layer.index:
                self._missing_layer(layer, key, n, i)
                return
            found.append(i)
        self.reads[layer.index] = found

    def _missing_layer(self, layer: _Layer, key: str, n: int, i: int) -> None:
        if layer.index == 0:
            where = "it is the first layer, so there is none before it"
        else:
            where = f"the layers before it are 0–{layer.index - 1}"
        what = f"layer {i}" if n >= 0 else f"layer {i} ({-n} back from layer {layer.index})"
        self.source.error(INCONSISTENT, layer.values.loc(key),
                          f"{layer.title} reads {what}, which "
                          + ("does not exist" if i < 0 else "is not before it")
                          + f": {where}",
                          "a negative number counts back from this layer (-1 is the layer "
                          "before it); a route or shortcut reads only earlier layers")

    # --- [net]: the input and the recipe --------------------------------------------------

    def _net(self, section: Section) -> None:
        values = _Values(self.source, section)
        try:
            h, w, c = (values.integer(k, 0, 0) for k in ("height", "width", "channels"))
            if self.options.input is not None:
                given = Shape(*self.options.input)
                if h and w and c and (h, w, c) != given.dims():
                    self.draft.notes.append(f"--input {given} replaces the cfg's {h}x{w}x{c}")
                h, w, c = given.dims()
            if not (h and w and c):
                self.source.error(MALFORMED, section.loc, "[net] does not give the input "
                                  "size", "give height=, width= and channels= in [net], or "
                                  "--input HxWxC")
                return
            self.input = Shape(h, w, c)
            _recipe(values, self.draft, self.source)
        except _Stop:
            return

    # --- the layers ------------------------------------------------------------------------

    def _walk(self) -> None:
        assert self.input is not None
        self.draft.input = (self.input.h, self.input.w, self.input.c)
        for layer in self.layers:
            x = self.shapes[layer.index - 1] if layer.index else self.input
            try:
                self._forbidden_keys(layer)
                self.shapes[layer.index] = self._convert(layer, x)
            except _Stop:
                return
            except _Unsupported as u:
                self.unsupported.append((layer, u))
                if u.shape is None:
                    return
                self.shapes[layer.index] = u.shape

    def _convert(self, layer: _Layer, x: Shape) -> Shape:
        handlers = {
            "conv": self._conv, "connected": self._connected, "maxpool": self._maxpool,
            "avgpool": self._avgpool, "dropout": self._dropout, "softmax": self._softmax,
            "route": self._route, "shortcut": self._shortcut, "crop": self._crop,
            "cost": self._cost, "batchnorm": self._batchnorm, "activation": self._activation,
            "empty": self._passthrough,
        }
        if layer.kind in _WITHOUT:
            raise _Unsupported(layer.section.loc, f"{_WITHOUT[layer.kind]} has no alexnetc "
                               "counterpart", _CUT_HINT)
        return handlers[layer.kind](layer, x)

    def _forbidden_keys(self, layer: _Layer) -> None:
        """Keys that would make the layer one alexnetc does not have; warnings for keys that
        only steer Darknet's training and for keys Darknet does not read either."""
        if layer.kind in _WITHOUT:
            return
        values = layer.values
        changes = _CHANGES.get(layer.kind, {})
        for key, e in values.first.items():
            if key in changes:
                if not _neutral(e.value, changes[key]) and not _ignored(layer, key):
                    why = f" ({_WHY[key]})" if key in _WHY else ""
                    raise _Unsupported(e.key_loc, f"`{key}={e.value}` makes a "
                                       f"[{layer.section.name}] that alexnetc does not "
                                       f"have{why}",
                                       f"remove `{key}` if the plain layer will do; "
                                       + _CUT_HINT)
            elif key in _TRAINING:
                self.source.warning(UNSUPPORTED, e.key_loc, f"`{key}={e.value}` steers "
                                    "Darknet's training of this layer; alexnetc trains every "
                                    "layer alike, so it is left out")
            elif key not in _KEYS[layer.kind] and key not in _LOADING:
                self.source.warning(MALFORMED, e.key_loc, f"[{layer.section.name}] has no "
                                    f"key `{key}`; Darknet ignores it too ('Unused field')",
                                    _did_you_mean(key, _KEYS[layer.kind]))

    # --- stages ----------------------------------------------------------------------------

    def _reads(self, index: int) -> str:
        """The stage holding the output of the layer before `index` (or the input)."""
        return self.alias[index - 1] if index else NETWORK_INPUT

    def _stage(self, layer: _Layer, prefix: str, ops: list[Op], comments: Sequence[str] = (),
               reads: Sequence[int] | None = None) -> None:
        """A stage for `layer`, reading the layers in `reads` (default: the one before it)."""
        name = f"{prefix}{layer.index}"
        if self.unsupported:  # the network ends before the first layer it cannot express
            self.alias[layer.index] = name  # for messages about later layers
            return
        if reads is None:
            before = self._reads(layer.index)
            sources: tuple[str, ...] | None = None if before == self.last else (before,)
        else:
            sources = tuple(self.alias[i] for i in reads)
        self.draft.add(name, ops, sources, [*self.pending, *comments])
        self.pending = []
        self.alias[layer.index] = self.last = name

    def _tie(self, layer: _Layer, prefix: str, ops: list[Op],
             comments: Sequence[str] = ()) -> None:
        """Ops appended to the stage the layer reads when it is the last one (Darknet's
        [dropout] works in place); a stage of their own otherwise."""
        before = self._reads(layer.index)
        if self.unsupported:
            self.alias[layer.index] = before
            return
        if before != self.last or not self.draft.stages:
            first, *rest = ops
            self._stage(layer, prefix, [Op(first.text), *rest], comments)
            return
        stage = self.draft.stages[-1]
        stage.ops += ops
        stage.comments += [*self.pending, *comments]
        self.pending = []
        self.alias[layer.index] = before

    def _once(self, key: str, comment: str) -> list[str]:
        """A convention's comment, on the first line it applies to."""
        if not comment or key in self.said:
            return []
        self.said.add(key)
        return [comment]

    def _activation_op(self, layer: _Layer, default: str) -> tuple[list[Op], list[str]]:
        """`activation=` as a tied op and its comment; parser.c's default if absent."""
        values = layer.values
        name = values.text("activation", default)
        if name not in _ACTIVATIONS:
            loc = values.loc("activation")
            if name in _OTHER_ACTIVATIONS:
                raise _Unsupported(loc, f"activation {name} has no alexnetc counterpart",
                                   "alexnetc has relu, leaky (0.1), relie (0.01), logistic, "
                                   "tanh and relu6; " + _CUT_HINT)
            close = _closest(name, [*_ACTIVATIONS, *_OTHER_ACTIVATIONS])
            self.source.error(MALFORMED, loc, f"{layer.title}: unknown activation {name!r}",
                              (f"did you mean {close}? " if close else "")
                              + "(Darknet would quietly use relu)")
            raise _Stop()
        op = _ACTIVATIONS[name]
        comments = [] if values.given("activation") or op is None else \
            [f"no activation=: Darknet's default, {default}"]
        comments += self._once(name, _SLOPES[name]) if name in _SLOPES else []
        return ([Op(op, tied=True)] if op else []), comments

    # --- each kind -------------------------------------------------------------------------

    def _conv(self, layer: _Layer, x: Shape) -> Shape:
        v = layer.values
        _needs_maps(layer, x)
        n, size = v.integer("filters", 1, 1), v.integer("size", 1, 1)
        sy, sx = _strides(v)
        groups = v.integer("groups", 1, 1)
        pad = v.integer("pad", 0) != 0
        padding = size // 2 if pad else v.integer("padding", 0, 0)
        bn = v.integer("batch_normalize", 0) != 0
        if min(x.h, x.w) + 2 * padding < size:
            raise self._too_small(layer, x, size, padding)
        out = Shape(_floor(x.h, size, sy, 2 * padding), _floor(x.w, size, sx, 2 * padding), n)
        if x.c % groups or n % groups:
            raise _Unsupported(v.loc("groups"), f"groups={groups} does not divide the "
                               f"{x.c} input and {n} output channels (Darknet floors the "
                               "channels per group)", "use groups that divide both", out)
        if padding > size // 2:
            raise _Unsupported(v.loc("padding"), f"padding={padding} is more than half the "
                               f"{size}-pixel kernel", "alexnetc pads a convolution by at most "
                               f"size/2 = {size // 2}; " + _CUT_HINT, out)
        act, comments = self._activation_op(layer, "logistic")
        args = [str(size), _pair(sy, sx)]
        args += [f"pad={padding}"] if padding else []
        args += [f"groups={groups}"] if groups > 1 else []
        args += ["bias=false"] if bn else []
        drop = _floor_note(x, size, (sy, sx), padding)
        args += ["remainder=drop"] if drop else []
        notes = self._once("pad", "Darknet pad=1 pads size/2") if pad and padding else []
        notes += [drop] if drop else []
        notes += self._batchnorm_notes() if bn else []
        ops = [Op(_call("Conv", args) + f" x{n}")] + ([Op(_BATCHNORM)] if bn else []) + act
        self._stage(layer, "conv", ops, notes + comments)
        return out

    def _too_small(self, layer: _Layer, x: Shape, size: int, padding: int) -> _Stop:
        self.source.error(INCONSISTENT, layer.values.loc("size"), f"{layer.title}: a "
                          f"{size}-pixel kernel does not fit the {x.h}x{x.w} input padded by "
                          f"{padding}", "use a smaller kernel or more padding")
        return _Stop()

    def _batchnorm_notes(self) -> list[str]:
        return self._once("bn", "batch_normalize=1: no bias; Darknet's running statistics "
                          "are 0.99·old + 0.01·batch (momentum=0.01), its eps 1e-5 (cuDNN's)")

    def _connected(self, layer: _Layer, x: Shape) -> Shape:
        v = layer.values
        n = v.integer("output", 1, 1)
        bn = v.integer("batch_normalize", 0) != 0
        act, comments = self._activation_op(layer, "logistic")
        ops = [Op(_call("FC", [str(n)] + (["bias=false"] if bn else [])))]
        ops += ([Op(_BATCHNORM)] if bn else []) + act
        self._stage(layer, "fc", ops, (self._batchnorm_notes() if bn else []) + comments)
        return Shape(1, 1, n, flat=True)

    def _maxpool(self, layer: _Layer, x: Shape) -> Shape:
        v = layer.values
        _needs_maps(layer, x)
        sy, sx = _strides(v)
        size = v.integer("size", v.integer("stride", 1, 1), 1)
        padding = v.integer("padding", size - 1, 0)
        if min(x.h, x.w) + padding < size:
            raise self._too_small(layer, x, size, padding)
        out = Shape(_floor(x.h, size, sy, padding), _floor(x.w, size, sx, padding), x.c)
        fits = [_pool_fit(length, size, s, padding, n)
                for length, s, n in ((x.h, sy, out.h), (x.w, sx, out.w))]
        mode = _one_remainder([f[1] for f in fits if f is not None])
        if None in fits or mode is None:
            raise _Unsupported(v.loc("padding") if v.given("padding") else layer.section.loc,
                               _pool_mismatch(x, size, (sy, sx), padding, out, v),
                               _pool_nearest(x, size, (sy, sx), padding) + "; " + _CUT_HINT,
                               out)
        pad = fits[0][0] if fits[0] else 0
        args = [str(size), _pair(sy, sx)] + ([f"pad={pad}"] if pad else [])
        args += [f"remainder={mode}"] if mode != "error" else []
        note = _pool_note(padding, v.given("padding"), pad, mode)
        self._stage(layer, "pool", [Op(_call("MaxPool", args))], self._once(note, note))
        return out

    def _avgpool(self, layer: _Layer, x: Shape) -> Shape:
        _needs_maps(layer, x)
        self._stage(layer, "avgpool", [Op("GlobalAvgPool")],
                    self._once("avg", "Darknet's [avgpool] averages each whole map"))
        return Shape(1, 1, x.c)

    def _dropout(self, layer: _Layer, x: Shape) -> Shape:
        v = layer.values
        p = v.real("probability", 0.5)
        if not 0 <= p < 1:
            e = v.entry("probability")
            assert e is not None
            raise v.bad(e, "a probability in [0, 1)")
        comments = [] if v.given("probability") else \
            ["no probability=: pjreddie's default 0.5 (AlexeyAB's fork: 0.2)"]
        self._tie(layer, "drop", [Op(f"Dropout({number(p)})")], comments)
        return x

    def _softmax(self, layer: _Layer, x: Shape) -> Shape:
        v = layer.values
        if v.integer("groups", 1, 1) != 1:
            raise _Unsupported(v.loc("groups"), "a softmax over groups of channels has no "
                               "alexnetc counterpart", _CUT_HINT, x)
        if not self._last(layer):
            raise _Unsupported(layer.section.loc, "a [softmax] before other layers: alexnetc "
                               "applies Softmax to the network's output only", _CUT_HINT, x)
        self._tie(layer, "softmax", [Op("Softmax", tied=True)])
        return x

    def _cost(self, layer: _Layer, x: Shape) -> Shape:
        if not self._last(layer):
            raise _Unsupported(layer.section.loc, "a [cost] before other layers", _CUT_HINT, x)
        kind = layer.values.text("type", "sse")
        self.draft.setting_notes.append(f"[cost] type={kind}: alexnetc trains with "
                                        "cross-entropy on the softmax instead")
        return self._passthrough(layer, x)

    def _last(self, layer: _Layer) -> bool:
        """Whether only [cost] layers follow."""
        return all(later.kind == "cost" for later in self.layers[layer.index + 1:])

    def _route(self, layer: _Layer, x: Shape) -> Shape:
        reads = self.reads[layer.index]
        shapes = [self.shapes[i] for i in reads]
        first = shapes[0]
        if len(reads) == 1:
            self.alias[layer.index] = self.alias.get(reads[0], NETWORK_INPUT)
            self.pending.append(f"[route] layer {layer.index} reads layer {reads[0]} "
                                f"({self.alias[layer.index]})")
            return first
        odd = next((i for i, s in zip(reads, shapes, strict=True)
                    if (s.h, s.w) != (first.h, first.w)), None)
        if odd is not None:
            self.source.error(INCONSISTENT, layer.values.loc("layers"),
                              f"{layer.title} joins {self._named(reads[0])} and "
                              f"{self._named(odd)}, whose heights and widths differ",
                              "Darknet concatenates channels of maps of one size "
                              "('The width and height of the input layers are different')")
            raise _Stop()
        if len({s.flat for s in shapes}) > 1:
            raise _Unsupported(layer.values.loc("layers"), "a [route] joining a [connected] "
                               "layer's vector with maps", _CUT_HINT)
        out = Shape(first.h, first.w, sum(s.c for s in shapes), first.flat)
        self._stage(layer, "route", [Op("Concat")], reads=reads)
        return out

    def _shortcut(self, layer: _Layer, x: Shape) -> Shape:
        reads = self.reads[layer.index]
        for i in reads:
            if self.shapes[i] != x:
                raise _Unsupported(layer.values.loc("from"), "the shortcut adds "
                                   f"{self._named(i)} to {self._named(layer.index - 1)}: "
                                   "Darknet adds the channels they share, subsampling the "
                                   "larger map; alexnetc's Add takes equal shapes",
                                   "give the shortcut a projection: a [route] back to layer "
                                   f"{i}, a 1x1 [convolutional] with stride and filters that "
                                   f"give {x}, then the [shortcut] (torchvision's ResNets); "
                                   + _CUT_HINT, x)
        act, comments = self._activation_op(layer, "linear")
        self._stage(layer, "shortcut", [Op("Add"), *act], comments,
                    reads=[layer.index - 1, *reads])
        return x

    def _crop(self, layer: _Layer, x: Shape) -> Shape:
        v = layer.values
        if layer.index != 0:
            raise _Unsupported(layer.section.loc, "a [crop] inside the network: alexnetc crops "
                               "only the input image", _CUT_HINT)
        h, w = v.integer("crop_height", 1, 1), v.integer("crop_width", 1, 1)
        if h > x.h or w > x.w:
            self.source.error(INCONSISTENT, v.loc("crop_height" if h > x.h else "crop_width"),
                              f"{layer.title} crops {h}x{w} from a {x.h}x{x.w} image",
                              "crop at most the [net] size")
            raise _Stop()
        out = Shape(h, w, x.c)
        self.draft.input = (h, w, x.c)
        _crop_recipe(v, x, out, self.draft)
        return self._passthrough(layer, out)

    def _batchnorm(self, layer: _Layer, x: Shape) -> Shape:
        self._stage(layer, "bn", [Op(_BATCHNORM)], self._batchnorm_notes())
        return x

    def _activation(self, layer: _Layer, x: Shape) -> Shape:
        act, comments = self._activation_op(layer, "linear")
        if not act:
            return self._passthrough(layer, x)
        self._stage(layer, "act", [Op(act[0].text)], comments)
        return x

    def _named(self, index: int) -> str:
        """`layer 7 (shortcut7, 64x64x64)`: a layer as messages name it."""
        stage = self.alias.get(index, NETWORK_INPUT)
        held = "" if stage == NETWORK_INPUT else f"{stage}, "
        return f"layer {index} ({held}{self.shapes[index]})"

    def _passthrough(self, layer: _Layer, x: Shape) -> Shape:
        """A layer with no op of its own: it holds what the layer before it holds."""
        self.alias[layer.index] = self._reads(layer.index)
        return x

    # --- --skip-unsupported ----------------------------------------------------------------

    def _cut(self) -> Diagnostic:
        """End the network before the first layer alexnetc cannot express."""
        layer, u = self.unsupported[0]
        end = self._reads(layer.index)
        if end == NETWORK_INPUT:
            self.source.error(UNSUPPORTED, u.loc, f"{layer.title}: {u.message}",
                              "it is the first layer, so cutting the network here leaves "
                              "nothing")
            raise self.source.failure()
        keep = self.draft.names.of(end)
        while self.draft.stages[-1].name != keep:
            self.draft.stages.pop()
        last = len(self.layers) - 1
        left = f"layer {layer.index}" if last == layer.index else \
            f"layers {layer.index}–{last}"
        self.draft.notes.append(f"--skip-unsupported cut the network before {layer.title}: "
                                f"{left} left out")
        return Diagnostic(UNSUPPORTED, u.loc, f"{layer.title}: {u.message}; --skip-"
                          f"unsupported cuts the network before it",
                          f"the spec ends with {keep} (layer {layer.index - 1}); {left} "
                          "left out", Severity.WARNING)


_CUT_HINT = "--skip-unsupported cuts the network before this layer"


# --- Darknet's arithmetic -------------------------------------------------------------------

def _floor(length: int, size: int, stride: int, padding: int) -> int:
    """Darknet's output length, (length + padding − size)/stride + 1 (the window fits:
    C's division of a negative span would truncate towards zero instead)."""
    return (length + padding - size) // stride + 1


def _floor_note(x: Shape, size: int, strides: tuple[int, int], padding: int) -> str:
    """The comment for a convolution whose windows do not tile ('' if they do)."""
    for length, stride in zip((x.h, x.w), strides, strict=True):
        span = length + 2 * padding - size
        if span % stride:
            return (f"Darknet floors: ({length} + 2·{padding} − {size}) = {span} is not a "
                    f"multiple of {stride}: remainder=drop")
    return ""


def _pool_fit(length: int, size: int, stride: int, padding: int,
              out: int) -> tuple[int, str] | None:
    """alexnetc's pad and remainder for a Darknet maxpool along one axis, if any gives the
    same windows: Darknet's first window starts padding/2 before the input (integer
    division) and it makes (length + padding − size)/stride + 1 of them; a window reaching
    past the input is clipped in both."""
    pad = padding // 2
    span = length + 2 * pad - size
    if pad > size // 2 or span < 0:
        return None
    if out == span // stride + 1:
        return pad, "error" if span % stride == 0 else "drop"
    ceil = span // stride + 2
    if (ceil - 1) * stride >= length + pad:  # PyTorch drops a window wholly in the padding
        ceil -= 1
    return (pad, "ceil") if span % stride and out == ceil else None


def _one_remainder(modes: list[str]) -> str | None:
    """One remainder= for both axes (an axis that tiles takes any)."""
    uneven = set(modes) - {"error"}
    if len(uneven) > 1:
        return None
    return uneven.pop() if uneven else "error"


def _pool_note(padding: int, given: bool, pad: int, mode: str) -> str:
    if padding == 0:
        return "Darknet floors: remainder=drop" if mode == "drop" else ""
    before, after = padding // 2, padding - padding // 2
    head = f"Darknet maxpool padding={padding}" + ("" if given else " (its default, size−1)")
    head += f": {before} before the input, {after} after"
    tail = {"error": f": pad={pad}, the same windows" if pad else ": the windows tile "
            "without it", "drop": ": Darknet floors, remainder=drop",
            "ceil": ": a last window over the edge, remainder=ceil"}[mode]
    return head + tail


def _pool_mismatch(x: Shape, size: int, strides: tuple[int, int], padding: int, out: Shape,
                   v: _Values) -> str:
    default = "padding" if v.given("padding") else "default padding size−1 ="
    return (f"Darknet's maxpool (size {size}, stride {_pair(*strides)}, {default} {padding}) "
            f"pads {padding // 2} before the input and {padding - padding // 2} after it, so "
            f"{x.h}x{x.w} gives {out.h}x{out.w}; alexnetc's pools pad both sides alike")


def _pool_nearest(x: Shape, size: int, strides: tuple[int, int], padding: int) -> str:
    """What alexnetc's nearest pool gives, for the hint of one that does not fit."""
    pad = min(padding // 2, size // 2)
    h, w = (_floor(n, size, s, 2 * pad) for n, s in zip((x.h, x.w), strides, strict=True))
    args = [str(size), _pair(*strides)] + ([f"pad={pad}"] if pad else [])
    return f"alexnetc's {_call('MaxPool', [*args, 'remainder=drop'])} gives {h}x{w} here" \
        if min(h, w) > 0 else "no alexnetc pool gives these windows"


def _strides(v: _Values) -> tuple[int, int]:
    """(down, across), as parser.c reads stride_y, stride_x and stride."""
    stride = v.integer("stride", 1, 1)
    return v.integer("stride_y", stride, 1), v.integer("stride_x", stride, 1)


def _needs_maps(layer: _Layer, x: Shape) -> None:
    if x.flat:
        raise _Unsupported(layer.section.loc, f"[{layer.section.name}] after a [connected] "
                           "layer: Darknet takes the vector as a 1x1 map, alexnetc's "
                           "convolutions and pools need maps", _CUT_HINT)


def _neutral(value: str, neutral: float | str | None) -> bool:
    """Whether a key's value leaves the layer as it is (None: no value does)."""
    if isinstance(neutral, str):
        return value == neutral
    return neutral is not None and bool(_FLOAT.fullmatch(value)) and float(value) == neutral


def _ignored(layer: _Layer, key: str) -> bool:
    """A key Darknet reads but ignores here (a 1x1 kernel is never dilated)."""
    return key == "dilation" and layer.values.text("size", "1") == "1"


# --- the recipe -----------------------------------------------------------------------------

_POLICY_KEYS = {"steps": ("steps", "scales"), "step": ("step", "scale"), "poly": ("power",),
                "exp": ("gamma",), "sigmoid": ("gamma", "step"), "sgdr": ("sgdr_cycle",)}
_AUGMENT_KEYS = ("min_crop", "max_crop", "angle", "aspect", "saturation", "exposure", "hue",
                 "jitter", "mosaic", "mixup", "cutmix", "blur", "letter_box")


def _recipe(v: _Values, draft: Draft, source: Source) -> None:
    """The `train` line from [net]: Darknet's SGD is the paper's (its decay scales with the
    learning rate), so lr, momentum and decay map; its schedules and augmentation do not."""
    notes = draft.setting_notes
    batch = v.integer("batch", 1, 1)
    if batch > 1:
        draft.set("train", "batch", batch)
    else:
        commented = _commented_batch(source, v.section)
        notes.append("batch=1 is the cfg's testing setting"
                     + (f" (its commented-out training line: batch={commented})"
                        if commented else "") + "; alexnetc's default batch stays")
    defaults = []
    for key, setting, default in (("learning_rate", "lr", 0.001), ("momentum", "momentum", 0.9),
                                  ("decay", "weight_decay", 0.0001)):
        draft.set("train", setting, v.real(key, default))
        if not v.given(key):
            defaults.append(f"{key} {number(default)}")
    if defaults:
        notes.append("not in the cfg, Darknet's defaults: " + ", ".join(defaults))
    policy = v.text("policy", "constant")
    schedule = [f"{k}={v.text(k, '')}" for k in ("burn_in", "max_batches") if v.given(k)]
    if policy == "constant":
        draft.set("train", "lr_drop", 1)
        notes.append("policy=constant: the learning rate never drops (lr_drop=1)"
                     + (f"; {', '.join(schedule)} not converted" if schedule else ""))
    else:
        stated = [f"{k}={v.text(k, '')}" for k in _POLICY_KEYS.get(policy, ()) if v.given(k)]
        notes.append(f"policy={policy}" + (f" ({', '.join(stated + schedule)})"
                                           if stated or schedule else "")
                     + " has no alexnetc counterpart: alexnetc divides the learning rate by 10 "
                     "when the validation error stops improving")
    if v.integer("adam", 0):
        notes.append("adam=1: alexnetc trains with the paper's SGD with momentum")
    augment = [f"{k}={v.text(k, '')}" for k in _AUGMENT_KEYS if v.given(k)]
    if augment:
        notes.append(f"Darknet's augmentation ({', '.join(augment)}) is not alexnetc's, "
                     "whose own applies (crops, flips, PCA colour noise)")
    if v.integer("flip", 1) == 0:
        draft.set("augment", "flip", False)


def _commented_batch(source: Source, section: Section) -> int | None:
    """`# batch=128` in [net]: Darknet's cfgs keep their training batch as a comment."""
    for line in source.lines[section.loc.line:]:
        if line.strip().startswith("["):
            return None
        m = re.fullmatch(r"\s*[#;]\s*batch\s*=\s*([0-9]+)\s*", line)
        if m and int(m.group(1)) > 1:
            return int(m.group(1))
    return None


def _crop_recipe(v: _Values, image: Shape, crop: Shape, draft: Draft) -> None:
    """A first [crop] is alexnetc's augmentation: the network's input is the crop."""
    side = min(image.h, image.w)
    if side >= max(crop.h, crop.w):
        draft.set("augment", "resize", side)
    draft.set("augment", "flip", v.integer("flip", 0) != 0)
    draft.setting_notes.append(f"[crop] takes {crop.h}x{crop.w} crops of the {image.h}x"
                               f"{image.w} image [net] loads: the input is the crop, "
                               f"augment resize={side}")
    jitter = [f"{k}={v.text(k, '')}" for k in ("angle", "saturation", "exposure", "shift")
              if v.given(k) and v.real(k, 0) != {"saturation": 1, "exposure": 1}.get(k, 0)]
    if jitter:
        draft.setting_notes.append(f"[crop]'s {', '.join(jitter)} have no alexnetc "
                                   "counterpart")
    if not v.integer("noadjust", 0):
        draft.setting_notes.append("[crop] also maps pixels from [0, 1] to [−1, 1]; alexnetc "
                                   "subtracts the mean instead")


# --- text -----------------------------------------------------------------------------------

def _pair(h: int, w: int) -> str:
    return str(h) if h == w else f"{h}x{w}"


def _call(op: str, args: list[str]) -> str:
    """`Conv(3,1, pad=1)`: the positional arguments as the paper writes them, then keywords."""
    positional = [a for a in args if "=" not in a]
    keywords = [a for a in args if "=" in a]
    return f"{op}({','.join(positional)}" + "".join(f", {k}" for k in keywords) + ")"


def _closest(word: str, words: Sequence[str]) -> str | None:
    close = difflib.get_close_matches(word, list(words), n=1, cutoff=0.6)
    return close[0] if close else None


def _did_you_mean(key: str, keys: set[str]) -> str:
    close = _closest(key, sorted(keys))
    return f"did you mean `{close}`?" if close else ""


# --- the format -----------------------------------------------------------------------------

def _sniff(paths: Sequence[str], texts: Sequence[str] | None) -> bool:
    """A cfg whose first section is [net], or a .cfg whose first section is a Darknet layer
    (cuda-convnet2's layer files name their sections after their layers)."""
    if texts is None:
        return False
    header = re.search(r"^\s*\[\s*([^\]\s]+)\s*\]", texts[0], re.MULTILINE)
    if header is None:
        return False
    name = header.group(1)
    return name in _NET or (paths[0].endswith(".cfg") and (name in _KINDS or name in _WITHOUT)
                            and not re.search(r"^\s*type\s*=", texts[0], re.MULTILINE))


def _read(paths: Sequence[str], options: Options) -> Imported:
    source = Source.read(paths[0])
    reader = _Reader(source, options)
    imported = reader.read()
    imported.draft.notes[:0] = [f"Imported from {paths[0]} (Darknet cfg) by `alexnetc import`.",
                                "Stages are named after Darknet's layers, numbered from 0 as "
                                "Darknet numbers them."]
    imported.draft = fold_blocks(imported.draft).draft
    return imported


FORMAT = Format("darknet", "Darknet cfg", _sniff, _read)
