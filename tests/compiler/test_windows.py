"""Rectangular windows, dilation and `pad=same`: each axis checked, counted and reported on
its own, against closed-form arithmetic written here (not the checker's)."""

from __future__ import annotations

import pytest

from alexnetc.compiler.errors import SHAPE
from alexnetc.compiler.pipeline import check
from alexnetc.compiler.registry import Pair, as_dict


def _ok(text: str):
    result = check(text)
    assert result.ok, [d.message for d in result.diagnostics]
    assert result.network is not None
    return result.network


def _error(text: str):
    result = check(text)
    (d,) = [d for d in result.diagnostics if d.severity.name == "ERROR"]
    return d


def _out(n: int, k: int, s: int, p: int, d: int) -> int:
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


@pytest.mark.parametrize("h, w, k, s, p, d", [
    (9, 13, (1, 7), (1, 1), (0, 3), (1, 1)),
    (9, 13, (3, 5), (2, 1), (1, 2), (1, 1)),
    (11, 12, (3, 3), (1, 1), (2, 1), (2, 1)),
    (18, 9, (5, 2), (3, 1), (1, 0), (1, 2)),
])
def test_each_axis_has_its_own_window_and_counts(h, w, k, s, p, d) -> None:
    cin, cout = 3, 4
    spec = (f"input {h}x{w}x{cin}\nc: Conv({k[0]}x{k[1]},{s[0]}x{s[1]}, pad={p[0]}x{p[1]}, "
            f"dilation={d[0]}x{d[1]}) x{cout}\n")
    net = _ok(spec)
    (layer,) = net.layers()
    oh, ow = _out(h, k[0], s[0], p[0], d[0]), _out(w, k[1], s[1], p[1], d[1])
    assert layer.shape.dims() == (oh, ow, cout)
    assert layer.counts.weights == k[0] * k[1] * cin * cout
    assert layer.counts.biases == cout
    assert layer.counts.macs == oh * ow * cout * k[0] * k[1] * cin
    assert layer.counts.neurons == oh * ow * cout
    assert layer.args.size == Pair(*k) and layer.args.dilation == Pair(*d)
    assert as_dict(layer.args)["size"] == ([k[0], k[1]] if k[0] != k[1] else k[0])


@pytest.mark.parametrize("k, d", [((3, 3), (1, 1)), ((2, 4), (1, 1)), ((3, 2), (2, 3)),
                                  ((1, 6), (1, 1))])
def test_pad_same_keeps_the_size_for_odd_and_even_kernels(k, d) -> None:
    net = _ok(f"input 10x7x2\nc: Conv({k[0]}x{k[1]},1, pad=same, dilation={d[0]}x{d[1]}) x3\n")
    (layer,) = net.layers()
    assert layer.shape.dims() == (10, 7, 3)
    assert layer.counts.macs == 10 * 7 * 3 * k[0] * k[1] * 2


def test_pad_same_needs_stride_one_at_its_argument() -> None:
    d = _error("input 8x8x3\nc: Conv(3,1x2, pad=same) x4\n")
    assert d.kind == SHAPE and (d.loc.col, d.loc.end_col) == (16, 24)
    assert "needs stride 1, not stride 1x2" in d.message and "pad=1" in d.hint


def test_square_windows_print_as_the_spec_writes_them() -> None:
    net = _ok("input 227x227x3\nc: Conv(11,4) x96; MaxPool(3x3,2) ; Conv(1x7,1, pad=0x3) x8\n")
    assert [layer.call.text() for layer in net.layers()] == [
        "Conv(11,4) x96", "MaxPool(3x3,2)", "Conv(1x7,1,pad=0x3) x8"]


def test_tiling_names_the_axis_and_pads_only_that_axis() -> None:
    d = _error("input 12x32x3\nc: Conv(3x4,1x3, pad=1x0) x4\n")
    # width: (32 + 0 − 4) = 28 ≢ 0 (mod 3); a pad of 1 across gives 30
    assert "does not tile its 32-pixel width" in d.message
    assert "(32 + 2·0 − 4) = 28 is not a multiple of stride 3" in d.message
    assert "pad=1" in d.hint and "`input 12x34x3`" in d.hint  # 1x1: height keeps its 1
    d = _error("input 32x12x3\nc: Conv(4x3,3x1) x4\n")
    assert "32-pixel height" in d.message and "pad=1x0" in d.hint


def test_a_dilated_window_spans_its_taps() -> None:
    d = _error("input 4x9x3\nc: Conv(3,1, dilation=2) x4\n")  # spans 5 > 4 rows
    assert "window of 5 is larger than its 4-pixel input" in d.message
    d = _error("input 8x8x3\nc: Conv(3,1, pad=2x1, dilation=1x2) x4\n")
    assert "padding 2x1 is more than half the window 3 dilated by 1x2 (3x5)" in d.message
    assert "pad ≤ 1x2" in d.hint


def test_a_window_longer_down_than_the_input_names_the_axis() -> None:
    d = _error("input 5x9x3\nc: MaxPool(7x3,1)\n")
    assert "window of 7 is larger than its 5-pixel height" in d.message


def test_pools_the_kernel_cannot_run_stay_out_of_the_fused_kernel() -> None:
    net = _ok("input 15x15x4\na: Conv(3,1) x4 + ReLU; MaxPool(3x2,2x1) -> 6x12x4\n"
              "b: Conv(1,1) x4 + ReLU; MaxPool(3,2, remainder=drop) -> 2x5x4\n"
              "c: Conv(1,1) x4 + ReLU; MaxPool(3,1, pad=1) -> 2x5x4\n"
              "d: Conv(1,1) x4 + ReLU; MaxPool(2x2,1x1) -> 1x4x4\n"
              "e: Conv(1,1) x4 + ReLU; MaxPool(1,1, pad=0x0) -> 1x4x4\n")
    fused = {layer.stage for layer in net.layers() if layer.fusion is not None}
    # square, whichever way it is written; c's windows overlap three deep (3 > 2·1), more
    # than the kernel takes
    assert fused == {"b", "d", "e"}
