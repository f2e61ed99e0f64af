"""Property tests for networks that branch: random valid DAGs (branches, Concat and Add
merges, blocks instantiated and repeated) against closed-form arithmetic; mutated DAG specs
never escape the error hierarchy."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alexnetc.compiler.errors import UNUSED, Severity, source_lines
from alexnetc.compiler.pipeline import check
from alexnetc.compiler.report import partial_table, report_text

from strategies import DagCase, checked_as_stated, dag_specs

DAGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@DAGS
@given(dag_specs())
def test_random_dags_match_closed_form(case: DagCase) -> None:
    result = checked_as_stated(case, "dag.net")
    net = result.network
    assert net is not None
    assert net.output.dims() == case.stage_shapes["out"]
    assert sum(layer.tower.params_per_tower for layer in net.layers()) * case.towers == \
        case.params
    # each flat stage reads stages defined above it (or the input)
    seen = {"input"}
    for stage in net.flat_stages():
        assert set(stage.sources) <= seen, stage.name
        seen.add(stage.name)
    assert all(d.kind == UNUSED for d in result.diagnostics)


_NAME = re.compile(r"[A-Za-z_]\w*")
_SOURCES = re.compile(r"^\s*\w+\(([^)]*)\)\s*:", re.MULTILINE)
_NUMBER = re.compile(r"\d+")
# small numbers, zero, and ones past the limits (rejected before any work is done)
_NUMBERS = ["0", "1", "2", "3", "5", "2147483648", "9" * 30]


@st.composite
def mutated_dags(draw: st.DrawFn) -> str:
    """A valid DAG spec with one to three edits a user might make by mistake."""
    text = draw(dag_specs()).text
    for _ in range(draw(st.integers(1, 3))):
        text = draw(st.sampled_from(_MUTATIONS))(draw, text)
    return text


def _lines(text: str) -> list[str]:
    return text.split("\n")


def _delete_line(draw: st.DrawFn, text: str) -> str:
    lines = _lines(text)
    i = draw(st.integers(0, len(lines) - 1))
    return "\n".join(lines[:i] + lines[i + 1:])


def _duplicate_line(draw: st.DrawFn, text: str) -> str:
    lines = _lines(text)
    i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines)))
    return "\n".join([*lines[:j], lines[i], *lines[j:]])


def _swap_lines(draw: st.DrawFn, text: str) -> str:
    lines = _lines(text)
    i, j = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def _rename_reference(draw: st.DrawFn, text: str) -> str:
    """A name inside a stage's `(…)` becomes another name of the spec, `in`, `input`, or a
    misspelling."""
    refs = [m for s in _SOURCES.finditer(text) for m in _NAME.finditer(text, *s.span(1))]
    if not refs:
        return text
    ref = draw(st.sampled_from(refs))
    names = sorted(set(_NAME.findall(text)))
    new = draw(st.sampled_from([*names, "in", "input", ref.group()[:-1] or "x",
                                ref.group() + "x"]))
    return text[:ref.start()] + new + text[ref.end():]


def _drop_parenthesis(draw: st.DrawFn, text: str) -> str:
    where = [i for i, ch in enumerate(text) if ch in "()"]
    if not where:
        return text
    i = draw(st.sampled_from(where))
    return text[:i] + text[i + 1:]


def _change_number(draw: st.DrawFn, text: str) -> str:
    numbers = list(_NUMBER.finditer(text))
    if not numbers:
        return text
    m = draw(st.sampled_from(numbers))
    return text[:m.start()] + draw(st.sampled_from(_NUMBERS)) + text[m.end():]


_MUTATIONS = [_delete_line, _duplicate_line, _swap_lines, _rename_reference, _drop_parenthesis,
              _change_number]


@DAGS
@given(mutated_dags())
def test_mutated_dags_never_escape(text: str) -> None:
    result = check(text, "mut.net")
    if not result.ok:
        assert any(d.severity is Severity.ERROR for d in result.diagnostics)
    lines = source_lines(result.source)
    for d in result.diagnostics:
        for loc in (d.loc, *(n.loc for n in d.notes)):
            assert loc.file == "mut.net"
            assert 1 <= loc.line <= max(len(lines), 1), d
            width = len(lines[loc.line - 1]) if lines else 0
            assert 1 <= loc.col <= width + 1, d
        assert d.render(result.source).startswith(f"mut.net:{d.loc.line}:{d.loc.col}: ")
    # the table of a spec that checks, or as far as the checker got, renders too
    if result.network is not None:
        report_text(result.network)
    else:
        partial_table(result)
