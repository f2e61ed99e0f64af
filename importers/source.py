"""A file in another framework's format, and located errors in it.

Importers report what they cannot read or express as the checker reports a spec's mistakes:
a `Diagnostic` at `file:line:col` with a hint, raised together in a `SpecError`, so the CLI
renders them the same way (source line, caret) and never shows a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from alexnetc.compiler.errors import Diagnostic, Severity, SourceLoc, SpecError, source_lines


def closest(word: str, words: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The known word `word` most likely misspells, for a "did you mean" hint (None: none is
    close enough)."""
    found = difflib.get_close_matches(word, list(words), n=1, cutoff=cutoff)
    return found[0] if found else None


# Diagnostic kinds of the importers (the checker's own kinds are in compiler/errors.py).
MALFORMED = "import-malformed"  # the file does not follow its format's syntax
UNSUPPORTED = "import-unsupported"  # a layer or setting alexnetc cannot express
INCONSISTENT = "import-inconsistent"  # well-formed, but refers to what is not there


@dataclass
class Source:
    """One input file: its name as given, its text, and the diagnostics found in it."""

    path: str
    text: str
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @classmethod
    def read(cls, path: str | Path) -> Source:
        """The file's text; one with a NUL byte is refused (at its place) as no text format's."""
        data = Path(path).read_bytes()
        nul = data.find(b"\x00")
        if nul >= 0:
            line = data.count(b"\n", 0, nul) + 1
            col = nul - (data.rfind(b"\n", 0, nul) + 1) + 1
            loc = SourceLoc(str(path), line, col, line, col + 1)
            raise SpecError([Diagnostic(MALFORMED, loc, "the file contains a NUL byte (is it a "
                                        "binary file, such as a .caffemodel or .weights?)",
                                        "give the network's text definition")], None)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("latin-1")  # these formats are ASCII; keep every byte's column
        return cls(str(path), text.removeprefix("\ufeff"))

    @cached_property
    def lines(self) -> list[str]:
        """The text's lines, split once: every location reads them."""
        return source_lines(self.text)

    def loc(self, line: int, col: int = 1, width: int = 0) -> SourceLoc:
        """A location on `line` from `col`, `width` characters wide (0: to the line's end)."""
        lines = self.lines
        text = lines[line - 1] if 0 < line <= len(lines) else ""
        end = col + width if width else max(len(text.rstrip()) + 1, col + 1)
        return SourceLoc(self.path, line, col, line, end)

    def error(self, kind: str, loc: SourceLoc, message: str, hint: str = "") -> None:
        self.diagnostics.append(Diagnostic(kind, loc, message, hint))

    def warning(self, kind: str, loc: SourceLoc, message: str, hint: str = "") -> None:
        self.diagnostics.append(Diagnostic(kind, loc, message, hint, Severity.WARNING))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity is Severity.ERROR]

    def fail(self, kind: str, loc: SourceLoc, message: str, hint: str = "") -> SpecError:
        """The error that ends reading this file (with every diagnostic found so far)."""
        self.error(kind, loc, message, hint)
        return self.failure()

    def failure(self) -> SpecError:
        return SpecError(sorted(self.diagnostics, key=lambda d: (d.loc.line, d.loc.col)),
                         self.text)
