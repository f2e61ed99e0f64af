"""The checking passes, run in order from one place.

Each pass reads the node keys written by the passes before it and writes its own; after
each pass `run_passes` checks that every node the pass could handle got its key, so a pass
that silently skipped a node is a compiler bug, not a wrong number in the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import networkx as nx

from alexnetc.compiler import ast
from alexnetc.compiler.errors import Diagnostics
from alexnetc.compiler.graph import Key, topo_ops
from alexnetc.compiler.recipe import check_against_input
from alexnetc.compiler.records import Shape


@dataclass
class Context:
    """What every pass may read besides the graph: the AST, the header facts, diagnostics."""

    net: ast.Network
    graph: nx.DiGraph
    diags: Diagnostics
    input: Shape | None = None
    towers: int = 1


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Context], None]
    needs: str | None  # node key a node must have for this pass to handle it
    writes: str


def _passes() -> list[Pass]:
    from alexnetc.compiler.passes import counts, fields, fusion, shapes, towers, verify

    return [
        Pass("verify", verify.run, Key.OP, Key.ARGS),
        Pass("shapes", shapes.run, Key.ARGS, Key.SHAPE),
        Pass("fields", fields.run, Key.SHAPE, Key.FIELD),
        Pass("counts", counts.run, Key.SHAPE, Key.COUNTS),
        Pass("towers", towers.run, Key.COUNTS, Key.TOWER),
        Pass("fusion", fusion.run, Key.TOWER, Key.FUSION),
    ]


class InvariantError(AssertionError):
    """A pass left a node it should have annotated: a bug in alexnetc, not in the spec."""


def run_passes(ctx: Context) -> None:
    _run_graph_passes(ctx)
    if ctx.input is not None:  # the recipe's settings that depend on the input (`resize`)
        check_against_input(ctx.net.settings, ctx.input, ctx.diags)


def _run_graph_passes(ctx: Context) -> None:
    for p in _passes():
        p.run(ctx)
        if ctx.diags.errors:
            return  # later passes would only report consequences of these errors
        missing = [n for n in topo_ops(ctx.graph)
                   if ctx.graph.nodes[n].get(p.needs) is not None
                   and p.writes not in ctx.graph.nodes[n]]
        if missing:
            raise InvariantError(f"pass {p.name} did not annotate {', '.join(missing)}")
