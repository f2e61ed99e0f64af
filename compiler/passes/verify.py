"""Verify: headers, names, the graph's structure, and every op's arguments against the registry."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, TypeVar

from alexnetc.compiler import ast
from alexnetc.compiler.errors import (
    ARGUMENT,
    DUPLICATE,
    INPUT,
    LIMIT,
    STRUCTURE,
    UNKNOWN_OP,
    Diagnostic,
    Diagnostics,
)
from alexnetc.compiler.graph import (
    Key,
    notes,
    reserved_name_error,
    reserved_stage_name,
    topo_ops,
)
from alexnetc.compiler.passes import Context
from alexnetc.compiler.records import (
    FLOAT32_MAX,
    FLOAT32_TEXT,
    INT32_MAX,
    LIMIT_TEXT,
    Shape,
    show_bound,
    show_int,
    show_value,
)
from alexnetc.compiler.registry import (
    REQUIRED,
    OpDef,
    Pair,
    Param,
    Value,
    known_names,
    suggest,
)

A = TypeVar("A")


def run(ctx: Context) -> None:
    _headers(ctx)
    _stage_names(ctx.net, ctx.net.stages, None, ctx.diags)
    for block in ctx.net.blocks:
        _stage_names(ctx.net, block.stages, block, ctx.diags)
    for n in topo_ops(ctx.graph):
        node = ctx.graph.nodes[n]
        with ctx.diags.within(notes(node)):
            _verify_node(ctx, node)


def _verify_node(ctx: Context, node: dict[str, Any]) -> None:
    call: ast.OpCall = node[Key.CALL]
    op: OpDef[object] | None = node[Key.OP]
    if op is None:
        blocks = [b.name for b in ctx.net.blocks]
        guess = suggest(call.name, blocks)
        hint = f"did you mean {guess}?" if guess else "known ops: " + ", ".join(known_names())
        ctx.diags.error(UNKNOWN_OP, call.name_loc, f"unknown op '{call.name}'", hint)
        return
    _joined(op, call, ctx.diags)
    if not _merges(op, node, ctx.diags):
        return
    args = bind(op, call, ctx.diags)
    if args is not None:
        node[Key.ARGS] = args


def _merges(op: OpDef[object], node: dict[str, Any], diags: Diagnostics) -> bool:
    """Only a merge reads several stages, and a merge, its stage's first op, reads at least
    two."""
    call: ast.OpCall = node[Key.CALL]
    sources: tuple[str, ...] = node[Key.SOURCES]
    stage: str = node[Key.STAGE]
    written = stage.rsplit(".", 1)[-1]
    if op.merge is None and len(sources) > 1:
        listed = ", ".join(f"'{s}'" for s in sources)
        diags.error(STRUCTURE, call.name_loc, f"stage '{written}' reads {len(sources)} stages "
                    f"({listed}), and its first op, {op.name}, reads one",
                    "begin the stage with a merge: Concat (their channels side by side) or Add "
                    f"(their sum), e.g. `{written}({', '.join(sources)}): Concat; "
                    f"{call.text()}`")
        return False
    if op.merge is not None and len(sources) < 2:
        if any(i.rsplit(".", 1)[0] == stage for i in node[Key.INPUTS]):  # a later op
            diags.error(STRUCTURE, call.name_loc, f"{op.name} merges stages, so it is the "
                        f"first op of its stage; here it follows another op of '{written}'",
                        f"start a new stage with it, e.g. `m({written}, other): {op.name}`")
        else:
            what = f"only '{sources[0]}'" if sources else "nothing"
            diags.error(STRUCTURE, call.name_loc, f"{op.name} merges two or more stages, and "
                        f"here it reads {what}", "name every stage it merges in its stage's "
                        f"parentheses, e.g. `{written}({', '.join((*sources, 'other'))}): "
                        f"{op.name}`")
        return False
    return True


def _joined(op: OpDef[A], call: ast.OpCall, diags: Diagnostics) -> None:
    """`+` ties only an activation (or a softmax: `OpDef.tie`) to the op before it."""
    if call.joined and not op.tie:
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


def _stage_names(net: ast.Network, stages: tuple[ast.Stage, ...], block: ast.Block | None,
                 diags: Diagnostics) -> None:
    """Each name once in its scope (the top level, or a block), and free for a module."""
    first: dict[str, ast.Stage] = {}
    names = {s.name for s in stages}
    where = f" in block '{block.name}'" if block else ""
    for s in stages:
        if s.name in first:
            diags.error(DUPLICATE, s.name_loc, f"stage '{s.name}' is defined twice{where}",
                        f"first defined on line {first[s.name].loc.line}; rename one "
                        "(stage names become module names)")
            continue
        first[s.name] = s
        why = reserved_stage_name(s.name)
        if why is not None:
            diags.items.append(reserved_name_error(net, s.name, f"stage name '{s.name}' is "
                                                   f"reserved: {why}", names, s.name_loc))


def bind(op: OpDef[A], call: ast.OpCall, diags: Diagnostics) -> A | None:
    """Match a call's arguments to the op's parameters, reporting every mistake; the op's
    argument record when there is none."""
    given, problems = _given(op, call)
    values, more = _values(op, call, given)
    problems += more + _channels(op, call)
    for d in problems:
        diags.items.append(d)
    return op.bind(values) if not problems else None


def _given(op: OpDef[A], call: ast.OpCall) -> tuple[dict[str, ast.Arg], list[Diagnostic]]:
    """Each argument written in the call under its parameter's name: positional ones in
    order, then keywords (unknown names, too many positionals and repeats reported)."""
    given: dict[str, ast.Arg] = {}
    problems: list[Diagnostic] = []
    positional = op.positional
    written = [a for a in call.args if a.name is None]
    for i, arg in enumerate(written):
        if i >= len(positional):
            problems.append(Diagnostic(
                ARGUMENT, arg.loc, f"{op.name} takes {len(positional) or 'no'} positional "
                f"argument{'s' if len(positional) != 1 else ''}, got {len(written)}",
                f"write it as {op.signature()}"))
        else:
            given[positional[i].name] = arg
    for arg in call.args:
        if arg.name is None:
            continue
        if op.param(arg.name) is None:
            names = ", ".join(p.name for p in op.params) or "none"
            problems.append(Diagnostic(ARGUMENT, arg.loc, f"{op.name} has no argument "
                                       f"'{arg.name}'", f"its arguments are: {names}"))
        elif arg.name in given:
            problems.append(Diagnostic(DUPLICATE, arg.loc, f"argument '{arg.name}' is given "
                                       "twice", "give each argument once"))
        else:
            given[arg.name] = arg
    return given, problems


def _values(op: OpDef[A], call: ast.OpCall,
            given: dict[str, ast.Arg]) -> tuple[dict[str, Value], list[Diagnostic]]:
    """The checked value of every argument given; the required ones missing reported (the
    record fills in the defaults)."""
    values: dict[str, Value] = {}
    problems: list[Diagnostic] = []
    for param in op.params:
        arg = given.get(param.name)
        if arg is None:
            if param.default is REQUIRED:
                problems.append(Diagnostic(ARGUMENT, call.loc, f"{op.name} needs its "
                                           f"'{param.name}' argument",
                                           f"write it as {op.signature()}"))
            continue
        value = _coerce(param, arg, op)
        if isinstance(value, Diagnostic):
            problems.append(value)
        else:
            values[param.name] = value
    return values, problems


def _channels(op: OpDef[A], call: ast.OpCall) -> list[Diagnostic]:
    """The `xC` after the call: required by ops that take it, within limits; refused by the
    others."""
    if isinstance(call.channels, str):
        return []  # a block parameter's name left unresolved: expanding reported it
    if not op.takes_channels:
        if call.channels is None:
            return []
        assert call.channels_loc is not None
        return [Diagnostic(ARGUMENT, call.channels_loc, f"{op.name} does not take a channel "
                           f"count", f"remove x{call.channels}: {op.stray_channels_hint()}")]
    if call.channels is None:
        return [Diagnostic(ARGUMENT, call.loc, f"{op.name} needs its number of output channels",
                           f"add it after the arguments: `{call.text()} x96`")]
    assert call.channels_loc is not None
    if call.channels < 1:
        return [Diagnostic(ARGUMENT, call.channels_loc, "a layer needs at least one channel",
                           "e.g. x96")]
    if call.channels > INT32_MAX:
        return [Diagnostic(LIMIT, call.channels_loc, f"{show_int(call.channels)} output "
                           f"channels are more than the limit of {LIMIT_TEXT}",
                           "PyTorch takes channel counts as 32-bit integers; use fewer, e.g. "
                           "x96 (AlexNet's widest conv has x384)")]
    return []


def _coerce(param: Param, arg: ast.Arg, op: OpDef[A]) -> Value | Diagnostic:
    """The argument's value as the parameter takes it, or why it cannot be."""
    v = arg.value
    where = f"{op.name}'s '{param.name}'"
    if param.kind is Pair and not (isinstance(v, str) and v in param.words):
        return _pair(param, arg, op)
    if isinstance(v, tuple):
        shown = "x".join(map(str, v))
        return Diagnostic(ARGUMENT, arg.loc, f"{where} is one number, not a size like {shown}",
                          f"sizes HxW are for a window's size, stride, padding and dilation; "
                          f"e.g. {param.name}={_one_number(param)}")
    if isinstance(param.kind, tuple):
        if isinstance(v, str) and v in param.kind:
            return v
        return Diagnostic(ARGUMENT, arg.loc, f"{where} must be one of {', '.join(param.kind)}, "
                          f"got {v}", f"e.g. {param.name}={param.kind[-1]}")
    if isinstance(v, str) and v in param.words:
        return v
    example = param.default if param.default not in (REQUIRED, None) else 1
    if param.kind is int:
        if not isinstance(v, int):
            whole = int(v) if isinstance(v, float) and math.isfinite(v) and v >= 1 else 1
            return Diagnostic(ARGUMENT, arg.loc, f"{where} must be a whole number, got {v}",
                              f"e.g. {param.name}={whole}")
    elif not isinstance(v, int | float):
        words = "".join(f" or {w}" for w in param.words)
        return Diagnostic(ARGUMENT, arg.loc, f"{where} must be a number{words}, got '{v}'",
                          f"e.g. {param.name}={example}"
                          + "".join(f" or {param.name}={w}" for w in param.words))
    else:
        shown = show_int(v) if isinstance(v, int) else str(v)
        try:
            v = float(v)
        except OverflowError:  # an integer literal too large for a float
            v = math.inf if v > 0 else -math.inf
        if not math.isfinite(v):
            return Diagnostic(ARGUMENT, arg.loc, f"{where} must be a finite number, got {shown}",
                              f"numbers beyond ±1.8e308 are infinite as floats; e.g. "
                              f"{param.name}={example}")
        if abs(v) > FLOAT32_MAX:
            return Diagnostic(LIMIT, arg.loc, f"{where} must be within {FLOAT32_TEXT}, got "
                              f"{shown}", f"the weights are 32-bit floats; e.g. "
                              f"{param.name}={example}")
    if param.minimum is not None and v < param.minimum:
        return Diagnostic(ARGUMENT, arg.loc, f"{where} must be at least "
                          f"{show_bound(param.minimum)}, got {show_value(v)}",
                          f"use {param.name} ≥ {show_bound(param.minimum)}")
    if param.maximum is not None and v > param.maximum:
        return Diagnostic(ARGUMENT, arg.loc, f"{where} must be at most "
                          f"{show_bound(param.maximum)}, got {show_value(v)}",
                          f"use {param.name} ≤ {show_bound(param.maximum)}")
    if param.kind is int and v > INT32_MAX:
        return Diagnostic(LIMIT, arg.loc, f"{where} is {show_int(int(v))}, more than the limit "
                          f"of {LIMIT_TEXT}", f"PyTorch takes {param.name} as a 32-bit integer; "
                          f"use {param.name} ≤ {INT32_MAX}")
    return v


def _one_number(param: Param) -> str:
    if isinstance(param.kind, tuple):
        return param.kind[-1]
    return str(param.default if param.default not in (REQUIRED, None) else 1)


def _pair(param: Param, arg: ast.Arg, op: OpDef[A]) -> Pair | Diagnostic:
    """One whole number for both axes, or HxW (down, across) as the input line writes sizes;
    each number is checked as a whole-number argument, with the same messages."""
    v = arg.value
    parts = v if isinstance(v, tuple) else (v,)
    if len(parts) > 2:
        shown = "x".join(map(str, parts))
        return Diagnostic(ARGUMENT, arg.loc, f"{op.name}'s '{param.name}' is one number or "
                          f"HxW (down and across), got {len(parts)} numbers: {shown}",
                          f"e.g. {param.name}={parts[0]}x{parts[1]}")
    whole = dataclasses.replace(param, kind=int)
    checked = []
    for part in parts:
        c = _coerce(whole, dataclasses.replace(arg, value=part), op)
        if isinstance(c, Diagnostic):
            return c
        # a whole-number parameter gives an int (a word never reaches _pair: _coerce keeps it)
        assert isinstance(c, int), c
        checked.append(c)
    h, w = checked if len(checked) == 2 else checked * 2
    return Pair(h, w, "x".join(map(str, parts)))
