"""A `.caffemodel`'s trained weights as the imported spec's checkpoint (`alexnetc import
NET.prototxt NET.caffemodel --weights RUN_DIR`).

The weights are copied as Caffe's Net::CopyTrainedLayersFrom copies them: each layer of the
caffemodel, in the file's order, goes to the FIRST layer of the net with its name (Caffe lets
two layers share a name, as a convolution and its in-place ReLU), which must take as many
blobs as it brings (none, for a layer without parameters), each of the shape the net's own
layer has; a name given twice in the file is copied twice, the later copy winning. Each op
the importer made from a layer takes that layer's blobs, and a BatchNorm also the blobs of
the Scale folded into it:

- Convolution: weight (out x in/group x kh x kw), bias (out); InnerProduct: weight (out x
  in, or in x out with `transpose`), bias; PReLU: the slopes;
- BatchNorm: mean, variance and the moving-average factor they were summed with, divided by
  it (Caffe's own reading; a factor of 0 gives 0) into the running statistics; its Scale:
  the weight (γ) and bias (β).

A blob's shape is compared as Caffe's Blob::ShapeEquals does: the legacy 4-D fields (num,
channels, height, width) against the shape padded to four axes with leading 1s (BVLC's
AlexNet stores fc6's weight as 1x1x4096x9216), else exactly. A layer of the caffemodel whose
name the net does not have (a layer of another phase) is ignored, as Caffe ignores it; one
the net has but the imported network does not (cut by --skip-unsupported, or not on the path
to the output, as an auxiliary classifier) is left out, where Caffe would load it; each is
said in a note. A layer of the network whose weights the caffemodel lacks (Caffe would keep
its initial values), another number of blobs (blobs for a layer that takes none among them)
and a shape that differs are errors, one line each that names the layer and its line in the
prototxt.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alexnetc.importers.caffe.caffemodel import (
    Blob,
    CaffeLayer,
    Caffemodel,
    CaffemodelError,
    read_caffemodel,
)
from alexnetc.importers.caffe.convert import Converter
from alexnetc.importers.caffe.fields import boolean, opt, text_of
from alexnetc.importers.caffe.net import Layer
from alexnetc.importers.checkpoint import Lowered, lower
from alexnetc.importers.draft import Draft

FACTOR = "moving-average factor"  # BatchNorm's third blob: no tensor of its own

# The blobs of each Caffe layer type with parameters, in order, each by the tensor of the
# lowered op it fills (a bias only where the spec's op has one).
BLOBS: dict[str, tuple[str, ...]] = {
    "Convolution": ("weight", "bias"),
    "InnerProduct": ("weight", "bias"),
    "PReLU": ("weight",),
    "BatchNorm": ("running_mean", "running_var", FACTOR),
    "Scale": ("weight", "bias"),
}

PREPROCESSING = ("Caffe zoo models expect BGR images in 0–255 with their mean subtracted; "
                 "alexnetc feeds RGB less a per-channel mean (0 in this checkpoint), so eval "
                 "accuracy needs matching preprocessing")

ROWS_READ = 1 << 22  # values read at a time into a layer's own tensor (16 MiB of floats)

# Why a layer of the caffemodel with blobs has no place in the imported network.
IGNORED, CUT, OFF_PATH = "ignored", "cut", "off the path"


class Filling:
    """The caffemodel's layers going into the lowered spec's tensors, one at a time."""

    def __init__(self, lowered: Lowered, c: Converter, origins: Mapping[str, Mapping[int, int]],
                 model: Caffemodel) -> None:
        self.lowered = lowered
        self.c = c
        self.model = model
        self.first: dict[str, Layer] = {}  # each name's first layer in Caffe's net
        for layer in c.phase:
            self.first.setdefault(caffe_name(layer), layer)
        # each layer of the network with an op → the op (a folded Scale: its BatchNorm's)
        self.places = {i: (stage, index) for stage, ops in origins.items()
                       for index, i in ops.items()}
        self.places.update({scale: self.places[bn] for scale, bn in c.folded.items()
                            if bn in self.places})
        self.given: set[int] = set()  # the network's layers given blobs
        self.left: dict[str, list[str]] = {}  # why → the caffemodel's layers left out
        self.named = Counter(layer.name for layer in model.layers)
        self.seen: Counter[str] = Counter()

    def layer(self, source: CaffeLayer) -> None:
        """A layer of the caffemodel into the first layer of the net with its name."""
        self.seen[source.name] += 1
        target = self.first.get(source.name)
        why = self._absent(target)
        if why is not None:
            if source.blobs:
                self.left.setdefault(why, []).append(source.name)
            return
        assert target is not None
        self._copy(target, source)

    def _absent(self, target: Layer | None) -> str | None:
        """Why the net's layer is not in the imported network (None: it is)."""
        if target is None:
            return IGNORED
        if target.index not in self.c.layers:
            return OFF_PATH
        if self.c.cut_at is not None and target.index >= self.c.cut_at:
            return CUT
        return None

    def _names(self, layer: Layer) -> list[str]:
        """The blobs the layer takes, by the tensor each fills."""
        place = self.places.get(layer.index)
        slots = self.lowered.slots(*place) if place is not None else {}
        return [n for n in BLOBS.get(layer.type, ()) if n in slots or (n == FACTOR and slots)]

    def _copy(self, target: Layer, source: CaffeLayer) -> None:
        """The source's blobs into the tensors of the target's op, every count and shape
        checked first."""
        names, blobs, found = self._names(target), source.blobs, self._found(source)
        _check_count(target, names, len(blobs), found)
        if not names:
            return
        self.given.add(target.index)
        slots = self.lowered.slots(*self.places[target.index])
        flips = [name == "weight" and _transposed(target) for name in names]
        stored = [_stored(target, i, name, blob, found, (1,) if name == FACTOR else
                          tuple(self.lowered.like[slots[name]].shape), flip)
                  for i, (name, blob, flip) in enumerate(zip(names, blobs, flips, strict=True))]
        if FACTOR in names:  # BatchNorm's sums over its factor: a few values per channel
            values = {name: self._tensor(blob, shape)
                      for name, blob, shape in zip(names, blobs, stored, strict=True)}
            for name, t in _unscaled(values).items():
                self.lowered.fill(slots[name], t)
            return
        for name, blob, shape, flip in zip(names, blobs, stored, flips, strict=True):
            self._fill(slots[name], blob, shape, flip)

    def _fill(self, key: str, blob: Blob, stored: tuple[int, ...], flip: bool) -> None:
        """Tensor `key` from the blob: read in rows straight into the layer's own tensor
        where it has one, else whole and copied."""
        dest = self.lowered.claim(key)
        if dest is None:
            t = self._tensor(blob, stored)
            self.lowered.fill(key, t.T if flip else t)
            return
        into = dest.T if flip else dest  # as Caffe stores it
        step = max(1, ROWS_READ // max(1, into[0].numel()))
        for row in range(0, into.shape[0], step):
            rows = into[row:row + step]
            start = row * into[0].numel()
            rows.copy_(self._tensor(blob, tuple(rows.shape), start, start + rows.numel()))

    def _found(self, source: CaffeLayer) -> str:
        """The caffemodel, or the layer of it where the file gives a name more than once."""
        if self.named[source.name] == 1:
            return str(self.model.path)
        n = self.seen[source.name]
        return (f"{self.model.path} (its layer {n} of {self.named[source.name]} named "
                f"'{source.name}', which Caffe copies into the net's first of that name too)")

    def _tensor(self, blob: Blob, shape: tuple[int, ...], start: int = 0,
                stop: int | None = None) -> Any:
        """The blob's values [start, stop) (all by default) as a tensor of `shape`."""
        import torch

        values = self.model.values(blob, start, stop)
        dtype = torch.float64 if values.typecode == "d" else torch.float32
        return torch.frombuffer(values, dtype=dtype).reshape(shape)

    def notes(self) -> list[str]:
        """What to say of the layers left out, once every layer of the network that takes
        weights has been given them (a missing one is an error)."""
        for index in sorted(self.places):
            layer = self.c.layers[index]
            if index not in self.given and self._names(layer):
                raise CaffemodelError(f"{self.model.path} has no weights for {_where(layer)}"
                                      + self._shadowed(layer))
        empty = self.lowered.unfilled()
        if empty:
            raise CaffemodelError(f"{self.model.path} gives no value to {empty[0]} of the "
                                  "imported network")
        return [left_out_note(self.model.path, why, names) for why, names in self.left.items()]

    def _shadowed(self, layer: Layer) -> str:
        """Where an earlier layer of the net has the layer's name, which takes its weights."""
        first = self.first.get(caffe_name(layer))
        if first is None or first is layer:
            return ""
        return (f": Caffe copies the weights named '{first.name}' into the net's first layer "
                f"of that name, at line {first.loc.line}")


def write_weights(draft: Draft, origins: Mapping[str, Mapping[int, int]], c: Converter,
                  model: Path, path: Path, target: str) -> tuple[Path | None, list[str]]:
    """The caffemodel's weights as an `alexnetc train` checkpoint of the imported spec at
    `path`, and the notes to say about it; `origins` gives the Caffe layer (its index) each
    op of the (folded) draft came from. No checkpoint when the spec does not check (the
    command reports why)."""
    with read_caffemodel(model) as found:  # a file that is no caffemodel fails before lowering
        lowered = lower(draft, path)
        if lowered is None:
            return None, []
        filling = Filling(lowered, c, origins, found)
        for layer in found.layers:
            filling.layer(layer)  # its values in memory until they are copied
        notes = filling.notes()
    return lowered.save(path, target), [PREPROCESSING, *notes]


def caffe_name(layer: Layer) -> str:
    """The layer's name as Caffe matches it ("" where the prototxt gives none)."""
    f = layer.msg.get("name")
    return text_of(f) if f is not None else ""


def _check_count(layer: Layer, names: list[str], blobs: int, found: str) -> None:
    """As many blobs as the layer takes (Caffe: "Incompatible number of blobs")."""
    where = _where(layer)
    if not names and blobs:
        raise CaffemodelError(f"{where} has {_count(blobs)} in {found}, but the imported "
                              "network holds no weights for it")
    if names and not blobs:
        raise CaffemodelError(f"{found} has no weights for {where}")
    if names and blobs != len(names):
        raise CaffemodelError(f"{where} has {_count(blobs)} in {found}; the imported network "
                              f"takes {len(names)} ({', '.join(names)})")


def _stored(layer: Layer, i: int, name: str, blob: Blob, found: str, want: tuple[int, ...],
            flip: bool) -> tuple[int, ...]:
    """The shape Caffe stores blob `i` of the layer in, for the network's `want` (`flip`: an
    InnerProduct's weight with `transpose`, in x out), checked against the blob's."""
    stored = want[::-1] if flip else want
    if not _fits(blob, stored):
        raise CaffemodelError(f"blob {i} ({name}) of {_where(layer)} is {_shape(blob.shape)} "
                              f"in {found}, the imported network's is {_shape(stored)}")
    return stored


def _unscaled(values: dict[str, Any]) -> dict[str, Any]:
    """BatchNorm's sums divided by its moving-average factor (Caffe: 0 stays 0)."""
    if FACTOR not in values:
        return values
    factor = float(values.pop(FACTOR).item())
    scale = 0.0 if factor == 0 else 1.0 / factor
    return {name: t * scale for name, t in values.items()}


def _fits(blob: Blob, want: tuple[int, ...]) -> bool:
    """Caffe's Blob::ShapeEquals: legacy 4-D fields against the shape padded to 4 axes."""
    if blob.legacy:
        return len(want) <= 4 and blob.shape == (1,) * (4 - len(want)) + want
    return blob.shape == want


def _transposed(layer: Layer) -> bool:
    p = layer.msg.message("inner_product_param") if layer.type == "InnerProduct" else None
    return p is not None and opt(p, "transpose", boolean, False)


def _where(layer: Layer) -> str:
    return f"layer '{layer.name}' ({layer.type}, {layer.loc.file}:{layer.loc.line})"


def _shape(dims: tuple[int, ...]) -> str:
    return "x".join(map(str, dims)) or "a scalar"


def _count(n: int) -> str:
    return f"{n} blob{'s' if n != 1 else ''}"


# What happens to the layers left out, for one (True) and for several.
_LEFT_OUT = {
    IGNORED: ("is not in the imported network and is left out, as Caffe leaves them",
              "are not in the imported network and are left out, as Caffe leaves them"),
    CUT: ("is cut off by --skip-unsupported: its weights, which Caffe would load into the "
          "net, are left out",
          "are cut off by --skip-unsupported: their weights, which Caffe would load into the "
          "net, are left out"),
    OFF_PATH: ("does not lead to the network's output: its weights, which Caffe would load "
               "into the net, are left out with it",
               "do not lead to the network's output: their weights, which Caffe would load "
               "into the net, are left out with them"),
}


def left_out_note(model: str | Path, why: str, names: list[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:4]) + (", …" if len(names) > 4 else "")
    one, several = _LEFT_OUT[why]
    return (f"{len(names)} layer{'s' if len(names) != 1 else ''} of {model} with weights "
            f"{one if len(names) == 1 else several}: {shown}")
