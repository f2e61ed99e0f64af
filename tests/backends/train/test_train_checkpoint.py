"""Atomic checkpoints, random-state round trips, and clear errors for bad files."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from alexnetc.backends.train import checkpoint
from alexnetc.backends.train.checkpoint import CheckpointError

SPEC = "network N\ninput 8x8x1\nfc: FC(2)\n"


def state(**extra: Any) -> dict[str, Any]:
    return {"spec_text": SPEC, "spec_sha256": checkpoint.spec_hash(SPEC), "config": {},
            "model": {"w": torch.arange(4.0)}, "optimiser": {}, "schedule": {"lr": 0.1},
            "epoch": 1, "step": 10, "rng": checkpoint.rng_state(), **extra}


def test_save_then_load_round_trips_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "run" / checkpoint.FILE
    checkpoint.save(path, state())
    checkpoint.save(path, state(epoch=2))  # replaces the first
    loaded = checkpoint.load(path, SPEC)
    assert loaded["epoch"] == 2 and torch.equal(loaded["model"]["w"], torch.arange(4.0))
    assert [p.name for p in path.parent.iterdir()] == [checkpoint.FILE]


def test_failed_write_keeps_the_previous_checkpoint(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / checkpoint.FILE
    checkpoint.save(path, state())
    before = path.read_bytes()

    def broken_save(obj: object, f: Any) -> None:
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, state(epoch=5))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.FILE]


def test_rng_state_round_trips_every_stream() -> None:
    saved = checkpoint.rng_state()
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    checkpoint.set_rng_state(saved)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a


def test_rng_state_survives_a_file(tmp_path: Path) -> None:
    checkpoint.save(tmp_path / "c.pt", state())
    loaded = checkpoint.load(tmp_path / "c.pt")
    checkpoint.set_rng_state(loaded["rng"])
    a = float(torch.rand(1)), random.random()
    checkpoint.set_rng_state(loaded["rng"])
    assert (float(torch.rand(1)), random.random()) == a


def test_truncated_file_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / checkpoint.FILE
    checkpoint.save(path, state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"checkpoint\.pt is truncated or corrupt"):
        checkpoint.load(path)


def test_garbage_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / checkpoint.FILE
    path.write_bytes(b"\x00not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        checkpoint.load(path)


def test_other_torch_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="not an alexnetc checkpoint"):
        checkpoint.load(path)


def test_different_spec_is_refused(tmp_path: Path) -> None:
    path = tmp_path / checkpoint.FILE
    checkpoint.save(path, state())
    with pytest.raises(CheckpointError, match="different spec"):
        checkpoint.load(path, SPEC.replace("FC(2)", "FC(3)"))


def test_tampered_spec_text_is_detected(tmp_path: Path) -> None:
    path = tmp_path / checkpoint.FILE
    checkpoint.save(path, state(spec_text=SPEC + "# edited\n"))
    with pytest.raises(CheckpointError, match="does not match its hash"):
        checkpoint.load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        checkpoint.load(tmp_path / checkpoint.FILE)
