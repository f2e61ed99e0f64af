"""The shipped small BatchNorm, global-pooling, residual and Inception specs learn the embedded
digits from one command, with their own recipes (no flags but where to write the run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from alexnetc.backends.train import metrics
from alexnetc.cli.main import main
from alexnetc.compiler.pipeline import check_file

from helpers import SPECS

pytestmark = pytest.mark.torch_threads(2)


@pytest.mark.parametrize(("name", "epochs"), [("digits-bn", 6), ("digits-gap", 8),
                                              ("digits-resnet", 8), ("digits-inception", 8)])
def test_small_spec_reaches_97_percent_on_the_digits(name: str, epochs: int,
                                                     tmp_path: Path) -> None:
    spec = SPECS / f"{name}.net"
    result = check_file(spec)
    assert result.network is not None and result.recipe is not None
    assert result.recipe.train.epochs == epochs
    assert main(["train", str(spec), "--out", str(tmp_path / "run"), "--devices", "cpu"]) == 0
    rows = metrics.read(tmp_path / "run" / "metrics.csv")
    assert len(rows) == epochs
    assert rows[-1]["val_top1_err"] <= 0.03  # ≥ 97 % of the 360 held-out digits
