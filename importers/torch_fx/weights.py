"""The source module's weights as an alexnetc run directory (`--weights RUN_DIR`), keyed
by the stages and ops the draft gave them, so the imported spec starts from them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alexnetc.importers.draft import Draft


def write_weights(draft: Draft, sources: dict[str, dict[int, Any]], path: Path,
                   target: str) -> Path | None:
    """The module's weights as an `alexnetc train` checkpoint of the imported spec, which
    `eval`, `predict`, `compile --weights` and `train --resume` read. None when the spec does
    not check (the command reports why)."""
    import torch

    from alexnetc.backends.lowering import (
        StageModule,
        build_module,
        canonical_state_dict,
        load_canonical_state_dict,
    )
    from alexnetc.cli.common import run_errors
    from alexnetc.compiler.pipeline import check

    text = draft.text()
    result = check(text, str(path))
    if result.network is None or result.recipe is None:
        return None
    net = result.network
    model = build_module(net, result.recipe, devices=["cpu"], seed=result.recipe.train.seed,
                         fused=False)
    state = canonical_state_dict(model)
    with torch.no_grad():
        for name, layers in net.stages():
            stage = model.get_submodule(name)
            assert isinstance(stage, StageModule), name
            steps = {s.layer: s.name for s in stage.steps}
            for index, mod in sources.get(name, {}).items():
                prefix = f"{name}.{steps[layers[index].id]}."
                own = mod.state_dict()
                for key in [k for k in state if k.startswith(prefix)]:
                    state[key] = _fitted(own[key[len(prefix):]], state[key])
    load_canonical_state_dict(model, state)
    with run_errors():
        from alexnetc.backends.train import checkpoint

        checkpoint.save(path, _checkpoint(text, net, result.recipe, model, target, path))
    return path


def _fitted(source: Any, like: Any) -> Any:
    """A source tensor in the shape of the lowered layer's (a PReLU's one shared slope
    repeated per channel)."""
    t = source.detach().to(like.dtype)
    return t.expand_as(like).clone() if t.numel() == 1 and like.numel() > 1 else t.clone()


def _checkpoint(text: str, net: Any, recipe: Any, model: Any, target: str,
                path: Path) -> dict[str, Any]:
    """A checkpoint at epoch 0, as `alexnetc train` writes one: the weights, the recipe as
    its config, classes named 0…N−1 (the embedded digits' names), and pixel statistics that
    leave the images as they are (mean 0: the module's own input normalisation is unknown)."""
    from dataclasses import asdict

    import torch

    from alexnetc.backends.train import checkpoint
    from alexnetc.backends.train.augment import PixelStats
    from alexnetc.backends.train.config import TrainConfig
    from alexnetc.backends.train.optim import PaperSGD, PlateauSchedule
    from alexnetc.backends.train.run import Totals

    cfg = TrainConfig.from_recipe(recipe, target, out=str(path.parent))
    optimiser = PaperSGD(model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    schedule = PlateauSchedule(optimiser, cfg.lr, cfg.lr_drop, cfg.patience, cfg.min_lr)
    c = net.input.c
    stats = PixelStats(torch.zeros(c), torch.zeros(c), torch.eye(c))
    return {
        "spec_text": text,
        "spec_sha256": checkpoint.spec_hash(text),
        "config": cfg.as_dict(),
        "classes": [str(i) for i in range(net.output.c)],
        "stats": stats.as_dict(),
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "schedule": schedule.state_dict(),
        "epoch": 0,
        "step": 0,
        "batch_in_epoch": 0,
        "totals": asdict(Totals()),
        "aug_rng": torch.Generator().manual_seed(cfg.seed).get_state(),
        "rng": checkpoint.rng_state(),
    }
