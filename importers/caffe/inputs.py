"""Where a Caffe net's image comes from: its `input:` fields (deploy files) or its data layers,
and the image size each states (a crop, a resize, a shape), or --input's where none does.
"""

from __future__ import annotations

from alexnetc.compiler.errors import SourceLoc
from alexnetc.compiler.records import Shape
from alexnetc.importers.caffe.convert import Blob, Converter
from alexnetc.importers.caffe.fields import Problem, boolean, opt, positive, string, whole
from alexnetc.importers.caffe.net import Layer
from alexnetc.importers.caffe.recipe import data_recipe
from alexnetc.importers.prototxt import Message
from alexnetc.importers.source import INCONSISTENT, MALFORMED, UNSUPPORTED


def net_inputs(c: Converter) -> None:
    """`input: "data"` with `input_dim` ×4 or `input_shape { dim … }` (deploy files)."""
    names = c.net.all("input")
    dims = c.net.all("input_dim")
    shapes = c.net.messages("input_shape")
    if dims and len(dims) != 4 * len(names):
        raise Problem(MALFORMED, dims[0].loc, f"{len(dims)} `input_dim` values for "
                      f"{len(names)} input(s)", "give four per input: N, C, H and W")
    for i, f in enumerate(names):
        size = ([positive(d) for d in dims[4 * i: 4 * i + 4]] if dims else
                [positive(d) for d in shapes[i].all("dim")] if i < len(shapes) else None)
        image_blob(c, string(f), size, f.loc, "the net states no `input_dim` or "
                         "`input_shape` for it: give its size with --input HxWxC")


def image_blob(c: Converter, name: str, dims: list[int] | None, loc: SourceLoc, hint: str) -> None:
    """An input blob of N, C, H, W: its size from --input if given, else from the file.
    One that has no size, or not four dimensions, is an error only once a layer reads
    it (a deploy file may declare labels it never uses)."""
    shape = Shape(dims[2], dims[3], dims[1]) if dims is not None and len(dims) == 4 else None
    if shape is not None and c.stated is None:
        c.stated = (shape.h, shape.w, shape.c)
    if c.options.input is not None:
        shape = Shape(*c.options.input)
    elif dims is not None and shape is None:
        c.unusable[name] = Problem(
            UNSUPPORTED, loc, f"the input \"{name}\" has {len(dims)} dimensions "
            f"({'x'.join(map(str, dims))})", "alexnetc's input is an image: N, C, H and W")
    elif shape is None:
        c.unusable[name] = Problem(INCONSISTENT, loc, f"the size of the input \"{name}\" "
                                      "is not stated", hint)
    c.blobs[name] = Blob(None, shape)


def data(c: Converter, layer: Layer) -> None:
    """A data layer's first top is the image, its second the labels; the image's size is
    the crop (Data, ImageData, WindowData) or what Input, MemoryData, DummyData state."""
    tops = layer.top_names
    if not tops:
        raise Problem(MALFORMED, layer.loc, f"data layer '{layer.name}' has no `top`")
    if layer.type == "Input":
        param = layer.msg.message("input_param")
        shapes = param.messages("shape") if param is not None else []
        for i, t in enumerate(tops):  # one shape for every top, or one for each
            shape = shapes[0] if len(shapes) == 1 else shapes[i] if i < len(shapes) else None
            image_blob(c, t, [positive(d) for d in shape.all("dim")] if shape else None,
                             shape.loc if shape else layer.loc,
                             "the Input layer states no shape: give it with --input HxWxC")
        return
    dims, hint = _data_dims(layer)
    image_blob(c, tops[0], dims, layer.loc, hint)
    for t in tops[1:]:
        c.blobs[t] = Blob(None, Shape(1, 1, 1, flat=True), label=True)
    data_recipe(c.recipe, layer)


def _data_dims(layer: Layer) -> tuple[list[int] | None, str]:
    """N, C, H, W of a data layer's images (N unknown: 1), and what to do if unknown."""
    msg = layer.msg
    if layer.type in ("MemoryData", "DummyData"):
        return _stated_dims(msg), (f"the {layer.type} layer states no size: give it with "
                                   "--input HxWxC")
    channels = _channels(msg)
    side = _crop(msg)
    if side is not None:
        return [1, channels, *side], ""
    source = ""
    for key in ("data_param", "image_data_param", "hdf5_data_param", "window_data_param"):
        p = msg.message(key)
        if p is not None and p.get("source") is not None:
            source = f" ({opt(p, 'source', string, '')})"
    return None, (f"the {layer.type} layer takes its images' size from its data{source}: "
                  f"give it with --input HxWxC, e.g. --input {_example(source, channels)}")


# The sizes of the data sets Caffe's own examples read, for the hint's example.
_KNOWN_DATA = {"mnist": "28x28x1", "cifar": "32x32x3"}


def _example(source: str, channels: int) -> str:
    """An --input for the hint: the known data set the source names, else AlexNet's crop."""
    return next((size for name, size in _KNOWN_DATA.items() if name in source.lower()),
                f"227x227x{channels}")


def _stated_dims(msg: Message) -> list[int] | None:
    """The size MemoryData or DummyData states: a `shape`, or channels, height and width."""
    p = msg.message("memory_data_param") or msg.message("dummy_data_param")
    if p is None:
        return None
    shapes = p.messages("shape")
    if shapes:
        return [positive(d) for d in shapes[0].all("dim")]
    c, h, w = (p.get(k) for k in ("channels", "height", "width"))
    if c is None or h is None or w is None:
        return None
    return [1, positive(c), positive(h), positive(w)]


def _crop(msg: Message) -> tuple[int, int] | None:
    """The crop a data layer takes (transform_param, or the deprecated fields), else the size
    ImageData resizes to."""
    for key in ("transform_param", "data_param", "image_data_param", "window_data_param"):
        p = msg.message(key)
        if p is None:
            continue
        side = opt(p, "crop_size", whole, 0)
        if side:
            return side, side
        h, w = opt(p, "crop_h", whole, 0), opt(p, "crop_w", whole, 0)
        if h and w:
            return h, w
    p = msg.message("image_data_param")
    if p is not None:
        h, w = opt(p, "new_height", whole, 0), opt(p, "new_width", whole, 0)
        if h and w:
            return h, w
    return None


def _channels(msg: Message) -> int:
    """Colour unless the layer says grey (`force_gray`, ImageData's `is_color: false`)."""
    t = msg.message("transform_param")
    if t is not None and opt(t, "force_gray", boolean, False):
        return 1
    p = msg.message("image_data_param")
    return 1 if p is not None and not opt(p, "is_color", boolean, True) else 3
