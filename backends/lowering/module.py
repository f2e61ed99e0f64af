"""The checked network as an `nn.Module`: one submodule per stage, towers placed on devices.

Every routing decision (which layout each activation is in, what crosses between towers) was
made once by the checker's towers pass (each layer's `TowerInfo`); the module carries it out,
so forward is a fixed sequence of per-tower ops and moves, with no Python state that
DistributedDataParallel or torch.export could trip over. Each op's module comes from its
entry in `layers.LAYERS`.

A network that branches runs its stages in the order written (each after the stages it
reads), keeping each stage's output until its last reader has run and no longer: a DAG holds
only the activations still to be read. A block instance's stages sit under containers named
as the checker names them (`layer1.0.a`), so module and state_dict names follow the spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import Tensor, nn

from alexnetc.backends.lowering.fused import kernel_available
from alexnetc.backends.lowering.layers import Build, build_chain, build_layer
from alexnetc.backends.lowering.placement import (
    ROUTES,
    Layout,
    RouteFn,
    gather,
    parse_devices,
    resolve_devices,
)
from alexnetc.compiler.errors import SpecError
from alexnetc.compiler.graph import INPUT, CheckedNetwork, chains, reserved_name_error
from alexnetc.compiler.recipe import Recipe


@dataclass(frozen=True)
class Step:
    """One lowered op or fused chain of a stage: how its inputs reach the towers."""

    name: str  # submodule name in the stage
    layer: str  # id of its (first) layer, for the byte accounting
    route: RouteFn | None
    layouts_in: tuple[Layout, ...]  # each input's (a merge reads several)
    single: bool  # runs on tower 0 only (its input is not split over the towers)
    merge: bool  # takes every input of the stage as a list


class StageModule(nn.Module):
    """The ops of one spec stage; takes one tensor per tower (or one, `SINGLE`) for each stage
    it reads, and returns its output the same way."""

    def __init__(self, name: str):
        super().__init__()
        self.stage = name
        self.steps: list[Step] = []
        self.layout = Layout.REPLICATED  # layout of the stage's output

    def add_step(self, step: Step, module: nn.Module, layout_out: Layout) -> None:
        self.add_module(step.name, module)
        self.steps.append(step)
        self.layout = layout_out

    def whole(self, xs: list[Tensor]) -> Tensor:  # per input: N x C x H x W, every tower's maps
        x = xs[0]
        for step in self.steps:
            op: Any = self._modules[step.name]
            x = op.whole(xs) if step.merge else op.whole(x)
        return x

    def forward(self, inputs: list[list[Tensor]], devices: list[torch.device]) -> list[Tensor]:
        xs = inputs[0]  # T x [N x C(/T) x H x W]
        for step in self.steps:
            op: Any = self._modules[step.name]
            if step.merge:
                parts = [x if step.route is None else step.route(x, lay, devices, step.layer)
                         for x, lay in zip(inputs, step.layouts_in, strict=True)]
                xs = ([op([p[0] for p in parts], 0)] if step.single  # [N x C x H x W] on tower 0
                      else [op([p[t] for p in parts], t)  # T x [N x C/T x H x W]
                            for t in range(len(parts[0]))])
                continue
            if step.route is not None:
                xs = step.route(xs, step.layouts_in[0], devices, step.layer)  # T x [N x C(/T) ..]
            xs = ([op(xs[0], 0)] if step.single  # [N x C x H x W] on tower 0
                  else [op(x, t) for t, x in enumerate(xs)])  # T x [N x C/T x H x W]
        return xs


class BlockInstance(nn.Module):
    """Holds the stages of one block instance (or of a stage of several), under the names the
    checker gives them; the network's forward runs them."""


@dataclass(frozen=True)
class Run:
    """One stage in the network's forward, by its module path (so that a copy or a replica of
    the module runs its own stages): what it reads and the outputs to let go after it (those
    it was the last to read)."""

    stage: str
    sources: tuple[str, ...]
    frees: tuple[str, ...]


class AlexnetcModule(nn.Module):
    """A checked network lowered to PyTorch; forward returns logits (no final Softmax)."""

    def __init__(self, net: CheckedNetwork, devices: list[torch.device], merged: bool = False):
        super().__init__()
        self.net = net
        self.merged = merged  # every tower on one device: run each layer whole
        self.stage_names: list[str] = []
        self.final_softmax = False
        for t, d in enumerate(devices):  # where each tower lives; follows .to() (not saved)
            self.register_buffer(f"_tower{t}", torch.zeros(1, device=d), persistent=False)
        self._expect = (net.input.c, net.input.h, net.input.w)
        self._runs: list[Run] = []
        self._output = INPUT
        self._class_vector = net.class_vector  # read once: forward stays free of graph walks

    def add_stage(self, stage: StageModule, sources: tuple[str, ...]) -> None:
        """Place a stage at its path (`conv1`, `layer1.0.a`); it reads `sources`."""
        *outer, name = stage.stage.split(".")
        parent: nn.Module = self
        for part in outer:
            child = parent._modules.get(part)
            if child is None:
                child = BlockInstance()
                parent.add_module(part, child)
            parent = child
        if hasattr(parent, name):  # the checker refuses these names; a last guard
            raise SpecError([reserved_name_error(
                self.net.ast, stage.stage,
                f"stage name '{stage.stage}' clashes with an attribute of torch.nn.Module")],
                self.net.ast.source)
        parent.add_module(name, stage)
        self.stage_names.append(stage.stage)
        self._runs.append(Run(stage.stage, sources, ()))
        self._output = stage.stage

    def _settle(self) -> None:
        """Once every stage is added: what each stage's run lets go of, settled before any
        trace or compile."""
        self._runs = _with_frees(self._runs, self._output)

    @property
    def devices(self) -> list[torch.device]:
        return [getattr(self, f"_tower{t}").device for t in range(self.net.towers)]

    def check_input(self, x: Tensor) -> None:
        """Reject a wrongly shaped input before any computation, naming the expected shape."""
        c, h, w = self._expect
        if x.dim() != 4 or tuple(x.shape[1:]) != self._expect:
            raise ValueError(f"{self.net.name} takes N x {c} x {h} x {w} images (input "
                             f"{self.net.input}), got a tensor of shape {tuple(x.shape)}")

    def forward(self, x: Tensor) -> Tensor:  # N x C x H x W on devices[0]
        self.check_input(x)
        runs = self._runs
        if self.merged:
            out: dict[str, Tensor] = {INPUT: x}
            for run in runs:
                stage: Any = self.get_submodule(run.stage)
                out[run.stage] = stage.whole([out[s] for s in run.sources])
                for name in run.frees:  # N x C' x H' x W' (or N x F) each, read no more
                    del out[name]
            y = out[self._output]  # N x classes (x 1 x 1)
            return y.flatten(1) if self._class_vector else y
        devices = self.devices
        # the image given to every tower: T x [N x C x H x W]
        towers: dict[str, list[Tensor]] = {INPUT: [x.to(d) for d in devices]}
        for run in runs:
            towers[run.stage] = self.get_submodule(run.stage)([towers[s] for s in run.sources],
                                                              devices)
            for name in run.frees:  # T x [N x C/T x H' x W'] or [N x C x H' x W'] each
                del towers[name]
        last = (cast(StageModule, self.get_submodule(self._output)).layout if runs
                else Layout.REPLICATED)
        y = gather(towers[self._output], last, devices, "output")[0]  # N x classes on devices[0]
        return y.flatten(1) if self._class_vector else y

    def predict(self, x: Tensor) -> Tensor:
        """Probabilities: forward then the spec's final Softmax (forward's output if none)."""
        logits = self(x)  # N x classes
        return torch.softmax(logits, dim=1) if self.final_softmax else logits


def _with_frees(runs: list[Run], output: str) -> list[Run]:
    """Each run with the outputs it is the last to read (or, read by none, its own), so
    forward holds an activation only while a later stage still needs it."""
    last_reader: dict[str, int] = {}
    for i, run in enumerate(runs):
        last_reader[run.stage] = i  # read by nothing: let go at once
        for s in run.sources:
            last_reader[s] = i
    frees: dict[int, list[str]] = {}
    for name, i in last_reader.items():
        if name != output:
            frees.setdefault(i, []).append(name)
    return [Run(r.stage, r.sources, tuple(frees.get(i, ()))) for i, r in enumerate(runs)]


def build_module(net: CheckedNetwork, recipe: Recipe | None = None, *,
                 devices: Sequence[str | torch.device] | None = None, seed: int | None = 0,
                 fused: bool | None = None, merge: bool | None = None) -> AlexnetcModule:
    """Lower a checked network; weights are N(0, std) and constant biases as the paper.

    `merge`: when every tower is on one device (None: merge then), run each layer whole —
    the concatenated shards with the spec's groups, LRN and fused kernels tower-aware — which
    computes the same numbers with fewer, larger kernels and no gathers. The parameters and
    state_dict stay per tower either way. False keeps the per-tower path (which counts the
    bytes the paper's towers would exchange).
    `seed` fixes the weights whatever the device map (they are drawn whole on the CPU and
    split over towers); None draws fresh ones. `fused`: None uses the Triton kernel for
    fused chains on CUDA towers when it is installed, True requires it, False never uses it.
    """
    if not isinstance(net, CheckedNetwork):
        raise TypeError("build_module needs a CheckedNetwork from alexnetc.compiler.pipeline "
                        f"(load or check), got {type(net).__name__}")
    towers = net.towers
    devs = parse_devices(None, towers) if devices is None else resolve_devices(devices, towers)
    runs = any(kernel_available(d) for d in set(devs))
    if fused and not runs:
        raise ValueError("fused=True, but the Triton kernels do not run on "
                         f"{', '.join(sorted({str(d) for d in devs}))} (they need CUDA and "
                         "triton)")
    use_kernel = runs if fused is None else fused
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    layers = list(net.layers())
    b = Build(towers, devs, (recipe or Recipe()).init, generator, layers[-1].id)
    one_device = len(set(devs)) == 1
    if merge and not one_device:
        raise ValueError("merge=True needs every tower on one device")
    module = AlexnetcModule(net, devs, merged=one_device if merge is None else merge)
    module.final_softmax = layers[-1].op.final
    sources = {s.name: s.sources for s in net.flat_stages()}
    for name, stage_layers in net.stages():
        stage = StageModule(name)
        used: dict[str, int] = {}
        for group in chains(stage_layers):
            head, placed = group[0], group[0].tower  # a chain runs where its head runs
            op = build_chain(group, use_kernel) if len(group) > 1 else build_layer(head, b)
            base = group[0].fusion.kernel if len(group) > 1 and group[0].fusion \
                else head.op.name.lower()
            used[base] = used.get(base, 0) + 1
            sub = base if used[base] == 1 else f"{base}_{used[base] - 1}"
            stage.add_step(Step(sub, head.id, ROUTES[placed.route],
                           placed.layouts_in or (placed.layout_in,), placed.single,
                           head.op.merge is not None), op, group[-1].tower.layout)
        module.add_stage(stage, sources[name])
    module._settle()
    return module
