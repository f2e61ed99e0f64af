"""Towers: how each layer's maps split over the paper's GPUs, and what crosses between them.

With `towers T` every op that splits its maps (conv, FC) holds C/T of its output maps on each
tower. Each op says what it reads (`OpDef.reads`): a conv whose `groups` is a multiple of T
its own tower's maps; other convs and FC layers every tower's maps, so each tower receives
the other towers' share of its input (an all-gather of (T−1)·N values for an input of N
values); the softmax collects the (T−1)/T of the logits that live on other towers onto the
first one. Other ops keep their input's split.

Merges (Concat, Add) stay within a tower: each tower joins or sums its own shares of the
inputs, so a Concat of split inputs holds, on tower t, input 1's share then input 2's share
(the whole activation is the towers' shares in tower order, as everywhere). An input that is
not split is scattered to the towers first (free for the replicated input image); when some
input's channels do not divide over the towers, the merge runs on the first tower alone.

From that, this pass decides once, per op, where each input is (`Layout`), how it is brought
to the towers (`Route`), whether the op runs on the first tower alone and where its output
lives; the report counts the bytes of that decision and the lowering carries it out, so the
bytes the lowered module moves are the ones the checker states. Bytes are fp32.
"""

from __future__ import annotations

from typing import Any

from alexnetc.compiler.errors import TOWERS
from alexnetc.compiler.graph import INPUT, Key, notes, topo_ops
from alexnetc.compiler.passes import Context
from alexnetc.compiler.records import FP32_BYTES, Counts, Layout, Route, Shape, TowerInfo
from alexnetc.compiler.registry import OpDef, Reads


def run(ctx: Context) -> None:
    g, t = ctx.graph, ctx.towers
    for n in topo_ops(g):
        node = g.nodes[n]
        if Key.COUNTS not in node:
            continue
        with ctx.diags.within(notes(node)):
            _place(ctx, node, t)


def _place(ctx: Context, node: dict[str, Any], t: int) -> None:
    g = ctx.graph
    op: OpDef[object] = node[Key.OP]
    out: Shape = node[Key.SHAPE]
    counts: Counts = node[Key.COUNTS]
    if t > 1 and op.splits_maps and out.c % t:
        call = node[Key.CALL]
        ctx.diags.error(
            TOWERS, call.channels_loc or call.loc,
            f"{node[Key.STAGE]} has {out.c} output maps, which {t} towers cannot split "
            "evenly", f"use a multiple of {t}, e.g. {out.c + t - out.c % t}, or fewer towers")
        return
    if any(i != INPUT and Key.TOWER not in g.nodes[i] for i in node[Key.INPUTS]):
        return  # an input could not be placed: reported there
    # the input image is given to every tower
    layouts = tuple(Layout.REPLICATED if i == INPUT else g.nodes[i][Key.TOWER].layout
                    for i in node[Key.INPUTS])
    shapes: tuple[Shape, ...] = node[Key.IN_SHAPES]
    reads: Reads = op.reads(node[Key.ARGS], t) if t > 1 else "tower"
    if op.merge is not None:
        route, single, layout_out = _merge_route(layouts, shapes, t)
    else:
        route, single, layout_out = _route(reads, op.splits_maps, layouts[0], shapes[0], t)
    info = TowerInfo(
        towers=t,
        channels_per_tower=out.c // t if out.c % t == 0 else out.c,
        reads=reads,
        cross_bytes=sum(_cross_bytes(route, lay, s, t) for lay, s in zip(layouts, shapes,
                                                                          strict=True)),
        params_per_tower=counts.params // t,
        activation_bytes_per_tower=counts.activation_bytes // t,
        layout_in=layouts[0],
        route=route,
        single=single,
        layout=layout_out,
        layouts_in=layouts,
    )
    node[Key.TOWER] = info
    for w in op.warnings(node[Key.ARGS], shapes[0], out, info.shares):
        ctx.diags.warning(w.kind, node[Key.CALL].loc, w.message, w.hint)


def _merge_route(layouts: tuple[Layout, ...], shapes: tuple[Shape, ...],
                 towers: int) -> tuple[Route, bool, Layout]:
    """A merge joins each tower's shares where every input splits over the towers (split
    already, replicated or single and divisible), else runs on tower 0 alone."""
    if towers == 1:
        return Route.NONE, False, Layout.SPLIT
    if all(lay is Layout.REPLICATED for lay in layouts):
        return Route.NONE, False, Layout.REPLICATED
    if all(lay is Layout.SPLIT or s.c % towers == 0 for lay, s in zip(layouts, shapes,
                                                                       strict=True)):
        route = Route.NONE if all(lay is Layout.SPLIT for lay in layouts) else Route.SCATTER
        return route, False, Layout.SPLIT
    return Route.GATHER, True, Layout.SINGLE


def _route(reads: Reads, splits_maps: bool, layout: Layout, inp: Shape,
           towers: int) -> tuple[Route, bool, Layout]:
    """(route, runs on tower 0 only, output layout) of an op whose input is in `layout`.

    Ops reading "all" all-gather, "gather" collects on tower 0, ops that split their maps
    (own-tower convs) read their channel share, other ops keep their input's split. Ahead of
    the first split (the input image is on every tower), ops run on each tower's own channel
    share when the channels divide, else on tower 0 alone.
    """
    if towers == 1:
        return Route.NONE, False, Layout.SPLIT
    if reads == "all":
        return Route.ALL_GATHER, False, Layout.SPLIT if splits_maps else Layout.REPLICATED
    if reads == "gather":
        return Route.GATHER, True, Layout.SINGLE
    if splits_maps or (layout is Layout.REPLICATED and inp.c % towers == 0):
        return Route.SCATTER, False, Layout.SPLIT
    if layout is Layout.SPLIT:
        return Route.NONE, False, Layout.SPLIT
    return Route.GATHER, True, Layout.SINGLE


def _cross_bytes(route: Route, layout: Layout, inp: Shape, towers: int) -> int:
    """What `route` moves between towers per image, from an input in `layout`."""
    values = inp.elements
    if towers == 1 or layout is Layout.REPLICATED:
        return 0  # every tower already holds all of it
    if route is Route.ALL_GATHER:  # each tower receives what it lacks: (T − 1)·N in all
        return (towers - 1) * values * FP32_BYTES
    if route is Route.GATHER and layout is Layout.SPLIT:  # tower 0 receives the others' shares
        return (towers - 1) * values // towers * FP32_BYTES
    if route is Route.SCATTER and layout is Layout.SINGLE:  # tower 0 sends the others theirs
        return (towers - 1) * values // towers * FP32_BYTES
    return 0
