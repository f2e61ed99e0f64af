"""Measured kernel choice (choose.py): what is timed, what is remembered, what compile sees.

Timings under the CPU interpreter mean nothing, so the tests replace the timer with one that
ranks the variants as told, and declare the CPU tensors measurable where the dispatch is the
point.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from functools import partial

import pytest
import torch
from torch import nn

from alexnetc.backends.kernels import (
    LRNParams,
    PoolParams,
    choose,
    fused_relu_lrn_pool,
    library,
)

from test_lrn_reference import paper_relu_lrn_pool, rel_err


@pytest.fixture(autouse=True)
def fresh_choices() -> Iterator[None]:
    choose.forget()
    yield
    choose.forget()


def ranked(order: dict[str, float]) -> choose.Timer:
    """A timer that reports order[module] for a launcher partial of that module, and runs it."""

    def timer(fn: Callable[[], object], device: torch.device) -> float:
        assert isinstance(fn, partial)
        fn()  # the variant must run (and write its outputs) when timed
        return order[fn.func.__module__.rsplit(".", 1)[-1]]

    return timer


def test_the_fastest_is_chosen_and_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    runs: list[str] = []
    built: list[int] = []

    def variants() -> dict[str, Callable[[], object]]:
        built.append(1)
        return {"a": lambda: runs.append("a"), "b": lambda: runs.append("b")}

    times = iter([2.0, 1.0])
    monkeypatch.setattr(choose, "timer", lambda fn, device: (fn(), next(times))[1])
    monkeypatch.setattr(choose, "can_measure", lambda *t: True)
    x = torch.zeros(1)
    assert choose.choose(("k",), "a", (x,), variants) == "b"
    assert choose.choose(("k",), "a", (x,), variants) == "b"  # remembered: not built nor timed
    assert runs == ["a", "b"] and built == [1]
    assert choose.chosen() == {("k",): "b"}


def test_what_cannot_be_timed_gets_the_default_and_is_not_remembered() -> None:
    def never() -> dict[str, Callable[[], object]]:
        raise AssertionError("built")

    assert choose.choose(("k",), "a", (torch.zeros(1),), never) == "a"  # a CPU tensor
    assert choose.choose(None, "a", (torch.zeros(1),), never) == "a"  # no signature
    assert choose.chosen() == {}


def test_only_real_cuda_tensors_outside_a_trace_are_measurable() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    assert not choose.can_measure(torch.zeros(2))  # the CPU (interpreter or not)
    with FakeTensorMode():
        fake = torch.empty(2, 3)
    assert not choose.can_measure(fake)
    key = choose.signature("fwd", torch.zeros(2, 3, 4, 5).to(memory_format=torch.channels_last),
                           True, 5)
    assert key is not None
    assert key[1:3] == ((2, 3, 4, 5), (60, 1, 15, 3)) and key[-2:] == (True, 5)


def test_a_dynamic_shape_trace_falls_back_to_the_rule() -> None:
    """After a recompile for another batch size, torch.compile traces the op with symbolic
    sizes: they cannot key a choice (nor be hashed), so the rule's variant is traced.  Run
    without the interpreter, in a subprocess, so the op is the triton_op whose body is traced
    (make_fx records the kernel launches without running them)."""
    code = (
        "import torch\n"
        "from torch.fx.experimental.proxy_tensor import make_fx\n"
        "from alexnetc.backends.kernels import library\n"
        "assert library.REGISTERED\n"
        "f = lambda x: library._fwd(x, 5, 1e-4, 0.75, 2.0, 3, 2, 0, 1, True)\n"
        "gm = make_fx(f, tracing_mode='symbolic')(torch.randn(4, 8, 13, 13))\n"
        "assert 'triton_kernel_wrapper' in gm.code, gm.code\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("winner", [{"lrn_pool_rows": 1.0, "lrn_pool": 2.0,
                                     "lrn_pool_bwd": 1.0, "lrn_pool_bwd_rows": 2.0},
                                    {"lrn_pool_rows": 2.0, "lrn_pool": 1.0,
                                     "lrn_pool_bwd": 2.0, "lrn_pool_bwd_rows": 1.0}],
                         ids=["rows-fwd-gather-bwd", "windows-fwd-rows-bwd"])
def test_auto_runs_the_measured_variants(device: str, winner: dict[str, float],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """"auto" times both forwards and both backwards once per signature, then runs the
    faster ones; the result is the paper's formula either way."""
    monkeypatch.setattr(library, "VARIANT", "auto")
    monkeypatch.setattr(library, "BWD_VARIANT", "auto")
    monkeypatch.setattr(choose, "timer", ranked(winner))
    monkeypatch.setattr(choose, "can_measure", lambda *t: True)
    lrn, pool = LRNParams(5, 0.1, 0.75, 2.0), PoolParams(3, 2)
    x = (2 * torch.randn(2, 6, 11, 11, device=device)).requires_grad_()
    x64 = x.detach().double().requires_grad_()
    want = paper_relu_lrn_pool(x64, lrn, pool)
    y = fused_relu_lrn_pool(x, lrn, pool)
    dy = torch.randn_like(y)
    y.backward(dy)
    want.backward(dy.double())
    assert rel_err(y, want) < 1e-5 and rel_err(x.grad, x64.grad) < 1e-5
    picks = {key[0]: v for key, v in choose.chosen().items()}
    fast_fwd = "rows" if winner["lrn_pool_rows"] < winner["lrn_pool"] else "windows"
    fast_bwd = "gather" if winner["lrn_pool_bwd"] < winner["lrn_pool_bwd_rows"] else "rows"
    assert picks == {"fwd": fast_fwd, "bwd": fast_bwd}
    with torch.no_grad():  # inference (no argmax) is its own signature
        fused_relu_lrn_pool(x, lrn, pool)
    assert len(choose.chosen()) == 3


class Counter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


def test_eager_first_reads_the_mode_inside_a_wrapper() -> None:
    """Under DDP the wrapper's own flag stays True when the training loop calls model.eval()
    on the model inside: the mode is read from the model."""
    model = Counter()
    wrapper = nn.Sequential(model)
    forward = choose.eager_first(wrapper, lambda x: x, mode=model)
    x = torch.zeros(1)
    forward(x)
    forward(x)
    model.eval()  # what loop.evaluate does
    forward(x)
    assert model.calls == 2 and wrapper.training


def test_eager_first_runs_the_first_call_of_each_mode_eagerly() -> None:
    model = Counter()
    compiled_calls: list[torch.Tensor] = []

    def compiled(x: torch.Tensor) -> torch.Tensor:
        compiled_calls.append(x)
        return x

    forward = choose.eager_first(model, compiled)
    x = torch.zeros(1)
    for _ in range(3):
        forward(x)
    assert (model.calls, len(compiled_calls)) == (1, 2)  # training: once eager, then compiled
    model.eval()
    for _ in range(2):
        forward(x)
    assert (model.calls, len(compiled_calls)) == (2, 3)  # evaluation: the same, once
    model.train()
    forward(x)
    assert (model.calls, len(compiled_calls)) == (2, 4)
