"""Shapes: exact integer shape propagation, and each stage's `-> HxWxC` expectation."""

from __future__ import annotations

from alexnetc.compiler import ast
from alexnetc.compiler.errors import EXPECTATION, LIMIT, SHAPE
from alexnetc.compiler.graph import INPUT, Key, notes, topo_ops
from alexnetc.compiler.passes import Context
from alexnetc.compiler.records import INT32_MAX, LIMIT_TEXT, Shape, show_int
from alexnetc.compiler.registry import OpDef, ShapeProblem


def run(ctx: Context) -> None:
    if ctx.input is None:
        return
    g = ctx.graph
    trace: dict[str, list[tuple[ast.OpCall, Shape]]] = {}
    last_of_stage: dict[str, str] = {}
    for n in topo_ops(g):
        node = g.nodes[n]
        if Key.ARGS not in node:
            return  # verify already reported why; later shapes would be guesses
        shapes = tuple(ctx.input if i == INPUT else g.nodes[i][Key.SHAPE]
                       for i in node[Key.INPUTS])
        with ctx.diags.within(notes(node)):
            out = _infer(ctx, n, shapes)
        if out is None:
            return
        node[Key.IN_SHAPE], node[Key.IN_SHAPES], node[Key.SHAPE] = shapes[0], shapes, out
        trace.setdefault(node[Key.STAGE], []).append((node[Key.CALL], out))
        last_of_stage[node[Key.STAGE]] = n
    for stage in g.graph["stages"]:
        if stage.expect is None or stage.name not in last_of_stage:
            continue
        got: Shape = g.nodes[last_of_stage[stage.name]][Key.SHAPE]
        want = stage.expect.dims
        if want != got.dims():
            steps = ", ".join(f"{c.text()} → {s}" for c, s in trace[stage.name])
            with ctx.diags.within(stage.notes):
                ctx.diags.error(
                    EXPECTATION, stage.expect.loc,
                    f"{stage.expect_name} produces {got}, not {'x'.join(map(str, want))}",
                    f"the stage computes {steps}; write `-> {got}`" + _known_slip(want, got),
                )


def _infer(ctx: Context, n: str, shapes: tuple[Shape, ...]) -> Shape | None:
    """The node's output shape, or None after reporting why there is none."""
    node = ctx.graph.nodes[n]
    call: ast.OpCall = node[Key.CALL]
    op: OpDef = node[Key.OP]
    channels = call.channels if isinstance(call.channels, int) else None
    try:
        if op.merge is not None:
            out = op.merge(tuple(zip(node[Key.SOURCES], shapes, strict=True)), node[Key.ARGS])
        else:
            out = op.infer(shapes[0], node[Key.ARGS], channels)
    except ShapeProblem as p:
        loc = next((a.loc for a in call.args if p.arg and _names(op, a, p.arg)), call.loc)
        hint = p.hint
        if p.fit is not None and node[Key.INPUTS] == (INPUT,):
            hint += f" (for the whole network: `input {_fitted(shapes[0], p.fit, p.message)}`)"
        ctx.diags.error(SHAPE, loc, f"{node[Key.STAGE]}: {p.message}", hint)
        return None
    if out.elements > INT32_MAX:
        ctx.diags.error(
            LIMIT, call.loc, f"{node[Key.STAGE]}: {call.text()} gives {out} = "
            f"{show_int(out.elements)} values per image, more than the limit of {LIMIT_TEXT}",
            "many PyTorch kernels index a tensor with a 32-bit integer; use fewer channels, "
            "a larger stride or a smaller input")
        return None
    return out


def _fitted(shape: Shape, fit: int, message: str) -> str:
    """The input line with the offending side changed to the size that tiles."""
    h, w = (fit, shape.w) if "height" in message else (shape.h, fit)
    if h == shape.w or w == shape.h:  # square inputs stay square
        h = w = fit
    return f"{h}x{w}x{shape.c}"


def _names(op: OpDef, arg: ast.Arg, param: str) -> bool:
    """Whether `arg` is the one bound to `param` (by name, or by position)."""
    if arg.name is not None:
        return arg.name == param
    return False if not op.positional else param in {p.name for p in op.positional}


def _known_slip(want: tuple[int, ...], got: Shape) -> str:
    """Name the lecture slides' well-known off-by-one sizes when a spec copies them."""
    off_by_one = (got.h + 1, 2 * got.h + 2)
    if len(want) == 3 and not got.flat and want[2] == got.c and want[0] in off_by_one:
        return (" (the lecture slides' 56/28/14/7 sizes are off: 227 pixels give "
                "55 → 27 → 13 → 6 in AlexNet)")
    return ""
