"""One conversion per Darknet layer kind, keyed by the kind: the output size by Darknet's
own rules, and the spec ops with the conventions they convert said in comments."""

from __future__ import annotations

from collections.abc import Callable

from alexnetc.compiler.ast import NETWORK_INPUT
from alexnetc.compiler.records import Shape
from alexnetc.importers.darknet.cfg import (
    CHANGES,
    CUT_HINT,
    KEYS,
    LOADING,
    TRAINING,
    WHY,
    WITHOUT,
    CfgLayer,
    Stop,
    Unsupported,
    Values,
    did_you_mean,
    ignored,
    neutral,
)
from alexnetc.importers.darknet.pools import (
    floor,
    one_remainder,
    pool_fit,
    pool_mismatch,
    pool_nearest,
    pool_note,
)
from alexnetc.importers.darknet.reader import Reader
from alexnetc.importers.darknet.recipe import crop_recipe
from alexnetc.importers.draft import Op, call, number, side
from alexnetc.importers.source import INCONSISTENT, MALFORMED, UNSUPPORTED


def forbidden_keys(r: Reader, layer: CfgLayer) -> None:
    """Keys that would make the layer one alexnetc does not have; warnings for keys that
    only steer Darknet's training and for keys Darknet does not read either."""
    if layer.kind in WITHOUT:
        return
    values = layer.values
    changes = CHANGES.get(layer.kind, {})
    for key, e in values.first.items():
        if key in changes:
            if not neutral(e.value, changes[key]) and not ignored(layer, key):
                why = f" ({WHY[key]})" if key in WHY else ""
                raise Unsupported(e.key_loc, f"`{key}={e.value}` makes a "
                                   f"[{layer.section.name}] that alexnetc does not "
                                   f"have{why}",
                                   f"remove `{key}` if the plain layer will do; "
                                   + CUT_HINT)
        elif key in TRAINING:
            r.source.warning(UNSUPPORTED, e.key_loc, f"`{key}={e.value}` steers "
                                "Darknet's training of this layer; alexnetc trains every "
                                "layer alike, so it is left out")
        elif key not in KEYS[layer.kind] and key not in LOADING:
            r.source.warning(MALFORMED, e.key_loc, f"[{layer.section.name}] has no "
                                f"key `{key}`; Darknet ignores it too ('Unused field')",
                                did_you_mean(key, KEYS[layer.kind]))


def _conv(r: Reader, layer: CfgLayer, x: Shape) -> Shape:
    v = layer.values
    _needs_maps(layer, x)
    n, size = v.integer("filters", 1, 1), v.integer("size", 1, 1)
    sy, sx = _strides(v)
    groups = v.integer("groups", 1, 1)
    pad = v.integer("pad", 0) != 0
    padding = size // 2 if pad else v.integer("padding", 0, 0)
    bn = v.integer("batch_normalize", 0) != 0
    if min(x.h, x.w) + 2 * padding < size:
        raise r.too_small(layer, x, size, padding)
    out = Shape(floor(x.h, size, sy, 2 * padding), floor(x.w, size, sx, 2 * padding), n)
    if x.c % groups or n % groups:
        raise Unsupported(v.loc("groups"), f"groups={groups} does not divide the "
                           f"{x.c} input and {n} output channels (Darknet floors the "
                           "channels per group)", "use groups that divide both", out)
    if padding > size // 2:
        raise Unsupported(v.loc("padding"), f"padding={padding} is more than half the "
                           f"{size}-pixel kernel", "alexnetc pads a convolution by at most "
                           f"size/2 = {size // 2}; " + CUT_HINT, out)
    act, comments = r.activation_op(layer, "logistic")
    args = [str(size), side(sy, sx)]
    args += [f"pad={padding}"] if padding else []
    args += [f"groups={groups}"] if groups > 1 else []
    args += ["bias=false"] if bn else []
    drop = _floor_note(x, size, (sy, sx), padding)
    args += ["remainder=drop"] if drop else []
    notes = r.once("pad", "Darknet pad=1 pads size/2") if pad and padding else []
    notes += [drop] if drop else []
    notes += r.batchnorm_notes() if bn else []
    ops = [Op(call("Conv", args) + f" x{n}")] + ([Op(_BATCHNORM)] if bn else []) + act
    r.stage(layer, "conv", ops, notes + comments)
    return out


def _connected(r: Reader, layer: CfgLayer, x: Shape) -> Shape:
    v = layer.values
    n = v.integer("output", 1, 1)
    bn = v.integer("batch_normalize", 0) != 0
    act, comments = r.activation_op(layer, "logistic")
    ops = [Op(call("FC", [str(n)] + (["bias=false"] if bn else [])))]
    ops += ([Op(_BATCHNORM)] if bn else []) + act
    r.stage(layer, "fc", ops, (r.batchnorm_notes() if bn else []) + comments)
    return Shape(1, 1, n, flat=True)


def _maxpool(r: Reader, layer: CfgLayer, x: Shape) -> Shape:
    v = layer.values
    _needs_maps(layer, x)
    sy, sx = _strides(v)
    size = v.integer("size", v.integer("stride", 1, 1), 1)
    padding = v.integer("padding", size - 1, 0)
    if min(x.h, x.w) + padding < size:
        raise r.too_small(layer, x, size, padding)
    out = Shape(floor(x.h, size, sy, padding), floor(x.w, size, sx, padding), x.c)
    fits = [pool_fit(length, size, s, padding, n)
            for length, s, n in ((x.h, sy, out.h), (x.w, sx, out.w))]
    mode = one_remainder([f[1] for f in fits if f is not None])
    if None in fits or mode is None:
        raise Unsupported(v.loc("padding") if v.given("padding") else layer.section.loc,
                           pool_mismatch(x, size, (sy, sx), padding, out, v),
                           pool_nearest(x, size, (sy, sx), padding) + "; " + CUT_HINT,
                           out)
    pad = fits[0][0] if fits[0] else 0
    args = [str(size), side(sy, sx)] + ([f"pad={pad}"] if pad else [])
    args += [f"remainder={mode}"] if mode != "error" else []
    note = pool_note(padding, v.given("padding"), pad, mode)
    r.stage(layer, "pool", [Op(call("MaxPool", args))], r.once(note, note))
    return out


def _avgpool(r: Reader, layer: CfgLayer, x: Shape) -> Shape:
    _needs_maps(layer, x)
    r.stage(layer, "avgpool", [Op("GlobalAvgPool")],
                r.once("avg", "Darknet's [avgpool] averages each whole map"))
    return Shape(1, 1, x.c)


def _dropout(r: Reader, layer: CfgLayer, x: Shape) -> Shape:
    v = layer.values
    p = v.real("probability", 0.5)
    if not 0 <= p < 1:
        e = v.entry("probability")
        assert e is not None
        raise v.bad(e, "a probability in [0, 1)")
    comments = [] if v.given("probability") else \
        ["no probability=: pjreddie's default 0.5 (AlexeyAB's fork: 0.2)"]
    r.tie(layer, "drop", [Op(f"Dropout({number(p)})")], comments)
    return x


def _softmax(r: Reader, layer: CfgLayer, x: Shape) -> Shape:
    v = layer.values
    if v.integer("groups", 1, 1) != 1:
        raise Unsupported(v.loc("groups"), "a softmax over groups of channels has no "
                           "alexnetc counterpart", CUT_HINT, x)
    if not r.is_last(layer):
        raise Unsupported(layer.section.loc, "a [softmax] before other layers: alexnetc "
                           "applies Softmax to the network's output only", CUT_HINT, x)
    r.tie(layer, "softmax", [Op("Softmax", tied=True)])
    return x


def _cost(r: Reader, layer: CfgLayer, x: Shape) -> Shape:
    if not r.is_last(layer):
        raise Unsupported(layer.section.loc, "a [cost] before other layers", CUT_HINT, x)
    kind = layer.values.text("type", "sse")
    r.draft.setting_notes.append(f"[cost] type={kind}: alexnetc trains with "
                                    "cross-entropy on the softmax instead")
    return _passthrough(r, layer, x)


def _route(r: Reader, layer: CfgLayer, x: Shape) -> Shape:
    reads = r.reads[layer.index]
    shapes = [r.shapes[i] for i in reads]
    first = shapes[0]
    if len(reads) == 1:
        r.alias[layer.index] = r.alias.get(reads[0], NETWORK_INPUT)
        r.pending.append(f"[route] layer {layer.index} reads layer {reads[0]} "
                            f"({r.alias[layer.index]})")
        return first
    odd = next((i for i, s in zip(reads, shapes, strict=True)
                if (s.h, s.w) != (first.h, first.w)), None)
    if odd is not None:
        r.source.error(INCONSISTENT, layer.values.loc("layers"),
                          f"{layer.title} joins {r.named(reads[0])} and "
                          f"{r.named(odd)}, whose heights and widths differ",
                          "Darknet concatenates channels of maps of one size "
                          "('The width and height of the input layers are different')")
        raise Stop()
    if len({s.flat for s in shapes}) > 1:
        raise Unsupported(layer.values.loc("layers"), "a [route] joining a [connected] "
                           "layer's vector with maps", CUT_HINT)
    out = Shape(first.h, first.w, sum(s.c for s in shapes), first.flat)
    r.stage(layer, "route", [Op("Concat")], reads=reads)
    return out


def _shortcut(r: Reader, layer: CfgLayer, x: Shape) -> Shape:
    reads = r.reads[layer.index]
    for i in reads:
        if r.shapes[i] != x:
            raise Unsupported(layer.values.loc("from"), "the shortcut adds "
                               f"{r.named(i)} to {r.named(layer.index - 1)}: "
                               "Darknet adds the channels they share, subsampling the "
                               "larger map; alexnetc's Add takes equal shapes",
                               "give the shortcut a projection: a [route] back to layer "
                               f"{i}, a 1x1 [convolutional] with stride and filters that "
                               f"give {x}, then the [shortcut] (torchvision's ResNets); "
                               + CUT_HINT, x)
    act, comments = r.activation_op(layer, "linear")
    r.stage(layer, "shortcut", [Op("Add"), *act], comments,
                reads=[layer.index - 1, *reads])
    return x


def _crop(r: Reader, layer: CfgLayer, x: Shape) -> Shape:
    v = layer.values
    if layer.index != 0:
        raise Unsupported(layer.section.loc, "a [crop] inside the network: alexnetc crops "
                           "only the input image", CUT_HINT)
    h, w = v.integer("crop_height", 1, 1), v.integer("crop_width", 1, 1)
    if h > x.h or w > x.w:
        r.source.error(INCONSISTENT, v.loc("crop_height" if h > x.h else "crop_width"),
                          f"{layer.title} crops {h}x{w} from a {x.h}x{x.w} image",
                          "crop at most the [net] size")
        raise Stop()
    out = Shape(h, w, x.c)
    r.draft.input = (h, w, x.c)
    crop_recipe(v, x, out, r.draft)
    return _passthrough(r, layer, out)


def _batchnorm(r: Reader, layer: CfgLayer, x: Shape) -> Shape:
    r.stage(layer, "bn", [Op(_BATCHNORM)], r.batchnorm_notes())
    return x


def _activation(r: Reader, layer: CfgLayer, x: Shape) -> Shape:
    act, comments = r.activation_op(layer, "linear")
    if not act:
        return _passthrough(r, layer, x)
    r.stage(layer, "act", [Op(act[0].text)], comments)
    return x


def _passthrough(r: Reader, layer: CfgLayer, x: Shape) -> Shape:
    """A layer with no op of its own: it holds what the layer before it holds."""
    r.alias[layer.index] = r.before(layer.index)
    return x


_BATCHNORM = "BatchNorm(momentum=0.01)"


def _floor_note(x: Shape, size: int, strides: tuple[int, int], padding: int) -> str:
    """The comment for a convolution whose windows do not tile ('' if they do)."""
    for length, stride in zip((x.h, x.w), strides, strict=True):
        span = length + 2 * padding - size
        if span % stride:
            return (f"Darknet floors: ({length} + 2·{padding} − {size}) = {span} is not a "
                    f"multiple of {stride}: remainder=drop")
    return ""


def _strides(v: Values) -> tuple[int, int]:
    """(down, across), as parser.c reads stride_y, stride_x and stride."""
    stride = v.integer("stride", 1, 1)
    return v.integer("stride_y", stride, 1), v.integer("stride_x", stride, 1)


def _needs_maps(layer: CfgLayer, x: Shape) -> None:
    if x.flat:
        raise Unsupported(layer.section.loc, f"[{layer.section.name}] after a [connected] "
                           "layer: Darknet takes the vector as a 1x1 map, alexnetc's "
                           "convolutions and pools need maps", CUT_HINT)


HANDLERS: dict[str, Callable[[Reader, CfgLayer, Shape], Shape]] = {
    "conv": _conv, "connected": _connected, "maxpool": _maxpool, "avgpool": _avgpool,
    "dropout": _dropout, "softmax": _softmax, "route": _route, "shortcut": _shortcut,
    "crop": _crop, "cost": _cost, "batchnorm": _batchnorm, "activation": _activation,
    "empty": _passthrough,
}


def convert_layer(r: Reader, layer: CfgLayer, x: Shape) -> Shape:
    if layer.kind in WITHOUT:
        raise Unsupported(layer.section.loc, f"{WITHOUT[layer.kind]} has no alexnetc "
                          "counterpart", CUT_HINT)
    return HANDLERS[layer.kind](r, layer, x)
