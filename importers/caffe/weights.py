"""A `.caffemodel`'s trained weights as the imported spec's checkpoint (`alexnetc import
NET.prototxt NET.caffemodel --weights RUN_DIR`).

Caffe copies trained weights by layer name (Net::CopyTrainedLayersFrom), blob by blob, each
of the shape the net's own layer has; so does this. Each op the importer made from a layer
takes that layer's blobs, and a BatchNorm also the blobs of the Scale folded into it:

- Convolution: weight (out x in/group x kh x kw), bias (out); InnerProduct: weight (out x
  in, or in x out with `transpose`), bias; PReLU: the slopes;
- BatchNorm: mean, variance and the moving-average factor they were summed with, divided by
  it (Caffe's own reading; a factor of 0 gives 0) into the running statistics; its Scale:
  the weight (γ) and bias (β).

A blob's shape is compared as Caffe's Blob::ShapeEquals does: the legacy 4-D fields (num,
channels, height, width) against the shape padded to four axes with leading 1s (BVLC's
AlexNet stores fc6's weight as 1x1x4096x9216), else exactly. A layer of the caffemodel that
the imported network does not have (an auxiliary classifier, a layer of another phase) is left
out, as Caffe leaves it, and said in a note; one that the network has with no place for its
blobs, a layer whose weights the caffemodel lacks, another number of blobs and a shape that
differs are errors, one line each that names the layer and its line in the prototxt.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from alexnetc.importers.caffe.caffemodel import Blob, CaffeLayer, CaffemodelError, read_caffemodel
from alexnetc.importers.caffe.convert import Converter
from alexnetc.importers.caffe.fields import boolean, opt
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


class Filling:
    """The caffemodel's blobs going into the lowered spec's tensors, layer by layer."""

    def __init__(self, lowered: Lowered, found: list[CaffeLayer], model: Path) -> None:
        self.lowered = lowered
        self.found = {layer.name: layer for layer in found}  # the last of a name, as in Caffe
        self.model = model
        self.taken: set[str] = set()  # layers of the caffemodel whose blobs have a place
        self.filled: set[str] = set()  # canonical tensors given their values

    def op(self, stage: str, index: int, layers: list[Layer]) -> None:
        """Op `index` of `stage` from the Caffe layers it came from (a BatchNorm and its
        Scale)."""
        slots = self.lowered.slots(stage, index)
        for layer in layers:
            for key, value in self._values(layer, slots).items():
                self.lowered.state[key] = value.to(self.lowered.state[key].dtype)
                self.filled.add(key)

    def _values(self, layer: Layer, slots: Mapping[str, str]) -> dict[str, Any]:
        names = [n for n in BLOBS.get(layer.type, ()) if n in slots or (n == FACTOR and slots)]
        found = self.found.get(layer.name)
        blobs = found.blobs if found is not None else []
        where = _where(layer)  # the layer in the prototxt
        if not names:
            if blobs:
                raise CaffemodelError(f"{where} has {_count(len(blobs))} in {self.model}, but "
                                      "the imported network holds no weights for it")
            return {}
        if not blobs:
            raise CaffemodelError(f"{self.model} has no weights for {where}")
        if len(blobs) != len(names):
            raise CaffemodelError(f"{where} has {_count(len(blobs))} in {self.model}; the "
                                  f"imported network takes {len(names)} ({', '.join(names)})")
        self.taken.add(layer.name)
        values = {name: self._tensor(layer, i, name, blob, (1,) if name == FACTOR else
                                     tuple(self.lowered.state[slots[name]].shape))
                  for i, (name, blob) in enumerate(zip(names, blobs, strict=True))}
        return {slots[n]: t for n, t in _unscaled(values).items()}

    def _tensor(self, layer: Layer, i: int, name: str, blob: Blob,
                want: tuple[int, ...]) -> Any:
        """Blob `i` of the layer as a tensor of shape `want`, its shape checked against the
        one Caffe stores (an InnerProduct's weight with `transpose`: in x out)."""
        import torch

        flip = name == "weight" and _transposed(layer)
        stored = want[::-1] if flip else want
        if not _fits(blob, stored):
            raise CaffemodelError(f"blob {i} ({name}) of {_where(layer)} is "
                                  f"{_shape(blob.shape)} in {self.model}, the imported "
                                  f"network's is {_shape(stored)}")
        dtype = torch.float64 if blob.values.typecode == "d" else torch.float32
        t = torch.frombuffer(blob.values, dtype=dtype).reshape(stored)  # as Caffe stores it
        return t.T if flip else t

    def left_out(self) -> list[str]:
        """The caffemodel's layers with blobs that no op took: layers the imported network
        does not have (an op from a layer with blobs but no place for them failed in `op`).
        Every tensor of the network must have been filled (a counter aside)."""
        counters = {k for k, t in self.lowered.state.items() if not t.is_floating_point()}
        empty = sorted(set(self.lowered.state) - self.filled - counters)
        if empty:
            raise CaffemodelError(f"{self.model} gives no value to {empty[0]} of the imported "
                                  "network")
        return [name for name, layer in self.found.items()
                if layer.blobs and name not in self.taken]


def write_weights(draft: Draft, origins: Mapping[str, Mapping[int, str]], c: Converter,
                  model: Path, path: Path, target: str) -> tuple[Path | None, list[str]]:
    """The caffemodel's weights as an `alexnetc train` checkpoint of the imported spec at
    `path`, and the notes to say about it; `origins` names the Caffe layer each op of the
    (folded) draft came from. No checkpoint when the spec does not check (the command
    reports why)."""
    found = read_caffemodel(model)  # a file that is no caffemodel fails before any building
    lowered = lower(draft, path)
    if lowered is None:
        return None, []
    kept = {layer.name: layer for layer in c.layers.values()}
    scales = {bn: c.layers[i] for i, bn in c.folded.items()}
    filling = Filling(lowered, found, model)
    for stage, ops in origins.items():
        for index, name in ops.items():
            filling.op(stage, index, [kept[name], *([scales[name]] if name in scales else [])])
    left = filling.left_out()
    notes = [PREPROCESSING, *([left_out_note(model, left)] if left else [])]
    return lowered.save(path, target), notes


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


def left_out_note(model: Path, names: list[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in names[:4]) + (", …" if len(names) > 4 else "")
    return (f"{len(names)} layer{'s' if len(names) != 1 else ''} of {model} with weights "
            f"{'are' if len(names) != 1 else 'is'} not in the imported network and "
            f"{'are' if len(names) != 1 else 'is'} left out, as Caffe leaves them: {shown}")
