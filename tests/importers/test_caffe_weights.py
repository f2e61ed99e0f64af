"""`alexnetc import NET.prototxt NET.caffemodel --weights RUN_DIR`: a Caffe model's weights.

The caffemodels are written here from random weights by a protobuf writer of the test's own,
made from caffe.proto and independent of the importer's reader. What matters is checked as
for PyTorch modules: the lowered spec with the imported weights computes what the Caffe net
computes, here a forward written by hand in torch.nn.functional with Caffe's semantics (ceil
pools, LRN's α over the window with its k, BatchNorm's sums over their moving-average
factor), in float64 — for LeNet (`layer`, blobs with a `shape`), a CaffeNet-like net with
grouped convolutions and LRN (V1 `layers`, legacy 4-D blobs, a blob unpacked and one in
doubles), and a net with BatchNorm+Scale, a shortcut and PReLU. A file that is no caffemodel,
truncated or corrupt, and weights that do not fit the net are one line each, exit 1.
"""

from __future__ import annotations

import re
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from alexnetc.backends.train.run import load_run
from alexnetc.cli.main import main
from alexnetc.importers.caffe.caffemodel import read_caffemodel

from helpers import ROOT

LENET = ROOT / "tests" / "importers" / "fixtures" / "caffe" / "mnist" / "lenet.prototxt"

Weights = dict[str, list[Tensor]]

# --- a protobuf writer, from caffe.proto ---------------------------------------------------------

# V1LayerParameter.LayerType's numbers for the types written here.
V1_TYPES = {"Convolution": 4, "InnerProduct": 14, "ReLU": 18, "Pooling": 17, "LRN": 15,
            "Dropout": 6, "Softmax": 20}


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # a negative int64 takes ten bytes
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _int(number: int, value: int) -> bytes:
    return _key(number, 0) + _varint(value)


def _message(number: int, payload: bytes) -> bytes:
    return _key(number, 2) + _varint(len(payload)) + payload


def blob_proto(t: Tensor, legacy: bool = False, packed: bool = True,
               double: bool = False) -> bytes:
    """A BlobProto: shape (`shape` 7, or the legacy num/channels/height/width 1-4) and values
    (`data` 5, packed or one fixed32 each, or `double_data` 8)."""
    dims = list(t.shape)
    if legacy:
        shape = b"".join(_int(i, d) for i, d in enumerate([1] * (4 - len(dims)) + dims, 1))
    else:
        shape = _message(7, _message(1, b"".join(_varint(d) for d in dims)))
    values = t.flatten().tolist()
    if double:
        data = _message(8, struct.pack(f"<{len(values)}d", *values))
    elif packed:
        data = _message(5, struct.pack(f"<{len(values)}f", *values))
    else:
        data = b"".join(_key(5, 5) + struct.pack("<f", v) for v in values)
    return data + shape if legacy else shape + data


def layer_proto(name: str, kind: str, blobs: list[bytes], v1: bool) -> bytes:
    """A LayerParameter (`name` 1, `type` 2, `blobs` 7) or V1LayerParameter (`name` 4, `type`
    5 as its enum, `blobs` 6), with fields the reader must skip around them (bottoms, a
    ParamSpec, the phase, V1's blobs_lr as fixed32s, a fixed64)."""
    if v1:
        return (_message(2, b"data") + _message(4, name.encode()) + _int(5, V1_TYPES[kind])
                + b"".join(_message(6, b) for b in blobs)
                + b"".join(_key(7, 5) + struct.pack("<f", 1.0) for _ in blobs))
    return (_message(1, name.encode()) + _message(2, kind.encode()) + _message(3, b"data")
            + _int(10, 0) + _message(6, _message(1, b"w") + _key(3, 5) + struct.pack("<f", 1))
            + b"".join(_message(7, b) for b in blobs) + _key(95, 1) + struct.pack("<q", -1))


def net_proto(name: str, layers: list[bytes], v1: bool) -> bytes:
    """A NetParameter: `name` 1, then `layers` 2 (V1) or `layer` 100."""
    return _message(1, name.encode()) + b"".join(_message(2 if v1 else 100, x) for x in layers)


def caffemodel(path: Path, name: str, kinds: dict[str, str], w: Weights, v1: bool = False,
               legacy: bool = False, odd: tuple[str, ...] = ()) -> Path:
    """The net's layers in order, those in `w` with their blobs; `odd` names layers whose
    first blob is written unpacked and whose second in doubles."""
    layers = []
    for layer, kind in kinds.items():
        blobs = [blob_proto(t, legacy, packed=not (layer in odd and i == 0),
                            double=layer in odd and i == 1)
                 for i, t in enumerate(w.get(layer, []))]
        layers.append(layer_proto(layer, kind, blobs, v1))
    path.write_bytes(net_proto(name, layers, v1))
    return path


def randn(*shape: int, gen: torch.Generator, std: float = 0.1) -> Tensor:
    """Normal values that float32 holds exactly (a caffemodel stores floats), as float64."""
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * std).float().double()


# --- the nets, their weights and their forward as Caffe computes it -----------------------------

LENET_KINDS = {"conv1": "Convolution", "pool1": "Pooling", "conv2": "Convolution",
               "pool2": "Pooling", "ip1": "InnerProduct", "relu1": "ReLU",
               "ip2": "InnerProduct", "prob": "Softmax"}


def lenet_weights(gen: torch.Generator) -> Weights:
    return {"conv1": [randn(20, 1, 5, 5, gen=gen), randn(20, gen=gen)],
            "conv2": [randn(50, 20, 5, 5, gen=gen), randn(50, gen=gen)],
            "ip1": [randn(500, 800, gen=gen, std=0.05), randn(500, gen=gen)],
            "ip2": [randn(10, 500, gen=gen), randn(10, gen=gen)]}


def conv(x: Tensor, blobs: list[Tensor], **window: int) -> Tensor:
    return F.conv2d(x, blobs[0], blobs[1] if len(blobs) > 1 else None, **window)


def fc(x: Tensor, blobs: list[Tensor]) -> Tensor:
    return F.linear(x, blobs[0], blobs[1])


def lenet_forward(x: Tensor, w: Weights) -> Tensor:
    x = F.max_pool2d(conv(x, w["conv1"]), 2, 2, ceil_mode=True)  # N x 20 x 12 x 12
    x = F.max_pool2d(conv(x, w["conv2"]), 2, 2, ceil_mode=True)  # N x 50 x 4 x 4
    x = F.relu(fc(x.flatten(1), w["ip1"]))  # N x 500
    return fc(x, w["ip2"])  # N x 10


def _v1_conv(name: str, bottom: str, out: int, param: str) -> str:
    return (f'layers {{ name: "{name}" type: CONVOLUTION bottom: "{bottom}" top: "{name}"\n'
            f"  convolution_param {{ num_output: {out} {param} }} }}\n"
            f'layers {{ name: "relu{name[-1]}" type: RELU bottom: "{name}" top: "{name}" }}\n')


def _v1(name: str, kind: str, bottom: str, param: str = "") -> str:
    return f'layers {{ name: "{name}" type: {kind} bottom: "{bottom}" top: "{name}" {param} }}\n'


# CaffeNet's layers and order (pool before norm), smaller: 71 → 16 → 8 → 8 → 4 → 4 → 2, each
# pool rounding up (Caffe's ceil); norm2 with an α and k large enough to matter.
CAFFENET = ('name: "SmallCaffeNet"\ninput: "data"\n'
            "input_dim: 1\ninput_dim: 3\ninput_dim: 71\ninput_dim: 71\n"
            + _v1_conv("conv1", "data", 8, "kernel_size: 11 stride: 4")
            + _v1("pool1", "POOLING", "conv1", "pooling_param { pool: MAX kernel_size: 3 "
                  "stride: 2 }")
            + _v1("norm1", "LRN", "pool1", "lrn_param { local_size: 5 alpha: 0.0001 "
                  "beta: 0.75 }")
            + _v1_conv("conv2", "norm1", 16, "pad: 2 kernel_size: 5 group: 2")
            + _v1("pool2", "POOLING", "conv2", "pooling_param { pool: MAX kernel_size: 3 "
                  "stride: 2 }")
            + _v1("norm2", "LRN", "pool2", "lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 "
                  "k: 2 }")
            + _v1_conv("conv3", "norm2", 12, "pad: 1 kernel_size: 3")
            + _v1_conv("conv4", "conv3", 12, "pad: 1 kernel_size: 3 group: 2")
            + _v1_conv("conv5", "conv4", 8, "pad: 1 kernel_size: 3 group: 2")
            + _v1("pool5", "POOLING", "conv5", "pooling_param { pool: MAX kernel_size: 3 "
                  "stride: 2 }")
            + _v1("fc6", "INNER_PRODUCT", "pool5", "inner_product_param { num_output: 16 }")
            + _v1("relu6", "RELU", "fc6").replace('top: "relu6"', 'top: "fc6"')
            + _v1("drop6", "DROPOUT", "fc6").replace('top: "drop6"', 'top: "fc6"')
            + _v1("fc7", "INNER_PRODUCT", "fc6", "inner_product_param { num_output: 16 }")
            + _v1("relu7", "RELU", "fc7").replace('top: "relu7"', 'top: "fc7"')
            + _v1("fc8", "INNER_PRODUCT", "fc7", "inner_product_param { num_output: 10 }")
            + _v1("prob", "SOFTMAX", "fc8"))

CAFFENET_KINDS = {"conv1": "Convolution", "relu1": "ReLU", "pool1": "Pooling", "norm1": "LRN",
                  "conv2": "Convolution", "relu2": "ReLU", "pool2": "Pooling", "norm2": "LRN",
                  "conv3": "Convolution", "relu3": "ReLU", "conv4": "Convolution",
                  "relu4": "ReLU", "conv5": "Convolution", "relu5": "ReLU",
                  "pool5": "Pooling", "fc6": "InnerProduct", "relu6": "ReLU",
                  "drop6": "Dropout", "fc7": "InnerProduct", "relu7": "ReLU",
                  "fc8": "InnerProduct", "prob": "Softmax"}


def caffenet_weights(gen: torch.Generator) -> Weights:
    shapes = {"conv1": (8, 3, 11, 11), "conv2": (16, 4, 5, 5), "conv3": (12, 16, 3, 3),
              "conv4": (12, 6, 3, 3), "conv5": (8, 6, 3, 3), "fc6": (16, 32), "fc7": (16, 16),
              "fc8": (10, 16)}
    return {k: [randn(*s, gen=gen), randn(s[0], gen=gen)] for k, s in shapes.items()}


def caffe_lrn(x: Tensor, size: int, alpha: float, beta: float, k: float) -> Tensor:
    """Caffe's ACROSS_CHANNELS LRN: x / (k + α/size · Σ x² over `size` channels)^β."""
    sq = F.pad(x * x, (0, 0, 0, 0, size // 2, size // 2))  # N x C+size-1 x H x W
    total = sum(sq[:, i:i + x.shape[1]] for i in range(size))  # N x C x H x W
    return x / (k + alpha / size * total) ** beta


def caffenet_forward(x: Tensor, w: Weights) -> Tensor:
    x = F.relu(conv(x, w["conv1"], stride=4))  # N x 8 x 16 x 16
    x = caffe_lrn(F.max_pool2d(x, 3, 2, ceil_mode=True), 5, 1e-4, 0.75, 1)  # N x 8 x 8 x 8
    x = F.relu(conv(x, w["conv2"], padding=2, groups=2))  # N x 16 x 8 x 8
    x = caffe_lrn(F.max_pool2d(x, 3, 2, ceil_mode=True), 5, 0.5, 0.75, 2)  # N x 16 x 4 x 4
    x = F.relu(conv(x, w["conv3"], padding=1))  # N x 12 x 4 x 4
    x = F.relu(conv(x, w["conv4"], padding=1, groups=2))  # N x 12 x 4 x 4
    x = F.relu(conv(x, w["conv5"], padding=1, groups=2))  # N x 8 x 4 x 4
    x = F.max_pool2d(x, 3, 2, ceil_mode=True)  # N x 8 x 2 x 2
    x = F.relu(fc(x.flatten(1), w["fc6"]))  # N x 16
    x = F.relu(fc(x, w["fc7"]))  # N x 16
    return fc(x, w["fc8"])  # N x 10


def _layer(name: str, kind: str, bottom: str, top: str, param: str = "") -> str:
    return (f'layer {{ name: "{name}" type: "{kind}" bottom: "{bottom}" top: "{top}" '
            f"{param} }}\n")


def _residual(block: str, bottom: str) -> str:
    """ResNet's Caffe spelling of a basic block: bias-free convs, each with BatchNorm and its
    Scale in place, the sum with the block's input, then PReLU."""
    out = ""
    for half, read in (("a", bottom), ("b", f"{block}a")):
        out += (_layer(f"{block}{half}", "Convolution", read, f"{block}{half}",
                       "convolution_param { num_output: 8 kernel_size: 3 pad: 1 "
                       "bias_term: false }")
                + _layer(f"bn{block}{half}", "BatchNorm", f"{block}{half}", f"{block}{half}",
                         "batch_norm_param { use_global_stats: true eps: 0.001 }"
                         if half == "b" else "")
                + _layer(f"scale{block}{half}", "Scale", f"{block}{half}", f"{block}{half}",
                         "scale_param { bias_term: true }"))
        if half == "a":
            out += _layer(f"{block}a_relu", "ReLU", f"{block}a", f"{block}a")
    return (out + f'layer {{ name: "{block}" type: "Eltwise" bottom: "{bottom}" '
            f'bottom: "{block}b" top: "{block}" }}\n'
            + _layer(f"{block}_prelu", "PReLU", block, block))


# A stem conv, then two alike residual blocks (which the importer writes once, as a `block`),
# global average pooling into an FC.
BN_NET = ('name: "SmallResNet"\ninput: "data"\n'
          "input_shape { dim: 1 dim: 3 dim: 10 dim: 10 }\n"
          + _layer("conv1", "Convolution", "data", "conv1", "convolution_param { num_output: 8 "
                   "kernel_size: 3 pad: 1 }")
          + _layer("conv1_relu", "ReLU", "conv1", "conv1")
          + _residual("res2", "conv1") + _residual("res3", "res2")
          + _layer("pool", "Pooling", "res3", "pool", "pooling_param { pool: AVE "
                   "global_pooling: true }")
          + _layer("fc", "InnerProduct", "pool", "fc", "inner_product_param { num_output: 10 }")
          + _layer("prob", "Softmax", "fc", "prob"))

BN_KINDS = {"conv1": "Convolution", "conv1_relu": "ReLU",
            **{name: kind for block in ("res2", "res3") for name, kind in (
                (f"{block}a", "Convolution"), (f"bn{block}a", "BatchNorm"),
                (f"scale{block}a", "Scale"), (f"{block}a_relu", "ReLU"),
                (f"{block}b", "Convolution"), (f"bn{block}b", "BatchNorm"),
                (f"scale{block}b", "Scale"), (block, "Eltwise"),
                (f"{block}_prelu", "PReLU"))},
            "pool": "Pooling", "fc": "InnerProduct", "prob": "Softmax"}

# Each BatchNorm's moving-average factor: as after many iterations, a power of two (so that
# the statistics it gives are as exact in float32 as the sums), and 0, which Caffe reads as
# statistics of 0 whatever the sums.
FACTORS = {"bnres2a": 1024.0, "bnres2b": 0.0, "bnres3a": 0.5, "bnres3b": 1.0}


def bn_weights(gen: torch.Generator) -> Weights:
    def stats(factor: float) -> list[Tensor]:
        sums = max(factor, 1.0)
        mean = randn(8, gen=gen) * sums
        var = (torch.rand(8, generator=gen, dtype=torch.float64) + 0.5) * sums
        return [mean.float().double(), var.float().double(),
                torch.tensor([factor]).float().double()]

    def positive() -> Tensor:
        return (torch.rand(8, generator=gen, dtype=torch.float64) + 0.5).float().double()

    w = {"conv1": [randn(8, 3, 3, 3, gen=gen, std=0.3), randn(8, gen=gen)],
         "fc": [randn(10, 8, gen=gen), randn(10, gen=gen)]}
    for block in ("res2", "res3"):
        for half in "ab":
            w[f"{block}{half}"] = [randn(8, 8, 3, 3, gen=gen, std=0.3)]
            w[f"bn{block}{half}"] = stats(FACTORS[f"bn{block}{half}"])
            w[f"scale{block}{half}"] = [positive(), randn(8, gen=gen)]
        w[f"{block}_prelu"] = [positive() - 0.5]
    return w


def caffe_batch_norm(x: Tensor, stats: list[Tensor], scale: list[Tensor], eps: float) -> Tensor:
    mean, var, factor = stats
    s = 0.0 if factor.item() == 0 else 1 / factor.item()
    shape = (1, -1, 1, 1)
    y = (x - (mean * s).view(shape)) / ((var * s).view(shape) + eps).sqrt()
    return y * scale[0].view(shape) + scale[1].view(shape)


def bn_forward(x: Tensor, w: Weights) -> Tensor:
    x = F.relu(conv(x, w["conv1"], padding=1))  # N x 8 x 10 x 10
    for block in ("res2", "res3"):
        a = F.relu(caffe_batch_norm(conv(x, w[f"{block}a"], padding=1), w[f"bn{block}a"],
                                    w[f"scale{block}a"], 1e-5))  # N x 8 x 10 x 10
        b = caffe_batch_norm(conv(a, w[f"{block}b"], padding=1), w[f"bn{block}b"],
                             w[f"scale{block}b"], 1e-3)  # N x 8 x 10 x 10
        s = x + b  # N x 8 x 10 x 10
        x = torch.where(s >= 0, s, s * w[f"{block}_prelu"][0].view(1, -1, 1, 1))
    return fc(x.mean((2, 3)), w["fc"])  # N x 10


# --- what the imported weights compute -----------------------------------------------------------

NETS: dict[str, tuple[Callable[[Path], Path], dict[str, str], Callable[..., Weights],
                      Callable[[Tensor, Weights], Tensor], dict[str, bool],
                      tuple[int, int, int]]] = {
    "lenet": (lambda tmp: LENET, LENET_KINDS, lenet_weights, lenet_forward, {},
              (1, 28, 28)),
    "caffenet-v1": (lambda tmp: _write(tmp / "caffenet.prototxt", CAFFENET), CAFFENET_KINDS,
                    caffenet_weights, caffenet_forward, {"v1": True, "legacy": True},
                    (3, 71, 71)),
    "batchnorm-scale": (lambda tmp: _write(tmp / "resnet.prototxt", BN_NET), BN_KINDS,
                        bn_weights, bn_forward, {}, (3, 10, 10)),
}


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _import(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["import", *argv])
    return code, capsys.readouterr().err


@pytest.mark.torch_threads(2)
@pytest.mark.parametrize("name", list(NETS))
def test_the_lowered_spec_computes_what_the_caffe_net_computes(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net_file, kinds, make, forward, style, (c, h, w) = NETS[name]
    net = net_file(tmp_path)
    weights = make(torch.Generator().manual_seed(0))
    odd = ("conv1",) if style.get("legacy") else ()
    model = caffemodel(tmp_path / "net.caffemodel", name, kinds, weights, odd=odd, **style)
    run = tmp_path / "run"
    code, err = _import([str(net), str(model), "--weights", str(run), "-o",
                         str(tmp_path / "net.net")], capsys)
    assert code == 0, err
    lines = err.splitlines()
    assert f"wrote {run / 'checkpoint.pt'} (the weights of {model})" in lines
    assert any(line.startswith("note: Caffe zoo models expect BGR images in 0–255")
               for line in lines)
    loaded = load_run(run)  # the checkpoint as `alexnetc eval` reads it
    x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    with torch.no_grad():
        got = loaded.model.double()(x)  # N x 10
        want = forward(x, weights)  # N x 10
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_blocks_and_a_factor_of_zero(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """The two residual blocks are written once, as a block, and the weights follow the
    stages there; bnres2b's factor of 0 gives statistics of 0 whatever its sums (the forward
    above agrees), and only its."""
    net = _write(tmp_path / "resnet.prototxt", BN_NET)
    weights = bn_weights(torch.Generator().manual_seed(0))
    model = caffemodel(tmp_path / "net.caffemodel", "bn", BN_KINDS, weights)
    spec = tmp_path / "net.net"
    code, err = _import([str(net), str(model), "--weights", str(tmp_path / "run"), "-o",
                         str(spec)], capsys)
    assert code == 0, err
    assert "block " in spec.read_text() and " * 2" in spec.read_text()
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["model"]
    zero = sorted(k for k, v in state.items() if "running_" in k and float(v.abs().max()) == 0)
    assert float(weights["bnres2b"][0].abs().min()) > 0
    assert [k.rsplit(".", 1)[1] for k in zero] == ["running_mean", "running_var"]


def test_a_transposed_inner_product(tmp_path: Path) -> None:
    """`transpose: true` stores the weight as in x out (InnerProductParameter)."""
    net = _write(tmp_path / "lenet.prototxt", LENET.read_text().replace(
        "num_output: 10", "num_output: 10\n    transpose: true"))
    weights = lenet_weights(torch.Generator().manual_seed(0))
    stored = {**weights, "ip2": [weights["ip2"][0].T.contiguous(), weights["ip2"][1]]}
    model = caffemodel(tmp_path / "lenet.caffemodel", "LeNet", LENET_KINDS, stored)
    assert main(["import", str(net), str(model), "--weights", str(tmp_path / "run")]) == 0
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    with torch.no_grad():
        got = load_run(tmp_path / "run").model.double()(x)  # N x 10
    torch.testing.assert_close(got, lenet_forward(x, weights), rtol=1e-9, atol=1e-9)


# --- the command line: what is given, and what is wrong with it ----------------------------------

@pytest.fixture
def lenet_model(tmp_path: Path) -> Callable[..., Path]:
    """LeNet's caffemodel, with its weights changed by `change`, under a name."""

    def write(change: Callable[[Weights], None] = lambda w: None,
              name: str = "lenet.caffemodel", kinds: dict[str, str] | None = None) -> Path:
        weights = lenet_weights(torch.Generator().manual_seed(0))
        change(weights)
        return caffemodel(tmp_path / name, "LeNet", kinds or LENET_KINDS, weights)

    return write


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], code: int = 1) -> str:
    """The one line an import fails with (nothing else said), without its prefix."""
    got, err = _import(argv, capsys)
    assert got == code, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("alexnetc: error: "), err
    return err.removeprefix("alexnetc: error: ").strip()


def test_weights_without_a_caffemodel_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    err = _fails([str(LENET), "--weights", str(run)], capsys, code=2)
    assert "give it as the second file" in err and not run.exists()


def test_a_caffemodel_without_weights_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        lenet_model: Callable[..., Path]) -> None:
    model = lenet_model()
    assert "give --weights RUN_DIR" in _fails([str(LENET), str(model)], capsys, code=2)
    assert "give the net's .prototxt first" in _fails(
        [str(model), "--weights", str(tmp_path / "run")], capsys, code=2)


def test_a_binary_second_file_is_the_caffemodel_whatever_its_name(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        lenet_model: Callable[..., Path]) -> None:
    model = lenet_model(name="lenet_iter_10000")
    code, err = _import([str(LENET), str(model), "--weights", str(tmp_path / "run")], capsys)
    assert code == 0 and f"(the weights of {model})" in err, err


def test_the_solver_may_come_between(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     lenet_model: Callable[..., Path]) -> None:
    solver = _write(tmp_path / "solver.prototxt", 'net: "lenet.prototxt"\nbase_lr: 0.01\n'
                    "momentum: 0.9\nweight_decay: 0.0005\nlr_policy: \"fixed\"\n")
    code, err = _import([str(LENET), str(solver), str(lenet_model()), "--weights",
                         str(tmp_path / "run")], capsys)
    assert code == 0, err


def test_a_layer_without_its_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     lenet_model: Callable[..., Path]) -> None:
    model = lenet_model(lambda w: w.pop("conv2"))
    err = _fails([str(LENET), str(model), "--weights", str(tmp_path / "run")], capsys)
    assert err == (f"{model} has no weights for layer 'conv2' (Convolution, {LENET}:41)")
    assert not (tmp_path / "run").exists()


def test_a_blob_of_another_shape_names_both(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str],
                                            lenet_model: Callable[..., Path]) -> None:
    def change(w: Weights) -> None:
        w["ip1"][0] = w["ip1"][0][:, :600]

    err = _fails([str(LENET), str(lenet_model(change)), "--weights", str(tmp_path / "run")],
                 capsys)
    assert err.startswith("blob 0 (weight) of layer 'ip1' (InnerProduct, ")
    assert err.endswith("is 500x600 in " + str(tmp_path / "lenet.caffemodel")
                        + ", the imported network's is 500x800")


def test_a_bias_the_net_does_not_have(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      lenet_model: Callable[..., Path]) -> None:
    net = _write(tmp_path / "lenet.prototxt", LENET.read_text().replace(
        "num_output: 20", "num_output: 20\n    bias_term: false"))
    err = _fails([str(net), str(lenet_model()), "--weights", str(tmp_path / "run")], capsys)
    assert err.startswith("layer 'conv1' (Convolution, ")
    assert err.endswith("has 2 blobs in " + str(tmp_path / "lenet.caffemodel")
                        + "; the imported network takes 1 (weight)")


def test_weights_on_a_layer_that_holds_none(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            lenet_model: Callable[..., Path]) -> None:
    def change(w: Weights) -> None:
        w["relu1"] = [torch.ones(500, dtype=torch.float64)]

    err = _fails([str(LENET), str(lenet_model(change)), "--weights", str(tmp_path / "run")],
                 capsys)
    assert err.startswith("layer 'relu1' (ReLU, ") and err.endswith(
        "has 1 blob in " + str(tmp_path / "lenet.caffemodel")
        + ", but the imported network holds no weights for it")


def test_layers_the_net_does_not_have_are_left_out_with_a_note(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        lenet_model: Callable[..., Path]) -> None:
    """As Caffe does: a caffemodel from train_val (with auxiliary classifiers, say) loads
    into the deploy net."""
    def change(w: Weights) -> None:
        w["aux/fc"] = [torch.ones(3, 2, dtype=torch.float64), torch.ones(3, dtype=torch.float64)]

    model = lenet_model(change, kinds={**LENET_KINDS, "aux/fc": "InnerProduct", "loss": "Loss"})
    code, err = _import([str(LENET), str(model), "--weights", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert (f"note: 1 layer of {model} with weights is not in the imported network and is "
            "left out, as Caffe leaves them: 'aux/fc'") in err.splitlines()


def test_layers_cut_off_are_left_out_too(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         lenet_model: Callable[..., Path]) -> None:
    """--skip-unsupported ends the network before a layer it cannot express: the weights of
    the layers after it are not the cut network's."""
    net = _write(tmp_path / "lenet.prototxt", LENET.read_text().replace(
        'type: "ReLU"', 'type: "Python"'))
    model = lenet_model()
    code, err = _import([str(net), str(model), "--weights", str(tmp_path / "run"),
                         "--skip-unsupported"], capsys)
    assert code == 0, err
    assert (f"note: 1 layer of {model} with weights is cut off by --skip-unsupported: its "
            "weights, which Caffe would load into the net, are left out: 'ip2'"
            ) in err.splitlines()


def test_layers_off_the_path_to_the_output_are_left_out_too(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        lenet_model: Callable[..., Path]) -> None:
    """A train_val's auxiliary classifier is in Caffe's net, which would load its weights;
    the imported network ends at the output and leaves it out."""
    aux = _layer("aux", "InnerProduct", "pool2", "aux", "inner_product_param { num_output: 3 }")
    net = _write(tmp_path / "lenet.prototxt", LENET.read_text().replace(
        'layer {\n  name: "ip1"', aux + 'layer {\n  name: "ip1"'))

    def change(w: Weights) -> None:
        w["aux"] = [torch.ones(3, 800, dtype=torch.float64), torch.ones(3, dtype=torch.float64)]

    model = lenet_model(change, kinds={**LENET_KINDS, "aux": "InnerProduct"})
    code, err = _import([str(net), str(model), "--weights", str(tmp_path / "run")], capsys)
    assert code == 0, err
    assert (f"note: 1 layer of {model} with weights does not lead to the network's output: "
            "its weights, which Caffe would load into the net, are left out with it: 'aux'"
            ) in err.splitlines()


# --- layers that share a name, as Caffe allows ---------------------------------------------------

# LeNet with its in-place ReLU named as the FC it follows.
SHARED = LENET.read_text().replace('name: "relu1"', 'name: "ip1"')
SHARED_FC_LINE = 75  # the `layer` of the FC named "ip1"


def _lenet_as_written(w: Weights, relu: str | None) -> list[bytes]:
    """LeNet's layers as Caffe writes them, the ReLU (no blobs) under the name `relu`, or
    left out."""
    return [layer_proto(relu or name, kind, [], False) if name == "relu1" else
            layer_proto(name, kind, [blob_proto(t) for t in w.get(name, [])], False)
            for name, kind in LENET_KINDS.items() if name != "relu1" or relu is not None]


def test_a_shared_name_s_weights_go_to_the_first_layer_with_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Net::CopyTrainedLayersFrom copies a layer of the caffemodel into the net's FIRST layer
    of its name: the FC, not the ReLU after it."""
    net = _write(tmp_path / "lenet.prototxt", SHARED)
    weights = lenet_weights(torch.Generator().manual_seed(0))
    model = tmp_path / "lenet.caffemodel"
    model.write_bytes(net_proto("LeNet", _lenet_as_written(weights, relu=None), False))
    run = tmp_path / "run"
    code, err = _import([str(net), str(model), "--weights", str(run)], capsys)
    assert code == 0, err
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    with torch.no_grad():
        got = load_run(run).model.double()(x)  # N x 10
    torch.testing.assert_close(got, lenet_forward(x, weights), rtol=1e-9, atol=1e-9)


def test_each_layer_of_a_shared_name_goes_to_the_first(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Caffe writes both layers of the name, the ReLU's without blobs, and that entry too goes
    to the FC, which takes 2: Caffe fails on it ("Incompatible number of blobs"), and so does
    the import, saying which entry of the file it is."""
    net = _write(tmp_path / "lenet.prototxt", SHARED)
    weights = lenet_weights(torch.Generator().manual_seed(0))
    model = tmp_path / "lenet.caffemodel"
    model.write_bytes(net_proto("LeNet", _lenet_as_written(weights, relu="ip1"), False))
    err = _fails([str(net), str(model), "--weights", str(tmp_path / "run")], capsys)
    assert err == (f"{model} (its layer 2 of 2 named 'ip1', which Caffe copies into the net's "
                   f"first of that name too) has no weights for layer 'ip1' (InnerProduct, "
                   f"{net}:{SHARED_FC_LINE})")
    assert not (tmp_path / "run").exists()


def test_a_later_layer_of_a_shared_name_gets_no_weights(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        lenet_model: Callable[..., Path]) -> None:
    """Two convolutions named alike: the file's one entry goes to the first; the second has
    none (Caffe would keep its initial values), an error that says why."""
    net = _write(tmp_path / "lenet.prototxt",
                 LENET.read_text().replace('name: "conv2"', 'name: "conv1"'))
    model = lenet_model(lambda w: w.pop("conv2"),
                        kinds={k: v for k, v in LENET_KINDS.items() if k != "conv2"})
    err = _fails([str(net), str(model), "--weights", str(tmp_path / "run")], capsys)
    assert err == (f"{model} has no weights for layer 'conv1' (Convolution, {net}:41): Caffe "
                   "copies the weights named 'conv1' into the net's first layer of that "
                   "name, at line 7")


def test_v1_layers_and_layer_entries_together_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Caffe's UpgradeV1Net refuses a NetParameter with both ("Refusing to upgrade
    inconsistent NetParameter input") rather than choose: here a V1 conv1 of zeros after
    the current layers, which would otherwise win."""
    weights = lenet_weights(torch.Generator().manual_seed(0))
    current = net_proto("LeNet", _lenet_as_written(weights, relu="relu1"), False)
    zeros = [blob_proto(torch.zeros_like(t)) for t in weights["conv1"]]
    model = tmp_path / "lenet.caffemodel"
    model.write_bytes(current + _message(2, layer_proto("conv1", "Convolution", zeros, True)))
    err = _fails([str(LENET), str(model), "--weights", str(tmp_path / "run")], capsys)
    first = len(_message(1, b"LeNet"))  # the first `layer`, after the net's name
    assert err == (f"{model} holds both V1 `layers` (at byte {len(current):,}) and current "
                   f"`layer` entries (at byte {first:,}), which Caffe refuses as "
                   "inconsistent: save it with one of them")
    assert not (tmp_path / "run").exists()


# --- -o and the checkpoint -----------------------------------------------------------------------

@pytest.mark.parametrize("spec", ["run/checkpoint.pt", "run/../run/checkpoint.pt", "link.pt"])
def test_o_naming_the_checkpoint_is_a_usage_error(
        spec: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        lenet_model: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The spec would be written over the checkpoint just written: refused before either is
    written, however the path names it (`..`, a link)."""
    monkeypatch.chdir(tmp_path)
    model = lenet_model()
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    assert main(["import", str(LENET), str(model), "--weights", "run"]) == 0
    (tmp_path / "link.pt").symlink_to(checkpoint)
    capsys.readouterr()
    written = checkpoint.read_bytes()
    err = _fails([str(LENET), str(model), "--weights", "run", "-o", spec], capsys, code=2)
    assert err == (f"-o {spec} names the checkpoint --weights writes (run/checkpoint.pt): "
                   "give the spec another name")
    assert checkpoint.read_bytes() == written


def test_o_naming_the_run_folder_is_a_usage_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        lenet_model: Callable[..., Path]) -> None:
    run = tmp_path / "run"
    err = _fails([str(LENET), str(lenet_model()), "--weights", str(run), "-o", str(run)],
                 capsys, code=2)
    assert err == (f"-o {run} names the run folder --weights writes into ({run}): give the "
                   "spec another name")
    assert not run.exists()


# --- reading a large file ------------------------------------------------------------------------

def _wide(tmp_path: Path, width: int, layers: int) -> tuple[Path, Path]:
    """A net of `layers` FCs of width x width on a 1x1 input, and its caffemodel."""
    text = f'name: "Wide"\ninput: "data"\ninput_shape {{ dim: 1 dim: {width} dim: 1 dim: 1 }}\n'
    protos, bottom = [], "data"
    gen = torch.Generator().manual_seed(0)
    for i in range(layers):
        text += _layer(f"fc{i}", "InnerProduct", bottom, f"fc{i}",
                       f"inner_product_param {{ num_output: {width} }}")
        bottom = f"fc{i}"
        blobs = [torch.randn(width, width, generator=gen), torch.randn(width, generator=gen)]
        protos.append(layer_proto(f"fc{i}", "InnerProduct", [
            _message(7, _message(1, b"".join(_varint(d) for d in t.shape)))
            + _message(5, t.numpy().astype("<f4").tobytes()) for t in blobs], False))
    model = tmp_path / "wide.caffemodel"
    model.write_bytes(net_proto("Wide", protos, False))
    return _write(tmp_path / "wide.prototxt", text), model


def test_a_large_caffemodel_is_read_a_layer_at_a_time(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        lenet_model: Callable[..., Path]) -> None:
    """The file is neither read whole (to tell its format, or to parse it) nor held parsed
    while the network is built: Python holds one blob's values at a time, here a fifth of
    the file. tracemalloc sees Python's buffers (bytes, arrays), not torch's tensors; a first
    import does the lazy imports that would cloud it."""
    assert main(["import", str(LENET), str(lenet_model()), "--weights",
                 str(tmp_path / "warm")]) == 0
    net, model = _wide(tmp_path, 512, 5)
    size = model.stat().st_size  # 5 x 1 MiB
    tracemalloc.start()
    try:
        code = main(["import", str(net), str(model), "--weights", str(tmp_path / "run")])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0, capsys.readouterr().err
    assert peak < size / 2, f"{peak:,} bytes at the peak for a file of {size:,}"


@pytest.mark.parametrize("name", ["caffenet-v1", "lenet-transposed"])
def test_blobs_read_in_rows_of_any_size(name: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A blob is read into its layer's tensor a few rows at a time (7 values here): across
    the pieces of a blob (values unpacked, in doubles), and into an InnerProduct's weight
    stored transposed."""
    from alexnetc.importers.caffe import weights as module

    monkeypatch.setattr(module, "ROWS_READ", 7)
    if name == "lenet-transposed":
        net = _write(tmp_path / "lenet.prototxt", LENET.read_text().replace(
            "num_output: 500", "num_output: 500\n    transpose: true"))
        w = lenet_weights(torch.Generator().manual_seed(0))
        stored = {**w, "ip1": [w["ip1"][0].T.contiguous(), w["ip1"][1]]}
        model = caffemodel(tmp_path / "net.caffemodel", "LeNet", LENET_KINDS, stored)
        forward: Callable[[Tensor, Weights], Tensor] = lenet_forward
        shape = (1, 28, 28)
    else:
        net = _write(tmp_path / "caffenet.prototxt", CAFFENET)
        w = caffenet_weights(torch.Generator().manual_seed(0))
        model = caffemodel(tmp_path / "net.caffemodel", name, CAFFENET_KINDS, w, v1=True,
                           legacy=True, odd=("conv1", "fc6"))
        forward, shape = caffenet_forward, (3, 71, 71)
    code, err = _import([str(net), str(model), "--weights", str(tmp_path / "run")], capsys)
    assert code == 0, err
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        got = load_run(tmp_path / "run").model.double()(x)  # N x 10
    torch.testing.assert_close(got, forward(x, w), rtol=1e-9, atol=1e-9)


def test_values_are_read_across_a_blob_s_pieces(tmp_path: Path) -> None:
    """A repeated field may come in pieces, packed or not: any range of the values reads as
    the same range of the whole."""
    values = torch.arange(9, dtype=torch.float32)
    data = (_message(7, _message(1, _varint(9))) + _message(5, values[:3].numpy().tobytes())
            + b"".join(_key(5, 5) + struct.pack("<f", float(v)) for v in values[3:5])
            + _message(5, values[5:].numpy().tobytes()))
    path = tmp_path / "pieces.caffemodel"
    path.write_bytes(net_proto("n", [layer_proto("x", "Scale", [data], False)], False))
    with read_caffemodel(path) as model:
        [layer] = model.layers
        [blob] = layer.blobs
        assert len(blob.pieces) == 3
        for start in range(9):
            for stop in range(start, 10):
                assert list(model.values(blob, start, stop)) == values[start:stop].tolist()


def test_a_truncated_caffemodel(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                lenet_model: Callable[..., Path]) -> None:
    model = lenet_model()
    data = model.read_bytes()
    model.write_bytes(data[: len(data) // 2])
    err = _fails([str(LENET), str(model), "--weights", str(tmp_path / "run")], capsys)
    assert err.startswith(f"{model} is truncated: ")
    assert f"of {len(data) // 2:,}" in err


def test_a_corrupt_caffemodel(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              lenet_model: Callable[..., Path]) -> None:
    model = lenet_model()
    data = bytearray(model.read_bytes())
    at = data.rfind(b"\xa2\x06", 0, data.index(b"conv2"))  # conv2's key: field 100, LENGTH
    data[at] = 0x07  # field 0, wire type 7
    model.write_bytes(bytes(data))
    err = _fails([str(LENET), str(model), "--weights", str(tmp_path / "run")], capsys)
    assert err.startswith(f"{model} is corrupt: ") and "after layer 'pool1'" in err


@pytest.mark.parametrize(("content", "said"), [
    (_message(5, struct.pack("<4f", 1, 2, 3, 4)) + _int(1, 1), "is not a Caffe model"),
    (_int(1, 1) + _int(2, 3) + _message(5, struct.pack("<3f", 104, 117, 123)),
     "is not a Caffe model"),
    (b'name: "LeNet"\nlayer { name: "conv1" }\n', "is a text file, not a binary .caffemodel"),
    (b"\x89HDF\r\n\x1a\n\0\0\0", "is an HDF5 file"),
    (b"\x0a\x05LeNet", "holds no layers"),
], ids=["blob-first-data", "mean-binaryproto", "text", "hdf5", "no-layers"])
def test_a_file_that_is_no_caffemodel(content: bytes, said: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "mean.caffemodel"
    model.write_bytes(content)
    err = _fails([str(LENET), str(model), "--weights", str(tmp_path / "run")], capsys)
    assert err.startswith(f"{model} {said}"), err


def test_the_readme_shows_the_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Importing networks"):]
    section = section[:section.index("\n## ", 1)]
    assert re.search(r"^alexnetc import \S+\.prototxt \S+\.caffemodel .*--weights \S+$",
                     section, re.MULTILINE)
