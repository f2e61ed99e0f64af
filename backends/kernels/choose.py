"""Which kernel variant each fused call runs: measured once per call signature, on the GPU at
hand, like cuDNN's benchmark mode.

Two forwards (rows, windows) and two backwards (gather, rows) compute the same thing; which is
faster depends on the card, the shape (conv1's 55x55 maps or conv2's 27x27), the dtype and
whether the argmax is written.  A fixed rule measured on one card and one shape cannot know,
so the first call of each signature times every variant (triton.testing.do_bench, a few
milliseconds) and keeps the fastest for the life of the process.

What cannot be timed gets the variant's rule-of-thumb default and is not remembered: the CPU
interpreter, tensors being traced by torch.compile (fake tensors), a CUDA graph being captured.
torch.compile therefore bakes in whatever an earlier eager call chose: `eager_first` runs a
module's first call in each mode (training, evaluation) eagerly, so a compiled model uses
measured choices too.

Choices can differ between processes (timing noise on near-ties), so GPU runs are not bit-
reproducible across processes in this mode, as under cudnn.benchmark; force a variant with
ALEXNETC_LRN_KERNEL / ALEXNETC_LRN_BWD for that.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from . import lrn_pool

Timer = Callable[[Callable[[], object]], float]

_chosen: dict[Hashable, str] = {}


def _do_bench(fn: Callable[[], object]) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=5, rep=20, return_mode="median"))


# How variants are timed (tests replace it: the interpreter's timings mean nothing).
timer: Timer = _do_bench


def signature(kind: str, x: Tensor, *params: Hashable) -> tuple[Hashable, ...]:
    """What a choice is remembered for: the op, the input's shape, strides, dtype and device,
    and the op's parameters (including whether the argmax is written)."""
    return (kind, tuple(x.shape), tuple(x.stride()), x.dtype, x.device, *params)


def can_measure(x: Tensor) -> bool:
    """Whether timing ``x``'s kernels now means anything: a real CUDA tensor, compiled kernels,
    and no torch.compile trace or CUDA graph capture in progress."""
    return (
        type(x) is torch.Tensor  # FakeTensor, FunctionalTensor, … are subclasses
        and x.is_cuda
        and not lrn_pool.INTERPRET
        and not torch.compiler.is_compiling()
        and not torch.cuda.is_current_stream_capturing()
    )


def choose(key: Hashable, variants: Mapping[str, Callable[[], object]], default: str,
           measurable: bool) -> str:
    """The variant to run for ``key``: remembered, else timed now (when ``measurable``), else
    ``default``.  Timing runs each variant's launcher a few times, writing the same outputs the
    chosen one then writes again."""
    if key in _chosen:
        return _chosen[key]
    if not measurable:
        return default
    times = {name: timer(run) for name, run in variants.items()}
    best = min(times, key=lambda name: times[name])
    _chosen[key] = best
    return best


def chosen() -> dict[Hashable, str]:
    """A copy of the choices made so far (for benchmarks and tests)."""
    return dict(_chosen)


def forget() -> None:
    """Drop every choice (tests; a benchmark that changes the variants' code)."""
    _chosen.clear()


def eager_first(module: nn.Module, compiled: Callable[..., Any]) -> Callable[..., Any]:
    """``compiled`` (``torch.compile(module)``), except that the first call in each of training
    and evaluation mode runs ``module`` eagerly, so its fused calls are timed (see the module
    docstring) before torch.compile traces them and bakes its choices in."""
    seen: set[bool] = set()

    def forward(*args: Any, **kwargs: Any) -> Any:
        if module.training not in seen:
            seen.add(module.training)
            return module(*args, **kwargs)
        return compiled(*args, **kwargs)

    return forward
