"""The source module's weights as an alexnetc run directory (`--weights RUN_DIR`), keyed
by the stages and ops the draft gave them, so the imported spec starts from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alexnetc.importers.checkpoint import lower
from alexnetc.importers.draft import Draft


def write_weights(draft: Draft, sources: dict[str, dict[int, Any]], path: Path,
                  target: str) -> Path | None:
    """The module's weights as an `alexnetc train` checkpoint of the imported spec, which
    `eval`, `predict`, `compile --weights` and `train --resume` read. None when the spec does
    not check (the command reports why)."""
    import torch

    lowered = lower(draft, path)
    if lowered is None:
        return None
    with torch.no_grad():
        for stage, ops in sources.items():
            for index, mod in ops.items():
                own = mod.state_dict()
                for name, key in lowered.slots(stage, index).items():
                    lowered.fill(key, _fitted(own[name], lowered.like[key]))
    return lowered.save(path, target)


def _fitted(source: Any, like: Any) -> Any:
    """A source tensor in the shape of the lowered layer's (a PReLU's one shared slope
    repeated per channel); `fill` copies it."""
    t = source.detach()
    return t.expand(like.shape) if t.numel() == 1 and like.numel() > 1 else t
