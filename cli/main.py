"""`alexnetc`: the command-line entry point.

`alexnetc SPEC --check-shapes` is the instant feedback loop, so this module and the check
path import neither torch nor the backends; each subcommand imports what it needs when run.
Exit codes: 0 clean, 1 spec errors (or a failed run), 2 usage errors.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from alexnetc import __version__
from alexnetc.compiler.errors import SpecError

# Subcommands, each a module in alexnetc.cli with `register(subparsers)`.
COMMANDS = ("check", "compile", "train", "eval", "predict", "plot", "graph")


Subparsers = argparse._SubParsersAction  # what each command's register() receives


class UsageError(Exception):
    """Bad command-line use: exit 2 with a one-line message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="alexnetc",
        description="Compile AlexNet-family network specs: check shapes and counts, lower to "
        "PyTorch, train with the paper's recipe.",
        epilog="`alexnetc SPEC --check-shapes` is short for `alexnetc check SPEC`.",
    )
    parser.add_argument("--version", action="version", version=f"alexnetc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        module = _command_module(name)
        if module is not None:
            module.register(sub)
    return parser


def _command_module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"alexnetc.cli.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"alexnetc.cli.{name}":
            return None
        raise


def _normalise(argv: list[str]) -> list[str]:
    """`alexnetc SPEC --check-shapes [...]` → `alexnetc check SPEC [...]`."""
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        return ["check", *[a for a in argv if a != "--check-shapes"]]
    if argv and argv[0].startswith("-") and "--check-shapes" in argv:
        return ["check", *[a for a in argv if a != "--check-shapes"]]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    normalised = _normalise(args_in)
    args = parser.parse_args(normalised)
    args.argv = normalised  # what a command that re-launches itself (train --nproc) passes on
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except SpecError as e:
        print(e, file=sys.stderr)
        n = len([d for d in e.diagnostics if d.severity.value == "error"])
        print(f"{n} error{'s' if n != 1 else ''}; nothing was run", file=sys.stderr)
        return 1
    except UsageError as e:
        print(f"alexnetc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alexnetc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:  # a bug in alexnetc: say so in one line, not a traceback
        if os.environ.get("ALEXNETC_DEBUG"):
            raise
        print(f"alexnetc: internal error: {type(e).__name__}: {e}\n"
              "  this is a bug in alexnetc; rerun with ALEXNETC_DEBUG=1 for the traceback",
              file=sys.stderr)
        return 1
