"""metrics.csv: written whole and atomically, so a full disk or a crash never leaves half a row."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from alexnetc.atomic import WriteFailed
from alexnetc.backends.train import metrics
from alexnetc.backends.train.metrics import MetricsLog

from helpers import fill


def row(epoch: int) -> dict[str, float]:
    return {"epoch": epoch, "step": 10 * epoch, "lr": 0.01, "train_loss": 2.0 / epoch,
            "val_loss": 2.5 / epoch, "val_top1_err": 0.5, "val_top5_err": 0.1}


def test_full_disk_keeps_every_whole_row(small_disk: Path) -> None:
    log = MetricsLog(small_disk)
    log.append(row(1))
    before = (small_disk / metrics.FILE).read_bytes()
    fill(small_disk)
    with pytest.raises(WriteFailed, match=f"cannot write {small_disk / metrics.FILE}: the disk"):
        log.append(row(2))
    assert (small_disk / metrics.FILE).read_bytes() == before
    assert [r["epoch"] for r in metrics.read(small_disk / metrics.FILE)] == [1.0]
    assert not [p for p in small_disk.iterdir() if p.name.startswith(f".{metrics.FILE}")]


def test_resume_drops_rows_past_the_checkpoint_and_any_torn_row(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path)
    for epoch in (1, 2, 3):
        log.append(row(epoch))
    with (tmp_path / metrics.FILE).open("a") as f:
        f.write("4,4")  # what an append cut short by a crash left
    MetricsLog(tmp_path, resume_epoch=2).append(row(3))
    assert [r["epoch"] for r in metrics.read(tmp_path / metrics.FILE)] == [1.0, 2.0, 3.0]
    with (tmp_path / metrics.FILE).open("a") as f:
        f.write("x,y\n")
    MetricsLog(tmp_path, resume_epoch=5)
    assert [r["epoch"] for r in metrics.read(tmp_path / metrics.FILE)] == [1.0, 2.0, 3.0]


def test_resume_with_nothing_to_drop_writes_nothing(
        small_disk: Path, remount_read_only: Callable[[], None]) -> None:
    """So a run that only evaluates, or stops at once, needs no writable disk to start."""
    MetricsLog(small_disk).append(row(1))
    remount_read_only()
    log = MetricsLog(small_disk, resume_epoch=1)
    assert [r["epoch"] for r in log.rows] == ["1"]
