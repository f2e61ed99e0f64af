"""`alexnetc`: the command-line entry point.

`alexnetc SPEC --check-shapes` is the instant feedback loop, so this module and the check
path import neither torch nor the backends; each subcommand imports what it needs when run.
Exit codes: 0 clean, 1 spec errors (or a failed run), 2 usage errors. A path the user named
that does not exist is a usage error (UsageError); a file that exists but cannot be used fails
the run (RunError); cli.common.run_errors applies that rule to the backends' exceptions.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import os
import re
import sys
from collections.abc import Sequence
from types import ModuleType

from alexnetc import __version__
from alexnetc.compiler.errors import SpecError

# Subcommands, each a module in alexnetc.cli with `register(subparsers)`.
COMMANDS = ("check", "compile", "train", "eval", "predict", "plot", "graph", "import", "prepare")
# A command whose module has another name (`import` is a Python keyword).
MODULES = {"import": "importing"}


Subparsers = argparse._SubParsersAction  # what each command's register() receives


class UsageError(Exception):
    """Bad command-line use: exit 2 with a one-line message. This includes a path the user
    named that does not exist (a spec, a run folder, an image, an output folder)."""


class RunError(Exception):
    """A run that cannot go on: exit 1 with a one-line message. This includes a file that
    exists but cannot be used (unreadable, corrupt, from another spec)."""


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
        return importlib.import_module(f"alexnetc.cli.{MODULES.get(name, name)}")
    except ModuleNotFoundError as e:
        if e.name == f"alexnetc.cli.{MODULES.get(name, name)}":
            return None
        raise


def _normalise(argv: list[str]) -> list[str]:
    """`alexnetc SPEC --check-shapes [...]` → `alexnetc check SPEC [...]`.

    A first word that is no file but close to a command's name (`trian`) is a mistyped
    command, not a spec: a UsageError that says which command it resembles."""
    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        word = argv[0]
        if ("--check-shapes" not in argv and not os.path.exists(word)
                and re.fullmatch(r"[A-Za-z][A-Za-z-]*", word)):
            close = difflib.get_close_matches(word.lower(), COMMANDS, n=1, cutoff=0.6)
            if close:
                raise UsageError(f"unknown command '{word}' (did you mean '{close[0]}'?)")
        return ["check", *[a for a in argv if a != "--check-shapes"]]
    if argv and argv[0].startswith("-") and "--check-shapes" in argv:
        return ["check", *[a for a in argv if a != "--check-shapes"]]
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        normalised = _normalise(args_in)
    except UsageError as e:
        parser.print_usage(sys.stderr)
        print(f"alexnetc: error: {e}", file=sys.stderr)
        return 2
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
    except RunError as e:
        print(f"alexnetc: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("alexnetc: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:  # a bug in alexnetc: say so in one line, not a traceback
        if os.environ.get("ALEXNETC_DEBUG"):
            raise
        memory = out_of_memory(e)
        if memory is not None:
            print(f"alexnetc: error: {memory}", file=sys.stderr)
            return 1
        print(f"alexnetc: internal error: {type(e).__name__}: {first_lines(str(e))}\n"
              "  this is a bug in alexnetc; rerun with ALEXNETC_DEBUG=1 for the traceback",
              file=sys.stderr)
        return 1


# Where torch (c10) starts appending its C++ backtrace to an exception's message.
_BACKTRACE = re.compile(r"^(Exception raised from |frame #\d+:|C\+\+ CapturedTraceback:|"
                        r"Traceback \(most recent call last\))")


def first_lines(message: str, most: int = 3) -> str:
    """The meaningful head of an exception's message: no C++ backtrace (torch appends
    `Exception raised from … frame #0: c10::Error::Error…`), no blank lines, at most `most`
    lines (a `…` marks the cut)."""
    lines = []
    for line in message.splitlines():
        if _BACKTRACE.match(line.strip()):
            break
        if line.strip():
            lines.append(line.rstrip())
    if not lines:
        return "(no message)"
    return "\n  ".join(lines[:most]) + (" …" if len(lines) > most else "")


_ALLOCATED = re.compile(r"[Tt]ried to allocate (\d+(?:\.\d+)? ?[KMGTP]i?B|(\d+) bytes)")
_GPU_OOM = re.compile(r"\b(CUDA|HIP|MPS|XPU)\b.*out of memory")
_CPU_OOM = re.compile(r"can't allocate memory|not enough memory|DefaultCPUAllocator|"
                      r"Cannot allocate memory|out of memory")


def out_of_memory(e: BaseException) -> str | None:
    """A one-line message when `e` is running out of memory, which is no bug in alexnetc;
    otherwise None. Tells GPU from main memory without importing torch (OutOfMemoryError is
    torch's; the CPU allocator raises a plain RuntimeError)."""
    text = str(e)
    runtime = isinstance(e, RuntimeError)
    gpu = type(e).__name__ == "OutOfMemoryError" or (runtime and bool(_GPU_OOM.search(text)))
    cpu = isinstance(e, MemoryError) or (runtime and bool(_CPU_OOM.search(text)))
    if not gpu and not cpu:
        return None
    size = _ALLOCATED.search(text)
    amount = ("" if size is None else size.group(1) if size.group(2) is None
              else _bytes(int(size.group(2))))
    return (f"out of {'GPU' if gpu else 'main'} memory"
            + (f" (tried to allocate {amount})" if amount else "")
            + "; use a smaller --batch-size or a smaller network (fewer or narrower layers, "
            "a smaller input)" + (", or another --devices" if gpu else ""))


def _bytes(n: int) -> str:
    """1536 → `1.50 KiB`."""
    value, unit = float(n), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024 or unit == "EiB":
            break
        value /= 1024
    return f"{n} B" if unit == "B" else f"{value:.2f} {unit}"
