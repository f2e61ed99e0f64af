"""cuda-convnet2's networks: a layer file (`layers-*.cfg`) and its layer-params file.

Krizhevsky's own format, and the one the paper's two-GPU AlexNet was written in. The layer file
names each layer as a `[section]` with its `type=` and `inputs=`; the layer-params file holds
what may change while training (learning rates, LRN α and β, dropout's keep). cuda-convnet2
reads both with Python 2's ConfigParser: keys are case-insensitive, `;` starts a comment only
after a space, and a layer may only read layers defined above it (`layer.py`).

Conventions converted, each said on its line:
- the output size of a conv is 1 + ⌈(2·padding + size − filterSize) / stride⌉ and of a pool
  ⌈(size − start − sizeX) / stride⌉ + 1: rounded up, so `remainder=ceil` where they do not tile;
- `cmrnorm` divides its `scale` by `size` and adds `minDiv` (default 1): `ResNorm(size,
  alpha=scale/size, k=minDiv, beta=pow)`;
- `gpu=0`/`gpu=1` twins (the same layer on each GPU, reading the same things) become one stage
  of `towers N`, with a comment saying whether the stage reads its own tower or crosses GPUs.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TypeVar

from alexnetc.compiler.ast import NETWORK_INPUT
from alexnetc.compiler.errors import Diagnostic, Severity, SourceLoc
from alexnetc.importers import Format, Imported, Options
from alexnetc.importers.blocks import fold_blocks
from alexnetc.importers.draft import Draft, Names, Op, number
from alexnetc.importers.ini import Entry, Section, read_sections
from alexnetc.importers.source import INCONSISTENT, MALFORMED, UNSUPPORTED, Source

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
    "rnorm": "same-map response normalisation (over a size×size patch of each map): alexnetc's "
             "ResNorm normalises across maps, as cmrnorm",
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


def sniff(paths: Sequence[str], texts: Sequence[str] | None) -> bool:
    """A layer file (sections with `type=` and `inputs=`) and a layer-params file, in either
    order."""
    if texts is None or len(texts) != 2:
        return False
    layered = [bool(_TYPE.search(t)) and "inputs" in t.lower() for t in texts]
    return layered.count(True) == 1 and all("[" in t for t in texts)


_TYPE = re.compile(r"^type[ \t]*[=:][ \t]*(" + "|".join(map(re.escape, KNOWN))
                   + r")[ \t]*(?:[;#].*)?$", re.MULTILINE | re.IGNORECASE)


def read(paths: Sequence[str], options: Options) -> Imported:
    first, second = Source.read(paths[0]), Source.read(paths[1])
    if not _TYPE.search(first.text) and _TYPE.search(second.text):
        first, second = second, first  # the layer-params file given first
    reader = _Reader(first, second, options)
    try:
        return Imported(fold_blocks(reader.run()).draft, reader.warnings)
    except _Failed:  # reported in one file: quoted from that file's text
        raise next(s.failure() for s in (first, second) if s.errors) from None


FORMAT = Format("convnet2", "cuda-convnet2 layer files", sniff, read, files=(2,))


class _Failed(Exception):
    """A located error has been recorded in one of the sources."""


class _Cut(Exception):
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


class _Reader:
    """Reads the two files into a draft; a problem records a located error in the file it
    is in and raises `_Failed`."""

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

    # --- errors ------------------------------------------------------------------------------

    def fail(self, kind: str, loc: SourceLoc, message: str, hint: str = "") -> NoReturn:
        source = self.psrc if loc.file == self.psrc.path and self.psrc.path != self.src.path \
            else self.src
        source.error(kind, loc, message, hint)
        raise _Failed

    def unsupported(self, loc: SourceLoc, layer: Layer, message: str, hint: str = "") -> NoReturn:
        """Not expressible: an error, or with --skip-unsupported a warning and the cut."""
        if not self.options.skip_unsupported:
            self.fail(UNSUPPORTED, loc, message, (f"{hint}; or " if hint else "")
                      + "pass --skip-unsupported to import the network before it")
        self.warnings.append(Diagnostic(
            UNSUPPORTED, loc, f"{message}; the network is cut before layer '{layer.name}'",
            "", Severity.WARNING))
        raise _Cut

    # --- reading values ----------------------------------------------------------------------

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
            return _value(e)
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
        return self.values(layer, key, _finite, "a number",
                           None if default is None else repr(default), params)[0]

    def flag(self, layer: Layer, key: str, default: bool, params: bool = False) -> bool:
        return self.values(layer, key, _boolean, "true or false", str(default), params)[0]

    # --- the layer graph ---------------------------------------------------------------------

    def run(self) -> Draft:
        self.read_layers()
        self.read_params()
        if self.src.errors or self.psrc.errors:
            raise _Failed
        nodes = self.pair()
        built: list[Node] = []
        try:
            for node in nodes:
                self.build(node)
                built.append(node)
            self.costs()
        except _Cut:
            pass
        return self.draft([n for n in built if n.kind != "data"])

    def costs(self) -> None:
        """The log-loss of the final softmax is how alexnetc trains; other costs are not."""
        for layer in self.layers.values():
            if layer.kind.startswith("cost.") and layer.kind not in COSTS:
                self.unsupported(self.type_loc(layer), layer, f"layer '{layer.name}' is "
                                 f"{WHY_NOT[layer.kind]}")

    def read_layers(self) -> None:
        sections = read_sections(self.src, "#;", inline="")
        if self.src.errors:
            return  # what follows a broken line would only add confusion
        self.defined = {s.name for s in sections}
        for section in sections:
            if section.name in self.layers:
                self.src.error(MALFORMED, section.loc, f"layer '{section.name}' is defined twice",
                               "give each layer its own name")
                continue
            kind_entry = next((e for e in reversed(section.entries) if e.key.lower() == "type"),
                              None)
            kind = _value(kind_entry) if kind_entry is not None else ""
            if kind_entry is None:
                self.src.error(MALFORMED, section.loc, f"layer '{section.name}' has no `type=`",
                               "add one, e.g. `type=conv`")
            elif kind not in KNOWN:
                close = difflib.get_close_matches(kind, KNOWN, 1)
                self.src.error(MALFORMED, kind_entry.value_loc, f"unknown layer type '{kind}'",
                               f"did you mean '{close[0]}'?" if close else
                               "cuda-convnet2's types: " + ", ".join(KNOWN))
            layer = Layer(section, kind, [], ())
            if kind != "data":
                layer.inputs = self.read_inputs(layer)
            layer.gpu = self.read_gpu(layer)
            self.layers[section.name] = layer

    def read_inputs(self, layer: Layer) -> list[str]:
        e = self.entry(layer, "inputs")
        if e is None:
            self.src.error(MALFORMED, layer.section.loc, f"layer '{layer.name}' has no "
                           "`inputs=`", "name the layers it reads, e.g. `inputs=conv1`")
            return []
        names = [n.strip() for n in _value(e).split(",")]
        col, line = e.value_loc.col, e.value_loc.line
        plain = not layer.kind.startswith("cost.")  # cost layers may read cost layers; no other
        for n, part in zip(names, _value(e).split(","), strict=True):
            at = SourceLoc(e.value_loc.file, line, col + len(part) - len(part.lstrip()), line,
                           col + len(part.rstrip()))
            col += len(part) + 1
            if plain and n in self.layers and self.layers[n].kind.startswith("cost."):
                self.src.error(INCONSISTENT, at, f"layer '{layer.name}' reads cost layer "
                               f"'{n}', which produces no output", "read the layer below it")
            elif n not in self.layers:
                later = n in self.defined
                close = difflib.get_close_matches(n, list(self.layers), 1)
                self.src.error(INCONSISTENT, at, f"layer '{layer.name}' reads '{n}', which no "
                               "layer above it defines",
                               f"did you mean '{close[0]}'?" if close and not later else
                               "define each layer before the layers that read it")
        return [n for n in names if n in self.layers
                and not (plain and self.layers[n].kind.startswith("cost."))]

    def read_gpu(self, layer: Layer) -> tuple[int, ...]:
        e = self.entry(layer, "gpu")
        if e is None:  # a layer runs where its first input does (a data layer: nowhere yet)
            return self.layers[layer.inputs[0]].gpu if layer.inputs else ()
        try:
            return tuple(int(g) for g in _value(e).split(","))
        except ValueError:
            self.src.error(MALFORMED, e.value_loc, f"`gpu` of layer '{layer.name}' must be "
                           f"GPU numbers, got {_value(e)!r}", "e.g. `gpu=0`, or `gpu=0,1`")
            return ()

    def read_params(self) -> None:
        seen: set[str] = set()
        sections = read_sections(self.psrc, "#;", inline="")
        if self.psrc.errors or self.src.errors:
            return
        for section in sections:
            if section.name in seen:
                self.psrc.error(MALFORMED, section.loc, f"layer '{section.name}' has two "
                                "sections in the layer-params file", "merge them into one")
                continue
            seen.add(section.name)
            layer = self.layers.get(section.name)
            if layer is None:
                close = difflib.get_close_matches(section.name, list(self.layers), 1)
                self.psrc.error(INCONSISTENT, section.loc, f"layer-params section "
                                f"'{section.name}' is for no layer of {Path(self.src.path).name}",
                                f"did you mean '{close[0]}'?" if close else
                                "name a layer of the layer file, or remove the section")
                continue
            layer.params = section
        for layer in self.layers.values():
            if layer.params is None and layer.kind in NEEDS_PARAMS:
                self.src.error(MALFORMED, layer.section.loc, f"layer '{layer.name}' "
                               f"({layer.kind}) has no section in the layer-params file "
                               f"{Path(self.psrc.path).name}", f"cuda-convnet2 requires one: add "
                               f"[{layer.name}] with its " + _PARAMS_HINT.get(
                                   layer.kind, "settings"))

    # --- GPUs as towers ----------------------------------------------------------------------

    def pair(self) -> list[Node]:
        """The layers as nodes: where the network runs as model-parallel towers (each layer on
        one GPU, twins on the others with the same settings reading the same things), a node
        per set of twins. Only what pairs becomes towers; a network with no twins is one."""
        order = [la for la in self.layers.values()
                 if not la.kind.startswith("cost.") and not self.is_labels(la)]
        gpus = sorted({g for la in order if la.kind != "data" for g in la.gpu})
        single_gpu = all(len(la.gpu) <= 1 for la in order)
        nodes: list[Node] = []
        taken: set[str] = set()
        for layer in order:
            if layer.name in taken:
                continue
            members = [layer]
            if single_gpu and len(gpus) > 1 and layer.kind != "data":
                key = self.twin_key(layer)
                for other in order[order.index(layer) + 1:]:
                    if other.name not in taken and other.gpu not in {m.gpu for m in members} \
                            and key is not None and self.twin_key(other) == key:
                        members.append(other)
                members = members if len(members) == len(gpus) else [layer]
                members.sort(key=lambda m: m.gpu)
            taken |= {m.name for m in members}
            node = Node(members)
            nodes.append(node)
            for m in members:
                self.node_of[m.name] = node
        if any(n.paired for n in nodes):
            self.towers, self.gpus = len(gpus), tuple(gpus)
        else:
            self.gpus = tuple(gpus)
        return nodes

    def twin_key(self, layer: Layer) -> tuple[object, ...] | None:
        """What twins share: their type, settings and (the nodes of) what they read; None
        for a layer that reads what is not a node yet (so no twin of the one at hand)."""
        if any(n not in self.node_of for n in layer.inputs):
            return None
        settings = [(e.key.lower(), _value(e)) for e in layer.section.entries
                    if e.key.lower() not in NOT_ARCHITECTURE]
        params = [(e.key.lower(), _value(e)) for e in layer.params.entries
                  if e.key.lower() in COMPUTES] if layer.params is not None else []
        reads = tuple(id(self.node_of[n]) for n in layer.inputs)
        return layer.kind, tuple(sorted(settings)), tuple(sorted(params)), tuple(sorted(reads))

    def is_labels(self, layer: Layer) -> bool:
        """A data layer only cost layers read (the labels)."""
        readers = [la for la in self.layers.values() if layer.name in la.inputs]
        return layer.kind == "data" and bool(readers) and all(r.kind.startswith("cost.")
                                                               for r in readers)

    def covers(self, name: str) -> list[tuple[Node, int]]:
        """The node and GPU (twin index) whose maps reading layer `name` reads; a layer with
        no op of its own stands for what it reads."""
        node = self.node_of[name]
        member = next(m for m in node.members if m.name == name)
        if node.alias is None:
            return [(node, node.members.index(member))]
        return [c for x in member.inputs for c in self.covers(x)]

    def connect(self, node: Node) -> None:
        """What the node reads, and whether each twin reads only its own GPU's twin of it
        (`own`) or every GPU's; anything between has no counterpart in alexnetc's towers."""
        per = [[c for x in m.inputs for c in self.covers(x)] for m in node.members]
        node.reads = list(dict.fromkeys(n for n, _ in per[0]))
        ways = set()
        for t, (m, cs) in enumerate(zip(node.members, per, strict=True)):
            twice = next((n.members[i].name for k, (n, i) in enumerate(cs) if (n, i) in cs[:k]),
                         None)
            if twice is not None:
                self.unsupported(self.value_loc(m, "inputs"), m, f"layer '{m.name}' reads "
                                 f"'{twice}' twice: an alexnetc stage reads each stage once")
            for n in dict.fromkeys(n for n, _ in cs):
                got = {i for x, i in cs if x is n}
                way = "all" if len(got) == len(n.members) else \
                    "own" if node.paired and got == {t} else None
                if way is None:
                    every = f"every GPU's (`inputs={','.join(x.name for x in n.members)}`)"
                    own = f"its own twin (`inputs={n.members[t].name}`) or " if node.paired else ""
                    self.unsupported(self.value_loc(m, "inputs"), m, self.partial(m, n, got),
                                     f"read {own}{every}")
                if n.paired:
                    ways.add(way)
        if len(ways) > 1:
            self.unsupported(self.value_loc(node.first, "inputs"), node.first,
                             f"layer '{node.first.name}' reads its own GPU's part of some "
                             "layers and every GPU's of others: alexnetc's towers read one way")
        node.own = ways == {"own"}

    def partial(self, layer: Layer, node: Node, got: set[int]) -> str:
        where = f" (gpu {layer.gpu[0]})" if len(layer.gpu) == 1 else ""
        return (f"layer '{layer.name}'{where} reads "
                + " and ".join(f"'{node.members[i].name}'" for i in sorted(got)) + " but not "
                + " and ".join(f"'{x.name}'" for i, x in enumerate(node.members) if i not in got)
                + ": in alexnetc's towers a layer reads its own GPU's maps or all of them")

    # --- one node: its shape and ops ---------------------------------------------------------

    def build(self, node: Node) -> None:
        self.connect(node)
        layer = node.first
        if layer.kind in WHY_NOT or layer.kind in PREPROCESSING:
            why = WHY_NOT.get(layer.kind, "a data-manipulation layer: alexnetc leaves that to "
                              "its data pipeline (`augment`)")
            self.unsupported(self.type_loc(layer), layer, f"layer '{layer.name}' is {why}")
        if node.paired and not node.own and node.kind not in ("conv", "fc"):
            self.unsupported(layer.section.loc, layer, f"the twins of layer '{layer.name}' each "
                             "read the same maps: alexnetc's towers would split them")
        for m in node.members:
            self.shapes[m.name] = self.layer_shape(m)
        node.ops = self.ops(node)
        per = self.shapes[layer.name]
        node.shape = Maps(per.h, per.w, per.c * len(node.members), per.flat)
        self.neuron(node)
        if node.kind in WEIGHTS:  # its learning rates make the recipe
            self.weight_layers += node.members
        if not node.ops and len(node.reads) == 1:  # it is what it reads
            node.alias = node.reads[0]
            if node.alias.paired and not node.paired:
                node.comments.append(f"{layer.kind} '{layer.name}' joins its GPUs' maps, as "
                                     "alexnetc's towers do")
            node.alias.comments += node.comments or [f"{layer.kind} '{layer.name}' passes "
                                                     "its input on as it is"]

    def type_loc(self, layer: Layer) -> SourceLoc:
        e = self.entry(layer, "type")
        return e.value_loc if e is not None else layer.section.loc

    def input_shapes(self, layer: Layer) -> list[Maps]:
        return [self.shapes[n] for n in layer.inputs]

    def layer_shape(self, layer: Layer) -> Maps:
        """cuda-convnet2's output size of one layer (one GPU's, for twins)."""
        if layer.kind == "data":
            return self.data_shape(layer)
        ins = self.input_shapes(layer)
        if layer.kind == "conv":
            return self.conv_shape(layer, ins)
        if layer.kind == "fc":
            outputs = self.integer(layer, "outputs")
            if outputs < 1:
                self.fail(INCONSISTENT, self.value_loc(layer, "outputs"),
                          f"layer '{layer.name}' has {outputs} outputs", "give at least 1")
            return Maps(1, 1, outputs, True)
        if layer.kind == "pool":
            return self.pool_shape(layer, ins[0])
        if layer.kind in ("concat", "pass"):
            return self.concat_shape(layer, ins)
        if layer.kind == "eltsum" and len(set(ins)) > 1:
            self.fail(INCONSISTENT, self.value_loc(layer, "inputs"), f"layer '{layer.name}' "
                      "adds layers of different sizes: " + ", ".join(map(str, ins)),
                      "cuda-convnet2 needs inputs of one dimensionality")
        if layer.kind == "cmrnorm":
            self.check_channels(layer, "channels", [self.integer(layer, "channels")], ins)
        return ins[0]

    def data_shape(self, layer: Layer) -> Maps:
        images = [la for la in self.layers.values() if la.kind == "data" and
                  not self.is_labels(la) and any(la.name in r.inputs for r in self.layers.values())]
        if len(images) > 1 and layer is images[1]:
            self.unsupported(layer.section.loc, layer, f"data layer '{layer.name}' is a second "
                             f"input beside '{images[0].name}': an alexnetc network has one")
        if self.options.input is None:
            self.fail(INCONSISTENT, layer.section.loc, f"the size of data layer "
                      f"'{layer.name}' is not in the file: cuda-convnet2 takes it from its "
                      "data provider", "pass --input HxWxC, e.g. --input 224x224x3 (its "
                      "--inner-size 224 on colour images)")
        h, w, c = self.options.input
        start = self.integer(layer, "start", 0)
        end = self.integer(layer, "end", start + h * w * c)
        if end - start != h * w * c:
            self.fail(INCONSISTENT, self.value_loc(layer, "end"), f"data layer '{layer.name}' "
                      f"takes {end - start} values (end − start), but --input {h}x{w}x{c} has "
                      f"{h * w * c}", "make --input match the data layer")
        return Maps(h, w, c)

    def value_loc(self, layer: Layer, key: str, params: bool = False) -> SourceLoc:
        e = self.entry(layer, key, params)
        return e.value_loc if e is not None else layer.section.loc

    def check_channels(self, layer: Layer, key: str, channels: list[int],
                       ins: list[Maps]) -> None:
        for n, want, got in zip(layer.inputs, channels, ins, strict=True):
            if got.flat:
                self.unsupported(self.value_loc(layer, "inputs"), layer,
                                 f"layer '{layer.name}' reads '{n}', {got.c} values with no "
                                 "maps, as images: alexnetc keeps an FC's output flat")
            if want != got.c:
                self.fail(INCONSISTENT, self.value_loc(layer, key), f"layer '{layer.name}' "
                          f"says its input has {want} channels, but '{n}' gives {got.c} "
                          f"({got})", f"write `{key}={got.c}`")

    def conv_shape(self, layer: Layer, ins: list[Maps]) -> Maps:
        n = len(layer.inputs)
        channels = self.integers(layer, "channels", count=n)
        self.check_channels(layer, "channels", channels, ins)
        padding = self.integers(layer, "padding", 0, n)
        stride = self.integers(layer, "stride", 1, n)
        size = self.integers(layer, "filterSize", count=n)
        filters = self.integers(layer, "filters", count=n)
        groups = self.integers(layer, "groups", 1, n)
        for key, vals in (("padding", padding), ("stride", stride), ("filterSize", size),
                          ("groups", groups)):
            if len(set(vals)) > 1:
                self.unsupported(self.value_loc(layer, key), layer, f"layer '{layer.name}' "
                                 f"takes a different {key} for each input: alexnetc's conv "
                                 "has one window")
            if min(vals) < (0 if key == "padding" else 1):
                self.fail(INCONSISTENT, self.value_loc(layer, key), f"`{key}` of layer "
                          f"'{layer.name}' must be at least {0 if key == 'padding' else 1}")
        if n > 1 and groups[0] > 1:
            self.unsupported(self.value_loc(layer, "groups"), layer, f"layer '{layer.name}' "
                             "has groups on several inputs: alexnetc groups one input's channels")
        for c in channels:
            if c % groups[0]:
                self.fail(INCONSISTENT, self.value_loc(layer, "groups"), f"groups={groups[0]} "
                          f"does not divide the {c} channels of layer '{layer.name}'")
        if len({f * groups[0] for f in filters}) > 1:
            self.fail(INCONSISTENT, self.value_loc(layer, "filters"), f"layer "
                      f"'{layer.name}' gives each input a different number of filters",
                      "cuda-convnet2 sums the inputs' convolutions: give each the same")
        p, s, k = padding[0], stride[0], size[0]
        if p > k // 2:
            self.unsupported(self.value_loc(layer, "padding"), layer, f"layer '{layer.name}' "
                             f"pads {p} pixels, more than half its {k}-pixel filter: alexnetc "
                             "pads at most half a window")
        if not self.flag(layer, "sharedBiases", True):
            self.unsupported(self.value_loc(layer, "sharedBiases"), layer, f"layer "
                             f"'{layer.name}' has a bias per position (sharedBiases=false): "
                             "alexnetc's conv has one per filter")
        if self.entry(layer, "weightSource") is not None:
            self.unsupported(self.value_loc(layer, "weightSource"), layer, f"layer "
                             f"'{layer.name}' shares another layer's weights: alexnetc's "
                             "layers each have their own")
        if len({(m.h, m.w) for m in ins}) > 1:
            self.fail(INCONSISTENT, self.value_loc(layer, "inputs"), f"layer '{layer.name}' "
                      "reads maps of different sizes: " + ", ".join(map(str, ins)),
                      "cuda-convnet2 needs every input's output grid to agree")
        h, w = (_conv_out(x + 2 * p, k, s) for x in (ins[0].h, ins[0].w))
        if min(h, w) < 1:
            self.fail(INCONSISTENT, self.value_loc(layer, "filterSize"), f"the {k}-pixel "
                      f"filter of layer '{layer.name}' is larger than its {ins[0].h}x"
                      f"{ins[0].w} input padded by {p}")
        modules = self.integer(layer, "modulesX", 0)
        if modules and modules != h:
            self.unsupported(self.value_loc(layer, "modulesX"), layer, f"layer '{layer.name}' "
                             f"sets modulesX={modules}, not the {h} that cover its input: "
                             "alexnetc's windows cover the input")
        return Maps(h, w, filters[0] * groups[0])

    def pool_shape(self, layer: Layer, into: Maps) -> Maps:
        self.check_channels(layer, "channels", [self.integer(layer, "channels")], [into])
        size, stride = self.integer(layer, "sizeX"), self.integer(layer, "stride")
        start, outputs = self.integer(layer, "start", 0), self.integer(layer, "outputsX", 0)
        kind = self.text(layer, "pool")
        if kind not in ("max", "avg", "maxabs"):
            self.fail(MALFORMED, self.value_loc(layer, "pool"), f"`pool` of layer "
                      f"'{layer.name}' must be max, avg or maxabs, got {kind!r}")
        if not 1 <= size <= min(into.h, into.w):
            self.fail(INCONSISTENT, self.value_loc(layer, "sizeX"), f"`sizeX` of layer "
                      f"'{layer.name}' must be in 1..{min(into.h, into.w)} (its input is "
                      f"{into})")
        if not 1 <= stride <= size:
            self.fail(INCONSISTENT, self.value_loc(layer, "stride"), f"`stride` of layer "
                      f"'{layer.name}' must be in 1..{size} (sizeX)", "cuda-convnet2 takes no "
                      "stride larger than the pool")
        if kind == "avg" and self.flag(layer, "sum", False):
            self.unsupported(self.value_loc(layer, "sum"), layer, f"layer '{layer.name}' sums "
                             "its windows (sum=true): alexnetc's AvgPool takes their mean")
        if kind == "maxabs":
            self.unsupported(self.value_loc(layer, "pool"), layer, f"layer '{layer.name}' "
                             "pools by largest magnitude (maxabs): alexnetc's pools take the "
                             "max or the mean")
        if start:
            self.unsupported(self.value_loc(layer, "start"), layer, f"layer '{layer.name}' "
                             f"starts pooling at {start}: alexnetc's pools start at the edge "
                             "(start=0)", "start=0, or pad the layer below")
        h, w = (_pool_out(x, size, stride) for x in (into.h, into.w))
        if outputs and outputs != h:
            self.unsupported(self.value_loc(layer, "outputsX"), layer, f"layer '{layer.name}' "
                             f"sets outputsX={outputs}, not the {h} that cover its input: "
                             "alexnetc's pools cover the input", "outputsX=0")
        return Maps(h, w, into.c)

    def concat_shape(self, layer: Layer, ins: list[Maps]) -> Maps:
        if all(m.flat for m in ins) or len(ins) == 1:
            return Maps(ins[0].h, ins[0].w, sum(m.c for m in ins), ins[0].flat)
        if any(m.flat for m in ins) or len({(m.h, m.w) for m in ins}) > 1:
            self.unsupported(self.value_loc(layer, "inputs"), layer, f"layer '{layer.name}' "
                             "concatenates activations of different sizes ("
                             + ", ".join(map(str, ins)) + "): alexnetc's Concat joins maps of "
                             "one size, or flat vectors")
        return Maps(ins[0].h, ins[0].w, sum(m.c for m in ins))

    # --- ops ---------------------------------------------------------------------------------

    def ops(self, node: Node) -> list[Op]:
        layer, t = node.first, len(node.members)
        merge = [Op("Concat")] if len(node.reads) > 1 else []
        if layer.kind == "conv":
            return [*merge, self.conv_op(node)]
        if layer.kind == "fc":
            if node.own and t > 1:
                self.unsupported(self.value_loc(layer, "inputs"), layer, f"the twins of "
                                 f"'{layer.name}' each read only their own GPU's maps: "
                                 "alexnetc's FC layers read every tower's")
            shapes = [r.shape for r in node.reads]
            if merge and not (all(m.flat for m in shapes) or
                              len({(m.h, m.w, m.flat) for m in shapes}) == 1):
                self.unsupported(self.value_loc(layer, "inputs"), layer, f"layer "
                                 f"'{layer.name}' reads activations of different sizes ("
                                 + ", ".join(map(str, shapes)) + "): alexnetc's FC reads one, "
                                 "or a Concat of maps of one size")
            return [*merge, Op(f"FC({self.integer(layer, 'outputs') * t}{self.init(node)})")]
        if layer.kind == "pool":
            return [self.pool_op(node)]
        if layer.kind == "cmrnorm":
            return [self.lrn_op(node)]
        if layer.kind in ("dropout", "dropout2"):
            return self.dropout_ops(node)
        if layer.kind == "softmax":
            return [Op("Softmax")]
        if layer.kind in ("concat", "pass"):
            return [Op("Concat")] if len(node.reads) > 1 else []
        if layer.kind == "eltsum":
            coeffs = self.values(layer, "coeffs", _finite, "a number", "1", True,
                                 len(layer.inputs))
            if any(c != 1 for c in coeffs):
                self.unsupported(self.value_loc(layer, "coeffs", True), layer, f"layer "
                                 f"'{layer.name}' weighs its inputs by {coeffs}: alexnetc's Add "
                                 "sums them as they are", "coeffs=1")
            return [Op("Add")]
        return []  # a neuron layer: its `neuron=` is all it does

    def conv_op(self, node: Node) -> Op:
        layer, t = node.first, len(node.members)
        ins = self.input_shapes(layer)
        n = len(layer.inputs)  # every input's window is the same (conv_shape)
        k, s, p, g = (self.integers(layer, key, default, n)[0] for key, default in
                      (("filterSize", None), ("stride", 1), ("padding", 0), ("groups", 1)))
        out = self.shapes[layer.name]
        groups = g * t if node.own else g
        if node.paired and not node.own and g % t == 0 and g > 1:
            self.unsupported(self.value_loc(layer, "groups"), layer, f"the twins of "
                             f"'{layer.name}' each group all {self.towers} GPUs' maps: a "
                             f"grouped conv reading every tower has no counterpart in alexnetc")
        args = [f"{k},{s}"] + ([f"pad={p}"] if p else []) + \
            ([f"groups={groups}"] if groups > 1 else [])
        span = ins[0].h + 2 * p - k, ins[0].w + 2 * p - k
        if span[0] % s or span[1] % s:
            args.append("remainder=ceil")
            x = ins[0].h if span[0] % s else ins[0].w
            node.comments.append(f"cuda-convnet2 rounds up: 1 + ⌈({x}"
                                 + (f" + 2·{p}" if p else "") + f" − {k}) / {s}⌉ = "
                                 f"{out.h if span[0] % s else out.w}")
        return Op(f"Conv({', '.join(args)}{self.init(node)}) x{out.c * t}")

    def init(self, node: Node) -> str:
        """`, bias=…, std=…` where the layer's differ from cuda-convnet2's defaults (alexnetc's
        too: N(0, 0.01) weights, biases 0)."""
        layer = node.first
        std = self.values(layer, "initW", _finite, "a number", "0.01",
                          count=max(len(layer.inputs), 1))
        bias = self.real(layer, "initB", 0.0)
        if len(set(std)) > 1:
            node.comments.append(f"initW {', '.join(map(number, std))} per input: alexnetc "
                                 "draws one std per layer")
        if len({(self.text(m, "initW", "0.01"), self.text(m, "initB", "0"))
                for m in node.members}) > 1:
            node.comments.append(f"its twins start from different initW or initB: alexnetc "
                                 f"draws all as '{layer.name}' does")
        for key in ("initWFunc", "initBFunc"):
            if self.entry(layer, key):
                node.comments.append(f"{key} {self.text(layer, key)}: alexnetc draws N(0, std) "
                                     "weights and constant biases instead")
        return (f", bias={number(bias)}" if bias else "") + \
            (f", std={number(std[0])}" if std[0] != 0.01 else "")

    def pool_op(self, node: Node) -> Op:
        layer = node.first
        into = self.input_shapes(layer)[0]
        size, stride = self.integer(layer, "sizeX"), self.integer(layer, "stride")
        kind = "MaxPool" if self.text(layer, "pool") == "max" else "AvgPool"
        out = self.shapes[layer.name]
        if (into.h - size) % stride or (into.w - size) % stride:
            x = into.h if (into.h - size) % stride else into.w
            node.comments.append(f"cuda-convnet2 rounds up: ⌈({x} − {size}) / {stride}⌉ + 1 = "
                                 f"{out.h if (into.h - size) % stride else out.w}"
                                 + ("; the edge window averages the pixels inside it"
                                    if kind == "AvgPool" else ""))
            return Op(f"{kind}({size},{stride}, remainder=ceil)")
        return Op(f"{kind}({size},{stride})")

    def lrn_op(self, node: Node) -> Op:
        layer = node.first
        size = self.integer(layer, "size")
        if self.flag(layer, "blocked", False):
            self.unsupported(self.value_loc(layer, "blocked"), layer, f"layer '{layer.name}' "
                             "normalises within fixed blocks of maps (blocked): alexnetc's "
                             "window is centred on each map")
        if size % 2 == 0:
            self.unsupported(self.value_loc(layer, "size"), layer, f"layer '{layer.name}' "
                             f"normalises over {size} maps, an even window (cuda-convnet2 "
                             f"reads c − {size // 2} … c + {size // 2 - 1}): alexnetc's ResNorm "
                             "is centred, of odd size", f"size={size + 1}")
        if node.paired is False and self.towers > 1:
            self.unsupported(layer.section.loc, layer, f"layer '{layer.name}' normalises "
                             f"across all of its input's maps on one GPU: alexnetc's ResNorm "
                             "stays within each tower")
        scale = self.real(layer, "scale", params=True)
        beta = self.real(layer, "pow", params=True)
        k = self.real(layer, "minDiv", 1.0, params=True)
        alpha = float(f"{scale / size:.12g}")
        node.comments.append(f"cmrnorm: scale {number(scale)} / size {size}"
                             + (f", minDiv {number(k)}" if self.entry(layer, "minDiv", True)
                                else ", minDiv 1 (its default)"))
        return Op(f"ResNorm({size}, alpha={number(alpha)}, k={number(k)}, beta={number(beta)})")

    def dropout_ops(self, node: Node) -> list[Op]:
        """`dropout` drops and scales by 1/keep while training (PyTorch's); `dropout2` drops
        while training and scales by keep otherwise, even when disabled (layer.cu)."""
        layer = node.first
        keep = self.real(layer, "keep", 0.5, params=True)
        if not 0 < keep <= 1:
            self.fail(INCONSISTENT, self.value_loc(layer, "keep", True), f"layer "
                      f"'{layer.name}' keeps {number(keep)} of its units",
                      "keep is a probability in (0, 1]")
        if keep == 1:
            node.comments.append(f"{layer.kind} '{layer.name}' keeps every unit (keep=1)")
            return []
        if not self.flag(layer, "enable", True, params=True):
            if layer.kind == "dropout2" and keep != 1:
                self.unsupported(self.value_loc(layer, "enable", True), layer, f"disabled "
                                 f"dropout2 layer '{layer.name}' still scales by keep "
                                 f"{number(keep)}: alexnetc has no constant scale")
            node.comments.append(f"{layer.kind} '{layer.name}' is disabled (enable=false)")
            return []
        node.comments.append(f"{layer.kind}: keep {number(keep)}" + (
            " (it scales by keep at test time, PyTorch by 1/keep while training: the same "
            "expectation)" if layer.kind == "dropout2" else ""))
        return [Op(f"Dropout({number(float(f'{1 - keep:.12g}'))})")]

    def neuron(self, node: Node) -> None:
        """`neuron=` (or a neuron layer's): the activation tied to the op."""
        layer = node.first
        e = self.entry(layer, "neuron")
        if e is None or layer.kind.startswith("cost."):
            if layer.kind == "neuron":
                self.text(layer, "neuron")
            return
        text = _value(e)
        m = re.fullmatch(r"\s*(\w+)\s*(?:\[([^\]]*)\])?\s*", text)
        name, args = (m.group(1), m.group(2)) if m else (text, None)
        try:
            params = [float(a) for a in args.split(",")] if args else []
        except ValueError:
            params = [math.nan]
        op = {("relu", 0): "ReLU", ("logistic", 0): "Sigmoid", ("ident", 0): ""}.get(
            (name, len(params)))
        if name == "tanh" and params == [1.0, 1.0]:
            op = "Tanh"
        if name == "brelu" and params == [6.0]:
            op = "ReLU6"
        if op is None:
            known = name in ("abs", "nrelu", "softrelu", "square", "sqrt", "log", "tanh",
                             "brelu", "linear", "drelu", "relu", "logistic", "ident")
            if not known or (args is not None and name in ("relu", "logistic", "ident")):
                self.fail(MALFORMED, e.value_loc, f"unknown neuron '{text}' on layer "
                          f"'{layer.name}'", "cuda-convnet2's neurons: relu, logistic, "
                          "tanh[a,b], brelu[a], softrelu, abs, square, sqrt, log[a], linear[a,b], "
                          "drelu[a], nrelu, ident")
            self.unsupported(e.value_loc, layer, f"neuron '{text}' of layer '{layer.name}' "
                             "has no counterpart in alexnetc (ReLU, Sigmoid, Tanh = tanh[1,1], "
                             "ReLU6 = brelu[6])")
        if op:
            node.ops.append(Op(op, tied=bool(node.ops)))

    # --- the spec ----------------------------------------------------------------------------

    def draft(self, nodes: list[Node]) -> Draft:
        names = Names()
        stem = Path(self.src.path).stem
        network = names.new(re.sub(r"^layers?[-_](?=[A-Za-z])", "", stem))
        draft = Draft(network, self.options.input, self.towers)
        draft.notes += [f"Imported from cuda-convnet2's {Path(self.src.path).name} and "
                        f"{Path(self.psrc.path).name}.",
                        "input: from --input (cuda-convnet2 takes it from its data provider)."]
        if self.towers > 1:
            draft.notes.append(f"towers {self.towers}: each layer's twins on GPUs "
                               + ", ".join(map(str, self.gpus)) + " are one stage; each line "
                               "says whether it stays in its tower or crosses GPUs.")
        elif len(self.gpus) > 1:
            draft.notes.append("cuda-convnet2 spreads it over GPUs "
                               + ", ".join(map(str, self.gpus)) + " (replicas or whole layers); "
                               "alexnetc runs it as one network.")
        stage_of: dict[Node, str] = {}
        previous = NETWORK_INPUT
        for head, chain in self.stages([n for n in nodes if n.alias is None]):
            reads = [stage_of.get(r, NETWORK_INPUT) for r in head.reads] or [NETWORK_INPUT]
            ops = [op for n in chain for op in n.ops]
            ops[0] = Op(ops[0].text)
            notes = [self.where(head, chain)] + [c for n in chain for c in n.comments]
            stage = draft.add(_common(head), ops, None, [c for c in notes if c])
            if reads != [previous]:
                stage.sources = tuple(reads)
            for n in chain:
                stage_of[n] = stage.name
                for m in n.members:
                    draft.names.given[m.name] = stage.name
            previous = stage.name
        self.recipe(draft)
        return draft

    def stages(self, nodes: list[Node]) -> list[tuple[Node, list[Node]]]:
        """Nodes as stages: a norm, pool, neuron, dropout or softmax that alone reads the layer
        before it joins that layer's stage (as `conv1: Conv…; ResNorm…; MaxPool…`)."""
        readers = Counter(r for n in nodes for r in n.reads)
        out: list[tuple[Node, list[Node]]] = []
        chain_of: dict[Node, list[Node]] = {}
        for n in nodes:
            chain = chain_of.get(n.reads[0]) if len(n.reads) == 1 else None
            if (chain is not None and chain[-1] is n.reads[0] and readers[n.reads[0]] == 1
                    and n.kind in ("cmrnorm", "pool", "neuron", "dropout", "dropout2",
                                   "softmax")):
                n.ops[0].tied = n.kind in ("neuron", "softmax")
                chain.append(n)
            else:
                chain = [n]
                out.append((n, chain))
            chain_of[n] = chain
        return out

    def where(self, head: Node, chain: list[Node]) -> str:
        """The layers a stage is made of and, with towers, whether it crosses GPUs."""
        names = ", ".join("|".join(m.name for m in n.members) for n in chain)
        if self.towers == 1:
            return names if len(chain) > 1 or head.first.name != _common(head) else ""
        crosses = any(r.paired for r in head.reads) and not head.own
        if head.paired:
            gpus = "|".join(str(m.gpu[0]) for m in head.members)
            return f"{names} on gpu {gpus}: " + (
                "each tower reads its own maps" if head.own else
                "reads both towers, crossing GPUs" if crosses else
                "each tower reads the whole image" if all(r.kind == "data" for r in head.reads)
                else "each tower reads all of its input")
        return (f"{names} on gpu {head.first.gpu[0] if head.first.gpu else 0} alone, split "
                "over the towers here" + (": reads both towers, crossing GPUs" if crosses
                                          else ""))

    def recipe(self, draft: Draft) -> None:
        """`train lr=…, momentum=…, weight_decay=…` where the weight layers agree; comments
        for what does not map."""
        rows: dict[str, list[tuple[str, str]]] = {}
        for layer in self.weight_layers:
            n = len(layer.inputs)
            for key, label in (("epsW", "epsW"), ("momW", "momW"), ("wc", "wc")):
                for v in self.values(layer, key, str, "a value", "0" if key == "wc" else None,
                                     True, n):
                    rows.setdefault(label, []).append((layer.name, v))
            for key in ("epsB", "momB"):
                rows.setdefault(key, []).append((layer.name, self.text(layer, key,
                                                                        params=True)))
        if not self.weight_layers:
            return
        lr = [(name, self.rate(self.layers[name], "epsW", v)) for name, v in rows["epsW"]]
        self.setting(draft, "lr", "epsW", lr)
        self.setting(draft, "momentum", "momW",
                     [(n, self.number(self.layers[n], "momW", v)) for n, v in rows["momW"]])
        self.setting(draft, "weight_decay", "wc",
                     [(n, self.number(self.layers[n], "wc", v)) for n, v in rows["wc"]])
        schedules = sorted({v for _, v in rows["epsW"] if (_rate(v) or ("", False))[1]})
        for s in schedules:
            draft.setting_notes.append(f"epsW={s}: alexnetc starts at its base and divides "
                                       "the rate by 10 when validation error stops improving "
                                       "(lr_drop)")
        weights = dict(lr)
        biases = [(n, self.rate(self.layers[n], "epsB", v)) for n, v in rows["epsB"]]
        self.bias_note(draft, "epsB", "the biases' learning rate", "trains them at lr",
                       weights, biases)
        weights = {n: self.number(self.layers[n], "momW", v) for n, v in rows["momW"]}
        biases = [(n, self.number(self.layers[n], "momB", v)) for n, v in rows["momB"]]
        self.bias_note(draft, "momB", "the biases' momentum", "uses one momentum", weights,
                       biases)

    def bias_note(self, draft: Draft, key: str, what: str, instead: str,
                  weights: dict[str, float], biases: list[tuple[str, float]]) -> None:
        """A comment where a bias setting differs from its weights' (`epsB=0.02`)."""
        differ = [(n, b) for n, b in biases if b != weights[n]]
        if not differ:
            return
        pairs = {(weights[n], b) for n, b in differ}
        if len(differ) == len(biases) and len(pairs) == 1:
            (w, b), = pairs
            where = f"{number(b)} in every weight layer (their weights' {number(w)})"
        else:
            where = ", ".join(f"{n} {number(b)} (weights {number(weights[n])})" for n, b in differ)
        draft.setting_notes.append(f"{key} ({what}): {where}; alexnetc {instead}")

    def setting(self, draft: Draft, key: str, source_key: str,
                values: list[tuple[str, float]]) -> None:
        for name, v in values:
            if v < 0 or (key == "momentum" and v >= 1):
                self.fail(INCONSISTENT, self.value_loc(self.layers[name], source_key, True),
                          f"`{source_key}` of layer '{name}' is {number(v)}",
                          "a momentum is in [0, 1)" if key == "momentum" else
                          f"{source_key} is at least 0")
        counts = Counter(v for _, v in values)
        common = counts.most_common(1)[0][0]
        draft.set("train", key, common)
        if len(counts) > 1:
            others = [f"{n} {number(v)}" for n, v in values if v != common]
            draft.setting_notes.append(f"{source_key} differs by layer: {key}={number(common)} "
                                       "(most layers'); " + ", ".join(others))

    def rate(self, layer: Layer, key: str, text: str) -> float:
        """A learning rate, or its schedule's base (`dexp[base=0.01;tgtFactor=250;…]`)."""
        base = _rate(text)
        if base is None:
            self.fail(MALFORMED, self.value_loc(layer, key, True), f"`{key}` of layer "
                      f"'{layer.name}' is neither a number nor a schedule: {text!r}",
                      f"e.g. `{key}=0.01` or `{key}=exp[base=0.01;tgtFactor=100]`")
        return self.number(layer, key, base[0])

    def number(self, layer: Layer, key: str, text: str) -> float:
        try:
            return _finite(text)
        except ValueError:
            self.fail(MALFORMED, self.value_loc(layer, key, True), f"`{key}` of layer "
                      f"'{layer.name}' must be a number, got {text!r}",
                      f"e.g. `{key}={'0.9' if key.startswith('mom') else '0.01'}`")


_SCHEDULE = re.compile(r"\s*(\w+)\s*\[\s*base\s*=\s*([^;\]\s]+)\s*(?:;[^\]]*)?\]\s*")
SCHEDULES = ("const", "linear", "exp", "dexp")  # layer.py's lrs_parsers


def _rate(text: str) -> tuple[str, bool] | None:
    """A learning rate's base and whether it changes while training: `0.01`,
    `const[base=0.01]`, `dexp[base=0.01;tgtFactor=250;numSteps=4]`."""
    m = _SCHEDULE.fullmatch(text)
    if m is not None:
        return (m.group(2), m.group(1) != "const") if m.group(1) in SCHEDULES else None
    return (text.strip(), False) if re.fullmatch(r"\s*[^\s\[\];]+\s*", text) else None


_PARAMS_HINT = {
    "conv": "`epsW`, `epsB`, `momW`, `momB`, `wc`",
    "fc": "`epsW`, `epsB`, `momW`, `momB`, `wc`",
    "cmrnorm": "`scale` and `pow`",
    "rnorm": "`scale` and `pow`",
    "dropout": "`keep`",
    "dropout2": "`keep`",
    "cost.logreg": "`coeff`",
}


def _value(e: Entry) -> str:
    """The value as ConfigParser reads it: `;` after a space starts a comment."""
    return re.sub(r"\s;.*$", "", e.value).strip()


def _finite(text: str) -> float:
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(text)
    return x


def _boolean(text: str) -> bool:
    try:
        return BOOLS[text.lower()]
    except KeyError:
        raise ValueError(text) from None


def _conv_out(padded: int, size: int, stride: int) -> int:
    """layer.py: modulesX = 1 + ⌈(2·padding + imgSize − filterSize) / stride⌉."""
    return 1 + -(-(padded - size) // stride) if padded >= size else 0


def _pool_out(length: int, size: int, stride: int) -> int:
    """layer.py: outputsX = ⌈(imgSize − start − sizeX) / stride⌉ + 1 (start 0)."""
    return -(-(length - size) // stride) + 1


def _common(node: Node) -> str:
    """Twins' shared name: `conv1a`, `conv1b` → `conv1`."""
    names = [m.name for m in node.members]
    i = 0
    while all(len(n) > i and n[i] == names[0][i] for n in names):
        i += 1
    return names[0][:i].rstrip("_-.") or names[0]

