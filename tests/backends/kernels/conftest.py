"""The kernels' tests run twice: under Triton's CPU interpreter, and on CUDA (`gpu` marker)."""

from __future__ import annotations

import pytest
import torch

from alexnetc.backends.kernels import kernels_available


@pytest.fixture(
    params=[pytest.param("cpu", id="interp"), pytest.param("cuda", marks=pytest.mark.gpu)]
)
def device(request: pytest.FixtureRequest) -> str:
    dev = request.param
    if dev == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not kernels_available(dev):
        pytest.skip(f"Triton kernels unavailable on {dev} (interpreter off or triton missing)")
    return dev
