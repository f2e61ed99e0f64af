"""`alexnetc.compiler.draw`: the DOT text of the paper's Figure 2, for checked and failing specs."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import networkx as nx
import pytest

from alexnetc.compiler import draw
from alexnetc.compiler.pipeline import CheckResult, check, check_file
from alexnetc.compiler.registry import OpDef, definitions

from helpers import SPECS

ALEXNET = SPECS / "alexnet.net"
HAS_DOT = shutil.which("dot") is not None
STAGES = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
# Each stage's per-tower maps and parameter share with `towers 2` (the paper's Figure 2).
TOWERS = {"conv1": ("27x27x48", "17,472"), "conv2": ("13x13x128", "153,728"),
          "conv3": ("13x13x192", "442,560"), "conv4": ("13x13x192", "331,968"),
          "conv5": ("6x6x128", "221,312"), "fc6": ("2048", "18,876,416"),
          "fc7": ("2048", "8,390,656"), "fc8": ("500", "2,048,500")}


def alexnet(**subs: str) -> str:
    """The repository's AlexNet spec with some text replaced."""
    text = ALEXNET.read_text()
    for old, new in subs.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def _node(fig: nx.DiGraph, stage: str, tower: int | None = None) -> dict[str, Any]:
    return next(d for _, d in fig.nodes(data=True)
                if d.get("stage") == stage and d.get("tower") == tower)


def _label(d: dict[str, Any]) -> str:
    return str(d["dot"]["label"])


@pytest.fixture(scope="module")
def result() -> CheckResult:
    r = check_file(ALEXNET)
    assert r.ok
    return r


def test_alexnet_dot_holds_every_stage_tower_shape_and_param_count(result: CheckResult) -> None:
    text = draw.draw(result)
    assert text.startswith("digraph AlexNet {")
    assert "Conv(11,4) x96 + ReLU<BR/>ResNorm(5)<BR/>MaxPool(3,2)" in text  # ops as written
    assert "<B>input</B>  227x227x3" in text
    assert "60,965,224 parameters" in text
    assert result.network is not None
    for name, layers in result.network.stages():
        total = sum(layer.counts.params for layer in layers)
        assert f"<B>{name}</B>" in text
        assert f"{layers[-1].shape} · {total:,} params" in text  # the whole stage
    fig = draw.figure(result)
    for name, (maps, params) in TOWERS.items():
        for t in (1, 2):
            label = _label(_node(fig, name, t))
            assert f"<B>tower {t}</B>  {maps}" in label
            assert f"{params} params" in label
    assert "fused: relu_lrn_pool" in _label(_node(fig, "conv1", 1))
    assert "fused: relu_pool" in _label(_node(fig, "conv5", 2))
    assert "fused" not in _label(_node(fig, "conv3", 1))


def test_cross_tower_edges_carry_every_byte_that_crosses(result: CheckResult) -> None:
    fig = draw.figure(result)
    cross = [(a, b, d) for a, b, d in fig.edges(data=True) if d.get("kind") == "cross"]
    into = {fig.nodes[b].get("stage", b) for _, b, _ in cross}
    assert into == {"conv3", "fc6", "fc7", "fc8", "output"}  # the all-gathers, the final gather
    assert all(fig.nodes[a]["tower"] != fig.nodes[b].get("tower") for a, b, _ in cross)
    assert result.network is not None
    assert sum(d["bytes"] for *_, d in cross) == result.network.cross_tower_bytes() == 244_688
    text = draw.to_dot(fig)
    for share in ("86,528 B", "18,432 B", "8,192 B", "2,000 B"):
        assert re.search(rf'style="dashed", color="{draw.CROSS}".*label=" {share} "', text), share
    # conv2, conv4 and conv5 read only their own tower: straight, plain edges.
    for stage in ("conv2", "conv4", "conv5"):
        ins = [d for _, b, d in fig.edges(data=True) if fig.nodes[b].get("stage") == stage]
        assert len(ins) == 2 and all(d["kind"] == "flow" for d in ins), stage


def test_towers_keep_their_order_in_each_row(result: CheckResult) -> None:
    text = draw.draw(result, "LR")
    assert 'rankdir="LR"' in text
    assert '{ rank=same; "stage:conv3:19" -> "stage:conv3:19:t1" -> "stage:conv3:19:t2" ' \
           '[style="invis"] }' in text


def test_one_tower_draws_a_single_column_without_cross_edges() -> None:
    r = check(alexnet(**{"towers 2 ": "towers 1 "}), "one.net")
    assert r.ok
    fig = draw.figure(r)
    assert not any(d.get("kind") == "cross" for *_, d in fig.edges(data=True))
    assert [d["stage"] for _, d in fig.nodes(data=True) if "stage" in d] == list(STAGES)
    assert all(d["tower"] is None for _, d in fig.nodes(data=True) if "stage" in d)
    text = draw.to_dot(fig)
    assert "dashed" not in text and "tower 1" not in text
    assert "27x27x96 · 34,944 params" in text


def test_a_failing_spec_marks_its_stage_red_with_the_message() -> None:
    r = check(alexnet(**{"-> 13x13x384\nconv4": "-> 14x14x384\nconv4"}), "bad.net")
    assert not r.ok
    fig = draw.figure(r)
    bad = _node(fig, "conv3")
    assert bad["status"] == "error"
    assert bad["dot"]["color"] == draw.ERROR_INK and bad["dot"]["fillcolor"] == draw.ERROR_FILL
    assert "line 19: conv3 produces 13x13x384, not 14x14x384" in _label(bad)
    assert "write `-&gt; 13x13x384`" in _label(bad)  # escaped for the HTML-like label
    assert _node(fig, "conv2")["status"] == "ok"  # its shape checked before the error
    assert "output" not in fig
    assert "1 error: drawn as far as the checker got" in draw.draw(r)


def test_stages_after_a_shape_error_are_drawn_unchecked() -> None:
    r = check(alexnet(**{"MaxPool(3,2)             -> 6x6x256": "MaxPool(30,2) -> 6x6x256",
                         "train batch=128": "train batch=-5"}), "bad.net")
    fig = draw.figure(r)
    assert _node(fig, "conv5")["status"] == "error"
    assert "window of 30" in _label(_node(fig, "conv5"))
    assert [_node(fig, s)["status"] for s in ("fc6", "fc7", "fc8")] == ["unchecked"] * 3
    assert "not checked" in _label(_node(fig, "fc6"))
    stray = _label(fig.nodes["spec_errors"])  # the setting error belongs to no stage
    assert "errors outside the stages" in stray and "batch" in stray


def test_maps_crossing_inside_a_stage_are_named_in_its_header() -> None:
    r = check("input 32x32x3\ntowers 2\nc1: Conv(3,1,pad=1) x64 + ReLU; Conv(3,1,pad=1) x64\n"
              "fc: FC(10) + Softmax\n", "mid.net")
    assert r.ok, r.diagnostics
    fig = draw.figure(r)
    # The second conv reads both towers' 32x32x32 maps: 32*32*64*4 bytes in all.
    assert f"all-gather inside the stage: {32 * 32 * 64 * 4:,} B" in _label(_node(fig, "c1"))


def test_the_spec_must_parse() -> None:
    with pytest.raises(ValueError, match="did not parse"):
        draw.figure(check("conv1: Conv(11 x96\n", "syntax.net"))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydot's parser on new pyparsing
def test_dot_text_is_valid_graphviz(result: CheckResult) -> None:
    pydot = pytest.importorskip("pydot")
    bad = check(alexnet(**{"-> 13x13x384\nconv4": "-> 14x14x384\nconv4"}), "bad.net")
    for r in (result, bad):
        graphs = pydot.graph_from_dot_data(draw.draw(r))
        assert graphs and len(graphs) == 1


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")
def test_svg_renders_with_every_stage(result: CheckResult, tmp_path: Path) -> None:
    out = tmp_path / "alexnet.svg"
    draw.render(draw.draw(result), out, "svg")
    root = ET.parse(out).getroot()
    assert root.tag.endswith("svg")
    text = "".join(root.itertext())
    for name in STAGES:
        assert name in text
    assert "86,528 B" in text and "27x27x48" in text


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")
def test_render_reports_what_dot_said(tmp_path: Path) -> None:
    with pytest.raises(draw.RenderError, match="failed"):
        draw.render("digraph { a -> }", tmp_path / "x.svg", "svg")


def test_render_without_graphviz(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(draw, "dot_program", lambda: None)
    with pytest.raises(draw.RenderError, match="not installed"):
        draw.render("digraph {}", tmp_path / "x.svg", "svg")


@pytest.mark.parametrize("op", definitions(), ids=[op.name for op in definitions()])
def test_every_op_is_drawn_as_written(op: OpDef[object]) -> None:
    r = check(f"input 8x8x4\ntowers 2\nc: Conv(1,1) x4\n{op.example_stage}\n")
    assert r.ok, [d.message for d in r.diagnostics]
    assert op.example.replace(", ", ",") in draw.draw(r)  # as the call is written back


def test_rectangular_dilated_and_same_windows_are_drawn_as_written() -> None:
    r = check("input 15x16x3\ntowers 2\n"
              "a: Conv(1x7,1, pad=0x3) x8 + ReLU; MaxPool(3x2,2x1, pad=1x0) -> 8x15x8\n"
              "b: Conv(3,1, pad=same, dilation=2) x4 -> 8x15x4\n")
    assert r.ok, [d.message for d in r.diagnostics]
    text = draw.draw(r)
    assert "Conv(1x7,1,pad=0x3) x8 + ReLU<BR/>MaxPool(3x2,2x1,pad=1x0)" in text
    assert "Conv(3,1,pad=same,dilation=2) x4" in text
    assert "8x15x4" in text
    fig = draw.figure(r)
    assert f"{(7 * 3 + 1) * 4:,} params" in _label(_node(fig, "a", 1))  # 1x7 kernel, 4 maps
    assert "fused" not in _label(_node(fig, "a", 1))  # a 3x2 pool is not the kernel's


# Two branches of a block joined by a Concat, then added to the stage they branched from.
BRANCHING = """network Small
input 8x8x4
towers 1

block two(c) {
  a: Conv(1,1) xc + ReLU
  b(in): Conv(3,1, pad=1) xc; ReLU
  cat(a, b): Concat
}

stem: Conv(3,1, pad=1) x8 + ReLU
m: two(4)
sum(m, stem): Add + ReLU
fc: FC(10) + Softmax
"""


def _branching(towers: int = 1) -> CheckResult:
    r = check(BRANCHING.replace("towers 1", f"towers {towers}"), "small.net")
    assert r.ok, [d.message for d in r.diagnostics]
    return r


def _stage_of(fig: nx.DiGraph, n: str) -> str:
    return str(fig.nodes[n].get("stage", n))


@pytest.mark.parametrize("towers", [1, 2])
def test_every_stage_has_an_edge_from_each_stage_it_reads(towers: int) -> None:
    r = _branching(towers)
    fig = draw.figure(r)
    assert r.network is not None
    for flat in r.network.flat_stages():
        into = {_stage_of(fig, a) for a, b in fig.edges if _stage_of(fig, b) == flat.name}
        assert into == set(flat.sources), flat.name
    # with towers, each tower of a merge reads its own tower of each input
    if towers == 2:
        ins = [(fig.nodes[a]["tower"], fig.nodes[b]["tower"]) for a, b in fig.edges
               if fig.nodes[b].get("stage") == "m.cat"]
        assert sorted(ins) == [(1, 1), (1, 1), (2, 2), (2, 2)]


def test_merges_are_marked_and_number_their_inputs() -> None:
    fig = draw.figure(_branching())
    for stage in ("m.cat", "sum"):
        d = _node(fig, stage)
        assert d["merge"] and d["dot"]["fillcolor"] == draw.MERGE_FILL
        assert d["dot"]["ordering"] == "in"  # inputs left to right as read
    assert "<B>Concat</B>" in _label(_node(fig, "m.cat"))
    assert "<B>Add + ReLU</B>" in _label(_node(fig, "sum"))
    assert not _node(fig, "stem")["merge"]
    heads = {(_stage_of(fig, a), _stage_of(fig, b)): d["dot"].get("headlabel")
             for a, b, d in fig.edges(data=True)}
    assert heads[("m.a", "m.cat")] == " 1 " and heads[("m.b", "m.cat")] == " 2 "
    assert heads[("m.cat", "sum")] == " 1 " and heads[("stem", "sum")] == " 2 "
    assert heads[("stem", "m.a")] is None  # one input: nothing to number


def test_a_merge_reading_one_stage_twice_numbers_both() -> None:
    r = check("input 8x8x4\na: Conv(1,1) x4\ns(a, a): Concat\n", "twice.net")
    assert r.ok, [d.message for d in r.diagnostics]
    fig = draw.figure(r)
    (edge,) = [d for a, b, d in fig.edges(data=True) if _stage_of(fig, b) == "s"]
    assert edge["dot"]["headlabel"] == " 1, 2 "


def test_a_block_instance_is_a_cluster_named_with_its_arguments() -> None:
    fig = draw.figure(_branching())
    (cluster,) = fig.graph["clusters"].values()
    assert cluster["instance"] == "m" and cluster["params"] == (8 * 4 + 4) + (9 * 8 * 4 + 4)
    assert str(cluster["dot"]["label"]) == "<B>m</B>  two(4) · 328 params"
    inside = sorted(d["stage"] for _, d in fig.nodes(data=True) if d.get("cluster"))
    assert inside == ["m.a", "m.b", "m.cat"]
    text = draw.to_dot(fig)
    body = text[text.index('subgraph "cluster_1" {'):]
    body = body[:body.index("\n  }\n")]
    assert all(f'"stage:{s}:' in body for s in ("m.a", "m.b", "m.cat"))
    assert '"stage:stem:' not in body and '"stage:sum:' not in body


def test_repeated_instances_are_drawn_apart_and_nested_clusters_nest() -> None:
    r = check("input 8x8x4\nblock inner(c) {\n  a: Conv(1,1) xc\n  s(a, in): Add\n}\n"
              "block outer(c) {\n  x: inner(c) * 2\n}\nstem: Conv(1,1) x4\no: outer(4)\n",
              "nested.net")
    assert r.ok, [d.message for d in r.diagnostics]
    fig = draw.figure(r)
    stages = [d["stage"] for _, d in fig.nodes(data=True) if "stage" in d]
    assert stages == ["stem", "o.x.0.a", "o.x.0.s", "o.x.1.a", "o.x.1.s"]
    clusters = fig.graph["clusters"]
    by_name = {c["instance"]: cid for cid, c in clusters.items()}
    assert set(by_name) == {"o", "o.x.0", "o.x.1"}
    assert clusters[by_name["o.x.0"]]["parent"] == clusters[by_name["o.x.1"]]["parent"] \
        == by_name["o"]
    assert _node(fig, "o.x.1.a")["cluster"] == by_name["o.x.1"]
    text = draw.to_dot(fig)
    assert text.index(f'subgraph "{by_name["o"]}"') < text.index(f'subgraph "{by_name["o.x.0"]}"')


def test_a_branching_network_writes_one_op_a_line() -> None:
    label = _label(_node(draw.figure(_branching()), "m.b"))
    assert "<B>m.b</B><BR/>Conv(3,1,pad=1) x4<BR/>ReLU<" in label


def test_a_chain_has_no_clusters_nor_numbered_inputs(result: CheckResult) -> None:
    text = draw.draw(result)
    assert "subgraph" not in text and "headlabel" not in text and "ordering" not in text


def test_a_failing_merge_in_an_instance_is_red_inside_its_cluster() -> None:
    r = check(BRANCHING.replace("b(in): Conv(3,1, pad=1)", "b(in): Conv(3,1)"), "bad.net")
    assert not r.ok
    fig = draw.figure(r)
    bad = _node(fig, "m.cat")
    assert bad["status"] == "error" and bad["cluster"] is not None
    assert "Concat needs inputs of the same height and width" in _label(bad)
    assert _node(fig, "sum")["status"] == "unchecked"
    into = {_stage_of(fig, a) for a, b in fig.edges if _stage_of(fig, b) == "sum"}
    assert into == {"m.cat", "stem"}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # pydot's parser on new pyparsing
def test_branching_dot_text_is_valid_graphviz() -> None:
    pydot = pytest.importorskip("pydot")
    for towers in (1, 2):
        graphs = pydot.graph_from_dot_data(draw.draw(_branching(towers)))
        assert graphs and len(graphs) == 1


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("towers", [1, 2])
def test_branching_svg_renders_with_every_stage(towers: int, tmp_path: Path) -> None:
    out = tmp_path / "small.svg"
    draw.render(draw.draw(_branching(towers)), out, "svg")
    text = "".join(ET.parse(out).getroot().itertext())
    for name in ("stem", "m.a", "m.b", "m.cat", "sum", "fc", "two(4)"):
        assert name in text


def test_maps_a_merge_gathers_are_named_in_its_header() -> None:
    """Concat of a pool that runs on tower 1 alone (3 channels do not split over 2 towers)
    and a split conv: the conv's other half goes to tower 1 (8*8*2 values of 4 bytes)."""
    r = check("input 8x8x3\ntowers 2\np: MaxPool(3,1, pad=1)\nc(input): Conv(1,1) x4\n"
              "m(p, c): Concat\nfc: FC(10) + Softmax\n", "gather.net")
    assert r.ok and r.network is not None, [d.message for d in r.diagnostics]
    fig = draw.figure(r)
    assert "gather inside the stage: 512 B per image" in _label(_node(fig, "m"))
    edges = sum(d["bytes"] for *_, d in fig.edges(data=True))
    assert edges + 512 == r.network.cross_tower_bytes()
