"""`alexnetc import` of Caffe nets: every fixture's parameter count and layer shapes equal
what Caffe's own rules give (computed here from the prototxt, independently of the importer),
the conventions are converted on the line, and what cannot be expressed is a located error.

The rules below are read from BVLC Caffe's sources: conv_layer.cpp's compute_output_shape
(`(in + 2·pad − dilation·(k − 1) − 1) / stride + 1`, integer division), pooling_layer.cpp's
Reshape (the ceiling of `(in + 2·pad − k) / stride`, plus one, and with padding the last
window dropped when it starts at or past `in + pad`), and the learnt blobs of each layer (a
conv's `k_h·k_w·C/group·N` weights and N biases, an InnerProduct's `in·N + N`, a Scale's C and
C with bias_term; BatchNorm's mean, variance and factor are statistics, not parameters).
Only the text-format syntax is shared with the importer (importers/prototxt.py, tested on its
own in test_prototxt.py).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from alexnetc.backends.lowering import build_module
from alexnetc.backends.lowering.layers import MapNorm
from alexnetc.cli.main import UsageError, main
from alexnetc.compiler.errors import Severity, SpecError
from alexnetc.compiler.pipeline import check
from alexnetc.importers import Options, detect
from alexnetc.importers.caffe import FORMAT
from alexnetc.importers.prototxt import Message, parse
from alexnetc.importers.source import Source

from helpers import ROOT

FIXTURES = Path(__file__).parent / "fixtures" / "caffe"
NETS = [*sorted(p for p in FIXTURES.glob("*/*.prototxt")
               if "solver" not in p.name and p.parent.name != "invalid"),
        FIXTURES / "lenet-like.prototxt"]
INVALID = sorted((FIXTURES / "invalid").glob("*.prototxt"))


# --- Caffe's rules, independently of the importer --------------------------------------------

V1 = {"CONVOLUTION": "Convolution", "POOLING": "Pooling", "RELU": "ReLU", "LRN": "LRN",
      "INNER_PRODUCT": "InnerProduct", "DROPOUT": "Dropout", "SOFTMAX": "Softmax",
      "SOFTMAX_LOSS": "SoftmaxWithLoss", "CONCAT": "Concat", "ELTWISE": "Eltwise",
      "DATA": "Data", "ACCURACY": "Accuracy"}
OPS = {"Convolution": "Conv", "InnerProduct": "FC", "LRN": "ResNorm", "ReLU": "ReLU",
       "Dropout": "Dropout", "Softmax": "Softmax", "SoftmaxWithLoss": "Softmax",
       "Concat": "Concat", "Eltwise": "Add", "BatchNorm": "BatchNorm", "TanH": "Tanh",
       "Sigmoid": "Sigmoid"}


@dataclass
class Reference:
    """What Caffe computes for a net: parameters, and each layer's (op, output shape)."""

    params: int = 0
    ops: list[tuple[str, tuple[int, int, int, bool]]] = field(default_factory=list)


def _values(msg: Message | None, key: str) -> list[str]:
    """The scalar values of `key`; none in a parameter message left out (Caffe's defaults)."""
    if msg is None:
        return []
    return [f.value.text for f in msg.all(key) if not isinstance(f.value, Message)]


def _num(msg: Message | None, key: str, default: float) -> float:
    found = _values(msg, key)
    return float(found[-1]) if found else default


def _hw(p: Message | None, key: str, default: int) -> tuple[int, int]:
    values = [int(v) for v in _values(p, key)]
    stem = key.replace("_size", "")
    if values:
        return values[0], values[-1]
    if _values(p, f"{stem}_h"):
        return int(_values(p, f"{stem}_h")[0]), int(_values(p, f"{stem}_w")[0])
    return default, default


def _train_phase(layer: Message) -> bool:
    return all(_values(rule, "phase") != ["TEST"] for rule in layer.messages("include"))


def caffe_reference(path: Path, image: tuple[int, int, int] | None = None) -> Reference:
    """Blob shapes (C, H, W; a flat blob is (C,)) through the TRAIN net, as Caffe sizes them."""
    net = parse(Source.read(path))
    blobs: dict[str, tuple[int, ...]] = {}
    dims = [int(v) for v in _values(net, "input_dim")] or \
        [int(v) for s in net.messages("input_shape") for v in _values(s, "dim")]
    for name in _values(net, "input"):
        blobs[name] = tuple(dims[1:4]) if image is None else (image[2], image[0], image[1])
    ref = Reference()
    for f in net.fields:
        if f.name not in ("layer", "layers") or not isinstance(f.value, Message):
            continue
        layer = f.value
        if not _train_phase(layer):
            continue
        kind = _values(layer, "type")[0]
        kind = V1.get(kind, kind)
        bottoms, tops = _values(layer, "bottom"), _values(layer, "top")
        out, params = _layer(kind, layer, [blobs[b] for b in bottoms if b in blobs], image)
        ref.params += params
        for t in tops:
            blobs[t] = out
        if kind in OPS or kind == "Pooling":
            op = _lrn_op(layer) if kind == "LRN" else OPS.get(kind) or _pool_op(layer)
            shape = (1, 1, out[0], True) if len(out) == 1 else (out[1], out[2], out[0], False)
            ref.ops.append((op, shape))
    return ref


def _lrn_op(layer: Message) -> str:
    """lrn_layer.cpp: WITHIN_CHANNEL normalises over a square of each map."""
    region = _values(layer.message("lrn_param"), "norm_region")
    return "MapNorm" if region == ["WITHIN_CHANNEL"] else "ResNorm"


def _pool_op(layer: Message) -> str:
    p = layer.message("pooling_param")
    if p is not None and _values(p, "global_pooling") == ["true"]:
        return "GlobalAvgPool"
    return "AvgPool" if p is not None and _values(p, "pool") == ["AVE"] else "MaxPool"


def _layer(kind: str, layer: Message, ins: list[tuple[int, ...]],
           image: tuple[int, int, int] | None) -> tuple[tuple[int, ...], int]:
    if kind == "Input":
        param = layer.message("input_param")
        assert param is not None, "an Input layer without input_param"
        shape = param.messages("shape")[0]
        n, c, h, w = (int(v) for v in _values(shape, "dim"))
        return ((c, h, w) if image is None else (image[2], image[0], image[1])), 0
    if kind == "Data":
        crop = int(_num(layer.message("transform_param"), "crop_size", 0))
        return ((3, crop, crop) if image is None else (image[2], image[0], image[1])), 0
    if kind == "Convolution":
        return _conv(layer.message("convolution_param"), ins[0])
    if kind == "Pooling":
        return _pool(layer.message("pooling_param"), ins[0]), 0
    if kind == "InnerProduct":
        p = layer.message("inner_product_param")
        n = int(_num(p, "num_output", 0))
        bias = _values(p, "bias_term") != ["false"]
        return (n,), math.prod(ins[0]) * n + (n if bias else 0)
    if kind == "Concat":
        return (sum(s[0] for s in ins), *ins[0][1:]), 0
    if kind == "Scale":
        bias = _values(layer.message("scale_param"), "bias_term") == ["true"]
        return ins[0], ins[0][0] * (2 if bias else 1)
    return (ins[0] if ins else ()), 0


def _conv(p: Message | None, x: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    c, h, w = x
    (kh, kw), (sh, sw), (ph, pw) = _hw(p, "kernel_size", 0), _hw(p, "stride", 1), _hw(p, "pad", 0)
    d = int(_num(p, "dilation", 1))
    n, group = int(_num(p, "num_output", 0)), int(_num(p, "group", 1))
    oh = (h + 2 * ph - (d * (kh - 1) + 1)) // sh + 1
    ow = (w + 2 * pw - (d * (kw - 1) + 1)) // sw + 1
    bias = _values(p, "bias_term") != ["false"]
    return (n, oh, ow), kh * kw * (c // group) * n + (n if bias else 0)


def _pool(p: Message | None, x: tuple[int, ...]) -> tuple[int, ...]:
    c, h, w = x
    if _values(p, "global_pooling") == ["true"]:
        return c, 1, 1
    (kh, kw), (sh, sw), (ph, pw) = _hw(p, "kernel_size", 0), _hw(p, "stride", 1), _hw(p, "pad", 0)
    oh = math.ceil((h + 2 * ph - kh) / sh) + 1
    ow = math.ceil((w + 2 * pw - kw) / sw) + 1
    if ph or pw:
        oh -= (oh - 1) * sh >= h + ph
        ow -= (ow - 1) * sw >= w + pw
    return c, oh, ow


# --- importing --------------------------------------------------------------------------------

def imported(path: Path, *more: Path, image: tuple[int, int, int] | None = None,
             skip: bool = False):  # -> (text, CheckResult, warnings)
    result = FORMAT.read([str(path), *map(str, more)], Options(image, skip))
    text = result.draft.text()
    return text, check(text, "imported.net"), result.warnings


def _checked_ops(net) -> list[tuple[str, tuple[int, int, int, bool]]]:
    return [(layer.name, (layer.shape.h, layer.shape.w, layer.shape.c, layer.shape.flat))
            for _, layers in net.stages() for layer in layers]


@pytest.mark.parametrize("path", NETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture_matches_caffes_own_arithmetic(path: Path) -> None:
    """Parameters, every op's output shape (as a multiset: Caffe's in-place layers join the
    stage of the layer they modify) and the conv/FC layers in order equal Caffe's."""
    text, result, _ = imported(path)
    assert result.ok, "\n".join(d.render(text) for d in result.diagnostics)
    net = result.network
    ref = caffe_reference(path)
    assert net.total().params == ref.params
    ours = _checked_ops(net)
    assert Counter(ours) == Counter(ref.ops)
    weighted = [op for op in ref.ops if op[0] in ("Conv", "FC")]
    assert [op for op in ours if op[0] in ("Conv", "FC")] == weighted
    assert ours[-1] == ref.ops[-1]
    assert not [d for d in result.diagnostics if d.severity is Severity.ERROR]


@pytest.mark.parametrize("name", ["bvlc_alexnet/deploy", "bvlc_alexnet/deploy_v1",
                                  "bvlc_alexnet/train_val", "bvlc_reference_caffenet/deploy"])
def test_alexnet_has_its_published_parameter_count(name: str) -> None:
    _, result, _ = imported(FIXTURES / f"{name}.prototxt")
    assert result.network is not None
    assert result.network.total().params == 60_965_224


@pytest.mark.parametrize(("name", "params"), [
    ("squeezenet/SqueezeNet_v1.1_deploy", 1_235_496),
    ("mobilenet/mobilenet_deploy", 4_231_976),
    ("vgg/VGG_ILSVRC_16_layers_deploy", 138_357_544),
    ("resnet/ResNet-50-deploy", 25_557_096),  # torchvision's 25,557,032 + conv1's 64 biases
])
def test_published_nets_have_their_published_parameter_counts(name: str, params: int) -> None:
    """Copies of the published files (DeepScale, shicai/MobileNet-Caffe, the VGG gist's V1
    `layers` with `input_dim`, KaimingHe)."""
    _, result, _ = imported(FIXTURES / f"{name}.prototxt")
    assert result.network is not None
    assert result.network.total().params == params


def test_depthwise_convolution_keeps_its_groups() -> None:
    """MobileNet's depthwise layers are Caffe convolutions with `group` = channels."""
    text, _, _ = imported(FIXTURES / "mobilenet" / "mobilenet_deploy.prototxt")
    assert "conv2_1_dw: Conv(3,1, pad=1, groups=32, bias=false) x32; " \
        "BatchNorm(momentum=0.001) + ReLU" in text
    assert "conv6_dw: Conv(3,1, pad=1, groups=1024, bias=false) x1024;" in text


@pytest.mark.parametrize("name", ["nin_imagenet/deploy", "nin_imagenet/train_val"])
def test_nin_has_the_parameter_count_of_specs_nin(name: str) -> None:
    _, result, _ = imported(FIXTURES / f"{name}.prototxt")
    assert result.network is not None
    assert result.network.total().params == 7_595_176


def test_alexnet_reads_as_the_paper_writes_it() -> None:
    """One stage per conv/FC layer, in-place ReLU and Dropout tied to it, Caffe's LRN α
    divided by the window and its k of 1 said on the line, the two halves as groups=2."""
    text, _, _ = imported(FIXTURES / "bvlc_alexnet" / "deploy.prototxt")
    lines = [line.split("  #")[0].rstrip() for line in text.splitlines()]
    assert "conv1: Conv(11,4) x96 + ReLU; ResNorm(5, alpha=0.00002, k=1); MaxPool(3,2)" in lines
    assert "conv2: Conv(5,1, pad=2, groups=2) x256 + ReLU; ResNorm(5, alpha=0.00002, k=1); " \
        "MaxPool(3,2)" in lines
    assert "fc6: FC(4096) + ReLU; Dropout(0.5)" in lines
    assert "fc8: FC(1000) + Softmax" in lines
    assert "# Caffe LRN: alpha 0.0001 / local_size 5, default k 1" in text
    assert "input 227x227x3" in lines


def caffe_within_channel_lrn(x: torch.Tensor, size: int, alpha: float,
                             beta: float) -> torch.Tensor:
    """lrn_layer.cpp's WITHIN_CHANNEL net, layer by layer in float64: Power (a²), Pooling AVE
    (kernel size, stride 1, pad (size − 1)/2, each window's sum divided by pooling_layer.cpp's
    pool_size: the window clipped to the padded input, padding counted), Power (shift 1,
    scale alpha, power −beta), Eltwise PROD with the input."""
    x = x.double()
    h, w = x.shape[2:]
    pad = (size - 1) // 2
    square = x ** 2
    pooled = torch.zeros_like(x)
    for ph in range(h):
        for pw in range(w):
            hstart, wstart = ph - pad, pw - pad
            hend, wend = min(hstart + size, h + pad), min(wstart + size, w + pad)
            pool_size = (hend - hstart) * (wend - wstart)
            hstart, wstart, hend, wend = max(hstart, 0), max(wstart, 0), min(hend, h), min(wend, w)
            pooled[:, :, ph, pw] = square[:, :, hstart:hend, wstart:wend].sum((2, 3)) / pool_size
    return x * (1 + alpha * pooled) ** -beta


def test_within_channel_lrn_is_a_map_norm_with_caffes_numbers() -> None:
    """cifar10_full (BVLC's examples/cifar10, deploy): its WITHIN_CHANNEL LRNs become MapNorm
    with alpha / local_size² and k 1, and the lowered layers compute what Caffe's do."""
    path = FIXTURES / "cifar10" / "cifar10_full.prototxt"
    text, result, _ = imported(path)
    assert result.network is not None, text
    assert result.network.total().params == caffe_reference(path).params == 89_578
    lines = [line.split("  #")[0].rstrip() for line in text.splitlines()]
    assert "conv1: Conv(5,1, pad=2) x32; MaxPool(3,2, remainder=ceil) + ReLU; " \
        "MapNorm(3, alpha=5.555555555555556e-06, k=1)" in lines
    assert "conv2: Conv(5,1, pad=2) x32 + ReLU; AvgPool(3,2, remainder=ceil); " \
        "MapNorm(3, alpha=5.555555555555556e-06, k=1)" in lines
    assert text.count("Caffe LRN WITHIN_CHANNEL: alpha 0.00005 / local_size² 9, k 1") == 2
    model = build_module(result.network).eval()
    norms = [m for m in model.modules() if isinstance(m, MapNorm)]
    shapes = [la.in_shape for la in result.network.layers() if la.name == "MapNorm"]
    assert [(s.h, s.c) for s in shapes] == [(16, 32), (8, 32)] and len(norms) == 2
    torch.manual_seed(0)
    for norm, s in zip(norms, shapes, strict=True):
        x = torch.randn(2, s.c, s.h, s.w) * 40  # large enough that the window's sum matters
        with torch.no_grad():
            got = norm(x)
        want = caffe_within_channel_lrn(x, 3, 5e-05, 0.75)
        assert not torch.allclose(want, x.double(), rtol=1e-3)
        torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)


def test_within_channel_lrn_keeps_k_at_one_and_says_so(tmp_path: Path) -> None:
    """Caffe's Power layer within a channel shifts by 1 whatever `k` is; beta as written."""
    body = (_conv_layer("conv1", "data", 4)
            + 'layer { name: "n" type: "LRN" bottom: "conv1" top: "n"\n'
            '  lrn_param { local_size: 5 alpha: 0.001 beta: 0.5 k: 2 norm_region: '
            'WITHIN_CHANNEL } }\n')
    text, result, _ = imported(_net(tmp_path, body))
    assert result.ok, text
    assert "MapNorm(5, alpha=0.00004, k=1, beta=0.5)" in text
    assert ("alpha 0.001 / local_size² 25, k 1 (Caffe's own engine adds 1 whatever its k 2; "
            "a cuDNN build passes k to cuDNN's LCN)") in text


def test_v1_and_current_spellings_import_alike() -> None:
    new, _, _ = imported(FIXTURES / "bvlc_alexnet" / "deploy.prototxt")
    old, _, _ = imported(FIXTURES / "bvlc_alexnet" / "deploy_v1.prototxt")
    body = [line for line in new.splitlines() if not line.startswith("#")]
    assert body == [line for line in old.splitlines() if not line.startswith("#")]
    assert "V1 `layers` format" in old


def test_train_val_and_solver_give_the_recipe() -> None:
    """base_lr, momentum, weight_decay and the step policy's gamma map; the TRAIN data
    layer's batch; the fillers as the init line with std=/bias= where a layer differs; the
    TEST-phase data layer and accuracy are left out."""
    text, result, warnings = imported(FIXTURES / "bvlc_alexnet" / "train_val.prototxt",
                                      FIXTURES / "bvlc_alexnet" / "solver.prototxt")
    assert result.ok and result.recipe is not None
    train = result.recipe.train
    assert (train.batch, train.lr, train.momentum, train.weight_decay, train.lr_drop) == \
        (256, 0.01, 0.9, 0.0005, 0.1)
    assert (result.recipe.init.std, result.recipe.init.bias) == (0.01, 0.1)
    assert result.recipe.augment.pca == 0
    assert "fc6: FC(4096, std=0.005) + ReLU; Dropout(0.5)" in text
    assert "conv1: Conv(11,4, bias=0) x96" in text
    assert "every 100000 iterations" in text and "max_iter 450000" in text
    assert "SoftmaxWithLoss 'loss'" in text
    assert warnings == []


def test_solver_first_or_alone() -> None:
    """The solver may come first; alone, it is an error that names its net."""
    train_val = FIXTURES / "bvlc_alexnet" / "train_val.prototxt"
    solver = FIXTURES / "bvlc_alexnet" / "solver.prototxt"
    assert imported(solver, train_val)[0] == imported(train_val, solver)[0]
    with pytest.raises(SpecError) as e:
        FORMAT.read([str(solver)], Options())
    assert "a Caffe solver, not a net" in str(e.value)
    assert "alexnetc import models/bvlc_alexnet/train_val.prototxt" in str(e.value)
    with pytest.raises(SpecError, match="a net too"):
        FORMAT.read([str(train_val), str(train_val)], Options())


def test_googlenet_branches_become_concat_stages() -> None:
    text, result, _ = imported(FIXTURES / "bvlc_googlenet" / "deploy.prototxt")
    assert result.network is not None
    stages = {s.name: s for s in result.network.flat_stages()}
    out = stages["inception_3a.output"]  # the nine modules are uses of one block
    assert out.sources == ("inception_3a.l1x1", "inception_3a.l3x3", "inception_3a.l5x5",
                           "inception_3a.pool_proj")
    assert sum(1 for line in text.splitlines() if ": Concat" in line) == 1
    assert sum(1 for line in text.splitlines() if ": inception(" in line) == 9
    assert stages["inception_3a.pool"].sources == ("conv2_3x3",)
    assert "conv1_7x7_s2: Conv(7,2, pad=3, remainder=drop) x64 + ReLU; " \
        "MaxPool(3,2, remainder=ceil)" in text
    assert result.network.output.c == 1000


def test_nin_pools_round_up_only_where_they_must() -> None:
    """Caffe's ceil rule is written only where the windows do not tile (54 → 27 needs it,
    27 → 13 does not), which keeps the other pools fusable."""
    text, result, _ = imported(FIXTURES / "nin_imagenet" / "deploy.prototxt")
    assert "cccp2: Conv(1,1) x96 + ReLU; MaxPool(3,2, remainder=ceil)" in text
    assert "cccp4: Conv(1,1) x256 + ReLU; MaxPool(3,2)" in text
    assert "conv1: Conv(11,4, remainder=drop, std=0.01) x96" in text
    assert result.network is not None and result.network.total().params == 7_595_176


def test_input_flag_overrides_the_stated_size() -> None:
    path = FIXTURES / "mnist" / "lenet.prototxt"
    text, result, _ = imported(path, image=(32, 32, 1))
    assert "input 32x32x1" in text and "the file states 28x28x1" in text
    assert result.network is not None
    assert result.network.total().params == caffe_reference(path, (32, 32, 1)).params


# --- small nets for the rest of Caffe's layers ------------------------------------------------

def _net(tmp_path: Path, body: str, head: str = 'input: "data"\ninput_dim: 1\ninput_dim: 3\n'
         'input_dim: 32\ninput_dim: 32\n', name: str = "net.prototxt") -> Path:
    path = tmp_path / name
    path.write_text('name: "T"\n' + head + body)
    return path


def _conv_layer(name: str, bottom: str, out: int, extra: str = "", k: int = 3,
                pad: int = 1) -> str:
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}"\n'
            f"  convolution_param {{ num_output: {out} kernel_size: {k} pad: {pad} {extra}}} }}\n")


def _inplace(name: str, kind: str, blob: str, param: str = "") -> str:
    return f'layer {{ name: "{name}" type: "{kind}" bottom: "{blob}" top: "{blob}" {param}}}\n'


RESNET_BLOCK = (
    _conv_layer("conv1", "data", 8, "bias_term: false")
    + _inplace("bn1", "BatchNorm", "conv1", "batch_norm_param { moving_average_fraction: 0.9 }")
    + _inplace("scale1", "Scale", "conv1", "scale_param { bias_term: true }")
    + _inplace("relu1", "ReLU", "conv1")
    + _conv_layer("conv2", "conv1", 8, "bias_term: false")
    + _inplace("bn2", "BatchNorm", "conv2", "batch_norm_param { eps: 0.001 }")
    + _inplace("scale2", "Scale", "conv2", "scale_param { bias_term: true }")
    + 'layer { name: "sum" type: "Eltwise" bottom: "conv1" bottom: "conv2" top: "sum" }\n'
    + _inplace("relu2", "ReLU", "sum")
    + 'layer { name: "fc" type: "InnerProduct" bottom: "sum" top: "fc"\n'
    '  inner_product_param { num_output: 10 } }\n')


def test_batch_norm_scale_and_eltwise(tmp_path: Path) -> None:
    """BatchNorm + Scale(bias_term) is one BatchNorm (momentum = 1 − moving_average_fraction);
    Eltwise SUM is an Add reading both branches, with the in-place ReLU after it."""
    path = _net(tmp_path, RESNET_BLOCK)
    text, result, _ = imported(path)
    assert result.ok, text
    assert "conv1: Conv(3,1, pad=1, bias=false) x8; BatchNorm(momentum=0.1) + ReLU" in text
    assert "conv2: Conv(3,1, pad=1, bias=false) x8; BatchNorm(eps=0.001, momentum=0.001)" in text
    assert "sum(conv1, conv2): Add + ReLU" in text
    assert result.network is not None
    assert result.network.total().params == caffe_reference(path).params


def test_batch_norm_on_stored_statistics_in_training_says_it_is_not_kept(
        tmp_path: Path) -> None:
    """`use_global_stats: true` in a train_val (a net that ends at its loss) makes Caffe
    train on the stored statistics; alexnetc's BatchNorm trains on the batch's, and the line
    says so. A deploy file's (Caffe's default there) says nothing."""
    body = ('layer { name: "data" type: "Input" top: "data" top: "label"\n'
            '  input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } shape { dim: 1 } } }\n'
            + _conv_layer("conv1", "data", 8, "bias_term: false")
            + _inplace("bn1", "BatchNorm", "conv1", "batch_norm_param { use_global_stats: "
                       "true }")
            + _inplace("scale1", "Scale", "conv1", "scale_param { bias_term: true }")
            + 'layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"\n'
            '  inner_product_param { num_output: 10 } }\n')
    loss = ('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" '
            'top: "loss" }\n')
    said = ("use_global_stats: true is not kept (Caffe trains it on its stored statistics, "
            "alexnetc on the batch's)")
    text, result, _ = imported(_net(tmp_path, body + loss, head=""))
    assert result.ok, text
    [line] = [line for line in text.splitlines() if line.startswith("conv1:")]
    assert line.endswith(f"# Caffe BatchNorm+Scale: momentum 1 − 0.999; {said}"), line
    deploy, result, _ = imported(_net(tmp_path, body, head="", name="deploy.prototxt"))
    assert result.ok and "use_global_stats" not in deploy, deploy


def test_a_reader_before_an_in_place_layer_sees_the_blob_before_it(tmp_path: Path) -> None:
    """Caffe runs layers in order: a pool reading conv1 before the in-place ReLU gets the
    values without it, so the ReLU cannot join conv1's stage."""
    body = (_conv_layer("conv1", "data", 4)
            + 'layer { name: "early" type: "Pooling" bottom: "conv1" top: "early"\n'
            '  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'
            + _inplace("relu", "ReLU", "conv1")
            + 'layer { name: "late" type: "Pooling" bottom: "conv1" top: "late"\n'
            '  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'
            'layer { name: "cat" type: "Concat" bottom: "early" bottom: "late" top: "cat" }\n')
    text, result, _ = imported(_net(tmp_path, body))
    assert result.network is not None, text
    stages = {s.name: s for s in result.network.flat_stages()}
    assert [op.split("(")[0] for op in _ops(text, "conv1")] == ["Conv"]
    assert stages["relu"].sources == ("conv1",)
    assert "relu(conv1): ReLU; MaxPool(2,2)" in text and "cat(early, relu): Concat" in text


def _ops(text: str, stage: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"{stage}:"))
    return [op.strip() for op in line.split(":", 1)[1].split("#")[0].replace("+", ";").split(";")]


@pytest.mark.parametrize("shape", ["dim: 0 dim: -1", "dim: 0 dim: 256", "dim: -1 dim: 256"])
def test_reshape_to_a_vector_before_an_fc_is_a_flatten(tmp_path: Path, shape: str) -> None:
    body = (_conv_layer("conv1", "data", 4) + _inplace("relu1", "ReLU", "conv1")
            + f'layer {{ name: "flat" type: "Reshape" bottom: "conv1" top: "flat"\n'
            f'  reshape_param {{ shape {{ {shape} }} }} }}\n'
            'layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc"\n'
            '  inner_product_param { num_output: 10 } }\n')
    path = _net(tmp_path, body, 'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n')
    text, result, _ = imported(path)
    assert result.network is not None, text
    assert result.network.total().params == (27 * 4 + 4) + (8 * 8 * 4 * 10 + 10)
    assert "conv1: Conv(3,1, pad=1) x4 + ReLU" in text
    assert "fc: FC(10)" in text and "# Reshape 'flat' left out: FC flattens its input" in text


def test_reshape_to_anything_else_is_a_located_error(tmp_path: Path) -> None:
    body = (_conv_layer("conv1", "data", 4)
            + 'layer { name: "r" type: "Reshape" bottom: "conv1" top: "r"\n'
            '  reshape_param { shape { dim: 0 dim: 16 dim: 16 dim: 4 } } }\n')
    with pytest.raises(SpecError) as e:
        FORMAT.read([str(_net(tmp_path, body))], Options())
    message = str(e.value)
    assert ":9:25:" in message and "Reshape layer 'r' reshapes 32x32x4 to (0, 16, 16, 4)" in message


@pytest.mark.parametrize("param", ["", "flatten_param { axis: 1 end_axis: -1 }",
                                   "flatten_param { axis: -3 }"])
def test_a_flatten_of_c_h_and_w_is_left_to_the_fc(tmp_path: Path, param: str) -> None:
    body = (_conv_layer("conv1", "data", 4)
            + f'layer {{ name: "flat" type: "Flatten" bottom: "conv1" top: "flat" {param} }}\n'
            'layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc"\n'
            '  inner_product_param { num_output: 10 } }\n')
    text, result, _ = imported(_net(tmp_path, body))
    assert result.ok, text
    assert "# Flatten 'flat' left out: FC flattens its input" in text


def test_a_flatten_of_other_axes_is_a_located_error(tmp_path: Path) -> None:
    body = (_conv_layer("conv1", "data", 4)
            + 'layer { name: "flat" type: "Flatten" bottom: "conv1" top: "flat"\n'
            '  flatten_param { axis: 2 } }\n'
            'layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc"\n'
            '  inner_product_param { num_output: 10 } }\n')
    with pytest.raises(SpecError) as e:
        FORMAT.read([str(_net(tmp_path, body))], Options())
    assert "Flatten layer 'flat' flattens axes 2 to -1" in str(e.value)


def test_flatten_split_leaky_relu_and_global_pooling(tmp_path: Path) -> None:
    body = (_conv_layer("conv1", "data", 4)
            + _inplace("relu1", "ReLU", "conv1", "relu_param { negative_slope: 0.1 }")
            + 'layer { name: "split" type: "Split" bottom: "conv1" top: "a" top: "b" }\n'
            'layer { name: "gap" type: "Pooling" bottom: "a" top: "gap"\n'
            '  pooling_param { pool: AVE global_pooling: true } }\n'
            'layer { name: "gmp" type: "Pooling" bottom: "b" top: "gmp"\n'
            '  pooling_param { pool: MAX global_pooling: true } }\n'
            'layer { name: "cat" type: "Concat" bottom: "gap" bottom: "gmp" top: "cat" }\n'
            'layer { name: "flat" type: "Flatten" bottom: "cat" top: "flat" }\n'
            'layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc"\n'
            '  inner_product_param { num_output: 10 } }\n')
    text, result, _ = imported(_net(tmp_path, body))
    assert result.ok, text
    assert "conv1: Conv(3,1, pad=1) x4 + LeakyReLU(0.1)" in text
    assert "\ngap: GlobalAvgPool\n" in text
    assert "gmp(conv1): MaxPool(32,1)" in text
    assert "fc: FC(10)" in text and "Flatten 'flat' left out" in text


def test_auxiliary_heads_are_left_out_with_a_warning(tmp_path: Path) -> None:
    body = (_conv_layer("conv1", "data", 4)
            + 'layer { name: "aux" type: "InnerProduct" bottom: "conv1" top: "aux"\n'
            '  inner_product_param { num_output: 10 } }\n'
            + 'layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"\n'
            '  inner_product_param { num_output: 10 } }\n')
    text, result, warnings = imported(_net(tmp_path, body))
    assert result.ok and "aux" not in text.split("network")[1]
    assert len(warnings) == 1 and "'aux'" in warnings[0].message
    assert warnings[0].loc.line == 9


def test_data_layer_needs_a_size_or_input(tmp_path: Path) -> None:
    """A Data layer without crop_size takes its size from the database: --input gives it."""
    body = ('layer { name: "mnist" type: "Data" top: "data" top: "label"\n'
            '  include { phase: TRAIN }\n  transform_param { scale: 0.00390625 }\n'
            '  data_param { source: "examples/mnist/mnist_train_lmdb" batch_size: 64 } }\n'
            + _conv_layer("conv1", "data", 4, k=5, pad=0)
            + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "conv1" bottom: "label" '
            'top: "loss" }\n')
    path = _net(tmp_path, body, head="")
    with pytest.raises(SpecError) as e:
        FORMAT.read([str(path)], Options())
    (d,) = e.value.diagnostics
    assert (d.loc.line, d.kind) == (2, "import-inconsistent")
    assert "--input HxWxC" in d.hint and "mnist_train_lmdb" in d.hint
    text, result, _ = imported(path, image=(28, 28, 1))
    assert result.ok and "input 28x28x1" in text and "train batch=64" in text
    assert "0.00390625" in text


def test_an_input_no_layer_reads_may_be_anything(tmp_path: Path) -> None:
    """A deploy file may declare a 2-D label input it never uses; only read inputs count."""
    head = ('input: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
            'input: "label"\ninput_shape { dim: 1 dim: 1 }\n')
    path = _net(tmp_path, _conv_layer("conv1", "data", 4), head=head)
    assert imported(path)[1].ok
    reads_label = _conv_layer("conv1", "label", 4)
    with pytest.raises(SpecError, match='the input "label" has 2 dimensions'):
        FORMAT.read([str(_net(tmp_path, reads_label, head=head))], Options())


def test_skip_unsupported_cuts_the_network(tmp_path: Path) -> None:
    body = (_conv_layer("conv1", "data", 4)
            + 'layer { name: "py" type: "Python" bottom: "conv1" top: "py"\n'
            '  python_param { module: "m" layer: "L" } }\n'
            + _conv_layer("conv2", "py", 4))
    path = _net(tmp_path, body)
    with pytest.raises(SpecError) as e:
        FORMAT.read([str(path)], Options())
    assert [d.loc.line for d in e.value.diagnostics] == [9]
    assert "Python layer 'py'" in e.value.diagnostics[0].message
    text, result, warnings = imported(path, skip=True)
    assert result.ok and "conv2" not in text.split("network")[1]
    assert [w.loc.line for w in warnings] == [9] and "cut before 'py'" in warnings[0].message


def test_several_errors_are_reported_together(tmp_path: Path) -> None:
    body = (_conv_layer("conv1", "data", 4)
            + 'layer { name: "n" type: "ReLU" bottom: "conv1" top: "n"\n'
            '  relu_param { negative_slope: -1 } }\n'
            + 'layer { name: "p" type: "Pooling" bottom: "conv1" top: "p"\n'
            '  pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 } }\n'
            'layer { name: "cat" type: "Concat" bottom: "n" bottom: "p" top: "cat" }\n')
    with pytest.raises(SpecError) as e:
        FORMAT.read([str(_net(tmp_path, body))], Options())
    assert [(d.loc.line, d.kind) for d in e.value.diagnostics] == [
        (10, "import-unsupported"), (12, "import-unsupported")]


def test_detect_and_sniff(tmp_path: Path) -> None:
    plain = tmp_path / "net.txt"
    plain.write_text((FIXTURES / "mnist" / "lenet.prototxt").read_text())
    assert detect([str(plain)]) is FORMAT
    assert detect([str(FIXTURES / "bvlc_alexnet" / "train_val.prototxt"),
                   str(FIXTURES / "bvlc_alexnet" / "solver.prototxt")]) is FORMAT
    cfg = tmp_path / "net.cfg"
    cfg.write_text("[net]\nwidth=224\n[convolutional]\nfilters=16\n")
    assert not FORMAT.sniff([str(cfg)], [cfg.read_text()])


def test_weights_need_the_caffemodel(tmp_path: Path) -> None:
    """A Caffe net's weights are in its .caffemodel (tests/importers/test_caffe_weights.py):
    --weights without one is a usage error, and nothing is written."""
    with pytest.raises(UsageError, match="give it as the second file"):
        FORMAT.read([str(FIXTURES / "mnist" / "lenet.prototxt")],
                    Options(weights=str(tmp_path / "w.pt")))
    assert not (tmp_path / "w.pt").exists()


# --- golden errors and the command line --------------------------------------------------------

@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_file_message(path: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed or inexpressible net exits 1 with its located errors, pinned."""
    monkeypatch.chdir(ROOT)
    code = main(["import", str(path.relative_to(ROOT))])
    out = capsys.readouterr()
    golden = path.with_suffix(".err")
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(out.err, encoding="utf-8")
    assert code == 1
    assert out.err == golden.read_text(encoding="utf-8")
    assert out.out == "" and "Traceback" not in out.err
    assert out.err.startswith(f"{path.relative_to(ROOT)}:")


@pytest.mark.torch_threads(1)
def test_import_then_train_on_the_digits(tmp_path: Path) -> None:
    """Two commands: import a LeNet-like net written for 16x16x1 images, then train it."""
    spec = tmp_path / "x.net"
    assert main(["import", str(FIXTURES / "lenet-like.prototxt"), "-o", str(spec)]) == 0
    assert "input 16x16x1" in spec.read_text()
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--devices", "cpu",
                 "--max-steps", "3"]) == 0
    assert (tmp_path / "run" / "checkpoint.pt").is_file()


def test_one_solver_at_a_time(capsys: pytest.CaptureFixture[str]) -> None:
    net = FIXTURES / "bvlc_alexnet"
    assert main(["import", str(net / "train_val.prototxt"), str(net / "solver.prototxt"),
                 str(net / "solver.prototxt")]) == 2
    assert "give one net, then at most one solver" in capsys.readouterr().err
