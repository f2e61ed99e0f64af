"""The memory plan from the checked network alone: AlexNet counted by hand, the device maps,
the peak's bounds and the largest batch a budget holds (what autograd really keeps is
measured against the plan in tests/backends/lowering/test_saved_tensors.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.memory.plan import ALLOWANCE, MemoryPlan, plan
from alexnetc.compiler.memory.report import parse_size
from alexnetc.compiler.memory.walk import Target
from alexnetc.compiler.pipeline import check, check_file

from helpers import BRANCHING, SPECS


def _alexnet() -> CheckedNetwork:
    net = check_file(SPECS / "alexnet.net").network
    assert net is not None
    return net


ALEXNET = _alexnet()
PARAMS = 60_965_224
CONV_FC_WEIGHTS = PARAMS - (96 + 256 + 384 + 384 + 256 + 4096 + 4096 + 1000)  # less biases


def _kept_per_image(p: MemoryPlan) -> int:
    return sum(d.kept.per_image for d in p.devices)


def _alexnet_kept(act: int, mask: int, image: int, argmax: int) -> int:
    """What AlexNet keeps per image through the fused kernels: each stage's input (the image,
    each pool's output), each fused chain's input with its argmax, the ReLU outputs the next
    layer reads, dropout's masks. `act`: bytes per activation."""
    chains = (55 * 55 * 96 + 27 * 27 * 256 + 13 * 13 * 256) * act
    argmaxes = (27 * 27 * 96 + 13 * 13 * 256 + 6 * 6 * 256) * argmax
    pools = (27 * 27 * 96 + 13 * 13 * 256 + 6 * 6 * 256) * act
    relus = (13 * 13 * 384 * 2 + 4096 * 2) * act
    dropouts = 4096 * 2 * (mask + act)  # the mask, and the output the next FC reads
    return image + chains + argmaxes + pools + relus + dropouts


def test_alexnet_keeps_what_its_layers_need_in_fp32() -> None:
    p = plan(ALEXNET, Target(128))
    (d,) = p.devices
    assert d.weights == d.gradients == d.momentum == PARAMS * 4
    assert _kept_per_image(p) == _alexnet_kept(4, 1, 227 * 227 * 3 * 4, 1)
    assert d.kept.fixed == 0


def test_bf16_keeps_half_width_activations_and_a_copy_of_each_weight() -> None:
    p = plan(ALEXNET, Target(128, "bf16"))
    (d,) = p.devices
    # the fp32 image is cast for conv1, which keeps the bf16 copy
    assert _kept_per_image(p) == _alexnet_kept(2, 1, 227 * 227 * 3 * 2, 1)
    assert d.kept.fixed == CONV_FC_WEIGHTS * 2
    assert d.weights == PARAMS * 4  # the weights, gradients and momentum stay fp32


def test_the_cpu_reference_chain_keeps_more_than_the_kernel() -> None:
    """Without the kernel, ReLU, LRN and MaxPool each keep their own tensors (and the pool a
    64-bit argmax); the CPU's dropout keeps its fp32 noise, not a byte mask."""
    fused = plan(ALEXNET, Target(1, device="cuda"))
    cpu = plan(ALEXNET, Target(1, device="cpu"))
    assert _kept_per_image(cpu) > 3 * _kept_per_image(fused)
    drop = next(layer.id for layer in ALEXNET.layers() if layer.op.name == "Dropout")
    assert fused.kept(drop).per_image == 4096
    assert cpu.kept(drop).per_image == 4096 * 4


def test_two_towers_split_the_weights_and_gather_for_conv3() -> None:
    one = plan(ALEXNET, Target(128)).devices[0]
    towers = plan(ALEXNET, Target(128, devices=(0, 1))).devices
    assert [d.weights for d in towers] == [one.weights // 2] * 2
    conv3 = next(layer.id for layer in ALEXNET.layers() if layer.stage == "conv3")
    # each tower keeps the whole of conv3's input, gathered from both towers
    split = plan(ALEXNET, Target(1, devices=(0, 1)))
    assert [split.kept(conv3, d).per_image for d in (0, 1)] == [13 * 13 * 256 * 4] * 2
    assert plan(ALEXNET, Target(1)).kept(conv3).per_image == 13 * 13 * 256 * 4


def test_a_one_tower_spec_has_one_device_map() -> None:
    net = check(BRANCHING).network
    assert net is not None
    assert len(plan(net, Target(4)).devices) == 1


def _nets() -> list[CheckedNetwork]:
    found = [check_file(p).network for p in sorted(SPECS.glob("*.net"))]
    return [n for n in found if n is not None]


NETS = _nets()


@pytest.mark.parametrize("net", NETS, ids=[n.name for n in NETS])
def test_the_peak_holds_the_step_and_grows_with_the_batch(net: CheckedNetwork) -> None:
    for devices in (None, tuple(range(net.towers))):
        for d in plan(net, Target(8, devices=devices)).devices:
            assert d.peak(8) >= 3 * d.weights + d.buffers  # the optimizer step
            assert d.peak(8) >= 2 * d.weights + d.kept.at(8)  # the end of forward
            assert d.peak(1) < d.peak(2) < d.peak(64)
            assert d.weights + d.buffers <= d.inference_peak(8) < d.peak(8)


@settings(max_examples=60, deadline=None)
@given(budget=st.integers(2**20, 2**36), index=st.integers(0, len(NETS) - 1),
       towers=st.booleans())
def test_the_largest_batch_fits_and_one_more_does_not(budget: int, index: int,
                                                      towers: bool) -> None:
    net = NETS[index]
    p = plan(net, Target(1, devices=tuple(range(net.towers)) if towers else None))
    largest = p.largest_batch(budget)
    usable = budget * (1 - ALLOWANCE)
    assert largest is not None
    assert all(d.peak(largest + 1) > usable for d in p.devices if d.largest_batch(budget)
               == largest)
    if largest:
        assert all(d.peak(largest) <= usable for d in p.devices)
    else:
        assert any(d.peak(1) > usable for d in p.devices)


@pytest.mark.parametrize(("text", "size"), [("3GiB", 3 * 2**30), ("3 GB", 3 * 10**9),
                                            ("512MiB", 512 * 2**20), ("1.5gib", 3 * 2**29),
                                            ("4096", 4096)])
def test_sizes_as_people_write_them(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["3XB", "GiB", "-1GiB", "0", ""])
def test_sizes_that_are_not(text: str) -> None:
    with pytest.raises(ValueError, match="memory size"):
        parse_size(text)


def test_each_layer_of_a_reference_chain_states_what_it_keeps() -> None:
    """Without the kernel the ReLU keeps its output, the LRN its own tensors and the pool its
    input and argmax; the fused kernel's are its chain's first layer's."""
    conv1 = [layer for layer in ALEXNET.layers() if layer.stage == "conv1"]
    relu, lrn, pool = (layer.id for layer in conv1[1:])
    cpu = plan(ALEXNET, Target(1, device="cpu"))
    maps = 55 * 55 * 96 * 4
    assert cpu.kept(relu).per_image == maps
    assert cpu.kept(lrn).per_image == (48 + 4) * 2 * 55 * 55 * 4 + 2 * maps
    assert cpu.kept(pool).per_image == maps + 27 * 27 * 96 * 8
    fused = plan(ALEXNET, Target(1))
    assert fused.kept(relu).per_image == maps + 27 * 27 * 96
    assert fused.kept(lrn) == fused.kept(pool) == fused.kept(lrn, 0)


def test_running_statistics_sit_with_their_towers() -> None:
    net = check("input 8x8x4\ntowers 2\nc: Conv(3,1, pad=1) x64; BatchNorm + ReLU\n"
                "fc: FC(10)\n").network
    assert net is not None
    whole = plan(net, Target(1)).devices[0].buffers
    assert [d.buffers for d in plan(net, Target(1, devices=(0, 0))).devices] == [whole]
    assert [d.buffers for d in plan(net, Target(1, devices=(0, 1))).devices] == [whole // 2] * 2


def test_a_softmax_inside_the_network_keeps_fp32_under_cuda_autocast() -> None:
    """CUDA's autocast runs softmax in fp32; the CPU's leaves it in its input's dtype."""
    net = check("input 8x8x4\nc: Conv(3,1, pad=1) x8 + Softmax\nfc: FC(10)\n").network
    assert net is not None
    softmax = next(layer.id for layer in net.layers() if layer.op.name == "Softmax")
    cuda = plan(net, Target(1, "bf16", "cuda")).kept(softmax).per_image
    cpu = plan(net, Target(1, "bf16", "cpu")).kept(softmax).per_image
    assert (cuda, cpu) == (8 * 8 * 8 * 4, 8 * 8 * 8 * 2)


def test_the_largest_batch_stays_within_pytorchs_sizes() -> None:
    assert plan(ALEXNET, Target(1)).largest_batch(2**80) == 2**31 - 1


def test_a_data_parallel_replica_holds_its_gradients_all_step() -> None:
    """DDP's buckets hold the gradients from one step to the next: resident beside the
    weights and momentum, so forward's peak rises by them and nothing else does."""
    alone = plan(ALEXNET, Target(8)).devices[0]
    replica = plan(ALEXNET, Target(8, replicas=True)).devices[0]
    assert replica.peak(8) >= 3 * replica.weights + replica.kept.at(8)
    assert alone.peak(8) <= replica.peak(8) <= alone.peak(8) + alone.weights
    assert replica.kept == alone.kept


def test_a_replicas_new_gradient_sits_beside_its_bucket() -> None:
    """The gradient a layer's backward makes is a tensor of its own until DDP's reducer has
    copied it into the bucket: at that moment the layer's gradients are there twice."""
    net = check("input 4x4x1\nfc: FC(10)\n").network
    assert net is not None
    (d,) = plan(net, Target(1, replicas=True)).devices
    assert d.weights == (16 * 10 + 10) * 4
    assert d.peak(1) >= 4 * d.weights + 16 * 4  # weights, momentum, bucket, new gradient, image
