"""Which kernel variant each fused call runs: measured once per call signature, on the GPU at
hand, like cuDNN's benchmark mode.

Two forwards (rows, windows) and two backwards (gather, rows) compute the same thing; which is
faster depends on the card, the shape (conv1's 55x55 maps or conv2's 27x27), the dtype and
whether the argmax is written.  A fixed rule measured on one card and one shape cannot know,
so the first call of each signature times every variant (a few milliseconds) and keeps the
fastest for the life of the process.

What cannot be timed gets the variant's rule-of-thumb default and is not remembered: the CPU
interpreter, tensors being traced by torch.compile (fake tensors; with symbolic sizes, as after
a recompile for another batch size, not even a remembered choice applies), a CUDA graph being
captured.  torch.compile therefore bakes in what an earlier eager call chose for the same
sizes: `eager_first` runs a module's first call in each mode (training, evaluation) eagerly,
so a compiled model uses measured choices too.

Choices can differ between processes (timing noise on near-ties), so GPU runs are not bit-
reproducible across processes in this mode, as under cudnn.benchmark; force a variant with
ALEXNETC_LRN_KERNEL / ALEXNETC_LRN_BWD for that.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from . import lrn_pool

Variants = Mapping[str, Callable[[], object]]
Timer = Callable[[Callable[[], object], torch.device], float]
Key = tuple[Hashable, ...]  # what `signature` gives: the op's name first

_chosen: dict[Key, str] = {}


def _time_cuda(fn: Callable[[], object], device: torch.device) -> float:
    """Median ms of a few runs on ``device``, with CUDA events: no cache-flush buffer (as
    triton's do_bench allocates), so timing needs no memory beyond the call's own."""
    with torch.cuda.device(device):
        for _ in range(2):  # warm-up: the variant's own autotuning and compilation
            fn()
        times = []
        for _ in range(7):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
    return statistics.median(times)


# How variants are timed (tests replace it: the interpreter's timings mean nothing).
timer: Timer = _time_cuda


def signature(kind: str, x: Tensor, *params: Hashable) -> Key | None:
    """What a choice is remembered for: the op, the input's shape, strides, dtype and device,
    and the op's parameters (including whether the argmax is written).  None for symbolic
    sizes (a dynamic-shape trace): they name no one call, and cannot be hashed."""
    shape, stride = tuple(x.shape), tuple(x.stride())
    if not all(type(v) is int for v in (*shape, *stride)):
        return None
    return (kind, shape, stride, x.dtype, x.device, *params)


def can_measure(*tensors: Tensor) -> bool:
    """Whether timing these tensors' kernels now means anything: real CUDA tensors, compiled
    kernels, and no torch.compile trace or CUDA graph capture in progress."""
    return (
        all(type(t) is torch.Tensor and t.is_cuda for t in tensors)  # not FakeTensor & co.
        and not lrn_pool.INTERPRET
        and not torch.compiler.is_compiling()
        and not torch.cuda.is_current_stream_capturing()
    )


def choose(key: Key | None, default: str, tensors: tuple[Tensor, ...],
           variants: Callable[[], Variants]) -> str:
    """The variant to run for ``key``: remembered, else timed now when ``tensors`` can be
    timed, else ``default``.  ``variants`` builds the launchers only on a miss; timing runs
    each a few times, writing the same outputs the chosen one then writes again."""
    if key is None:
        return default
    hit = _chosen.get(key)
    if hit is not None:
        return hit
    if not can_measure(*tensors):
        return default
    runs = variants()
    times = {name: timer(run, tensors[0].device) for name, run in runs.items()}
    best = min(times, key=lambda name: times[name])
    _chosen[key] = best
    return best


def chosen() -> dict[Key, str]:
    """A copy of the choices made so far (for benchmarks and tests)."""
    return dict(_chosen)


def forget() -> None:
    """Drop every choice (tests; a benchmark that changes the variants' code)."""
    _chosen.clear()


def eager_first(module: nn.Module, compiled: Callable[..., Any],
                mode: nn.Module | None = None) -> Callable[..., Any]:
    """``compiled`` (``torch.compile(module)``), except that the first call in each of training
    and evaluation mode runs ``module`` eagerly, so its fused calls are timed (see the module
    docstring) before torch.compile traces them and bakes its choices in.  The mode is read
    from ``mode`` (default ``module``): the model inside a DDP wrapper, whose own flag
    ``model.eval()`` does not change."""
    flag = module if mode is None else mode
    seen: set[bool] = set()

    def forward(*args: Any, **kwargs: Any) -> Any:
        if flag.training not in seen:
            seen.add(flag.training)
            return module(*args, **kwargs)
        return compiled(*args, **kwargs)

    return forward
