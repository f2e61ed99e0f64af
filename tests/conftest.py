"""Shared set-up: the Triton interpreter on CPU-only machines, the `gpu` marker, a helper to
check spec text."""

from __future__ import annotations

import os

import pytest
import torch

# Without a GPU the Triton kernels' tests run through Triton's CPU interpreter, which must be
# switched on before anything imports triton: here, before any test module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from alexnetc.compiler.pipeline import CheckResult, check


@pytest.fixture
def check_text():
    def run(text: str, file: str = "t.net") -> CheckResult:
        return check(text, file)

    return run


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests run only where CUDA is present, whatever -m says."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
