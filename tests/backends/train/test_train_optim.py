"""The paper's update rule, and exactly how it relates to torch.optim.SGD."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from alexnetc.backends.train.optim import PaperSGD, PlateauSchedule

M, WD = 0.9, 0.0005


def quadratic_grad(w: torch.Tensor) -> torch.Tensor:
    """∂/∂w of ½·Σ a·w² with a fixed per-coordinate curvature a."""
    a = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    return a * w


def run(opt_cls: Any, lrs: list[float]) -> torch.Tensor:
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    opt = opt_cls([w], lr=lrs[0], momentum=M, weight_decay=WD)
    path = []
    for lr in lrs:
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad()
        w.grad = quadratic_grad(w.detach())
        opt.step()
        path.append(w.detach().clone())
    return torch.stack(path)  # steps x 3


def by_hand(lrs: list[float]) -> torch.Tensor:
    """v ← m·v − wd·ε·w − ε·g;  w ← w + v, written out."""
    w = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    v = torch.zeros_like(w)
    path = []
    for lr in lrs:
        v = M * v - WD * lr * w - lr * quadratic_grad(w)
        w = w + v
        path.append(w.clone())
    return torch.stack(path)


def test_update_rule_is_the_papers_equation() -> None:
    lrs = [0.1] * 5 + [0.01] * 5
    torch.testing.assert_close(run(PaperSGD, lrs), by_hand(lrs), rtol=0, atol=1e-15)


def test_same_trajectory_as_sgd_while_lr_is_constant() -> None:
    lrs = [0.05] * 30
    ours, sgd = run(PaperSGD, lrs), run(torch.optim.SGD, lrs)
    torch.testing.assert_close(ours, sgd, rtol=1e-12, atol=1e-14)


def test_differs_from_sgd_after_an_lr_drop() -> None:
    """SGD rescales its stored momentum by the new ε at once; the paper's velocity does not."""
    lrs = [0.05] * 10 + [0.005] * 10
    ours, sgd = run(PaperSGD, lrs), run(torch.optim.SGD, lrs)
    torch.testing.assert_close(ours[:10], sgd[:10], rtol=1e-12, atol=1e-14)
    # first step at the new ε: ours keeps v (built with ε=0.05), SGD's v' is multiplied by 0.005
    assert not torch.allclose(ours[10], sgd[10], rtol=1e-6, atol=1e-9)
    w9 = ours[9]
    v_ours = ours[9] - ours[8]  # velocity after step 10, in weight units
    expected_ours = w9 + M * v_ours - WD * 0.005 * w9 - 0.005 * quadratic_grad(w9)
    expected_sgd = w9 + M * v_ours * (0.005 / 0.05) - WD * 0.005 * w9 - 0.005 * quadratic_grad(w9)
    torch.testing.assert_close(ours[10], expected_ours, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(sgd[10], expected_sgd, rtol=1e-12, atol=1e-14)


def test_optimiser_state_round_trips() -> None:
    w = torch.nn.Parameter(torch.ones(3))
    opt = PaperSGD([w], lr=0.1)
    w.grad = torch.ones(3)
    opt.step()
    again = PaperSGD([w], lr=0.1)
    again.load_state_dict(opt.state_dict())
    assert torch.equal(again.state[w]["velocity"], opt.state[w]["velocity"])


def test_rejects_negative_settings() -> None:
    with pytest.raises(ValueError):
        PaperSGD([torch.nn.Parameter(torch.ones(1))], lr=-1.0)


def test_plateau_divides_lr_when_validation_error_stops_improving() -> None:
    opt = PaperSGD([torch.nn.Parameter(torch.ones(1))], lr=0.01)
    sched = PlateauSchedule(opt, 0.01, drop=0.1, patience=2, min_lr=1e-4)
    drops = [sched.step(e) for e in (0.5, 0.4, 0.4, 0.45, 0.3, 0.31, 0.32, 0.33, 0.34)]
    assert drops == [False, False, False, True, False, False, True, False, False]
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert sched.lr == pytest.approx(1e-4)  # min_lr: no drop to 1e-5
    restored = PlateauSchedule(opt, 0.5, 0.1, 2, 1e-4)
    restored.load_state_dict(sched.state_dict())
    assert restored.state_dict() == sched.state_dict()


def test_plateau_never_drops_on_a_nan_error() -> None:
    """A NaN error (no image evaluated) says nothing about progress: no drop, no stale epoch."""
    opt = PaperSGD([torch.nn.Parameter(torch.ones(1))], lr=0.01)
    sched = PlateauSchedule(opt, 0.01, drop=0.1, patience=1, min_lr=1e-6)
    assert [sched.step(e) for e in (0.5, math.nan, math.nan, 0.4)] == [False] * 4
    assert sched.lr == 0.01 and sched.stale == 0 and sched.best == 0.4


def test_a_decay_step_beyond_float32_blows_up_the_weights_not_the_step() -> None:
    """ε and weight_decay each within float32 (the spec's rule), their product not: the step
    saturates and the weights blow up, which the run reports as divergence, instead of torch
    refusing the step as an internal error."""
    w = torch.nn.Parameter(torch.ones(3))
    opt = PaperSGD([w], lr=1e30, momentum=0.9, weight_decay=1e30)
    w.grad = torch.ones(3)
    opt.step()
    assert bool((w.abs() > 1e38).all())
