"""Device maps: parsing, numbers that do not depend on the map, training on it, DDP."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from torch.nn.parallel import DistributedDataParallel

from alexnetc.backends.lowering import build_module, count_cross_bytes, parse_devices
from alexnetc.compiler.pipeline import check, load

from helpers import SPECS
from strategies import valid_specs

SMALL = """input 12x12x3
towers 2
c1: Conv(3,1) x8 + ReLU; ResNorm(3); MaxPool(2,2)
c2: Conv(3,1, pad=1, groups=2) x8 + ReLU
c3: Conv(3,1) x6 + Tanh
f: FC(4) + Softmax
"""


@pytest.fixture(scope="module")
def alexnet():
    return load(SPECS / "alexnet.net")


def test_parse_devices():
    cpu = torch.device("cpu")
    assert parse_devices("cpu", 2) == [cpu, cpu]
    assert parse_devices(" cpu , cpu ", 2) == [cpu, cpu]
    assert len(parse_devices(None, 3)) == 3
    with pytest.raises(ValueError, match="3 devices given for 2 towers"):
        parse_devices("cpu,cpu,cpu", 2)
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        parse_devices("gpu0", 1)
    with pytest.raises(ValueError, match="empty device name"):
        parse_devices("cpu,", 2)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            parse_devices("cuda:0,cpu", 2)


def test_alexnet_two_cpu_towers_forward_backward(alexnet):
    """Batch 2 forward and backward on a two-"device" map equal the one-device run, and move
    exactly the checker's bytes; the state_dict is the same for both maps."""
    net, recipe = alexnet
    x = torch.randn(2, 3, 227, 227)
    outs, grads, keys = [], [], []
    for devices in (["cpu"], ["cpu", "cpu"]):
        m = build_module(net, recipe, devices=devices, seed=5,
                         merge=False).eval()  # eval: no dropout masks
        keys.append(list(m.state_dict()))
        with count_cross_bytes() as moved:
            y = m(x)  # 2 x 1000
        assert sum(moved.values()) == net.cross_tower_bytes() * 2
        torch.nn.functional.cross_entropy(y, torch.tensor([3, 7])).backward()
        outs.append(y.detach())
        grads.append(m.get_parameter("conv1.conv.towers.1.weight").grad)
    assert keys[0] == keys[1] and "conv1.conv.towers.1.weight" in keys[0]
    assert outs[0].shape == (2, 1000)
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)
    assert grads[0] is not None and grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_training_mode_dropout_runs_per_tower():
    net = check(SMALL).network
    assert net is not None
    m = build_module(net, devices=["cpu", "cpu"]).train()
    y = m(torch.randn(4, 3, 12, 12))
    y.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_ddp_wraps_a_two_tower_module(tmp_path):
    """DistributedDataParallel (gloo, one process) over a module spanning two devices."""
    net = check(SMALL).network
    assert net is not None
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        m = build_module(net, devices=["cpu", "cpu"], seed=2)
        ddp = DistributedDataParallel(m)
        x = torch.randn(3, 3, 12, 12)
        loss = torch.nn.functional.cross_entropy(ddp(x), torch.tensor([0, 1, 2]))
        loss.backward()
        assert all(p.grad is not None for p in m.parameters())
        del ddp  # before the group: freeing DDP's reducer after it can hang in gloo's teardown
    finally:
        dist.destroy_process_group()


def test_module_follows_to(alexnet):
    net = check(SMALL).network
    assert net is not None
    m = build_module(net, devices=["cpu", "cpu"]).to(torch.float64)
    assert m.devices == [torch.device("cpu")] * 2
    assert m(torch.randn(1, 3, 12, 12, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.gpu
def test_towers_on_cuda_and_cpu_equal_all_on_cuda(alexnet):
    net, recipe = alexnet
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.randn(2, 3, 227, 227, device="cuda")
    outs = {}
    for key, devices in {"cuda": ["cuda:0"], "mixed": ["cuda:0", "cpu"],
                         "reference": ["cpu"]}.items():
        m = build_module(net, recipe, devices=devices, seed=11, merge=False).eval()
        with torch.no_grad(), count_cross_bytes() as moved:
            y = m(x if devices[0] != "cpu" else x.cpu())
        assert sum(moved.values()) == net.cross_tower_bytes() * 2
        outs[key] = y.cpu()
    print("max |cuda - mixed|:", (outs["cuda"] - outs["mixed"]).abs().max().item(),
          "max |cuda - cpu|:", (outs["cuda"] - outs["reference"]).abs().max().item())
    torch.testing.assert_close(outs["mixed"], outs["cuda"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outs["reference"], outs["cuda"], rtol=1e-4, atol=1e-5)

def test_merged_towers_equal_per_tower_path(alexnet):
    """One device runs each layer whole (concatenated shards, grouped convs, in-tower LRN):
    the same outputs and gradients as the per-tower path, the same state_dict, no exchange."""
    net, recipe = alexnet
    x = torch.randn(2, 3, 227, 227)
    y = torch.tensor([3, 7])
    runs = {}
    for merge in (False, True):
        m = build_module(net, recipe, devices=["cpu"], seed=5, merge=merge).eval()
        assert m.merged is merge
        with count_cross_bytes() as moved:
            out = m(x)  # 2 x 1000
        assert sum(moved.values()) == (0 if merge else net.cross_tower_bytes() * 2)
        torch.nn.functional.cross_entropy(out, y).backward()
        runs[merge] = (out.detach(), {k: p.grad for k, p in m.named_parameters()},
                       list(m.state_dict()))
    torch.testing.assert_close(runs[True][0], runs[False][0], rtol=1e-5, atol=1e-6)
    assert runs[True][2] == runs[False][2]
    for key, grad in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][key], grad, rtol=1e-4, atol=1e-7)


def test_merge_is_the_default_on_one_device(alexnet):
    net, recipe = alexnet
    assert build_module(net, recipe, devices=["cpu"]).merged
    assert build_module(net, recipe, devices=["cpu", "cpu"]).merged
    assert not build_module(net, recipe, devices=["cpu"], merge=False).merged


@settings(max_examples=40, deadline=None)
@given(valid_specs())
def test_merged_equals_per_tower_on_random_specs(case) -> None:
    net = check(case.text, "gen.net").network
    assert net is not None
    x = torch.randn(2, net.input.c, net.input.h, net.input.w)
    outs = [build_module(net, devices=["cpu"], seed=2, merge=m).eval()(x) for m in (False, True)]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)


def test_whole_layer_weights_round_trip(alexnet):
    """Whole-layer weights have the checker's per-layer shapes and load back into the shards."""
    from alexnetc.backends.lowering import canonical_state_dict, load_canonical_state_dict

    net, recipe = alexnet
    a = build_module(net, recipe, devices=["cpu", "cpu"], seed=1)
    full = canonical_state_dict(a)
    assert full["conv1.conv.weight"].shape == (96, 3, 11, 11)
    assert full["conv2.conv.weight"].shape == (256, 48, 5, 5)
    assert full["fc6.fc.weight"].shape == (4096, 9216)
    assert sum(t.numel() for t in full.values()) == net.total().params
    b = build_module(net, recipe, devices=["cpu"], seed=2)
    load_canonical_state_dict(b, full)
    for key, value in a.state_dict().items():
        assert torch.equal(b.state_dict()[key], value), key
    with pytest.raises(ValueError, match="missing"):
        load_canonical_state_dict(b, {"conv1.conv.weight": full["conv1.conv.weight"]})


@pytest.mark.parametrize("text", [
    "input 4x4x3\ntowers 2\na: ResNorm(3, alpha=1)\n",  # 3 maps: the towers cannot split them
    "input 4x4x3\ntowers 2\na: ReLU; ResNorm(3, alpha=1); MaxPool(2,2)\nf: FC(4)\n",  # fused
    "input 6x6x2\ntowers 2\nc: Conv(3,1) x4 + ReLU + Softmax; ResNorm(3, alpha=1)\nd: FC(2)\n",
])
def test_lrn_on_maps_the_towers_do_not_split_spans_them_all(text):
    """Ahead of the first split (or after a gather) LRN sees every map, on one device as on
    several: the merged path does not cut the maps into uneven tower shares."""
    net = check(text).network
    assert net is not None
    x = torch.randn(2, net.input.c, net.input.h, net.input.w)
    outs = [build_module(net, devices=["cpu"], seed=1, merge=m).eval()(x) for m in (False, True)]
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)


def test_own_tower_conv_after_a_gather_counts_its_scatter():
    """A conv reading its own tower's maps after a mid-network Softmax gathered them onto the
    first tower: the checker counts the scatter back that the module performs."""
    net = check("input 6x6x2\ntowers 2\nc: Conv(3,1) x4 + Softmax\n"
                "d: Conv(3,1, groups=2) x4\n").network
    assert net is not None
    d = next(layer for layer in net.layers() if layer.id == "d.0")
    assert d.tower.cross_bytes == 4 * 4 * 2 * 4  # the second tower's 4x4x2 share, fp32
    m = build_module(net, devices=["cpu", "cpu"], merge=False).eval()
    with torch.no_grad(), count_cross_bytes() as moved:
        m(torch.randn(3, 2, 6, 6))
    assert {k: v for k, v in moved.items() if k != "output"} == {
        layer.id: layer.tower.cross_bytes * 3 for layer in net.layers() if layer.tower.cross_bytes}
