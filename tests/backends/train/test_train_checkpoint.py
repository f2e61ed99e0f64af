"""Atomic checkpoints, random-state round trips, and clear errors for bad files."""

from __future__ import annotations

import os
import random
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from alexnetc.atomic import WriteFailed
from alexnetc.backends.train import checkpoint
from alexnetc.backends.train.checkpoint import CheckpointError

from helpers import fill

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


@pytest.mark.parametrize("where, bad, named", [
    ("model", float("inf"), "model.w holds inf"),
    ("optimiser", float("nan"), "optimiser.state.0.velocity holds NaN"),
])
def test_non_finite_state_is_never_written_over_a_good_checkpoint(
        tmp_path: Path, where: str, bad: float, named: str) -> None:
    path = tmp_path / checkpoint.FILE
    checkpoint.save(path, state())
    before = path.read_bytes()
    poisoned = {"model": {"w": torch.tensor([1.0, bad])}} if where == "model" else {
        "optimiser": {"state": {0: {"velocity": torch.tensor([bad, 0.0])}}, "param_groups": []}}
    assert checkpoint.finite_state_problem(state(**poisoned)) == named
    with pytest.raises(checkpoint.NonFiniteState, match=named):
        checkpoint.save(path, state(epoch=2, **poisoned))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.FILE]


def test_finite_state_has_no_problem() -> None:
    """Integer tensors (step counters, random states) and empty ones are not weights."""
    ok = state(optimiser={"state": {0: {"velocity": torch.zeros(2, dtype=torch.bfloat16),
                                        "step": torch.tensor(7)}}, "param_groups": [{"lr": 0.1}]},
               model={"w": torch.ones(3), "empty": torch.empty(0), "n": torch.tensor([1, 2])})
    assert checkpoint.finite_state_problem(ok) is None


def test_a_non_finite_checkpoint_already_on_disk_is_refused(tmp_path: Path) -> None:
    """One that an older alexnetc wrote (it checked nothing): an error, not NaN predictions."""
    path = tmp_path / checkpoint.FILE
    torch.save({"format": checkpoint.FORMAT,
                **state(model={"conv1.weight": torch.tensor([float("inf")])})}, path)
    with pytest.raises(CheckpointError, match=r"conv1\.weight holds inf"):
        checkpoint.load(path)


def test_checkpoint_mode_is_the_umask_default(tmp_path: Path) -> None:
    """0666 & ~umask like the rest of the run folder, so another user can evaluate the run."""
    umask = os.umask(0)
    os.umask(umask)
    checkpoint.save(tmp_path / checkpoint.FILE, state())
    assert stat.S_IMODE((tmp_path / checkpoint.FILE).stat().st_mode) == 0o666 & ~umask


def test_unreadable_checkpoint_says_permission_denied(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint another user may not read is no corrupt file (root reads anything, so
    torch.load is made to fail as it does for them)."""
    path = tmp_path / checkpoint.FILE
    checkpoint.save(path, state())

    def denied(*_: Any, **__: Any) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(torch, "load", denied)
    with pytest.raises(CheckpointError, match="permission denied") as e:
        checkpoint.load(path)
    assert "corrupt" not in str(e.value)


def test_full_disk_keeps_the_previous_checkpoint(small_disk: Path) -> None:
    path = small_disk / checkpoint.FILE
    checkpoint.save(path, state())
    fill(small_disk)
    with pytest.raises(WriteFailed, match=f"cannot write {path}: the disk is full"):
        checkpoint.save(path, state(epoch=2, model={"w": torch.zeros(100_000)}))
    assert checkpoint.load(path, SPEC)["epoch"] == 1
    assert sorted(p.name for p in small_disk.iterdir()) == [".filler", ".filler-bytes",
                                                            checkpoint.FILE]


@pytest.mark.timeout(60)  # opening a named pipe waits for a writer: it must not be opened
def test_a_checkpoint_that_is_no_regular_file_is_refused_unopened(tmp_path: Path) -> None:
    pipe = tmp_path / "pipe" / checkpoint.FILE
    pipe.parent.mkdir()
    os.mkfifo(pipe)
    with pytest.raises(CheckpointError, match=f"{pipe} is a named pipe, not a checkpoint file"):
        checkpoint.load(pipe)
    folder = tmp_path / checkpoint.FILE
    folder.mkdir()
    with pytest.raises(CheckpointError, match=f"{folder} is a folder, not a checkpoint file"):
        checkpoint.load(folder)


def test_missing_fields_are_named(tmp_path: Path) -> None:
    path = tmp_path / checkpoint.FILE
    torch.save({"format": checkpoint.FORMAT, **{k: v for k, v in state().items()
                                                if k not in ("rng", "schedule")}}, path)
    with pytest.raises(CheckpointError, match=r"not an alexnetc checkpoint \(fields missing: "
                       r"schedule, rng\)"):
        checkpoint.load(path)


def _fit_problem(saved: dict[str, Any], resuming: bool = False) -> str:
    from alexnetc.compiler.pipeline import check

    net = check(SPEC, "n.net").network
    assert net is not None
    model = torch.nn.Linear(64, 2)  # state_dict: weight 2x64, bias 2
    with pytest.raises(CheckpointError) as e:
        checkpoint.ensure_fits(Path("run/checkpoint.pt"), saved, "n.net", net, model, resuming)
    return str(e.value)


def _fitting(**extra: Any) -> dict[str, Any]:
    """A state that fits SPEC lowered as nn.Linear(64, 2), but for `extra`."""
    fits = {"model": {"weight": torch.zeros(2, 64), "bias": torch.zeros(2)},
            "classes": ["a", "b"], "stats": {"mean": torch.zeros(1), "eigvals": torch.zeros(1),
                                             "eigvecs": torch.zeros(1, 1)}}
    return state(**(fits | extra))


def test_what_does_not_fit_is_named_a_few_at_a_time() -> None:
    many = {f"w{i}": torch.zeros(1) for i in range(7)}
    message = _fit_problem(_fitting(model={"bias": torch.zeros(3), **many}))
    assert message == ("run/checkpoint.pt does not fit n.net: missing weight; unexpected w0, "
                       "w1, w2 and 4 more; bias has shape 3, not 2")
    assert _fit_problem(_fitting(model={"weight": [0.0] * 128, "bias": torch.zeros(2)})) == (
        "run/checkpoint.pt does not fit n.net: weight is a list, not a 2x64 tensor")


def test_classes_and_stats_must_fit_the_spec() -> None:
    message = _fit_problem(_fitting(classes=["a", "b", "c"], stats={"mean": torch.zeros(3)}))
    assert message.endswith("it names 3 classes for the spec's 2 outputs; missing "
                            "stats.eigvals, stats.eigvecs; stats.mean has shape 3, not 1")
    assert "its class names (classes) are not a list of names" in _fit_problem(
        _fitting(classes="ab"))


def test_resuming_needs_velocities_shaped_as_their_weights() -> None:
    moments = {"state": {1: {"velocity": torch.zeros(5)}}, "param_groups": []}
    fits = _fitting(optimiser=moments | {"state": {1: {"velocity": torch.zeros(2)}}})
    from alexnetc.compiler.pipeline import check

    net = check(SPEC, "n.net").network
    assert net is not None
    checkpoint.ensure_fits(Path("c.pt"), fits, "n.net", net, torch.nn.Linear(64, 2), True)
    message = _fit_problem(_fitting(optimiser=moments), resuming=True)
    assert message.endswith("optimiser.state.1.velocity has shape 5, not 2")


def test_a_malformed_field_is_the_files_error() -> None:
    path = Path("run/checkpoint.pt")
    fields: dict[str, int] = {}
    with pytest.raises(CheckpointError, match=f"{path} cannot be used: it has no 'totals' "
                       "field"), checkpoint.applying(path):
        fields["totals"]
    with pytest.raises(CheckpointError, match=r"a field is malformed \(TypeError"), \
            checkpoint.applying(path):
        int([])  # type: ignore[call-overload]
