"""The checker's report: a table like Keras' summary (built from the spec alone), or JSON."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from alexnetc.compiler.errors import Diagnostic, Note
from alexnetc.compiler.expand import FlatStage
from alexnetc.compiler.graph import CheckedNetwork, Key, Layer, branches
from alexnetc.compiler.pipeline import CheckResult, collector_paused
from alexnetc.compiler.progress import stage_views
from alexnetc.compiler.registry import as_dict

READS = {"tower": "own", "all": "both", "gather": "gather"}


def _n(x: int) -> str:
    return f"{x:,}" if x else ""


def _tower(layer: Layer) -> str:
    t = layer.tower
    if t.towers == 1:
        return ""
    split = f"{t.towers}×{t.channels_per_tower}" if layer.op.splits_maps else ""
    reads = READS[t.reads] if t.reads != "tower" or split else ""
    moved = f"({t.cross_bytes:,} B)" if t.cross_bytes else ""
    return " ".join(p for p in (split, reads, moved) if p)


@dataclass(frozen=True)
class Instance:
    """A block instance, shown above its first stage: its flat name (`layer1.0`), its block
    with the values of its parameters as ops are written (`basic(64)`), what it reads (as
    `Structure.reads` writes it) and its flat stages in order (nested instances' too)."""

    key: tuple[Note, ...]  # the notes its stages' notes end with: one per instance
    name: str
    call: str
    reads: str
    stages: tuple[str, ...]


@dataclass(frozen=True)
class Structure:
    """A flat stage's place in the graph: the instances that start with it (outermost
    first) and what it reads, each stage named relative to its instance (`b, conv1` for
    `layer1.0.out`, which reads `layer1.0.b` and `conv1`) and the image as `input`."""

    instances: list[Instance]
    reads: str


def structure(stages: Sequence[FlatStage]) -> list[Structure]:
    """For each flat stage in order, the instances it starts and what it reads."""
    members: dict[tuple[Note, ...], list[str]] = {}
    for s in stages:
        for k in range(len(s.notes)):
            members.setdefault(s.notes[k:], []).append(s.name)
    seen: set[tuple[Note, ...]] = set()
    out = []
    for s in stages:
        names = [u.name for u in s.uses]  # innermost first
        started = []
        for k in reversed(range(len(s.notes))):
            key, found = s.notes[k:], s.uses[k]
            if key in seen:
                continue
            seen.add(key)
            outer = names[k + 1] if k + 1 < len(names) else None
            started.append(Instance(key, found.name, found.call,
                                    _reads(list(dict.fromkeys(s.sources)), outer),
                                    tuple(members[key])))
        out.append(Structure(started, _reads(s.sources, names[0] if names else None)))
    return out


def _instance_name(stage: FlatStage) -> str | None:
    """The (innermost) block instance a stage is in."""
    return stage.uses[0].name if stage.uses else None


def _reads(sources: Sequence[str], instance: str | None) -> str:
    """Flat stage names as seen from inside `instance`: its own stages by their names in
    the block."""
    prefix = f"{instance}." if instance else ""
    return ", ".join(s[len(prefix):] if prefix and s.startswith(prefix) else s
                     for s in sources)


@dataclass(frozen=True)
class TableLayout:
    """The report's table as plain strings, drawn by rich for a terminal and by `_plain_table`
    for a file or a pipe."""

    title: str
    columns: list[tuple[str, str, bool]]  # header, footer, right-justified
    rows: list[tuple[list[str], bool]]  # cells, last row of its stage
    towers_column: int | None


def _layout(net: CheckedNetwork) -> TableLayout:
    """One row per op, and above each block instance a row with its block and its totals;
    in a network that branches, each stage's first row says what it reads."""
    towers = net.towers > 1
    total = net.total()
    buffers = total.buffers > 0  # a column only for networks that hold any
    flats = net.flat_stages()
    reads = branches(flats)
    layers_of = dict(net.stages())
    rows: list[tuple[list[str], bool]] = []

    def counts(layers: Sequence[Layer]) -> list[str]:
        return [_n(sum(x.counts.params for x in layers)),
                *([_n(sum(x.counts.buffers for x in layers))] if buffers else []),
                _n(sum(x.counts.neurons for x in layers)), _n(sum(x.counts.macs for x in layers))]

    for flat, place in zip(flats, structure(flats), strict=True):
        for inst in place.instances:
            inside = [x for s in inst.stages for x in layers_of.get(s, [])]
            rows.append(([inst.name, *([inst.reads] if reads else []), f"block {inst.call}",
                          str(inside[-1].shape) if inside else "", *counts(inside),
                          *([""] if towers else []), ""], False))
        layers = layers_of.get(flat.name, [])
        head = [flat.name, *([place.reads] if reads else [])]
        for i, layer in enumerate(layers):
            row = [*(head if i == 0 else [""] * len(head)),
                   ("+ " if layer.call.joined else "") + layer.call.text(), str(layer.shape),
                   *counts([layer])]
            if towers:
                row.append(_tower(layer))
            row.append(layer.fusion.kernel if layer.fusion and layer.fusion.head == layer.id
                       else ("│" if layer.fusion else ""))
            rows.append((row, i == len(layers) - 1))
    columns = [("stage", "total", False), *([("reads", "", False)] if reads else []),
               ("op", "", False), ("output", str(net.output), True),
               ("params", f"{total.params:,}", True)]
    if buffers:
        columns.append(("buffers", f"{total.buffers:,}", True))
    columns += [("neurons", f"{total.neurons:,}", True), ("mult-adds", f"{total.macs:,}", True)]
    towers_column = None
    if towers:
        towers_column = len(columns)
        columns.append(("towers", f"{net.cross_tower_bytes():,} B cross", False))
    columns.append(("fused", "", False))
    title = f"{net.name}: input {net.input}" + (f", {net.towers} towers" if towers else "")
    return TableLayout(title, columns, rows, towers_column)


def table(net: CheckedNetwork) -> Table:
    """One row per op, the stage named on its first row, totals in the footer.

    Nothing is ever shown cut short (`123,…`), however narrow the console: the number
    columns never wrap nor shrink below their widest cell, the towers column (byte counts)
    may wrap between words but never shrinks below its longest word, and the other text
    columns wrap, folding a word wider than the column."""
    return draw(_layout(net))


def draw(layout: TableLayout) -> Table:
    """A laid-out table as rich draws it (see `table`)."""
    t = Table(title=layout.title, box=box.SIMPLE_HEAD, show_footer=True, title_justify="left")
    rows = layout.rows
    for index, (header, footer, right) in enumerate(layout.columns):
        if right:
            widest = max([len(header), len(footer), *(len(row[index]) for row, _ in rows)])
            t.add_column(header, footer=footer, justify="right", no_wrap=True, min_width=widest)
        elif index == layout.towers_column:
            words = [w for row, _ in rows for w in row[index].split()] + footer.split()
            t.add_column(header, footer=footer, min_width=max(len(w) for w in words))
        else:  # a word wider than the column (`inception3a.out`) folds rather than ends in …
            t.add_column(header, footer=footer, overflow="fold")
    for row, last in rows:
        t.add_row(*row, end_section=last)
    return t


# What `_plain_table` draws exactly as rich would: one column per character, and nothing rich
# reads as markup (`[tag]`) or an emoji code (`:name:`). Anything else goes through rich.
_PLAIN = re.compile(r"[ -~×│]*")
_MARKUP = re.compile(r"\[|:[^\s:]*:")


def _plain_table(layout: TableLayout) -> str | None:
    """The table as rich draws it on an unbounded console, without rich's per-cell rendering,
    which costs a millisecond a row (most of checking a long spec). None where rich would draw
    something else: text it would read as markup, or a title wider than the table, which it
    wraps."""
    texts = [layout.title, *(c for column in layout.columns for c in column[:2]),
             *(cell for row, _ in layout.rows for cell in row)]
    if any(not _PLAIN.fullmatch(s) or _MARKUP.search(s) for s in texts):
        return None
    widths = [max([len(header), len(footer), *(len(row[index]) for row, _ in layout.rows)])
              for index, (header, footer, _) in enumerate(layout.columns)]
    if len(layout.title) > sum(widths) + 3 * len(widths) + 1:
        return None

    def line(cells: list[str]) -> str:
        return "  " + "   ".join(
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, (_, _, right) in zip(cells, widths, layout.columns, strict=True)
        ).rstrip() + "\n"

    out = [layout.title + "\n", "\n", line([h for h, _, _ in layout.columns]),
           " " + "─" * (sum(widths) + 3 * len(widths) - 1) + "\n"]
    for index, (row, last) in enumerate(layout.rows):
        out.append(line(row))
        if last and index < len(layout.rows) - 1:
            out.append("\n")
    out += ["\n", line([f for _, f, _ in layout.columns]), "\n"]
    return "".join(out)


def partial_table(result: CheckResult) -> Table | None:
    """The table of a spec with errors, as far as the checker got: every op as written, the
    shape computed before an error stopped the passes (`?` after it; counts need every shape,
    so there are none), and each stage marked where an error (printed below the table) falls
    inside it.  None when the spec did not parse or has no input to start from."""
    ctx = result.partial
    if result.ast is None or ctx is None or ctx.input is None:
        return None
    t = Table(title=f"{result.ast.name}: input {ctx.input}", box=box.SIMPLE_HEAD,
              title_justify="left")
    views = stage_views(result.ast, ctx.graph, result.diagnostics)
    flats = [v.flat for v in views]
    reads = branches(flats)
    t.add_column("stage")
    if reads:
        t.add_column("reads")
    t.add_column("op")
    t.add_column("output", justify="right", no_wrap=True)
    t.add_column("status")
    shape_of = {v.name: v.shape for v in views}
    for stage, place in zip(views, structure(flats), strict=True):
        for inst in place.instances:
            shape = shape_of.get(inst.stages[-1])
            t.add_row(inst.name, *([inst.reads] if reads else []), f"block {inst.call}",
                      str(shape) if shape else "?", "")
        node_of = {id(n[Key.CALL]): n for n in stage.nodes}
        status = ("error (below)" if stage.errors else "" if stage.has(Key.SHAPE)
                  else "not reached")
        for i, call in enumerate(stage.calls):
            shape = node_of.get(id(call), {}).get(Key.SHAPE)
            last = i == len(stage.calls) - 1
            head = [stage.name, *([place.reads] if reads else [])]
            t.add_row(*(head if i == 0 else [""] * len(head)),
                      ("+ " if call.joined else "") + call.text(), str(shape) if shape else "?",
                      status if last else "", end_section=last)
    return t


def summary_lines(net: CheckedNetwork) -> list[str]:
    """Facts under the table: memory and, with towers, what each device holds and sends."""
    total = net.total()
    lines = [f"activations: {total.activation_bytes / 2**20:.2f} MiB per image (fp32, every op's "
             f"output); parameters: {total.params * 4 / 2**20:.1f} MiB (fp32)"
             + (f"; {total.buffers:,} buffer values (running statistics, saved with the "
                "weights, not counted as parameters)" if total.buffers else "")]
    if net.towers > 1:
        per = sum(layer.tower.params_per_tower for layer in net.layers())
        act = sum(layer.tower.activation_bytes_per_tower for layer in net.layers())
        lines.append(f"each of {net.towers} towers: {per:,} parameters, "
                     f"{act / 2**20:.2f} MiB of activations per image; "
                     f"{net.cross_tower_bytes():,} bytes cross between towers per image "
                     f"(forward), at " + ", ".join(dict.fromkeys(
                         layer.stage for layer in net.layers() if layer.tower.cross_bytes)))
    return lines


def print_report(net: CheckedNetwork, console: Console) -> None:
    """The table and the facts under it, fitted to the console's width (for a terminal)."""
    print_layout(_layout(net), summary_lines(net), console)


def print_layout(layout: TableLayout, lines: Sequence[str], console: Console) -> None:
    """A laid-out table and the lines under it on a console (a terminal's width)."""
    console.print(draw(layout))
    for line in lines:
        console.print(line, highlight=False)


def plain_console(buf: io.StringIO) -> Console:
    """A console for a file or a pipe, where no width applies: tables as wide as their widest
    row, so no cell is wrapped or cut (strip the padding with `unpadded`)."""
    return Console(file=buf, width=1_000_000, highlight=False, color_system=None,
                   force_terminal=False)


def unpadded(text: str) -> str:
    """Lines without the trailing spaces rich pads them with."""
    return "".join(line.rstrip() + "\n" for line in text.splitlines())


def report_text(net: CheckedNetwork) -> str:
    """The report for a file or a pipe: every cell whole, no line ending in spaces."""
    with collector_paused():
        return layout_text(_layout(net), summary_lines(net))


def layout_text(layout: TableLayout, lines: Sequence[str] = ()) -> str:
    """A laid-out table and the lines under it, for a file or a pipe."""
    plain = _plain_table(layout)
    if plain is None:
        buf = io.StringIO()
        plain_console(buf).print(draw(layout))
        plain = unpadded(buf.getvalue())
    return plain + "".join(
        unpadded(line) if _PLAIN.fullmatch(line) and not _MARKUP.search(line)
        else _rich_line(line) for line in lines)


def _rich_line(line: str) -> str:
    buf = io.StringIO()
    plain_console(buf).print(line, highlight=False)
    return unpadded(buf.getvalue())


def as_json(net: CheckedNetwork | None, diagnostics: list[Diagnostic],
            recipe: dict[str, Any] | None) -> dict[str, Any]:
    """The report as plain data: the same numbers as the table, plus diagnostics."""
    out: dict[str, Any] = {
        "ok": net is not None,
        "diagnostics": [d.as_dict() for d in diagnostics],
    }
    if net is None:
        return out
    total = net.total()
    out.update({
        "network": net.name,
        "input": list(net.input.dims()),
        "towers": net.towers,
        "layers": [{
            "id": layer.id, "stage": layer.stage, "inputs": list(layer.inputs),
            "op": layer.op.name, "text": layer.call.text(),
            "args": as_dict(layer.args), "output": list(layer.shape.dims()),
            "params": layer.counts.params, "weights": layer.counts.weights,
            "biases": layer.counts.biases, "buffers": layer.counts.buffers,
            "neurons": layer.counts.neurons,
            "macs": layer.counts.macs, "activation_bytes": layer.counts.activation_bytes,
            "train_macs": layer.counts.train_macs,
            "receptive_field": [layer.field.h, layer.field.w],
            "effective_stride": [layer.field.stride_h, layer.field.stride_w],
            "center_offset": [_number(layer.field.offset_h), _number(layer.field.offset_w)],
            "tower": {"channels_per_tower": layer.tower.channels_per_tower,
                      "reads": layer.tower.reads, "cross_bytes": layer.tower.cross_bytes,
                      "params_per_tower": layer.tower.params_per_tower},
            "fusion": layer.fusion.kernel if layer.fusion else None,
            "line": layer.call.loc.line, "col": layer.call.loc.col,
        } for layer in net.layers()],
        "stages": _stages_json(net),
        "total": {"params": total.params, "weights": total.weights, "biases": total.biases,
                  "buffers": total.buffers,
                  "neurons": total.neurons, "macs": total.macs, "train_macs": total.train_macs,
                  "activation_bytes": total.activation_bytes,
                  "cross_tower_bytes": net.cross_tower_bytes()},
        "recipe": recipe,
    })
    return out


def _stages_json(net: CheckedNetwork) -> list[dict[str, Any]]:
    """The graph of stages: what each reads (flat stage names, or `input`), its output and
    parameters, and the block instance it is a stage of (None at the top level)."""
    layers_of = dict(net.stages())
    out = []
    for flat in net.flat_stages():
        layers = layers_of.get(flat.name, [])
        out.append({"name": flat.name, "reads": list(flat.sources),
                    "output": list(layers[-1].shape.dims()) if layers else None,
                    "params": sum(x.counts.params for x in layers), "block": flat.block,
                    "instance": _instance_name(flat)})
    return out


def _number(x: float) -> int | float:
    """A centre offset as written: 5, or 5.5 for an even field."""
    return int(x) if float(x).is_integer() else x


def _pair(h: float, w: float) -> str:
    return f"{_number(h)}x{_number(w)}"


CSV_COLUMNS = ("stage", "reads", "op", "output", "params", "buffers", "neurons", "macs",
               "train_macs", "receptive_field", "effective_stride", "center_offset", "towers",
               "fused")


def as_csv(net: CheckedNetwork, extra_columns: Sequence[str] = (),
           extra: Callable[[Layer], Sequence[object]] = lambda layer: ()) -> str:
    """The whole table as CSV, one row per op with its stage named on each (for a spreadsheet,
    which cannot read the table's blank cells as 'same as above'): plain integers, HxW
    pairs, and the fused kernel on every member of its chain; `extra` gives each row's cells
    of `extra_columns` (the memory plan's)."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow([*CSV_COLUMNS, *extra_columns])
    # whole flat names: the CSV has no block-instance rows to read a relative name against
    reads = {flat.name: ", ".join(flat.sources) for flat in net.flat_stages()}
    for layer in net.layers():
        c, f = layer.counts, layer.field
        out.writerow([layer.stage, reads.get(layer.stage, ""),
                      ("+ " if layer.call.joined else "") + layer.call.text(), str(layer.shape),
                      c.params, c.buffers, c.neurons, c.macs, c.train_macs, _pair(f.h, f.w),
                      _pair(f.stride_h, f.stride_w), _pair(f.offset_h, f.offset_w),
                      _tower(layer), layer.fusion.kernel if layer.fusion else "",
                      *extra(layer)])
    return buf.getvalue()
