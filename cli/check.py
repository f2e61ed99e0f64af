"""`alexnetc check SPEC` (= `alexnetc SPEC --check-shapes`): the table, warnings and errors."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
from pathlib import Path

from rich.console import Console

from alexnetc.atomic import WriteFailed, write_text
from alexnetc.cli.common import output_file, read_spec
from alexnetc.cli.main import RunError, Subparsers
from alexnetc.compiler.errors import Severity
from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.memory import report as memory
from alexnetc.compiler.memory.plan import MemoryPlan
from alexnetc.compiler.memory.report import Request, parse_size, plans
from alexnetc.compiler.pipeline import CheckResult, check_bytes
from alexnetc.compiler.records import INT32_MAX, LIMIT_TEXT
from alexnetc.compiler.report import (
    TableLayout,
    as_csv,
    as_json,
    layout_text,
    partial_table,
    plain_console,
    print_layout,
    print_report,
    report_text,
    unpadded,
)


def register(sub: Subparsers) -> None:
    p = sub.add_parser("check", help="check a spec: shapes, counts, towers, fusion plan",
                       description="Check a spec and print its layer table.")
    p.add_argument("spec", help="the .net file ('-' for standard input)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print the report as JSON")
    out.add_argument("--csv", nargs="?", const="-", metavar="FILE",
                     help="write the whole table as CSV (with receptive fields and training "
                     "multiply-adds) to FILE, or print it without FILE")
    p.add_argument("-q", "--quiet", action="store_true", help="print only diagnostics")
    mem = p.add_argument_group(
        "memory", "what a training step holds per layer and per device (weights, gradients, "
        "momentum, activations kept for backward, the peak), on one device and, with towers, "
        "one device per tower; any of these options asks for it")
    mem.add_argument("--batch", type=_positive, metavar="N",
                     help="images per step (default: the spec's training batch)")
    mem.add_argument("--amp", choices=["bf16"], help="bf16 mixed precision, as train --amp")
    mem.add_argument("--device-memory", metavar="SIZE", type=_size,
                     help="each device's memory, e.g. 3GiB: whether the batch fits, and the "
                     "largest batch that does")
    mem.add_argument("--device", choices=["cuda", "cpu"],
                     help="what the step runs on (default cuda: fused chains as the Triton "
                     "kernel; cpu: the reference ops, and dropout's noise tensor)")
    p.set_defaults(func=run)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= INT32_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is not a batch size (a whole number from 1 "
                                         f"to {LIMIT_TEXT})")
    return n


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _request(args: argparse.Namespace, result: CheckResult) -> Request | None:
    """The memory question asked, if any; the batch defaults to the spec's recipe's."""
    if args.batch is None and args.amp is None and args.device_memory is None \
            and args.device is None:
        return None
    batch = args.batch or (result.recipe.train.batch if result.recipe else 1)
    return Request(batch, args.amp or "fp32", args.device or "cuda", args.device_memory)


def run(args: argparse.Namespace) -> int:
    target = None if args.csv in (None, "-") else output_file(
        args.csv, [("the spec", args.spec)] if args.spec != "-" else [], flag="--csv")
    name, data = read_spec(args.spec)
    result = check_bytes(data, name)
    req = _request(args, result)
    shown = not args.quiet or args.json or args.csv is not None  # -q prints diagnostics alone
    found = plans(result.network, req) if req and result.network and shown else None
    if args.csv is not None:
        return _write_csv(result, args.csv, target, name, args.quiet, found, req)
    if args.json:
        recipe = result.recipe.as_dict() if result.recipe else None
        report = as_json(result.network, result.diagnostics, recipe)
        if found and req and result.network:
            report["memory"] = memory.as_json(result.network, found, req)
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0 if result.ok else 1
    if not args.quiet:
        _print_table(result)
        if found and req and result.network:
            _print_memory(result.network, found, req)
    for d in result.diagnostics:
        print(d.render(result.source), file=sys.stderr if d.severity is Severity.ERROR
              else sys.stdout)
    n_err = sum(d.severity is Severity.ERROR for d in result.diagnostics)
    if n_err:
        print(f"{n_err} error{'s' if n_err > 1 else ''} in {name}", file=sys.stderr)
    return 1 if n_err else 0


def _print_table(result: CheckResult) -> None:
    """The report, or for a spec with errors the table as far as the checker got: fitted to a
    terminal's width (text columns wrap, numbers never do), whole in a file or a pipe."""
    if result.network is not None and not sys.stdout.isatty():
        sys.stdout.write(report_text(result.network))
        return
    if result.network is not None:
        print_report(result.network, _terminal())
        return
    partial = partial_table(result)
    if partial is None:
        return
    if sys.stdout.isatty():
        Console(highlight=False).print(partial)
    else:
        buf = io.StringIO()
        plain_console(buf).print(partial)
        sys.stdout.write(unpadded(buf.getvalue()))


def _print_memory(net: CheckedNetwork, found: list[tuple[str, MemoryPlan]],
                  req: Request) -> None:
    columns, rows = memory.table_rows(net, found, req)
    layout = TableLayout(f"{net.name}: memory per layer, batch {req.batch:,}", columns, rows,
                         None)
    lines = memory.summary(net, found, req)
    if sys.stdout.isatty():
        print_layout(layout, lines, _terminal())
    else:
        sys.stdout.write("\n" + layout_text(layout, lines))


def _terminal() -> Console:
    """A console as wide as the terminal, and at least 132 columns (numbers never wrap)."""
    return Console(highlight=False, width=max(shutil.get_terminal_size((132, 24)).columns, 132))


def _write_csv(result: CheckResult, out: str, target: Path | None, name: str, quiet: bool,
               found: list[tuple[str, MemoryPlan]] | None, req: Request | None) -> int:
    """The CSV on stdout (diagnostics then go to stderr, to keep it clean) or in a file; for a
    spec with errors, only the diagnostics, and nothing written."""
    to_stdout = out == "-"
    for d in result.diagnostics:
        print(d.render(result.source), file=sys.stderr if to_stdout
              or d.severity is Severity.ERROR else sys.stdout)
    if result.network is None:
        n_err = sum(d.severity is Severity.ERROR for d in result.diagnostics)
        print(f"{n_err} error{'s' if n_err > 1 else ''} in {name}"
              + ("" if to_stdout else f"; nothing was written to {out}"), file=sys.stderr)
        return 1
    if found and req:
        batch = req.batch
        text = as_csv(result.network, memory.csv_columns(found),
                      lambda layer: memory.csv_cells(layer.id, found, batch))
    else:
        text = as_csv(result.network)
    if target is None:
        sys.stdout.write(text)
        return 0
    try:
        write_text(target, text)
    except WriteFailed as e:
        raise RunError(str(e)) from None
    if not quiet:
        print(f"wrote {out}")
    return 0
