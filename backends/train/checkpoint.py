"""Checkpoints that survive a crash at any instant and refuse to resume the wrong run.

A checkpoint is written through alexnetc.atomic, so RUN_DIR/checkpoint.pt is always either the
previous good state or the new one, and never a state whose weights have become NaN or
infinite. It carries the spec's text and sha256: resuming with a different spec is refused
instead of silently mixing weights from two networks.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from alexnetc import atomic
from alexnetc.filekind import special_file

if TYPE_CHECKING:
    from alexnetc.compiler.graph import CheckedNetwork

FILE = "checkpoint.pt"
FORMAT = 1
REQUIRED = ("format", "spec_text", "spec_sha256", "config", "model", "optimiser", "schedule",
            "epoch", "step", "rng")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message names the file and says why."""


class NoCheckpoint(CheckpointError):
    """There is no checkpoint file at the path (the commands call that a usage error)."""


class NonFiniteState(CheckpointError):
    """A state not saved because a weight or the optimiser's state is NaN or infinite."""


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


def _float_tensors(x: Any, name: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(dotted name, tensor) of every non-empty floating-point tensor nested in `x`."""
    if isinstance(x, torch.Tensor):
        if x.is_floating_point() and x.numel():
            yield name, x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from _float_tensors(v, f"{name}.{k}")
    elif isinstance(x, list | tuple):
        for i, v in enumerate(x):
            yield from _float_tensors(v, f"{name}.{i}")


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    """One fused reduction per device (the largest |value| of each tensor) and one sync each,
    not a check per tensor: a checkpoint of AlexNet holds 32 of them, 120M values."""
    by_device: dict[torch.device, list[torch.Tensor]] = {}
    for t in tensors:
        by_device.setdefault(t.device, []).append(t)
    return all(bool(torch.stack(torch._foreach_norm(group, float("inf"))).isfinite().all())
               for group in by_device.values())


def finite_state_problem(state: dict[str, Any]) -> str | None:
    """`model.conv1.weight holds inf` when a weight or the optimiser's state is not finite,
    else None: such a checkpoint would only ever predict NaN."""
    named = [nt for key in ("model", "optimiser") for nt in _float_tensors(state.get(key), key)]
    if _all_finite([t for _, t in named]):
        return None
    for name, t in named:  # only on failure: which one, for the message
        if not bool(t.isfinite().all()):
            return f"{name} holds {'NaN' if bool(t.isnan().any()) else 'inf'}"
    return None


def ensure_finite(state: dict[str, Any]) -> None:
    """Raise NonFiniteState unless every weight and optimiser value in `state` is finite."""
    problem = finite_state_problem(state)
    if problem is not None:
        raise NonFiniteState(f"the weights became non-finite ({problem})")


def save(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` atomically, if every weight in it is finite.

    Raises NonFiniteState, or atomic.WriteFailed (the previous file is intact either way)."""
    ensure_finite(state)
    atomic.make_folder(path.parent)
    atomic.write_stream(path, lambda f: torch.save({"format": FORMAT, **state}, f))


def load(path: Path, spec_text: str | None = None) -> dict[str, Any]:
    """Read and validate a checkpoint; with `spec_text`, it must be from that exact spec."""
    if not path.exists():
        raise NoCheckpoint(f"no checkpoint at {path}")
    if path.is_dir() or special_file(path):
        raise CheckpointError(f"{path} is {special_file(path) or 'a folder'}, not a checkpoint "
                              "file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise CheckpointError(f"cannot read {path}: permission denied") from None
    except Exception as e:  # zip, pickle and I/O errors all mean the same thing here
        raise CheckpointError(f"{path} is truncated or corrupt and cannot be read"
                              f"{_why(e)}") from None
    missing = [k for k in REQUIRED if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path} is not an alexnetc checkpoint (fields missing: "
                              f"{', '.join(missing)})")
    if state["format"] != FORMAT:
        raise CheckpointError(f"{path} has checkpoint format {state['format']}; this alexnetc "
                              f"reads format {FORMAT}")
    if spec_hash(state["spec_text"]) != state["spec_sha256"]:
        raise CheckpointError(f"{path} is corrupt: its spec text does not match its hash")
    if spec_text is not None and spec_hash(spec_text) != state["spec_sha256"]:
        raise SpecMismatch(path, state["spec_sha256"], spec_hash(spec_text))
    if (problem := finite_state_problem(state)) is not None:
        raise CheckpointError(f"{path} cannot be used: {problem} (the run had diverged when "
                              "it was saved); train it again with a smaller --lr")
    return state


def _why(e: Exception, longest: int = 160) -> str:
    """` (Type: first sentence of torch's message)`, whole words only; just ` (Type)` when that
    sentence is long (torch follows it with advice that does not apply here)."""
    lines = str(e).strip().splitlines()
    first = lines[0].split(". ")[0].strip().rstrip(".") if lines else ""
    if not first or len(first) > longest:
        return f" ({type(e).__name__})"
    return f" ({type(e).__name__}: {first})"


FEW = 3  # tensors named per kind of misfit; the rest are counted


def ensure_fits(path: Path, state: dict[str, Any], spec: str, net: CheckedNetwork,
                model: torch.nn.Module, resuming: bool = False) -> None:
    """Raise CheckpointError `PATH does not fit SPEC: …` unless `state` holds what `model`, the
    lowering of `net`, needs: each weight by name and shape, a class name per output, pixel
    statistics of the input's channels and, `resuming`, the optimiser's velocities shaped as
    the weights they move (PaperSGD numbers them in model.parameters() order). `eval`,
    `predict` and `--resume` share it: a file written by hand or by another version would
    otherwise fail deep inside torch."""
    c = net.input.c
    stats = {"mean": torch.empty(c), "eigvals": torch.empty(c), "eigvecs": torch.empty(c, c)}
    problems = [*_misfits("weights (model)", "", state.get("model"), model.state_dict()),
                *_class_problems(state.get("classes"), net.output.c),
                *_misfits("pixel statistics (stats)", "stats.", state.get("stats"), stats)]
    if resuming:
        weights = {f"{i}.velocity": w for i, w in enumerate(model.parameters())}
        problems += _misfits("optimiser velocities (optimiser)", "optimiser.state.",
                             _velocities(state["optimiser"]), weights, partial=True)
    if problems:
        raise CheckpointError(f"{path} does not fit {spec}: {'; '.join(problems)}")


def _velocities(optimiser: Any) -> Any:
    """PaperSGD's state_dict as {`3.velocity`: tensor}; anything else as it is, to be refused."""
    moments = optimiser.get("state") if isinstance(optimiser, dict) else optimiser
    if not isinstance(moments, dict):
        return moments
    return {f"{i}.velocity": m.get("velocity") if isinstance(m, dict) else m
            for i, m in moments.items()}


def _misfits(field: str, prefix: str, found: Any, expected: Mapping[str, torch.Tensor],
             partial: bool = False) -> list[str]:
    """Why the tensors `found` cannot stand in for `expected`: names missing (unless
    `partial`: a weight never stepped has no velocity), names unexpected, other shapes."""
    if not isinstance(found, dict):
        return [f"its {field} are {'missing' if found is None else 'not a table of tensors'}"]
    missing = [] if partial else [prefix + k for k in expected if k not in found]
    unexpected = [prefix + str(k) for k in found if k not in expected]
    shapes = [_misshapen(prefix + k, found[k], t) for k, t in expected.items()
              if k in found and (not isinstance(found[k], torch.Tensor)
                                 or found[k].shape != t.shape)]
    named = (_few("missing ", ", ", missing), _few("unexpected ", ", ", unexpected),
             _few("", "; ", shapes))
    return [n for n in named if n]


def _few(label: str, joiner: str, items: list[str]) -> str:
    """`missing a, b, c and 4 more`, or "" when there is nothing to say."""
    if not items:
        return ""
    more = f" and {len(items) - FEW} more" if len(items) > FEW else ""
    return label + joiner.join(items[:FEW]) + more


def _misshapen(name: str, found: Any, want: torch.Tensor) -> str:
    """`conv1.weight has shape 3, not 96x3x11x11`."""
    if not isinstance(found, torch.Tensor):
        return f"{name} is a {type(found).__name__}, not a {_shape(want)} tensor"
    return f"{name} has shape {_shape(found)}, not {_shape(want)}"


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "()"


def _class_problems(classes: Any, outputs: int) -> list[str]:
    if classes is None:
        return ["its class names (classes) are missing"]
    if not isinstance(classes, list | tuple) or not all(isinstance(c, str) for c in classes):
        return ["its class names (classes) are not a list of names"]
    if len(classes) != outputs:
        return [f"it names {len(classes)} classes for the spec's {outputs} outputs"]
    return []


@contextmanager
def applying(path: Path) -> Iterator[None]:
    """A field of the wrong type or form, met while a checkpoint's state is applied, as a
    CheckpointError naming the file (ensure_fits checks the tensors; this, everything else)."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise  # the machine's, not the file's
    except KeyError as e:
        raise CheckpointError(f"{path} cannot be used: it has no {e.args[0]!r} field") from None
    except (TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"{path} cannot be used: a field is malformed{_why(e)}") from None
