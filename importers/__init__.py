"""Read networks written for other frameworks into alexnetc specs.

Each format is one module with a `FORMAT` (`Format`): how to recognise its files and how to
read them into a `Draft`, the spec as text-to-be. What the source states is converted
explicitly, with a comment on the line for every convention that differs from alexnetc's
(Caffe's α per window, its ceil pools, Darknet's `pad=1`, …); what alexnetc cannot express is a
located error in the source file. The CLI (`alexnetc import`) writes the draft's text and
checks it as any spec.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alexnetc.compiler.errors import Diagnostic
from alexnetc.importers.draft import Draft

# The format modules, in the order their `sniff` is asked; torch last (it imports torch).
MODULES = ("caffe", "convnet2", "darknet", "torch_fx")


@dataclass(frozen=True)
class Options:
    """What the command line adds to the files: the input size where a format does not state
    it (cuda-convnet2 takes it from its own command line), and whether to cut the network at
    the first layer alexnetc cannot express instead of failing."""

    input: tuple[int, int, int] | None = None
    skip_unsupported: bool = False
    weights: str | None = None  # where to write the source's weights, for formats that have them


@dataclass
class Imported:
    """A read network: its spec as a draft, the warnings about it (a layer skipped, a setting
    with no counterpart), and the weights written, if any, with what they are and the notes
    to say about them (a Caffe model's input preprocessing)."""

    draft: Draft
    warnings: list[Diagnostic] = field(default_factory=list)
    weights: Path | None = None
    weights_from: str = "the module's weights"
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Format:
    """One source format.

    `sniff(paths, texts)`: whether the files are this format's (texts None for a target that
    is no file, as `module:Class`); `read(paths, options)`: the network, or a `SpecError`
    with the located problems; `files`: how many files one network takes (cuda-convnet2: the
    layer file and its layer-params file); `weights`: what --weights reads trained weights
    from, in words ("": alexnetc reads none for the format)."""

    name: str
    title: str
    sniff: Callable[[Sequence[str], Sequence[str] | None], bool]
    read: Callable[[Sequence[str], Options], Imported]
    files: tuple[int, ...] = (1,)
    weights: str = ""


def formats() -> list[Format]:
    return [importlib.import_module(f"alexnetc.importers.{m}").FORMAT for m in MODULES]


def format_named(name: str) -> Format | None:
    return next((f for f in formats() if f.name == name), None)


def detect(paths: Sequence[str]) -> Format | None:
    """The format of the files from their names and content (None: none recognises them)."""
    texts = None
    if all(Path(p).is_file() for p in paths):
        texts = [head(p).decode("utf-8", "replace") for p in paths]
    for f in formats():
        if len(paths) in f.files and f.sniff(paths, texts):
            return f
    return None


def head(path: str) -> bytes:
    """The file's first 64 KiB, all a format needs to know it (a caffemodel may be GBs)."""
    with open(path, "rb") as f:
        return f.read(65536)
