"""AST → networkx graph: one node per op, in data-flow order, carrying its call and location.

Passes annotate nodes with typed metadata under fixed keys (see `Key`); `CheckedNetwork`
reads them back as `Layer` records for the report and the backends.
"""

from __future__ import annotations

import keyword
from collections.abc import Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import networkx as nx

from alexnetc.compiler import ast
from alexnetc.compiler.errors import RESERVED, Diagnostic, Note, SourceLoc
from alexnetc.compiler.expand import INPUT, FlatStage
from alexnetc.compiler.records import Counts, Field, Fusion, Shape, TowerInfo
from alexnetc.compiler.registry import OpDef, lookup

__all__ = ["INPUT"]  # the input node's id, defined with the stages that read it


class Key:
    """Node attribute names; each pass writes one and the next pass reads it."""

    CALL = "call"  # ast.OpCall          (build)
    STAGE = "stage"  # str               (build) the flat stage's name, `layer1.0.a`
    OP = "op"  # OpDef | None            (build)
    INPUTS = "inputs"  # tuple[str, ...] (build) the nodes it reads, in order (may repeat)
    SOURCES = "sources"  # tuple[str, ...] (build) those inputs as the spec names them
    NOTES = "notes"  # tuple[Note, ...]  (build) the block uses that instantiated it
    ARGS = "args"  # the op's argument record, e.g. ConvArgs (verify)
    IN_SHAPE = "in_shape"  # Shape       (shapes) the first input's
    IN_SHAPES = "in_shapes"  # tuple[Shape, ...] (shapes) every input's, in order
    SHAPE = "shape"  # Shape             (shapes)
    COUNTS = "counts"  # Counts          (counts)
    TOWER = "tower"  # TowerInfo         (towers)
    FUSION = "fusion"  # Fusion | None   (fusion)
    FIELD = "field"  # Field             (fields)


# Stage names become attributes of the lowered module (`model.conv1`), so a stage may not take a
# name the module already has. The lists are static so that checking never imports torch;
# tests/backends/lowering/test_lowering_networks.py compares them with the real classes, so a
# new torch (or a new attribute of AlexnetcModule) that adds a name fails a test until it is
# added here.
NN_MODULE_ATTRIBUTES = frozenset({
    # public attributes of torch.nn.Module (torch 2.13), plus `training`, set in __init__
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init",
    "children", "compile", "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr",
    "float", "forward", "get_buffer", "get_extra_state", "get_parameter", "get_submodule",
    "half", "ipu", "load_state_dict", "modules", "mtia", "named_buffers", "named_children",
    "named_modules", "named_parameters", "parameters", "register_backward_hook",
    "register_buffer", "register_forward_hook", "register_forward_pre_hook",
    "register_full_backward_hook", "register_full_backward_pre_hook",
    "register_load_state_dict_post_hook", "register_load_state_dict_pre_hook",
    "register_module", "register_parameter", "register_state_dict_post_hook",
    "register_state_dict_pre_hook", "requires_grad_", "set_extra_state", "set_submodule",
    "share_memory", "state_dict", "to", "to_empty", "train", "training", "type", "xpu",
    "zero_grad",
})
ALEXNETC_MODULE_ATTRIBUTES = frozenset({
    # what alexnetc.backends.lowering.AlexnetcModule adds (its private ones start with `_`)
    "add_stage", "check_input", "devices", "final_softmax", "merged", "net", "predict",
    "stage_names",
})


def reserved_stage_name(name: str) -> str | None:
    """Why `name` cannot name a stage (None: it can)."""
    if name.startswith("_"):
        return "names starting with `_` are reserved for the PyTorch module's internals"
    if keyword.iskeyword(name):
        return f"'{name}' is a Python keyword, which torch.export cannot use as a module name"
    if name in ALEXNETC_MODULE_ATTRIBUTES:
        return f"'{name}' is an attribute of alexnetc's PyTorch module"
    if name in NN_MODULE_ATTRIBUTES:
        return f"'{name}' is an attribute of torch.nn.Module"
    return None


def free_stage_name(name: str, taken: AbstractSet[str]) -> str:
    """A stage name like `name` that is neither reserved nor in `taken`, for hints."""
    base = name.strip("_") or "stage"
    if not base[0].isalpha():
        base = f"stage_{base}"
    candidate, i = base, 0
    while (candidate == name or candidate in taken or candidate in ast.KEYWORDS
           or reserved_stage_name(candidate) is not None):
        i += 1
        candidate = f"{base}_{i}"
    return candidate


def reserved_name_error(net: ast.Network, name: str, message: str,
                        taken: set[str] | None = None, loc: SourceLoc | None = None) -> Diagnostic:
    """A located error for a stage name the lowered module cannot take (with a free name).

    The verify pass reports it; the lowering raises it too (in a `SpecError`) should a name
    ever slip past the checker.
    """
    stage = next((s for s in net.stages if s.name == name), None)
    taken = {s.name for s in net.stages} if taken is None else taken
    if loc is None:
        loc = stage.name_loc if stage else net.loc
    return Diagnostic(RESERVED, loc, message,
                      f"rename the stage, e.g. `{free_stage_name(name, taken)}:` (each stage "
                      "becomes an attribute of the PyTorch module, as `model.conv1`)")


def node_id(stage: str, index: int) -> str:
    return f"{stage}.{index}"


def build(net: ast.Network, stages: list[FlatStage]) -> nx.DiGraph:
    """One node per op: a stage's first op reads the stages it names, each later op the op
    before it. Nodes are kept in the order written, which runs every op after its inputs
    (a stage reads only stages above it), as the graph's `order`."""
    g = nx.DiGraph(network=net, stages=stages)
    g.add_node(INPUT)
    last: dict[str, str] = {INPUT: INPUT}  # a flat stage's name → its last op's node
    order: list[str] = []
    for stage in stages:
        names = _source_names(stage)
        inputs = tuple(last[s] for s in stage.sources if s in last)
        labels = tuple(n for s, n in zip(stage.sources, names, strict=True) if s in last)
        for i, call in enumerate(stage.ops):
            nid = node_id(stage.name, i)
            if nid in g:  # duplicate stage names: verify reports them; keep nodes distinct
                nid = f"{nid}#{call.loc.line}"
            g.add_node(nid, **{Key.CALL: call, Key.STAGE: stage.name, Key.OP: lookup(call.name),
                               Key.INPUTS: inputs, Key.SOURCES: labels,
                               Key.NOTES: stage.notes})
            for src in inputs:
                g.add_edge(src, nid)
            order.append(nid)
            inputs, labels = (nid,), (stage.name,)
        if stage.ops:
            last[stage.name] = order[-1]
    g.graph["order"] = order
    return g


def _source_names(stage: FlatStage) -> tuple[str, ...]:
    """What a stage reads as its spec names it (`in`, `b`), for messages."""
    written = stage.written.sources
    if len(written) == len(stage.sources):
        return tuple(r.name for r in written)
    return stage.sources


def topo_ops(g: nx.DiGraph) -> list[str]:
    """Op nodes in execution order (the input node excluded)."""
    order: list[str] = g.graph["order"]
    return order


def notes(node: dict[str, Any]) -> tuple[Note, ...]:
    """The block uses that instantiated a node's op, for its diagnostics."""
    found: tuple[Note, ...] = node.get(Key.NOTES, ())
    return found


def branches(stages: list[FlatStage]) -> bool:
    """Whether any stage reads other than the stage above it (or merges several): also for
    the stages of a spec that failed, which the report and the picture draw."""
    prev = INPUT
    for s in stages:
        if s.sources != (prev,):
            return True
        prev = s.name
    return False


@dataclass(frozen=True)
class Layer:
    """One op of the checked network, with everything the passes found out about it."""

    id: str
    stage: str
    call: ast.OpCall
    op: OpDef[Any]
    args: Any  # the op's argument record (`op.args_type`: ConvArgs, LRNArgs, ...)
    inputs: tuple[str, ...]  # ids of the layers it reads (`INPUT` for the image), in order
    in_shapes: tuple[Shape, ...]
    shape: Shape
    counts: Counts
    tower: TowerInfo
    fusion: Fusion | None
    field: Field

    @property
    def name(self) -> str:
        return self.op.name

    @property
    def in_shape(self) -> Shape:
        """The (first) input's shape: an op that does not merge has one."""
        return self.in_shapes[0]


def chains(layers: list[Layer]) -> list[list[Layer]]:
    """A stage's layers as they run: each fused chain as one group, every other layer alone."""
    out: list[list[Layer]] = []
    for layer in layers:
        f = layer.fusion
        if f is not None and layer.id != f.head and out and out[-1][0].id == f.head:
            out[-1].append(layer)
        else:
            out.append([layer])
    return out


@dataclass(frozen=True)
class CheckedNetwork:
    """A spec whose every pass succeeded: the backends' only input."""

    ast: ast.Network
    graph: nx.DiGraph
    name: str
    input: Shape
    towers: int

    def layers(self) -> Iterator[Layer]:
        for n in topo_ops(self.graph):
            d = self.graph.nodes[n]
            yield Layer(n, d[Key.STAGE], d[Key.CALL], d[Key.OP], d[Key.ARGS], d[Key.INPUTS],
                        d[Key.IN_SHAPES], d[Key.SHAPE], d[Key.COUNTS], d[Key.TOWER],
                        d.get(Key.FUSION), d[Key.FIELD])

    def flat_stages(self) -> list[FlatStage]:
        """The stages as they run (blocks instantiated), each with the stages it reads."""
        found: list[FlatStage] = self.graph.graph["stages"]
        return found

    @property
    def branches(self) -> bool:
        """Whether any stage reads other than the stage above it (or merges several)."""
        return branches(self.flat_stages())

    def stages(self) -> list[tuple[str, list[Layer]]]:
        """Layers grouped by (flat) stage, in order."""
        out: list[tuple[str, list[Layer]]] = []
        for layer in self.layers():
            if not out or out[-1][0] != layer.stage:
                out.append((layer.stage, []))
            out[-1][1].append(layer)
        return out

    @property
    def output(self) -> Shape:
        last = list(self.layers())
        return last[-1].shape if last else self.input

    @property
    def class_vector(self) -> bool:
        """A network ending in a 1x1xC map (global pooling, a 1x1 conv) classifies with it:
        the lowered module gives N x C, as after an FC."""
        out = self.output
        return not out.flat and out.h == out.w == 1

    def total(self) -> Counts:
        t = Counts()
        for layer in self.layers():
            c = layer.counts
            t = Counts(t.weights + c.weights, t.biases + c.biases, t.neurons + c.neurons,
                       t.macs + c.macs, t.activation_bytes + c.activation_bytes,
                       t.buffers + c.buffers, t.train_macs + c.train_macs)
        return t

    def cross_tower_bytes(self) -> int:
        return sum(layer.tower.cross_bytes for layer in self.layers())
