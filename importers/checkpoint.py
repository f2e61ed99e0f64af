"""A source's trained weights as an alexnetc run directory (`alexnetc import … --weights
RUN_DIR`), whatever the format they come from.

An importer keys its weights by the stage and op index the draft gave them; `lower` builds the
imported spec's module, `Lowered.slots` says which of its whole-layer tensors an op holds (by
the name they have in the op's own PyTorch module: `weight`, `running_mean`), the importer
fills them one by one, straight into the module's tower shards (`Lowered.fill`, or in place
`Lowered.claim`), so that a large model's weights are in memory once, and `Lowered.save`
writes the checkpoint `alexnetc train` would have written at epoch 0, which `eval`,
`predict`, `compile --weights` and `train --resume` read. torch is imported only here, when
weights are written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.recipe import Recipe
from alexnetc.importers.draft import Draft


@dataclass
class Lowered:
    """The imported spec as a module, with its whole-layer tensors to fill."""

    text: str
    net: CheckedNetwork
    recipe: Recipe
    model: Any  # the lowered nn.Module
    # canonical name → a tensor of its shape and dtype on the meta device (no values), and the
    # layer (`Sharded`) that holds it, with its name there
    like: dict[str, Any]
    owners: dict[str, tuple[Any, str]]
    prefixes: dict[tuple[str, int], str]  # (flat stage, op index) → its tensors' name prefix
    filled: set[str] = field(default_factory=set)

    def slots(self, stage: str, index: int) -> dict[str, str]:
        """Op `index` of `stage`'s tensors: their name in the op's own module → their
        canonical name (empty for an op that holds none, or one the spec does not have)."""
        prefix = self.prefixes.get((stage, index))
        if prefix is None:
            return {}
        return {k[len(prefix):]: k for k in self.like if k.startswith(prefix)}

    def fill(self, key: str, value: Any) -> None:
        """Tensor `key` (canonical) given `value`, of its shape in any dtype, copied into the
        module's shards."""
        layer, name = self.owners[key]
        layer.load_whole_tensors({name: value}, key[:-len(name)])
        self.filled.add(key)

    def claim(self, key: str) -> Any | None:
        """The module's own tensor `key`, for the caller to fill in place, where one shard
        holds it whole (a layer of one tower): a source too large to hold twice is read
        into it piece by piece. None where towers split it (`fill` takes it whole)."""
        layer, name = self.owners[key]
        own = getattr(layer.towers[0], name) if len(layer.towers) == 1 else None
        if own is None or own.shape != self.like[key].shape:
            return None
        self.filled.add(key)
        return own.detach()  # shares the layer's memory

    def unfilled(self) -> list[str]:
        """The floating-point tensors neither `fill` nor `claim` gave a value (a counter is
        none), sorted."""
        return sorted(k for k, t in self.like.items()
                      if t.is_floating_point() and k not in self.filled)

    def save(self, path: Path, target: str) -> Path:
        """The filled module as the checkpoint at `path`; `target` is what was imported (the
        checkpoint's config names it as a training run names its spec)."""
        from alexnetc.backends.train import checkpoint
        from alexnetc.cli.common import run_errors

        with run_errors():
            checkpoint.save(path, _checkpoint(self, target, path))
        return path


def lower(draft: Draft, path: Path) -> Lowered | None:
    """The draft's spec built as `alexnetc train` builds it (CPU, unfused), its tensors as
    initialised. None when the spec does not check (the command reports why)."""
    from alexnetc.backends.lowering import StageModule, build_module
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
    return Lowered(text, net, result.recipe, model, *_whole_tensors(model), prefixes)


def _whole_tensors(model: Any) -> tuple[dict[str, Any], dict[str, tuple[Any, str]]]:
    """Each whole-layer tensor by canonical name: its shape and dtype (on the meta device,
    with no values), and the layer that holds it, with its name there."""
    from alexnetc.backends.lowering import whole_layers

    like: dict[str, Any] = {}
    owners: dict[str, tuple[Any, str]] = {}
    for name, layer in whole_layers(model).items():
        for key, tensor in layer.whole_tensors(device="meta").items():
            like[f"{name}.{key}"] = tensor
            owners[f"{name}.{key}"] = (layer, key)
    return like, owners


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
