"""`alexnetc graph SPEC -o FILE.svg|png|pdf|dot`: draw the network as the paper's Figure 2.

A spec with errors is drawn as far as it checked, its failing stage red, and exits 1 after
writing the picture. Without Graphviz's `dot` program an .svg/.png/.pdf cannot be made: the
command writes the DOT text to FILE.dot instead, prints the `dot` command that renders it,
and exits 1, so a script that asked for a picture never mistakes the fallback for one. Where
`dot` is installed but fails, its own first error line is the message (exit 1).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from alexnetc.atomic import WriteFailed, same_file, write_text
from alexnetc.cli.common import output_file, read_spec
from alexnetc.cli.main import RunError, UsageError
from alexnetc.compiler.errors import Severity
from alexnetc.compiler.pipeline import check_bytes

# What `-o` may end in: Graphviz output formats, or DOT text itself (.dot, .gv). The drawing
# module is imported only when the command runs, keeping `alexnetc SPEC --check-shapes` quick.
FORMATS = ("svg", "png", "pdf", "dot", "gv")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "graph", help="draw the network: stages, branches, towers and cross-tower traffic",
        description="Draw a spec as the paper's Figure 2: a box per stage (per tower), its "
        "output size and parameters, an edge from each stage it reads (a merge's numbered in "
        "the order it reads them), each block instance framed, the edges that cross towers "
        "labelled with bytes per image. "
        "Needs Graphviz's `dot` for .svg/.png/.pdf; .dot writes the Graphviz text.")
    p.add_argument("spec", help="the .net file ('-' for standard input)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help=f"the picture to write: {', '.join('.' + f for f in FORMATS)} "
                   "('-' writes DOT text to standard output)")
    p.add_argument("--rankdir", choices=("TB", "LR"), default="TB",
                   help="TB: stages top to bottom, towers side by side (default); "
                   "LR: stages left to right, towers stacked, as in the paper")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alexnetc.compiler.draw import NoGraphviz, RenderError, draw, render

    out = args.output
    fmt = "dot" if out == "-" else Path(out).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise UsageError(f"cannot tell the picture format from '{out}': end it in "
                         + ", ".join("." + f for f in FORMATS))
    if out != "-":
        output_file(out, [("the spec", args.spec)])
    name, data = read_spec(args.spec)
    result = check_bytes(data, name)
    for d in result.diagnostics:
        print(d.render(result.source), file=sys.stderr if d.severity is Severity.ERROR
              else sys.stdout)
    n_err = sum(d.severity is Severity.ERROR for d in result.diagnostics)
    if result.ast is None:
        print(f"{n_err} error{'s' if n_err != 1 else ''} in {name}; the spec did not parse, so "
              "there is nothing to draw", file=sys.stderr)
        return 1
    text = draw(result, args.rankdir)
    status = 1 if n_err else 0
    if n_err:
        print(f"{n_err} error{'s' if n_err != 1 else ''} in {name}; drawing what checked, the "
              "failing stage in red", file=sys.stderr)
    if out == "-":
        sys.stdout.write(text)
        return status
    try:
        if fmt in ("dot", "gv"):
            write_text(out, text)
        else:
            render(text, out, fmt)
    except NoGraphviz as e:
        return _without_graphviz(e, text, out, fmt, args.spec)
    except RenderError as e:
        print(f"alexnetc: error: {e}\n  nothing was written to {out}; `-o "
              f"{Path(out).with_suffix('.dot')}` writes the DOT text instead, without `dot` "
              "(the line numbers in dot's message count that text's lines)", file=sys.stderr)
        return 1
    except WriteFailed as e:
        raise RunError(str(e)) from None
    print(f"wrote {out}")
    return status


def _without_graphviz(e: Exception, text: str, out: str, fmt: str, spec: str) -> int:
    """Write the DOT text beside the picture asked for, and say how to render it: exit 1, so
    a script that asked for a picture never mistakes the fallback for one."""
    fallback = Path(out).with_suffix(".dot")
    if same_file(fallback, spec):
        raise RunError(f"{e}; install Graphviz to draw {out}")
    try:
        write_text(fallback, text)
    except WriteFailed as failed:
        raise RunError(f"{e}, and {failed}") from None
    cmd = shlex.join(["dot", f"-T{fmt}", str(fallback), "-o", out])
    print(f"alexnetc: {e}; wrote {fallback} instead. Render it with\n  {cmd}\n"
          "after installing Graphviz (e.g. `apt-get install graphviz` or "
          "`brew install graphviz`)", file=sys.stderr)
    return 1
