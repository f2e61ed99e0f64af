"""Property tests: random valid stacks against closed-form arithmetic; fuzzed and mutated
specs never escape the error hierarchy."""

from __future__ import annotations

import io

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark
from rich.table import Table

from alexnetc.compiler.errors import Severity
from alexnetc.compiler.pipeline import check, check_bytes
from alexnetc.compiler.report import partial_table, plain_console, report_text
from alexnetc.grammar import grammar_text

from helpers import SPECS
from strategies import SpecCase, checked_as_stated, valid_specs

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(valid_specs())
def test_valid_stacks_match_closed_form(case: SpecCase) -> None:
    result = checked_as_stated(case, "gen.net")
    net = result.network
    assert net is not None
    assert net.total().buffers == case.buffers
    assert sum(layer.tower.params_per_tower for layer in net.layers()) * case.towers == \
        case.params


def _grammar_fuzz_strategy() -> st.SearchStrategy[str]:
    parser = Lark(grammar_text(), parser="lalr")
    return from_lark(parser, start="start")


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(_grammar_fuzz_strategy())
def test_grammar_shaped_text_never_escapes(text: str) -> None:
    result = check(text, "fuzz.net")
    for d in result.diagnostics:
        assert d.render(result.source).startswith("fuzz.net:")


_REAL = [p.read_text() for p in sorted(SPECS.glob("*.net"))]
_PIECES = ["(", ")", ",", ";", "+", "->", "x", "=", "\n", "0", "-1", "1e9", "x0", "Conv",
           "FC(0)", "towers 0", "input 0x0x0", "groups=7", "pad=99", ":", "#", "\x00", "é",
           # beyond the checker's limits: PyTorch's 32-bit sizes, floats, reserved names
           "2147483648", "x99999999999999999999999", "1e999", "9" * 400, "forward", "_",
           "class", "momentum=1", "lr_drop=0", "resize=1"]


@st.composite
def mutated_specs(draw: st.DrawFn) -> bytes:
    text = draw(st.sampled_from(_REAL))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = min(len(text), i + draw(st.integers(0, 12)))
        piece = draw(st.sampled_from(_PIECES) | st.text(max_size=4))
        text = text[:i] + piece + text[j:]
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        k = draw(st.integers(0, len(raw)))
        raw = raw[:k] + draw(st.binary(max_size=3)) + raw[k:]
    return raw


@FAST
@given(mutated_specs())
def test_mutated_real_specs_never_escape(raw: bytes) -> None:
    result = check_bytes(raw, "mut.net")
    if not result.ok:
        assert any(d.severity is Severity.ERROR for d in result.diagnostics)
    for d in result.diagnostics:
        text = d.render(result.source)
        assert text.startswith(f"mut.net:{d.loc.line}:{d.loc.col}: ")
        assert d.loc.line >= 1 and d.loc.col >= 1
    # what `check` prints besides the diagnostics, the table or a failing spec's partial one,
    # renders whatever the spec, and a partial table lists every stage as it runs (a block
    # instance's stages by their flat names, each instance named on a row above them)
    if result.network is not None:
        report_text(result.network)
    elif (partial := partial_table(result)) is not None:
        assert result.partial is not None
        flat = [stage.name for stage in result.partial.graph.graph["stages"]]
        names = [str(cell) for cell in partial.columns[0].cells if str(cell)]
        assert [n for n in names if n in flat] == flat
        assert all(n in flat or any(f.startswith(f"{n}.") for f in flat) for n in names)
        _render(partial)


def _render(table: Table | None) -> str:
    if table is None:
        return ""
    buf = io.StringIO()
    plain_console(buf).print(table)
    return buf.getvalue()
