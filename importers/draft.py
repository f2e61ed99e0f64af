"""The spec an importer writes, built up layer by layer and rendered as readable text.

Importers never write spec text by hand: they add stages of op texts (`Conv(11,4) x96`,
`+ ReLU`) with the stages they read and a comment for every convention they converted, and
`Draft.text()` lays them out as a person would (one stage per line, comments on the line).
The text then goes through the checker like any spec, so what an importer writes is held to
the same rules as what a user writes.
"""

from __future__ import annotations

import keyword
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

from alexnetc.compiler.ast import BLOCK_INPUT, KEYWORDS, NETWORK_INPUT
from alexnetc.compiler.graph import free_stage_name, reserved_stage_name

_NOT_NAME = re.compile(r"[^A-Za-z0-9_]+")


@dataclass
class Op:
    """One op as the spec writes it; `tied`: joined to the op before it with `+`."""

    text: str
    tied: bool = False


@dataclass
class Stage:
    """A stage of the draft. `sources`: the stages it reads (None: the one above it)."""

    name: str
    ops: list[Op]
    sources: tuple[str, ...] | None = None
    comments: list[str] = field(default_factory=list)

    def line(self) -> str:
        head = self.name + (f"({', '.join(self.sources)})" if self.sources is not None else "")
        body = ""
        for i, op in enumerate(self.ops):
            body += ("" if i == 0 else " + " if op.tied else "; ") + op.text
        return f"{head}: {body}"


@dataclass
class Block:
    """Stages written once with parameters (`block NAME(p, q) { … }`), which stages of the
    draft use like an op: `inception_3a: inception(64, 96, 128, 16, 32, 32)`."""

    name: str
    params: list[str]
    stages: list[Stage]

    def lines(self) -> list[str]:
        head = f"block {self.name}({', '.join(self.params)}) {{"
        return [head, *(f"  {line}" for line in _aligned(self.stages)), "}"]


@dataclass
class Draft:
    """A whole spec: header, recipe lines and stages, with the comments that explain them."""

    network: str
    input: tuple[int, int, int] | None = None
    towers: int = 1
    notes: list[str] = field(default_factory=list)  # the header comment
    settings: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    setting_notes: list[str] = field(default_factory=list)
    stages: list[Stage] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)  # written before the stages
    names: Names = field(default_factory=lambda: Names())

    def set(self, section: str, key: str, value: object) -> None:
        """A recipe setting (`train lr=0.01`); the last value given wins."""
        entries = self.settings.setdefault(section, [])
        entries[:] = [(k, v) for k, v in entries if k != key] + [(key, _value(value))]

    def add(self, name: str, ops: list[Op], sources: tuple[str, ...] | None = None,
            comments: list[str] | None = None) -> Stage:
        """Append a stage named after `name` (made a valid, unique stage name); `sources` are
        names given to earlier `add`s (or `input`), translated the same way."""
        read = None if sources is None else tuple(self.names.of(s) for s in sources)
        stage = Stage(self.names.new(name), ops, read, list(comments or []))
        self.stages.append(stage)
        return stage

    def text(self) -> str:
        out = [f"# {line}".rstrip() for line in _wrapped(self.notes)]
        out.append(f"network {self.network}")
        if self.input is not None:
            out.append("input " + "x".join(map(str, self.input)))
        if self.towers > 1:
            out.append(f"towers {self.towers}")
        if self.settings or self.setting_notes:
            out.append("")
            out += [f"# {line}" for line in _wrapped(self.setting_notes)]
            out += [f"{section} " + ", ".join(f"{k}={v}" for k, v in entries)
                    for section, entries in self.settings.items() if entries]
        out.append("")
        for block in self.blocks:
            out += [*block.lines(), ""]
        out += _aligned(self.stages)
        return "\n".join(out) + "\n"


def _wrapped(notes: list[str]) -> list[str]:
    """Comment lines of at most 96 characters, a long note continuing indented."""
    return [line for note in notes
            for line in textwrap.wrap(note, 94, subsequent_indent="  ", break_on_hyphens=False)
            or [""]]


def _aligned(stages: list[Stage]) -> list[str]:
    """One line per stage, their comments starting in one column (unless a line is long)."""
    lines = [s.line() for s in stages]
    notes = ["; ".join(s.comments) for s in stages]
    width = min(max((len(line) for line in lines), default=0), 72)
    return [f"{line.ljust(width)}  # {note}" if note else line
            for line, note in zip(lines, notes, strict=True)]


class Names:
    """The source's layer names as stage names: valid, unique, never reserved; each source
    name maps to the stage name it became."""

    def __init__(self) -> None:
        self.given: dict[str, str] = {NETWORK_INPUT: NETWORK_INPUT}
        self.taken: set[str] = set()

    def new(self, raw: str) -> str:
        name = _NOT_NAME.sub("_", raw).strip("_") or "layer"
        if name[0].isdigit():
            name = f"l{name}"
        if (name in self.taken or name in KEYWORDS or name in (NETWORK_INPUT, BLOCK_INPUT)
                or keyword.iskeyword(name) or reserved_stage_name(name) is not None):
            name = free_stage_name(name, self.taken | {NETWORK_INPUT, BLOCK_INPUT})
        self.taken.add(name)
        self.given[raw] = name
        return name

    def of(self, raw: str) -> str:
        """The stage name a source name became (KeyError if none did)."""
        return self.given[raw]

    def known(self, raw: str) -> bool:
        return raw in self.given


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return number(value)
    return str(value)


def number(value: float) -> str:
    """A number as a spec writes it: `2`, `0.0001`, `1e-05`."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e16 else repr(value)


def side(h: int, w: int) -> str:
    """A window, stride or size as a spec writes it: `3` when square, else `3x5` (h x w)."""
    return str(h) if h == w else f"{h}x{w}"


def call(op: str, args: Sequence[str]) -> str:
    """`Conv(11,4, pad=2)`: the positional arguments as the paper writes them (no spaces),
    then the keywords (`key=value`); the bare name when there are none."""
    head = ",".join(a for a in args if "=" not in a)
    rest = ", ".join(a for a in args if "=" in a)
    return f"{op}({head}{', ' if head and rest else ''}{rest})" if args else op
