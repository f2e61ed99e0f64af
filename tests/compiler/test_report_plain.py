"""The report written to a file or a pipe is drawn without rich (rich's per-cell rendering
made it most of a long spec's check), and must stay byte for byte what rich draws."""

from __future__ import annotations

import gc
import io
from pathlib import Path

import pytest

from alexnetc.compiler import report
from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.pipeline import check, check_file

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
