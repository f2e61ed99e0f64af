"""Convolution and pooling windows as Caffe reads them, and the sizes they make by Caffe's own
rounding (conv_layer.cpp floors; pooling_layer.cpp takes the ceiling and clips a last window
that starts in the padding).
"""

from __future__ import annotations

from dataclasses import dataclass

from alexnetc.compiler.errors import SourceLoc
from alexnetc.compiler.records import Shape
from alexnetc.importers.caffe.fields import Problem, whole
from alexnetc.importers.caffe.net import Layer
from alexnetc.importers.draft import side
from alexnetc.importers.prototxt import Field, Message
from alexnetc.importers.source import INCONSISTENT, MALFORMED, UNSUPPORTED


def conv_length(n: int, k: int, s: int, p: int, d: int = 1) -> tuple[int, bool]:
    """conv_layer.cpp: (n + 2p − span) / s + 1 in integers (floor); whether pixels drop."""
    total = n + 2 * p - (d * (k - 1) + 1)
    return total // s + 1, total % s != 0


def pool_length(n: int, k: int, s: int, p: int, ceil: bool) -> tuple[int, bool]:
    """pooling_layer.cpp: the ceiling of (n + 2p − k) / s, plus one; with padding, a last
    window starting in the right padding is dropped; whether the windows do not tile."""
    total = n + 2 * p - k
    out = (-(-total // s) if ceil else total // s) + 1
    if ceil and p and (out - 1) * s >= n + p:
        out -= 1
    return out, total % s != 0


@dataclass
class Window:
    """A Convolution's or Pooling's kernel, stride, pad and dilation, each (h, w), and where
    its kernel and pad are written."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int]
    loc: SourceLoc
    pad_loc: SourceLoc


def read_window(p: Message, layer: Layer, conv: bool) -> Window:
    """kernel/stride/pad (each one value, two for HxW, or the _h/_w pair) and dilation, as
    Caffe's base_conv_layer.cpp and pooling_layer.cpp read them."""
    kernel, kernel_loc = _pair(p, "kernel_size", None, layer)
    stride, _ = _pair(p, "stride", 1, layer)
    pad, pad_loc = _pair(p, "pad", 0, layer)
    dilation = _pair(p, "dilation", 1, layer, split=False)[0] if conv else (1, 1)
    if min(*kernel, *stride, *dilation) < 1:
        raise Problem(MALFORMED, kernel_loc, "kernel, stride and dilation must be at least 1",
                      "a window covers at least one pixel and moves by at least one")
    return Window(kernel, stride, pad, dilation, kernel_loc, pad_loc)


def _pair(p: Message, key: str, default: int | None, layer: Layer,
          split: bool = True) -> tuple[tuple[int, int], SourceLoc]:
    """`key` once (square) or twice (HxW), or `kernel_h`/`kernel_w` for `kernel_size` (and
    `stride_h`, `pad_h`); without a default the field is required."""
    values = _ints(p, key)
    stem = key.removesuffix("_size")
    h_f, w_f = (p.get(f"{stem}_h"), p.get(f"{stem}_w")) if split else (None, None)
    if values and (h_f or w_f):
        raise Problem(MALFORMED, (h_f or w_f).loc,  # type: ignore[union-attr]
                      f"both `{key}` and `{stem}_h`/`{stem}_w` are given",
                      "give one or the other")
    if len(values) > 2:
        raise Problem(UNSUPPORTED, values[2][1].loc, f"{len(values)} values of `{key}`: a "
                      f"{len(values)}-D window", "alexnetc's windows are 2-D")
    if values:
        return (values[0][0], values[-1][0]), values[0][1].loc
    if h_f is not None and w_f is not None:
        return (whole(h_f), whole(w_f)), h_f.loc
    if h_f is not None or w_f is not None:
        raise Problem(MALFORMED, (h_f or w_f).loc,  # type: ignore[union-attr]
                      f"`{stem}_h` and `{stem}_w` go together", "give both")
    if default is None:
        raise Problem(MALFORMED, p.loc, f"{layer.type} '{layer.name}' has no `{key}`",
                      f"give its window, e.g. `{key}: 3`")
    return (default, default), p.loc


def _ints(msg: Message, key: str) -> list[tuple[int, Field]]:
    return [(whole(f), f) for f in msg.all(key)]


def slide(shape: Shape, window: Window, layer: Layer, conv: bool,
           ceil: bool = True) -> tuple[Shape, bool]:
    """The output size by Caffe's rule for the layer, and whether its windows do not tile."""
    if shape.flat:
        raise Problem(UNSUPPORTED, layer.loc, f"{layer.type} '{layer.name}' reads a flat "
                      f"vector of {shape.c}", "alexnetc slides windows over HxWxC maps only")
    sizes = []
    uneven = False
    for n, k, s, p, d in zip((shape.h, shape.w), window.kernel, window.stride, window.pad,
                             window.dilation, strict=True):
        span = d * (k - 1) + 1
        if n + 2 * p < span:
            raise Problem(INCONSISTENT, window.loc, f"the window of {span} is larger than the "
                          f"{n}-pixel input of '{layer.name}'" + (f" padded by {p}" if p else ""),
                          "use a smaller window")
        if p > span // 2:
            raise Problem(UNSUPPORTED, window.pad_loc, f"{layer.type} '{layer.name}' pads by "
                          f"{p}, more than half its window of {span}", "alexnetc pads at most "
                          "half a window each side (Caffe widens the output with the padding)")
        out, odd = conv_length(n, k, s, p, d) if conv else pool_length(n, k, s, p, ceil)
        sizes.append(out)
        uneven = uneven or odd
    return Shape(sizes[0], sizes[1], shape.c), uneven


def window_keywords(window: Window) -> list[tuple[str, str]]:
    out = []
    if window.pad != (0, 0):
        out.append(("pad", side(*window.pad)))
    if window.dilation != (1, 1):
        out.append(("dilation", side(*window.dilation)))
    return out
