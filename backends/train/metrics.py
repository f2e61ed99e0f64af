"""Per-epoch metrics: appended to RUN_DIR/metrics.csv, and to TensorBoard when it is installed.

The CSV is the record `alexnetc plot` draws from; a resumed run first drops rows past the
checkpoint's epoch so an epoch that was logged but not checkpointed is not counted twice.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

FILE = "metrics.csv"
COLUMNS = ("epoch", "step", "lr", "train_loss", "train_top1_err", "val_loss", "val_top1_err",
           "val_top5_err", "images_per_s", "seconds")


def read(path: Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv as numbers."""
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(f)]


class MetricsLog:
    def __init__(self, run_dir: Path, resume_epoch: int | None = None):
        self.path = run_dir / FILE
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_epoch is None or not self.path.exists():
            with self.path.open("w", newline="") as f:
                csv.writer(f).writerow(COLUMNS)
        else:
            self._truncate_after(resume_epoch)
        self.tb = _tensorboard(run_dir)

    def _truncate_after(self, epoch: int) -> None:
        with self.path.open(newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(float(r["epoch"])) <= epoch]
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, COLUMNS)
            w.writeheader()
            w.writerows(rows)

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerow({k: row.get(k, "") for k in COLUMNS})
            f.flush()
        if self.tb is not None:
            for k in COLUMNS[2:]:
                if k in row:
                    self.tb.add_scalar(k, row[k], int(row["epoch"]))
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))
