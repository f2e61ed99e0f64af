"""One conversion per Caffe layer type, keyed by the type in `HANDLERS`.

Each reads its parameter message, raises a located `Problem` for what alexnetc cannot express,
and adds the op to the draft: a stage of its own (Convolution, InnerProduct, the merges) or
the stage its bottom ends (ReLU, LRN, Pooling, …), with a comment for each Caffe convention
it converts.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from alexnetc.compiler.records import Shape
from alexnetc.importers.caffe.convert import Blob, Converter
from alexnetc.importers.caffe.fields import (
    Problem,
    boolean,
    call,
    dec,
    decimal,
    enum,
    loc_of,
    opt,
    positive,
    signed,
    single,
    string,
    value_loc,
)
from alexnetc.importers.caffe.inputs import data
from alexnetc.importers.caffe.net import CAFFE_TYPES, DATA_TYPES, WHY_NOT, Layer
from alexnetc.importers.caffe.recipe import _constant, init_keywords, multipliers
from alexnetc.importers.caffe.windows import read_window, slide, window_keywords
from alexnetc.importers.draft import side
from alexnetc.importers.prototxt import Message
from alexnetc.importers.source import INCONSISTENT, MALFORMED, UNSUPPORTED


def unsupported(c: Converter, layer: Layer) -> None:
    if layer.type in CAFFE_TYPES:
        why = WHY_NOT.get(layer.type, f"alexnetc has no counterpart of Caffe's {layer.type} "
                          "layer")
        python = layer.msg.message("python_param")
        if python is not None:
            code = ".".join(opt(python, k, string, "?") for k in ("module", "layer"))
            why = f"it runs Python code ({code}) that alexnetc cannot read"
        raise Problem(UNSUPPORTED, layer.type_loc, f"{layer.type} layer '{layer.name}': "
                      f"{why}", "rewrite the network without it, or import the part "
                      "before it with --skip-unsupported")
    raise Problem(UNSUPPORTED, layer.type_loc, f"layer type \"{layer.type}\" of "
                  f"'{layer.name}' is not BVLC Caffe's (a fork's or a custom layer?)",
                  "alexnetc reads BVLC Caffe's layer types; --skip-unsupported imports "
                  "the part before it")


def conv(c: Converter, layer: Layer) -> None:
    p = c.param(layer, "convolution_param", required=True)
    blob, shape = c.one_bottom(layer)
    out = _count(p, layer)
    _channel_axis(p, layer)
    window = read_window(p, layer, conv=True)
    group = opt(p, "group", positive, 1)
    size, uneven = slide(shape, window, layer, conv=True)
    keywords = window_keywords(window)
    if group != 1:
        keywords.append(("groups", str(group)))
    comments = []
    if uneven:
        keywords.append(("remainder", "drop"))
        comments.append("Caffe floors: remainder=drop")
    keywords += init_keywords(c.fillers, p)
    op = call("Conv", [side(*window.kernel), side(*window.stride)], keywords) + f" x{out}"
    stage = c.new_stage(layer, op, [blob], "weighted", comments)
    c.made(layer, stage, Shape(size.h, size.w, out))
    multipliers(c.recipe, layer, 2 if opt(p, "bias_term", boolean, True) else 1)


def fc(c: Converter, layer: Layer) -> None:
    p = c.param(layer, "inner_product_param", required=True)
    blob, _ = c.one_bottom(layer)
    out = _count(p, layer)
    _channel_axis(p, layer)
    comments = []
    if blob.flatten is not None:
        comments.append(f"{blob.flatten} left out: FC flattens its input")
    op = call("FC", [str(out)], init_keywords(c.fillers, p))
    stage = c.new_stage(layer, op, [blob], "weighted", comments)
    c.made(layer, stage, Shape(1, 1, out, flat=True))
    multipliers(c.recipe, layer, 2 if opt(p, "bias_term", boolean, True) else 1)


def pool(c: Converter, layer: Layer) -> None:
    p = c.param(layer, "pooling_param")
    blob, shape = c.one_bottom(layer)
    method = opt(p, "pool", enum("MAX", "AVE", "STOCHASTIC"), "MAX")
    if method == "STOCHASTIC":
        raise Problem(UNSUPPORTED, loc_of(p, "pool"), "stochastic pooling",
                      "alexnetc pools by MAX or AVE")
    if opt(p, "global_pooling", boolean, False):
        _global_pool(c, layer, blob, shape, method)
        return
    ceil = opt(p, "round_mode", enum("CEIL", "FLOOR"), "CEIL") == "CEIL"
    window = read_window(p, layer, conv=False)
    size, uneven = slide(shape, window, layer, conv=False, ceil=ceil)
    keywords = window_keywords(window)
    comments = []
    if uneven:
        keywords.append(("remainder", "ceil" if ceil else "drop"))
        comments.append("Caffe rounds up: remainder=ceil" if ceil else
                        "round_mode FLOOR: remainder=drop")
    name = "MaxPool" if method == "MAX" else "AvgPool"
    op = call(name, [side(*window.kernel), side(*window.stride)], keywords)
    c.chain(layer, op, size, comments, blob)


def _global_pool(c: Converter, layer: Layer, blob: Blob, shape: Shape, method: str) -> None:
    if shape.flat:
        raise Problem(UNSUPPORTED, layer.loc, f"global pooling of a flat vector in "
                      f"'{layer.name}'", "pool HxWxC maps")
    if method == "AVE":
        c.chain(layer, "GlobalAvgPool", Shape(1, 1, shape.c), (), blob)
        return
    c.chain(layer, f"MaxPool({side(shape.h, shape.w)},1)", Shape(1, 1, shape.c),
                [f"global_pooling over {shape.h}x{shape.w}"], blob)


def lrn(c: Converter, layer: Layer) -> None:
    """ACROSS_CHANNELS is ResNorm, WITHIN_CHANNEL MapNorm: Caffe divides alpha by the
    window's count (local_size, local_size²), and within a channel its own engine's Power
    layer adds 1 whatever `k` says (lrn_layer.cpp; a cuDNN build's LCN takes k instead)."""
    p = c.param(layer, "lrn_param")
    blob, shape = c.one_bottom(layer)
    within = opt(p, "norm_region", enum("ACROSS_CHANNELS", "WITHIN_CHANNEL"),
                 "ACROSS_CHANNELS") == "WITHIN_CHANNEL"
    if within and shape.flat:
        raise Problem(INCONSISTENT, loc_of(p, "norm_region"), f"LRN '{layer.name}' "
                      f"normalises within each channel of a flat blob ({shape.c} values)",
                      "Caffe's LRN reads (N, C, H, W) blobs: put it before the InnerProduct")
    size = opt(p, "local_size", positive, 5)
    if size % 2 == 0:
        raise Problem(MALFORMED, loc_of(p, "local_size"), f"local_size {size} is even",
                      "Caffe's LRN takes odd sizes only")
    alpha = opt(p, "alpha", decimal, Decimal(1))
    beta = opt(p, "beta", decimal, Decimal("0.75"))
    k = opt(p, "k", decimal, Decimal(1))
    window = size * size if within else size
    keywords = [("alpha", dec(alpha / window)), ("k", "1" if within else dec(k))]
    if beta != Decimal("0.75"):
        keywords.append(("beta", dec(beta)))
    op = call("MapNorm" if within else "ResNorm", [str(size)], keywords)
    c.chain(layer, op, shape, [_lrn_note(p, within, size, alpha, k)], blob)


def _lrn_note(p: Message, within: bool, size: int, alpha: Decimal, k: Decimal) -> str:
    """What the line converted, as Caffe wrote it."""
    if not within:
        return (f"Caffe LRN: alpha {dec(alpha)} / local_size {size}"
                + ("" if p.get("k") else ", default k 1"))
    unused = (f" (Caffe's own engine adds 1 whatever its k {dec(k)}; a cuDNN build passes k "
              "to cuDNN's LCN)" if k != 1 else "")
    return f"Caffe LRN WITHIN_CHANNEL: alpha {dec(alpha)} / local_size² {size * size}, k 1{unused}"


def relu(c: Converter, layer: Layer) -> None:
    p = c.param(layer, "relu_param")
    blob, shape = c.one_bottom(layer)
    slope = opt(p, "negative_slope", decimal, Decimal(0))
    if slope < 0:
        raise Problem(UNSUPPORTED, loc_of(p, "negative_slope"), f"a negative slope "
                      f"({dec(slope)})", "alexnetc's LeakyReLU takes slopes of 0 or more")
    c.chain(layer, "ReLU" if slope == 0 else f"LeakyReLU({dec(slope)})", shape, (),
                blob)


def prelu(c: Converter, layer: Layer) -> None:
    p = c.param(layer, "prelu_param")
    blob, shape = c.one_bottom(layer)
    if opt(p, "channel_shared", boolean, False):
        raise Problem(UNSUPPORTED, loc_of(p, "channel_shared"), "one PReLU slope shared by "
                      "every channel", "alexnetc's PReLU learns one slope per channel")
    filler = p.message("filler")
    start = _constant(filler) if filler is not None else Decimal("0.25")
    comments = [] if start == Decimal("0.25") else [
        f"Caffe starts the slopes at {dec(start) if start is not None else 'its filler'}, "
        "alexnetc at 0.25"]
    c.chain(layer, "PReLU", shape, comments, blob)


def activation(c: Converter, layer: Layer) -> None:
    blob, shape = c.one_bottom(layer)
    c.chain(layer, "Tanh" if layer.type == "TanH" else "Sigmoid", shape, (), blob)


def dropout(c: Converter, layer: Layer) -> None:
    p = c.param(layer, "dropout_param")
    blob, shape = c.one_bottom(layer)
    ratio = opt(p, "dropout_ratio", decimal, Decimal("0.5"))
    if not 0 <= ratio <= 1:
        raise Problem(MALFORMED, loc_of(p, "dropout_ratio"), f"dropout_ratio {dec(ratio)} "
                      "is not a probability", "give a value from 0 to 1")
    c.chain(layer, f"Dropout({dec(ratio)})", shape, (), blob)


def batch_norm(c: Converter, layer: Layer) -> None:
    p = c.param(layer, "batch_norm_param")
    blob, shape = c.one_bottom(layer)
    scale = _scale_after(c, layer)
    fraction = opt(p, "moving_average_fraction", decimal, Decimal("0.999"))
    eps = opt(p, "eps", decimal, Decimal("1e-5"))
    if not 0 <= fraction <= 1:
        raise Problem(MALFORMED, loc_of(p, "moving_average_fraction"),
                      f"moving_average_fraction {dec(fraction)} is not in [0, 1]")
    keywords = [] if eps == Decimal("1e-5") else [("eps", dec(eps))]
    keywords.append(("momentum", dec(1 - fraction)))
    note = f"Caffe BatchNorm+Scale: momentum 1 − {dec(fraction)}"
    if _trains(c) and opt(p, "use_global_stats", boolean, False):
        note += ("; use_global_stats: true is not kept (Caffe trains it on its stored "
                 "statistics, alexnetc on the batch's)")
    c.chain(layer, call("BatchNorm", [], keywords), shape, [note], blob)
    c.folded[scale.index] = layer.index


def _trains(c: Converter) -> bool:
    """A net that ends at its loss (a train_val), not at a deploy file's output."""
    return c.last is not None and c.last.type.endswith("Loss")


def _scale_after(c: Converter, layer: Layer) -> Layer:
    """The Scale layer that alone reads the BatchNorm's output, with a bias: together
    they are alexnetc's BatchNorm (Caffe's BatchNorm learns no scale or shift)."""
    readers = c.versions.next_readers(layer)
    scale = c.layers.get(readers[0]) if len(readers) == 1 else None
    if scale is None or scale.type != "Scale":
        raise Problem(UNSUPPORTED, layer.type_loc, f"BatchNorm '{layer.name}' without a "
                      "Scale layer after it", "Caffe's BatchNorm only normalises; alexnetc's "
                      "also learns a scale and a shift, which Caffe writes as a Scale layer "
                      "(bias_term: true) right after it")
    p = c.param(scale, "scale_param")
    if not opt(p, "bias_term", boolean, False):
        raise Problem(UNSUPPORTED, scale.type_loc, f"Scale '{scale.name}' after BatchNorm "
                      f"'{layer.name}' has no bias (bias_term: false)", "alexnetc's "
                      "BatchNorm learns a shift as well as a scale: give the Scale "
                      "`bias_term: true`")
    if len(scale.bottoms) != 1 or opt(p, "axis", signed, 1) != 1 \
            or opt(p, "num_axes", signed, 1) != 1:
        raise Problem(UNSUPPORTED, scale.loc, f"Scale '{scale.name}' scales other than one "
                      "factor per channel", "alexnetc's BatchNorm learns one per channel")
    return scale


def scale(c: Converter, layer: Layer) -> None:
    if layer.index not in c.folded:
        raise Problem(UNSUPPORTED, layer.type_loc, f"Scale '{layer.name}' does not follow "
                      "a BatchNorm", "alexnetc scales only inside BatchNorm")
    blob, shape = c.one_bottom(layer)
    c.made(layer, blob.stage, shape)


def concat(c: Converter, layer: Layer) -> None:
    p = c.param(layer, "concat_param")
    if not layer.bottoms or len(layer.tops) != 1:
        raise Problem(MALFORMED, layer.loc, f"Concat '{layer.name}' needs bottoms and one "
                      "top")
    blobs = [c.bottom(layer, i) for i in range(len(layer.bottoms))]
    shapes = [b.shape for b in blobs if b.shape is not None]
    if len(blobs) == 1:
        c.made(layer, blobs[0].stage, shapes[0])
        return
    axis_f = single(p, "axis") or single(p, "concat_dim")
    axis = signed(axis_f) if axis_f is not None else 1
    first = shapes[0]
    if axis not in ((1, -1) if first.flat else (1, -3)):
        raise Problem(UNSUPPORTED, axis_f.loc if axis_f else layer.loc,
                      f"Concat '{layer.name}' joins along axis {axis}",
                      "alexnetc concatenates channels (axis 1) only")
    for i, s in enumerate(shapes[1:], start=1):
        if (s.h, s.w, s.flat) != (first.h, first.w, first.flat):
            raise Problem(INCONSISTENT, value_loc(layer.bottoms[i]), f"Concat "
                          f"'{layer.name}' joins {first} and {s}", "Caffe concatenates "
                          "maps of one height and width")
    stage = c.new_stage(layer, "Concat", blobs, "merge")
    c.made(layer, stage, Shape(first.h, first.w, sum(s.c for s in shapes), first.flat))


def eltwise(c: Converter, layer: Layer) -> None:
    p = c.param(layer, "eltwise_param")
    operation = opt(p, "operation", enum("PROD", "SUM", "MAX"), "SUM")
    if operation != "SUM":
        raise Problem(UNSUPPORTED, loc_of(p, "operation"), f"Eltwise {operation} in "
                      f"'{layer.name}'", "alexnetc adds (Add); it has no element-wise "
                      "product or maximum")
    for f in p.all("coeff"):
        if decimal(f) != 1:
            raise Problem(UNSUPPORTED, f.loc, f"Eltwise '{layer.name}' weighs a bottom by "
                          f"{dec(decimal(f))}", "alexnetc's Add sums its inputs "
                          "unweighted")
    if len(layer.bottoms) < 2 or len(layer.tops) != 1:
        raise Problem(MALFORMED, layer.loc, f"Eltwise '{layer.name}' needs two bottoms or "
                      "more, and one top")
    blobs = [c.bottom(layer, i) for i in range(len(layer.bottoms))]
    shapes = [b.shape for b in blobs if b.shape is not None]
    for i, s in enumerate(shapes[1:], start=1):
        if s != shapes[0]:
            raise Problem(INCONSISTENT, value_loc(layer.bottoms[i]), f"Eltwise "
                          f"'{layer.name}' adds {shapes[0]} and {s}", "Caffe adds blobs "
                          "of one shape")
    stage = c.new_stage(layer, "Add", blobs, "merge")
    c.made(layer, stage, shapes[0])


def softmax(c: Converter, layer: Layer) -> None:
    if layer is not c.last:
        raise Problem(UNSUPPORTED, layer.type_loc, f"{layer.type} '{layer.name}' before "
                      "the network's end", "alexnetc applies Softmax as the last op only")
    p = c.param(layer, "softmax_param")
    if opt(p, "axis", signed, 1) not in (1, -1):
        raise Problem(UNSUPPORTED, loc_of(p, "axis"), "a softmax over another axis than the "
                      "classes", "alexnetc's Softmax is over the classes (axis 1)")
    if layer.type == "Softmax":
        blob, shape = c.one_bottom(layer)
        c.chain(layer, "Softmax", shape, (), blob)
        return
    if not layer.bottoms:
        raise Problem(MALFORMED, layer.loc, f"SoftmaxWithLoss '{layer.name}' has no bottom")
    blob = c.bottom(layer)
    assert blob.shape is not None
    c.chain(layer, "Softmax", blob.shape,
                [f"SoftmaxWithLoss '{layer.name}': the loss's softmax"], blob)


def split(c: Converter, layer: Layer) -> None:
    if len(layer.bottoms) != 1:
        raise Problem(MALFORMED, layer.loc, f"Split '{layer.name}' takes one bottom")
    blob = c.bottom(layer)
    assert blob.shape is not None
    c.made(layer, blob.stage, blob.shape)


def flatten(c: Converter, layer: Layer) -> None:
    """N × everything (FlattenParameter's defaults, axis 1 to the end) is what an FC reads;
    a Flatten of other axes has no counterpart."""
    if layer.type == "Flatten":
        p = c.param(layer, "flatten_param")
        axis, end = opt(p, "axis", signed, 1), opt(p, "end_axis", signed, -1)
        if axis not in (1, -3) or end not in (-1, 3):
            raise Problem(UNSUPPORTED, layer.type_loc, f"Flatten layer '{layer.name}' flattens "
                          f"axes {axis} to {end}", "alexnetc flattens only C, H and W together, "
                          "into an FC (FlattenParameter's defaults: axis 1, end_axis -1)")
    blob, shape = c.one_bottom(layer)
    c.made(layer, blob.stage, Shape(1, 1, shape.elements, flat=True),
           f"{layer.type} '{layer.name}'")


def reshape(c: Converter, layer: Layer) -> None:
    """A Reshape to N × everything (`shape { dim: 0 dim: -1 }`, or the count written out) is
    a Flatten, which only an FC may read; any other shape has no counterpart."""
    p = c.param(layer, "reshape_param")
    shape = c.one_bottom(layer)[1]
    dims = [signed(f) for m in p.messages("shape") for f in m.all("dim")]
    axis, num_axes = opt(p, "axis", signed, 0), opt(p, "num_axes", signed, -1)
    rest = shape.elements
    if (axis, num_axes) == (0, -1):
        flat = dims in ([0, -1], [0, rest], [-1, rest])
    else:
        flat = (axis, num_axes) in ((1, -1), (-3, -1)) and dims in ([-1], [rest])
    if not flat:
        raise Problem(UNSUPPORTED, layer.type_loc, f"Reshape layer '{layer.name}' reshapes "
                      f"{shape} to ({', '.join(map(str, dims))})", "alexnetc reshapes only "
                      "by flattening into an FC (`shape { dim: 0 dim: -1 }`)")
    flatten(c, layer)


def _count(p: Message, layer: Layer) -> int:
    f = single(p, "num_output")
    if f is None:
        raise Problem(MALFORMED, p.loc, f"{layer.type} '{layer.name}' has no `num_output`",
                      "give the number of outputs, e.g. `num_output: 96`")
    return positive(f)


def _channel_axis(p: Message, layer: Layer) -> None:
    if opt(p, "axis", signed, 1) != 1:
        raise Problem(UNSUPPORTED, loc_of(p, "axis"), f"{layer.type} '{layer.name}' works on "
                      "another axis than 1", "alexnetc's Conv and FC read whole images")


HANDLERS: dict[str, Callable[[Converter, Layer], None]] = {
    "Convolution": conv, "InnerProduct": fc, "Pooling": pool, "LRN": lrn, "ReLU": relu,
    "PReLU": prelu, "TanH": activation, "Sigmoid": activation, "Dropout": dropout,
    "BatchNorm": batch_norm, "Scale": scale, "Concat": concat, "Eltwise": eltwise,
    "Softmax": softmax, "SoftmaxWithLoss": softmax, "Split": split, "Flatten": flatten,
    "Reshape": reshape,
    **dict.fromkeys(DATA_TYPES, data),
}


def convert_layer(c: Converter, layer: Layer) -> None:
    HANDLERS.get(layer.type, unsupported)(c, layer)
