"""A source's trained weights as an alexnetc run directory (`alexnetc import … --weights
RUN_DIR`), whatever the format they come from.

An importer keys its weights by the stage and op index the draft gave them; `lower` builds the
imported spec's module, `Lowered.slots` says which of its whole-layer tensors an op holds (by
the name they have in the op's own PyTorch module: `weight`, `running_mean`), the importer
fills them in `Lowered.state`, and `Lowered.save` writes the checkpoint `alexnetc train` would
have written at epoch 0, which `eval`, `predict`, `compile --weights` and `train --resume` read.
torch is imported only here, when weights are written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.recipe import Recipe
from alexnetc.importers.draft import Draft


@dataclass
class Lowered:
    """The imported spec as a module, with its whole-layer tensors (`state`) to fill."""

    text: str
    net: CheckedNetwork
    recipe: Recipe
    model: Any  # the lowered nn.Module
    state: dict[str, Any]  # canonical name → tensor, all towers' shards joined
    prefixes: dict[tuple[str, int], str]  # (flat stage, op index) → its tensors' name prefix

    def slots(self, stage: str, index: int) -> dict[str, str]:
        """Op `index` of `stage`'s tensors: their name in the op's own module → their
        canonical name (empty for an op that holds none, or one the spec does not have)."""
        prefix = self.prefixes.get((stage, index))
        if prefix is None:
            return {}
        return {k[len(prefix):]: k for k in self.state if k.startswith(prefix)}

    def save(self, path: Path, target: str) -> Path:
        """The filled tensors as the checkpoint at `path`; `target` is what was imported (the
        checkpoint's config names it as a training run names its spec)."""
        from alexnetc.backends.lowering import load_canonical_state_dict
        from alexnetc.backends.train import checkpoint
        from alexnetc.cli.common import run_errors

        load_canonical_state_dict(self.model, self.state)
        with run_errors():
            checkpoint.save(path, _checkpoint(self, target, path))
        return path


def lower(draft: Draft, path: Path) -> Lowered | None:
    """The draft's spec built as `alexnetc train` builds it (CPU, unfused), its tensors as
    initialised. None when the spec does not check (the command reports why)."""
    from alexnetc.backends.lowering import StageModule, build_module, canonical_state_dict
    from alexnetc.compiler.pipeline import check

    text = draft.text()
    result = check(text, str(path))
    if result.network is None or result.recipe is None:
        return None
    net = result.network
    model = build_module(net, result.recipe, devices=["cpu"], seed=result.recipe.train.seed,
                         fused=False)
    prefixes: dict[tuple[str, int], str] = {}
    for name, layers in net.stages():
        stage = model.get_submodule(name)
        assert isinstance(stage, StageModule), name
        steps = {s.layer: s.name for s in stage.steps}
        for index, layer in enumerate(layers):
            if layer.id in steps:
                prefixes[(name, index)] = f"{name}.{steps[layer.id]}."
    return Lowered(text, net, result.recipe, model, canonical_state_dict(model), prefixes)


def _checkpoint(lowered: Lowered, target: str, path: Path) -> dict[str, Any]:
    """A checkpoint at epoch 0, as `alexnetc train` writes one: the weights, the recipe as
    its config, classes named 0…N−1 (the embedded digits' names), and pixel statistics that
    leave the images as they are (mean 0: the source's own input normalisation is not the
    recipe's to know)."""
    from dataclasses import asdict

    import torch

    from alexnetc.backends.train import checkpoint
    from alexnetc.backends.train.augment import PixelStats
    from alexnetc.backends.train.config import TrainConfig
    from alexnetc.backends.train.optim import PaperSGD, PlateauSchedule
    from alexnetc.backends.train.run import Totals

    net, model = lowered.net, lowered.model
    cfg = TrainConfig.from_recipe(lowered.recipe, target, out=str(path.parent))
    optimiser = PaperSGD(model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    schedule = PlateauSchedule(optimiser, cfg.lr, cfg.lr_drop, cfg.patience, cfg.min_lr)
    c = net.input.c
    stats = PixelStats(torch.zeros(c), torch.zeros(c), torch.eye(c))
    return {
        "spec_text": lowered.text,
        "spec_sha256": checkpoint.spec_hash(lowered.text),
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
