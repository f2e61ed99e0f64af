"""AST → networkx graph: one node per op, in data-flow order, carrying its call and location.

Passes annotate nodes with typed metadata under fixed keys (see `Key`); `CheckedNetwork`
reads them back as `Layer` records for the report and the backends.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import networkx as nx

from alexnetc.compiler import ast
from alexnetc.compiler.ops import OpDef, Value, lookup
from alexnetc.compiler.shapes import Counts, Fusion, Shape, TowerInfo

INPUT = "input"


class Key:
    """Node attribute names; each pass writes one and the next pass reads it."""

    CALL = "call"  # ast.OpCall          (build)
    STAGE = "stage"  # str               (build)
    OP = "op"  # OpDef | None            (build)
    ARGS = "args"  # dict[str, Value]    (verify)
    IN_SHAPE = "in_shape"  # Shape       (shapes)
    SHAPE = "shape"  # Shape             (shapes)
    COUNTS = "counts"  # Counts          (counts)
    TOWER = "tower"  # TowerInfo         (towers)
    FUSION = "fusion"  # Fusion | None   (fusion)


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
    op: OpDef
    args: dict[str, Value]
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

    def total(self) -> Counts:
        t = Counts()
        for layer in self.layers():
            c = layer.counts
            t = Counts(t.weights + c.weights, t.biases + c.biases, t.neurons + c.neurons,
                       t.macs + c.macs, t.activation_bytes + c.activation_bytes)
        return t

    def cross_tower_bytes(self) -> int:
        return sum(layer.tower.cross_bytes for layer in self.layers())
