"""Shared fixtures: the repository's specs, and a helper to check spec text."""

from __future__ import annotations

import pytest

from alexnetc.compiler.pipeline import CheckResult, check


@pytest.fixture
def check_text():
    def run(text: str, file: str = "t.net") -> CheckResult:
        return check(text, file)

    return run


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests run only where CUDA is present, whatever -m says."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
