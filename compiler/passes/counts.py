"""Counts: weights, biases, neurons, multiply-adds and activation bytes per layer, per image.

Neurons are counted as the paper counts them: the outputs of the convolutions and FC
layers (659,272 in AlexNet); multiply-adds count weight multiplications only (724,406,816).
A training step's multiply-adds add the backward pass's: the weights' gradient costs the
forward's again, and the input's gradient once more, which autograd computes only when
something learnt lies before the layer (never for a first layer, whose input is the image).
"""

from __future__ import annotations

import dataclasses

from alexnetc.compiler.graph import INPUT, Key, topo_ops
from alexnetc.compiler.passes import Context


def run(ctx: Context) -> None:
    g = ctx.graph
    learnt: dict[str, bool] = {INPUT: False}  # whether a node's output depends on parameters
    for n in topo_ops(g):
        node = g.nodes[n]
        if Key.SHAPE in node:
            counts = node[Key.OP].count(node[Key.IN_SHAPE], node[Key.SHAPE], node[Key.ARGS])
            upstream = any(learnt.get(i, False) for i in node[Key.INPUTS])
            learnt[n] = upstream or counts.params > 0
            node[Key.COUNTS] = dataclasses.replace(
                counts, train_macs=counts.macs * (3 if upstream else 2))
