"""Darknet cfg import: the published cfgs convert with Darknet's own sizes and counts, what
alexnetc cannot express is a located error, malformed files have pinned messages.

The sizes and parameter counts the imported specs are held to come from `darknet_layers`
below, written from Darknet's sources and not from the importer: parser.c's defaults (a
`[maxpool]`'s padding is size − 1, its size defaults to its stride; `pad=1` pads size/2; a key
given twice takes its first value, as option_find does), convolutional_layer.c's
(h + 2·padding − size)/stride + 1, maxpool_layer.c's (h + padding − size)/stride + 1 with the
first window padding/2 before the input, a route's concatenated channels, a shortcut's
output the shape of the layer before it, and the parameters each layer allocates (weights,
biases, and a batch-normalised layer's scales; rolling statistics are not learnt).

Regenerate the golden messages with `UPDATE_GOLDEN=1 pytest tests/importers/test_darknet.py`,
then read the diff.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from alexnetc.cli.main import main
from alexnetc.compiler.pipeline import CheckResult, check
from alexnetc.importers import darknet
from alexnetc.importers.blocks import Folded

from helpers import ROOT

FIXTURES = ROOT / "tests" / "importers" / "fixtures" / "darknet"
INVALID = sorted((FIXTURES / "invalid").glob("*.cfg"))


# --- Darknet's rules, read from its sources -------------------------------------------------

@dataclass(frozen=True)
class Out:
    """A Darknet layer's output (h, w, c; a [connected] layer's is 1x1xoutputs) and the
    parameters it allocates."""

    kind: str
    h: int
    w: int
    c: int
    params: int = 0


def read_cfg(text: str) -> list[tuple[str, dict[str, str]]]:
    """read_cfg and read_option: every whitespace character stripped from each line, `#` and
    `;` lines skipped, the first of a key given twice kept."""
    sections: list[tuple[str, dict[str, str]]] = []
    for raw in text.splitlines():
        line = "".join(raw.split())
        if not line or line[0] in "#;":
            continue
        if line[0] == "[":
            sections.append((line[1:-1], {}))
            continue
        key, _, value = line.partition("=")
        sections[-1][1].setdefault(key, value)
    return sections


def atoi(options: dict[str, str], key: str, default: int) -> int:
    value = options.get(key)
    if value is None:
        return default
    m = re.match(r"[+-]?[0-9]+", value)
    return int(m.group(0)) if m else 0


def darknet_layers(text: str) -> tuple[tuple[int, int, int], list[Out]]:
    """The [net] input and every layer's output and parameters, as parse_network_cfg builds
    them."""
    (_, net), *layers = read_cfg(text)
    h, w, c = atoi(net, "height", 0), atoi(net, "width", 0), atoi(net, "channels", 0)
    outs: list[Out] = []
    for index, (kind, o) in enumerate(layers):
        if kind in ("convolutional", "conv"):
            n, size = atoi(o, "filters", 1), atoi(o, "size", 1)
            stride, groups = atoi(o, "stride", 1), atoi(o, "groups", 1)
            padding = size // 2 if atoi(o, "pad", 0) else atoi(o, "padding", 0)
            scales = n if atoi(o, "batch_normalize", 0) else 0
            out = Out("conv", (h + 2 * padding - size) // stride + 1,
                      (w + 2 * padding - size) // stride + 1, n,
                      c // groups * size * size * n + n + scales)
        elif kind in ("connected", "conn"):
            n = atoi(o, "output", 1)
            scales = n if atoi(o, "batch_normalize", 0) else 0
            out = Out("connected", 1, 1, n, h * w * c * n + n + scales)
        elif kind in ("maxpool", "max"):
            stride = atoi(o, "stride", 1)
            size = atoi(o, "size", stride)
            padding = atoi(o, "padding", size - 1)
            out = Out("maxpool", (h + padding - size) // stride + 1,
                      (w + padding - size) // stride + 1, c)
        elif kind in ("avgpool", "avg"):
            out = Out("avgpool", 1, 1, c)
        elif kind == "crop":
            out = Out("crop", atoi(o, "crop_height", 1), atoi(o, "crop_width", 1), c)
        elif kind == "route":
            read = [outs[i + index if i < 0 else i]
                    for i in map(int, o["layers"].split(","))]
            out = Out("route", read[0].h, read[0].w, sum(r.c for r in read))
        elif kind == "batchnorm":
            out = Out("batchnorm", h, w, c, 2 * c)
        else:  # dropout, softmax, cost, shortcut: the shape of the layer before
            out = Out(kind, h, w, c)
        outs.append(out)
        h, w, c = out.h, out.w, out.c
    return (atoi(net, "height", 0), atoi(net, "width", 0), atoi(net, "channels", 0)), outs


def darknet_maxpool(x: np.ndarray, size: int, stride: int, padding: int) -> np.ndarray:
    """forward_maxpool_layer: windows from −padding/2, positions outside the input skipped."""
    hh, ww = x.shape
    oh, ow = (hh + padding - size) // stride + 1, (ww + padding - size) // stride + 1
    out = np.full((oh, ow), -np.inf, dtype=x.dtype)
    for i, j in itertools.product(range(oh), range(ow)):
        for n, m in itertools.product(range(size), range(size)):
            r, q = -(padding // 2) + i * stride + n, -(padding // 2) + j * stride + m
            if 0 <= r < hh and 0 <= q < ww:
                out[i, j] = max(out[i, j], x[r, q])
    return out


# --- importing ------------------------------------------------------------------------------

def run_import(path: Path, capsys: pytest.CaptureFixture[str], *flags: str) \
        -> tuple[int, str, str]:
    code = main(["import", str(path), *flags])
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    return code, out.out, out.err


def imported(path: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> CheckResult:
    """The spec `alexnetc import` prints, checked."""
    code, spec, err = run_import(path, capsys, *flags)
    assert code == 0, err
    result = check(spec, f"{path.stem}.net")
    assert result.ok, [d.message for d in result.diagnostics]
    return result


def stage_outputs(result: CheckResult) -> dict[int, tuple[int, int, int]]:
    """Each stage's output by the Darknet layer number in its name (`conv12` → 12)."""
    assert result.network is not None
    found = {}
    for name, layers in result.network.stages():
        m = re.search(r"([0-9]+)$", name)
        assert m, name
        s = layers[-1].shape
        found[int(m.group(1))] = (1, 1, s.c) if s.flat else (s.h, s.w, s.c)
    return found


PUBLISHED = ["alexnet", "darknet19", "vgg-16", "darknet53", "resnet18-projection", "extraction",
             "densenet201"]


@pytest.mark.parametrize("name", PUBLISHED)
def test_shapes_and_parameters_are_darknets(name: str, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Every layer that computes has a stage of its number with Darknet's output shape (in
    the spec before its repeated modules are folded into blocks, whose stages are named
    within the block; the folded spec computes the same layers); the network's input and
    parameter count are Darknet's."""
    path = FIXTURES / f"{name}.cfg"
    written = imported(path, capsys)
    monkeypatch.setattr(darknet, "fold_blocks", lambda draft: Folded(draft, {}))
    result = imported(path, capsys)
    assert result.network is not None and written.network is not None
    assert [(layer.op.name, layer.shape) for layer in written.network.layers()] == \
        [(layer.op.name, layer.shape) for layer in result.network.layers()]
    assert written.network.total() == result.network.total()
    (h, w, c), layers = darknet_layers(path.read_text())
    first = layers[0]
    expected_input = (first.h, first.w, first.c) if first.kind == "crop" else (h, w, c)
    assert result.network.input.dims() == expected_input
    outputs = stage_outputs(result)
    for index, layer in enumerate(layers):
        if layer.kind in ("conv", "connected", "maxpool", "avgpool", "shortcut", "batchnorm") \
                or (layer.kind == "route" and index in outputs):
            assert outputs.get(index) == (layer.h, layer.w, layer.c), (index, layer)
    assert result.network.total().params == sum(layer.params for layer in layers)
    last = layers[-1]
    assert outputs[max(outputs)] == (last.h, last.w, last.c)


@pytest.mark.parametrize(("name", "params"), [
    ("alexnet", 62_378_344),  # Darknet's AlexNet, the published figure
    ("vgg-16", 138_357_544),  # VGG-16 (Simonyan & Zisserman's configuration D)
    ("resnet18-projection", 11_689_512),  # torchvision's ResNet-18
])
def test_published_parameter_counts(name: str, params: int,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    result = imported(FIXTURES / f"{name}.cfg", capsys)
    assert result.network is not None
    assert result.network.total().params == params


def test_alexnet_reads_as_the_paper_writes_it(capsys: pytest.CaptureFixture[str]) -> None:
    _, spec, _ = run_import(FIXTURES / "alexnet.cfg", capsys)
    assert "train batch=128, lr=0.01, momentum=0.9, weight_decay=0.0005\n" in spec
    assert "\nconv0: Conv(11,4) x96 + ReLU\npool1: MaxPool(3,2)\n" in spec
    assert "\nconv2: Conv(5,1, pad=2) x256 + ReLU  # Darknet pad=1 pads size/2\n" in spec
    assert "\nfc8: FC(4096) + ReLU; Dropout(0.5)\n" in spec
    assert "\nfc12: FC(1000) + Softmax\n" in spec
    assert "# policy=poly (power=4, max_batches=800000) has no alexnetc counterpart" in spec


def test_batchnorm_leaky_and_pools_say_their_conventions(
        capsys: pytest.CaptureFixture[str]) -> None:
    _, spec, _ = run_import(FIXTURES / "darknet19.cfg", capsys)
    conv0 = next(line for line in spec.splitlines() if line.startswith("conv0:"))
    assert conv0.startswith("conv0: Conv(3,1, pad=1, bias=false) x32; "
                            "BatchNorm(momentum=0.01) + LeakyReLU(0.1)")
    assert "0.99·old + 0.01·batch (momentum=0.01)" in conv0
    assert "Darknet leaky: 0.1·x below 0" in conv0
    assert "pool1: MaxPool(2,2)" in spec and "its default, size−1" in spec
    assert "avgpool24: GlobalAvgPool + Softmax" in spec
    assert "batch=1 is the cfg's testing setting (its commented-out training line: " \
        "batch=128)" in spec


def test_crop_is_the_input_and_its_augmentation(capsys: pytest.CaptureFixture[str]) -> None:
    _, spec, _ = run_import(FIXTURES / "vgg-16.cfg", capsys)
    assert "\ninput 224x224x3\n" in spec
    assert "\naugment resize=256, flip=true\n" in spec
    assert "lr_drop=1" in spec  # policy=constant, Darknet's default


def test_projection_shortcuts_are_merges(capsys: pytest.CaptureFixture[str]) -> None:
    """A [route] of one layer is what the next stage reads; a [shortcut] is an Add of the
    layer before it and the one it names, with its activation."""
    _, spec, _ = run_import(FIXTURES / "resnet18-projection.cfg", capsys)
    assert "\n  shortcut(conv2, in): Add + ReLU\n" in spec  # block residual: layer 4 and others
    assert "\n  conv3(in): Conv(1,2, bias=false, remainder=drop) xc; " \
        "BatchNorm(momentum=0.01)\n" in spec  # block projection: layer 11 and others
    assert "[route] layer 10 reads layer 7 (shortcut7)" in spec
    assert "\n  shortcut(conv3, conv2): Add + ReLU\n" in spec
    assert "\nshortcut7: residual(64) * 2 " in spec


def test_darknets_resnet18_shortcuts_are_located_errors(
        capsys: pytest.CaptureFixture[str]) -> None:
    """Darknet's own resnet18.cfg adds its strided shortcuts unprojected; alexnetc's Add
    cannot, and each is an error at its `from=`."""
    code, _, err = run_import(FIXTURES / "resnet18.cfg", capsys)
    assert code == 1
    located = re.findall(r"^(.*resnet18\.cfg:[0-9]+:[0-9]+): error: layer ([0-9]+) "
                         r"\(\[shortcut\]\)", err, re.MULTILINE)
    assert [n for _, n in located] == ["10", "16", "22"]
    assert "layer 7 (shortcut7, 64x64x64) to layer 9 (conv9, 32x32x128)" in err
    lines = (FIXTURES / "resnet18.cfg").read_text().splitlines()
    for where, _ in located:
        line, col = map(int, where.rsplit(":", 2)[1:])
        assert lines[line - 1][col - 1:] == "-3"


def test_yolo_head_is_unsupported_and_can_be_cut(capsys: pytest.CaptureFixture[str]) -> None:
    """tiny-yolo-voc: a size-2 stride-1 maxpool (padded on one side only) and the [region]
    head are both errors; --skip-unsupported ends the network before the first."""
    code, _, err = run_import(FIXTURES / "tiny-yolo-voc.cfg", capsys)
    assert code == 1
    assert "tiny-yolo-voc.cfg:88:1: error: layer 11 ([maxpool])" in err
    assert "tiny-yolo-voc.cfg:117:1: error: layer 15 ([region])" in err
    assert "MaxPool(2,1, remainder=drop) gives 12x12 here" in err
    result = imported(FIXTURES / "tiny-yolo-voc.cfg", capsys, "--skip-unsupported")
    assert result.network is not None
    assert result.network.stages()[-1][0] == "conv10"
    assert result.network.output.dims() == (13, 13, 512)
    code, spec, err = run_import(FIXTURES / "tiny-yolo-voc.cfg", capsys, "--skip-unsupported")
    assert "warning: layer 11 ([maxpool])" in err and "layers 11–15 left out" in err
    assert "# --skip-unsupported cut the network before layer 11 ([maxpool])" in spec


def test_a_cut_drops_the_branch_only_the_head_read(capsys: pytest.CaptureFixture[str]) -> None:
    """yolov2.cfg (pjreddie's, as published): cut before its [reorg] (layer 27), the network
    ends with layer 26, which reads layer 16 through a [route]; layers 17–24 fed only the
    head, so they are left out rather than written as stages nothing reads."""
    path = FIXTURES / "yolov2.cfg"
    code, spec, err = run_import(path, capsys, "--skip-unsupported")
    assert code == 0 and "never read" not in err
    assert "layers 27–31 left out, and pool17, conv18" in " ".join(spec.replace("#", "").split())
    result = imported(path, capsys, "--skip-unsupported")
    assert result.network is not None
    names = [name for name, _ in result.network.stages()]
    assert names[-2:] == ["conv16", "conv26"] and "conv24" not in names
    _, layers = darknet_layers(path.read_text())
    kept = [*range(17), 26]
    assert result.network.total().params == sum(layers[i].params for i in kept)
    last = layers[26]
    assert result.network.output.dims() == (last.h, last.w, last.c)


def test_import_writes_a_spec_that_checks(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "alexnet.net"
    code, table, err = run_import(FIXTURES / "alexnet.cfg", capsys, "-o", str(out))
    assert code == 0
    assert "62,378,344" in table
    assert "(Darknet cfg" in err
    assert check(out.read_text(), str(out)).ok


def test_darknet_files_are_recognised() -> None:
    from alexnetc.importers import detect

    for path in [*FIXTURES.glob("*.cfg"), *INVALID]:
        fmt = detect([str(path)])
        assert fmt is not None and fmt.name == "darknet", path


# --- maxpool windows ------------------------------------------------------------------------

def _pool_cfg(tmp_path: Path, side: int, size: int, stride: int, padding: int | None) -> Path:
    path = tmp_path / f"pool-{side}-{size}-{stride}-{padding}.cfg"
    path.write_text(f"[net]\nheight={side}\nwidth={side}\nchannels=1\n\n[maxpool]\nsize={size}\n"
                    f"stride={stride}\n" + ("" if padding is None else f"padding={padding}\n"))
    return path


@pytest.mark.parametrize(("size", "stride", "padding"), [
    (2, 2, None), (3, 2, None), (3, 2, 0), (3, 1, None), (5, 1, None), (2, 1, None),
    (3, 3, None), (2, 2, 0), (3, 2, 1), (4, 2, None), (3, 2, 3),
])
@pytest.mark.torch_threads(1)
def test_maxpools_take_darknets_windows_or_are_errors(
        size: int, stride: int, padding: int | None, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Each Darknet maxpool the importer converts takes the same maxima as maxpool_layer.c
    on odd and even inputs; one it cannot convert is an unsupported error at its section."""
    from alexnetc.backends.lowering import build_module

    for side in (7, 8):
        path = _pool_cfg(tmp_path, side, size, stride, padding)
        code, spec, err = run_import(path, capsys)
        if code:
            assert f"{path.name}:6:1: error: layer 0 ([maxpool])" in err, err
            continue
        result = check(spec)
        assert result.network is not None and result.recipe is not None, spec
        model = build_module(result.network, result.recipe, devices=["cpu"], seed=0).eval()
        x = torch.randn(1, 1, side, side)
        want = darknet_maxpool(x[0, 0].numpy(), size, stride,
                               size - 1 if padding is None else padding)
        with torch.no_grad():
            got = model(x)[0, 0].numpy()
        np.testing.assert_array_equal(got, want)


def test_a_size_two_stride_one_maxpool_cannot_be_converted(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_import(_pool_cfg(tmp_path, 8, 2, 1, None), capsys)
    assert code == 1 and "pads 0 before the input and 1 after it, so 8x8 gives 8x8" in err



def test_layers_after_an_inexpressible_maxpool_are_read_on(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A [dropout] working in place on a maxpool alexnetc cannot express still gets a name:
    the errors are reported, not an internal error."""
    path = _cfg(tmp_path, "filters=8\nsize=3\nstride=1\npad=1\nactivation=relu\n"
                "[maxpool]\nsize=2\nstride=1\n[dropout]\nprobability=.5\n"
                "[connected]\noutput=10\nactivation=linear\n")
    code, _, err = run_import(path, capsys)
    assert code == 1 and "internal error" not in err
    assert "pads 0 before the input and 1 after it" in err


# --- golden errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_cfg_message(cfg: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A malformed or inexpressible cfg exits 1; the golden pins its standard error."""
    monkeypatch.chdir(ROOT)
    code, _, err = run_import(cfg.relative_to(ROOT), capsys)
    assert code == 1
    golden = cfg.with_suffix(".err")
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(err, encoding="utf-8")
    assert err == golden.read_text(encoding="utf-8")
    assert err.startswith(f"{cfg.relative_to(ROOT)}:")


# --- keys and defaults ------------------------------------------------------------------------

def _cfg(tmp_path: Path, layer: str, net: str = "height=16\nwidth=16\nchannels=3\n") -> Path:
    path = tmp_path / "net.cfg"
    path.write_text(f"[net]\n{net}\n[convolutional]\n{layer}")
    return path


def test_parser_defaults_and_ignored_keys(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """A key given twice takes its first value, as option_find does; no activation= is
    parser.c's logistic; keys Darknet does not read, and keys that only steer its training,
    are warnings."""
    path = _cfg(tmp_path, "filters=8\nfilterz=4\nsize=3\nstride=1\npad=1\nstopbackward=1\n",
                "height=16\nwidth=16\nchannels=3\nbatch=32\nbatch=64\n")
    code, spec, err = run_import(path, capsys)
    assert code == 0, err
    assert "train batch=32," in spec
    assert "conv0: Conv(3,1, pad=1) x8 + Sigmoid" in spec
    assert "no activation=: Darknet's default, logistic" in spec
    assert "`batch` is given twice in [net]; Darknet reads the first (line 5)" in err
    assert "[convolutional] has no key `filterz`" in err and "did you mean `filters`?" in err
    assert "`stopbackward=1` steers Darknet's training" in err


@pytest.mark.parametrize("key", ["dilation=2", "binary=1", "xnor=1", "antialiasing=1"])
def test_keys_that_change_the_layer_are_unsupported(key: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = _cfg(tmp_path, f"filters=8\nsize=3\nstride=1\npad=1\nactivation=relu\n{key}\n")
    code, _, err = run_import(path, capsys)
    assert code == 1
    assert f"net.cfg:12:1: error: layer 0 ([convolutional]): `{key}` makes a " \
        "[convolutional] that alexnetc does not have" in err


def test_input_flag_replaces_the_net_size(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = _cfg(tmp_path, "filters=8\nsize=3\nstride=2\npad=1\nactivation=relu\n")
    result = imported(path, capsys, "--input", "33x33x3")
    assert result.network is not None
    assert result.network.output.dims() == (17, 17, 8)
    _, spec, _ = run_import(path, capsys, "--input", "33x33x3")
    assert "# --input 33x33x3 replaces the cfg's 16x16x3" in spec


@pytest.mark.parametrize(("value", "read_as"), [("3.5", "3"), ("3x3", "3"), ("three", "0")])
def test_a_number_darknet_would_misread_is_an_error(value: str, read_as: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = _cfg(tmp_path, f"filters=8\nsize={value}\nstride=1\npad=1\nactivation=relu\n")
    code, _, err = run_import(path, capsys)
    assert code == 1
    assert f"net.cfg:8:6: error: `size={value}`: expected an integer" in err
    assert f"Darknet would quietly read it as {read_as}" in err
