"""Darknet's maxpool padding rules (maxpool_layer.c: `padding` defaults to size − 1, split
padding/2 before the input and the rest after it) and which alexnetc remainder mode, if any,
gives the same output size."""

from __future__ import annotations

from alexnetc.compiler.records import Shape
from alexnetc.importers.darknet.cfg import Values
from alexnetc.importers.draft import call, side


def floor(length: int, size: int, stride: int, padding: int) -> int:
    """Darknet's output length, (length + padding − size)/stride + 1 (the window fits:
    C's division of a negative span would truncate towards zero instead)."""
    return (length + padding - size) // stride + 1


def pool_fit(length: int, size: int, stride: int, padding: int,
              out: int) -> tuple[int, str] | None:
    """alexnetc's pad and remainder for a Darknet maxpool along one axis, if any gives the
    same windows: Darknet's first window starts padding/2 before the input (integer
    division) and it makes (length + padding − size)/stride + 1 of them; a window reaching
    past the input is clipped in both."""
    pad = padding // 2
    span = length + 2 * pad - size
    if pad > size // 2 or span < 0:
        return None
    if out == span // stride + 1:
        return pad, "error" if span % stride == 0 else "drop"
    ceil = span // stride + 2
    if (ceil - 1) * stride >= length + pad:  # PyTorch drops a window wholly in the padding
        ceil -= 1
    return (pad, "ceil") if span % stride and out == ceil else None


def one_remainder(modes: list[str]) -> str | None:
    """One remainder= for both axes (an axis that tiles takes any)."""
    uneven = set(modes) - {"error"}
    if len(uneven) > 1:
        return None
    return uneven.pop() if uneven else "error"


def pool_note(padding: int, given: bool, pad: int, mode: str) -> str:
    if padding == 0:
        return "Darknet floors: remainder=drop" if mode == "drop" else ""
    before, after = padding // 2, padding - padding // 2
    head = f"Darknet maxpool padding={padding}" + ("" if given else " (its default, size−1)")
    head += f": {before} before the input, {after} after"
    tail = {"error": f": pad={pad}, the same windows" if pad else ": the windows tile "
            "without it", "drop": ": Darknet floors, remainder=drop",
            "ceil": ": a last window over the edge, remainder=ceil"}[mode]
    return head + tail


def pool_mismatch(x: Shape, size: int, strides: tuple[int, int], padding: int, out: Shape,
                   v: Values) -> str:
    default = "padding" if v.given("padding") else "default padding size−1 ="
    return (f"Darknet's maxpool (size {size}, stride {side(*strides)}, {default} {padding}) "
            f"pads {padding // 2} before the input and {padding - padding // 2} after it, so "
            f"{x.h}x{x.w} gives {out.h}x{out.w}; alexnetc's pools pad both sides alike")


def pool_nearest(x: Shape, size: int, strides: tuple[int, int], padding: int) -> str:
    """What alexnetc's nearest pool gives, for the hint of one that does not fit."""
    pad = min(padding // 2, size // 2)
    h, w = (floor(n, size, s, 2 * pad) for n, s in zip((x.h, x.w), strides, strict=True))
    args = [str(size), side(*strides)] + ([f"pad={pad}"] if pad else [])
    return f"alexnetc's {call('MaxPool', [*args, 'remainder=drop'])} gives {h}x{w} here" \
        if min(h, w) > 0 else "no alexnetc pool gives these windows"
