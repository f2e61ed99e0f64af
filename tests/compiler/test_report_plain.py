"""The report written to a file or a pipe is drawn without rich (rich's per-cell rendering
made it most of a long spec's check), and must stay byte for byte what rich draws."""

from __future__ import annotations

import gc
import io
import re
from pathlib import Path

import pytest

from alexnetc.compiler import report
from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.pipeline import check, check_file

from helpers import BRANCHING

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.net"))


def _rich(net: CheckedNetwork) -> str:
    buf = io.StringIO()
    report.print_report(net, report.plain_console(buf))
    return report.unpadded(buf.getvalue())


def _checked(text: str, file: str = "deep.net") -> CheckedNetwork:
    result = check(text, file)
    assert result.network is not None, result.diagnostics
    return result.network


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_plain_report_is_what_rich_draws(path: Path) -> None:
    result = check_file(path)
    if result.network is None:
        pytest.skip("does not check")
    assert report._plain_table(report._layout(result.network)) is not None  # the fast path
    assert report.report_text(result.network) == _rich(result.network)


def test_plain_report_with_buffers_single_tower_and_many_stages() -> None:
    stages = "".join(f"c{i}: Conv(3,1, pad=1) x8 + ReLU; BatchNorm\n" for i in range(30))
    net = _checked(f"input 16x16x3\n{stages}fc: FC(10) + Softmax\n")
    assert "buffers" in report.report_text(net)
    assert report.report_text(net) == _rich(net)


@pytest.mark.parametrize("file", [
    "a[b]x.net",  # rich reads `[b]` as markup
    "a:smile:.net",  # and `:smile:` as an emoji
    "é.net",  # wide or combining characters
    "a_network_name_far_longer_than_the_table_it_titles_so_rich_wraps_the_title.net",
])
def test_report_goes_through_rich_where_rich_draws_otherwise(file: str) -> None:
    net = _checked("input 8x8x3\ns: Conv(3,1) x4 + ReLU\n", file)
    assert report._plain_table(report._layout(net)) is None
    assert report.report_text(net) == _rich(net)


def test_check_leaves_the_collector_as_it_found_it() -> None:
    assert gc.isenabled()
    check("input 8x8x3\ns: Conv(3,1) x4 + ReLU\n")
    assert gc.isenabled()
    gc.disable()
    try:
        check("input 8x8x3\ns: Conv(3,1) x4 + ReLU\n")
        assert not gc.isenabled()
    finally:
        gc.enable()




def _rows(text: str) -> dict[str, list[str]]:
    """Each table row that names a stage or an instance, split at runs of 3+ spaces."""
    return {cells[0]: cells for line in text.splitlines()
            if len(cells := re.split(r" {3,}", line.strip())) > 2}


@pytest.mark.parametrize("towers", [1, 2])
def test_a_branching_table_says_what_each_stage_reads(towers: int) -> None:
    net = _checked(BRANCHING.replace("input 8x8x4", f"input 8x8x4\ntowers {towers}"))
    text = report.report_text(net)
    assert text == _rich(net)
    assert text.splitlines()[2].split()[:3] == ["stage", "reads", "op"]
    rows = _rows(text)
    # a stage of an instance names its siblings as the block does, others by their flat names
    assert rows["stem"][:3] == ["stem", "input", "Conv(3,1,pad=1) x8"]
    assert rows["m.a"][:2] == ["m.a", "stem"] and rows["m.b"][:2] == ["m.b", "stem"]
    assert rows["m.cat"][:3] == ["m.cat", "a, b", "Concat"]
    assert rows["sum"][:3] == ["sum", "m.cat, stem", "Add"]
    assert rows["fc"][:2] == ["fc", "sum"]
    # the instance's row: its block, its input, its output and its totals (36 + 292 params)
    assert rows["m"][:5] == ["m", "stem", "block two(4)", "8x8x8", "328"]
    assert text.index("  m    ") < text.index("  m.a  ")
    assert rows["total"][2] == f"{296 + 36 + 292 + 5130:,}"  # the instance row is not added in


def test_nested_instances_each_get_a_row_and_read_relative_names() -> None:
    net = _checked("input 8x8x4\n"
                   "block inner(c) {\n  a: Conv(1,1) xc\n  s(a, in): Add\n}\n"
                   "block outer(c, d=2) {\n  x: inner(c) * 2\n  y(x, in): Concat\n}\n"
                   "stem: Conv(1,1) x4\no: outer(4)\nfc: FC(10)\n")
    text = report.report_text(net)
    assert text == _rich(net)
    rows = _rows(text)
    assert rows["o"][:3] == ["o", "stem", "block outer(4,2)"]
    assert rows["o.x.0"][:3] == ["o.x.0", "stem", "block inner(4)"]
    assert rows["o.x.1"][:3] == ["o.x.1", "x.0.s", "block inner(4)"]
    assert rows["o.x.0.s"][:3] == ["o.x.0.s", "a, stem", "Add"]
    assert rows["o.y"][:3] == ["o.y", "x.1.s, stem", "Concat"]
    assert rows["o"][4] == f"{2 * (4 * 4 + 4):,}"  # both inner instances' convs
    lines = [line.split()[0] for line in text.splitlines()[4:] if line.strip()]
    assert lines[:5] == ["stem", "o", "o.x.0", "o.x.0.a", "o.x.0.s"]


def test_a_chain_of_block_instances_has_instance_rows_and_no_reads_column() -> None:
    net = _checked("input 8x8x4\nblock conv(c) {\n  a: Conv(3,1, pad=1) xc + ReLU\n}\n"
                   "s: conv(8) * 2\nfc: FC(10)\n")
    assert not net.branches
    text = report.report_text(net)
    assert text == _rich(net)
    assert "reads" not in text
    assert _rows(text)["s.1"][:2] == ["s.1", "block conv(8)"]
    assert _rows(text)["s.1.a"][:2] == ["s.1.a", "Conv(3,1,pad=1) x8"]


def test_a_chain_prints_as_it_always_has() -> None:
    net = _checked("input 8x8x3\ns: Conv(3,1) x4 + ReLU\nfc: FC(10) + Softmax\n")
    assert report.report_text(net).splitlines()[2].split() == [
        "stage", "op", "output", "params", "neurons", "mult-adds", "fused"]
