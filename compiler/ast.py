"""The spec's abstract syntax: frozen dataclasses, each node carrying where it came from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alexnetc.compiler.errors import SourceLoc

Value = int | float | str | tuple[int, ...]  # a tuple: a size written HxW (`1x7`)

# The words that start a header or settings line (the grammar's quoted keywords and its
# SECTION terminal); a stage may not be named exactly one of them.
HEADERS = ("network", "input", "towers")
SECTIONS = ("train", "augment", "init")
DEFINITIONS = ("block",)
KEYWORDS = HEADERS + SECTIONS + DEFINITIONS

# What a stage's `(…)` may name besides stages: the network's input, and in a block, the
# input of the block's instance.
NETWORK_INPUT = "input"
BLOCK_INPUT = "in"


@dataclass(frozen=True)
class Arg:
    """`value` or `name=value` inside an op's parentheses."""

    name: str | None
    value: Value
    loc: SourceLoc


@dataclass(frozen=True)
class OpCall:
    """One op as written: `Conv(11,4) x96`; `joined` is True when `+` tied it to the previous op.

    In a block, `channels` may name one of the block's parameters (`xc`); a block's use
    may repeat it (`basic(64) * 2`: `repeat` 2).
    """

    name: str
    args: tuple[Arg, ...]
    channels: int | str | None
    loc: SourceLoc
    name_loc: SourceLoc
    channels_loc: SourceLoc | None
    joined: bool
    repeat: int | float | None = None
    repeat_loc: SourceLoc | None = None

    def text(self) -> str:
        """The op as the paper writes it, normalised: `Conv(11,4) x96`."""
        inner = ",".join((f"{a.name}={format_value(a.value)}" if a.name
                          else format_value(a.value)) for a in self.args)
        out = f"{self.name}({inner})" if self.args else self.name
        out = f"{out} x{self.channels}" if self.channels is not None else out
        return f"{out} * {format_value(self.repeat)}" if self.repeat is not None else out


def format_value(v: Value) -> str:
    """A value as the spec writes it: `1x7` for a size, `0.5`, `64`, `ceil`."""
    if isinstance(v, tuple):
        return "x".join(map(str, v))
    return repr(v) if isinstance(v, float) else str(v)


@dataclass(frozen=True)
class Expect:
    """`-> 27x27x96` (or `-> 4096`): a shape the checker must confirm."""

    dims: tuple[int, ...]
    loc: SourceLoc


@dataclass(frozen=True)
class Ref:
    """A stage named as another stage's input: `sum(b, in): Add`."""

    name: str
    loc: SourceLoc


@dataclass(frozen=True)
class Stage:
    """`conv1: ...`: a named run of ops, lowered to one submodule; or a run of block instances.

    `sources`: the stages it reads, as written (empty: the stage above it).
    """

    name: str
    ops: tuple[OpCall, ...]
    expect: Expect | None
    loc: SourceLoc
    name_loc: SourceLoc
    sources: tuple[Ref, ...] = ()


@dataclass(frozen=True)
class BlockParam:
    """`c` or `s=1` in a block's header."""

    name: str
    default: Value | None
    loc: SourceLoc


@dataclass(frozen=True)
class Block:
    """`block basic(c, s=1) { ... }`: stages written once, instantiated as ops are called."""

    name: str
    params: tuple[BlockParam, ...]
    stages: tuple[Stage, ...]
    loc: SourceLoc
    name_loc: SourceLoc


@dataclass(frozen=True)
class Setting:
    """`train lr=0.01, epochs=90`: part of the training recipe."""

    section: str
    args: tuple[Arg, ...]
    loc: SourceLoc


@dataclass(frozen=True)
class Header:
    """`network NAME`, `input HxWxC` or `towers N`, kept with its location for errors."""

    key: str
    value: Value | tuple[int, ...]
    loc: SourceLoc
    value_loc: SourceLoc


@dataclass(frozen=True)
class Network:
    """A whole parsed spec, before any checking."""

    file: str
    source: str
    headers: tuple[Header, ...]
    settings: tuple[Setting, ...]
    stages: tuple[Stage, ...]
    loc: SourceLoc
    blocks: tuple[Block, ...] = ()

    def header(self, key: str) -> Header | None:
        return next((h for h in self.headers if h.key == key), None)

    @property
    def name(self) -> str:
        """The network's name: its `network` line, else the file name without its suffix."""
        header = self.header("network")
        return str(header.value) if header else Path(self.file).stem
