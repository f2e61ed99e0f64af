"""Checkpoints that survive a crash at any instant and refuse to resume the wrong run.

A checkpoint is written to a temporary file in the run folder, fsynced, renamed over the old
one (atomic on POSIX) and the folder fsynced, so RUN_DIR/checkpoint.pt is always either the
previous good state or the new one. It carries the spec's text and sha256: resuming with a
different spec is refused instead of silently mixing weights from two networks.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FILE = "checkpoint.pt"
FORMAT = 1
REQUIRED = ("format", "spec_text", "spec_sha256", "config", "model", "optimiser", "schedule",
            "epoch", "step", "rng")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file and says why."""


class NoCheckpoint(CheckpointError):
    """There is no checkpoint file at the path (the commands call that a usage error)."""


class SpecMismatch(CheckpointError):
    """A checkpoint of another spec than the one given. The message's advice is for
    `train --resume`; another command words its own from `path`, `stored` and `given`."""

    def __init__(self, path: Path, stored: str, given: str) -> None:
        self.path, self.stored, self.given = path, stored, given  # sha256 hex digests
        super().__init__(
            f"{path} was written for a different spec (sha256 {stored[:12]}…, this spec is "
            f"{given[:12]}…); resume with the spec it was trained from, or train into a new "
            "--out folder")


def spec_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def rng_state() -> dict[str, Any]:
    """Every global random stream a run touches (dropout draws from torch's)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos),
                  int(has_gauss), float(gauss)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_as_tuples(state["python"]))
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(x: Any) -> Any:
    """random.setstate wants tuples; a round trip through the unpickler may give lists."""
    return tuple(_as_tuples(i) for i in x) if isinstance(x, list | tuple) else x


def save(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically: temp file in the same folder, fsync, rename, fsync."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: Path, spec_text: str | None = None) -> dict[str, Any]:
    """Read and validate a checkpoint; with `spec_text`, it must be from that exact spec."""
    if not path.exists():
        raise NoCheckpoint(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # zip, pickle and I/O errors all mean the same thing here
        raise CheckpointError(f"{path} is truncated or corrupt and cannot be read"
                              f"{_why(e)}") from None
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED):
        raise CheckpointError(f"{path} is not an alexnetc checkpoint (fields missing)")
    if state["format"] != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {state['format']}; this alexnetc "
                              f"reads format {FORMAT}")
    if spec_hash(state["spec_text"]) != state["spec_sha256"]:
        raise CheckpointError(f"{path} is corrupt: its spec text does not match its hash")
    if spec_text is not None and spec_hash(spec_text) != state["spec_sha256"]:
        raise SpecMismatch(path, state["spec_sha256"], spec_hash(spec_text))
    return state


def _why(e: Exception, longest: int = 160) -> str:
    """` (Type: first sentence of torch's message)`, whole words only; just ` (Type)` when that
    sentence is long (torch follows it with advice that does not apply here)."""
    lines = str(e).strip().splitlines()
    first = lines[0].split(". ")[0].strip().rstrip(".") if lines else ""
    if not first or len(first) > longest:
        return f" ({type(e).__name__})"
    return f" ({type(e).__name__}: {first})"
