"""INI-like files as Darknet's `.cfg` and cuda-convnet2's layer files write them, with the
line and column of every section and key.

Both formats are `[section]` headers followed by `key=value` lines; Darknet repeats section
names (`[convolutional]` once per layer) and takes `#` and `;` comments, so Python's
configparser (unique sections, no positions) does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alexnetc.compiler.errors import SourceLoc
from alexnetc.importers.source import MALFORMED, Source


@dataclass(frozen=True)
class Entry:
    """`key=value`, with where the key and the value stand."""

    key: str
    value: str
    key_loc: SourceLoc
    value_loc: SourceLoc


@dataclass
class Section:
    """`[name]` and its entries, in order (a key given twice keeps both: each format says
    which counts; `get` takes the last)."""

    name: str
    loc: SourceLoc
    entries: list[Entry] = field(default_factory=list)

    def entry(self, key: str) -> Entry | None:
        return next((e for e in reversed(self.entries) if e.key == key), None)

    def get(self, key: str, default: str | None = None) -> str | None:
        e = self.entry(key)
        return e.value if e is not None else default

    def keys(self) -> list[str]:
        return list(dict.fromkeys(e.key for e in self.entries))


def read_sections(source: Source, comments: str = "#;",
                  inline: str | None = None) -> list[Section]:
    """Every section of the file in order; a line that is neither a header, a `key=value` nor
    a comment is a located error (reported in `source`, reading goes on). `inline`: the
    characters that start a comment after a value (default: `comments`; cuda-convnet2's
    values hold `;`, as `epsW=dexp[base=0.01;tgtFactor=250]`)."""
    sections: list[Section] = []
    for n, raw in enumerate(source.lines, start=1):
        stripped = raw.strip()
        if not stripped or stripped[0] in comments:
            continue
        col = len(raw) - len(raw.lstrip()) + 1
        if stripped.startswith("["):
            close = stripped.find("]")
            if close < 0:
                source.error(MALFORMED, source.loc(n, col), "a section header is missing its "
                             "closing `]`", f"write it as `{stripped}]`")
                continue
            name = stripped[1:close].strip()
            sections.append(Section(name, source.loc(n, col, close + 1)))
            continue
        if "=" not in stripped:
            source.error(MALFORMED, source.loc(n, col), f"expected `key=value` or a `[section]`, "
                         f"got {stripped!r}", "every line sets one key, as `filters=96`")
            continue
        if not sections:
            source.error(MALFORMED, source.loc(n, col), "a setting before the first "
                         "`[section]`", "put it under the section it belongs to")
            continue
        key, _, value = stripped.partition("=")
        for c in comments if inline is None else inline:  # a comment after the value
            value = value.split(c, 1)[0]
        key, value = key.strip(), value.strip()
        key_col = col
        value_col = raw.index("=", col - 1) + 2
        value_col += len(raw[value_col - 1:]) - len(raw[value_col - 1:].lstrip())
        sections[-1].entries.append(Entry(key, value, source.loc(n, key_col, len(key)),
                                          source.loc(n, value_col, max(len(value), 1))))
    return sections
