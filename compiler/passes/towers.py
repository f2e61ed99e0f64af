"""Towers: how each layer's maps split over the paper's GPUs, and what crosses between them.

With `towers T` every conv and FC layer holds C/T of its output maps on each tower. A conv
whose `groups` is a multiple of T reads only its own tower's maps; other convs and FC layers
read every tower's maps, so each tower receives the other towers' share of its input
(an all-gather of (T−1)·N values for an input of N values). The final softmax collects
the (T−1)/T of the logits that live on other towers onto the first one. Bytes are fp32.
"""

from __future__ import annotations

from alexnetc.compiler.errors import TOWERS
from alexnetc.compiler.graph import INPUT, Key, topo_ops
from alexnetc.compiler.passes import Context
from alexnetc.compiler.records import FP32_BYTES, Counts, Shape, TowerInfo


def run(ctx: Context) -> None:
    g, t = ctx.graph, ctx.towers
    for n in topo_ops(g):
        node = g.nodes[n]
        if Key.COUNTS not in node:
            continue
        op, out, inp = node[Key.OP], node[Key.SHAPE], node[Key.IN_SHAPE]
        counts: Counts = node[Key.COUNTS]
        if t > 1 and op.category in ("conv", "fc") and out.c % t:
            call = node[Key.CALL]
            ctx.diags.error(
                TOWERS, call.channels_loc or call.loc,
                f"{node[Key.STAGE]} has {out.c} output maps, which {t} towers cannot split "
                "evenly", f"use a multiple of {t}, e.g. {out.c + t - out.c % t}, or fewer towers")
            continue
        reads = _reads(op.category, node[Key.ARGS], t)
        from_input = next(iter(g.predecessors(n))) == INPUT
        node[Key.TOWER] = TowerInfo(
            towers=t,
            channels_per_tower=out.c // t if out.c % t == 0 else out.c,
            reads=reads,
            cross_bytes=0 if from_input else _cross_bytes(reads, inp, t),
            params_per_tower=counts.params // t,
            activation_bytes_per_tower=counts.activation_bytes // t,
        )
        if op.category == "norm" and out.c % t == 0 \
                and int(node[Key.ARGS]["size"]) > out.c // t:
            where = f"a tower's {out.c // t}" if t > 1 else f"the {out.c}"
            ctx.diags.warning(TOWERS, node[Key.CALL].loc,
                              f"the ResNorm window of {node[Key.ARGS]['size']} channels is "
                              f"wider than {where} maps",
                              "the window is clipped at the " + ("tower's edge" if t > 1 else
                                                                 "first and last map"))


def _reads(category: str, args: dict[str, object], towers: int) -> str:
    if towers == 1:
        return "tower"
    if category == "conv":
        return "tower" if int(args["groups"]) % towers == 0 else "all"  # type: ignore[call-overload]
    if category == "fc":
        return "all"
    if category == "softmax":
        return "gather"
    return "tower"


def _cross_bytes(reads: str, inp: Shape, towers: int) -> int:
    if reads == "all":
        return (towers - 1) * inp.elements * FP32_BYTES
    if reads == "gather":
        return (towers - 1) * inp.elements // towers * FP32_BYTES
    return 0
