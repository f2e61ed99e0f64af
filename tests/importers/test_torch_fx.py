"""`alexnetc import module:ClassOrFactory` of PyTorch modules.

The correctness check is the one that matters for a traced module: the spec it writes, lowered
by alexnetc with the weights it writes, computes what the module computes (eval mode), for
torchvision's AlexNet, ResNet-18 and GoogLeNet as published and a small net that uses the rest
(LRN, cat, +, rectangular, dilated and grouped kernels, ceil pools, BatchNorm1d, PReLU). The
parameter counts are torchvision's published ones. Error messages are pinned in golden files:
regenerate them after an intended wording change with `UPDATE_GOLDEN=1`, then read the diff.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from alexnetc.backends.train.run import load_run
from alexnetc.cli.main import main
from alexnetc.compiler.errors import Severity, SpecError
from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.pipeline import check, check_file
from alexnetc.importers import Imported, Options, detect
from alexnetc.importers.torch_fx import FORMAT

from helpers import ROOT, SPECS

FIXTURES = Path(__file__).parent / "fixtures" / "torch"
INVALID = sorted((FIXTURES / "invalid").glob("*.py"))

# torchvision's documented counts (1000 classes; GoogLeNet without its auxiliary heads).
PUBLISHED = {"tv_alexnet:alexnet": 61_100_840, "reference_nets:resnet18": 11_689_512,
             "reference_nets:googlenet": 6_624_904}
NETS = [("tv_alexnet:alexnet", (224, 224, 3)), ("reference_nets:resnet18", (224, 224, 3)),
        ("reference_nets:googlenet", (224, 224, 3)), ("small_custom:SmallNet", (32, 32, 3))]


@pytest.fixture(autouse=True)
def fixtures_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FIXTURES))


def trained(factory: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """`factory` with weights as after training: seeded, and BatchNorm statistics, scales,
    shifts and PReLU slopes drawn at random (freshly built they are 0, 1 and 0.25, which
    would hide a BatchNorm or PReLU whose weights went to the wrong place)."""

    def build() -> nn.Module:
        torch.manual_seed(0)
        module = factory()
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for m in module.modules():
                if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                    assert m.running_mean is not None and m.running_var is not None
                    m.weight.uniform_(0.5, 1.5, generator=g)
                    m.bias.normal_(0.0, 0.1, generator=g)
                    m.running_mean.normal_(0.0, 0.1, generator=g)
                    m.running_var.uniform_(0.5, 1.5, generator=g)
                elif isinstance(m, nn.PReLU):
                    m.weight.uniform_(0.0, 0.5, generator=g)
        return module.eval()

    return build


def import_trained(target: str, size: tuple[int, int, int], run: Path,
                   monkeypatch: pytest.MonkeyPatch) -> tuple[Imported, nn.Module]:
    """The import of `target` with trained weights written to run/checkpoint.pt, and the same
    module as PyTorch builds it."""
    module_name, attr = target.split(":")
    module = importlib.import_module(module_name)
    monkeypatch.setattr(module, attr, trained(getattr(module, attr)))
    imported = FORMAT.read([target], Options(size, weights=str(run / "checkpoint.pt")))
    return imported, getattr(module, attr)()


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.torch_threads(2)
@pytest.mark.parametrize(("target", "size"), NETS, ids=[t for t, _ in NETS])
def test_the_lowered_spec_computes_what_the_module_computes(
        target: str, size: tuple[int, int, int], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    imported, module = import_trained(target, size, tmp_path / "run", monkeypatch)
    result = check(imported.draft.text(), "imported.net")
    assert result.network is not None, [d.render(result.source) for d in result.diagnostics]
    assert not result.diagnostics and not imported.warnings
    assert result.network.total().params == params(module) == PUBLISHED.get(target,
                                                                            params(module))
    run = load_run(tmp_path / "run")  # the checkpoint as `alexnetc eval` reads it
    h, w, c = size
    x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = module(x).flatten(1), run.model.predict(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def stage_lines(imported: Imported) -> list[str]:
    return [s.line() for s in imported.draft.stages]


def test_torchvision_alexnet_reads_as_its_spec() -> None:
    """The same network as specs/alexnet-torchvision.net, named after torchvision's modules;
    the flatten is FC's own, dropout joins the stage before it."""
    imported = FORMAT.read(["tv_alexnet:AlexNet"], Options((224, 224, 3)))
    assert stage_lines(imported) == [
        "features_0: Conv(11,4, pad=2, remainder=drop) x64 + ReLU; MaxPool(3,2)",
        "features_3: Conv(5,1, pad=2) x192 + ReLU; MaxPool(3,2)",
        "features_6: Conv(3,1, pad=1) x384 + ReLU",
        "features_8: Conv(3,1, pad=1) x256 + ReLU",
        "features_10: Conv(3,1, pad=1) x256 + ReLU; MaxPool(3,2); AdaptiveAvgPool(6); "
        "Dropout(0.5)",
        "classifier_1: FC(4096) + ReLU; Dropout(0.5)",
        "classifier_4: FC(4096) + ReLU",
        "classifier_6: FC(1000)",
    ]
    assert imported.draft.stages[0].comments == [
        "PyTorch floors: (224 + 2·2 − 11) = 217 is not a multiple of stride 4"]
    text = imported.draft.text()
    assert "network AlexNet\ninput 224x224x3\n" in text
    assert "# A PyTorch module states no training recipe" in text
    ours, written = check(text).network, check_file(SPECS / "alexnet-torchvision.net").network
    assert ours is not None and written is not None
    assert layer_shapes(ours) == [s for s in layer_shapes(written) if s[0] != "Softmax"]


def layer_shapes(net: CheckedNetwork) -> list[tuple[str, str]]:
    return [(layer.op.name, str(layer.shape)) for layer in net.layers()]


def test_branches_become_merges_reading_named_stages() -> None:
    """The merges read named stages; the repeated modules are folded into blocks
    (test_blocks.py), so they are the blocks' stages."""
    resnet = FORMAT.read(["reference_nets:resnet18"], Options((224, 224, 3)))
    residual, projection = ([s.line() for s in b.stages] for b in resnet.draft.blocks)
    assert "out(conv2, in): Add + ReLU" in residual
    assert "downsample_0(in): Conv(1,2, bias=false, remainder=drop) xc; BatchNorm" in projection
    assert "out(conv2, downsample_0): Add + ReLU" in projection
    assert stage_lines(resnet)[-3:] == ["layer4: projection(512); residual(512)",
                                        "layer4_1_globalavgpool: GlobalAvgPool", "fc: FC(1000)"]
    googlenet = FORMAT.read(["reference_nets:googlenet"], Options((224, 224, 3)))
    inception = [s.line() for s in googlenet.draft.blocks[0].stages]
    assert inception[-1] == ("out(branch1_conv, branch2_1_conv, branch3_1_conv, "
                             "branch4_1_conv): Concat")
    assert "branch4_0(in): MaxPool(3,1, pad=1)" in inception
    assert stage_lines(googlenet)[0] == ("conv1_conv: Conv(7,2, pad=3, bias=false, "
                                         "remainder=drop) x64; BatchNorm(eps=0.001) + ReLU; "
                                         "MaxPool(3,2, remainder=ceil)")


def test_conventions_are_converted_and_said() -> None:
    """PyTorch's LRN divides alpha by its window, ceil_mode rounds up; both are written in
    alexnetc's terms with a comment."""
    draft = FORMAT.read(["small_custom:SmallNet"], Options((32, 32, 3))).draft
    conv1 = draft.stages[0]
    assert conv1.line() == ("conv1: Conv(5,2, pad=1, remainder=drop) x16 + ReLU; "
                            "ResNorm(5, alpha=2e-05); MaxPool(2,2, remainder=ceil)")
    assert conv1.comments == [
        "PyTorch floors: (32 + 2·1 − 5) = 29 is not a multiple of stride 2",
        "PyTorch LRN: alpha 0.0001 / size 5",
        "PyTorch ceil_mode: (15 + 2·0 − 2) = 13 is not a multiple of stride 2"]
    lines = [s.line() for s in draft.stages]
    assert lines[1:6] == [
        "branches_wide: Conv(1x3,1, pad=0x1) x8 + LeakyReLU(0.2)",
        "branches_tall(conv1): Conv(3,1, pad=same, dilation=2, bias=false) x8; "
        "BatchNorm(eps=0.001, momentum=0.05) + ReLU",
        "branches(branches_wide, branches_tall): Concat",
        "res_conv: Conv(3,1, pad=1, groups=4) x16 + PReLU",
        "res(res_conv, branches): Add; AvgPool(2,2) + Tanh"]
    assert lines[-2:] == ["fc1: FC(32); BatchNorm + Sigmoid; Dropout(0.3)", "fc2: FC(10) + Softmax"]


@pytest.mark.torch_threads(2)
def test_a_shared_prelu_slope_is_repeated_per_channel(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    imported, module = import_trained("small_custom:shared_slope", (32, 32, 3),
                                      tmp_path / "run", monkeypatch)
    conv3 = next(s for s in imported.draft.stages if s.name == "conv3")
    assert conv3.comments == ["PyTorch PReLU: 1 slope shared by 12 channels, here 12 "
                              "(11 more parameters)"]
    result = check(imported.draft.text())
    assert result.network is not None
    assert result.network.total().params == params(module) + 11
    run = load_run(tmp_path / "run")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(run.model.predict(x), module(x), rtol=1e-4, atol=1e-5)


def test_the_format_is_told_by_the_target() -> None:
    assert FORMAT.sniff(["torchvision.models:alexnet"], None)
    assert FORMAT.sniff(["net:Outer.build"], None)
    assert not FORMAT.sniff(["specs/alexnet.net"], None)
    assert not FORMAT.sniff(["a:b", "c:d"], None)
    found = detect(["reference_nets:resnet18"])
    assert found is not None and found.name == "torch"


def test_a_module_file_that_exists_is_no_target(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("m:Net").write_text("")
    assert not FORMAT.sniff(["m:Net"], [""])


# --- the command -------------------------------------------------------------------------------


@pytest.mark.torch_threads(2)
def test_import_then_eval_and_compile_the_weights(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """`--weights` writes a checkpoint that `eval` and `compile --weights` take, and the
    compiled program computes what the module computes."""
    import small_custom

    monkeypatch.setattr(small_custom, "SmallNet", trained(small_custom.SmallNet))
    spec, run = tmp_path / "small.net", tmp_path / "run"  # the run folder is made
    assert main(["import", "small_custom:SmallNet", "--input", "32x32x3", "-o", str(spec),
                 "--weights", str(run)]) == 0
    out = capsys.readouterr()
    assert f"wrote {spec} (PyTorch module (torch.fx), " in out.err
    assert f"wrote {run / 'checkpoint.pt'} (the module's weights)" in out.err
    assert "SmallNet: input 32x32x3" in out.out and "5,562" in out.out
    assert main(["eval", str(run), "--no-ten-crop", "--workers", "0"]) == 0
    assert "SmallNet after 0 epochs on digits" in capsys.readouterr().out
    pt2 = tmp_path / "small.pt2"
    assert main(["compile", str(spec), "--weights", str(run), "-o", str(pt2)]) == 0
    capsys.readouterr()
    program = torch.export.load(str(pt2)).module()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(program(x), small_custom.SmallNet()(x), rtol=1e-4,
                                   atol=1e-5)


def test_skip_unsupported_cuts_the_network_with_a_warning(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.syspath_prepend(str(FIXTURES / "invalid"))
    spec = tmp_path / "cut.net"
    assert main(["import", "gelu_module:Net", "--input", "16x16x3", "--skip-unsupported",
                 "-o", str(spec)]) == 0
    err = capsys.readouterr().err
    assert ("gelu_module.py:20:43: warning: 'features.3' (nn.GELU) has no alexnetc op; the "
            "network is cut before it and ends at stage 'features_2' (--skip-unsupported)"
            ) in err
    assert spec.read_text().endswith("features_0: Conv(3,1, pad=1) x8 + ReLU\n"
                                     "features_2: Conv(3,1, pad=1) x8\n")


@pytest.mark.parametrize(("argv", "message"), [
    (["small_custom:SmallNet"], "small_custom:SmallNet: a PyTorch module does not state its "
     "input size; give it with --input HxWxC, e.g. --input 224x224x3"),
    (["no_such_module:Net", "--input", "8x8x3"],
     "no_such_module:Net: no module named 'no_such_module' (looked in the current folder and "
     "on Python's path)"),
    (["small_custom:SmalNet", "--input", "8x8x3"],
     "small_custom:SmalNet: small_custom has no 'SmalNet' (did you mean 'SmallNet'?)"),
], ids=["no-input", "no-module", "no-class"])
def test_usage_errors(argv: list[str], message: str,
                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", *argv]) == 2
    assert capsys.readouterr().err == f"alexnetc: error: {message}\n"


@pytest.mark.parametrize("source", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_module_message(source: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """What the spec cannot express, or a module that cannot be built or traced, is one error
    at the line of the module's code (exit 1), never a traceback."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(source.parent))
    code = main(["import", f"{source.stem}:Net", "--input", "16x16x3"])
    err = capsys.readouterr().err
    golden = source.with_suffix(".err")
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(err, encoding="utf-8")
    assert code == 1
    assert err == golden.read_text(encoding="utf-8")
    assert "Traceback" not in err
    assert err.startswith(f"{source.relative_to(ROOT)}:")


def test_invalid_python_is_a_located_error(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("broken_net.py").write_text("import torch\n\nclass Net(torch.nn.Module:\n    pass\n")
    with pytest.raises(SpecError) as e:
        FORMAT.read(["broken_net:Net"], Options((8, 8, 3)))
    (d,) = e.value.diagnostics
    assert (d.loc.file, d.loc.line, d.severity) == ("broken_net.py", 3, Severity.ERROR)
    assert d.message.startswith("invalid Python: ")


def test_an_input_the_module_does_not_take_is_located_at_the_failing_layer() -> None:
    with pytest.raises(SpecError) as e:
        FORMAT.read(["small_custom:SmallNet"], Options((32, 32, 1)))
    (d,) = e.value.diagnostics
    assert d.kind == "import-inconsistent"
    assert d.message.startswith("on a 32x32x1 input, 'conv1' (nn.Conv2d) raises RuntimeError: ")
    assert (Path(d.loc.file).name, d.loc.line) == ("small_custom.py", 55)


@pytest.mark.parametrize(("body", "message"), [
    ("self.p = nn.AvgPool2d(3, 1, padding=1, count_include_pad=False)",
     "count_include_pad=False: alexnetc's AvgPool counts the zero padding"),
    ("self.p = nn.LocalResponseNorm(4)", "a LocalResponseNorm window of 4 channels"),
    ("self.p = nn.Conv2d(3, 3, 1, padding=1)", "padding 1 is more than half the kernel's span 1"),
    ("self.p = nn.BatchNorm2d(3, affine=False)", "affine=False"),
    ("self.p = nn.BatchNorm2d(3, track_running_stats=False)", "track_running_stats=False"),
    ("self.p = nn.Softmax(dim=2)", "Softmax over dimension 2 of a 4-D tensor"),
    ("self.p = nn.MaxPool2d(2, return_indices=True)", "gives several tensors"),
], ids=["avgpool-pad", "lrn-even", "conv-pad", "bn-affine", "bn-batch-stats", "softmax-dim",
        "pool-indices"])
def test_what_alexnetc_cannot_express_is_refused(body: str, message: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # found there, as `python -m` finds modules
    name = re.sub(r"\W", "_", tmp_path.name)
    Path(f"{name}.py").write_text(
        "from torch import nn\n\n\nclass Net(nn.Module):\n    def __init__(self):\n"
        f"        super().__init__()\n        self.c = nn.Conv2d(3, 3, 1)\n        {body}\n\n"
        "    def forward(self, x):\n        return self.p(self.c(x))\n")
    with pytest.raises(SpecError) as e:
        FORMAT.read([f"{name}:Net"], Options((8, 8, 3)))
    (d,) = e.value.diagnostics
    assert message in d.message
    assert (d.loc.file, d.loc.line) == (f"{name}.py", 11)


# --- torchvision's classic CNNs, as published ------------------------------------------------

# fixtures/torch/real/ holds torchvision's model definitions (torchvision/models/*.py, BSD-3),
# as they are published. Their documented parameter counts (1000 classes; GoogLeNet and
# Inception v3 as evaluated, without the auxiliary heads). Read at small inputs: the counts do
# not depend on the input size, and the shape run stays fast.
TORCHVISION = {
    "real.vgg:vgg11": 132_863_336, "real.vgg:vgg11_bn": 132_868_840,
    "real.vgg:vgg16": 138_357_544, "real.vgg:vgg16_bn": 138_365_992,
    "real.squeezenet:squeezenet1_0": 1_248_424, "real.squeezenet:squeezenet1_1": 1_235_496,
    "real.resnet:resnet18": 11_689_512, "real.resnet:resnet50": 25_557_032,
    "real.googlenet:googlenet_eval": 6_624_904, "real.mobilenetv2:mobilenet_v2": 3_504_872,
    "real.densenet:densenet121": 7_978_856, "real.inception:inception_v3_eval": 23_834_568,
    "real.mnasnet:mnasnet1_0": 4_383_312,
}
SMALL = {"real.inception:inception_v3_eval": (96, 96, 3)}  # Inception v3 needs 75x75 at least


@pytest.mark.torch_threads(2)
@pytest.mark.parametrize("target", list(TORCHVISION))
def test_torchvision_networks_import_with_their_published_parameter_counts(
        target: str) -> None:
    imported = FORMAT.read([target], Options(SMALL.get(target, (64, 64, 3))))
    result = check(imported.draft.text(), "imported.net")
    assert result.network is not None, [d.render(result.source) for d in result.diagnostics]
    assert not result.diagnostics and not imported.warnings
    assert result.network.total().params == TORCHVISION[target]


@pytest.mark.torch_threads(2)
@pytest.mark.parametrize("target", ["real.squeezenet:squeezenet1_1",
                                    "real.mobilenetv2:mobilenet_v2", "real.mnasnet:mnasnet1_0",
                                    "real.densenet:densenet121"])
def test_torchvision_networks_compute_what_the_module_computes(
        target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fire's concatenation, ReLU6 and depthwise groups with `x + self.conv(x)`, `x.mean([2,
    3])`, DenseNet's growing concatenations (the first of one tensor): with the module's
    weights the lowered spec gives the module's outputs."""
    imported, module = import_trained(target, (64, 64, 3), tmp_path / "run", monkeypatch)
    assert not imported.warnings
    assert params(module) == TORCHVISION[target]
    run = load_run(tmp_path / "run")
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(run.model.predict(x), module(x), rtol=1e-4, atol=1e-5)


@pytest.mark.filterwarnings("ignore:The default weight initialization:FutureWarning")
def test_weights_that_forward_leaves_unused_are_left_out_with_a_warning() -> None:
    """torchvision's `googlenet()` builds the auxiliary heads that only training runs: the
    spec is the network that eval mode runs, and says what it left out."""
    imported = FORMAT.read(["real.googlenet:googlenet"], Options((64, 64, 3)))
    (w,) = imported.warnings
    assert w.severity is Severity.WARNING
    assert w.message == ("'aux1', 'aux2' (6,379,984 parameters) are not used by "
                         "GoogLeNet.forward in eval mode: the spec leaves them out, and counts "
                         "6,379,984 parameters fewer than the module")
    assert (Path(w.loc.file).name, line_of(Path(w.loc.file), w.loc.line)) \
        == ("googlenet.py", "    def forward(self, x: Tensor) -> Any:")
    text = imported.draft.text()
    assert "# Left out: 'aux1', 'aux2' (6,379,984 parameters), which forward does not use" in text
    result = check(text)
    assert result.network is not None and result.network.total().params == 6_624_904


def line_of(path: Path, line: int) -> str:
    return path.read_text(encoding="utf-8").splitlines()[line - 1]


@pytest.mark.parametrize(("target", "message", "line"), [
    ("real.shufflenetv2:shufflenet_v2_x1_0",
     ".view() in 'stage2.0' (real.shufflenetv2.InvertedResidual, shufflenetv2.py:28) reshapes "
     "N x 116 x 28 x 28 to N x 2 x 58 x 28 x 28",
     "    x = x.view(batchsize, groups, channels_per_group, height, width)"),
    ("real.googlenet:googlenet_transform_input",
     "`[]` (operator.getitem) in GoogLeNet.forward gives a 3-D tensor",
     "            x_ch0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5"),
    ("real.inception:inception_v3_transform_input",
     "`[]` (operator.getitem) in Inception3.forward gives a 3-D tensor",
     "            x_ch0 = torch.unsqueeze(x[:, 0], 1) * (0.229 / 0.5) + (0.485 - 0.5) / 0.5"),
    ("real.densenet:densenet121_memory_efficient",
     "torch.fx cannot trace real.densenet:densenet121_memory_efficient",
     "        return any(tensor.requires_grad for tensor in input)"),
], ids=["shufflenet-channel-shuffle", "googlenet-transform-input",
        "inception-transform-input", "densenet-checkpointing"])
def test_what_torchvision_networks_do_beyond_the_language_is_located(
        target: str, message: str, line: str) -> None:
    size = (299, 299, 3) if "inception" in target else (224, 224, 3)
    with pytest.raises(SpecError) as e:
        FORMAT.read([target], Options(size))
    (d,) = e.value.diagnostics
    assert d.message.startswith(message)
    assert line_of(Path(d.loc.file), d.loc.line) == line


@pytest.mark.parametrize(("mean", "message"), [
    ("x.mean([2, 3])", ""), ("torch.mean(x, dim=(-2, -1), keepdim=True)", ""),
    ("x.mean(1, keepdim=True)", "the mean over dimension(s) 1 of a 4-D tensor: alexnetc "
     "averages each whole map (GlobalAvgPool) only"),
    ("x.mean([1, 2, 3], keepdim=True)", "the mean over dimension(s) [1, 2, 3] of a 4-D tensor"),
], ids=["method", "function-keepdim", "channels", "all"])
def test_a_mean_over_the_maps_is_a_global_average_pool(mean: str, message: str,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """MNASNet's and ShuffleNet's `x.mean([2, 3])` is GlobalAvgPool; other means are not."""
    monkeypatch.chdir(tmp_path)
    name = "mean_" + re.sub(r"\W", "_", tmp_path.name)
    Path(f"{name}.py").write_text(
        "import torch\nfrom torch import nn\n\n\nclass Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.c = nn.Conv2d(3, 4, 3)\n\n"
        f"    def forward(self, x):\n        return {mean.replace('x', 'self.c(x)', 1)}\n")
    if message:
        with pytest.raises(SpecError) as e:
            FORMAT.read([f"{name}:Net"], Options((8, 8, 3)))
        (d,) = e.value.diagnostics
        assert message in d.message and d.loc.line == 11
        return
    imported = FORMAT.read([f"{name}:Net"], Options((8, 8, 3)))
    assert stage_lines(imported) == ["c: Conv(3,1) x4; GlobalAvgPool"]
