"""cuda-convnet2 import: the layer files convert with cuda-convnet2's own sizes and counts, the
two-GPU model becomes the paper's two-tower AlexNet, what alexnetc cannot express is a located
error, and malformed files have pinned messages. Also Conv's `remainder=ceil`, which the
import needs: cuda-convnet2's convolutions round up.

The sizes and counts the imported specs are held to come from `convnet2_layers` below,
written from cuda-convnet2's layer.py and not from the importer: ConfigParser reading (keys
case-insensitive, `;` after a space starts a comment), a conv's modulesX = 1 + ⌈(2·padding +
imgSize − filterSize) / stride⌉ with filters·groups filters, each reading channels/groups
maps, one bias per filter (sharedBiases); a pool's outputsX = ⌈(imgSize − start − sizeX) /
stride⌉ + 1; an fc's weights per input plus one bias per output; a concat's outputs summed.
Twins on two GPUs are paired by their names (`conv1a`, `conv1b`), not by the importer's rule.

Regenerate the golden messages with `UPDATE_GOLDEN=1 pytest tests/importers/test_convnet2.py`,
then read the diff.
"""

from __future__ import annotations

import configparser
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from alexnetc.cli.main import main
from alexnetc.compiler.errors import SpecError
from alexnetc.compiler.pipeline import CheckResult, check, check_file
from alexnetc.importers import Options, detect
from alexnetc.importers.convnet2 import FORMAT

from helpers import ROOT, SPECS

FIXTURES = ROOT / "tests" / "importers" / "fixtures" / "convnet2"
INVALID = sorted(p for p in (FIXTURES / "invalid").glob("*.cfg")
                 if not p.name.endswith("-params.cfg"))
NETS = {  # layer file: (its layer-params file, the --input cuda-convnet2's provider gives)
    "layers-imagenet-2gpu-model.cfg": ("layer-params-imagenet-2gpu-model.cfg", (224, 224, 3)),
    "layers-imagenet-1gpu.cfg": ("layer-params-imagenet-1gpu.cfg", (224, 224, 3)),
    "layers-80sec.cfg": ("layer-params-80sec.cfg", (32, 32, 3)),
    # as published in a cuda-convnet fork: each pool's neuron=relu after the pool
    "layers-80sec-relu-after-pool.cfg": ("layer-params-80sec-relu-after-pool.cfg", (32, 32, 3)),
    # cuda-convnet's 18% CIFAR-10 net: rnorm, same-map normalisation (Caffe's cifar10_full)
    "layers-18pct.cfg": ("layer-params-18pct.cfg", (32, 32, 3)),
}
OPS = {"conv": "Conv", "fc": "FC", "cmrnorm": "ResNorm", "rnorm": "MapNorm",
       "dropout": "Dropout", "dropout2": "Dropout"}


# --- cuda-convnet2's rules, read from its layer.py -------------------------------------------

@dataclass(frozen=True)
class Out:
    """A layer's output as layer.py sizes it: `outputs` values, `channels` square maps of
    `side` pixels (0 for an fc's), the parameters it allocates, and its GPU (`gpu=`, else its
    first input's)."""

    kind: str
    outputs: int
    channels: int
    side: int
    params: int = 0
    gpu: str = ""

    def shape(self) -> str:
        return f"{self.side}x{self.side}x{self.channels}" if self.side else str(self.outputs)


def read_cfg(path: Path) -> configparser.RawConfigParser:
    """Python 2's ConfigParser as layer.py uses it: option names lowercased, a `;` after a
    space starts a comment."""
    cfg = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    cfg.read(path)
    return cfg


def ints(cfg: configparser.RawConfigParser, name: str, key: str, n: int,
         default: int | None = None) -> list[int]:
    """safe_get_int_list, auto-expanded to one value per input (verify_num_params)."""
    if not cfg.has_option(name, key) and default is not None:
        return [default] * n
    got = [int(v) for v in cfg.get(name, key).split(",")]
    return got * n if len(got) == 1 else got


def convnet2_layers(layers: Path, image: tuple[int, int, int]) -> dict[str, Out]:
    """Every layer's output, as LayerParser.parse_layers builds them (square images only)."""
    cfg = read_cfg(layers)
    out: dict[str, Out] = {}
    for name in cfg.sections():
        kind = cfg.get(name, "type")
        if kind == "data":
            h, w, c = image
            out[name] = Out(kind, h * w * c, c, h) if cfg.getint(name, "dataIdx") == 0 else \
                Out(kind, 1, 1, 0)
            continue
        inputs = [out[i.strip()] for i in cfg.get(name, "inputs").split(",")]
        n = len(inputs)
        if kind == "conv":
            channels, size = ints(cfg, name, "channels", n), ints(cfg, name, "filterSize", n)
            padding, stride = ints(cfg, name, "padding", n, 0), ints(cfg, name, "stride", n, 1)
            groups = ints(cfg, name, "groups", n, 1)
            filters = [f * g for f, g in zip(ints(cfg, name, "filters", n), groups, strict=True)]
            img = [int(math.sqrt(i.outputs / c)) for i, c in zip(inputs, channels, strict=True)]
            modules = [1 + math.ceil((2 * p + s - f) / st)
                       for p, s, f, st in zip(padding, img, size, stride, strict=True)]
            assert len(set(modules)) == len(set(filters)) == 1
            weights = sum(c // g * f * f * filters[0]
                          for c, g, f in zip(channels, groups, size, strict=True))
            out[name] = Out(kind, modules[0] ** 2 * filters[0], filters[0], modules[0],
                            weights + filters[0])
        elif kind == "fc":
            o = cfg.getint(name, "outputs")
            out[name] = Out(kind, o, o, 0, sum(i.outputs for i in inputs) * o + o)
        elif kind == "pool":
            c = cfg.getint(name, "channels")
            side_in = int(math.sqrt(inputs[0].outputs / c))
            start = cfg.getint(name, "start") if cfg.has_option(name, "start") else 0
            side = math.ceil((side_in - start - cfg.getint(name, "sizeX"))
                             / cfg.getint(name, "stride")) + 1
            out[name] = Out(f"pool.{cfg.get(name, 'pool')}", side * side * c, c, side)
        elif kind == "concat":
            out[name] = Out(kind, sum(i.outputs for i in inputs),
                            sum(i.channels for i in inputs), inputs[0].side)
        else:  # cmrnorm, rnorm, neuron, dropout, dropout2, softmax, cost.*: the input's shape
            out[name] = Out(kind, inputs[0].outputs, inputs[0].channels, inputs[0].side)
        gpu = cfg.get(name, "gpu") if cfg.has_option(name, "gpu") else inputs[0].gpu
        out[name] = replace(out[name], gpu=gpu)
    return out


def towers(layers: dict[str, Out]) -> dict[str, Out]:
    """Twins `Xa` on GPU 0 and `Xb` on GPU 1 as one layer (under `Xa`) of both GPUs' maps;
    other layers as they are."""
    def twin(name: str) -> str | None:
        other = name[:-1] + {"a": "b", "b": "a"}.get(name[-1], "")
        if other not in layers or other == name:
            return None
        return other if {layers[name].gpu, layers[other].gpu} == {"0", "1"} else None

    joined: dict[str, Out] = {}
    for name, o in layers.items():
        if name.endswith("b") and twin(name):
            continue
        if name.endswith("a") and twin(name):
            b = layers[name[:-1] + "b"]
            o = Out(o.kind, o.outputs + b.outputs, o.channels + b.channels,
                                     o.side, o.params + b.params)
        joined[name] = o
    return joined


def expected_ops(layers: dict[str, Out]) -> list[tuple[str, str, int]]:
    """(op, output, parameters) of every layer alexnetc writes an op for, in file order: the
    concat of one layer's twins is what alexnetc's towers hold anyway."""
    pool = {"pool.max": "MaxPool", "pool.avg": "AvgPool"}
    return [({**OPS, **pool}[o.kind], o.shape(), o.params) for o in towers(layers).values()
            if o.kind in OPS or o.kind in pool]


# --- importing ---------------------------------------------------------------------------------

def imported(layers: str, skip: bool = False) -> tuple[str, CheckResult]:
    params, image = NETS.get(layers, (layers.replace("layers-", "layer-params-"), (32, 32, 3)))
    got = FORMAT.read([str(FIXTURES / layers), str(FIXTURES / params)], Options(image, skip))
    text = got.draft.text()
    return text, check(text, "imported.net")


@pytest.mark.parametrize("layers", sorted(NETS))
def test_counts_and_every_shape_are_cuda_convnet2s(layers: str) -> None:
    _, result = imported(layers)
    assert result.ok, [d.message for d in result.diagnostics]
    net = result.network
    assert net is not None
    source = convnet2_layers(FIXTURES / layers, NETS[layers][1])
    got = [(la.name, str(la.shape), la.counts.weights + la.counts.biases) for la in net.layers()
           if la.name in (*OPS.values(), "MaxPool", "AvgPool")]
    assert got == expected_ops(source)
    assert net.total().params == sum(o.params for o in source.values())
    last = next(o for o in reversed(source.values()) if o.kind == "softmax")
    assert str(net.output) == last.shape()


def test_the_two_gpu_model_is_the_papers_alexnet() -> None:
    text, result = imported("layers-imagenet-2gpu-model.cfg")
    net, paper = result.network, check_file(SPECS / "alexnet.net").network
    assert net is not None and paper is not None
    assert net.towers == paper.towers == 2
    assert net.total().params == paper.total().params == 60_965_224
    assert net.total().neurons == paper.total().neurons
    assert [s for s, _ in net.stages()] == [s for s, _ in paper.stages()]

    def crossing(n):
        return [s for s, layers in n.stages() if any(la.tower.cross_bytes for la in layers)]

    assert crossing(net) == crossing(paper) == ["conv3", "fc6", "fc7", "fc8"]
    assert net.cross_tower_bytes() == paper.cross_tower_bytes()
    # the 224-pixel input the paper states: cuda-convnet2 rounds conv1 up to 55
    assert "input 224x224x3" in text and "Conv(11,4, remainder=ceil) x96" in text
    lines = [line for line in text.splitlines() if ":" in line and not line.startswith("#")]
    for stage in ("conv1", "conv2", "conv4", "conv5"):
        line = next(x for x in lines if x.startswith(f"{stage}:"))
        assert "crossing GPUs" not in line and "each tower reads" in line
    for stage in ("conv3", "fc6", "fc7", "fc8"):
        assert "reads both towers, crossing GPUs" in next(x for x in lines
                                                           if x.startswith(f"{stage}:"))
    assert "groups=2" in next(x for x in lines if x.startswith("conv2:"))
    assert "groups" not in next(x for x in lines if x.startswith("conv3:"))


def test_conventions_are_converted_and_said() -> None:
    text, _ = imported("layers-imagenet-1gpu.cfg")
    # cmrnorm divides scale by size and adds minDiv: the paper's form takes alpha = 0.0001/5
    assert "ResNorm(5, alpha=2e-05, k=2, beta=0.75)" in text
    assert "cmrnorm: scale 0.0001 / size 5, minDiv 2" in text
    assert "1 + ⌈(224 − 11) / 4⌉ = 55" in text
    # conv1 → rnorm1 → pool1 (neuron=relu): one stage, the ReLU after the pool as written
    assert "conv1: Conv(11,4, remainder=ceil) x64; ResNorm(5, alpha=2e-05, k=2, beta=0.75); " \
           "MaxPool(3,2) + ReLU" in text
    assert "FC(1000, bias=-7) + Softmax" in text and "std=0.03" in text
    assert "train lr=0.01, momentum=0.9, weight_decay=0.0005" in text
    assert "epsW=dexp[base=0.01;tgtFactor=250;numSteps=4]" in text  # the schedule, said
    assert "epsB (the biases' learning rate): 0.02" in text
    text, _ = imported("layers-80sec.cfg")
    assert "AvgPool(3,2, remainder=ceil)" in text and "⌈(16 − 3) / 2⌉ + 1 = 8" in text
    # cuda-convnet's AvgPooler(sizeX²) against cudaconv3's a / regionSize: both said
    assert "averages the pixels inside it, as cuda-convnet2's does (the first cuda-convnet " \
           "divides it by 3² all the same)" in text
    assert "weight_decay=0.004" in text and "fc10 0.01" in text  # per-layer wc, said


def test_fc8_on_one_gpu_reading_both_towers(tmp_path: Path) -> None:
    """The softmax's fc written as one layer on GPU 0 reading both halves (no concat): alexnetc
    splits it over the towers, with the same parameters and the same crossing."""
    text = (FIXTURES / "layers-imagenet-2gpu-model.cfg").read_text()
    text = text[:text.index("[fc8a]")] + (
        "[fc8]\ntype=fc\ninputs=dropout7a,dropout7b\noutputs=1000\ninitW=0.01,0.01\ngpu=0\n\n"
        "[probs]\ntype=softmax\ninputs=fc8\n\n"
        "[logprob]\ntype=cost.logreg\ninputs=labvec,probs\ngpu=0\n")
    params = (FIXTURES / "layer-params-imagenet-2gpu-model.cfg").read_text()
    params = params.replace("[fc8a]", "[fc8]").replace("[fc8b]", "[unused]")
    params = params[:params.index("[unused]")] + params[params.index("[rnorm1a]"):]
    (tmp_path / "layers.cfg").write_text(text)
    (tmp_path / "params.cfg").write_text(params)
    got = FORMAT.read([str(tmp_path / "layers.cfg"), str(tmp_path / "params.cfg")],
                      Options((224, 224, 3)))
    result = check(got.draft.text())
    assert result.network is not None and result.network.total().params == 60_965_224
    line = next(x for x in got.draft.text().splitlines() if x.startswith("fc8:"))
    assert "FC(1000) + Softmax" in line and "on gpu 0 alone" in line and "crossing GPUs" in line
    source = convnet2_layers(tmp_path / "layers.cfg", (224, 224, 3))
    assert result.network.total().params == sum(o.params for o in source.values())


def test_replicas_are_one_network(tmp_path: Path) -> None:
    """`gpu=0,1` runs the same layers on two GPUs, each on half the batch: one network."""
    layers = tmp_path / "layers.cfg"
    layers.write_text((FIXTURES / "layers-imagenet-1gpu.cfg").read_text()
                      .replace("gpu=0\n", "gpu=0,1\n", 1))
    got = FORMAT.read([str(layers), str(FIXTURES / "layer-params-imagenet-1gpu.cfg")],
                      Options((224, 224, 3)))
    assert got.draft.towers == 1
    assert any("spreads it over GPUs 0, 1" in note for note in got.draft.notes)


BRANCHES = """[data]
type=data
dataIdx=0

[labels]
type=data
dataIdx=1

[c1]
type=conv
inputs=data
channels=3
filters=16
filterSize=3
padding=1
initW=0.01

[c2]
type=conv
inputs=c1
channels=16
filters=16
filterSize=3
padding=1

[r2]
type=neuron
inputs=c2
neuron=relu

[sum]
type=eltsum
inputs=c1,r2

[c3]
type=conv
inputs=sum,c1
channels=16,16
filters=32,32
filterSize=3
stride=2
padding=1
neuron=tanh[1,1]

[fc]
type=fc
inputs=c3
outputs=10

[probs]
type=softmax
inputs=fc

[cost]
type=cost.logreg
inputs=labels,probs
"""
BRANCH_PARAMS = "\n".join(
    f"[{n}]\nepsW={e}\nepsB=0.01\nmomW=0.9\nmomB=0.9\nwc=0.0005\n"
    for n, e in (("c1", "0.01"), ("c2", "0.01"), ("c3", "0.01,0.01"), ("fc", "const[base=0.01]"))
) + "\n[sum]\ncoeffs=1,1\n\n[cost]\ncoeff=1\n"


def test_sums_and_several_inputs_become_merges(tmp_path: Path) -> None:
    """eltsum becomes Add; a conv of two inputs (a sum of two convolutions) a Concat and one
    conv over both; a neuron layer joins the stage of what it activates."""
    (tmp_path / "layers.cfg").write_text(BRANCHES)
    (tmp_path / "params.cfg").write_text(BRANCH_PARAMS)
    got = FORMAT.read([str(tmp_path / "layers.cfg"), str(tmp_path / "params.cfg")],
                      Options((16, 16, 3)))
    text = got.draft.text()
    assert "c2: Conv(3,1, pad=1) x16 + ReLU" in text and "sum(c1, c2): Add" in text
    assert "c3(sum, c1): Concat; Conv(3,2, pad=1, remainder=ceil) x32 + Tanh" in text
    assert "train lr=0.01, momentum=0.9, weight_decay=0.0005" in text
    result = check(text)
    assert result.network is not None, [d.message for d in result.diagnostics]
    source = convnet2_layers(tmp_path / "layers.cfg", (16, 16, 3))
    got_ops = [(la.name, str(la.shape), la.counts.weights + la.counts.biases)
               for la in result.network.layers() if la.name in ("Conv", "FC")]
    assert got_ops == expected_ops(source)
    assert result.network.total().params == sum(o.params for o in source.values())


def convnet2_rnorm(x: torch.Tensor, size: int, scale: float, power: float,
                   min_div: float) -> torch.Tensor:
    """cudaconv3's kCNorm kernels for an rnorm, pixel by pixel in float64: the window starts
    at −size/2 and is clipped to the image, denominators minDiv + addScale·Σ a² with
    addScale = scale / size² (layer.py), the output a·denominator^−pow."""
    x = x.double()
    out = torch.empty_like(x)
    add_scale = scale / size ** 2
    side = x.shape[2]
    for py in range(side):
        for px in range(side):
            sy, sx = -(size // 2) + py, -(size // 2) + px
            window = x[:, :, max(0, sy):min(side, sy + size), max(0, sx):min(side, sx + size)]
            denom = min_div + add_scale * (window ** 2).sum((2, 3))
            out[:, :, py, px] = x[:, :, py, px] * denom ** -power
    return out


def test_same_map_normalisation_is_a_map_norm() -> None:
    """rnorm divides scale by size² (layer.py) and adds minDiv: MapNorm's alpha and k; the
    layer joins its stage, and the lowered layer computes what cuda-convnet2's kernels do."""
    from alexnetc.backends.lowering import build_module
    from alexnetc.backends.lowering.layers import MapNorm

    text, result = imported("layers-18pct.cfg")
    assert result.network is not None
    assert "conv1: Conv(5,1, pad=2, std=0.0001) x32 + ReLU; MaxPool(3,2, remainder=ceil); " \
        "MapNorm(3, alpha=5.55555555556e-06, k=1, beta=0.75)" in text
    assert text.count("rnorm: scale 5e-05 / size² 9, minDiv 1 (its default)") == 2
    norms = [m for m in build_module(result.network).eval().modules()
             if isinstance(m, MapNorm)]
    assert len(norms) == 2
    torch.manual_seed(0)
    x = torch.randn(2, 32, 16, 16) * 40  # large enough that the window's sum matters
    want = convnet2_rnorm(x, 3, 5e-05, 0.75, 1.0)
    assert not torch.allclose(want, x.double(), rtol=1e-3)
    with torch.no_grad():
        torch.testing.assert_close(norms[0](x).double(), want, rtol=1e-6, atol=1e-6)


def _18pct_with_size(tmp_path: Path, size: int) -> list[str]:
    """The 18% net's files with both rnorm layers' `size` changed (line 40 for rnorm1)."""
    text = (FIXTURES / "layers-18pct.cfg").read_text()
    (tmp_path / "layers.cfg").write_text(text.replace("channels=32\nsize=3",
                                                      f"channels=32\nsize={size}"))
    (tmp_path / "params.cfg").write_text((FIXTURES / "layer-params-18pct.cfg").read_text())
    return [str(tmp_path / "layers.cfg"), str(tmp_path / "params.cfg")]


def test_an_even_same_map_window_is_unsupported_or_cut(tmp_path: Path) -> None:
    """cuda-convnet2 reads an even window off centre (x − 2 … x + 1): no MapNorm; the network
    may be cut before it."""
    files = _18pct_with_size(tmp_path, 4)
    with pytest.raises(SpecError) as info:
        FORMAT.read(files, Options((32, 32, 3)))
    (d,) = info.value.diagnostics
    assert (d.kind, d.loc.line, d.loc.col) == ("import-unsupported", 40, 6)
    assert "normalises over 4x4 pixels, an even window (cuda-convnet2 reads x − 2 … x + 1)" \
        in d.message and "size=5" in d.hint
    got = FORMAT.read(files, Options((32, 32, 3), True))
    net = check(got.draft.text()).network
    assert net is not None and [s for s, _ in net.stages()] == ["conv1"]
    source = convnet2_layers(tmp_path / "layers.cfg", (32, 32, 3))
    assert str(net.output) == source["pool1"].shape() == "16x16x32"


def test_a_same_map_window_wider_than_the_image_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        FORMAT.read(_18pct_with_size(tmp_path, 17), Options((32, 32, 3)))
    (d,) = info.value.diagnostics
    assert d.kind == "import-inconsistent" and d.loc.line == 40
    assert "`size` of layer 'rnorm1' must be in 1..16 (its input is 16x16x32)" in d.message


def test_the_command_detects_and_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layers, params = FIXTURES / "layers-80sec.cfg", FIXTURES / "layer-params-80sec.cfg"
    assert detect([str(layers), str(params)]) is FORMAT
    assert detect([str(params), str(layers)]) is FORMAT  # either order
    out = tmp_path / "cifar.net"
    assert main(["import", str(params), str(layers), "--input", "32x32x3", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert "cuda-convnet2 layer files" in err and "Traceback" not in err
    assert check_file(out).ok


# --- golden errors -----------------------------------------------------------------------------

@pytest.mark.parametrize("layers", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_file_message(layers: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Each malformed or inexpressible file exits 1 with a located message, pinned in its
    .err (`missing-input-size` is imported without --input, the others with 32x32x3)."""
    monkeypatch.chdir(ROOT)
    params = layers.with_name(layers.stem + "-params.cfg")
    size = [] if layers.stem == "missing-input-size" else ["--input", "32x32x3"]
    code = main(["import", str(layers.relative_to(ROOT)), str(params.relative_to(ROOT)), *size])
    err = capsys.readouterr().err
    golden = layers.with_suffix(".err")
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(err, encoding="utf-8")
    assert code == 1 and "Traceback" not in err
    assert err == golden.read_text(encoding="utf-8")
    assert ": error: " in err.splitlines()[0]


# --- Conv(…, remainder=ceil): cuda-convnet2's rounding ---------------------------------------

@pytest.mark.parametrize("length", [7, 10, 13, 224])
def test_ceil_conv_counts_windows_as_cuda_convnet2(length: int) -> None:
    for size, stride in ((1, 2), (3, 2), (5, 3), (11, 4)):
        for pad in range(size // 2 + 1):
            if length + 2 * pad < size:
                continue
            result = check(f"input {length}x{length}x2\n"
                           f"c: Conv({size},{stride}, pad={pad}, remainder=ceil) x4\n")
            assert result.network is not None, (size, stride, pad)
            side = 1 + math.ceil((2 * pad + length - size) / stride)  # layer.py's modulesX
            assert str(result.network.output) == f"{side}x{side}x4"


@pytest.mark.parametrize("towers", [1, 2])
def test_ceil_conv_reads_zeros_past_the_edge(towers: int) -> None:
    from alexnetc.backends.lowering import build_module, canonical_state_dict

    result = check(f"input 14x15x4\ntowers {towers}\n"
                   "c: Conv(3x2,2x3, pad=1x0, groups=2, remainder=ceil) x8\n")
    assert result.network is not None and str(result.network.output) == "8x6x8"
    x = torch.randn(2, 4, 14, 15)
    for merge in (True, False):
        model = build_module(result.network, merge=merge).eval()
        state = canonical_state_dict(model)
        # the last window down starts at −1 + 7·2 = 13 and reads rows 13…15: one past the
        # padding; across at 5·3 = 15, columns 15, 16 past the 15-pixel edge
        want = F.conv2d(F.pad(x, (0, 2, 1, 2)), state["c.conv.weight"], state["c.conv.bias"],
                        (2, 3), 0, 1, 2)
        with torch.no_grad():
            torch.testing.assert_close(model(x), want)
