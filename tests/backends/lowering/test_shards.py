"""Tower shards on one device are rows of one tensor: a merged layer reads its weights in place.

Joined by torch.cat, AlexNet's two towers copied every weight on each forward and autograd
kept the copies for backward (268 MB saved at batch 2 on the CPU, 235 MB of them weights).
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alexnetc.backends.lowering import AlexnetcModule, build_module
from alexnetc.backends.lowering.export import export_program
from alexnetc.backends.lowering.layers import Sharded, ShardedConv, ShardedFC, held_apart
from alexnetc.backends.lowering.shards import adjacent, join
from alexnetc.compiler.pipeline import check, load

from helpers import SPECS

# Every op with tensors: conv (a tower's own channels, and every channel through groups),
# BatchNorm (running statistics, a counter held whole), PReLU, FC; biases and none.
SMALL = """input 10x10x3
towers 2
c1: Conv(3,1, pad=1) x8 + ReLU; MaxPool(2,2)
c2: Conv(3,1, pad=1, groups=2, bias=false) x8; BatchNorm + PReLU
c3: Conv(3,1) x6 + Tanh
f: FC(4) + Softmax
"""
MB = 10**6


def small(towers: int = 2, **kw: Any) -> AlexnetcModule:
    net = check(SMALL.replace("towers 2", f"towers {towers}")).network
    assert net is not None
    return build_module(net, **{"devices": ["cpu"], "seed": 3, **kw})


def sharded(model: nn.Module, path: str) -> Sharded:
    layer = model.get_submodule(path)
    assert isinstance(layer, Sharded), path
    return layer


def image(batch: int = 3) -> Tensor:
    return torch.randn(batch, 3, 10, 10, generator=torch.Generator().manual_seed(1))


def row_parts(model: nn.Module) -> Iterator[tuple[str, list[Tensor]]]:
    """Per layer tensor cut by output channels, every tower's shard of it."""
    for path, layer in model.named_modules():
        if isinstance(layer, Sharded):
            for name in layer.tensor_names():
                if layer.join_dims.get(name, 0) == 0:
                    yield f"{path}.{name}", [getattr(s, name) for s in layer.towers]


def assert_packed(model: nn.Module) -> None:
    """Each tensor's shards lie one after the other in one storage."""
    seen = 0
    for name, parts in row_parts(model):
        assert adjacent(parts), name
        base = parts[0].untyped_storage().data_ptr()
        assert parts[0].untyped_storage().nbytes() == sum(p.nbytes for p in parts), name
        offset = parts[0].data_ptr()
        for p in parts:
            assert p.untyped_storage().data_ptr() == base and p.data_ptr() == offset, name
            offset += p.nbytes
        seen += 1
    assert seen > 0


def saved_for_backward(model: nn.Module, x: Tensor) -> tuple[int, set[tuple[int, int]]]:
    """Bytes autograd keeps for backward outside the model's own tensors (unique storages),
    and (storage, elements) of every saved tensor that lies in the model's own storage (a
    linear layer saves its weight transposed)."""
    own = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    other: dict[int, int] = {}
    in_own: set[tuple[int, int]] = set()

    def pack(t: Tensor) -> Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr in own:
            in_own.add((ptr, t.numel()))
        else:
            other[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum().backward()
    return sum(other.values()), in_own


def grads(model: nn.Module) -> dict[str, Tensor]:
    out = {}
    for n, p in model.named_parameters():
        assert p.grad is not None, n
        out[n] = p.grad.clone()
    return out


# --- what autograd keeps -----------------------------------------------------------------------

def test_merged_alexnet_keeps_its_weights_in_place_for_backward():
    """The convs and FCs save the whole weight as a view of the shards' storage: what autograd
    keeps besides the model's tensors is activations (25 MB at batch 2; 268 MB with the
    weights concatenated)."""
    net, recipe = load(SPECS / "alexnet.net")
    model = build_module(net, recipe, devices=["cpu"], seed=0).train()
    assert model.merged and net.towers == 2
    kept, in_own = saved_for_backward(model, torch.randn(2, 3, 227, 227))
    assert kept < 40 * MB, kept / MB
    layers = [m for m in model.modules() if isinstance(m, (ShardedConv, ShardedFC))]
    assert len(layers) == 8
    for layer in layers:
        parts = [s.get_parameter("weight") for s in layer.towers]
        assert (parts[0].untyped_storage().data_ptr(), sum(p.numel() for p in parts)) in in_own


def test_joined_is_a_view_and_its_gradient_rows_are_the_shards():
    model = small()
    conv = sharded(model, "c1.conv")
    w = conv.joined("weight")  # 8 x 3 x 3 x 3
    parts = [s.get_parameter("weight") for s in conv.towers]
    assert w.untyped_storage().data_ptr() == parts[0].untyped_storage().data_ptr()
    assert w.data_ptr() == parts[0].data_ptr() and w.shape == (8, 3, 3, 3)
    (w * torch.arange(8.0).view(8, 1, 1, 1)).sum().backward()
    for t, p in enumerate(parts):
        assert p.grad is not None
        assert torch.equal(p.grad, torch.arange(4.0 * t, 4.0 * t + 4).view(4, 1, 1, 1)
                           .expand(4, 3, 3, 3))


def test_a_shard_changed_in_place_after_forward_fails_backward():
    """As for one tensor: backward would otherwise read the changed rows."""
    model = small()
    y = model(image())
    with torch.no_grad():
        model.get_parameter("c3.conv.towers.1.weight").mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


# --- the same numbers and state_dict -----------------------------------------------------------

def test_state_dict_is_the_per_tower_modules():
    merged, towers = small(), small(devices=["cpu", "cpu"], merge=False)
    assert merged.merged and not towers.merged
    a, b = merged.state_dict(), towers.state_dict()
    assert list(a) == list(b) and "c2.conv.towers.1.weight" in a
    for key in a:
        assert a[key].shape == b[key].shape and torch.equal(a[key], b[key]), key
    assert_packed(merged)


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_forward_and_gradients_are_the_concatenated_shards(train: bool):
    """Bitwise what torch.cat of the shards gives (shards held apart take that path)."""
    model = small().train(train)
    x = image()
    runs = []
    for apart in (False, True):
        model.zero_grad(set_to_none=True)
        with held_apart(model) if apart else contextlib.nullcontext():
            if apart:
                conv = sharded(model, "c1.conv")
                parts = [s.get_parameter("weight") for s in conv.towers]
                assert not adjacent(parts)
                cat = conv.joined("weight")
                assert cat.untyped_storage().data_ptr() not in {
                    p.untyped_storage().data_ptr() for p in parts}
            y = model(x)  # 3 x 4
            F.cross_entropy(y, torch.tensor([0, 1, 3])).backward()
        runs.append((y.detach(), grads(model)))
    assert_packed(model)  # packed again after the block
    (y0, g0), (y1, g1) = runs
    assert torch.equal(y0, y1)
    assert g0.keys() == g1.keys()
    for n in g0:
        assert torch.equal(g0[n], g1[n]), n


def test_one_tower_joins_nothing():
    model = small(towers=1)
    conv = sharded(model, "c1.conv")
    assert len(conv.towers) == 1 and conv.joined("weight") is conv.towers[0].weight
    w = conv.towers[0].weight
    assert w.untyped_storage().nbytes() == w.nbytes
    y = model(image())
    y.sum().backward()
    assert w.grad is not None


def test_join_concatenates_what_is_not_rows_of_one_tensor():
    a, b = torch.ones(2, 3, requires_grad=True), torch.zeros(1, 3, requires_grad=True)
    whole = join([a, b])
    assert whole.tolist() == [[1] * 3, [1] * 3, [0] * 3]
    assert whole.untyped_storage().data_ptr() not in {
        a.untyped_storage().data_ptr(), b.untyped_storage().data_ptr()}
    rows = torch.arange(12.0).view(4, 3)
    assert not adjacent([rows[:2], rows[3:]])  # a gap
    assert not adjacent([rows[2:], rows[:2]])  # out of order
    assert not adjacent([rows[:2].double(), rows[2:].double().clone()])


# --- kept through moves, loads, optimiser steps and copies -------------------------------------

def test_packed_after_a_cast_and_back_and_the_optimiser_keeps_its_parameters():
    model = small()
    params = list(model.parameters())
    model.to(torch.float64)
    assert_packed(model)
    assert next(model.parameters()).dtype == torch.float64
    model.float()
    assert_packed(model)
    assert all(p is q for p, q in zip(params, model.parameters(), strict=True))


def test_packed_in_channels_last():
    """The training loop's GPU memory format: each 4-d weight in NHWC, rows still whole."""
    model = small().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    assert_packed(model)
    w = model.get_parameter("c1.conv.towers.0.weight")
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    _, in_own = saved_for_backward(model, image())
    assert (w.untyped_storage().data_ptr(), 2 * w.numel()) in in_own


def test_packed_after_load_state_dict_and_an_sgd_step():
    model, other = small(), small(seed=9)
    ptrs = {n: p.data_ptr() for n, p in model.state_dict().items()}
    model.load_state_dict(other.state_dict())
    assert {n: p.data_ptr() for n, p in model.state_dict().items()} == ptrs
    assert_packed(model)
    for key, value in other.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key

    model.load_state_dict({k: v.clone() for k, v in other.state_dict().items()}, assign=True)
    assert_packed(model)  # each loaded tensor in a storage of its own, packed after the load

    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = {n: (p.data_ptr(), p.detach().clone()) for n, p in model.named_parameters()}
    for _ in range(2):
        opt.zero_grad()
        model(image()).sum().backward()
        opt.step()
    assert_packed(model)
    for n, p in model.named_parameters():
        assert p.data_ptr() == before[n][0], n
    assert not torch.equal(model.get_parameter("f.fc.towers.1.weight"),
                           before["f.fc.towers.1.weight"][1])


def test_a_deep_copy_is_packed_on_its_own():
    model = small()
    clone = copy.deepcopy(model)
    assert_packed(clone)
    assert {p.untyped_storage().data_ptr() for p in clone.parameters()}.isdisjoint(
        p.untyped_storage().data_ptr() for p in model.parameters())


# --- traced and exported -----------------------------------------------------------------------

def test_the_exported_program_holds_each_shard_and_writes_no_warning(tmp_path):
    model = small().eval()
    net = model.net
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="No complete tensor")
        export_program(net, None, b"", tmp_path / "m.pt2", model=model)
    assert_packed(model)
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    x = image()
    with torch.no_grad():
        torch.testing.assert_close(program(x), model.predict(x), rtol=0, atol=0)


def test_torch_func_transforms_run_through_the_joins() -> None:
    """grad and vmap(grad) over functional_call: their wrapped tensors have no storage to
    compare, so the shards are concatenated, with the same gradients as the module's own."""
    model = small().eval()
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, y = image(3), torch.tensor([1, 2, 3])  # N x C x H x W, N

    def loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        logits = torch.func.functional_call(model, p, (xi[None],))  # 1 x classes
        return F.cross_entropy(logits, yi[None])

    per_image = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0, 0))(params, x, y)
    model.zero_grad()
    F.cross_entropy(model(x), y, reduction="sum").backward()
    for name, p in model.named_parameters():
        assert p.grad is not None
        torch.testing.assert_close(per_image[name].sum(0), p.grad, rtol=1e-5, atol=1e-6)


def test_held_apart_copies_only_what_shares_a_storage() -> None:
    model = small(towers=1)
    before = {n: p.data_ptr() for n, p in model.named_parameters()}
    with held_apart(model):
        assert {n: p.data_ptr() for n, p in model.named_parameters()} == before
