"""Fields: each layer's receptive field, effective stride and centre offset, per axis.

The standard recurrences, from the op's `window` (span k, stride s, leading padding p), with
j the input's effective stride: r' = r + (k − 1)·j, j' = j·s, c' = c + ((k − 1)/2 − p)·j.
A merge sees what any of its inputs sees: per axis the union of its inputs' fields (the
largest when they share a centre, as 'same'-padded branches do), with the largest of their
strides, so the field it gives later layers is never smaller than a path's.
"""

from __future__ import annotations

from alexnetc.compiler.graph import INPUT, Key, topo_ops
from alexnetc.compiler.passes import Context
from alexnetc.compiler.records import Field, Window
from alexnetc.compiler.registry import OpDef


def run(ctx: Context) -> None:
    g = ctx.graph
    for n in topo_ops(g):
        node = g.nodes[n]
        if Key.SHAPE not in node:
            continue
        fields = [Field.pixel() if i == INPUT else g.nodes[i][Key.FIELD]
                  for i in node[Key.INPUTS]]
        op: OpDef = node[Key.OP]
        node[Key.FIELD] = through(op.window(node[Key.ARGS], node[Key.IN_SHAPE]), union(fields))


def through(window: Window | None, f: Field) -> Field:
    """The field after a window (None: the same positions)."""
    if window is None:
        return f
    (kh, kw), (sh, sw), (ph, pw) = window.span, window.stride, window.pad
    return Field(f.h + (kh - 1) * f.stride_h, f.w + (kw - 1) * f.stride_w,
                 f.stride_h * sh, f.stride_w * sw,
                 f.offset_h + ((kh - 1) / 2 - ph) * f.stride_h,
                 f.offset_w + ((kw - 1) / 2 - pw) * f.stride_w)


def union(fields: list[Field]) -> Field:
    """What a merge's output position sees: per axis, every input's field together."""
    if len(fields) == 1:
        return fields[0]
    h, sh, oh = _axis([(f.h, f.stride_h, f.offset_h) for f in fields])
    w, sw, ow = _axis([(f.w, f.stride_w, f.offset_w) for f in fields])
    return Field(h, w, sh, sw, oh, ow)


def _axis(parts: list[tuple[int, int, float]]) -> tuple[int, int, float]:
    lo = min(c - (r - 1) / 2 for r, _, c in parts)
    hi = max(c + (r - 1) / 2 for r, _, c in parts)
    return round(hi - lo) + 1, max(s for _, s, _ in parts), (lo + hi) / 2

