"""Darknet's `.cfg` networks (pjreddie/darknet and AlexeyAB's fork) as alexnetc specs.

A cfg is a `[net]` section (input size, optimiser, schedule, augmentation) and then one section
per layer, numbered from 0 as Darknet numbers them; `[route]` and `[shortcut]` name other layers
by number (a negative one counts back from the layer itself). Each layer becomes a stage named
after its kind and number (`conv0`, `pool1`, `route17`), holding what Darknet ties to it
(`batch_normalize=1`, `activation=`, a `[dropout]` or final `[softmax]` after it), so that every
message about a layer names the stage that holds it.

The rules are Darknet's own, from src/parser.c and the layers' sources: a key given twice takes
its first value (option_find), absent keys take parser.c's defaults (a convolution's activation
is logistic), sizes floor ((h + 2·padding − size)/stride + 1), `pad=1` pads size/2, a maxpool
pads size − 1 unless told (padding/2 before the input, the rest after it), `[avgpool]` is global
and `[shortcut]` adds another layer's output to the one before it.

The reading runs top to bottom in `run`: the sections as layers (`cfg`), the [net] section's
input and recipe (`recipe`), then each layer converted in order (`layers`, with the maxpool
padding rules in `pools`) into the stages `reader` keeps.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from alexnetc.compiler.errors import Severity
from alexnetc.compiler.records import Shape
from alexnetc.importers import Format, Imported, Options
from alexnetc.importers.blocks import fold_blocks
from alexnetc.importers.darknet.cfg import (
    KEYS,
    KINDS,
    NET,
    WITHOUT,
    CfgLayer,
    Stop,
    Unsupported,
    Values,
)
from alexnetc.importers.darknet.layers import convert_layer, forbidden_keys
from alexnetc.importers.darknet.reader import Reader
from alexnetc.importers.darknet.recipe import net_recipe
from alexnetc.importers.ini import Section, read_sections
from alexnetc.importers.source import INCONSISTENT, MALFORMED, UNSUPPORTED, Source, closest


def _sniff(paths: Sequence[str], texts: Sequence[str] | None) -> bool:
    """A cfg whose first section is [net], or a .cfg whose first section is a Darknet layer
    (cuda-convnet2's layer files name their sections after their layers)."""
    if texts is None:
        return False
    header = re.search(r"^\s*\[\s*([^\]\s]+)\s*\]", texts[0], re.MULTILINE)
    if header is None:
        return False
    name = header.group(1)
    return name in NET or (paths[0].endswith(".cfg") and (name in KINDS or name in WITHOUT)
                            and not re.search(r"^\s*type\s*=", texts[0], re.MULTILINE))


def _read(paths: Sequence[str], options: Options) -> Imported:
    source = Source.read(paths[0])
    reader = Reader(source, options)
    imported = run(reader)
    imported.draft.notes[:0] = [f"Imported from {paths[0]} (Darknet cfg) by `alexnetc import`.",
                                "Stages are named after Darknet's layers, numbered from 0 as "
                                "Darknet numbers them."]
    imported.draft = fold_blocks(imported.draft).draft
    return imported


FORMAT = Format("darknet", "Darknet cfg", _sniff, _read)


def run(r: Reader) -> Imported:
    sections = read_sections(r.source)
    if sections and _net_first(r, sections):
        r.layers = [_layer(r, i, s) for i, s in enumerate(sections[1:])]
        for layer in r.layers:
            _references(r, layer)
        if not r.layers:
            r.source.error(MALFORMED, sections[0].loc, "no layers after [net]",
                              "add the network's layers, e.g. a [convolutional] section")
        if not r.source.errors:
            _net(r, sections[0])
    if not sections:
        r.source.error(MALFORMED, r.source.loc(1), "no sections: a Darknet cfg is "
                          "a [net] section and one section per layer")
    if r.source.errors:
        raise r.source.failure()
    _walk(r)
    if r.source.errors or (r.unsupported and not r.options.skip_unsupported):
        for layer, u in r.unsupported:
            r.source.error(UNSUPPORTED, u.loc, f"{layer.title}: {u.message}", u.hint)
        raise r.source.failure()
    warnings = [d for d in r.source.diagnostics if d.severity is Severity.WARNING]
    if r.unsupported:
        warnings.append(r.cut())
    return Imported(r.draft, warnings)


def _net_first(r: Reader, sections: list[Section]) -> bool:
    if sections[0].name in NET:
        return True
    r.source.error(MALFORMED, sections[0].loc, f"the first section is "
                      f"[{sections[0].name}], not [net]",
                      "Darknet reads the input size and the training settings from a "
                      "[net] (or [network]) section first")
    return False


def _layer(r: Reader, index: int, section: Section) -> CfgLayer:
    kind = KINDS.get(section.name, section.name)
    if kind not in KEYS and kind not in WITHOUT:
        words = sorted(set(KINDS) | set(WITHOUT))
        close = closest(section.name, words)
        r.source.error(MALFORMED, section.loc, f"unknown section [{section.name}]",
                          f"did you mean [{close}]?" if close else
                          "Darknet's layers are " + ", ".join(f"[{k}]" for k in KINDS))
    return CfgLayer(index, kind, section, Values(r.source, section))


def _references(r: Reader, layer: CfgLayer) -> None:
    """The layers a [route] or [shortcut] reads, checked before anything is sized."""
    if layer.kind not in ("route", "shortcut"):
        return
    key = "layers" if layer.kind == "route" else "from"
    try:
        given = layer.values.numbers(key)
    except Stop:
        return
    found = []
    for n in given:
        i = layer.index + n if n < 0 else n
        if not 0 <= i < layer.index:
            _missing_layer(r, layer, key, n, i)
            return
        found.append(i)
    r.reads[layer.index] = found


def _missing_layer(r: Reader, layer: CfgLayer, key: str, n: int, i: int) -> None:
    if layer.index == 0:
        where = "it is the first layer, so there is none before it"
    else:
        where = f"the layers before it are 0–{layer.index - 1}"
    what = f"layer {i}" if n >= 0 else f"layer {i} ({-n} back from layer {layer.index})"
    r.source.error(INCONSISTENT, layer.values.loc(key),
                      f"{layer.title} reads {what}, which "
                      + ("does not exist" if i < 0 else "is not before it")
                      + f": {where}",
                      "a negative number counts back from this layer (-1 is the layer "
                      "before it); a route or shortcut reads only earlier layers")


def _net(r: Reader, section: Section) -> None:
    values = Values(r.source, section)
    try:
        h, w, c = (values.integer(k, 0, 0) for k in ("height", "width", "channels"))
        if r.options.input is not None:
            given = Shape(*r.options.input)
            if h and w and c and (h, w, c) != given.dims():
                r.draft.notes.append(f"--input {given} replaces the cfg's {h}x{w}x{c}")
            h, w, c = given.dims()
        if not (h and w and c):
            r.source.error(MALFORMED, section.loc, "[net] does not give the input "
                              "size", "give height=, width= and channels= in [net], or "
                              "--input HxWxC")
            return
        r.input = Shape(h, w, c)
        net_recipe(values, r.draft, r.source)
    except Stop:
        return


def _walk(r: Reader) -> None:
    assert r.input is not None
    r.draft.input = (r.input.h, r.input.w, r.input.c)
    for layer in r.layers:
        x = r.shapes[layer.index - 1] if layer.index else r.input
        try:
            forbidden_keys(r, layer)
            r.shapes[layer.index] = convert_layer(r, layer, x)
        except Stop:
            return
        except Unsupported as u:
            r.unsupported.append((layer, u))
            # named, as the stages after it are, for messages about later layers
            r.alias.setdefault(layer.index, f"{layer.section.name}{layer.index}")
            if u.shape is None:
                return
            r.shapes[layer.index] = u.shape
