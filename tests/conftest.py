"""Shared set-up: the Triton interpreter on CPU-only machines, the `gpu` marker, a helper to
check spec text."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, settings

# Without a GPU the Triton kernels' tests run through Triton's CPU interpreter, which must be
# switched on before anything imports triton: here, before any test module is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from alexnetc.compiler.pipeline import CheckResult, check

# No test times the machine: Hypothesis would fail an example slower than 200 ms, or data
# drawn slowly, which a busy machine does while everything works.
settings.register_profile("alexnetc", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("alexnetc")


@pytest.fixture(autouse=True)
def torch_threads(request: pytest.FixtureRequest) -> Iterator[None]:
    """`pytest.mark.torch_threads(n)`: torch's CPU threads for the test, then as they were.
    Tiny convolutions run fastest on one thread, and do not fight other jobs for cores."""
    marker = request.node.get_closest_marker("torch_threads")
    if marker is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(marker.args[0])
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def check_text():
    def run(text: str, file: str = "t.net") -> CheckResult:
        return check(text, file)

    return run


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on its own 512 KiB file system, to fill up: a real full disk (ENOSPC), not a
    mock. Needs root (mount); skipped where the machine does not allow it."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(folder)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a small file system here (needs root)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests run only where CUDA is present, whatever -m says."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def remount_read_only(small_disk: Path) -> Callable[[], None]:
    """Call it to remount `small_disk` read-only (EROFS): root ignores a folder's mode bits,
    not this. Write what the test needs there first; skipped where remounting is not allowed."""

    def remount() -> None:
        done = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)],
                              capture_output=True)
        if done.returncode != 0:
            pytest.skip("cannot remount a file system read-only here")

    return remount
