"""Caffe nets (`deploy.prototxt`, `train_val.prototxt`) and their solvers as alexnetc specs.

Caffe lists layers that read and write named blobs; alexnetc writes stages. A Convolution or
InnerProduct starts a stage, and the layers after it that only it feeds (in-place ReLU,
Dropout and BatchNorm with its Scale, then LRN and Pooling) join it, as the paper writes
`conv1: Conv(11,4) x96 + ReLU; ResNorm(5); MaxPool(3,2)`. Concat and Eltwise become merges
reading the stages their bottoms come from. Caffe's conventions are converted on the line
that uses them: its pools round up (`remainder=ceil`), its convolutions round down
(`remainder=drop`), its LRN divides α by the window and defaults k to 1.

Both spellings are read: `layer { type: "Convolution" }` and the V1 `layers { type:
CONVOLUTION }` of BVLC's older model files. The network is Caffe's TRAIN phase, ending at its
last layer (the loss, or `prob` in a deploy file); layers that do not lead there (accuracy,
auxiliary classifiers) are left out. Sizes follow Caffe's own rules (conv_layer.cpp floors,
pooling_layer.cpp takes the ceiling and clips a last window that starts in the padding).

The reading runs top to bottom in `read`: the file's layers (`net`), those of the TRAIN phase
on the path to the output, each converted by its type (`layers`, `inputs`), then the recipe
(`recipe`) from the net's data layer and fillers and from the solver, if one is given, and
with --weights the trained blobs of the .caffemodel (`caffemodel`, `weights`), which the
converter knows the ops of by the layer each came from.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from alexnetc.compiler.errors import Severity
from alexnetc.importers import Format, Imported, Options, head
from alexnetc.importers.blocks import fold_blocks
from alexnetc.importers.caffe.caffemodel import CaffemodelError
from alexnetc.importers.caffe.convert import Converter
from alexnetc.importers.caffe.fields import Problem, text_of
from alexnetc.importers.caffe.inputs import net_inputs
from alexnetc.importers.caffe.layers import convert_layer
from alexnetc.importers.caffe.net import (
    OBSERVERS,
    Layer,
    in_train_phase,
    known_bottoms,
    output_path,
    read_layers,
)
from alexnetc.importers.caffe.recipe import read_solver, recipe_lines
from alexnetc.importers.caffe.weights import write_weights
from alexnetc.importers.draft import Draft
from alexnetc.importers.prototxt import Message, parse
from alexnetc.importers.source import INCONSISTENT, UNSUPPORTED, Source

_NET_FIELDS = ("layer", "layers", "input", "input_dim", "input_shape")


_SOLVER_FIELDS = ("base_lr", "lr_policy", "net", "train_net", "max_iter", "solver_mode",
                  "test_iter", "net_param", "train_net_param")


_LOOKS_CAFFE = re.compile(r"^\s*(?:layers?\s*[:{<]|input(?:_dim|_shape)?\s*[:{]|base_lr\s*:|"
                          r"(?:train_)?net\s*:)", re.MULTILINE)


def _sniff(paths: Sequence[str], texts: Sequence[str] | None) -> bool:
    """Prototxt files, and a .caffemodel among them (or alone: `read` says what is missing)."""
    if texts is None:
        return False
    nets = [(p, t) for i, (p, t) in enumerate(zip(paths, texts, strict=True))
            if not _is_caffemodel(p, i, t)]
    return all(Path(p).suffix.lower() in (".prototxt", ".pbtxt") or bool(_LOOKS_CAFFE.search(t))
               for p, t in nets)


def _is_caffemodel(path: str, index: int, head: str) -> bool:
    """A trained model, not a net's text: named .caffemodel, or binary after the first file
    (a lone binary file is a prototxt gone wrong, reported where its NUL byte is)."""
    return Path(path).suffix.lower() == ".caffemodel" or (index > 0 and "\0" in head)


def _split(paths: Sequence[str]) -> tuple[list[str], str | None]:
    """The prototxt files and the caffemodel, as the command line must give them."""
    from alexnetc.cli.main import UsageError

    heads = [head(p).decode("latin-1") for p in paths]
    models = [p for i, (p, t) in enumerate(zip(paths, heads, strict=True))
              if _is_caffemodel(p, i, t)]
    nets = [p for p in paths if p not in models]
    if len(models) > 1:
        raise UsageError(f"one .caffemodel at a time, not {len(models)}: {' '.join(models)}")
    if models and not nets:
        raise UsageError(f"{models[0]} holds only weights: give the net's .prototxt first, then "
                         "the .caffemodel")
    return nets, (models[0] if models else None)


def _is_solver(msg: Message) -> bool:
    names = set(msg.names())
    return not names & set(_NET_FIELDS) and bool(names & set(_SOLVER_FIELDS))


def read(paths: Sequence[str], options: Options) -> Imported:
    """The net (first), its solver (optional) and its trained weights (a .caffemodel, with
    --weights) as a draft spec and a checkpoint."""
    texts, model = _split(paths)
    _weights_usage(model, options)
    sources = [Source.read(p) for p in texts]
    messages = [parse(s) for s in sources]
    net_i, *rest = sorted(range(len(texts)), key=lambda i: _is_solver(messages[i]))
    source, net = sources[net_i], messages[net_i]
    if _is_solver(net):
        f = net.get("net") or net.get("train_net")
        named = text_of(f) if f is not None else ""
        raise source.fail(INCONSISTENT, net.loc, "this is a Caffe solver, not a net",
                          f"give its net first: alexnetc import {named} {texts[net_i]}" if named
                          else "give the net's .prototxt first, then optionally its solver")
    if len(rest) > 1:
        from alexnetc.cli.main import UsageError

        raise UsageError(f"{len(rest) + 1} prototxt files given: give one net, then at most "
                         "one solver (and the .caffemodel)")
    draft, converter = _convert(source, net, options)
    warnings = [d for d in source.diagnostics if d.severity is Severity.WARNING]
    for i in rest:
        if not _is_solver(messages[i]):
            raise sources[i].fail(INCONSISTENT, messages[i].loc, "the second file is a net "
                                  "too, not a solver", "give one net, then optionally its "
                                  "solver.prototxt")
        try:
            read_solver(sources[i], messages[i], draft, converter.recipe.batch)
        except Problem as p:
            raise sources[i].fail(p.diagnostic.kind, p.diagnostic.loc, p.diagnostic.message,
                                  p.diagnostic.hint) from None
        draft.notes.append(f"The recipe is from {sources[i].path}.")
        warnings += [d for d in sources[i].diagnostics if d.severity is Severity.WARNING]
    draft.settings = {k: draft.settings[k] for k in ("train", "augment", "init")
                      if k in draft.settings}
    folded = fold_blocks(draft)
    imported = Imported(folded.draft, warnings)
    if model is not None and options.weights is not None:
        _read_weights(imported, folded.rekey(converter.origins), converter, model,
                      Path(options.weights), texts[net_i])
    return imported


def _weights_usage(model: str | None, options: Options) -> None:
    """A caffemodel and --weights come together: one names what to read, the other where
    to write it."""
    from alexnetc.cli.main import UsageError

    if options.weights is not None and model is None:
        raise UsageError("--weights: a Caffe net's trained weights are in its .caffemodel; give "
                         "it as the second file: alexnetc import deploy.prototxt "
                         "NET.caffemodel --weights RUN_DIR")
    if model is not None and options.weights is None:
        raise UsageError(f"{model} holds trained weights: give --weights RUN_DIR to write them "
                         "as a checkpoint (RUN_DIR/checkpoint.pt), or leave the .caffemodel "
                         "out to import the net alone")


def _read_weights(imported: Imported, origins: dict[str, dict[int, int]], c: Converter,
                  model: str, path: Path, net: str) -> None:
    """The caffemodel's weights into the checkpoint at `path`: what is wrong with them is
    the run's error, in one line (the net itself imported)."""
    from alexnetc.cli.main import RunError

    try:
        imported.weights, imported.notes = write_weights(imported.draft, origins, c,
                                                         Path(model), path, net)
    except CaffemodelError as e:
        raise RunError(str(e)) from None
    imported.weights_from = f"the weights of {model}"


def _convert(source: Source, net: Message, options: Options) -> tuple[Draft, Converter]:
    draft = Draft(_network_name(net, source))
    layers, bad = read_layers(net, source)
    phase = []
    for layer in layers:
        try:
            if in_train_phase(layer):
                phase.append(layer)
        except Problem as p:
            source.diagnostics.append(p.diagnostic)
    bad |= known_bottoms(phase, [text_of(f) for f in net.all("input")], source)
    kept, dropped = output_path(phase)
    converter = Converter(source, net, options, draft, kept, phase)
    try:
        net_inputs(converter)
        converter.run(bad, convert_layer)
    except Problem as p:
        source.diagnostics.append(p.diagnostic)
    if not source.errors and not draft.stages:
        source.error(INCONSISTENT, net.loc, "no layer to import: the file has no convolution, "
                     "pooling or fully connected layer", "give the net's .prototxt (its "
                     "`layer { … }` entries)")
    if source.errors:
        raise source.failure()
    _warn_dropped(source, dropped)
    _finish(draft, converter, len(phase) < len(layers))
    return draft, converter


def _network_name(net: Message, source: Source) -> str:
    f = net.get("name")
    raw = text_of(f) if f is not None else Path(source.path).stem
    name = re.sub(r"[^A-Za-z0-9_]+", "_", raw).strip("_") or "Imported"
    return name if not name[0].isdigit() else f"n{name}"


def _warn_dropped(source: Source, dropped: list[Layer]) -> None:
    shown = [layer for layer in dropped if layer.type not in OBSERVERS]
    if not shown:
        return
    names = ", ".join(f"'{layer.name}'" for layer in shown[:4]) + (", …" if len(shown) > 4
                                                                    else "")
    source.warning(UNSUPPORTED, shown[0].loc, f"{len(shown)} layer"
                   f"{'s do' if len(shown) > 1 else ' does'} not lead to the network's output "
                   f"and {'are' if len(shown) > 1 else 'is'} left out: {names}",
                   "alexnetc networks have one output (an auxiliary classifier only helps "
                   "training)")


def _finish(draft: Draft, c: Converter, phased: bool) -> None:
    """The header, input line and recipe from what the net states."""
    spelling = "V1 `layers`" if any(f.name == "layers" for f in c.net.fields) else "`layer`"
    draft.notes.append(f"Imported from {c.source.path} (Caffe, {spelling} format) by "
                       "`alexnetc import`.")
    if phased:
        draft.notes.append("Caffe's TRAIN phase: layers only in its TEST phase are left out.")
    image = c.blobs.get(c.image or "")
    if image is not None and image.shape is not None:
        draft.input = (image.shape.h, image.shape.w, image.shape.c)
        if c.options.input is not None and c.stated not in (None, c.options.input):
            draft.notes.append("The input is --input's (the file states "
                               f"{'x'.join(map(str, c.stated or ()))}).")
    recipe_lines(draft, c.recipe, c.fillers)


FORMAT = Format("caffe", "Caffe prototxt", _sniff, read, files=(1, 2, 3),
                weights="a Caffe net with its .caffemodel (given after the .prototxt)")
