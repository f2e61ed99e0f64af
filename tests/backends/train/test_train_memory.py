"""The memory a run needs, told before training when the machine (or a GPU) has less free."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from alexnetc.backends.train import memory
from alexnetc.backends.train.distributed import Dist
from alexnetc.cli.main import main
from alexnetc.compiler.graph import CheckedNetwork
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


def test_need_is_the_activations_of_a_batch_and_three_copies_of_the_weights() -> None:
    net = _net()
    total = net.total()
    # every op's output in fp32: Conv, ReLU, MaxPool, FC, Softmax
    assert total.activation_bytes == 4 * (28 * 28 * 8 * 2 + 14 * 14 * 8 + 10 * 2)
    assert memory.need(net, 8) == 8 * total.activation_bytes + 3 * 4 * total.params


def test_a_run_that_fits_is_not_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    _free(monkeypatch, 64)
    assert memory.shortfall(_net(), 8, CPU, lambda device: 1) is None


def test_a_run_that_does_not_fit_is_warned_about_in_one_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    net = _net()
    _free(monkeypatch, 0.5)
    batch = 2 * memory.GIB // net.total().activation_bytes  # about 2 GiB of activations
    warning = memory.shortfall(net, batch, CPU, lambda device: 1)
    assert warning == (
        f"warning: training needs about 2.0 GiB of memory (activations of 0.1 MiB per image × "
        f"{batch} images, plus weights, gradients and momentum) but the machine has 0.5 GiB "
        "available: it will likely run out of memory; use a smaller --batch-size")


def test_processes_on_one_machine_share_its_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    net = _net()
    batch = memory.GIB // net.total().activation_bytes  # about 1 GiB each
    _free(monkeypatch, 1.5)
    assert memory.shortfall(net, batch, CPU, lambda device: 1) is None
    warning = memory.shortfall(net, batch, CPU, memory.sharing(Dist(0, 2, 0, 2), 1, None))
    assert warning is not None
    assert "about 2.0 GiB of memory (2 processes, each with activations of" in warning
    assert warning.endswith("use a smaller --batch-size or fewer --nproc")


def test_a_gpu_is_compared_with_its_share_of_the_towers(monkeypatch: pytest.MonkeyPatch) -> None:
    net = _net()
    batch = 2 * memory.GIB // net.total().activation_bytes
    two = [torch.device("cuda:0"), torch.device("cuda:1")]  # one tower on each: half each
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
