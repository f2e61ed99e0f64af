"""A check's annotated graph stage by stage, for a spec that may have failed: what the passes
found for each stage (its graph nodes, possibly without shapes past the first error) and the
diagnostics that fall inside it.  The picture (draw.py) and the table (report.py) of a failing
spec both read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import networkx as nx

from alexnetc.compiler import ast
from alexnetc.compiler.ast import OpCall
from alexnetc.compiler.errors import Diagnostic, Severity
from alexnetc.compiler.expand import FlatStage
from alexnetc.compiler.graph import Key, topo_ops
from alexnetc.compiler.records import Shape


@dataclass
class StageView:
    """One stage as it runs (a block instance's stages each on their own): its ops, the graph
    nodes the passes annotated, its diagnostics."""

    flat: FlatStage
    nodes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[Diagnostic] = field(default_factory=list)
    warnings: list[Diagnostic] = field(default_factory=list)

    @property
    def ast(self) -> ast.Stage:
        """The stage as written (in a block, the block's line)."""
        return self.flat.written

    @property
    def name(self) -> str:
        return self.flat.name

    @property
    def calls(self) -> tuple[OpCall, ...]:
        """Its ops, a block's parameters substituted."""
        return self.flat.ops

    @property
    def ops(self) -> str:
        """`Conv(11,4) x96 + ReLU; ResNorm(5); MaxPool(3,2)`, as the report writes each op."""
        out = ""
        for i, call in enumerate(self.calls):
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
    """The stages in order, each with its graph nodes and the diagnostics inside it (a block
    line's diagnostic with the instance its notes name)."""
    out = [StageView(s) for s in g.graph["stages"]]
    of_stage = {s.name: s for s in out}
    for n in topo_ops(g):
        stage = of_stage.get(g.nodes[n][Key.STAGE])
        if stage is not None:
            stage.nodes.append(g.nodes[n])
    for d in diags:
        for s in out:
            written = s.ast
            locs = [written.loc, *(c.loc for c in written.ops)]
            if written.expect is not None:
                locs.append(written.expect.loc)
            inside = min(x.line for x in locs) <= d.loc.line <= max(x.end_line for x in locs)
            if inside and d.notes[len(d.notes) - len(s.flat.notes):] == s.flat.notes:
                (s.errors if d.severity is Severity.ERROR else s.warnings).append(d)
                break
    return out
