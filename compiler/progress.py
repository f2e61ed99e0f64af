"""A check's annotated graph stage by stage, for a spec that may have failed: what the passes
found for each stage (its graph nodes, possibly without shapes past the first error) and the
diagnostics that fall inside it.  The picture (draw.py) and the table (report.py) of a failing
spec both read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from alexnetc.compiler import ast
from alexnetc.compiler.errors import Diagnostic, Severity
from alexnetc.compiler.graph import Key, topo_ops
from alexnetc.compiler.records import Shape


@dataclass
class StageView:
    """One stage: its ops as written, the graph nodes the passes annotated, its diagnostics."""

    ast: ast.Stage
    nodes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def ops(self) -> str:
        """`Conv(11,4) x96 + ReLU; ResNorm(5); MaxPool(3,2)`, as the report writes each op."""
        out = ""
        for i, call in enumerate(self.ast.ops):
            out += ("" if i == 0 else " + " if call.joined else "; ") + call.text()
        return out

    def has(self, key: str) -> bool:
        return bool(self.nodes) and all(key in n for n in self.nodes)

    @property
    def shape(self) -> Shape | None:
        return self.nodes[-1][Key.SHAPE] if self.has(Key.SHAPE) else None

    @property
    def params(self) -> int | None:
        return sum(n[Key.COUNTS].params for n in self.nodes) if self.has(Key.COUNTS) else None

    @property
    def fusions(self) -> list[str]:
        return list(dict.fromkeys(n[Key.FUSION].kernel for n in self.nodes if n.get(Key.FUSION)))


def stage_views(net: ast.Network, g: nx.DiGraph, diags: list[Diagnostic]) -> list[StageView]:
    """The spec's stages in order, each with its graph nodes and the diagnostics inside it."""
    out = [StageView(s) for s in net.stages]
    of_call = {id(call): out[i] for i, s in enumerate(net.stages) for call in s.ops}
    for n in topo_ops(g):
        stage = of_call.get(id(g.nodes[n][Key.CALL]))
        if stage is not None:
            stage.nodes.append(g.nodes[n])
    for d in diags:
        for s in out:
            locs = [s.ast.loc, *(c.loc for c in s.ast.ops)]
            if s.ast.expect is not None:
                locs.append(s.ast.expect.loc)
            if min(x.line for x in locs) <= d.loc.line <= max(x.end_line for x in locs):
                (s.errors if d.severity is Severity.ERROR else s.warnings).append(d)
                break
    return out
