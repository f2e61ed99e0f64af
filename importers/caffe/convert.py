"""The state of converting a Caffe net: which stage each blob is, which input the network
reads, and how a one-in, one-out layer joins the stage before it or starts its own.

The layer types themselves are in `layers`; this module is what they share.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from alexnetc.compiler.ast import NETWORK_INPUT
from alexnetc.compiler.records import Shape
from alexnetc.compiler.registry import lookup
from alexnetc.importers import Options
from alexnetc.importers.caffe.fields import Problem, check_fields, value_loc
from alexnetc.importers.caffe.net import Layer, Versions
from alexnetc.importers.caffe.recipe import Recipe, read_fillers
from alexnetc.importers.draft import Draft, Op, Stage
from alexnetc.importers.prototxt import Message
from alexnetc.importers.source import INCONSISTENT, MALFORMED, UNSUPPORTED, Source


@dataclass
class Blob:
    """What a Caffe blob is in the draft: the stage whose output it is (None: an input), and
    its shape (None: an input whose size nothing states)."""

    stage: Stage | None
    shape: Shape | None
    label: bool = False  # a data layer's labels: read only by losses and accuracies
    flatten: str | None = None  # the Flatten (or Reshape) 'name' that made it: only an FC reads it


class Converter:
    """Caffe's layers, in order, into the draft's stages."""

    def __init__(self, source: Source, net: Message, options: Options, draft: Draft,
                 layers: list[Layer], phase: list[Layer]) -> None:
        self.source = source
        self.net = net
        self.options = options
        self.draft = draft
        self.layers = {layer.index: layer for layer in layers}
        # every layer of the phase, also those not on the path to the output (Caffe's net
        # has them: a caffemodel's weights go to the first of each name)
        self.phase = phase
        self.versions = Versions.of(layers)
        self.fillers = read_fillers(layers)
        self.recipe = Recipe()
        self.last = layers[-1] if layers else None
        self.blobs: dict[str, Blob] = {}
        self.unusable: dict[str, Problem] = {}  # inputs without an image's size, and why
        self.kinds: dict[str, str] = {}  # stage name → "weighted", "merge" or "other"
        self.image: str | None = None  # the input blob the network reads
        self.stated: tuple[int, int, int] | None = None  # the input size the file states
        # Layers by index, not name (Caffe lets two layers share one): each Scale taken into
        # its BatchNorm → that BatchNorm, and each op (stage → op index) → its Caffe layer.
        self.folded: dict[int, int] = {}
        self.origins: dict[str, dict[int, int]] = {}
        self.poisoned: set[str] = set()  # blobs of layers that failed: readers are skipped
        self.cut_at: int | None = None  # the layer the network is cut before

    def run(self, bad: set[int], convert: Callable[[Converter, Layer], None]) -> None:
        """Each layer in order by `convert`; a layer that fails poisons its tops, so that its
        readers are not reported again."""
        for layer in self.layers.values():
            if self.cut_at is not None:
                break
            if layer.index in bad or any(b in self.poisoned for b in layer.bottom_names):
                self.poisoned.update(layer.top_names)
                continue
            try:
                convert(self, layer)
            except Problem as p:
                self._failed(layer, p)

    def _failed(self, layer: Layer, p: Problem) -> None:
        d = p.diagnostic
        if (d.kind == UNSUPPORTED and self.options.skip_unsupported and not self.source.errors
                and self.draft.stages):
            self.source.warning(UNSUPPORTED, d.loc, f"{d.message}; the network is cut before "
                                f"'{layer.name}' (--skip-unsupported)", d.hint)
            self.cut_at = layer.index
            return
        self.source.diagnostics.append(d)
        self.poisoned.update(layer.top_names)

    def bottom(self, layer: Layer, i: int = 0) -> Blob:
        """The blob a layer reads as an image (never the labels)."""
        name = layer.bottom_names[i]
        loc = value_loc(layer.bottoms[i])
        blob = self.blobs.get(name)
        if blob is None:
            raise Problem(INCONSISTENT, loc, f"'{layer.name}' reads \"{name}\", which no layer "
                          "alexnetc converts makes", "a bottom names a top of an earlier layer")
        if blob.label:
            raise Problem(UNSUPPORTED, loc, f"'{layer.name}' reads the labels \"{name}\"",
                          "alexnetc's layers read images; only the loss reads labels")
        if name in self.unusable:
            self.poisoned.add(name)  # said once, not again for each reader
            raise self.unusable[name]
        if blob.stage is None:
            if self.image is not None and self.image != name:
                raise Problem(UNSUPPORTED, loc, f"'{layer.name}' reads a second input "
                              f"\"{name}\" (the first is \"{self.image}\")",
                              "alexnetc networks have one input image")
            self.image = name
        if blob.flatten is not None and layer.type != "InnerProduct":
            raise Problem(UNSUPPORTED, loc, f"'{layer.name}' ({layer.type}) reads the output "
                          f"of {blob.flatten}", "alexnetc flattens only into an FC")
        return blob

    def one_bottom(self, layer: Layer) -> tuple[Blob, Shape]:
        if len(layer.bottoms) != 1 or len(layer.tops) != 1:
            raise Problem(MALFORMED, layer.loc, f"{layer.type} '{layer.name}' takes one bottom "
                          f"and makes one top, not {len(layer.bottoms)} and {len(layer.tops)}")
        blob = self.bottom(layer)
        assert blob.shape is not None
        return blob, blob.shape

    def param(self, layer: Layer, key: str, required: bool = False) -> Message:
        p = layer.msg.message(key)
        if p is None:
            if required:
                raise Problem(MALFORMED, layer.loc, f"{layer.type} '{layer.name}' has no "
                              f"`{key}`", f"give it, e.g. `{key} {{ num_output: 96 }}`")
            return Message(layer.loc)
        check_fields(p, key, self.source)
        return p

    def new_stage(self, layer: Layer, op: str, reads: list[Blob], kind: str,
                   comments: Sequence[str] = ()) -> Stage:
        sources = tuple(b.stage.name if b.stage is not None else NETWORK_INPUT for b in reads)
        above = self.draft.stages[-1].name if self.draft.stages else NETWORK_INPUT
        stage = self.draft.add(layer.name, [Op(op)], comments=list(comments))
        stage.sources = None if sources == (above,) else sources
        self.kinds[stage.name] = kind
        self.origins[stage.name] = {0: layer.index}
        return stage

    def chain(self, layer: Layer, op: str, shape: Shape, comments: Sequence[str] = (),
               blob: Blob | None = None) -> None:
        """A one-in, one-out layer: appended to the stage its bottom ends where it alone reads
        that blob (after a merge only an activation is), else a stage of its own."""
        blob = blob if blob is not None else self.one_bottom(layer)[0]
        definition = lookup(op.split("(")[0])
        tie = definition is not None and definition.tie
        stage = blob.stage
        if (stage is not None and self.versions.sole_reader(layer)
                and (tie or self.kinds[stage.name] != "merge")):
            stage.ops.append(Op(op, tied=tie))
            stage.comments.extend(comments)
            self.origins[stage.name][len(stage.ops) - 1] = layer.index
        else:
            stage = self.new_stage(layer, op, [blob], "other", comments)
        self.made(layer, stage, shape)

    def made(self, layer: Layer, stage: Stage | None, shape: Shape,
              flatten: str | None = None) -> None:
        for t in layer.top_names:
            self.blobs[t] = Blob(stage, shape, flatten=flatten)
