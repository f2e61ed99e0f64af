"""What every part of the cuda-convnet2 reader shares: its layer types, the layers and
stage-to-be nodes as read, and the reader's state with its located errors and typed values
(cuda-convnet2's own parsing: layer.py's `mcp.safe_get_*`)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

from alexnetc.compiler.errors import Diagnostic, Severity, SourceLoc
from alexnetc.importers import Options
from alexnetc.importers.draft import Op
from alexnetc.importers.ini import Entry, Section
from alexnetc.importers.source import MALFORMED, UNSUPPORTED, Source

T = TypeVar("T")


# Every layer type cuda-convnet2's layer.py registers (`layer_parsers`).
KNOWN = ("data", "fc", "sfc", "conv", "local", "softmax", "eltsum", "eltmax", "sum", "neuron",
         "pool", "cmpool", "rnorm", "cnorm", "cmrnorm", "nailbed", "blur", "href", "resize",
         "rgb2yuv", "rgb2lab", "rscale", "crop", "concat", "pass", "dropout", "dropout2",
         "cost.logreg", "cost.ce", "cost.bce", "cost.dce", "cost.sum2")


# Why the others have no counterpart in alexnetc.
WHY_NOT = {
    "local": "a locally-connected layer (unshared weights): alexnetc's convolutions share them",
    "sfc": "a split fully-connected layer: alexnetc's FC reads all its inputs",
    "cnorm": "contrast normalisation: alexnetc has none",
    "eltmax": "an element-wise max of layers: alexnetc merges by Concat or Add",
    "sum": "a sum over groups of its inputs: alexnetc has none",
    "cmpool": "pooling across maps: alexnetc pools within each map",
    "cost.bce": "a binomial cross-entropy cost: alexnetc trains with the softmax's log-loss",
    "cost.dce": "a detection cross-entropy cost: alexnetc trains with the softmax's log-loss",
    "cost.sum2": "a sum-of-squares cost: alexnetc trains with the softmax's log-loss",
}


PREPROCESSING = ("nailbed", "blur", "href", "resize", "rgb2yuv", "rgb2lab", "rscale", "crop")


WEIGHTS = ("conv", "fc", "local", "sfc")


COSTS = ("cost.logreg", "cost.ce")


# Layers whose `add_params` cuda-convnet2 runs: they need a section in the layer-params file.
NEEDS_PARAMS = (*WEIGHTS, "rnorm", "cnorm", "cmrnorm", "dropout", "dropout2", "eltsum",
                *(t for t in KNOWN if t.startswith("cost.")))


# What twins may differ in: where and how fast cuda-convnet2 computes, and initial values
# (alexnetc draws a layer's as one: the first twin's, said in a comment where they differ).
NOT_ARCHITECTURE = ("gpu", "inputs", "sumwidth", "partialsum", "initw", "initb", "initwfunc",
                    "initbfunc")


# The layer-params settings that shape what a layer computes (the rest are learning's).
COMPUTES = ("scale", "pow", "mindiv", "keep", "enable", "coeffs")


BOOLS = {"1": True, "yes": True, "true": True, "on": True,
         "0": False, "no": False, "false": False, "off": False}


class Failed(Exception):
    """A located error has been recorded in one of the sources."""


class Cut(Exception):
    """--skip-unsupported: the network ends before the layer being read."""


@dataclass(frozen=True)
class Maps:
    """An activation as cuda-convnet2 sees it: `c` maps of h×w, or `c` values (`flat`)."""

    h: int
    w: int
    c: int
    flat: bool = False

    def __str__(self) -> str:
        return str(self.c) if self.flat else f"{self.h}x{self.w}x{self.c}"


@dataclass(eq=False)
class Layer:
    """A layer file's section, with the layer-params section of the same name."""

    section: Section
    kind: str
    inputs: list[str]
    gpu: tuple[int, ...]
    params: Section | None = None

    @property
    def name(self) -> str:
        return self.section.name


@dataclass(eq=False)
class Node:
    """One stage-to-be: a layer, or the twins of a layer on each GPU (`members`, in GPU
    order); `reads`: the nodes it reads, `own` whether each twin reads its own GPU's."""

    members: list[Layer]
    reads: list[Node] = field(default_factory=list)
    own: bool = False
    shape: Maps = Maps(0, 0, 0)
    ops: list[Op] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    alias: Node | None = None  # no op of its own: it is what it reads (a concat of twins)

    @property
    def first(self) -> Layer:
        return self.members[0]

    @property
    def kind(self) -> str:
        return self.first.kind

    @property
    def paired(self) -> bool:
        return len(self.members) > 1

    def target(self) -> Node:
        return self.alias.target() if self.alias is not None else self


class Reader:
    """Reads the two files into a draft; a problem records a located error in the file it
    is in and raises `Failed`."""

    def __init__(self, layers: Source, params: Source, options: Options):
        self.src, self.psrc, self.options = layers, params, options
        self.warnings: list[Diagnostic] = []
        self.layers: dict[str, Layer] = {}
        self.shapes: dict[str, Maps] = {}  # each layer's own output (a twin's: its GPU's)
        self.node_of: dict[str, Node] = {}
        self.towers = 1
        self.gpus: tuple[int, ...] = ()
        self.weight_layers: list[Layer] = []
        self.defined: set[str] = set()

    def fail(self, kind: str, loc: SourceLoc, message: str, hint: str = "") -> NoReturn:
        source = self.psrc if loc.file == self.psrc.path and self.psrc.path != self.src.path \
            else self.src
        source.error(kind, loc, message, hint)
        raise Failed

    def unsupported(self, loc: SourceLoc, layer: Layer, message: str, hint: str = "") -> NoReturn:
        """Not expressible: an error, or with --skip-unsupported a warning and the cut."""
        if not self.options.skip_unsupported:
            self.fail(UNSUPPORTED, loc, message, (f"{hint}; or " if hint else "")
                      + "pass --skip-unsupported to import the network before it")
        self.warnings.append(Diagnostic(
            UNSUPPORTED, loc, f"{message}; the network is cut before layer '{layer.name}'",
            "", Severity.WARNING))
        raise Cut

    def entry(self, layer: Layer, key: str, params: bool = False) -> Entry | None:
        section = layer.params if params else layer.section
        if section is None:
            return None
        key = key.lower()  # ConfigParser's optionxform
        return next((e for e in reversed(section.entries) if e.key.lower() == key), None)

    def text(self, layer: Layer, key: str, default: str | None = None,
             params: bool = False) -> str:
        e = self.entry(layer, key, params)
        if e is not None:
            return value(e)
        if default is None:
            where = layer.params.loc if params and layer.params is not None else \
                layer.section.loc
            self.fail(MALFORMED, where, f"layer '{layer.name}' ({layer.kind}) needs `{key}=`",
                      f"cuda-convnet2 requires it: add a `{key}=` line"
                      + (" to its layer-params section" if params else ""))
        return default

    def values(self, layer: Layer, key: str, parse: Callable[[str], T], what: str,
               default: str | None = None, params: bool = False, count: int = 1) -> list[T]:
        """A comma-separated list with one value, or one per input (`count`)."""
        raw = self.text(layer, key, default, params)
        e = self.entry(layer, key, params)
        loc = e.value_loc if e is not None else layer.section.loc
        try:
            got = [parse(v.strip()) for v in raw.split(",")]
        except ValueError:
            self.fail(MALFORMED, loc, f"`{key}` of layer '{layer.name}' must be {what}, got "
                      f"{raw!r}", f"write it as cuda-convnet2 reads it, e.g. `{key}="
                      + {"an integer": "3", "a number": "0.5", "true or false": "true"}.get(
                          what, "1") + "`")
        if len(got) == 1:
            return got * count
        if len(got) != count:
            self.fail(MALFORMED, loc, f"`{key}` of layer '{layer.name}' lists {len(got)} "
                      f"values for {count} input{'s' if count != 1 else ''}",
                      "give one value, or one per input")
        return got

    def integer(self, layer: Layer, key: str, default: int | None = None) -> int:
        return self.integers(layer, key, default)[0]

    def integers(self, layer: Layer, key: str, default: int | None = None, count: int = 1) -> \
            list[int]:
        return self.values(layer, key, int, "an integer",
                           None if default is None else str(default), count=count)

    def real(self, layer: Layer, key: str, default: float | None = None,
              params: bool = False) -> float:
        return self.values(layer, key, finite, "a number",
                           None if default is None else repr(default), params)[0]

    def flag(self, layer: Layer, key: str, default: bool, params: bool = False) -> bool:
        return self.values(layer, key, _boolean, "true or false", str(default), params)[0]

    def is_labels(self, layer: Layer) -> bool:
        """A data layer only cost layers read (the labels)."""
        readers = [la for la in self.layers.values() if layer.name in la.inputs]
        return layer.kind == "data" and bool(readers) and all(r.kind.startswith("cost.")
                                                               for r in readers)

    def type_loc(self, layer: Layer) -> SourceLoc:
        e = self.entry(layer, "type")
        return e.value_loc if e is not None else layer.section.loc

    def value_loc(self, layer: Layer, key: str, params: bool = False) -> SourceLoc:
        e = self.entry(layer, key, params)
        return e.value_loc if e is not None else layer.section.loc


PARAMS_HINT = {
    "conv": "`epsW`, `epsB`, `momW`, `momB`, `wc`",
    "fc": "`epsW`, `epsB`, `momW`, `momB`, `wc`",
    "cmrnorm": "`scale` and `pow`",
    "rnorm": "`scale` and `pow`",
    "dropout": "`keep`",
    "dropout2": "`keep`",
    "cost.logreg": "`coeff`",
}


def value(e: Entry) -> str:
    """The value as ConfigParser reads it: `;` after a space starts a comment."""
    return re.sub(r"\s;.*$", "", e.value).strip()


def finite(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(text)
    return x


def _boolean(text: str) -> bool:
    try:
        return BOOLS[text.lower()]
    except KeyError:
        raise ValueError(text) from None
