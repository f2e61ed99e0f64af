"""Each op's lowering against its stated semantics (the checker's numbers, the paper's LRN)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import ClassVar

import pytest
import torch
import torch.nn.functional as F

from alexnetc.backends.kernels.params import LRNParams, PoolParams
from alexnetc.backends.kernels.reference import local_response_norm, map_response_norm
from alexnetc.backends.lowering import (
    build_module,
    canonical_state_dict,
    load_canonical_state_dict,
)
from alexnetc.backends.lowering.export import export_onnx, export_program, onnx_missing
from alexnetc.backends.lowering.fused import FusedChain, kernel_available
from alexnetc.backends.lowering.layers import LAYERS, Sharded, conv_calls
from alexnetc.compiler.pipeline import check, load
from alexnetc.compiler.recipe import Init, Recipe
from alexnetc.compiler.registry import OPS

from helpers import SPECS


@pytest.fixture(scope="module")
def alexnet():
    return load(SPECS / "alexnet.net")


def _net(text: str):
    result = check(text)
    assert result.ok, [d.message for d in result.diagnostics]
    return result.network


def _sharded(model: torch.nn.Module, path: str) -> Sharded:
    """The layer with parameters at `path` (`f.fc`: stage f's FC)."""
    layer = model.get_submodule(path)
    assert isinstance(layer, Sharded), path
    return layer


def exports(net, m, x: torch.Tensor, want: torch.Tensor, tmp_path):
    """`m`'s .pt2 program computes `want` from `x`; its ONNX model (None without onnx)."""
    export_program(net, None, b"", tmp_path / "m.pt2", model=m)
    torch.testing.assert_close(torch.export.load(str(tmp_path / "m.pt2")).module()(x), want)
    if onnx_missing():
        return None
    import onnx

    export_onnx(net, None, b"", tmp_path / "m.onnx", model=m)
    return onnx.load(str(tmp_path / "m.onnx"))


def paper_lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """The paper's formula, channel by channel (independent of torch's LRN)."""
    out = torch.empty_like(x)
    c = x.shape[1]
    for i in range(c):
        lo, hi = max(0, i - size // 2), min(c, i + size // 2 + 1)
        out[:, i] = x[:, i] / (k + alpha * (x[:, lo:hi] ** 2).sum(1)) ** beta
    return out


def map_norm_by_pixel(x: torch.Tensor, size: int, alpha: float, beta: float,
                      k: float) -> torch.Tensor:
    """b = a / (k + alpha·Σ a²)^beta over the size×size pixels centred on each, the ones past
    the border absent, pixel by pixel in float64 (independent of torch's pools)."""
    x = x.double()
    out = torch.empty_like(x)
    r = size // 2
    for i in range(x.shape[2]):
        for j in range(x.shape[3]):
            window = x[:, :, max(0, i - r):i + r + 1, max(0, j - r):j + r + 1]
            out[:, :, i, j] = x[:, :, i, j] / (k + alpha * (window ** 2).sum((2, 3))) ** beta
    return out


def test_every_registry_op_has_a_lowering():
    assert {op.name for op in OPS.values()} <= set(LAYERS)


@pytest.mark.parametrize("shape", [(2, 7, 4, 5), (3, 6)])
@pytest.mark.parametrize("size,alpha,beta,k", [(5, 1e-4, 0.75, 2.0), (3, 0.5, 0.6, 1.0),
                                               (1, 2.0, 1.0, 0.5)])
def test_lrn_is_the_papers_formula(shape, size, alpha, beta, k):
    x = torch.randn(*shape) * 3
    torch.testing.assert_close(local_response_norm(x, size, alpha, beta, k),
                               paper_lrn(x, size, alpha, beta, k))


def test_lrn_maps_to_torch_convention_with_alpha_times_size():
    x = torch.randn(2, 8, 3, 3) * 3
    torch_lrn = torch.nn.LocalResponseNorm(5, alpha=0.5 * 5, beta=0.75, k=2.0)
    torch.testing.assert_close(local_response_norm(x, 5, 0.5, 0.75, 2.0), torch_lrn(x))
    assert not torch.allclose(torch.nn.LocalResponseNorm(5, 0.5, 0.75, 2.0)(x), torch_lrn(x))


def test_lrn_matches_kernels_reference_when_present():
    ref = pytest.importorskip("alexnetc.backends.kernels.reference")
    params = pytest.importorskip("alexnetc.backends.kernels.params")
    x = torch.randn(2, 8, 9, 9) * 3
    chain = FusedChain("relu_lrn_pool", LRNParams(5, 1e-3, 0.75, 2.0), PoolParams(3, 2, 0),
                       use_kernel=False)
    want = ref.reference_relu_lrn_pool(x, params.LRNParams(5, 1e-3, 0.75, 2.0),
                                       params.PoolParams(3, 2, 0), towers=1)
    torch.testing.assert_close(chain(x), want)


@pytest.mark.parametrize("c_in,c_out,groups,towers", [
    (6, 12, 3, 2),  # towers cut through groups
    (4, 8, 2, 4),
    (6, 6, 1, 3),
    (8, 8, 4, 2),  # whole groups per tower, read from all maps
    (12, 12, 6, 3),
])
def test_conv_shards_equal_the_whole_grouped_conv(c_in, c_out, groups, towers):
    x = torch.randn(2, c_in, 7, 7)
    w, b = torch.randn(c_out, c_in // groups, 3, 3), torch.randn(c_out)
    want = F.conv2d(x, w, b, 1, 1, 1, groups)
    parts = []
    own = groups % towers == 0
    for t, (wt, bt) in enumerate(zip(w.chunk(towers), b.chunk(towers), strict=True)):
        xt = x.chunk(towers, 1)[t] if own else x
        calls = conv_calls(c_in, c_out, groups, towers, t, own)
        parts.append(torch.cat([F.conv2d(xt[:, c.in_lo:c.in_hi], wt[c.out_lo:c.out_hi],
                                          bt[c.out_lo:c.out_hi], 1, 1, 1, c.groups)
                                for c in calls], 1))
    torch.testing.assert_close(torch.cat(parts, 1), want)


def test_avgpool_counts_padding_and_floors():
    net = _net("input 5x5x1\np: AvgPool(2,2, pad=1, remainder=drop) -> 3x3x1\n")
    m = build_module(net, devices=["cpu"]).eval()
    y = m(torch.ones(1, 1, 5, 5))
    assert y.shape == (1, 1, 3, 3)
    assert y[0, 0, 0, 0].item() == pytest.approx(0.25)  # one real pixel of four


def test_maxpool_overlaps_and_floors():
    net = _net("input 8x8x2\np: MaxPool(3,2, remainder=drop) -> 3x3x2\n")
    x = torch.randn(1, 2, 8, 8)
    y = build_module(net, devices=["cpu"])(x)
    torch.testing.assert_close(y, F.max_pool2d(x, 3, 2))


@pytest.mark.parametrize("act,fn", [("ReLU", torch.relu), ("Tanh", torch.tanh),
                                    ("Sigmoid", torch.sigmoid)])
def test_activations(act, fn):
    net = _net(f"input 4x4x2\na: {act}\n")
    x = torch.randn(3, 2, 4, 4)
    torch.testing.assert_close(build_module(net, devices=["cpu"])(x), fn(x))


def test_dropout_only_while_training():
    net = _net("input 1x1x2\nf: FC(200, std=0.5) + ReLU; Dropout(0.5)\n")
    m = build_module(net, devices=["cpu"])
    x = torch.ones(4, 2, 1, 1)
    m.eval()
    assert torch.equal(m(x), m(x))
    m.train()
    a, b = m(x), m(x)
    assert not torch.equal(a, b)
    assert (a == 0).any()


def test_final_softmax_only_in_predict_and_middle_softmax_in_forward():
    net = _net("input 1x1x3\nf: FC(4) + Softmax\n")
    m = build_module(net, devices=["cpu"], seed=3).eval()
    x = torch.randn(2, 3, 1, 1)
    logits = m(x)
    torch.testing.assert_close(m.predict(x), torch.softmax(logits, 1))
    mid = build_module(_net("input 1x1x3\nf: FC(4) + Softmax\ng: FC(2)\n"), devices=["cpu"])
    h = torch.softmax(F.linear(x.flatten(1), mid.get_parameter("f.fc.towers.0.weight"),
                               mid.get_parameter("f.fc.towers.0.bias")), 1)
    torch.testing.assert_close(mid(x), F.linear(h, mid.get_parameter("g.fc.towers.0.weight"),
                                                mid.get_parameter("g.fc.towers.0.bias")))
    torch.testing.assert_close(mid.predict(x), mid(x))  # no final Softmax: predict = forward


def _full(sharded: Sharded) -> torch.Tensor:
    return torch.cat([s.get_parameter("weight") for s in sharded.towers], 0)


def test_init_as_the_paper_with_spec_overrides(alexnet):
    net, recipe = alexnet
    m = build_module(net, recipe, devices=["cpu"])
    biases = {name: m.get_parameter(f"{name}.{'fc' if name.startswith('fc') else 'conv'}"
                                    ".towers.0.bias") for name in m.stage_names}
    assert {n for n, b in biases.items() if torch.all(b == 1)} == {"conv2", "conv4", "conv5",
                                                                     "fc6", "fc7"}
    assert torch.all(biases["conv1"] == 0) and torch.all(biases["fc8"] == 0)
    w = _full(_sharded(m, "fc6.fc"))
    assert w.mean().abs() < 1e-4 and w.std().item() == pytest.approx(0.01, rel=1e-2)
    other = _net("input 4x4x1\nc: Conv(3,1) x4\nd: Conv(1,1, std=0.5, bias=-2) x4\n")
    m2 = build_module(other, Recipe(init=Init(std=2.0, bias=0.25)), devices=["cpu"])
    assert _full(_sharded(m2, "c.conv")).std().item() > 1.0
    assert torch.all(m2.get_parameter("c.conv.towers.0.bias") == 0.25)
    assert _full(_sharded(m2, "d.conv")).std().item() < 1.0
    assert torch.all(m2.get_parameter("d.conv.towers.0.bias") == -2)


def test_seed_makes_weights_reproducible(alexnet):
    net, recipe = alexnet
    a = build_module(net, recipe, devices=["cpu"], seed=7).state_dict()
    b = build_module(net, recipe, devices=["cpu", "cpu"], seed=7).state_dict()
    c = build_module(net, recipe, devices=["cpu"], seed=8).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.conv.towers.0.weight"], c["conv1.conv.towers.0.weight"])


def test_fused_chain_is_one_op_and_fused_true_needs_the_kernels(alexnet):
    net, recipe = alexnet
    m = build_module(net, recipe, devices=["cpu"], fused=False)
    assert isinstance(m.get_submodule("conv1.relu_lrn_pool"), FusedChain)
    assert isinstance(m.get_submodule("conv5.relu_pool"), FusedChain)
    if not kernel_available("cpu"):  # the kernels' tests may turn on the Triton interpreter
        with pytest.raises(ValueError, match="fused=True"):
            build_module(net, recipe, devices=["cpu"], fused=True)


class _StatShard(torch.nn.Module):
    """A shard with a parameter, running statistics and a counter (as a BatchNorm would)."""

    def __init__(self, t: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((2, 3), float(t)))
        self.register_buffer("running_mean", torch.full((2,), 10.0 + t))
        self.register_buffer("steps", torch.tensor(7))
        self.register_buffer("scratch", torch.zeros(5), persistent=False)


class _StatLayer(Sharded):
    join_dims: ClassVar[Mapping[str, int | None]] = {"steps": None}  # equal on every tower


def test_whole_layer_tensors_are_every_parameter_and_buffer():
    model = torch.nn.ModuleDict({"bn": _StatLayer([_StatShard(0), _StatShard(1)])})
    whole = canonical_state_dict(model)
    assert set(whole) == {"bn.weight", "bn.running_mean", "bn.steps"}
    assert whole["bn.weight"].shape == (4, 3) and whole["bn.running_mean"].tolist() == [
        10, 10, 11, 11]
    assert whole["bn.steps"].item() == 7
    changed = {k: v + 1 for k, v in whole.items()}
    load_canonical_state_dict(model, changed)
    for key, value in canonical_state_dict(model).items():
        assert torch.equal(value, changed[key]), key
    with pytest.raises(ValueError, match="does not fit"):
        load_canonical_state_dict(model, {**changed, "bn.running_mean": torch.zeros(3)})
    model["stray"] = torch.nn.Linear(2, 2)  # a tensor no Sharded layer accounts for
    with pytest.raises(TypeError, match=r"stray\.bias, stray\.weight belong to no Sharded"):
        canonical_state_dict(model)


def test_leaky_relu_is_torchs_and_exports(tmp_path):
    net = _net("input 4x4x2\na: Conv(1,1) x2 + LeakyReLU(0.2)\nb: LeakyReLU\n")
    assert [layer.args.slope for layer in net.layers() if layer.name == "LeakyReLU"] == [
        0.2, 0.01]
    m = build_module(net, devices=["cpu"], seed=4).eval()
    x = torch.randn(3, 2, 4, 4)
    conv = _sharded(m, "a.conv")
    want = F.leaky_relu(F.leaky_relu(F.conv2d(x, conv.joined("weight"), conv.joined("bias")),
                                     0.2))  # b: the default slope, PyTorch's 0.01
    torch.testing.assert_close(m(x), want)
    exported = exports(net, m, x, want, tmp_path)
    if exported is None:
        return
    slopes = [a.f for n in exported.graph.node
              if n.op_type == "LeakyRelu" for a in n.attribute if a.name == "alpha"]
    assert slopes == pytest.approx([0.2, 0.01])


def test_relu6_and_prelu_are_torchs_per_tower_and_export(tmp_path):
    net = _net("input 4x4x2\ntowers 2\na: Conv(1,1) x4 + PReLU; ReLU6\nf: FC(6) + PReLU\n")
    conv_params, fc_params = 2 * 4 + 4, 4 * 4 * 4 * 6 + 6
    assert net.total().params == conv_params + 4 + fc_params + 6  # one slope per channel
    x = torch.randn(3, 2, 4, 4) * 8  # past ReLU6's cap
    for merge in (False, True):
        m = build_module(net, devices=["cpu"] if merge else ["cpu", "cpu"], seed=5,
                         merge=merge).eval()
        state = canonical_state_dict(m)
        assert torch.equal(state["a.prelu.weight"], torch.full((4,), 0.25))  # torch's init
        state["a.prelu.weight"] = torch.tensor([0.1, -0.2, 0.3, 0.4])
        state["f.prelu.weight"] = torch.linspace(-1, 1, 6)
        load_canonical_state_dict(m, state)
        a = F.relu6(F.prelu(F.conv2d(x, state["a.conv.weight"], state["a.conv.bias"]),
                            state["a.prelu.weight"]))
        want = F.prelu(F.linear(a.flatten(1), state["f.fc.weight"], state["f.fc.bias"]),
                       state["f.prelu.weight"])
        with torch.no_grad():
            torch.testing.assert_close(m(x), want)
    assert sum(p.numel() for p in m.parameters()) == net.total().params
    exported = exports(net, m, x, want, tmp_path)
    if exported is None:
        return
    kinds = [n.op_type for n in exported.graph.node]
    assert kinds.count("PRelu") == 2 and "Clip" in kinds


def test_bias_false_leaves_no_bias_parameter(tmp_path):
    net = _net("input 6x6x4\ntowers 2\ninit std=0.1\n"
               "a: Conv(3,1, groups=2, bias=false) x6 + ReLU\nb: Conv(1,1, bias=0.5) x2\n"
               "f: FC(4, bias=false)\n")
    a_weights, b_params, f_weights = 3 * 3 * 2 * 6, 6 * 2 + 2, 4 * 4 * 2 * 4
    assert net.total().params == a_weights + b_params + f_weights
    assert net.total().biases == 2
    x = torch.randn(2, 4, 6, 6)
    for devices in (["cpu", "cpu"], ["cpu"]):
        m = build_module(net, devices=devices, seed=1).eval()
        state = canonical_state_dict(m)
        assert sorted(state) == ["a.conv.weight", "b.conv.bias", "b.conv.weight", "f.fc.weight"]
        assert torch.equal(state["b.conv.bias"], torch.full((2,), 0.5))
        assert sum(p.numel() for p in m.parameters()) == net.total().params
        want = F.linear(F.conv2d(F.relu(F.conv2d(x, state["a.conv.weight"], None, 1, 0, 1, 2)),
                                 state["b.conv.weight"], state["b.conv.bias"]).flatten(1),
                        state["f.fc.weight"])
        with torch.no_grad():
            torch.testing.assert_close(m(x), want)
    exported = exports(net, m, x, want, tmp_path)
    if exported is None:
        return
    graph = exported.graph
    assert [len(n.input) for n in graph.node if n.op_type == "Conv"] == [2, 3]  # a: no bias


def test_ceil_pools_are_torchs_ceil_mode_and_export(tmp_path):
    for n in range(3, 12):
        for size, stride, pad in ((3, 2, 0), (2, 2, 1), (3, 3, 1), (5, 3, 2)):
            result = check(f"input {n}x{n}x1\np: MaxPool({size},{stride}, pad={pad}, "
                           "remainder=ceil)\n")
            if not result.ok:
                assert n + 2 * pad < size  # only a window larger than the input fails
                continue
            want = F.max_pool2d(torch.zeros(1, 1, n, n), size, stride, pad, ceil_mode=True)
            assert result.network is not None
            assert result.network.output.h == want.shape[-1], (n, size, stride, pad)
    net = _net("input 10x10x2\np: MaxPool(3,2, remainder=ceil) -> 5x5x2\n"
               "q: AvgPool(2,2, pad=1, remainder=ceil) -> 3x3x2\nf: FC(3)\n")
    m = build_module(net, devices=["cpu"], seed=2).eval()
    x = torch.randn(2, 2, 10, 10)
    state = canonical_state_dict(m)
    pooled = F.avg_pool2d(F.max_pool2d(x, 3, 2, ceil_mode=True), 2, 2, 1, ceil_mode=True)
    want = F.linear(pooled.flatten(1), state["f.fc.weight"], state["f.fc.bias"])
    with torch.no_grad():
        torch.testing.assert_close(m(x), want)
    exported = exports(net, m, x, want, tmp_path)
    if exported is None:
        return
    ceil = [a.i for n in exported.graph.node
            if n.op_type in ("MaxPool", "AveragePool") for a in n.attribute
            if a.name == "ceil_mode"]
    assert ceil == [1, 1]


def test_global_and_adaptive_pools_are_torchs_and_export(tmp_path):
    net = _net("input 9x9x2\ntowers 2\na: Conv(3,1) x4 + ReLU; AdaptiveAvgPool(3) -> 3x3x4\n"
               "g: Conv(1,1) x6; GlobalAvgPool -> 1x1x6\n")
    assert net.class_vector  # a final 1x1xC map is the class vector: N x C
    x = torch.randn(2, 2, 9, 9)
    for devices in (["cpu", "cpu"], ["cpu"]):
        m = build_module(net, devices=devices, seed=3).eval()
        state = canonical_state_dict(m)
        a = F.adaptive_avg_pool2d(F.relu(F.conv2d(x, state["a.conv.weight"],
                                                  state["a.conv.bias"])), 3)
        g = F.conv2d(a, state["g.conv.weight"], state["g.conv.bias"]).mean((2, 3))
        with torch.no_grad():
            torch.testing.assert_close(m(x), g)
    exported = exports(net, m, x, g, tmp_path)
    if exported is None:
        return
    graph = exported.graph
    assert "ReduceMean" in [n.op_type for n in graph.node]  # the global pool
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim][1:] == [6]


def test_torchvision_alexnet_with_its_adaptive_pool_at_any_input():
    text = (SPECS / "alexnet-torchvision.net").read_text()
    assert "AdaptiveAvgPool(6)" in text
    for side in (224, 256):
        net = _net(text.replace("input 224x224x3", f"input {side}x{side}x3")
                   .replace("  -> 27x27x64", "").replace("  -> 13x13x192", "")
                   .replace("  -> 6x6x256", ""))
        convs = (11 * 11 * 3 + 1) * 64 + (5 * 5 * 64 + 1) * 192 + (3 * 3 * 192 + 1) * 384 \
            + (3 * 3 * 384 + 1) * 256 + (3 * 3 * 256 + 1) * 256
        fcs = (6 * 6 * 256 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 1000
        assert net.total().params == convs + fcs == 61_100_840
        assert [la.shape.h for la in net.layers() if la.name == "AdaptiveAvgPool"] == [6]


def _plain_batch_norm_net(x, state, bn2, bn1):
    a = F.relu(bn2(F.conv2d(x, state["a.conv.weight"], None, 1, 1)))
    return bn1(F.linear(a.flatten(1), state["f.fc.weight"]))


def test_batch_norm_is_torchs_per_tower_in_train_and_eval_and_exports(tmp_path):
    net = _net("input 6x6x4\ntowers 2\na: Conv(3,1, pad=1, bias=false) x4; BatchNorm + ReLU\n"
               "f: FC(6, bias=false); BatchNorm(eps=1e-3, momentum=0.2)\n")
    assert net.total().params == 3 * 3 * 4 * 4 + 2 * 4 + 6 * 6 * 4 * 6 + 2 * 6
    assert net.total().buffers == (2 * 4 + 1) + (2 * 6 + 1)  # mean, variance, batch counter
    g = torch.Generator().manual_seed(0)
    x, x2 = torch.randn(5, 4, 6, 6, generator=g), torch.randn(5, 4, 6, 6, generator=g)
    for devices in (["cpu", "cpu"], ["cpu"]):
        m = build_module(net, devices=devices, seed=6).train()
        state = canonical_state_dict(m)
        assert {k for k in state if k.startswith("a.batchnorm.")} == {
            f"a.batchnorm.{n}" for n in ("weight", "bias", "running_mean", "running_var",
                                         "num_batches_tracked")}
        state["a.batchnorm.weight"] = torch.tensor([1.0, 0.5, 2.0, -1.0])
        state["f.batchnorm.bias"] = torch.linspace(-1, 1, 6)
        load_canonical_state_dict(m, state)
        bn2, bn1 = torch.nn.BatchNorm2d(4), torch.nn.BatchNorm1d(6, eps=1e-3, momentum=0.2)
        bn2.load_state_dict({k[len("a.batchnorm."):]: v for k, v in state.items()
                             if k.startswith("a.batchnorm.")})
        bn1.load_state_dict({k[len("f.batchnorm."):]: v for k, v in state.items()
                             if k.startswith("f.batchnorm.")})
        plain = partial(_plain_batch_norm_net, state=state, bn2=bn2, bn1=bn1)

        for batch in (x, x2):  # train mode: batch statistics, running statistics updated
            torch.testing.assert_close(m(batch), plain(batch))
        after = canonical_state_dict(m)
        for name, bn in (("a", bn2), ("f", bn1)):  # every tower shard's statistics kept
            torch.testing.assert_close(after[f"{name}.batchnorm.running_mean"], bn.running_mean)
            torch.testing.assert_close(after[f"{name}.batchnorm.running_var"], bn.running_var)
            assert after[f"{name}.batchnorm.num_batches_tracked"] == 2
        m.eval(), bn2.eval(), bn1.eval()
        with torch.no_grad():
            torch.testing.assert_close(m(x), plain(x))
    want = plain(x).detach()
    exported = exports(net, m, x, want, tmp_path)  # the exporter folds BN in
    if exported is None:
        return
    from onnx.reference import ReferenceEvaluator

    (got,) = ReferenceEvaluator(exported).run(None, {"x": x.numpy()})
    torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-4, atol=1e-5)


def test_rectangular_dilated_and_same_windows_are_torchs_and_export(tmp_path):
    net = _net("input 13x10x4\ntowers 2\n"
               "a: Conv(1x7,1, pad=0x3) x4 + ReLU; MaxPool(3x2,2x1, pad=1x0) -> 7x9x4\n"
               "b: Conv(3x2,1, pad=same, dilation=1x2, groups=2) x6; AvgPool(2x3,1) -> 6x7x6\n"
               "c: Conv(2,1, pad=same) x2; Conv(3x1,1x2, pad=1x0, dilation=2) x4 -> 4x4x4\n")
    x = torch.randn(2, 4, 13, 10)
    for devices in (["cpu", "cpu"], ["cpu"]):
        m = build_module(net, devices=devices, seed=5).eval()
        s = canonical_state_dict(m)
        a = F.max_pool2d(F.relu(F.conv2d(x, s["a.conv.weight"], s["a.conv.bias"], 1, (0, 3))),
                         (3, 2), (2, 1), (1, 0))
        b = F.avg_pool2d(F.conv2d(a, s["b.conv.weight"], s["b.conv.bias"], 1, "same", (1, 2),
                                  groups=2), (2, 3), 1)
        c = F.conv2d(b, s["c.conv.weight"], s["c.conv.bias"], 1, "same")  # even: pads after
        want = F.conv2d(c, s["c.conv_1.weight"], s["c.conv_1.bias"], (1, 2), (1, 0), 2)
        with torch.no_grad():
            torch.testing.assert_close(m(x), want)
    assert tuple(s["a.conv.weight"].shape) == (4, 4, 1, 7)
    exported = exports(net, m, x, want, tmp_path)
    if exported is None:
        return
    attrs = [{a.name: list(a.ints) for a in n.attribute} for n in exported.graph.node
             if n.op_type in ("Conv", "MaxPool", "AveragePool")]
    assert attrs[0]["kernel_shape"] == [1, 7] and attrs[0]["pads"] == [0, 3, 0, 3]
    assert attrs[1]["kernel_shape"] == [3, 2] and attrs[1]["strides"] == [2, 1]
    assert attrs[2]["dilations"] == [1, 2]
    assert attrs[-1]["dilations"] == [2, 2] and attrs[-1]["strides"] == [1, 2]


def test_adaptive_pool_to_a_rectangle_is_torchs(tmp_path):
    net = _net("input 11x9x2\na: Conv(3,1) x4 + ReLU; AdaptiveAvgPool(3x5) -> 3x5x4\nf: FC(3)\n")
    m = build_module(net, devices=["cpu"], seed=6).eval()
    x = torch.randn(2, 2, 11, 9)
    state = canonical_state_dict(m)
    pooled = F.adaptive_avg_pool2d(F.relu(F.conv2d(x, state["a.conv.weight"],
                                                   state["a.conv.bias"])), (3, 5))
    want = F.linear(pooled.flatten(1), state["f.fc.weight"], state["f.fc.bias"])
    with torch.no_grad():
        torch.testing.assert_close(m(x), want)
    exports(net, m, x, want, tmp_path)


# Windows from one pixel to wider than the map (7 on 3x3: every window reaches past the border).
@pytest.mark.parametrize("size,hw", [(1, (4, 5)), (3, (5, 4)), (5, (6, 7)), (7, (3, 3))])
@pytest.mark.parametrize("alpha,beta,k", [(1e-4, 0.75, 1.0), (0.5, 0.6, 2.0), (2.0, 1.0, 0.5)])
def test_map_norm_is_its_formula_at_every_pixel(size, hw, alpha, beta, k):
    x = torch.randn(2, 3, *hw, dtype=torch.float64) * 3
    want = map_norm_by_pixel(x, size, alpha, beta, k)
    torch.testing.assert_close(map_response_norm(x, size, alpha, beta, k), want)
    torch.testing.assert_close(map_response_norm(x.float(), size, alpha, beta, k),
                               want.float())


def test_map_norm_gradients_pass_gradcheck():
    x = torch.randn(2, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: map_response_norm(t, 3, 0.5, 0.75, 1.0), (x,))
    assert torch.autograd.gradcheck(lambda t: map_response_norm(t, 5, 2.0, 0.6, 0.5), (x,))


def test_map_norm_computes_half_widths_in_fp32():
    x = (torch.randn(2, 3, 6, 6) * 3).bfloat16()
    y = map_response_norm(x, 3, 0.5, 0.75, 1.0)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, map_norm_by_pixel(x.float(), 3, 0.5, 0.75, 1.0).bfloat16())


def test_map_norm_is_per_map_on_towers_and_exports(tmp_path):
    """Each map alone: the towers' shares and the whole layer give the formula's numbers,
    and the exported graph averages with the padding counted (Caffe's divisor)."""
    net = _net("input 5x6x2\ntowers 2\na: Conv(1,1) x4 + ReLU; MapNorm(3, alpha=0.5, k=2, "
               "beta=0.6) -> 5x6x4\n")
    (layer,) = [la for la in net.layers() if la.name == "MapNorm"]
    assert layer.counts.params == 0 and layer.field.h == 3 and layer.tower.cross_bytes == 0
    x = torch.randn(3, 2, 5, 6)
    for merge in (False, True):
        m = build_module(net, devices=["cpu"] if merge else ["cpu", "cpu"], seed=6,
                         merge=merge).eval()
        state = canonical_state_dict(m)
        a = torch.relu(F.conv2d(x, state["a.conv.weight"], state["a.conv.bias"]))
        want = map_norm_by_pixel(a, 3, 0.5, 0.6, 2.0).float()
        with torch.no_grad():
            torch.testing.assert_close(m(x), want)
    exported = exports(net, m, x, want, tmp_path)
    if exported is None:
        return
    (pool,) = [n for n in exported.graph.node if n.op_type == "AveragePool"]
    attrs = {a.name: a for a in pool.attribute}
    assert list(attrs["kernel_shape"].ints) == [3, 3] and list(attrs["pads"].ints) == [1] * 4
    assert attrs["count_include_pad"].i == 1


def test_map_norm_reads_the_field_the_checker_gives():
    """A NaN in one pixel reaches exactly the outputs whose window holds it: the field's
    size×size square around it, clipped by the border."""
    net = _net("input 7x7x1\na: MapNorm(5)\n")
    (layer,) = net.layers()
    assert (layer.field.h, layer.field.w, layer.field.offset_h) == (5, 5, 0.0)
    m = build_module(net).eval()
    for at, rows in ((3, [1, 2, 3, 4, 5]), (0, [0, 1, 2])):
        x = torch.ones(1, 1, 7, 7)
        x[0, 0, at, at] = float("nan")
        with torch.no_grad():
            hit = m(x)[0, 0].isnan()
        assert hit.any(1).nonzero().flatten().tolist() == rows
        assert hit.any(0).nonzero().flatten().tolist() == rows
