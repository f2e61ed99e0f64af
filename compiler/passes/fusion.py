"""Fusion: mark the op chains that one Triton kernel runs (ReLU→LRN→MaxPool and its prefixes).

The lowering runs each marked chain as one fused op on a GPU and as the reference ops
elsewhere; the chains never cross a stage boundary, so stage outputs stay observable, and
every intermediate of a chain has the next member as its only reader: a value another op
also reads must exist in memory, which the fused kernel never writes.
"""

from __future__ import annotations

import itertools

import networkx as nx

from alexnetc.compiler.graph import Key, topo_ops
from alexnetc.compiler.passes import Context
from alexnetc.compiler.records import Fusion

# Longest first: a chain is matched greedily from each ReLU.
CHAINS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("relu", "lrn", "maxpool"), "relu_lrn_pool"),
    (("relu", "maxpool"), "relu_pool"),
    (("relu", "lrn"), "relu_lrn"),
)
POOL = "maxpool"  # a chain that pools keeps a one-byte argmax per output for its backward


def run(ctx: Context) -> None:
    g = ctx.graph
    order = topo_ops(g)
    for n in order:
        g.nodes[n].setdefault(Key.FUSION, None)
    i = 0
    while i < len(order):
        matched = _match(ctx, order, i)
        if matched is None:
            i += 1
            continue
        members, kernel, roles = matched
        fusion = Fusion(kernel, members[0], tuple(members), POOL in roles)
        for m in members:
            g.nodes[m][Key.FUSION] = fusion
        i += len(members)


def _match(ctx: Context, order: list[str],
           i: int) -> tuple[list[str], str, tuple[str, ...]] | None:
    """The longest chain starting at order[i], on maps (the kernel reads NCHW), each member
    within the kernel's limits (`fuses`)."""
    g = ctx.graph
    for roles, kernel in CHAINS:
        window = order[i:i + len(roles)]
        if len(window) < len(roles):
            continue
        stage = g.nodes[window[0]][Key.STAGE]
        if g.nodes[window[0]][Key.IN_SHAPES][0].flat:
            return None
        if all(g.nodes[n][Key.OP].fusion_role == r and g.nodes[n][Key.STAGE] == stage
               and g.nodes[n][Key.OP].fuses(g.nodes[n][Key.ARGS])
               for n, r in zip(window, roles, strict=True)) and _only_reader(g, window):
            return window, kernel, roles
    return None


def _only_reader(g: nx.DiGraph, chain: list[str]) -> bool:
    """Each member reads the one before it, which nothing else reads."""
    return all(g.nodes[b][Key.INPUTS] == (a,) and list(g.successors(a)) == [b]
               for a, b in itertools.pairwise(chain))
