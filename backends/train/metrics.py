"""Per-epoch metrics: RUN_DIR/metrics.csv, and TensorBoard when it is installed.

The CSV is the record `alexnetc plot` draws from. It is rewritten whole through alexnetc.atomic
after every epoch rather than appended to: one short row an epoch makes that cheap, and a
crash or a full disk then leaves the previous file, never a half-written last row. A resumed
run first drops rows past the checkpoint's epoch so an epoch that was logged but not
checkpointed is not counted twice.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from alexnetc import atomic

FILE = "metrics.csv"
COLUMNS = ("epoch", "step", "lr", "train_loss", "train_top1_err", "val_loss", "val_top1_err",
           "val_top5_err", "images_per_s", "seconds")


def read(path: Path) -> list[dict[str, float]]:
    """The rows of a metrics.csv as numbers."""
    with path.open(newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(f)]


def _epoch(row: dict[str, str]) -> float:
    """A row's epoch; NaN for a row that is not one (a line an older alexnetc left half
    written), which no resume keeps."""
    try:
        return float(row.get("epoch") or "nan")
    except ValueError:
        return float("nan")


def _rows_until(path: Path, epoch: int) -> tuple[list[dict[str, str]], bool] | None:
    """The rows of `path` up to `epoch`, and whether any were dropped; None without a file."""
    if not path.exists():
        return None
    with path.open(newline="") as f:
        every = list(csv.DictReader(f))
    rows = [r for r in every if _epoch(r) <= epoch]
    return rows, len(rows) < len(every)


class MetricsLog:
    def __init__(self, run_dir: Path, resume_epoch: int | None = None):
        self.path = run_dir / FILE
        old = None if resume_epoch is None else _rows_until(self.path, resume_epoch)
        self.rows: list[dict[str, Any]] = list(old[0]) if old else []
        if old is None or old[1]:  # a new log, or rows past the checkpoint to drop
            atomic.make_folder(run_dir)
            self._write()
        self.tb = _tensorboard(run_dir)

    def _write(self) -> None:
        text = io.StringIO()
        w = csv.DictWriter(text, COLUMNS)
        w.writeheader()
        w.writerows(self.rows)
        atomic.write_text(self.path, text.getvalue())

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append({k: row.get(k, "") for k in COLUMNS})
        try:
            self._write()
        except atomic.WriteFailed:
            self.rows.pop()  # the file still ends at the previous epoch; so does this log
            raise
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
