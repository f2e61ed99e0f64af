"""The grammar and AST: the seed's notation verbatim, locations, friendly syntax errors."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alexnetc.compiler import ast
from alexnetc.compiler.errors import SYNTAX, Diagnostic, SpecError
from alexnetc.compiler.parse import KEYWORDS, parse


def header_value(net: ast.Network, key: str) -> ast.Value:
    header = net.header(key)
    assert header is not None, key
    return header.value


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
    assert header_value(net, "input") == (227, 227, 3)
    assert header_value(net, "towers") == 2
    assert [(s.section, [a.name for a in s.args]) for s in net.settings] == [
        ("train", ["lr", "epochs"]), ("augment", ["flip", "pca"])]


@pytest.mark.parametrize("text, line, col, hint_part", [
    ("Conv(11,4) x96\n", 1, 6, "needs a name and a colon"),  # `Conv(` reads as `name(sources`
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


# Keywords are whole words: a name that merely starts with one is an ordinary name.

KEYWORD_PREFIXED = ["training", "trainer", "initial", "init_conv", "augmented", "train_1",
                    "init0", "networks", "network2", "inputs", "input_norm", "towers_a"]


@pytest.mark.parametrize("name", KEYWORD_PREFIXED)
def test_names_that_start_with_a_keyword_are_stage_names(name: str) -> None:
    net = parse(f"network N\ninput 8x8x3\ntrain lr=0.1\n{name}: Conv(3,1) x4 + ReLU\n"
                f"augment flip=false\n{name}_b: ReLU\ninit std=0.1\n")
    assert [s.name for s in net.stages] == [name, f"{name}_b"]
    assert [s.section for s in net.settings] == ["train", "augment", "init"]
    assert net.stages[0].name_loc.col == 1 and net.stages[0].ops[0].loc.col == len(name) + 3


def test_keyword_prefixed_words_elsewhere_are_names() -> None:
    net = parse("network training\ninput 8x8x3\ntrain init=1, augment=2\n"
                "s: initial(train=1, towers=input) + augmented\n")
    assert header_value(net, "network") == "training"
    assert [a.name for a in net.settings[0].args] == ["init", "augment"]
    ops = net.stages[0].ops
    assert [o.name for o in ops] == ["initial", "augmented"]
    assert [(a.name, a.value) for a in ops[0].args] == [("train", 1), ("towers", "input")]


@given(keyword=st.sampled_from(KEYWORDS),
       rest=st.from_regex(r"[A-Za-z0-9_]{1,12}", fullmatch=True))
def test_any_identifier_starting_with_a_keyword_is_a_stage_name(keyword: str,
                                                                  rest: str) -> None:
    name = keyword + rest
    net = parse(f"input 8x8x3\ntrain lr=0.1\n{name}: ReLU\n")
    assert [s.name for s in net.stages] == [name]


@pytest.mark.parametrize("keyword", KEYWORDS)
def test_a_keyword_alone_cannot_name_a_stage_and_says_so(keyword: str) -> None:
    with pytest.raises(SpecError) as e:
        parse(f"input 8x8x3\n{keyword}: ReLU\n", "s.net")
    (d,) = e.value.diagnostics
    assert (d.kind, d.loc.line, d.loc.col) == (SYNTAX, 2, len(keyword) + 1)
    assert f"`{keyword}` is a keyword" in d.hint and "without a colon" in d.hint


# Unicode the tool prints itself, pasted back in; a byte-order mark; non-ASCII names.

def syntax_error(text: str) -> Diagnostic:
    with pytest.raises(SpecError) as e:
        parse(text, "s.net")
    (d,) = e.value.diagnostics
    assert d.kind == SYNTAX
    rendered = str(e.value)
    assert rendered.startswith(f"s.net:{d.loc.line}:{d.loc.col}: error: ")
    assert "hint: " in rendered and "Traceback" not in rendered
    return d


def test_arrow_from_the_checker_output_is_explained() -> None:
    d = syntax_error("input 8x8x3\nc: Conv(3,1) x4 → 6x6x4, ReLU → 6x6x4\n")
    assert (d.loc.line, d.loc.col) == (2, 17)
    assert d.message.startswith("unexpected character '→'")
    assert "computed, not written" in d.hint and "delete the `→ …` part" in d.hint
    assert "`-> HxWxC`" in d.hint


def test_arrow_at_the_end_of_a_stage_suggests_the_ascii_expectation() -> None:
    d = syntax_error("input 8x8x3\nc: Conv(3,1) x4 + ReLU → 6×6×4   # copied\n")
    assert "delete the `→ …` part" in d.hint and "`-> 6x6x4`" in d.hint
    assert parse("input 8x8x3\nc: Conv(3,1) x4 + ReLU -> 6x6x4\n").stages[0].expect


@pytest.mark.parametrize("text, col, fixed", [
    ("input 32×32×3\n", 9, "`32x32x3`"),
    ("input 8x8x3\nc: Conv(3,1) ×4\n", 14, "`x4`"),
    ("input 8x8x3\nc: Conv(3,1) x4 -> 6x6×4\n", 23, "`6x6x4`"),
])
def test_times_sign_asks_for_an_ascii_x(text: str, col: int, fixed: str) -> None:
    d = syntax_error(text)
    assert d.loc.col == col and d.message.startswith("unexpected character '×'")
    assert "ASCII `x`" in d.hint and fixed in d.hint


def test_towers_copied_from_the_table_asks_for_the_tower_count() -> None:
    d = syntax_error("input 8x8x3\ntowers 2×48\n")
    assert "`towers 2`" in d.hint


def test_a_leading_byte_order_mark_is_ignored_and_keeps_the_columns() -> None:
    text = "network N\ninput 8x8x3\nconv1: Conv(3,1) x4 -> 6x6x4\n"
    plain, marked = parse(text, "f.net"), parse("\ufeff" + text, "f.net")
    assert marked.headers == plain.headers and marked.stages == plain.stages
    assert marked.headers[0].value_loc.col == 9  # `N`, counted as the editor shows it
    d = syntax_error("\ufeffnetwork Réseau\ninput 8x8x3\n")
    assert (d.loc.line, d.loc.col) == (1, 10) and "`Reseau`" in d.hint
    d = syntax_error("\ufeffinput 8x8x3\nc: Conv(3,1) x4 → 6x6x4\n")
    assert (d.loc.line, d.loc.col) == (2, 17)


def test_a_byte_order_mark_inside_the_file_is_explained() -> None:
    d = syntax_error("input 8x8x3\n\ufeffc: ReLU\n")
    assert (d.loc.line, d.loc.col) == (2, 1) and "U+FEFF" in d.hint


@pytest.mark.parametrize("text, col, fix", [
    ("network Réseau\n", 10, "write `Reseau` for `Réseau`"),
    ("network Ångström\n", 9, "write `Angstrom` for `Ångström`"),
    ("input 8x8x3\nnaïve: ReLU\n", 3, "write `naive` for `naïve`"),
    ("network Сеть\n", 9, ""),
])
def test_non_ascii_letters_in_names_say_what_names_are(text: str, col: int, fix: str) -> None:
    d = syntax_error(text)
    assert d.loc.col == col
    assert "names are ASCII letters, digits and `_`" in d.hint and fix in d.hint


@pytest.mark.parametrize("text, part", [
    ("input 8x8x3\nc:\u00a0ReLU\n", "U+00A0 NO-BREAK SPACE"),
    ("input 8x8x3\nc: Dropout(\u2212.5)\n", "U+2212 MINUS SIGN"),
    ("input 8x8x3\nc: Dropout(\uff10.5)\n", "ASCII digits"),
])
def test_other_unicode_is_named(text: str, part: str) -> None:
    assert part in syntax_error(text).hint


def test_unicode_in_comments_is_fine() -> None:
    net = parse("# conv1 → 55x55x96, 2×48, Réseau\ninput 8x8x3\nc: ReLU  # → 8×8×3\n")
    assert [s.name for s in net.stages] == ["c"]


@given(st.text(max_size=40))
def test_unicode_text_never_escapes(text: str) -> None:
    for spec in (text, f"input 8x8x3\nc: {text}\n", f"network {text}\n"):
        try:
            parse(spec)
        except SpecError as e:
            assert e.diagnostics and "error:" in str(e)


# Blank lines are free: lines of only spaces or tabs, and indented comments, anywhere.

BLANK_LINES = {
    "between headers": "network T\n   \ninput 8x8x3\ns: Conv(3,1) x4 + ReLU; MaxPool(2,2)\n",
    "a tab line": "network T\ninput 8x8x3\n\t\n \t \ns: Conv(3,1) x4 + ReLU; MaxPool(2,2)\n",
    "between stages": "network T\ninput 8x8x3\ns: Conv(3,1) x4 + ReLU; MaxPool(2,2)\n  \n"
                      "t: ReLU\n",
    "after `+`": "network T\ninput 8x8x3\ns: Conv(3,1) x4 +\n   \n   ReLU; MaxPool(2,2)\n",
    "comment after `+`": "network T\ninput 8x8x3\ns: Conv(3,1) x4 +\n   # tied\n   ReLU;"
                         " MaxPool(2,2)\n",
    "comment after `;`": "network T\ninput 8x8x3\ns: Conv(3,1) x4 + ReLU;\n\t# then pool\n"
                         "  \n   MaxPool(2,2)\n",
    "at the start": "  \n\t# spec\nnetwork T\ninput 8x8x3\ns: Conv(3,1) x4 + ReLU; MaxPool(2,2)\n",
    "at the end": "network T\ninput 8x8x3\ns: Conv(3,1) x4 + ReLU; MaxPool(2,2)\n   \n  # end\n ",
}


@pytest.mark.parametrize("crlf", [False, True], ids=["LF", "CRLF"])
@pytest.mark.parametrize("text", BLANK_LINES.values(), ids=BLANK_LINES.keys())
def test_lines_of_only_spaces_and_indented_comments_are_blank(text: str, crlf: bool) -> None:
    net = parse(text.replace("\n", "\r\n") if crlf else text)
    s = net.stages[0]
    assert [o.name for o in s.ops] == ["Conv", "ReLU", "MaxPool"]
    assert [o.joined for o in s.ops] == [False, True, False]
    assert header_value(net, "input") == (8, 8, 3)


def test_the_issues_spec_with_a_line_of_spaces_parses() -> None:
    net = parse("network T\ninput 32x32x1\n   \nc1: FC(10)\n")
    assert [s.name for s in net.stages] == ["c1"]


def test_blank_lines_keep_later_locations() -> None:
    net = parse("input 8x8x3\n  \n\t# c\ns: Conv(3,1) x4 +\n  \n    ReLU\n", "f.net")
    conv, relu = net.stages[0].ops
    assert (conv.loc.line, conv.loc.col) == (4, 4)
    assert (relu.name_loc.line, relu.name_loc.col) == (6, 5)
    d = syntax_error("input 8x8x3\n   \ns: Conv(3,1 x4\n")
    assert (d.loc.line, d.loc.col) == (3, 13)


# Sizes HxW: an op's window takes them; a setting takes one number.

@pytest.mark.parametrize("text, values", [
    ("c: Conv(1x7,1) x4", [(1, 7), 1]),
    ("c: Conv(3,2x1) x4", [3, (2, 1)]),
    ("c: Conv(3,1, pad=1x3, dilation=2x1) x4 + ReLU", [3, 1, (1, 3), (2, 1)]),
    ("c: MaxPool(3x3, 2)", [(3, 3), 2]),
    ("c: Conv (1x7, 1, pad = 0x3) x4", [(1, 7), 1, (0, 3)]),
    ("c: Conv(1x7x3,1) x4", [(1, 7, 3), 1]),  # the binder names the third number
])
def test_an_ops_argument_takes_a_size(text: str, values: list[object]) -> None:
    call = parse(f"input 8x8x3\n{text}\n").stages[0].ops[0]
    assert [a.value for a in call.args] == values
    assert call.text() == text[3:].split(" x4")[0].split(" + ")[0].replace(" ", "") + (
        " x4" if " x4" in text else "")


def test_a_size_keeps_its_location() -> None:
    arg = parse("input 8x8x3\nc: Conv(1x7,1, pad=0x3) x4\n").stages[0].ops[0].args[2]
    assert (arg.loc.line, arg.loc.col, arg.loc.end_col) == (2, 16, 23)


def test_a_rectangle_in_a_setting_is_one_number() -> None:
    d = syntax_error("input 8x8x3\naugment resize=256x256 flip=false  # both sides\nc: ReLU\n")
    assert (d.loc.line, d.loc.col, d.loc.end_col) == (2, 16, 23)
    assert "`augment resize=256 flip=false`" in d.hint and "one number" in d.hint


def test_channels_glued_to_an_unclosed_argument_list_still_ask_for_the_paren() -> None:
    d = syntax_error("input 8x8x3\nc: Conv(3,1x4 + ReLU\n")
    assert "closing `)`" in d.hint


def test_the_keyword_list_is_the_grammars() -> None:
    """ast.KEYWORDS is the one list the parser's hints and the stage-name rules use: it must
    be the grammar's header keywords and SECTION words, and the recipe's sections."""
    import re

    from alexnetc.compiler.recipe import Recipe
    from alexnetc.grammar import grammar_text

    text = grammar_text()
    headers = re.findall(r'^(\w+): "(\w+)"', text, re.MULTILINE)
    assert [word for rule, word in headers if rule == word] == list(ast.HEADERS
                                                                    + ast.DEFINITIONS)
    sections = re.search(r"^SECTION\.\d+: /\(\?:([\w|]+)\)", text, re.MULTILINE)
    assert sections is not None and tuple(sections.group(1).split("|")) == ast.SECTIONS
    assert tuple(f for f in Recipe.__dataclass_fields__) == ast.SECTIONS
    assert ast.KEYWORDS == ast.HEADERS + ast.SECTIONS + ast.DEFINITIONS
