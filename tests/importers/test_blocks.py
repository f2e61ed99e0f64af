"""Repeated modules folded into blocks: the folded spec computes the network the flat one does.

Each case checks the flat draft and the folded one and compares every op of the checked
networks in order (op, arguments, output shape) and the counts: only the stage names may
differ. GoogLeNet is written here as BVLC's deploy.prototxt lays it out (the Caffe importer's
names, `inception_3a/1x1` …), so that the test does not depend on that importer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from alexnetc.backends.train.run import load_run
from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.pipeline import check
from alexnetc.importers import Options, darknet, torch_fx
from alexnetc.importers.blocks import Folded, fold_blocks
from alexnetc.importers.draft import Draft, Op

FIXTURES = Path(__file__).parent / "fixtures"

RELU = Op("ReLU", tied=True)
LRN = Op("ResNorm(5, alpha=0.00002, k=1)")  # Caffe's LRN(5, alpha=0.0001)

# The nine Inception modules of GoogLeNet (Szegedy et al. 2015, table 1): #1x1, #3x3 reduce,
# #3x3, #5x5 reduce, #5x5, pool proj.
INCEPTION = {"3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
             "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
             "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
             "4e": (256, 160, 320, 32, 128, 128), "5a": (256, 160, 320, 32, 128, 128),
             "5b": (384, 192, 384, 48, 128, 128)}


def layers(net: CheckedNetwork) -> list[tuple[object, ...]]:
    return [(layer.op.name, layer.args, layer.shape) for layer in net.layers()]


def folded_and_flat(draft: Draft) -> tuple[Folded, CheckedNetwork, CheckedNetwork]:
    """The fold of a draft, with both networks checked: the same ops, counts and wiring."""
    folded = fold_blocks(draft)
    flat, ours = check(draft.text()).network, check(folded.draft.text()).network
    assert flat is not None and ours is not None
    assert layers(ours) == layers(flat)
    assert ours.total() == flat.total()
    by_name = {s.name: s for s in ours.flat_stages()}

    def output(old: str) -> str:  # the stage with old's output: its ops moved out, if any
        return folded.moved[old][1] if old in folded.moved else folded.names.get(old, old)

    for old in flat.flat_stages():  # each stage reads what it read, under its new names
        new = by_name[folded.names[old.name]]
        assert new.sources == tuple(output(r) for r in old.sources), old.name
    return folded, ours, flat


def googlenet() -> Draft:
    """GoogLeNet as the Caffe importer writes BVLC's deploy.prototxt (no auxiliary heads)."""
    d = Draft("GoogleNet", (224, 224, 3))
    d.add("conv1/7x7_s2", [Op("Conv(7,2, pad=3, remainder=drop) x64"), RELU,
                           Op("MaxPool(3,2, remainder=ceil)"), LRN],
          comments=["Caffe floors: remainder=drop"])
    d.add("conv2/3x3_reduce", [Op("Conv(1,1) x64"), RELU])
    d.add("conv2/3x3", [Op("Conv(3,1, pad=1) x192"), RELU, LRN, Op("MaxPool(3,2, remainder=ceil)")])
    before = "conv2/3x3"
    for name, c in INCEPTION.items():
        m = f"inception_{name}/"
        d.add(m + "1x1", [Op(f"Conv(1,1) x{c[0]}"), RELU])
        d.add(m + "3x3_reduce", [Op(f"Conv(1,1) x{c[1]}"), RELU], (before,))
        d.add(m + "3x3", [Op(f"Conv(3,1, pad=1) x{c[2]}"), RELU])
        d.add(m + "5x5_reduce", [Op(f"Conv(1,1) x{c[3]}"), RELU], (before,))
        d.add(m + "5x5", [Op(f"Conv(5,1, pad=2) x{c[4]}"), RELU])
        d.add(m + "pool", [Op("MaxPool(3,1, pad=1)")], (before,))
        d.add(m + "pool_proj", [Op(f"Conv(1,1) x{c[5]}"), RELU])
        d.add(m + "output", [Op("Concat")], (m + "1x1", m + "3x3", m + "5x5", m + "pool_proj"))
        before = m + "output"
        if name in ("3b", "4e"):
            before = f"pool{name[0]}/3x3_s2"
            d.add(before, [Op("MaxPool(3,2, remainder=ceil)")],
                  comments=["Caffe rounds up: remainder=ceil"])
    d.add("pool5/7x7_s1", [Op("AvgPool(7,1)"), Op("Dropout(0.4)")])
    d.add("loss3/classifier", [Op("FC(1000)"), Op("Softmax", tied=True)])
    return d


def test_googlenet_is_nine_uses_of_one_block() -> None:
    draft = googlenet()
    folded, net, _ = folded_and_flat(draft)
    assert net.total().params == 6_998_552  # BVLC GoogLeNet without its auxiliary heads
    [block] = folded.draft.blocks
    assert block.name == "inception"
    assert block.params == ["c1x1", "c3x3_reduce", "c3x3", "c5x5_reduce", "c5x5", "cpool_proj"]
    assert [s.line() for s in block.stages] == [
        "l1x1: Conv(1,1) xc1x1 + ReLU",
        "l3x3_reduce(in): Conv(1,1) xc3x3_reduce + ReLU",
        "l3x3: Conv(3,1, pad=1) xc3x3 + ReLU",
        "l5x5_reduce(in): Conv(1,1) xc5x5_reduce + ReLU",
        "l5x5: Conv(5,1, pad=2) xc5x5 + ReLU",
        "pool(in): MaxPool(3,1, pad=1)",
        "pool_proj: Conv(1,1) xcpool_proj + ReLU",
        "output(l1x1, l3x3, l5x5, pool_proj): Concat",
    ]
    uses = [s.line() for s in folded.draft.stages if "inception(" in s.line()]
    assert uses == [f"inception_{name}: inception({', '.join(map(str, c))})"
                    for name, c in INCEPTION.items()]
    lines = [s.line() for s in folded.draft.stages]
    assert lines[lines.index(uses[1]) + 1] == "pool3_3x3_s2: MaxPool(3,2, remainder=ceil)"
    assert folded.names["inception_3a_1x1"] == "inception_3a.l1x1"
    assert folded.names["inception_5b_output"] == "inception_5b.output"
    assert set(folded.names.values()) == {name for name, _ in net.stages()}
    text = folded.draft.text()
    assert len(text.splitlines()) < len(draft.text().splitlines()) / 2
    assert "\nblock inception(c1x1, c3x3_reduce, c3x3, c5x5_reduce, c5x5, cpool_proj) {\n" \
        "  l1x1: Conv(1,1) xc1x1 + ReLU\n" in text
    assert text.index("block inception(") < text.index("\nconv1_7x7_s2: ")
    assert "# Caffe rounds up: remainder=ceil" in text


@pytest.fixture
def spied(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Draft, Folded]]:
    """What each importer's fold received and gave."""
    seen: list[tuple[Draft, Folded]] = []

    def spy(draft: Draft) -> Folded:
        folded = fold_blocks(draft)
        seen.append((draft, folded))
        return folded

    for module in (torch_fx, darknet):
        monkeypatch.setattr(module, "fold_blocks", spy)
    return seen


def test_resnet18_basic_blocks_repeat(spied: list[tuple[Draft, Folded]]) -> None:
    torch_fx.FORMAT.read(["reference_nets:resnet18"], Options((224, 224, 3)))
    [(draft, folded)] = spied
    _, net, _ = folded_and_flat(draft)
    assert net.total().params == 11_689_512  # torchvision's
    assert [(b.name, b.params) for b in folded.draft.blocks] == [("residual", ["c"]),
                                                                ("projection", ["c"])]
    residual, projection = ([s.line() for s in b.stages] for b in folded.draft.blocks)
    assert residual == ["conv1: Conv(3,1, pad=1, bias=false) xc; BatchNorm + ReLU",
                        "conv2: Conv(3,1, pad=1, bias=false) xc; BatchNorm",
                        "out(conv2, in): Add + ReLU"]
    assert projection[2:] == ["downsample_0(in): Conv(1,2, bias=false, remainder=drop) xc; "
                              "BatchNorm", "out(conv2, downsample_0): Add + ReLU"]
    assert [s.line() for s in folded.draft.stages][1:] == [
        "layer1: residual(64) * 2",
        "layer2: projection(128); residual(128)",
        "layer3: projection(256); residual(256)",
        "layer4: projection(512); residual(512)",
        "layer4_1_globalavgpool: GlobalAvgPool",  # after the merge: out of the block
        "fc: FC(1000)",
    ]
    layer2 = folded.draft.stages[2]
    assert layer2.comments == [
        "0.conv1: PyTorch floors: (56 + 2·1 − 3) = 55 is not a multiple of stride 2",
        "0.downsample_0: PyTorch floors: (56 + 2·0 − 1) = 55 is not a multiple of stride 2"]
    # torchvision's module paths, which its state_dict keys start with
    assert folded.names["layer1_1_conv2"] == "layer1.1.conv2"
    assert folded.names["layer2_0_downsample_0"] == "layer2.0.downsample_0"
    assert folded.where("layer4_1", 1) == ("layer4.1.out", 1)  # the ReLU after the Add
    assert folded.where("layer4_1", 2) == ("layer4_1_globalavgpool", 0)
    assert folded.rekey({"layer4_1": {2: "pool"}, "fc": {0: "fc"}}) == {
        "layer4_1_globalavgpool": {0: "pool"}, "fc": {0: "fc"}}


def test_darknet53_repeats_its_residuals(spied: list[tuple[Draft, Folded]]) -> None:
    """Darknet's layers are named by kind and number, which says nothing of the modules:
    the block is named by what it does, each use by its last layer, the one read after it."""
    darknet.FORMAT.read([str(FIXTURES / "darknet" / "darknet53.cfg")], Options())
    [(draft, folded)] = spied
    folded_and_flat(draft)
    [block] = folded.draft.blocks
    assert block.lines()[0] == "block residual(c1, c2) {"
    assert [s.line() for s in block.stages][-1] == "shortcut(conv2, in): Add"
    lines = [s.line() for s in folded.draft.stages]
    assert [line for line in lines if "residual(" in line] == [
        "shortcut4: residual(32, 64)", "shortcut11: residual(64, 128) * 2",
        "shortcut36: residual(128, 256) * 8", "shortcut61: residual(256, 512) * 8",
        "shortcut74: residual(512, 1024) * 4"]
    assert folded.names["conv13"] == "shortcut36.0.conv1"
    assert folded.names["shortcut36"] == "shortcut36.7.shortcut"
    assert len(folded.draft.text()) < len(draft.text()) / 2


def residuals(*modules: tuple[int, int], note: str = "") -> Draft:
    """Residual modules `resN` with a projected shortcut, each (stride, channels), on 33x33."""
    d = Draft("res", (33, 33, 3))
    d.add("stem", [Op("Conv(3,1, pad=1) x8"), RELU])
    before = "stem"
    for n, (s, c) in enumerate(modules, 1):
        d.add(f"res{n}_a", [Op(f"Conv(3,{s}, pad=1) x{c}"), RELU], comments=[note] if note else [])
        d.add(f"res{n}_b", [Op(f"Conv(1,{s}) x{c}")], (before,), comments=[f"shortcut {n}"])
        d.add(f"res{n}", [Op("Add"), RELU], (f"res{n}_a", f"res{n}_b"))
        before = f"res{n}"
    d.add("fc", [Op("FC(10)")])
    return d


def test_differing_numbers_are_parameters_and_equal_ones_stay() -> None:
    """Strides and channels that differ become `s` and `c`; the kernel sizes and padding,
    equal everywhere, stay written. Comments equal in every module go on the block's line,
    the others on the line that uses it. `res1` … `res4` are one stage, their number its
    instance's."""
    draft = residuals((2, 8), (1, 8), (1, 8), (2, 16), note="same everywhere")
    folded, _, _ = folded_and_flat(draft)
    [block] = folded.draft.blocks
    assert block.lines() == [
        "block res(s, c) {",
        "  a: Conv(3,s, pad=1) xc + ReLU  # same everywhere",
        "  b(in): Conv(1,s) xc",
        "  out(a, b): Add + ReLU",
        "}",
    ]
    stage = folded.draft.stages[1]
    assert stage.line() == "res: res(2, 8); res(1, 8) * 2; res(2, 16)"
    assert stage.comments == [f"{k}.b: shortcut {k + 1}" for k in range(4)]
    assert folded.names["res3_b"] == "res.2.b"


# A module whose merge a BatchNorm and a conv follow, as PyTorch writes one (`blocks.0.bn`,
# `blocks.0.proj`): stages of the module by their names, though the network is one line there.
MODULE = """
import torch
from torch import nn


class Mod(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a, self.b = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 3, padding=1)
        self.bn, self.proj = nn.BatchNorm2d(2 * c), nn.Conv2d(2 * c, c, 1)

    def forward(self, x):
        return self.proj(self.bn(torch.cat([self.a(x), self.b(x)], 1)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(Mod(8), Mod(8), Mod(8))
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.blocks(self.stem(x)), 1))


def net():
    torch.manual_seed(0)
    module = Net()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.1, generator=g)
                m.running_mean.normal_(0.0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
    return module.eval()
"""


def test_weights_follow_their_stages_into_blocks(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 spied: list[tuple[Draft, Folded]]) -> None:
    """The stages the source names as the module's own (after its merge) are the block's, and
    the weights written for the folded spec are the module's: it computes what they do."""
    import torch

    (tmp_path / "catbn.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    imported = torch_fx.FORMAT.read(["catbn:net"], Options((8, 8, 3),
                                                           weights=str(run / "checkpoint.pt")))
    [(draft, folded)] = spied
    folded_and_flat(draft)
    assert [s.line() for s in folded.draft.blocks[0].stages] == [
        "a: Conv(1,1) x8", "b(in): Conv(3,1, pad=1) x8", "out(a, b): Concat; BatchNorm",
        "proj: Conv(1,1) x8"]
    assert [s.line() for s in imported.draft.stages] == [
        "stem: Conv(3,1, pad=1) x8", "blocks: blocks * 3", "fc: FC(10)"]
    assert folded.names["blocks_2_proj"] == "blocks.2.proj"  # the module's own path
    import catbn

    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(load_run(run).model(x), catbn.net()(x), rtol=1e-4,
                                   atol=1e-5)


def test_a_network_without_repetition_is_unchanged() -> None:
    one = residuals((2, 8))
    assert fold_blocks(one).draft is one
    chain = Draft("chain", (32, 32, 3))
    chain.add("conv", [Op("Conv(3,1, pad=1) x8"), RELU])
    chain.add("fc", [Op("FC(10)")])
    folded = fold_blocks(chain)
    assert folded.draft is chain and folded.names == {"conv": "conv", "fc": "fc"}
    unlike = residuals((2, 8), (2, 16))
    unlike.stages[5].ops.append(Op("BatchNorm"))  # res2_b: not as res1_b
    assert fold_blocks(unlike).draft is unlike


def test_ops_after_a_merge_move_out_of_the_block() -> None:
    """What follows a module's merge is the next stage's, unless it fuses with the merge's
    activation (ReLU→MaxPool is one kernel only within a stage)."""
    after = residuals((2, 8), (2, 16))
    after.stages[-2].ops.append(Op("Dropout(0.5)"))
    folded, _, _ = folded_and_flat(after)
    assert [s.line() for s in folded.draft.stages][1:] == [
        "res1: res(8)", "res2: res(16)", "res2_dropout: Dropout(0.5)", "fc: FC(10)"]
    assert folded.where("res2", 2) == ("res2_dropout", 0)
    fused = residuals((2, 8), (2, 16))
    fused.stages[-2].ops.append(Op("MaxPool(3,2, pad=1)"))
    assert fold_blocks(fused).draft is fused


def test_a_draft_that_does_not_check_stays_flat() -> None:
    """Its errors then point at the stages as the source wrote them."""
    bad = residuals((2, 8), (2, 16))
    bad.stages[2].ops[0] = Op("Conv(1,1) x8")  # res1_b: 33x33, and res1_a gives 17x17
    assert not check(bad.text()).ok
    assert fold_blocks(bad).draft is bad
