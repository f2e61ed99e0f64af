"""Locations in the module's own source: the line a traced node was written on (from its
recorded stack), the line an exception was raised at, and the errors located there.

Every error of this format points into the user's Python file, as the other formats point
into theirs; frames inside torch or alexnetc are skipped.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from alexnetc.compiler.errors import SourceLoc, SpecError
from alexnetc.importers.source import MALFORMED, Source

_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')


def defined_at(obj: Any) -> tuple[str, int] | None:
    try:
        file = inspect.getsourcefile(obj)
        line = inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        return None
    return (file, max(line, 1)) if file else None


def _shown(file: str) -> str:
    """A file's name as messages give it: relative to the current folder when inside it."""
    rel = os.path.relpath(file)
    return file if rel.startswith("..") else rel


def _own_code(file: str) -> bool:
    """Whether a frame's file is the user's code, not torch's or alexnetc's, and readable."""
    import torch

    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    path = os.path.abspath(file)
    ours = {os.path.abspath(f) for name, m in list(sys.modules.items())
            if name.split(".")[0] == "alexnetc" and (f := getattr(m, "__file__", None))}
    return not path.startswith(torch_dir + os.sep) and path not in ours \
        and os.path.isfile(path)


def located(frame: tuple[str, int], words: Sequence[str] = ()) -> tuple[Source, SourceLoc]:
    """The source and location of `frame`'s line: under the first of `words` it holds, else
    the whole statement."""
    file, line = frame
    try:
        source = Source.read(file)
        source.path = _shown(file)
    except OSError:
        return nowhere(_shown(file), line)
    lines = source.lines
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    for word in words:
        pattern = rf"(?<!\w){re.escape(word)}\b" if word.isidentifier() else re.escape(word)
        m = re.search(pattern, text)
        if m:
            return source, source.loc(line, m.start() + 1, len(word))
    indent = len(text) - len(text.lstrip())
    return source, source.loc(line, indent + 1)


def nowhere(name: str, line: int = 1) -> tuple[Source, SourceLoc]:
    source = Source(name, "")
    return source, SourceLoc(name, line, 1, line, 1)


def _user_frame(frames: Sequence[tuple[str, int]]) -> tuple[str, int] | None:
    """The innermost frame in the user's own code."""
    return next((f for f in reversed(frames) if _own_code(f[0])), None)


def raised(e: BaseException) -> str:
    from alexnetc.cli.main import first_lines

    return f"{type(e).__name__}: {first_lines(str(e), 1)}"


def exception_error(e: BaseException, message: str, fallback: tuple[str, int] | None = None,
                     kind: str = MALFORMED, hint: str = "") -> SpecError:
    """An exception of the module's code as an error at its innermost line in that code."""
    frames = [(f.filename, f.lineno or 1) for f in traceback.extract_tb(e.__traceback__)]
    frame = _user_frame(frames) or fallback
    source, loc = located(frame) if frame else nowhere("<module>")
    return source.fail(kind, loc, message, hint)


def syntax_error(e: SyntaxError) -> SpecError:
    file, line = e.filename or "<module>", e.lineno or 1
    source, loc = located((file, line)) if os.path.isfile(file) else nowhere(file, line)
    if e.offset:
        one_line = e.end_lineno in (None, line) and e.end_offset
        width = max((e.end_offset or 0) - e.offset, 1) if one_line else 0
        loc = source.loc(line, e.offset, width)
    return source.fail(MALFORMED, loc, f"invalid Python: {e.msg}")


class Where:
    """Locations in the module's source: the line that calls each traced op, else the line
    that defines the module's forward."""

    def __init__(self, root: Any):
        self.root = root
        self.forward = defined_at(type(root).forward) or defined_at(type(root))
        self.name = type(root).__name__

    def of(self, node: Any) -> tuple[Source, SourceLoc]:
        frames = [(m["file"], int(m["line"])) for m in _FRAME.finditer(node.stack_trace or "")]
        frame = _user_frame(frames) or self.forward
        if frame is None:
            return nowhere(self.name)
        return located(frame, _words(node))

    def fail(self, node: Any, kind: str, message: str, hint: str = "") -> SpecError:
        source, loc = self.of(node) if node is not None else self.at_forward()
        return source.fail(kind, loc, message, hint)

    def at_forward(self) -> tuple[Source, SourceLoc]:
        return located(self.forward) if self.forward else nowhere(self.name)


def _words(node: Any) -> list[str]:
    """What the caret should underline on a node's line: the function, method or module."""
    if node.op == "call_module":
        return [p for p in reversed(str(node.target).split(".")) if p.isidentifier()]
    if node.op == "call_method":
        return [str(node.target)]
    if node.op != "call_function":
        return []
    name = qualified(node.target)
    return [SYMBOLS[name].strip("[]") or "["] if name in SYMBOLS else [name.split(".")[-1]]


# Python's operators as the module's code writes them.
SYMBOLS = {"operator.add": "+", "operator.iadd": "+=", "operator.sub": "-", "operator.mul": "*",
            "operator.imul": "*=", "operator.truediv": "/", "operator.matmul": "@",
            "operator.neg": "-", "operator.pow": "**", "operator.getitem": "[]"}


def qualified(target: Any) -> str:
    from torch.fx.node import _get_qualified_name

    try:
        name = _get_qualified_name(target)
    except Exception:
        name = getattr(target, "__name__", repr(target))
    return name.replace("_operator.", "operator.").replace("torch.nn.functional.", "F.")
