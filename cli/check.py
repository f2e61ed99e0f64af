"""`alexnetc check SPEC` (= `alexnetc SPEC --check-shapes`): the table, warnings and errors."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys

from rich.console import Console

from alexnetc.cli.common import read_spec
from alexnetc.cli.main import Subparsers
from alexnetc.compiler.errors import Severity
from alexnetc.compiler.pipeline import CheckResult, check_bytes
from alexnetc.compiler.report import (
    as_json,
    partial_table,
    plain_console,
    print_report,
    report_text,
    unpadded,
)


def register(sub: Subparsers) -> None:
    p = sub.add_parser("check", help="check a spec: shapes, counts, towers, fusion plan",
                       description="Check a spec and print its layer table.")
    p.add_argument("spec", help="the .net file ('-' for standard input)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-q", "--quiet", action="store_true", help="print only diagnostics")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    name, data = read_spec(args.spec)
    result = check_bytes(data, name)
    if args.json:
        recipe = result.recipe.as_dict() if result.recipe else None
        json.dump(as_json(result.network, result.diagnostics, recipe), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0 if result.ok else 1
    if not args.quiet:
        _print_table(result)
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
        width = max(shutil.get_terminal_size((132, 24)).columns, 132)
        print_report(result.network, Console(highlight=False, width=width))
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
