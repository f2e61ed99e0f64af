"""Counts: weights, biases, neurons, multiply-adds and activation bytes per layer, per image.

Neurons are counted as the paper counts them: the outputs of the convolutions and FC
layers (659,272 in AlexNet); multiply-adds count weight multiplications only (724,406,816).
"""

from __future__ import annotations

from alexnetc.compiler.graph import Key, topo_ops
from alexnetc.compiler.passes import Context


def run(ctx: Context) -> None:
    g = ctx.graph
    for n in topo_ops(g):
        node = g.nodes[n]
        if Key.SHAPE in node:
            node[Key.COUNTS] = node[Key.OP].count(node[Key.IN_SHAPE], node[Key.SHAPE],
                                                  node[Key.ARGS])
