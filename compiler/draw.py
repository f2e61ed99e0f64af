"""Draw a network as the paper's Figure 2: Graphviz DOT text, rendered by `dot` where present.

`figure` turns the annotated graph of a check (the checked network, or for a failing spec the
graph as far as the passes got) into a presentation graph: one networkx node per box, with
its DOT attributes under "dot" and what it shows (stage, tower, shape, params) beside them
for tests, and an edge into each stage from every stage it reads, so that branches sit side
by side and merges gather theirs. `to_dot` writes that graph as DOT text itself: DOT is plain
text, writing it here keeps pydot optional, and the picture needs what nx_pydot cannot say
(HTML-like labels written bare, rank groups that keep a stage's header, tower 1 and tower 2
in one row, and a cluster around each block instance).
"""

from __future__ import annotations

import html
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import networkx as nx

from alexnetc.atomic import write_bytes
from alexnetc.compiler.errors import Diagnostic, Note, Severity
from alexnetc.compiler.graph import INPUT, Key, branches
from alexnetc.compiler.pipeline import CheckResult
from alexnetc.compiler.progress import StageView, stage_views
from alexnetc.compiler.records import Shape, TowerInfo
from alexnetc.compiler.report import Structure, _n, structure

FONT = "Helvetica,Arial,sans-serif"
INK, MUTED = "#1f2933", "#7b8794"
TOWER_FILL = ("#dbeafe", "#dcfce7", "#fef3c7", "#ede9fe")  # tower 1, 2, ... (cycled)
CROSS = "#dc2626"  # edges and text for maps that cross towers (and so devices)
FUSED_FILL, FUSED_INK = "#f3e8ff", "#6b21a8"
MERGE_FILL, MERGE_INK = "#ffedd5", "#c2410c"  # stages that join branches (Concat, Add)
BLOCK_FILL = "#fafbfc"  # the cluster around a block instance
# A merge's inputs left to right in the order it reads them (GoogLeNet's branches 1 to 4),
# where Graphviz would otherwise lay a cluster's branches out in any order.
MERGE_ORDER = {"ordering": "in"}
ERROR_FILL, ERROR_INK = "#fee2e2", "#b91c1c"
WARN_INK = "#b45309"
WRAP = 64  # characters per line of an error message inside a box


class Html(str):
    """An HTML-like Graphviz label: written as `<...>` instead of a quoted string."""


class RenderError(Exception):
    """Graphviz could not turn the DOT text into a picture (missing, failed or too slow)."""


class NoGraphviz(RenderError):
    """Graphviz's `dot` is not installed: the only failure that installing it mends."""


def figure(result: CheckResult, rankdir: str = "TB") -> nx.DiGraph:
    """The presentation graph of a checked or failing spec (its AST must have parsed).

    Checked stages are drawn in full, one box per tower; a stage with an error is one red
    box holding the message; stages the passes did not reach are grey, ops only. Each stage
    has an edge from every stage it reads; a merge numbers them in the order it reads them
    (a Concat's channels), and a block instance's stages sit in a box that names it.
    """
    if result.ast is None or result.partial is None:
        raise ValueError("the spec did not parse; there is nothing to draw")
    net, ctx = result.ast, result.partial
    g = ctx.graph
    stages = stage_views(net, g, result.diagnostics)
    towers = ctx.towers
    name = net.name

    fig = nx.DiGraph()
    fig.graph.update(name=name, towers=towers, rows=[], ok=result.ok, dot={
        "rankdir": rankdir, "nodesep": "0.25", "ranksep": "0.4",
        "fontname": FONT, "fontsize": "11", "labelloc": "t", "labeljust": "c",
        "label": _title(result, name, towers), "bgcolor": "white", "pad": "0.2"})
    fig.graph["node_defaults"] = {"shape": "box", "style": "rounded,filled", "fontname": FONT,
                                  "fontsize": "11", "color": "#52606d", "fillcolor": "white",
                                  "fontcolor": INK, "margin": "0.12,0.06", "penwidth": "1.2"}
    fig.graph["edge_defaults"] = {"color": "#52606d", "arrowsize": "0.7", "fontname": FONT,
                                  "fontsize": "10", "penwidth": "1.1"}

    stray = [d for d in result.diagnostics if d.severity is Severity.ERROR
             and not any(d in s.errors for s in stages)]
    inp = ctx.input
    fig.add_node("input", kind="input", shape_text=str(inp) if inp else None, dot={
        "label": _box([[f"<B>input</B>  {_e(str(inp)) if inp else '?'}"]]),
        "fillcolor": "#f5f7fa"})
    if stray:  # errors outside any stage (headers, training settings) go beside the input
        fig.add_node("spec_errors", kind="errors", dot={
            "label": _box([[_bold("errors outside the stages", ERROR_INK)]]
                          + [[_message(d)] for d in stray]),
            "color": ERROR_INK, "fillcolor": ERROR_FILL, "penwidth": "2"})
        fig.add_edge("spec_errors", "input", dot={"style": "invis"})

    flats = [s.flat for s in stages]
    branching = branches(flats)
    places = structure(flats)
    clusters = _clusters(fig, stages, places)
    ports_of: dict[str, list[str]] = {INPUT: ["input"]}
    prev: list[str] = ["input"]
    last_tower: TowerInfo | None = None
    for i, stage in enumerate(stages):
        before = len(fig)
        ports = _add_stage(fig, stage, towers, last=i == len(stages) - 1, lines=branching)
        for n in list(fig)[before:]:
            fig.nodes[n]["cluster"] = clusters.get(stage.flat.notes)
        first = stage.nodes[0].get(Key.TOWER) if stage.nodes else None
        sources = stage.flat.sources
        for k, src in enumerate(sources):
            if src in ports_of:
                _connect(fig, ports_of[src], ports, first,
                         order=k + 1 if len(sources) > 1 else None)
        ports_of[stage.name] = prev = ports
        last_tower = stage.nodes[-1].get(Key.TOWER) if stage.nodes else None
    if result.ok and stages:
        out = stages[-1].shape
        gather = last_tower is not None and last_tower.reads == "gather" and len(prev) > 1
        where = (" (gathered on tower 1)" if gather else
                 f" (split over {len(prev)} towers)" if len(prev) > 1 else "")
        fig.add_node("output", kind="output", shape_text=str(out), dot={
            "label": _box([[f"<B>output</B>  {_e(str(out))}{where}"]]), "fillcolor": "#f5f7fa"})
        _connect(fig, prev, ["output"], last_tower if gather else None, gather=gather)
    return fig


def _clusters(fig: nx.DiGraph, stages: list[StageView],
              places: list[Structure]) -> dict[tuple[Note, ...], str]:
    """A cluster per block instance, labelled with its block, arguments and parameters
    (`fig.graph["clusters"]`: id → label and the cluster it sits in); the cluster id of each
    instance's notes, which its stages' notes are."""
    params = {s.name: s.params for s in stages}
    found: dict[tuple[Note, ...], str] = {}
    fig.graph["clusters"] = {}
    for place in places:
        for inst in place.instances:
            cid = found[inst.key] = f"cluster_{len(found) + 1}"
            counts = [params.get(s) for s in inst.stages]
            total = sum(c or 0 for c in counts) if None not in counts else None
            fig.graph["clusters"][cid] = {
                "instance": inst.name, "parent": found.get(inst.key[1:]), "params": total,
                "dot": {"label": Html(f"<B>{_e(inst.name)}</B>  {_e(inst.call)}"
                                      + (f" · {_n(total)} params" if total else "")),
                        "labeljust": "l", "style": "rounded,filled", "color": MUTED,
                        "fillcolor": BLOCK_FILL, "fontcolor": INK}}
    return found


def _merges(stage: StageView) -> bool:
    op = stage.nodes[0].get(Key.OP) if stage.nodes else None
    return op is not None and op.merge is not None


def _add_stage(fig: nx.DiGraph, stage: StageView, towers: int, last: bool,
               lines: bool = False) -> list[str]:
    """Add a stage's boxes; return the node ids the edges of the stages reading it leave
    from. `lines`: each op on a line of its own, which keeps branches side by side narrow."""
    name = stage.name
    nid = f"stage:{name}:{stage.ast.loc.line}"
    merge = _merges(stage)
    parts = stage.ops.split("; ")
    ops = "<BR/>".join(_e(p) for p in parts) if lines else _e(stage.ops)
    if merge:
        ops = f"<B>{ops}</B>"
    head = f"<B>{_e(name)}</B>" + ("<BR/>" if lines and len(parts) > 1 else "  ") + ops
    shape, params = stage.shape, stage.params
    facts = " · ".join(p for p in (_e(str(shape)) if shape else "",
                                   f"{_n(params)} params" if params else "") if p)
    notes = [[_message(d)] for d in stage.errors] + [[_message(d, WARN_INK)] for d in
                                                      stage.warnings]
    meta = {"stage": name, "shape_text": str(shape) if shape else None, "params": params,
            "merge": merge}

    if stage.errors or not stage.has(Key.SHAPE):
        failed = bool(stage.errors)
        rows = [[head]] + ([[facts]] if facts else []) + notes
        if not failed and not facts:
            rows.append([f'<FONT COLOR="{MUTED}">not checked: an earlier error stopped the '
                         "checker</FONT>"])
        fig.add_node(nid, kind="stage", tower=None, status="error" if failed else "unchecked",
                     **meta, dot={
            "label": _box(rows), "color": ERROR_INK if failed else MUTED,
            "fillcolor": ERROR_FILL if failed else "white", "penwidth": "2" if failed else "1",
            "style": "rounded,filled" if failed else "rounded,dashed",
            "fontcolor": INK if failed else MUTED})
        return [nid]

    fusions = [[f'<FONT COLOR="{FUSED_INK}">fused: {_e(k)}</FONT>', FUSED_FILL]
               for k in stage.fusions]
    if towers == 1 or not stage.has(Key.TOWER):
        fig.add_node(nid, kind="stage", tower=None, status="ok", **meta, dot={
            "label": _box([[head], [facts], *fusions, *notes]),
            **({"fillcolor": MERGE_FILL, "color": MERGE_INK, **MERGE_ORDER} if merge else
               {"fillcolor": TOWER_FILL[0]})})
        return [nid]

    # One box per tower. Maps crossing towers between stages are edges; those crossing
    # inside a stage (but for the final gather, drawn into the output) are a line of text.
    assert shape is not None
    end: TowerInfo = stage.nodes[-1][Key.TOWER]
    per = Shape(shape.h, shape.w, end.channels_per_tower, shape.flat)
    per_params = sum(n[Key.TOWER].params_per_tower for n in stage.nodes)
    # The edges into the stage carry only an all-gather of its first op's input (`_connect`).
    inner = [n[Key.TOWER] for i, n in enumerate(stage.nodes) if n[Key.TOWER].cross_bytes
             and not (i == 0 and n[Key.TOWER].reads == "all")
             and not (last and n is stage.nodes[-1] and n[Key.TOWER].reads == "gather")]
    extra = [[f'<FONT COLOR="{CROSS}">{t.route.value} inside the stage: '
              f"{t.cross_bytes:,} B per image</FONT>"] for t in inner]
    # The stage's name, ops and totals head its row of towers, beside them rather than
    # above, where the edges coming into the towers would cross the text.
    listed = "".join(f"<BR/>{_e(part)}" for part in parts)
    align = "RIGHT" if fig.graph["dot"]["rankdir"] == "TB" else "LEFT"
    fig.add_node(nid, kind="header", tower=None, status="ok", **meta, dot={
        "label": _box([[f"<B>{_e(name)}</B>{f'<B>{listed}</B>' if merge else listed}"], [facts],
                       *extra, *notes], align=align),
        "shape": "plain", "style": "solid"})
    ports = []
    for t in range(towers):
        tid = f"{nid}:t{t + 1}"
        fig.add_node(tid, kind="tower", tower=t + 1, status="ok", **{
            **meta, "shape_text": str(per), "params": per_params}, dot={
            "label": _box([[f"<B>tower {t + 1}</B>  {_e(str(per))}"],
                           *([[f"{_n(per_params)} params"]] if per_params else []),
                           *fusions]),
            "fillcolor": TOWER_FILL[t % len(TOWER_FILL)],
            **({"color": MERGE_INK, **MERGE_ORDER} if merge else {})})
        ports.append(tid)
    fig.graph["rows"].append([nid, *ports])  # header, tower 1, tower 2, ...: one rank, in order
    return ports


def _connect(fig: nx.DiGraph, src: list[str], dst: list[str], tower: TowerInfo | None,
             gather: bool = False, order: int | None = None) -> None:
    """Edges from a stage's boxes to those of a stage reading it; maps sent to another tower
    are red, dashed and labelled with their bytes per image (each edge's share of the layer's
    `cross_bytes`). `order`: which of a merge's inputs the edges bring."""
    if gather and tower is not None:  # the final softmax collects the logits on tower 1
        share = tower.cross_bytes // max(len(src) - 1, 1)
        for i, s in enumerate(src):
            _edge(fig, s, dst[0], share if i else 0, order)
        return
    if len(src) == len(dst) > 1 and tower is not None and tower.towers == len(src):
        if tower.reads != "all" or not tower.cross_bytes:
            for s, d in zip(src, dst, strict=True):
                _edge(fig, s, d, 0, order)
            return
        share = tower.cross_bytes // (len(src) * (len(src) - 1))
        for i, s in enumerate(src):
            for j, d in enumerate(dst):
                _edge(fig, s, d, share if i != j else 0, order)
        return
    for s in src:
        for d in dst:
            _edge(fig, s, d, 0, order)


def _edge(fig: nx.DiGraph, src: str, dst: str, cross: int, order: int | None = None) -> None:
    """One edge; a merge's input `order` is written at its head (`1, 2` where a merge reads
    the same stage twice)."""
    orders: tuple[int, ...] = ()
    if order is not None:
        known: dict[str, Any] = fig.edges[src, dst] if fig.has_edge(src, dst) else {}
        orders, cross = (*known.get("order", ()), order), cross + known.get("bytes", 0)
    dot: dict[str, str] = {}
    if cross:
        dot = {"style": "dashed", "color": CROSS, "fontcolor": CROSS, "penwidth": "1.4",
               "label": f" {cross:,} B ", "constraint": "true"}
    if orders:
        dot.update(headlabel=f" {', '.join(map(str, orders))} ", labelfontcolor=MERGE_INK)
    fig.add_edge(src, dst, kind="cross" if cross else "flow", bytes=cross, dot=dot,
                 **({"order": orders} if orders else {}))


def _title(result: CheckResult, name: str, towers: int) -> Html:
    lines = [f'<FONT POINT-SIZE="15"><B>{_e(name)}</B></FONT>']
    net = result.network
    if net is not None:
        total = net.total()
        facts = [f"{total.params:,} parameters", f"{total.neurons:,} neurons",
                 f"{total.macs:,} mult-adds per image"]
        lines.append(" · ".join(facts))
        if towers > 1:
            per = sum(layer.tower.params_per_tower for layer in net.layers())
            lines.append(f"{towers} towers (one per device), {per:,} parameters each · "
                         f'<FONT COLOR="{CROSS}">dashed red: maps sent between towers, '
                         f"{net.cross_tower_bytes():,} B per image in all (fp32)</FONT>")
    else:
        n = sum(d.severity is Severity.ERROR for d in result.diagnostics)
        lines.append(f'<FONT COLOR="{ERROR_INK}">{n} error{"s" if n != 1 else ""}: drawn as '
                     "far as the checker got</FONT>")
    return Html("<BR/>".join(lines) + '<BR/><FONT POINT-SIZE="4"> </FONT>')


def _box(rows: list[list[str]], align: str = "LEFT") -> Html:
    """An HTML table: one row per [text] or [text, background colour]."""
    cells = "".join(
        f'<TR><TD ALIGN="{align}" BALIGN="{align}"{f" BGCOLOR={_q(r[1])}" if len(r) > 1 else ""}>'
        f"{r[0]}</TD></TR>" for r in rows)
    return Html(f'<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="1" CELLPADDING="2">'
                f"{cells}</TABLE>")


def _message(d: Diagnostic, colour: str = ERROR_INK) -> str:
    """A diagnostic inside a box: `line N: message`, wrapped, and its hint below it."""
    lines = textwrap.wrap(f"line {d.loc.line}: {d.message}", WRAP)
    out = f'<FONT COLOR="{colour}"><B>{"<BR/>".join(_e(x) for x in lines)}</B>'
    if d.hint:
        out += '<BR/><FONT POINT-SIZE="10">' + "<BR/>".join(
            _e(x) for x in textwrap.wrap(f"hint: {d.hint}", WRAP)) + "</FONT>"
    return out + "</FONT>"


def _bold(text: str, colour: str) -> str:
    return f'<FONT COLOR="{colour}"><B>{_e(text)}</B></FONT>'


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _q(value: object) -> str:
    """A DOT attribute value: `<...>` for HTML labels, else a double-quoted string."""
    if isinstance(value, Html):
        return f"<{value}>"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _attrs(d: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_q(v)}" for k, v in d.items())


def to_dot(fig: nx.DiGraph) -> str:
    """DOT text for a presentation graph; each row (a stage's header and towers) one rank,
    each block instance a cluster."""
    gid = "".join(ch if ch.isalnum() else "_" for ch in fig.graph["name"]) or "network"
    out = [f"digraph {gid} {{", f"  graph [{_attrs(fig.graph['dot'])}];",
           f"  node [{_attrs(fig.graph['node_defaults'])}];",
           f"  edge [{_attrs(fig.graph['edge_defaults'])}];"]
    out += _cluster_body(fig, None, "  ")
    for a, b, d in fig.edges(data=True):
        attrs = f" [{_attrs(d['dot'])}]" if d["dot"] else ""
        out.append(f"  {_q(a)} -> {_q(b)}{attrs};")
    out.append("}")
    return "\n".join(out) + "\n"


def _cluster_body(fig: nx.DiGraph, cluster: str | None, indent: str) -> list[str]:
    """The nodes and rows of a cluster (None: the top level), then its clusters, nested."""
    out = [f"{indent}{_q(n)} [{_attrs(d['dot'])}];" for n, d in fig.nodes(data=True)
           if d.get("cluster") == cluster]
    for row in fig.graph["rows"]:  # invisible edges keep the row's order, left to right
        if fig.nodes[row[0]].get("cluster") == cluster:
            out.append(f"{indent}{{ rank=same; " + " -> ".join(map(_q, row))
                       + ' [style="invis"] }')
    for cid, c in fig.graph.get("clusters", {}).items():
        if c["parent"] == cluster:
            out += [f"{indent}subgraph {_q(cid)} {{", f"{indent}  graph [{_attrs(c['dot'])}];",
                    *_cluster_body(fig, cid, indent + "  "), f"{indent}}}"]
    return out


def draw(result: CheckResult, rankdir: str = "TB") -> str:
    """DOT text for a spec's check result (see `figure`)."""
    return to_dot(figure(result, rankdir))


def dot_program() -> str | None:
    """The path of Graphviz's `dot`, or None where Graphviz is not installed."""
    return shutil.which("dot")


def render(dot_text: str, path: str | Path, fmt: str, timeout: float = 60.0) -> None:
    """Run `dot -T<fmt>` on the text and write its picture to `path` atomically; raise
    RenderError with the first line of dot's complaint (its input's line numbers are the DOT
    text's). dot writes to a pipe, not the file: on a full disk it says only `gvwrite_no_z
    problem`, where writing here says that the disk is full (WriteFailed)."""
    exe = dot_program()
    if exe is None:
        raise NoGraphviz("Graphviz's `dot` program is not installed")
    cmd = [exe, f"-T{fmt}", *(["-Gdpi=144"] if fmt == "png" else [])]
    try:
        proc = subprocess.run(cmd, input=dot_text.encode(), capture_output=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RenderError(f"Graphviz's `dot -T{fmt}` took longer than {timeout:g} s") from None
    except OSError as e:
        raise RenderError(f"could not run Graphviz's `dot` ({exe}): {e.strerror}") from None
    if proc.returncode != 0:
        raise RenderError(f"Graphviz's `dot -T{fmt}` failed: "
                          f"{_first_error(proc.stderr) or f'exit status {proc.returncode}'}")
    write_bytes(path, proc.stdout)


def _first_error(stderr: bytes) -> str:
    """dot's first `Error:` line (warnings may come before it), else its first line."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines()
             if line.strip()]
    return next((line for line in lines if line.lower().startswith("error")),
                lines[0] if lines else "")
