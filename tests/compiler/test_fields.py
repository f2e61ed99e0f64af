"""Receptive fields, effective strides and centre offsets (the fields pass), and training
multiply-adds (the counts pass): AlexNet's published values, and random chains and branching
networks against an independent computation, which walks one output position's input interval
back through every layer (no recurrence)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.pipeline import check

from helpers import SPECS

ALEXNET_FIELDS = {  # the published receptive fields and strides of AlexNet's stages, and the
    # centre of the first position's field (padding from conv2 on moves it off (size − 1)/2)
    "conv1.0": (11, 4, 5), "conv1.3": (19, 8, 9), "conv2.0": (51, 8, 9),
    "conv2.3": (67, 16, 17), "conv3.0": (99, 16, 17), "conv4.0": (131, 16, 17),
    "conv5.0": (163, 16, 17), "conv5.2": (195, 32, 33),
}


def _net(text: str) -> CheckedNetwork:
    result = check(text)
    assert result.network is not None, [d.message for d in result.diagnostics]
    return result.network


def test_alexnet_published_fields() -> None:
    net = _net((SPECS / "alexnet.net").read_text())
    layers = {layer.id: layer for layer in net.layers()}
    for lid, (size, stride, centre) in ALEXNET_FIELDS.items():
        f = layers[lid].field
        assert (f.h, f.w, f.stride_h, f.stride_w) == (size, size, stride, stride), lid
        assert f.offset_h == f.offset_w == centre, lid
    assert (layers["conv1.1"].field, layers["conv1.2"].field) == (layers["conv1.0"].field,) * 2


def test_training_multiply_adds() -> None:
    """The weights' gradient costs the forward again, the input's once more, except where
    nothing before the layer is learnt (conv1 reads the image)."""
    net = _net((SPECS / "alexnet.net").read_text())
    for layer in net.layers():
        c = layer.counts
        assert c.train_macs == c.macs * (2 if layer.stage == "conv1" else 3), layer.id
    total = net.total()
    assert total.macs == 724_406_816
    assert total.train_macs == 3 * total.macs - 105_415_200


def test_a_pool_before_the_first_conv_needs_no_input_gradient() -> None:
    net = _net("network P\ninput 16x16x1\na: MaxPool(2,2); Conv(3,1) x2\nb: Conv(3,1) x2\n")
    conv_a, conv_b = (x for x in net.layers() if x.counts.macs)
    assert conv_a.counts.train_macs == 2 * conv_a.counts.macs
    assert conv_b.counts.train_macs == 3 * conv_b.counts.macs


def test_rectangular_dilated_padded_window() -> None:
    net = _net("network R\ninput 21x20x1\n"
               "a: Conv(3x5,2x1, pad=1x0, dilation=2x1) x1; MaxPool(2,2, remainder=drop)\n")
    conv, pool = net.layers()
    assert (conv.field.h, conv.field.w, conv.field.stride_h, conv.field.stride_w) == (5, 5, 2, 1)
    assert (conv.field.offset_h, conv.field.offset_w) == (1.0, 2.0)
    assert (pool.field.h, pool.field.w, pool.field.stride_h, pool.field.stride_w) == (7, 6, 4, 2)
    assert (pool.field.offset_h, pool.field.offset_w) == (2.0, 2.5)


def test_global_pool_and_fc_see_everything_they_read() -> None:
    net = _net("network G\ninput 9x9x1\na: Conv(3,2) x2; GlobalAvgPool; FC(3); FC(2)\n")
    conv, gap, fc1, fc2 = net.layers()
    assert (conv.field.h, gap.field.h, fc1.field.h, fc2.field.h) == (3, 9, 9, 9)
    assert fc1.field == fc2.field == gap.field


# --- the independent computation: one output position's input interval, walked back --------

@dataclass(frozen=True)
class _Op:
    text: str
    span: int
    stride: int
    pad: int  # before the first pixel


def _back(ops: list[_Op], lo: int, hi: int) -> tuple[int, int]:
    for op in reversed(ops):
        lo, hi = lo * op.stride - op.pad, hi * op.stride - op.pad + op.span - 1
    return lo, hi


@st.composite
def _window(draw: st.DrawFn, keep_size: bool = False) -> _Op:
    k, d = draw(st.integers(1, 4)), draw(st.integers(1, 2))
    span = d * (k - 1) + 1
    if keep_size:  # output as large as the input, so branches can merge
        if draw(st.booleans()):
            return _Op(f"Conv({k},1, pad=same, dilation={d}) x2", span, 1, (span - 1) // 2)
        k = draw(st.sampled_from([1, 3, 5]))
        return _Op(f"MaxPool({k},1, pad={k // 2})", k, 1, k // 2)
    s, p = draw(st.integers(1, 3)), draw(st.integers(0, span // 2))
    if draw(st.booleans()):
        return _Op(f"Conv({k},{s}, pad={p}, dilation={d}, remainder=drop) x2", span, s, p)
    p = draw(st.integers(0, k // 2))
    return _Op(f"AvgPool({k},{s}, pad={p}, remainder=drop)", k, s, p)


def _text(stages: list[tuple[str, str, list[_Op]]]) -> str:
    lines = ["network N", "input 64x64x2"]
    for name, reads, ops in stages:
        lines.append(f"{name}{reads}: " + ("; ".join(o.text for o in ops) or "ReLU"))
    return "\n".join(lines) + "\n"


def _measured(lo0: tuple[int, int], lo1: tuple[int, int]) -> tuple[int, int, float]:
    (a, b), (c, _) = lo0, lo1
    return b - a + 1, c - a, (a + b) / 2


@settings(max_examples=60, deadline=None)
@given(st.lists(_window(), min_size=1, max_size=5))
def test_chains_against_walking_back(ops: list[_Op]) -> None:
    result = check(_text([("a", "", ops)]))
    if result.network is None:  # the input too small for this chain
        return
    last = list(result.network.layers())[-1]
    if last.shape.h < 2:
        return
    size, stride, centre = _measured(_back(ops, 0, 0), _back(ops, 1, 1))
    f = last.field
    assert (f.h, f.w, f.stride_h, f.stride_w, f.offset_h, f.offset_w) == \
        (size, size, stride, stride, centre, centre)


@settings(max_examples=60, deadline=None)
@given(st.lists(_window(), max_size=2), st.lists(_window(keep_size=True), max_size=3),
       st.lists(_window(keep_size=True), max_size=3), st.lists(_window(), max_size=2),
       st.sampled_from(["Concat", "Add"]))
def test_branches_against_walking_back(stem: list[_Op], left: list[_Op], right: list[_Op],
                                       tail: list[_Op], merge: str) -> None:
    """Branches that keep their input's size (strides agree) merge into the union of what
    each sees (offsets differ with an even span's padding)."""
    text = _text([("stem", "", stem), ("l", "(stem)", left), ("r", "(stem)", right)])
    text += f"m(l, r): {merge}" + "".join(f"; {o.text}" for o in tail) + "\n"
    result = check(text)
    if result.network is None:
        return
    last = list(result.network.layers())[-1]
    if last.shape.h < 2:
        return

    def walk(i: int) -> tuple[int, int]:
        lo, hi = _back(tail, i, i)
        ends = [_back(branch, lo, hi) for branch in (left, right)]
        return _back(stem, min(e[0] for e in ends), max(e[1] for e in ends))

    size, stride, centre = _measured(walk(0), walk(1))
    f = last.field
    assert (f.h, f.stride_h, f.offset_h) == (size, stride, centre)
    assert (f.w, f.stride_w, f.offset_w) == (size, stride, centre)
