"""Networks that branch, lowered: the published ResNet-18 and GoogLeNet against independently
written PyTorch (tests/reference_nets.py), each intermediate let go after its last reader, and
the module traced whole by torch.compile, torch.export and the ONNX exporter.

The references' weights and BatchNorm statistics are randomised (BatchNorm in eval mode would
otherwise be the identity) and loaded into the module alexnetc builds from the spec, by
network order with a shape check per tensor; both then classify the same image.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
from torch import Tensor, nn

from alexnetc.backends.lowering import (
    AlexnetcModule,
    StageModule,
    build_module,
    count_cross_bytes,
)
from alexnetc.backends.lowering import module as lowering_module
from alexnetc.backends.lowering.export import export_onnx, export_program, onnx_missing
from alexnetc.compiler.errors import UNUSED, Severity
from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.pipeline import check, load

from helpers import SPECS
from reference_nets import googlenet, load_reference, randomise, resnet18, resnet34
from test_lowering_networks import assert_lowering_states_the_checker

pytestmark = pytest.mark.torch_threads(2)

# A stem read by two branches (one own-tower), their Concat, an Add with the stem as the skip,
# and a stage nobody reads (a warning, not an error); towers 2, so the Concat interleaves the
# branches by tower and the branches' convs exchange maps.
BRANCHING = """input 8x8x4
towers 2
stem: Conv(3,1, pad=1) x8 + ReLU
left: Conv(1,1) x4 + ReLU
right(stem): Conv(3,1, pad=1, groups=2) x4; MaxPool(3,1, pad=1)
unused(stem): Conv(1,1) x2
cat(left, right): Concat
sum(cat, stem): Add + ReLU
fc: FC(6) + Softmax
"""


def branching(towers: int = 2) -> CheckedNetwork:
    result = check(BRANCHING.replace("towers 2", f"towers {towers}"), "branching.net")
    assert result.network is not None, [d.message for d in result.diagnostics]
    assert [(d.severity, d.kind) for d in result.diagnostics] == [(Severity.WARNING, UNUSED)]
    return result.network


def image(net: CheckedNetwork, batch: int = 3, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, net.input.c, net.input.h, net.input.w, generator=g)


# --- the published networks against plain PyTorch --------------------------------------------





# Names the spec gives against torchvision's: the block's stages are its convs, `proj` the
# downsample, GoogLeNet's stage of two convs numbers its second `conv_1`.
RESNET_NAMES = {
    "conv1.conv.weight": "conv1.weight",
    "conv1.batchnorm.running_var": "bn1.running_var",
    "layer1.0.a.conv.weight": "layer1.0.conv1.weight",
    "layer1.1.b.batchnorm.weight": "layer1.1.bn2.weight",
    "layer2.0.proj.conv.weight": "layer2.0.downsample.0.weight",
    "layer2.0.proj.batchnorm.running_mean": "layer2.0.downsample.1.running_mean",
    "layer4.1.b.batchnorm.num_batches_tracked": "layer4.1.bn2.num_batches_tracked",
    "fc.fc.weight": "fc.weight",
    "fc.fc.bias": "fc.bias",
}
GOOGLENET_NAMES = {
    "conv1.conv.weight": "conv1.conv.weight",
    "conv3.batchnorm.running_var": "conv3.bn.running_var",
    "inception3a.b1.conv.weight": "inception3a.branch1.conv.weight",
    "inception3a.b2.conv_1.weight": "inception3a.branch2.1.conv.weight",
    "inception4c.b3.batchnorm_1.running_mean": "inception4c.branch3.1.bn.running_mean",
    "inception5b.b4.conv.weight": "inception5b.branch4.1.conv.weight",
    "fc.fc.weight": "fc.weight",
}


@pytest.mark.parametrize(("spec", "reference", "pairs"), [
    ("resnet18.net", resnet18, RESNET_NAMES),
    ("googlenet.net", googlenet, GOOGLENET_NAMES),
], ids=["resnet18", "googlenet"])
def test_published_dag_equals_plain_pytorch(spec: str, reference: Callable[[], nn.Module],
                                            pairs: dict[str, str]) -> None:
    net, recipe = load(SPECS / spec)
    assert net.branches
    model = build_module(net, recipe, devices=["cpu"], seed=0).eval()
    ref = reference().eval()
    randomise(ref, seed=1)
    names = load_reference(model, ref)
    assert {name: names[name] for name in pairs} == pairs
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in ref.parameters())
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = ref(x)
        assert want.abs().max() > 1  # the random weights keep the logits far from zero
        torch.testing.assert_close(model(x), want)  # float32 defaults


def test_resnet34_has_the_references_parameter_count() -> None:
    net, recipe = load(SPECS / "resnet34.net")
    model = build_module(net, recipe, devices=["cpu"], seed=0)
    count = sum(p.numel() for p in model.parameters())
    assert count == sum(p.numel() for p in resnet34().parameters()) == net.total().params


def test_block_stages_sit_at_their_dotted_paths() -> None:
    net, recipe = load(SPECS / "resnet18.net")
    model = build_module(net, recipe, devices=["cpu"], seed=0)
    for name in model.stage_names:
        assert model.get_submodule(name).stage == name
    assert "layer2.0.proj" in model.stage_names
    assert "layer2.0.proj.conv.towers.0.weight" in model.state_dict()


# --- each intermediate let go after its last reader --------------------------------------------

def last_readers(net: CheckedNetwork) -> dict[str, int]:
    """Each stage's output → the index of the last stage that reads it (its own index when
    none does), from the checker's stages rather than the module's bookkeeping."""
    order = [s.name for s in net.flat_stages()]
    last = {name: i for i, name in enumerate(order)}
    for i, s in enumerate(net.flat_stages()):
        for source in s.sources:
            if source in last:
                last[source] = i
    return last


Refs = dict[str, list[weakref.ref[Tensor]]]  # stage → its output, per tower


@contextmanager
def watched(model: AlexnetcModule, net: CheckedNetwork) -> Iterator[Refs]:
    """Weak references to each stage's output (its tensor per tower), kept as the stage
    returns; before each stage runs, every output whose last reader has run must be dead
    and every output still to be read alive. The network's output is held by the caller.

    The per-tower path calls each stage, so forward hooks see it; the merged path calls
    `StageModule.whole`, which is wrapped on each stage instead."""
    last = last_readers(net)
    order = [s.name for s in net.flat_stages()]
    position = {name: i for i, name in enumerate(order)}
    refs: Refs = {}

    def before(stage: StageModule) -> None:
        now = position[stage.stage]
        for name, outs in refs.items():
            alive = [r() is not None for r in outs]
            if last[name] < now:
                assert not any(alive), f"{name}'s output is still alive when {stage.stage} " \
                    f"runs, though nothing after {order[last[name]]} reads it"
            else:
                assert all(alive), f"{name}'s output is gone before {order[last[name]]} reads it"

    def after(stage: StageModule, out: Tensor | list[Tensor]) -> None:
        refs[stage.stage] = [weakref.ref(t) for t in (out if isinstance(out, list) else [out])]

    handles = []
    stages = [model.get_submodule(name) for name in model.stage_names]
    for stage in stages:
        assert isinstance(stage, StageModule)
        if model.merged:
            # an instance attribute shadowing the method (popped below)
            stage.__dict__["whole"] = _around(stage, stage.whole, before, after)
        else:
            handles.append(stage.register_forward_pre_hook(lambda s, args: before(s)))
            handles.append(stage.register_forward_hook(lambda s, args, out: after(s, out)))
    try:
        yield refs
    finally:
        for h in handles:
            h.remove()
        for stage in stages:
            stage.__dict__.pop("whole", None)


def _around(stage: StageModule, whole: Callable[[list[Tensor]], Tensor],
            before: Callable[[StageModule], None],
            after: Callable[[StageModule, Tensor], None]) -> Callable[[list[Tensor]], Tensor]:
    def run(xs: list[Tensor]) -> Tensor:
        before(stage)
        out = whole(xs)
        after(stage, out)
        return out
    return run


def assert_frees_each_output_after_its_last_reader(model: AlexnetcModule,
                                                   net: CheckedNetwork) -> None:
    x = image(net)
    with torch.no_grad(), watched(model, net) as refs:
        y = model(x)
    output = net.flat_stages()[-1].name
    assert set(refs) == {s.name for s in net.flat_stages()}  # every stage was watched
    held = {name for name, outs in refs.items() if any(r() is not None for r in outs)}
    assert held <= {output}, held  # once forward returns, only its result may remain
    assert y.shape == (3, 6)


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "per-tower"])
def test_each_intermediate_is_freed_after_its_last_reader(merge: bool) -> None:
    net = branching()
    last = last_readers(net)
    assert last["stem"] == 5 and last["unused"] == 3  # read by `sum`; read by none
    model = build_module(net, devices=["cpu"] if merge else ["cpu", "cpu"], seed=0,
                         merge=merge).eval()
    assert model.merged is merge
    assert_frees_each_output_after_its_last_reader(model, net)


def test_the_watch_sees_an_output_kept_too_long(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the frees (every output kept to the end), the check above fails."""
    monkeypatch.setattr(lowering_module, "_with_frees", lambda runs, output: runs)
    net = branching()
    for merge in (True, False):
        model = build_module(net, devices=["cpu"] if merge else ["cpu", "cpu"], seed=0,
                             merge=merge).eval()
        with pytest.raises(AssertionError, match="still alive when"):
            assert_frees_each_output_after_its_last_reader(model, net)


# --- compiled and exported whole -------------------------------------------------------------

def test_branching_module_compiles_without_a_graph_break() -> None:
    net = branching()
    model = build_module(net, devices=["cpu"], seed=0).eval()
    assert model.merged
    x = image(net)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True)  # a graph break raises
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


def test_branching_module_exports(tmp_path) -> None:
    net = branching()
    model = build_module(net, devices=["cpu"], seed=0).eval()
    x = image(net)
    export_program(net, None, b"", tmp_path / "m.pt2", model=model)
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    with torch.no_grad():
        torch.testing.assert_close(program(x), model.predict(x))


@pytest.mark.skipif(bool(onnx_missing()), reason=f"the ONNX export needs "
                    f"{' and '.join(onnx_missing())} (pip install alexnetc[onnx])")
def test_branching_module_exports_to_onnx(tmp_path) -> None:
    import onnx
    from onnx.reference import ReferenceEvaluator

    net = branching()
    model = build_module(net, devices=["cpu"], seed=0).eval()
    x = image(net)
    export_onnx(net, None, b"", tmp_path / "m.onnx", model=model)
    exported = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(exported)
    assert {"Concat", "Add"} <= {n.op_type for n in exported.graph.node}
    (got,) = ReferenceEvaluator(exported).run(None, {"x": x.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), model.predict(x), rtol=1e-4,
                                   atol=1e-5)


@pytest.mark.parametrize("towers", [1, 2])
def test_branching_spec_states_the_checker(towers: int) -> None:
    """Parameters, each stage's shape, each layer's bytes between towers, and the numbers of
    a whole-tensor reference that follows each layer's inputs (with towers, the Concat's
    interleaving by tower included)."""
    assert_lowering_states_the_checker(branching(towers))


def test_towered_branching_merged_equals_per_tower_and_moves_the_checkers_bytes() -> None:
    net = branching()
    x = image(net)
    merged = build_module(net, devices=["cpu"], seed=0, merge=True).eval()
    towers = build_module(net, devices=["cpu", "cpu"], seed=0, merge=False).eval()
    with torch.no_grad():
        want = merged(x)
        with count_cross_bytes() as moved:
            got = towers(x)
    torch.testing.assert_close(got, want)
    assert net.cross_tower_bytes() > 0
    assert sum(moved.values()) == net.cross_tower_bytes() * x.shape[0]
    for layer in net.layers():
        assert moved.get(layer.id, 0) == layer.tower.cross_bytes * x.shape[0], layer.id
