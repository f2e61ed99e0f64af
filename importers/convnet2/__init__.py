"""cuda-convnet2 networks: a layer file and its layer-params file, as alexnetc specs.

The reading runs top to bottom in `run`: the two files' sections (`graph`), the twins of a
layer on each GPU paired into one stage of a `towers` spec, each node's shape and ops
(`layers`), the stages they group into, and the recipe from the layer-params file (`recipe`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from alexnetc.importers import Format, Imported, Options
from alexnetc.importers.blocks import fold_blocks
from alexnetc.importers.convnet2.core import KNOWN, Cut, Failed, Node, Reader
from alexnetc.importers.convnet2.graph import (
    build_node,
    check_costs,
    read_layers,
    read_params,
    twins,
)
from alexnetc.importers.convnet2.stages import assemble
from alexnetc.importers.draft import Draft
from alexnetc.importers.source import Source


def sniff(paths: Sequence[str], texts: Sequence[str] | None) -> bool:
    """A layer file (sections with `type=` and `inputs=`) and a layer-params file, in either
    order."""
    if texts is None or len(texts) != 2:
        return False
    layered = [bool(_TYPE.search(t)) and "inputs" in t.lower() for t in texts]
    return layered.count(True) == 1 and all("[" in t for t in texts)


_TYPE = re.compile(r"^type[ \t]*[=:][ \t]*(" + "|".join(map(re.escape, KNOWN))
                   + r")[ \t]*(?:[;#].*)?$", re.MULTILINE | re.IGNORECASE)


def read(paths: Sequence[str], options: Options) -> Imported:
    first, second = Source.read(paths[0]), Source.read(paths[1])
    if not _TYPE.search(first.text) and _TYPE.search(second.text):
        first, second = second, first  # the layer-params file given first
    reader = Reader(first, second, options)
    try:
        return Imported(fold_blocks(run(reader)).draft, reader.warnings)
    except Failed:  # reported in one file: quoted from that file's text
        raise next(s.failure() for s in (first, second) if s.errors) from None


FORMAT = Format("convnet2", "cuda-convnet2 layer files", sniff, read, files=(2,))


def run(r: Reader) -> Draft:
    read_layers(r)
    read_params(r)
    if r.src.errors or r.psrc.errors:
        raise Failed
    nodes = twins(r)
    built: list[Node] = []
    try:
        for node in nodes:
            build_node(r, node)
            built.append(node)
        check_costs(r)
    except Cut:
        pass
    return assemble(r, [n for n in built if n.kind != "data"])
