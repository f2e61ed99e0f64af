"""One diagnostic type for every stage, so the CLI renders them all the same way.

Every problem a user can cause is a `Diagnostic` with a location, a message and a hint; the
passes collect them instead of stopping at the first, and `SpecError` carries a list of them
out of the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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

    def render(self, source: str | None) -> str:
        """`file:line:col: error: message`, the source line, a caret, and the hint."""
        head = f"{self.loc}: {self.severity.value}: {self.message}"
        lines = [head]
        text_line = _source_line(source, self.loc.line)
        if text_line is not None:
            shown = text_line.expandtabs(1)
            start = max(self.loc.col - 1, 0)
            if self.loc.end_line == self.loc.line and self.loc.end_col > self.loc.col:
                width = self.loc.end_col - self.loc.col
            else:
                width = max(len(shown.rstrip()) - start, 1)
            lines.append(f"    {shown.rstrip()}")
            lines.append("    " + " " * start + "^" + "~" * (max(width, 1) - 1))
        if self.hint:
            lines.append(f"  hint: {self.hint}")
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
        }


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

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.WARNING]

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.items, key=lambda d: (d.loc.line, d.loc.col, d.severity.value))
