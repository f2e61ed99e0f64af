"""Verify: headers, names, the graph's structure, and every op's arguments against the registry."""

from __future__ import annotations

import math
from typing import cast

import networkx as nx

from alexnetc.compiler import ast
from alexnetc.compiler.errors import (
    ARGUMENT,
    DUPLICATE,
    INPUT,
    LIMIT,
    RESERVED,
    STRUCTURE,
    UNKNOWN_OP,
    Diagnostic,
    Diagnostics,
)
from alexnetc.compiler.graph import Key, free_stage_name, reserved_stage_name, topo_ops
from alexnetc.compiler.passes import Context
from alexnetc.compiler.records import (
    INT32_MAX,
    LIMIT_TEXT,
    Shape,
    show_bound,
    show_int,
    show_value,
)
from alexnetc.compiler.registry import REQUIRED, OpDef, Param, Value, known_names, suggest


def run(ctx: Context) -> None:
    _headers(ctx)
    _stage_names(ctx.net, ctx.diags)
    if not nx.is_directed_acyclic_graph(ctx.graph):  # a chain is acyclic; guard the builder
        ctx.diags.error(STRUCTURE, ctx.net.loc, "the network's graph has a cycle")
        return
    for n in topo_ops(ctx.graph):
        node = ctx.graph.nodes[n]
        call: ast.OpCall = node[Key.CALL]
        op: OpDef | None = node[Key.OP]
        if op is None:
            guess = suggest(call.name)
            hint = f"did you mean {guess}?" if guess else "known ops: " + ", ".join(known_names())
            ctx.diags.error(UNKNOWN_OP, call.name_loc, f"unknown op '{call.name}'", hint)
            continue
        _joined(op, call, ctx.diags)
        args = bind(op, call, ctx.diags)
        if args is not None:
            node[Key.ARGS] = args


def _joined(op: OpDef, call: ast.OpCall, diags: Diagnostics) -> None:
    """`+` ties only an activation (or a softmax) to the op before it."""
    if call.joined and op.category not in ("activation", "softmax"):
        diags.error(STRUCTURE, call.name_loc, f"`+` ties an activation to the op before it, "
                    f"and {op.name} is not one", f"run it as the next op with `;`: "
                    f"`; {call.text()}`")


def _headers(ctx: Context) -> None:
    net, diags = ctx.net, ctx.diags
    seen: dict[str, ast.Header] = {}
    for h in net.headers:
        if h.key in seen:
            diags.error(DUPLICATE, h.loc, f"'{h.key}' is given twice",
                        f"first given on line {seen[h.key].loc.line}; keep one")
        else:
            seen[h.key] = h
    inp = seen.get("input")
    if inp is None:
        if net.stages:
            diags.error(INPUT, net.stages[0].loc, "the spec has no 'input' line",
                        "add the input size before the first stage, e.g. `input 227x227x3`")
    else:
        dims = inp.value
        assert isinstance(dims, tuple)
        if len(dims) != 3:
            diags.error(INPUT, inp.value_loc, f"input must be HxWxC, got {len(dims)} "
                        f"number{'s' if len(dims) > 1 else ''}",
                        "e.g. `input 227x227x3` for RGB images")
        elif min(dims) < 1:
            diags.error(INPUT, inp.value_loc, "input sizes must be positive",
                        "e.g. `input 227x227x3`")
        elif _input_within_limits(inp, dims, diags):
            ctx.input = Shape(*dims)
    tow = seen.get("towers")
    if tow is not None:
        if not isinstance(tow.value, int) or isinstance(tow.value, bool) or tow.value < 1:
            diags.error(ARGUMENT, tow.value_loc, f"towers must be a positive whole number, "
                        f"got {tow.value}", "use `towers 1` (one device) or `towers 2` (paper)")
        elif tow.value > INT32_MAX:
            diags.error(LIMIT, tow.value_loc, f"towers {show_int(tow.value)} is more than the "
                        f"limit of {LIMIT_TEXT}", "use `towers 1` (one device) or `towers 2` "
                        "(paper), at most one tower per device")
        else:
            ctx.towers = tow.value
    if not net.stages:
        diags.error(STRUCTURE, net.loc, "the spec has no stages",
                    "add at least one, e.g. `conv1: Conv(11,4) x96 + ReLU`")


def _input_within_limits(inp: ast.Header, dims: tuple[int, ...], diags: Diagnostics) -> bool:
    """Each side within PyTorch's 32-bit sizes, and the image within its 32-bit indexing."""
    for what, n in zip(("height", "width", "channel count"), dims, strict=True):
        if n > INT32_MAX:
            diags.error(LIMIT, inp.value_loc, f"the input's {what} {show_int(n)} is more than "
                        f"the limit of {LIMIT_TEXT}",
                        "PyTorch takes image sizes as 32-bit integers; use a smaller input, "
                        "e.g. `input 227x227x3`")
            return False
    elements = math.prod(dims)
    if elements > INT32_MAX:
        shown = "x".join(map(str, dims))
        diags.error(LIMIT, inp.value_loc, f"an input of {shown} holds {show_int(elements)} "
                    f"values per image, more than the limit of {LIMIT_TEXT}",
                    "many PyTorch kernels index a tensor with a 32-bit integer; use a smaller "
                    "input, e.g. `input 227x227x3`")
        return False
    return True


def _stage_names(net: ast.Network, diags: Diagnostics) -> None:
    first: dict[str, ast.Stage] = {}
    names = {s.name for s in net.stages}
    for s in net.stages:
        if s.name in first:
            diags.error(DUPLICATE, s.name_loc, f"stage '{s.name}' is defined twice",
                        f"first defined on line {first[s.name].loc.line}; rename one "
                        "(stage names become module names)")
            continue
        first[s.name] = s
        why = reserved_stage_name(s.name)
        if why is not None:
            diags.items.append(reserved_name_error(net, s.name, f"stage name '{s.name}' is "
                                                   f"reserved: {why}", names))


def reserved_name_error(net: ast.Network, name: str, message: str,
                        taken: set[str] | None = None) -> Diagnostic:
    """A located error for a stage name the lowered module cannot take (with a free name).

    The lowering raises it too (in a `SpecError`) should a name ever slip past this pass.
    """
    stage = next((s for s in net.stages if s.name == name), None)
    taken = {s.name for s in net.stages} if taken is None else taken
    return Diagnostic(RESERVED, stage.name_loc if stage else net.loc, message,
                      f"rename the stage, e.g. `{free_stage_name(name, taken)}:` (each stage "
                      "becomes an attribute of the PyTorch module, as `model.conv1`)")


def bind(op: OpDef, call: ast.OpCall, diags: Diagnostics) -> dict[str, Value] | None:
    """Match a call's arguments to the op's parameters, collecting every mistake."""
    ok = True
    values: dict[str, Value] = {}
    given: dict[str, ast.Arg] = {}
    positional = op.positional
    n_pos = sum(1 for a in call.args if a.name is None)
    for i, arg in enumerate(a for a in call.args if a.name is None):
        if i >= len(positional):
            diags.error(ARGUMENT, arg.loc,
                        f"{op.name} takes {len(positional) or 'no'} positional argument"
                        f"{'s' if len(positional) != 1 else ''}, got {n_pos}",
                        f"write it as {op.signature()}")
            ok = False
            continue
        given[positional[i].name] = arg
    for arg in call.args:
        if arg.name is None:
            continue
        param = op.param(arg.name)
        if param is None:
            names = ", ".join(p.name for p in op.params) or "none"
            diags.error(ARGUMENT, arg.loc, f"{op.name} has no argument '{arg.name}'",
                        f"its arguments are: {names}")
            ok = False
        elif arg.name in given:
            diags.error(DUPLICATE, arg.loc, f"argument '{arg.name}' is given twice",
                        "give each argument once")
            ok = False
        else:
            given[arg.name] = arg
    for param in op.params:
        arg = given.get(param.name)
        if arg is None:
            if param.default is REQUIRED:
                diags.error(ARGUMENT, call.loc, f"{op.name} needs its '{param.name}' argument",
                            f"write it as {op.signature()}")
                ok = False
            elif param.default is not None:
                values[param.name] = cast(Value, param.default)
            continue
        value = _coerce(param, arg, op, diags)
        if value is None:
            ok = False
        else:
            values[param.name] = value
    if op.takes_channels:
        if call.channels is None:
            diags.error(ARGUMENT, call.loc, f"{op.name} needs its number of output channels",
                        f"add it after the arguments: `{call.text()} x96`")
            ok = False
        elif call.channels < 1:
            assert call.channels_loc is not None
            diags.error(ARGUMENT, call.channels_loc, "a layer needs at least one channel",
                        "e.g. x96")
            ok = False
        elif call.channels > INT32_MAX:
            assert call.channels_loc is not None
            diags.error(LIMIT, call.channels_loc, f"{show_int(call.channels)} output channels "
                        f"are more than the limit of {LIMIT_TEXT}",
                        "PyTorch takes channel counts as 32-bit integers; use fewer, e.g. x96 "
                        "(AlexNet's widest conv has x384)")
            ok = False
    elif call.channels is not None:
        assert call.channels_loc is not None
        what = (f"{op.name} keeps its input's channels" if op.category != "fc"
                else "FC gives its size as FC(out)")
        diags.error(ARGUMENT, call.channels_loc, f"{op.name} does not take a channel count",
                    f"remove x{call.channels}: {what}")
        ok = False
    return values if ok else None


def _coerce(param: Param, arg: ast.Arg, op: OpDef, diags: Diagnostics) -> Value | None:
    v = arg.value
    where = f"{op.name}'s '{param.name}'"
    if isinstance(param.kind, tuple):
        if isinstance(v, str) and v in param.kind:
            return v
        diags.error(ARGUMENT, arg.loc, f"{where} must be one of {', '.join(param.kind)}, "
                    f"got {v}", f"e.g. {param.name}={param.kind[-1]}")
        return None
    example = param.default if param.default not in (REQUIRED, None) else 1
    if param.kind is int:
        if not isinstance(v, int):
            whole = int(v) if isinstance(v, float) and math.isfinite(v) and v >= 1 else 1
            diags.error(ARGUMENT, arg.loc, f"{where} must be a whole number, got {v}",
                        f"e.g. {param.name}={whole}")
            return None
    elif not isinstance(v, int | float):
        diags.error(ARGUMENT, arg.loc, f"{where} must be a number, got '{v}'",
                    f"e.g. {param.name}={example}")
        return None
    else:
        shown = show_int(v) if isinstance(v, int) else str(v)
        try:
            v = float(v)
        except OverflowError:  # an integer literal too large for a float
            v = math.inf if v > 0 else -math.inf
        if not math.isfinite(v):
            diags.error(ARGUMENT, arg.loc, f"{where} must be a finite number, got {shown}",
                        f"numbers beyond ±1.8e308 are infinite as floats; e.g. "
                        f"{param.name}={example}")
            return None
    if param.minimum is not None and v < param.minimum:
        diags.error(ARGUMENT, arg.loc, f"{where} must be at least {show_bound(param.minimum)}, "
                    f"got {show_value(v)}", f"use {param.name} ≥ {show_bound(param.minimum)}")
        return None
    if param.maximum is not None and v > param.maximum:
        diags.error(ARGUMENT, arg.loc, f"{where} must be at most {show_bound(param.maximum)}, "
                    f"got {show_value(v)}", f"use {param.name} ≤ {show_bound(param.maximum)}")
        return None
    if param.kind is int and v > INT32_MAX:
        diags.error(LIMIT, arg.loc, f"{where} is {show_int(int(v))}, more than the limit of "
                    f"{LIMIT_TEXT}", f"PyTorch takes {param.name} as a 32-bit integer; use "
                    f"{param.name} ≤ {INT32_MAX}")
        return None
    return v


