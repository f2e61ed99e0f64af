"""The memory a run needs, told before training when the machine (or a GPU) has less free."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alexnetc.backends.train import memory
from alexnetc.backends.train.distributed import Dist
from alexnetc.cli.main import main
from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.memory.plan import plan
from alexnetc.compiler.memory.walk import Target
from alexnetc.compiler.pipeline import check

SPEC = """\
network Small
input 32x32x3
train batch=8, epochs=1
augment resize=32, flip=false, pca=0
conv1: Conv(5,1) x8 + ReLU; MaxPool(2,2) -> 14x14x8
fc: FC(10) + Softmax
"""
CPU = [torch.device("cpu")]


def _net() -> CheckedNetwork:
    result = check(SPEC, "small.net")
    assert result.network is not None
    return result.network


def _free(monkeypatch: pytest.MonkeyPatch, gib: float) -> None:
    monkeypatch.setattr(memory, "available", lambda device: int(gib * memory.GIB))


def test_need_is_the_checkers_peak_of_a_training_step() -> None:
    net = _net()
    (peak,) = need_one(net, 8)
    assert peak == plan(net, Target(8, device="cpu")).devices[0].peak(8)
    weights = 4 * net.total().params
    assert peak > 3 * weights  # weights, gradients, momentum, and the activations kept
    assert need_one(net, 8, "bf16") != (peak,)  # the run's precision is planned for


def need_one(net: CheckedNetwork, batch: int, amp: str | None = None) -> tuple[int, ...]:
    return tuple(memory.need(net, batch, CPU, amp).values())


def _batch_needing(net: CheckedNetwork, gib: float, devices: list[torch.device]) -> int:
    """The batch whose peak is about `gib` GiB on the first device."""
    one, two = (max(memory.need(net, b, devices).values()) for b in (1, 2))
    return int((gib * memory.GIB - (2 * one - two)) // (two - one))


def test_a_run_that_fits_is_not_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    _free(monkeypatch, 64)
    assert memory.shortfall(_net(), 8, CPU, lambda device: 1) is None


def test_a_run_that_does_not_fit_is_warned_about_in_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    net = _net()
    _free(monkeypatch, 0.5)
    batch = _batch_needing(net, 2.0, CPU)
    warning = memory.shortfall(net, batch, CPU, lambda device: 1)
    assert warning == (
        f"warning: training needs about 2.0 GiB of memory (the peak of a training step on "
        f"{batch} images: weights, gradients, momentum and the activations kept for backward) "
        "but the machine has 0.5 GiB available: it will likely run out of memory; use a "
        "smaller --batch-size")


def test_processes_on_one_machine_share_its_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    net = _net()
    batch = _batch_needing(net, 1.0, CPU)
    _free(monkeypatch, 1.5)
    assert memory.shortfall(net, batch, CPU, lambda device: 1) is None
    warning = memory.shortfall(net, batch, CPU, memory.sharing(Dist(0, 2, 0, 2), 1, None))
    assert warning is not None
    assert "about 2.0 GiB of memory (2 processes, each at the peak of" in warning
    assert warning.endswith("use a smaller --batch-size or fewer --nproc")


def test_a_gpu_is_compared_with_its_share_of_the_towers(monkeypatch: pytest.MonkeyPatch) -> None:
    net = check(SPEC.replace("input 32x32x3", "input 32x32x3\ntowers 2"), "small.net").network
    assert net is not None
    two = [torch.device("cuda:0"), torch.device("cuda:1")]  # one tower on each
    batch = _batch_needing(net, 1.0, two)
    _free(monkeypatch, 1.5)
    assert memory.shortfall(net, batch, two, lambda device: 1) is None
    _free(monkeypatch, 0.5)
    warning = memory.shortfall(net, batch, two, lambda device: 1)
    assert warning is not None and "about 1.0 GiB" in warning
    assert "but cuda:0 has 0.5 GiB free" in warning


def test_available_memory_is_linux_memavailable(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemFree:         1000000 kB\n"
                       "MemAvailable:   23718048 kB\n")
    assert memory.meminfo_available(meminfo) == 23718048 * 1024
    meminfo.write_text("MemTotal:       32000000 kB\n")  # an old kernel: nothing to go by
    assert memory.meminfo_available(meminfo) is None
    assert memory.meminfo_available(tmp_path / "missing") is None  # not Linux


def test_train_warns_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "small.net"
    spec.write_text(SPEC)
    _free(monkeypatch, 1e-6)
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--data", "synthetic",
                 "--devices", "cpu", "--workers", "0", "--max-steps", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    warned = [i for i, line in enumerate(out) if line.startswith("warning: training needs")]
    assert len(warned) == 1 and out[warned[0] - 1].startswith("training Small")
    assert "but the machine has 0.0 GiB available" in out[warned[0]]
