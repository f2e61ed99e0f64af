"""Expanding blocks and references into flat stages: names, sources, parameter binding, and
the located errors and warnings of a graph that branches; and the fusion rule on such graphs."""

from __future__ import annotations

import pytest

from alexnetc.compiler import ast, expand
from alexnetc.compiler.errors import (
    BLOCK,
    CYCLE,
    DUPLICATE,
    LIMIT,
    REFERENCE,
    STRUCTURE,
    UNKNOWN_OP,
    UNUSED,
    Diagnostic,
    Diagnostics,
    Severity,
    source_lines,
)
from alexnetc.compiler.expand import INPUT, FlatStage
from alexnetc.compiler.graph import Key, build
from alexnetc.compiler.parse import parse
from alexnetc.compiler.passes import Context, run_passes
from alexnetc.compiler.pipeline import check
from alexnetc.compiler.records import Shape

HEAD = "network T\ninput 16x16x3\n"


def flat(body: str) -> tuple[list[FlatStage], Diagnostics]:
    diags = Diagnostics()
    stages = expand.expand(parse(HEAD + body, "t.net"), diags)
    return stages, diags


def ok(body: str) -> list[FlatStage]:
    stages, diags = flat(body)
    assert not diags.items, [d.render(HEAD + body) for d in diags.items]
    return stages


def by_name(stages: list[FlatStage]) -> dict[str, FlatStage]:
    return {s.name: s for s in stages}


def diagnostics(body: str) -> list[Diagnostic]:
    """Every diagnostic `check` reports for the spec (HEAD + body), in source order."""
    return check(HEAD + body, "t.net").diagnostics


def errors(body: str) -> list[Diagnostic]:
    return [d for d in diagnostics(body) if d.severity is Severity.ERROR]


def at(d: Diagnostic) -> tuple[int, int]:
    """Where `d` points, in the body's lines (1-based; HEAD has two lines)."""
    return d.loc.line - 2, d.loc.col


def arg_values(call: ast.OpCall) -> list[object]:
    return [a.value for a in call.args]


BASIC = """\
block basic(c, s=1) {
  a: Conv(3,s, pad=1) xc + ReLU
  b: Conv(3,1, pad=1) xc
  out(b, in): Add + ReLU
}
"""


# --- sources ------------------------------------------------------------------------------


def test_a_stage_reads_the_stage_above_by_default() -> None:
    stages = ok("a: Conv(1,1) x4\nb: ReLU\nc: FC(2)\n")
    assert [(s.name, s.sources) for s in stages] == [
        ("a", (INPUT,)), ("b", ("a",)), ("c", ("b",))]


def test_input_names_the_network_input_and_in_the_instance_input() -> None:
    stages = ok("a: Conv(1,1) x4\nb(input): Conv(1,1) x4\nm(a, b): Concat\n"
                "block side(c) {\n  x(in): Conv(1,1) xc\n  y(in): Conv(3,1, pad=1) xc\n"
                "  m(x, y): Add\n}\ns: side(8)\n")
    got = by_name(stages)
    assert got["b"].sources == (INPUT,)
    assert got["m"].sources == ("a", "b")
    assert got["s.x"].sources == got["s.y"].sources == ("m",)
    assert got["s.m"].sources == ("s.x", "s.y")


def test_in_outside_a_block_and_input_inside_one_are_located_errors() -> None:
    found = errors("a: Conv(1,1) x4\nb(in): ReLU\n"
                   "block k(c) {\n  x(input): Conv(1,1) xc\n}\ns: k(2)\n")
    assert [(d.kind, at(d)) for d in found] == [(REFERENCE, (2, 3)), (REFERENCE, (4, 5))]
    assert "write `b(input): …`" in found[0].hint
    assert "write `x(in): …`" in found[1].hint


# --- names --------------------------------------------------------------------------------


def test_repeated_instances_are_numbered_and_single_ones_are_not() -> None:
    stages = ok(BASIC + "stem: Conv(3,1, pad=1) x4\nlayer1: basic(4) * 2\n"
                "layer2: basic(8, 2); basic(8)\ninc: basic(8)\n")
    assert [s.name for s in stages] == [
        "stem",
        "layer1.0.a", "layer1.0.b", "layer1.0.out", "layer1.1.a", "layer1.1.b", "layer1.1.out",
        "layer2.0.a", "layer2.0.b", "layer2.0.out", "layer2.1.a", "layer2.1.b", "layer2.1.out",
        "inc.a", "inc.b", "inc.out"]
    got = by_name(stages)
    # each instance reads the one before it; `in` is the instance's input
    assert got["layer1.0.a"].sources == ("stem",)
    assert got["layer1.0.out"].sources == ("layer1.0.b", "stem")
    assert got["layer1.1.a"].sources == ("layer1.0.out",)
    assert got["layer1.1.out"].sources == ("layer1.1.b", "layer1.0.out")
    assert got["inc.a"].sources == ("layer2.1.out",)
    assert {s.block for s in stages} == {None, "basic"}


def test_a_later_stage_reads_a_stage_of_instances_by_its_output() -> None:
    got = by_name(ok(BASIC + "stem: Conv(3,1, pad=1) x4\nlayer1: basic(4) * 2\n"
                     "side(stem): Conv(1,1) x4\nsum(layer1, side): Add\n"))
    assert got["side"].sources == ("stem",)
    assert got["sum"].sources == ("layer1.1.out", "side")


def test_nested_blocks_qualify_names_by_every_level() -> None:
    text = ("block unit(c) {\n  a: Conv(1,1) xc + ReLU\n}\n"
            "block pair(c) {\n  x: unit(c) * 2\n  y(in): Conv(1,1) xc\n  m(x, y): Add\n}\n"
            "s: Conv(1,1) x4\nt: pair(4)\n")
    stages = ok(text)
    assert [(s.name, s.sources) for s in stages] == [
        ("s", (INPUT,)),
        ("t.x.0.a", ("s",)), ("t.x.1.a", ("t.x.0.a",)),
        ("t.y", ("s",)), ("t.m", ("t.x.1.a", "t.y"))]
    inner = by_name(stages)["t.x.1.a"]
    # notes: the innermost use first (line 5 `x: unit(c) * 2`), then `t: pair(4)` (line 10)
    assert [n.loc.line - 2 for n in inner.notes] == [5, 10]
    assert inner.notes[0].message == "in `t.x.1`, an instance of block 'unit' (c=4)"
    assert inner.notes[1].message == "in `t`, an instance of block 'pair' (c=4)"
    assert inner.block == "unit"


def test_an_expectation_after_instances_belongs_to_their_last_stage() -> None:
    got = by_name(ok(BASIC + "stem: Conv(3,1, pad=1) x4\nlayer1: basic(4) * 2 -> 16x16x4\n"))
    last = got["layer1.1.out"]
    assert last.expect is not None and last.expect.dims == (16, 16, 4)
    assert last.expect_name == "layer1"
    assert got["layer1.0.out"].expect is None


# --- parameters ---------------------------------------------------------------------------


PARAMS = "block b(c, k=3, s=1) {\n  a: Conv(k,s, pad=1, remainder=drop) xc\n}\n"


@pytest.mark.parametrize("use, conv, channels", [
    ("b(8)", [3, 1, 1, "drop"], 8),                 # defaults
    ("b(8, 5, 2)", [5, 2, 1, "drop"], 8),           # positional, in order
    ("b(8, s=2, k=1)", [1, 2, 1, "drop"], 8),       # keywords, in any order
    ("b(c=4)", [3, 1, 1, "drop"], 4),               # a required parameter by name
    ("b(16, s=2)", [3, 2, 1, "drop"], 16),          # mixed
])
def test_parameters_bind_like_an_op_call(use: str, conv: list[object], channels: int) -> None:
    (_stem, a) = ok(PARAMS + f"stem: Conv(1,1) x2\nx: {use}\n")
    (call,) = a.ops
    assert arg_values(call) == conv
    assert call.channels == channels
    bound = a.notes[0].message.split("(")[-1].rstrip(")").split(", ")
    assert sorted(bound) == [f"c={channels}", f"k={conv[0]}", f"s={conv[1]}"]


@pytest.mark.parametrize("use, kind, col, message", [
    ("b()", BLOCK, 4, "block 'b' needs its 'c' parameter"),
    ("b(8, 3, 1, 4)", BLOCK, 15, "block 'b' takes 3 parameters, got 4"),
    ("b(8, q=1)", BLOCK, 9, "block 'b' has no parameter 'q'"),
    ("b(8, c=2)", DUPLICATE, 9, "parameter 'c' is given twice"),
    ("b(8) x4", BLOCK, 9, "block 'b' takes no channel count"),
])
def test_binding_errors_are_located(use: str, kind: str, col: int, message: str) -> None:
    (d,) = errors(PARAMS + f"stem: Conv(1,1) x2\nx: {use}\n")
    assert (d.kind, at(d), d.message) == (kind, (5, col), message)
    if kind == BLOCK:
        assert "b(c, k=3, s=1)" in d.hint


def test_a_block_header_names_each_parameter_once_required_ones_first() -> None:
    found = errors("block b(c, c) {\n  a: Conv(1,1) xc\n}\nblock d(c=1, e) {\n"
                   "  a: Conv(1,1) xc\n}\nx: b(1, 2)\ny: d(1, 2)\n")
    assert [(d.kind, at(d)) for d in found] == [(DUPLICATE, (1, 12)), (BLOCK, (4, 14))]


def test_arguments_and_channels_take_the_instance_values() -> None:
    text = ("block b(c, k, p=0, r=drop) {\n  a: Conv(k,2, pad=p, remainder=r) xc; "
            "MaxPool(k,1, pad=p)\n}\nx: b(6, 3, 1)\ny: b(2, 1, r=error)\n")
    got = by_name(ok(text))
    conv, pool = got["x.a"].ops
    assert (arg_values(conv), conv.channels) == ([3, 2, 1, "drop"], 6)
    assert arg_values(pool) == [3, 1, 1]
    conv, pool = got["y.a"].ops
    assert (arg_values(conv), conv.channels) == ([1, 2, 0, "error"], 2)
    # the written stage keeps the parameter names
    assert got["x.a"].written.ops[0].channels == "c"


@pytest.mark.parametrize("body, message", [
    ("block b(c) {\n  a: Conv(1,1) xd\n}\nx: b(4)\n", "block 'b' has no parameter 'd'"),
    ("block b(c) {\n  a: Conv(1,1) xc\n}\nx: b(1.5)\n",
     "`xc` is a channel count, and 'c' is 1.5 here"),
    ("x: Conv(1,1) xc\n", "`xc` names a block parameter, and this stage is not in a block"),
])
def test_channels_must_name_a_whole_number_parameter(body: str, message: str) -> None:
    (d,) = errors(body)
    assert (d.kind, d.message) == (BLOCK, message)
    assert d.loc.end_col - d.loc.col == 2  # the caret is on `xc`/`xd` exactly


def test_a_misspelt_block_is_suggested() -> None:
    (d,) = errors(BASIC + "stem: Conv(3,1, pad=1) x4\nlayer1: basci(4)\n")
    assert (d.kind, f"{d.message}; {d.hint}") == (
        UNKNOWN_OP, "unknown op 'basci'; did you mean basic?")


# --- structure ----------------------------------------------------------------------------


def test_a_stage_runs_ops_or_instantiates_blocks_not_both() -> None:
    (d,) = errors(BASIC + "stem: Conv(3,1, pad=1) x4\nx: basic(4); ReLU\n")
    assert (d.kind, at(d)) == (STRUCTURE, (7, 14))
    assert "put ReLU in a stage of its own" in d.hint
    (d,) = errors(BASIC + "stem: Conv(3,1, pad=1) x4\nx: stem; basic(4)\n")
    assert d.hint == "'stem' is neither an op nor a block; to read stage 'stem', write " \
        "`x(stem): …`"


def test_plus_before_a_block_is_an_error() -> None:
    (d,) = errors(BASIC + "stem: Conv(3,1, pad=1) x4\nx: basic(4) + basic(4)\n")
    assert (d.kind, at(d)) == (STRUCTURE, (7, 15))
    assert d.hint == "run it as the next block with `;`: `; basic(4)`"


@pytest.mark.parametrize("repeat, col", [("0", 15), ("1.5", 15), ("-1", 15)])
def test_a_block_repeats_a_whole_number_of_times(repeat: str, col: int) -> None:
    (d,) = errors(BASIC + f"stem: Conv(3,1, pad=1) x4\nx: basic(4) * {repeat}\n")
    assert (d.kind, at(d)) == (BLOCK, (7, col))
    assert d.message.endswith(f"at least once, not {repeat}")


def test_repeat_is_for_blocks_not_ops() -> None:
    (d,) = errors("x: Conv(1,1) x4 * 2\n")
    assert (d.kind, at(d), d.message) == (STRUCTURE, (1, 19),
                                          "`* 2` repeats a block, and Conv is an op")


def test_repeat_beyond_the_op_limit_is_reported_before_expanding() -> None:
    (d,) = errors(BASIC + "stem: Conv(3,1, pad=1) x4\nx: basic(4) * 1000000\n")
    assert (d.kind, at(d)) == (LIMIT, (7, 15))
    assert "1,000,000 times is more than the limit of 100,000 ops" in d.message


def test_expansion_stops_at_the_op_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expand, "MAX_OPS", 20)
    stages, diags = flat(BASIC + "stem: Conv(3,1, pad=1) x4\nx: basic(4) * 5\n")
    (d,) = diags.errors
    assert d.kind == LIMIT and "more than 20 ops" in d.message
    assert sum(len(s.ops) for s in stages) <= 20
    assert d.notes  # inside an instance: the note names it


# --- references ---------------------------------------------------------------------------


def test_an_unknown_reference_suggests_the_closest_name() -> None:
    (d,) = errors("stem: Conv(1,1) x4\nb1: ReLU\nb2(stme, b1): Concat\n")
    assert (d.kind, at(d), d.message, d.hint) == (
        REFERENCE, (3, 4), "no stage named 'stme' in the network", "did you mean 'stem'?")
    (d,) = errors("stem: Conv(1,1) x4\nb(zzz): ReLU\n")
    assert d.hint == "it reads one of: 'stem', 'input'"


def test_a_reference_in_a_block_names_its_scope() -> None:
    (d,) = errors("stem: Conv(1,1) x4\nblock k(c) {\n  a: Conv(1,1) xc\n  b(stem): ReLU\n}\n"
                  "x: k(2)\n")
    assert (d.kind, at(d), d.message) == (REFERENCE, (4, 5), "no stage named 'stem' in block 'k'")
    assert [n.loc.line - 2 for n in d.notes] == [6]


def test_a_stage_used_before_it_is_defined() -> None:
    found = diagnostics("stem: Conv(1,1) x4\ncat(stem, side): Concat\nside(stem): ReLU\n"
                        "out(cat): FC(2)\n")
    # one error, and neither a merge error for the missing input nor an unused warning for side
    assert [(d.kind, at(d), d.message) for d in found] == [
        (REFERENCE, (2, 11), "stage 'side' is used before it is defined (on line 5)")]


@pytest.mark.parametrize("body, where, message", [
    ("a(b): Conv(1,1) x4\nb(a): ReLU\n", (1, 3), "'a' → 'b' → 'a'"),
    ("a(c): Conv(1,1) x4\nb: ReLU\nc: ReLU\n", (1, 3), "'a' → 'c' → 'b' → 'a'"),
])
def test_stages_reading_each_other_are_a_cycle(body: str, where: tuple[int, int],
                                               message: str) -> None:
    (d,) = errors(body)
    assert (d.kind, at(d)) == (CYCLE, where)
    assert message in d.message


def test_a_stage_reading_itself() -> None:
    (d,) = errors("stem: Conv(1,1) x4\na(a): ReLU\n")
    assert (d.kind, at(d), d.message) == (CYCLE, (2, 3), "stage 'a' reads itself")


def test_a_block_instantiating_itself_directly_or_not() -> None:
    (d,) = errors("block p(c) {\n  a: q(c)\n}\nblock q(c) {\n  b: p(c)\n}\nx: Conv(1,1) x2\n"
                  "y: p(2)\n")
    assert (d.kind, at(d), d.message) == (CYCLE, (5, 6), "block 'p' instantiates itself: "
                                          "p → q → p")
    assert [n.loc.line - 2 for n in d.notes] == [2, 8]


def test_a_failed_stage_passes_its_input_through_without_more_errors() -> None:
    """A stage that cannot be expanded still defines its name: stages reading it are checked
    as if it were right, so its error is the only one."""
    found = errors(BASIC + "stem: Conv(3,1, pad=1) x4\nx: basic()\ny: basic(4); ReLU\n"
                   "sum(x, y, stem): Add\n")
    assert [(d.kind, at(d)) for d in found] == [(BLOCK, (7, 4)), (STRUCTURE, (8, 14))]


def test_a_merge_with_an_unknown_reference_reports_only_the_reference() -> None:
    (d,) = errors("stem: Conv(1,1) x4\nb: ReLU\nsum(b, stme): Add\n")
    assert d.kind == REFERENCE


# --- merges -------------------------------------------------------------------------------


@pytest.mark.parametrize("body, where, message", [
    ("a: Conv(1,1) x4\nb(a, input): Conv(1,1) x4\n", (2, 14),
     "stage 'b' reads 2 stages ('a', 'input'), and its first op, Conv, reads one"),
    ("a: Conv(1,1) x4\nb(a): Add\n", (2, 7),
     "Add merges two or more stages, and here it reads only 'a'"),
    ("a: Conv(1,1) x4\nb: Concat\n", (2, 4),
     "Concat merges two or more stages, and here it reads only 'a'"),
    ("a: Conv(1,1) x4\nb(a, input): Concat; Add\n", (2, 22),
     "Add merges stages, so it is the first op of its stage; here it follows another op of 'b'"),
])
def test_only_a_merge_reads_several_stages(body: str, where: tuple[int, int],
                                           message: str) -> None:
    (d,) = errors(body)
    assert (d.kind, at(d), d.message) == (STRUCTURE, where, message)


def test_a_merge_in_a_block_is_reported_once_for_every_instance() -> None:
    (d,) = errors("block b(c) {\n  a: Conv(1,1) xc\n  m(a): Add\n}\nx: Conv(1,1) x2\n"
                  "y: b(2) * 3\n")
    assert at(d) == (3, 9)
    assert d.message == "Add merges two or more stages, and here it reads only 'a'"


@pytest.mark.parametrize("body, message, hint", [
    ("a: Conv(1,1) x4\nb(input): Conv(1,1) x8\nm(a, b): Add\n",
     "m: Add needs inputs of one shape: 'a' is 16x16x4, 'b' is 16x16x8",
     "project 'a' to 8 channels, e.g. `proj(a): Conv(1,1, bias=false) x8; BatchNorm`, and add "
     "`proj` in place of 'a'"),
    ("a: Conv(1,1) x4\nb(input): Conv(2,2) x8\nm(a, b): Add\n",
     "m: Add needs inputs of one shape: 'a' is 16x16x4, 'b' is 8x8x8",
     "'a' is 2 times as large each way: a stride of 2 on its branch would make them agree, or "
     "after it `proj(a): Conv(1,2, bias=false) x8; BatchNorm`, added in place of 'a'"),
    ("a: Conv(2,2) x4\nb(input): Conv(1,1) x4\nm(a, b): Concat\n",
     "m: Concat needs inputs of the same height and width: 'a' is 8x8x4, 'b' is 16x16x4",
     "'b' is 2 times as large each way: a stride of 2 on its branch would make them agree, or "
     "after it `pool(b): MaxPool(2,2)`, concatenated in place of 'b'; channels may differ"),
    ("a: Conv(3,1) x4\nb(input): Conv(5,1) x4\nm(a, b): Concat\n",
     "m: Concat needs inputs of the same height and width: 'a' is 14x14x4, 'b' is 12x12x4",
     "'b' comes out 2 smaller each way: 1 more padding on each side of its branch (`pad=` on a "
     "stride-1 window) would make them agree; a kxk window keeps its input's size with "
     "pad=(k-1)/2; channels may differ"),
    ("a: Conv(3,1) x4\nb(input): Conv(1x5,1) x4\nm(a, b): Add\n",
     "m: Add needs inputs of one shape: 'a' is 14x14x4, 'b' is 16x12x4",
     "give both branches the same strides and padding, so 'a' also comes out 16x12"),
    ("a: FC(4)\nb(input): FC(6)\nm(a, b): Add\n",
     "m: Add needs inputs of one shape: 'a' is 4, 'b' is 6",
     "project 'a' to 6 features, e.g. `proj(a): FC(6, bias=false); BatchNorm`, and add `proj` "
     "in place of 'a'"),
    ("a: FC(4)\nb(input): Conv(1,1) x4\nm(a, b): Concat\n",
     "m: Concat joins maps or flat vectors, not both: 'a' is flat (4), 'b' is 16x16x4",
     "flatten 'b' with an FC first, or pool it to 1x1 (GlobalAvgPool) and concatenate maps"),
])
def test_merge_shape_errors_name_both_inputs_with_a_hint(body: str, message: str,
                                                         hint: str) -> None:
    (d,) = errors(body)
    assert (at(d), d.message, d.hint) == ((3, 10), message, hint)


# --- unused outputs -----------------------------------------------------------------------


def test_an_unread_output_is_a_warning_once_per_block_line() -> None:
    body = ("block b(c) {\n  a: Conv(1,1) xc\n  side(in): Conv(1,1) xc\n  z(a): ReLU\n}\n"
            "stem: Conv(1,1) x2\nprobe: Conv(1,1) x3\nx(stem): b(2) * 3\ny: b(2)\n")
    result = check(HEAD + body, "t.net")
    assert result.ok
    found = [(d.kind, at(d), d.message) for d in result.diagnostics]
    assert found == [
        (UNUSED, (3, 3), "the output of stage 'side' of block 'b' is never read"),
        (UNUSED, (7, 1), "the output of stage 'probe' is never read")]
    side = result.diagnostics[0]
    assert side.severity is Severity.WARNING
    assert side.notes[0].message.startswith("in `x.0`")  # the first instance's


def test_an_unused_block_is_a_warning() -> None:
    (d,) = diagnostics("block b(c) {\n  a: Conv(1,1) xc\n}\nx: Conv(1,1) x2\n")
    assert (d.kind, d.severity, at(d)) == (UNUSED, Severity.WARNING, (1, 7))


# --- every diagnostic is located in the file ------------------------------------------------


BROKEN = [
    "a(b): Conv(1,1) x4\nb(a): ReLU\n",
    "a: Conv(1,1) x4\nm(a, zz): Add\nn(m): Concat; Add\n",
    BASIC + "s: basic(4) + basic(4) * 0\nt: basic(c=1, c=2, z=3) x5\nu: basic(4); Conv(1,1) xq\n",
    "block p(c) {\n  a: p(c) * 2\n  b(nope, input): Add\n}\nx: p(1)\ny(x, x): ReLU\n",
    "block q(c=1, d) {\n  a: Conv(1,1) xe\n}\nx: q()\n",
    "block ReLU(c) {\n  a: Conv(1,1) xc\n}\nx: ReLU(2)\nblock ReLU(c) {\n  a: FC(c)\n}\n",
    "x: Conv(1,1) x4\ny(x, in, input, x): Concat\nz(y): Add + ReLU\nw: ReLU * 3\n",
]


@pytest.mark.parametrize("body", BROKEN, ids=range(len(BROKEN)))
def test_every_diagnostic_is_located_within_the_file(body: str) -> None:
    text = HEAD + body
    result = check(text, "t.net")
    assert not result.ok
    lines = source_lines(text)
    for d in result.diagnostics:
        for loc in (d.loc, *(n.loc for n in d.notes)):
            assert loc.file == "t.net"
            assert 1 <= loc.line <= len(lines), d
            assert 1 <= loc.col <= len(lines[loc.line - 1]) + 1, d
            assert (loc.end_line, loc.end_col) >= (loc.line, loc.col), d
        assert d.render(text).startswith(f"t.net:{d.loc.line}:{d.loc.col}: ")


# --- fusion -------------------------------------------------------------------------------


# a pool that keeps the maps' size and that the kernel takes (size ≤ 2·stride): 1x1
FUSIBLE = ("a: Conv(3,1, pad=1) x4 + ReLU; MaxPool(1,1)\n"
           "c(input): Conv(1,1) x4\nm(a, c): Concat\nout: GlobalAvgPool; FC(2)\n")


def _checked_graph(second_reader: bool) -> Context:
    """FUSIBLE's graph through every pass; with `second_reader`, the Concat reads the ReLU's
    output (the chain's intermediate) in place of `c`, an edge the language cannot write."""
    net = parse(HEAD + FUSIBLE, "t.net")
    diags = Diagnostics()
    g = build(net, expand.expand(net, diags))
    if second_reader:
        m = g.nodes["m.0"]
        g.remove_edge("c.0", "m.0")
        g.add_edge("a.1", "m.0")
        m[Key.INPUTS], m[Key.SOURCES] = ("a.2", "a.1"), ("a", "a.relu")
    ctx = Context(net, g, diags)
    run_passes(ctx)
    assert not diags.errors, [d.message for d in diags.errors]
    return ctx


def test_fusion_needs_the_intermediate_to_have_one_reader() -> None:
    alone = _checked_graph(second_reader=False).graph
    fused = alone.nodes["a.1"][Key.FUSION]
    assert fused is not None and fused.kernel == "relu_pool"
    assert fused.members == ("a.1", "a.2")
    shared = _checked_graph(second_reader=True).graph
    assert shared.nodes["m.0"][Key.SHAPE] == Shape(16, 16, 8)
    assert shared.nodes["a.1"][Key.FUSION] is None
    assert shared.nodes["a.2"][Key.FUSION] is None


def test_a_stage_output_read_by_several_stages_still_fuses_inside() -> None:
    """The chain's last member may have any number of readers: only intermediates matter."""
    result = check(HEAD + "a: Conv(3,1, pad=1) x4 + ReLU; MaxPool(2,2)\n"
                   "b: Conv(1,1) x4\nm(a, b): Concat\n", "t.net")
    assert result.network is not None
    fused = {la.id: la.fusion.kernel for la in result.network.layers() if la.fusion}
    assert fused == {"a.1": "relu_pool", "a.2": "relu_pool"}
