"""The grammar and AST: the seed's notation verbatim, locations, friendly syntax errors."""

from __future__ import annotations

import pytest

from alexnetc.compiler import ast
from alexnetc.compiler.errors import SYNTAX, SpecError
from alexnetc.compiler.parse import parse


def ops_of(text: str) -> list[ast.OpCall]:
    net = parse(f"input 8x8x3\ns: {text}\n")
    return list(net.stages[0].ops)


@pytest.mark.parametrize("text, names", [
    ("Conv(11,4)+ReLU; ResNorm(5); MaxPool(3,2)", ["Conv", "ReLU", "ResNorm", "MaxPool"]),
    ("Conv (5,1) + ReLU", ["Conv", "ReLU"]),
    ("FC(4096) + ReLU", ["FC", "ReLU"]),
    ("FC(1000) + Softmax", ["FC", "Softmax"]),
    ("Dropout(0.5)", ["Dropout"]),
])
def test_seed_notation_parses_verbatim(text: str, names: list[str]) -> None:
    assert [o.name for o in ops_of(text)] == names


def test_plus_joins_and_semicolon_separates() -> None:
    ops = ops_of("Conv(11,4) x96 + ReLU; ResNorm(5)")
    assert [o.joined for o in ops] == [False, True, False]
    assert ops[0].channels == 96


def test_arguments_keep_types_and_order_free_keywords() -> None:
    a = ops_of("Conv(3,1, groups=2, pad=1) x8")[0]
    b = ops_of("Conv(3,1, pad=1, groups=2) x8")[0]
    assert {x.name: x.value for x in a.args} == {x.name: x.value for x in b.args}
    lrn = ops_of("ResNorm(5, alpha=1e-4, beta=0.75, k=2)")[0]
    values = {x.name: x.value for x in lrn.args}
    assert values == {None: 5, "alpha": 1e-4, "beta": 0.75, "k": 2}
    assert isinstance(values["k"], int) and isinstance(values["alpha"], float)


def test_locations_point_at_the_source() -> None:
    net = parse("input 8x8x3\n\nconv1:  Conv(3,1) x4 + ReLU -> 6x6x4\n", "f.net")
    stage = net.stages[0]
    conv, relu = stage.ops
    assert (conv.loc.file, conv.loc.line, conv.loc.col) == ("f.net", 3, 9)
    assert conv.channels_loc is not None and conv.channels_loc.col == 19
    assert relu.name_loc.col == 24
    assert stage.expect is not None and stage.expect.loc.col == 32
    assert stage.expect.dims == (6, 6, 4)


def test_comments_blank_lines_and_continuations() -> None:
    net = parse("# head\n\ninput 8x8x3   # c\n\n\ns: Conv(3,1) x4 +\n   ReLU;\n"
                "   MaxPool(2,2)\n# end")
    assert [o.name for o in net.stages[0].ops] == ["Conv", "ReLU", "MaxPool"]


def test_headers_and_settings() -> None:
    net = parse("network N\ninput 227x227x3\ntowers 2\ntrain lr=0.01, epochs=3\n"
                "augment flip=false pca=0\ns: ReLU\n")
    assert net.header("input") is not None and net.header("input").value == (227, 227, 3)
    assert net.header("towers").value == 2
    assert [(s.section, [a.name for a in s.args]) for s in net.settings] == [
        ("train", ["lr", "epochs"]), ("augment", ["flip", "pca"])]


@pytest.mark.parametrize("text, line, col, hint_part", [
    ("Conv(11,4) x96\n", 1, 5, "needs a name and a colon"),
    ("c: Conv(11,4 x96\n", 1, 14, "closing `)`"),
    ("c: Conv(11,4) 96\n", 1, 15, "as `x96`"),
    ("input 227,227,3\n", 1, 10, "HxWxC"),
    ("c: Conv(11,4) x96 ReLU\n", 1, 19, "joined by `;`"),
    ("c: Conv(11,4, pad=) x96\n", 1, 19, "name=value"),
])
def test_syntax_errors_are_located_with_hints(text: str, line: int, col: int,
                                               hint_part: str) -> None:
    with pytest.raises(SpecError) as e:
        parse(text, "s.net")
    (d,) = e.value.diagnostics
    assert d.kind == SYNTAX
    assert (d.loc.line, d.loc.col) == (line, col)
    assert hint_part in d.hint


@pytest.mark.parametrize("text", ["\x00\x01binary", "c: Conv(" * 5000, "x" * 2_000_000, "",
                                  "\n\n\n", ")))", "c: Conv(1,1) x1 -> 1x"])
def test_garbage_never_escapes_the_error_hierarchy(text: str) -> None:
    try:
        net = parse(text)
    except SpecError as e:
        assert e.diagnostics
        rendered = str(e)
        assert "error:" in rendered
    else:
        assert isinstance(net, ast.Network)
