"""Measured kernel choice (choose.py): what is timed, what is remembered, what compile sees.

Timings under the CPU interpreter mean nothing, so the tests replace the timer with one that
ranks the variants as told, and declare the CPU tensors measurable where the dispatch is the
point.
"""

from __future__ import annotations

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
    kernels_available,
    ops,
)

from test_lrn_reference import paper_relu_lrn_pool, rel_err


@pytest.fixture(autouse=True)
def fresh_choices() -> Iterator[None]:
    choose.forget()
    yield
    choose.forget()


def ranked(order: dict[str, float]) -> Callable[[Callable[[], object]], float]:
    """A timer that reports order[module] for a launcher partial of that module, and runs it."""

    def timer(fn: Callable[[], object]) -> float:
        assert isinstance(fn, partial)
        fn()  # the variant must run (and write its outputs) when timed
        return order[fn.func.__module__.rsplit(".", 1)[-1]]

    return timer


def test_the_fastest_is_chosen_and_remembered() -> None:
    runs: list[str] = []
    variants = {"a": lambda: runs.append("a"), "b": lambda: runs.append("b")}
    times = iter([2.0, 1.0])
    choose.timer = lambda fn: (fn(), next(times))[1]
    try:
        assert choose.choose("k", variants, "a", measurable=True) == "b"
        assert choose.choose("k", variants, "a", measurable=True) == "b"  # not timed again
    finally:
        choose.timer = choose._do_bench
    assert runs == ["a", "b"]
    assert choose.chosen() == {"k": "b"}


def test_what_cannot_be_timed_gets_the_default_and_is_not_remembered() -> None:
    def never() -> None:
        raise AssertionError("timed")

    assert choose.choose("k", {"a": never, "b": never}, "a", measurable=False) == "a"
    assert choose.chosen() == {}


def test_only_real_cuda_tensors_outside_a_trace_are_measurable() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    assert not choose.can_measure(torch.zeros(2))  # the CPU (interpreter or not)
    with FakeTensorMode():
        fake = torch.empty(2, 3)
    assert not choose.can_measure(fake)
    key = choose.signature("fwd", torch.zeros(2, 3, 4, 5).to(memory_format=torch.channels_last),
                           True, 5)
    assert key[1:3] == ((2, 3, 4, 5), (60, 1, 15, 3)) and key[-2:] == (True, 5)


@pytest.mark.skipif(not kernels_available("cpu") and not torch.cuda.is_available(),
                    reason="needs the Triton interpreter or a GPU")
@pytest.mark.parametrize("winner", [{"lrn_pool_rows": 1.0, "lrn_pool": 2.0,
                                     "lrn_pool_bwd": 1.0, "lrn_pool_bwd_rows": 2.0},
                                    {"lrn_pool_rows": 2.0, "lrn_pool": 1.0,
                                     "lrn_pool_bwd": 2.0, "lrn_pool_bwd_rows": 1.0}],
                         ids=["rows-fwd-gather-bwd", "windows-fwd-rows-bwd"])
def test_auto_runs_the_measured_variants(winner: dict[str, float],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """"auto" times both forwards and both backwards once per signature, then runs the
    faster ones; the result is the paper's formula either way."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    monkeypatch.setattr(ops, "VARIANT", "auto")
    monkeypatch.setattr(ops, "BWD_VARIANT", "auto")
    monkeypatch.setattr(choose, "timer", ranked(winner))
    monkeypatch.setattr(choose, "can_measure", lambda x: True)
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
