"""`alexnetc train` flags obey the rule of the spec setting each overrides, through the one code
path the spec takes (compiler.recipe.setting_problem): a value training cannot hold is a usage
error naming the bound, never an internal error after the run has started."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alexnetc.backends.train.config import WORKERS_PER_CPU, workers_limit
from alexnetc.cli.main import main
from alexnetc.compiler.errors import Severity
from alexnetc.compiler.pipeline import check
from alexnetc.compiler.recipe import FLOAT32_MAX, flag_problem

SPEC = """\
network T
input 8x8x1
train batch=16, epochs=1
augment flip=false, ten_crop=false
fc: FC(10)
"""


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    path = tmp_path / "t.net"
    path.write_text(SPEC)
    return path


@pytest.mark.parametrize("flags, message", [
    (["--lr", "1e300"], "--lr must be within ±3.4028234663852886e+38 (the largest 32-bit "
     "float), got 1e+300"),
    (["--seed", str(2**31)], "--seed is 2,147,483,648, more than the limit of 2,147,483,647"),
    (["--seed", str(-2**31 - 1)], "--seed must be at least -2147483648, got -2,147,483,649"),
    (["--epochs", "9" * 30], "--epochs is 999999… (a 30-digit number), more than the limit"),
    (["--batch-size", str(2**31)], "--batch-size is 2,147,483,648, more than the limit"),
    (["--workers", "9" * 23], "--workers must be at most"),
    (["--lr", "-1"], "--lr must be at least 0, got -1.0"),
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
])
def test_flags_beyond_their_settings_rule_are_usage_errors(
        spec: Path, tmp_path: Path, flags: list[str], message: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(out), "--devices", "cpu", *flags]) == 2
    err = capsys.readouterr().err
    assert f"alexnetc: error: {message}" in err and "internal error" not in err
    assert not out.exists()  # refused before anything was built or written


def test_workers_are_bounded_by_this_machines_cpus(spec: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Each worker is a process: a million would fork until the machine refuses."""
    most = workers_limit()
    assert most >= WORKERS_PER_CPU
    out = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(out), "--workers", str(most + 1)]) == 2
    assert (f"--workers must be at most {most} on this machine ({WORKERS_PER_CPU} per CPU), "
            f"got {most + 1}") in capsys.readouterr().err


def test_the_bounds_themselves_train(spec: Path, tmp_path: Path) -> None:
    """What the spec accepts the flag accepts: ε = 0 included, the largest 32-bit seed."""
    out = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(out), "--devices", "cpu", "--lr", "0",
                 "--seed", str(2**31 - 1), "--max-steps", "1", "--workers", "0"]) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=True)["config"]["seed"] == 2**31 - 1


FLAGS = [("--lr", "lr"), ("--seed", "seed"), ("--epochs", "epochs"), ("--batch-size", "batch")]
NUMBERS = (st.floats(allow_nan=False) | st.sampled_from([FLOAT32_MAX, 3.5e38, 1e300, -0.0])
           | st.integers(-(2**70), 2**70).map(float))
INTEGERS = (st.integers(-(2**70), 2**70)
            | st.sampled_from([0, 1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1]))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FLAGS), st.data())
def test_a_flag_obeys_exactly_its_settings_rule(flag: tuple[str, str],
                                                data: st.DataObject) -> None:
    """Refused as a flag exactly when refused in the spec, with the spec's own words."""
    name, setting = flag
    value = data.draw(NUMBERS if setting == "lr" else INTEGERS)
    written = "1e999" if value == math.inf else "-1e999" if value == -math.inf else repr(value)
    result = check(f"input 8x8x1\ntrain {setting}={written}\ns: ReLU\n", "t.net")
    errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    problem = flag_problem(name, setting, value)
    if not errors:
        assert problem is None
    else:
        (d,) = errors
        assert problem is not None and problem.startswith(name + " ")
        what = d.message.removeprefix(f"'{setting}' ")
        assert problem.startswith(f"{name} {what.split(', got ')[0]}")


def test_a_spec_setting_beyond_float32_is_a_spec_error(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """As the flag is refused, so is the spec's `lr=1e300` (it crashed the first step), and
    `init bias=` beyond float32 (it crashed building the model)."""
    path = tmp_path / "big.net"
    path.write_text("input 8x8x1\ntrain lr=1e300\ninit bias=-4e38\nfc: FC(10)\n")
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "'lr' must be within ±3.4028234663852886e+38 (the largest 32-bit float)" in err
    assert "'bias' must be within ±3.4028234663852886e+38" in err and "got -4e+38" in err
    assert "2 errors" in err
