"""`alexnetc graph` draws the specs that use the ops added after AlexNet (BatchNorm,
bias=false, ceil pools, global and adaptive pooling, PReLU): every op of every stage as the
spec writes it, and each stage's shape and parameters."""

from __future__ import annotations

import html
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from alexnetc.cli.main import main
from alexnetc.compiler import draw
from alexnetc.compiler.pipeline import check_file

from helpers import SPECS

NEW = ["vgg16-bn", "nin", "digits-bn", "digits-gap"]


def written_stages(text: str) -> dict[str, str]:
    """Each stage's ops as the spec writes them, continuation lines joined, the `->`
    expectation dropped, spacing as the drawing writes calls back (`Conv(3,1,pad=1) x64`)."""
    stages: dict[str, str] = {}
    name = ""
    for line in text.splitlines():
        line = line.split("#", 1)[0]
        m = re.match(r"([A-Za-z_]\w*):(.*)", line)
        if m and not line[0].isspace():
            name, line = m.group(1), m.group(2)
            stages[name] = ""
        elif not (name and line[:1].isspace()):
            continue
        stages[name] += " " + line.split("->", 1)[0]
    out = {}
    for k, v in stages.items():
        v = re.sub(r"\s+", " ", v).strip()
        v = re.sub(r",\s*", ",", v)
        v = re.sub(r"\s*;\s*", "; ", v)
        out[k] = re.sub(r"\s*\+\s*", " + ", v).rstrip("; ")
    return out


@pytest.mark.parametrize("name", NEW)
def test_new_specs_are_drawn_op_by_op(name: str) -> None:
    path = SPECS / f"{name}.net"
    result = check_file(path)
    assert result.network is not None
    text = html.unescape(draw.draw(result))
    stages = written_stages(path.read_text())
    assert list(stages) == [s for s, _ in result.network.stages()]
    for stage, ops in stages.items():
        assert f"<B>{stage}</B>  {ops}<" in text, (stage, ops)
    for _, layers in result.network.stages():
        total = sum(layer.counts.params for layer in layers)
        assert f"{layers[-1].shape} · {total:,} params" in text


def test_the_new_ops_are_all_drawn() -> None:
    text = "".join(html.unescape(draw.draw(check_file(SPECS / f"{n}.net"))) for n in NEW)
    for op in ("BatchNorm", "bias=false", "remainder=ceil", "GlobalAvgPool",
               "AdaptiveAvgPool(7)", "PReLU"):
        assert op in text, op


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("name", NEW)
def test_graph_command_renders_the_new_specs(name: str, tmp_path: Path) -> None:
    out = tmp_path / f"{name}.svg"
    assert main(["graph", str(SPECS / f"{name}.net"), "-o", str(out)]) == 0
    words = "".join(ET.parse(out).getroot().itertext())
    result = check_file(SPECS / f"{name}.net")
    assert result.network is not None
    for stage, _ in result.network.stages():
        assert stage in words


@pytest.mark.parametrize("name", ["resnet18", "googlenet", "digits-resnet", "digits-inception"])
def test_branching_specs_are_drawn_as_their_graphs(name: str) -> None:
    """Every stage a box with an edge from each stage it reads; every block instance a
    cluster holding its stages, labelled with its parameters."""
    result = check_file(SPECS / f"{name}.net")
    net = result.network
    assert net is not None and net.branches
    fig = draw.figure(result)
    box = {d["stage"]: n for n, d in fig.nodes(data=True) if "stage" in d}
    assert list(box) == [s.name for s in net.flat_stages()]
    for flat in net.flat_stages():
        for src in flat.sources:
            assert fig.has_edge(box.get(src, "input"), box[flat.name]), (src, flat.name)
        assert fig.in_degree(box[flat.name]) == len(set(flat.sources))
    params = {stage: sum(x.counts.params for x in layers) for stage, layers in net.stages()}
    clusters = fig.graph["clusters"]
    instances = {s.name.rsplit(".", 1)[0] for s in net.flat_stages() if s.block}
    assert {c["instance"] for c in clusters.values()} == instances
    for cid, c in clusters.items():
        inside = [d["stage"] for _, d in fig.nodes(data=True) if d.get("cluster") == cid]
        assert inside and all(s.startswith(c["instance"] + ".") for s in inside)
        assert c["params"] == sum(params[s] for s in inside)
