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
from alexnetc.compiler.errors import RESERVED, Diagnostic
from alexnetc.compiler.records import Counts, Fusion, Shape, TowerInfo
from alexnetc.compiler.registry import OpDef, lookup

INPUT = "input"


class Key:
    """Node attribute names; each pass writes one and the next pass reads it."""

    CALL = "call"  # ast.OpCall          (build)
    STAGE = "stage"  # str               (build)
    OP = "op"  # OpDef | None            (build)
    ARGS = "args"  # the op's argument record, e.g. ConvArgs (verify)
    IN_SHAPE = "in_shape"  # Shape       (shapes)
    SHAPE = "shape"  # Shape             (shapes)
    COUNTS = "counts"  # Counts          (counts)
    TOWER = "tower"  # TowerInfo         (towers)
    FUSION = "fusion"  # Fusion | None   (fusion)


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
                        taken: set[str] | None = None) -> Diagnostic:
    """A located error for a stage name the lowered module cannot take (with a free name).

    The verify pass reports it; the lowering raises it too (in a `SpecError`) should a name
    ever slip past the checker.
    """
    stage = next((s for s in net.stages if s.name == name), None)
    taken = {s.name for s in net.stages} if taken is None else taken
    return Diagnostic(RESERVED, stage.name_loc if stage else net.loc, message,
                      f"rename the stage, e.g. `{free_stage_name(name, taken)}:` (each stage "
                      "becomes an attribute of the PyTorch module, as `model.conv1`)")


def node_id(stage: str, index: int) -> str:
    return f"{stage}.{index}"


def build(net: ast.Network) -> nx.DiGraph:
    """Chain every stage's ops after the input node, in the order written."""
    g = nx.DiGraph(network=net)
    g.add_node(INPUT)
    prev = INPUT
    for stage in net.stages:
        for i, call in enumerate(stage.ops):
            nid = node_id(stage.name, i)
            if nid in g:  # duplicate stage names: verify reports them; keep nodes distinct
                nid = f"{nid}#{call.loc.line}"
            g.add_node(nid, **{Key.CALL: call, Key.STAGE: stage.name, Key.OP: lookup(call.name)})
            g.add_edge(prev, nid)
            prev = nid
    return g


def topo_ops(g: nx.DiGraph) -> list[str]:
    """Op nodes in execution order (the input node excluded)."""
    return [n for n in nx.topological_sort(g) if n != INPUT]


@dataclass(frozen=True)
class Layer:
    """One op of the checked network, with everything the passes found out about it."""

    id: str
    stage: str
    call: ast.OpCall
    op: OpDef[Any]
    args: Any  # the op's argument record (`op.args_type`: ConvArgs, LRNArgs, ...)
    in_shape: Shape
    shape: Shape
    counts: Counts
    tower: TowerInfo
    fusion: Fusion | None

    @property
    def name(self) -> str:
        return self.op.name


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
            yield Layer(n, d[Key.STAGE], d[Key.CALL], d[Key.OP], d[Key.ARGS], d[Key.IN_SHAPE],
                        d[Key.SHAPE], d[Key.COUNTS], d[Key.TOWER], d.get(Key.FUSION))

    def stages(self) -> list[tuple[str, list[Layer]]]:
        """Layers grouped by stage, in order."""
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
                       t.buffers + c.buffers)
        return t

    def cross_tower_bytes(self) -> int:
        return sum(layer.tower.cross_bytes for layer in self.layers())
