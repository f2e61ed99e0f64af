"""`alexnetc check SPEC --batch N --amp bf16 --device-memory SIZE --device cuda|cpu`: the
memory table and the lines under it, JSON and CSV, and the usage errors."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys

import pytest

from alexnetc.cli.main import main

from helpers import ROOT, SPECS

ALEXNET = str(SPECS / "alexnet.net")
PARAMS = 60_965_224


def test_the_papers_question_one_card_and_two(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", ALEXNET, "--batch", "128", "--device-memory", "3GiB"]) == 0
    out = capsys.readouterr().out
    assert "memory per layer, batch 128" in out
    assert "one device:" in out and "2 devices, one tower each:" in out
    assert "batch 128 fits in the device's 3.00 GiB" in out
    assert "batch 128 fits in each device's 3.00 GiB" in out
    assert out.count("the largest batch that fits is") == 2
    assert "not counted: the CUDA context" in out


def test_the_batch_defaults_to_the_recipes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", ALEXNET, "--device-memory", "3GiB"]) == 0
    assert "batch 128 fits" in capsys.readouterr().out


def test_a_budget_too_small_for_one_image(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", ALEXNET, "--batch", "1", "--device-memory", "100MiB"]) == 0
    out = capsys.readouterr().out
    assert "does NOT fit" in out and "no batch fits" in out


def test_json_gives_bytes_per_device_and_layer(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", ALEXNET, "--json", "--batch", "2", "--amp", "bf16",
                 "--device-memory", "3GiB"]) == 0
    memory = json.loads(capsys.readouterr().out)["memory"]
    assert (memory["batch"], memory["precision"], memory["budget"]) == (2, "bf16", 3 * 2**30)
    one, towers = memory["maps"]
    assert one["devices"][0]["weights"] == one["devices"][0]["momentum"] == PARAMS * 4
    assert [d["weights"] for d in towers["devices"]] == [PARAMS * 2] * 2
    assert sum(x["kept"] for x in one["layers"]) == one["devices"][0]["kept"]
    for t, device in enumerate(towers["devices"]):
        assert sum(x["kept_per_device"][t] for x in towers["layers"]) == device["kept"]
    assert one["fits"] is True and one["largest_batch"] > 2
    assert one["devices"][0]["peak"] > one["devices"][0]["inference_peak"]


def test_csv_gains_the_memory_columns(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", ALEXNET, "--csv", "--batch", "2"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert sum(int(r["weight_bytes"]) for r in rows) == PARAMS * 4
    towers = [sum(int(r[f"kept_bytes_tower_{t}"]) for r in rows) for t in (0, 1)]
    assert sum(towers) > sum(int(r["kept_bytes_one_device"]) for r in rows) > 0


def test_without_memory_options_the_table_is_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", ALEXNET]) == 0
    assert "memory" not in capsys.readouterr().out.lower().split("activations:")[0]


@pytest.mark.parametrize(("argv", "part"), [
    (["--device-memory", "3XB"], "is not a memory size"),
    (["--batch", "0"], "is not a batch size"),
    (["--batch", str(2**31)], "is not a batch size"),
    (["--amp", "fp16"], "invalid choice"),
    (["--device", "tpu"], "invalid choice"),
])
def test_usage_errors_exit_2(argv: list[str], part: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["check", ALEXNET, *argv])
    assert e.value.code == 2
    assert part in capsys.readouterr().err


def test_the_memory_plan_never_imports_torch() -> None:
    code = ("import sys; from alexnetc.cli.main import main; rc = main(['check', "
            "'specs/alexnet.net', '--batch', '8', '--device-memory', '3GiB', '--json']); "
            "bad = [m for m in ('torch', 'triton', 'numpy') if m in sys.modules]; "
            "print('IMPORTED', bad, file=sys.stderr); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=60, check=False)
    assert r.returncode == 0, r.stderr
    assert "IMPORTED []" in r.stderr
