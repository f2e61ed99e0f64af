"""The checking passes: the paper's numbers, and each kind of error the passes report."""

from __future__ import annotations

import pytest

from alexnetc.compiler import errors
from alexnetc.compiler.pipeline import check_file

from helpers import SPECS


@pytest.fixture(scope="module")
def alexnet():
    result = check_file(SPECS / "alexnet.net")
    assert result.network is not None, [d.message for d in result.diagnostics]
    return result.network


def test_alexnet_totals_match_the_paper(alexnet) -> None:
    total = alexnet.total()
    assert total.params == 60_965_224
    assert total.neurons == 659_272
    assert total.macs == 724_406_816


def test_alexnet_shapes(alexnet) -> None:
    conv_out = {layer.stage: str(layer.shape) for layer in alexnet.layers()
                if layer.op.name == "Conv"}
    assert conv_out == {"conv1": "55x55x96", "conv2": "27x27x256", "conv3": "13x13x384",
                        "conv4": "13x13x384", "conv5": "13x13x256"}
    pools = [str(layer.shape) for layer in alexnet.layers() if layer.op.name == "MaxPool"]
    assert pools == ["27x27x96", "13x13x256", "6x6x256"]
    fc6 = next(layer for layer in alexnet.layers() if layer.stage == "fc6")
    assert fc6.in_shape.elements == 9216
    assert fc6.counts.weights == 9216 * 4096


def test_alexnet_per_layer_params(alexnet) -> None:
    params: dict[str, int] = {}
    for layer in alexnet.layers():
        params[layer.stage] = params.get(layer.stage, 0) + layer.counts.params
    assert params == {"conv1": 34_944, "conv2": 307_456, "conv3": 885_120, "conv4": 663_936,
                      "conv5": 442_624, "fc6": 37_752_832, "fc7": 16_781_312, "fc8": 4_097_000}


def test_alexnet_towers(alexnet) -> None:
    reads = {layer.stage: layer.tower.reads for layer in alexnet.layers()
             if layer.op.splits_maps}
    assert reads == {"conv1": "all", "conv2": "tower", "conv3": "all", "conv4": "tower",
                     "conv5": "tower", "fc6": "all", "fc7": "all", "fc8": "all"}
    cross = {layer.id: layer.tower.cross_bytes for layer in alexnet.layers()
             if layer.tower.cross_bytes}
    # conv3 gathers 13x13x256, fc6 9216, fc7 and fc8 4096 values; the softmax collects 500.
    assert cross == {"conv3.0": 13 * 13 * 256 * 4, "fc6.0": 9216 * 4, "fc7.0": 4096 * 4,
                     "fc8.0": 4096 * 4, "fc8.1": 500 * 4}
    assert sum(layer.tower.params_per_tower for layer in alexnet.layers()) * 2 == 60_965_224
    conv1 = next(alexnet.layers())
    assert conv1.tower.channels_per_tower == 48


def test_alexnet_fusion_plan(alexnet) -> None:
    plan = {}
    for layer in alexnet.layers():
        if layer.fusion and layer.fusion.head == layer.id:
            plan[layer.stage] = (layer.fusion.kernel, len(layer.fusion.members))
    assert plan == {"conv1": ("relu_lrn_pool", 3), "conv2": ("relu_lrn_pool", 3),
                    "conv5": ("relu_pool", 2)}


def test_torchvision_alexnet_params() -> None:
    result = check_file(SPECS / "alexnet-torchvision.net")
    assert result.network is not None
    assert result.network.total().params == 61_100_840


def test_lenet5_params() -> None:
    result = check_file(SPECS / "lenet5.net")
    assert result.network is not None
    assert result.network.total().params == 61_706  # LeNet-5 with full C3 connections


def test_recipe_defaults_are_the_papers(check_text) -> None:
    r = check_text("input 8x8x1\ns: FC(2)\n").recipe
    assert (r.train.batch, r.train.lr, r.train.momentum, r.train.weight_decay) == (
        128, 0.01, 0.9, 0.0005)
    assert (r.init.std, r.augment.pca, r.augment.flip) == (0.01, 0.1, True)


def kinds(result) -> list[str]:
    return [d.kind for d in result.diagnostics if d.severity is errors.Severity.ERROR]


@pytest.mark.parametrize("body, kind, message_part", [
    ("s: Relu", errors.UNKNOWN_OP, "unknown op 'Relu'"),
    ("s: Conv(3,1, padding=1) x4", errors.ARGUMENT, "has no argument 'padding'"),
    ("s: Conv(3,1, pad=1, pad=2) x4", errors.DUPLICATE, "given twice"),
    ("s: Conv(3,1, stride=1) x4", errors.DUPLICATE, "given twice"),
    ("s: Conv(3.5,1) x4", errors.ARGUMENT, "must be a whole number"),
    ("s: Conv(3,1)", errors.ARGUMENT, "needs its number of output channels"),
    ("s: ReLU x4", errors.ARGUMENT, "does not take a channel count"),
    ("s: MaxPool(3)", errors.ARGUMENT, "needs its 'stride' argument"),
    ("s: MaxPool(3,1,1)", errors.ARGUMENT, "positional argument"),
    ("s: Dropout(1.5)", errors.ARGUMENT, "at most 1"),
    ("s: Conv(3,1, remainder=maybe) x4", errors.ARGUMENT, "one of error, drop"),
    ("s: ResNorm(4)", errors.SHAPE, "even"),
    ("s: Conv(9,1) x4", errors.SHAPE, "larger than its 8-pixel input"),
    ("s: Conv(3,2) x4", errors.SHAPE, "does not tile"),
    ("s: Conv(3,1, groups=2) x4", errors.SHAPE, "does not divide the 3 input channels"),
    ("s: FC(4); Conv(1,1) x2", errors.SHAPE, "flat vector"),
    ("s: Conv(3,1) x4 -> 5x5x4", errors.EXPECTATION, "produces 6x6x4, not 5x5x4"),
    ("s: Conv(3,1, pad=3) x4", errors.SHAPE, "more than half"),
    ("s: ReLU\ns: ReLU", errors.DUPLICATE, "defined twice"),
    ("train lr=fast\ns: ReLU", errors.SETTING, "must be a number"),
    ("train speed=1\ns: ReLU", errors.SETTING, "no setting 'speed'"),
    ("forward: ReLU", errors.RESERVED, "'forward' is an attribute of torch.nn.Module"),
    ("predict: ReLU", errors.RESERVED, "attribute of alexnetc's PyTorch module"),
    ("_tower0: ReLU", errors.RESERVED, "starting with `_`"),
    ("class: ReLU", errors.RESERVED, "Python keyword"),
    ("s: Conv(1,1) x99999999999999999999999", errors.LIMIT, "2,147,483,647 (2**31 − 1)"),
    ("s: Conv(1,2147483648) x4", errors.LIMIT, "'stride' is 2,147,483,648"),
    ("s: Conv(1,1) x40000000", errors.LIMIT, "2,560,000,000 values per image"),
    ("s: ResNorm(5, k=1e999)", errors.ARGUMENT, "must be a finite number"),
    ("train momentum=5\ns: ReLU", errors.SETTING, "at least 0 and less than 1, got 5"),
    ("train lr_drop=5\ns: ReLU", errors.SETTING, "more than 0 and at most 1, got 5"),
    ("train lr=1e999\ns: ReLU", errors.SETTING, "must be a finite number, got inf"),
    ("train batch=2147483648\ns: ReLU", errors.LIMIT, "'batch' is 2,147,483,648"),
    ("augment resize=7\ns: ReLU", errors.SETTING, "resize=7 is smaller than the spec's 8x8"),
])
def test_each_error_kind(check_text, body: str, kind: str, message_part: str) -> None:
    result = check_text(f"input 8x8x3\n{body}\n")
    assert not result.ok
    assert kind in kinds(result)
    assert any(message_part in d.message for d in result.diagnostics), \
        [d.message for d in result.diagnostics]


def test_towers_must_split_channels(check_text) -> None:
    result = check_text("input 8x8x3\ntowers 2\nc: Conv(3,1) x95 + ReLU\n")
    (d,) = result.diagnostics
    assert d.kind == errors.TOWERS and "95" in d.message and "2 towers" in d.message
    assert "96" in d.hint
    assert (d.loc.line, d.loc.col) == (3, 14)  # the x95


def test_several_errors_are_all_reported(check_text) -> None:
    result = check_text("input 8x8x3\na: Relu\nb: Conv(3,1, foo=1) x4\nc: MaxPool(2)\n")
    assert [d.loc.line for d in result.diagnostics] == [2, 3, 4]


def test_uneven_input_names_the_fix(check_text) -> None:
    result = check_text("input 224x224x3\nconv1: Conv(11,4) x96\n")
    (d,) = result.diagnostics
    assert "213 is not a multiple of stride 4" in d.message
    assert "1 pixel" in d.message
    assert "227" in d.hint and "input 227x227x3" in d.hint and "remainder=drop" in d.hint


def test_uneven_tiling_suggests_padding_when_one_fits(check_text) -> None:
    result = check_text("input 9x9x3\nc: Conv(5,3) x4\n")
    (d,) = result.diagnostics
    assert "pad=1" in d.hint


def test_remainder_drop_floors_like_pytorch(check_text) -> None:
    result = check_text("input 224x224x3\nc: Conv(11,4, remainder=drop) x4\n")
    assert result.network is not None
    assert str(result.network.output) == "54x54x4"  # floor((224 - 11) / 4) + 1


def test_remainder_ceil_adds_the_edge_window(check_text) -> None:
    # ceil((54 − 3) / 2) + 1 = 27: Caffe's pools; the last window starts inside the input
    result = check_text("input 54x54x3\np: MaxPool(3,2, remainder=ceil); "
                        "AvgPool(3,2, remainder=ceil)\n")
    assert result.network is not None
    assert [str(la.shape) for la in result.network.layers()] == ["27x27x3", "13x13x3"]
    # 5 + 2·1 − 2 = 5 leaves a remainder: ceil(5 / 2) + 1 = 4 windows, but the 4th would
    # start at 6 ≥ 5 + 1, wholly in the right padding, so 3 (PyTorch's rule)
    result = check_text("input 5x5x1\np: MaxPool(2,2, pad=1, remainder=ceil)\n")
    assert result.network is not None and str(result.network.output) == "3x3x1"
    # a ceil conv counts as cuda-convnet2: 1 + ⌈(4 − 1) / 2⌉ = 3, the last window wholly past
    # the edge (its zeros), where a ceil pool would drop it
    result = check_text("input 4x4x3\nc: Conv(1,2, remainder=ceil) x4\n")
    assert result.network is not None and str(result.network.output) == "3x3x4"


def test_zfnet_sizes_with_ceil_pools() -> None:
    result = check_file(SPECS / "zfnet.net")
    assert result.network is not None
    sides = [la.shape.h for la in result.network.layers()
             if la.name in ("Conv", "MaxPool") and la.stage in ("conv1", "conv2", "conv5")]
    # conv1 ⌊(224 + 2 − 7) / 2⌋ + 1 = 110, pool ⌈(110 − 3) / 2⌉ + 1 = 55, conv2
    # (55 − 5) / 2 + 1 = 26, pool ⌈(26 − 3) / 2⌉ + 1 = 13, conv5 13, pool (13 − 3) / 2 + 1 = 6
    assert sides == [110, 55, 26, 13, 13, 6]
    # the fused kernel floors, so a ceil pool is left out of conv1's chain
    kernels = {la.stage: la.fusion.kernel for la in result.network.layers() if la.fusion}
    assert kernels["conv1"] == "relu_lrn" and kernels["conv5"] == "relu_pool"


def test_missing_input_and_empty_spec(check_text) -> None:
    assert kinds(check_text("s: ReLU\n")) == [errors.INPUT]
    assert kinds(check_text("")) == [errors.STRUCTURE]
    assert kinds(check_text("input 8x8\ns: ReLU\n")) == [errors.INPUT]


def test_lrn_window_wider_than_tower_warns(check_text) -> None:
    result = check_text("input 8x8x3\ntowers 2\nc: Conv(3,1) x4 + ReLU; ResNorm(5)\n")
    assert result.ok
    assert [d.kind for d in result.diagnostics] == [errors.TOWERS]
    assert "wider than a tower's 2 maps" in result.diagnostics[0].message


def test_lrn_window_wider_than_the_maps_warns_without_towers(check_text) -> None:
    result = check_text("input 8x8x3\nc: Conv(3,1) x4 + ReLU; ResNorm(9)\n")
    assert result.ok
    assert [d.message for d in result.diagnostics] == [
        "the ResNorm window of 9 channels is wider than the 4 maps"]
    assert not check_text("input 8x8x3\nc: Conv(3,1) x4 + ReLU; ResNorm(3)\n").diagnostics


def test_batch_norm_buffers_are_counted_apart(check_text) -> None:
    from alexnetc.compiler.report import as_json, report_text

    result = check_text("input 8x8x3\ntowers 2\nc: Conv(3,1, pad=1, bias=false) x4; BatchNorm "
                        "+ ReLU\nf: FC(6); BatchNorm(eps=1e-3)\n")
    net = result.network
    assert net is not None
    conv, fc = 3 * 3 * 3 * 4, 8 * 8 * 4 * 6 + 6
    assert net.total().params == conv + 2 * 4 + fc + 2 * 6  # a scale and a shift per channel
    assert net.total().buffers == (2 * 4 + 1) + (2 * 6 + 1)  # mean, variance, batch counter
    data = as_json(net, result.diagnostics, None)
    assert data["total"]["buffers"] == 22 and data["total"]["params"] == net.total().params
    assert [la["buffers"] for la in data["layers"] if la["op"] == "BatchNorm"] == [9, 13]
    text = report_text(net)
    assert "buffers" in text and "22 buffer values" in text
    plain = check_text("input 8x8x3\nc: Conv(3,1) x4\n").network
    assert plain is not None and "buffers" not in report_text(plain)  # no column without any


def test_nin_sizes_and_params() -> None:
    result = check_file(SPECS / "nin.net")
    net = result.network
    assert net is not None
    first = [la.shape.h for la in net.layers() if la.name in ("Conv", "MaxPool")][::4]
    # conv1 ⌊(224 − 11) / 4⌋ + 1 = 54; ceil pools ⌈(54 − 3) / 2⌉ + 1 = 27, ⌈(27 − 3) / 2⌉ + 1
    # = 13, ⌈(13 − 3) / 2⌉ + 1 = 6; global pooling to 1
    assert first == [54, 27, 13, 6] and str(net.output) == "1x1x1000" and net.class_vector

    def mlpconv(c_in: int, k: int, c: int, last: int) -> int:
        return (k * k * c_in + 1) * c + (c + 1) * c + (c + 1) * last

    assert net.total().params == (mlpconv(3, 11, 96, 96) + mlpconv(96, 5, 256, 256)
                                  + mlpconv(256, 3, 384, 384) + mlpconv(384, 3, 1024, 1000))
