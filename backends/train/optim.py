"""The paper's update rule and learning-rate schedule (section 5).

    v ← m·v − wd·ε·w − ε·∂L/∂w
    w ← w + v

`torch.optim.SGD` keeps v' = m·v' + g + wd·w and steps w ← w − ε·v'. With ε constant the two
are the same trajectory (our v = −ε·v'), but SGD multiplies its whole accumulated momentum by
the *new* ε the moment ε changes, while here the velocity keeps the step sizes it was built
with and the new ε only enters through new gradients — which is what the paper wrote.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor


class PaperSGD(torch.optim.Optimizer):
    """Momentum SGD with weight decay in the paper's form (velocity in weight units)."""

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float,
                 momentum: float = 0.9, weight_decay: float = 0.0005):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError("lr, momentum and weight_decay must be non-negative")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd = group["lr"], group["momentum"], group["weight_decay"]
            # One multi-tensor launch per operation and device (not 4 per parameter), with the
            # same arithmetic per element as the per-tensor form, so results are bit-equal.
            by_device: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
            for w in group["params"]:
                if w.grad is not None:
                    by_device.setdefault((w.device, w.dtype), []).append(w)
            for (_, dtype), ws in by_device.items():
                vs = [self._velocity(w) for w in ws]
                grads = [w.grad for w in ws if w.grad is not None]
                torch._foreach_mul_(vs, m)
                torch._foreach_add_(vs, ws, alpha=_representable(-wd * lr, dtype))
                torch._foreach_add_(vs, grads, alpha=_representable(-lr, dtype))
                torch._foreach_add_(ws, vs)
        return loss

    def _velocity(self, w: Tensor) -> Tensor:
        state = self.state[w]
        if "velocity" not in state:
            state["velocity"] = torch.zeros_like(w, memory_format=torch.preserve_format)
        return state["velocity"]


def _representable(alpha: float, dtype: torch.dtype) -> float:
    """`alpha` within the weights' float range. Torch refuses a multiplier that overflows
    the tensor's type (ε × weight_decay of 1e30 × 1e30, each a valid setting); the step it
    would take blows the weights up all the same, which the run then reports as divergence."""
    top = torch.finfo(dtype).max
    return min(max(alpha, -top), top)


class PlateauSchedule:
    """ε ← ε·drop when the validation error has not improved for `patience` epochs.

    The paper divided by 10 "when the validation error rate stopped improving"; `min_lr`
    stops the drops once ε would fall below it.
    """

    def __init__(self, optimiser: torch.optim.Optimizer, lr: float, drop: float, patience: int,
                 min_lr: float):
        self.optimiser = optimiser
        self.lr = lr
        self.drop = drop
        self.patience = patience
        self.min_lr = min_lr
        self.best = float("inf")
        self.stale = 0
        self._apply()

    def _apply(self) -> None:
        for group in self.optimiser.param_groups:
            group["lr"] = self.lr

    def step(self, val_error: float) -> bool:
        """Record one epoch's validation error; True if ε was dropped. A NaN error (no image
        could be evaluated) says nothing about progress: it neither improves nor counts."""
        if math.isnan(val_error):
            return False
        if val_error < self.best:
            self.best = val_error
            self.stale = 0
            return False
        self.stale += 1
        if self.stale >= self.patience and self.lr * self.drop >= self.min_lr:
            self.lr *= self.drop
            self.stale = 0
            self._apply()
            return True
        return False

    def state_dict(self) -> dict[str, float]:
        return {"lr": self.lr, "best": self.best, "stale": self.stale}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.lr = float(state["lr"])
        self.best = float(state["best"])
        self.stale = int(state["stale"])
        self._apply()
