"""One diagnostic type for every stage, so the CLI renders them all the same way.

Every problem a user can cause is a `Diagnostic` with a location, a message and a hint; the
passes collect them instead of stopping at the first, and `SpecError` carries a list of them
out of the pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from enum import Enum


@dataclass(frozen=True, order=True)
class SourceLoc:
    """Where a piece of the spec came from (1-based line and column; end is exclusive)."""

    file: str
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class Note:
    """A second location a diagnostic needs, such as the line that instantiated the block
    whose line is in error."""

    loc: SourceLoc
    message: str


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Diagnostic:
    """A located message; `kind` names the error class for tests and JSON output."""

    kind: str
    loc: SourceLoc
    message: str
    hint: str = ""
    severity: Severity = Severity.ERROR
    notes: tuple[Note, ...] = ()

    def render(self, source: str | None) -> str:
        """`file:line:col: error: message`, the source line, a caret, and the hint; then each
        note the same way (`file:line:col: note: …`)."""
        lines = [f"{self.loc}: {self.severity.value}: {self.message}", *_quote(source, self.loc)]
        if self.hint:
            lines.append(f"  hint: {self.hint}")
        for note in self.notes:
            lines += [f"{note.loc}: note: {note.message}", *_quote(source, note.loc)]
        return "\n".join(lines)

    def as_dict(self) -> dict[str, object]:
        return {
            "severity": self.severity.value,
            "kind": self.kind,
            "file": self.loc.file,
            "line": self.loc.line,
            "col": self.loc.col,
            "end_line": self.loc.end_line,
            "end_col": self.loc.end_col,
            "message": self.message,
            "hint": self.hint,
            "notes": [{"file": n.loc.file, "line": n.loc.line, "col": n.loc.col,
                       "message": n.message} for n in self.notes],
        }


def _quote(source: str | None, loc: SourceLoc) -> list[str]:
    """The source line at `loc` and a caret under the located text (nothing if unknown)."""
    text_line = _source_line(source, loc.line)
    if text_line is None:
        return []
    shown = text_line.expandtabs(1)
    start = max(loc.col - 1, 0)
    if loc.end_line == loc.line and loc.end_col > loc.col:
        width = loc.end_col - loc.col
    else:
        width = max(len(shown.rstrip()) - start, 1)
    return [f"    {shown.rstrip()}", "    " + " " * start + "^" + "~" * (max(width, 1) - 1)]


def source_lines(text: str) -> list[str]:
    """Lines as the parser counts them: like str.splitlines (no empty line after a final
    newline), but split at "\n" only: splitlines also splits at form feeds and Unicode
    separators, which would shift every later line."""
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return lines[:-1] if lines[-1] == "" else lines


def _source_line(source: str | None, line: int) -> str | None:
    if source is None or line < 1:
        return None
    lines = source_lines(source)
    if line > len(lines):
        return None
    text = lines[line - 1]
    return text if len(text) <= 400 else None


# Error kinds: one name per class of problem, stable for golden tests and --json.
SYNTAX = "syntax-error"
INPUT = "input-error"
UNKNOWN_OP = "unknown-op"
ARGUMENT = "argument-error"
DUPLICATE = "duplicate"
STRUCTURE = "structure-error"
SHAPE = "shape-error"
EXPECTATION = "expectation-mismatch"
TOWERS = "tower-error"
SETTING = "setting-error"
RESERVED = "reserved-name"  # a stage name the lowered torch.nn.Module already uses
LIMIT = "limit-exceeded"  # a size beyond what PyTorch's kernels take (32-bit sizes, indices)
REFERENCE = "reference-error"  # a stage's `(…)` names no stage defined above it
CYCLE = "cycle"  # stages that read each other, or a block that instantiates itself
BLOCK = "block-error"  # a block's definition or use: its parameters, what it may contain
UNUSED = "unused-output"  # a stage whose output nothing reads (a warning)


@dataclass
class SpecError(Exception):
    """Raised out of the pipeline when a spec has errors; holds every diagnostic found."""

    diagnostics: list[Diagnostic] = field(default_factory=list)
    source: str | None = None

    def __str__(self) -> str:
        return "\n".join(d.render(self.source) for d in self.diagnostics)


class Diagnostics:
    """A collector the passes append to; errors do not stop the pass that found them."""

    def __init__(self) -> None:
        self.items: list[Diagnostic] = []

    def error(self, kind: str, loc: SourceLoc, message: str, hint: str = "") -> None:
        self.items.append(Diagnostic(kind, loc, message, hint, Severity.ERROR))

    def warning(self, kind: str, loc: SourceLoc, message: str, hint: str = "") -> None:
        self.items.append(Diagnostic(kind, loc, message, hint, Severity.WARNING))

    @contextmanager
    def within(self, notes: tuple[Note, ...]) -> Iterator[None]:
        """Add `notes` to every diagnostic reported inside the block: a pass working on a
        block instance's op adds the lines that instantiated it."""
        start = len(self.items)
        try:
            yield
        finally:
            if notes:
                self.items[start:] = [replace(d, notes=d.notes + notes)
                                      for d in self.items[start:]]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.WARNING]

    def sorted(self) -> list[Diagnostic]:
        """In source order; the same message at the same place once (a block's line that is
        wrong in every instance is reported for the first)."""
        seen: set[tuple[str, SourceLoc, str, Severity]] = set()
        unique = []
        for d in self.items:
            key = (d.kind, d.loc, d.message, d.severity)
            if key not in seen:
                seen.add(key)
                unique.append(d)
        return sorted(unique, key=lambda d: (d.loc.line, d.loc.col, d.severity.value))
