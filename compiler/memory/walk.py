"""The lowered module's forward replayed on buffers instead of tensors.

Each op's output, each copy a route between towers or a cast makes, and each tensor an op
keeps for backward (its registry entry's `saves`) is a `Buffer`; a view shares its buffer, as
a tensor shares its storage, so a ReLU's output kept by the ReLU and by the conv after it is
one buffer. The walk follows backends/lowering/module.py step for step: with every tower on
one device each layer runs whole (tower-aware where it must be, as `whole` does), else each
tower runs its share on its own device with the towers pass's routes between them. The plan
(plan.py) reads the buffers' lifetimes: what is kept for backward, and the peak.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from alexnetc.compiler.graph import INPUT, CheckedNetwork, Layer, chains
from alexnetc.compiler.records import (
    FP32_BYTES,
    DeviceKind,
    Layout,
    Lowered,
    Route,
    Saved,
    Shape,
)

Precision = Literal["fp32", "bf16"]

ITEMSIZE = {"fp32": FP32_BYTES, "bf16": 2, "int64": 8, "int8": 1, "bool": 1}


@dataclass(frozen=True)
class Target:
    """What a step runs on, as far as its memory depends on it.

    `devices`: each tower's device (0, 1, …), each tower running its share there; None: every
    tower on one device, each layer run whole (the lowering's merged mode). `kernels`: fused
    chains run the Triton kernel (None: on CUDA, where the lowering uses it). `replicas`:
    one of several data-parallel replicas, whose gradients live in DDP's buckets all the
    step.
    """

    batch: int = 1
    precision: Precision = "fp32"
    device: DeviceKind = "cuda"
    kernels: bool | None = None
    devices: tuple[int, ...] | None = None
    replicas: bool = False

    @property
    def fused(self) -> bool:
        return self.device == "cuda" if self.kernels is None else self.kernels


@dataclass(eq=False)
class Buffer:
    """One storage: `elements` per image (per step with `per_step`), made at step `created`,
    read last at step `last_read`, kept for backward by the steps in `saved_by`, the first
    time by layer `kept_by`."""

    layer: str
    device: int
    elements: int
    itemsize: int
    created: int
    per_step: bool = False
    grad: bool = False  # backward computes its gradient
    last_read: int = -1
    saved_by: list[int] = field(default_factory=list)
    kept_by: str = ""  # the layer that keeps it first (a fused chain's first layer)


@dataclass(frozen=True)
class View:
    """A tensor as an op sees it: a view of `buf` of `shape` per image."""

    buf: Buffer
    shape: Shape
    dtype: str


@dataclass
class Step:
    """One op (or fused chain) run on one device; `params`: the parameters it holds there;
    `scratch`: bytes per image its backward holds besides the gradients (registry)."""

    index: int
    layer: str
    device: int
    params: int
    scratch: int = 0


@dataclass
class Walk:
    """Every buffer and step of one forward, in order."""

    target: Target
    buffers: list[Buffer] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    output: list[View] = field(default_factory=list)

    @property
    def devices(self) -> int:
        return 1 if self.target.devices is None else max(self.target.devices) + 1


def walk(net: CheckedNetwork, target: Target, training: bool = True) -> Walk:
    """Replay one forward of `net` (training: with what it keeps for backward)."""
    return _Walker(net, target, training).run()


def share(shape: Shape, parts: int) -> Shape:
    """One of `parts` equal channel shares of an activation."""
    return Shape(shape.h, shape.w, shape.c // parts, shape.flat)


class _Walker:
    def __init__(self, net: CheckedNetwork, target: Target, training: bool):
        self.net, self.target, self.training = net, target, training
        self.walk = Walk(target)
        self.whole = target.devices is None
        self.towers = 1 if self.whole else net.towers
        self.device_of = (0,) * self.towers if target.devices is None else target.devices
        self.last = list(net.layers())[-1].id
        self.now = 0  # the step running: what it makes and reads is stamped with it

    def run(self) -> Walk:
        image = View(self._new(INPUT, 0, self.net.input.elements, "fp32"), self.net.input,
                     "fp32")
        outputs: dict[str, list[View]] = {
            INPUT: [self._transfer(image, self.device_of[t]) for t in range(self.towers)]}
        sources = {s.name: s.sources for s in self.net.flat_stages()}
        name = INPUT
        for name, layers in self.net.stages():
            inputs = [outputs[s] for s in sources[name]]
            xs = inputs[0]
            for group in chains(layers):
                xs = self._group(group, inputs if group[0].op.merge else [xs])
            outputs[name] = xs
        out = outputs[name]
        self.now = len(self.walk.steps)  # after the last step: the loss reads the output
        if not self.whole and len(out) > 1:
            out = [self._cat(out, 0)]  # the final gather onto the first tower
        self.walk.output = out
        for v in out:
            self._read(v)
        return self.walk

    # --- buffers ------------------------------------------------------------------------------

    def _new(self, layer: str, device: int, elements: int, dtype: str, per_step: bool = False,
             grad: bool = False) -> Buffer:
        b = Buffer(layer, device, elements, ITEMSIZE[dtype], self.now, per_step, grad)
        self.walk.buffers.append(b)
        return b

    def _read(self, v: View) -> None:
        v.buf.last_read = max(v.buf.last_read, self.now)

    def _transfer(self, v: View, device: int) -> View:
        """A tensor moved to `device`: itself where it already is, else a copy there."""
        if v.buf.device == device:
            return v
        self._read(v)
        copy = self._new(v.buf.layer, device, v.shape.elements, v.dtype, grad=v.buf.grad)
        return View(copy, v.shape, v.dtype)

    def _cat(self, parts: Sequence[View], tower: int) -> View:
        """Every tower's share joined on `tower`'s device (a new buffer)."""
        for p in parts:
            self._read(p)
        shape = Shape(parts[0].shape.h, parts[0].shape.w, sum(p.shape.c for p in parts),
                      parts[0].shape.flat)
        dtype = _widest(p.dtype for p in parts)
        buf = self._new(parts[0].buf.layer, self.device_of[tower], shape.elements, dtype,
                        grad=any(p.buf.grad for p in parts))
        return View(buf, shape, dtype)

    # --- routes between towers (placement.py's ROUTES) ------------------------------------------

    def _route(self, route: Route, xs: list[View], layout: Layout) -> list[View]:
        towers = self.towers
        if route is Route.NONE or towers == 1:
            return xs
        if route is Route.ALL_GATHER:
            if layout is Layout.REPLICATED:
                return xs
            if layout is Layout.SINGLE:
                return [self._transfer(xs[0], self.device_of[i]) for i in range(towers)]
            return [self._cat(xs, i) for i in range(towers)]
        if route is Route.GATHER:
            return [self._cat(xs, 0)] if layout is Layout.SPLIT else [xs[0]]
        if layout is Layout.SPLIT:  # SCATTER
            return xs
        source = xs if layout is Layout.REPLICATED else [xs[0]] * towers
        return [self._transfer(View(v.buf, share(v.shape, towers), v.dtype),
                               self.device_of[i]) for i, v in enumerate(source)]

    # --- ops ----------------------------------------------------------------------------------

    def _group(self, group: list[Layer], inputs: list[list[View]]) -> list[View]:
        """A layer or fused chain on every tower (or once, whole), its inputs routed first."""
        head = group[0]
        self.now = len(self.walk.steps)  # routes run just before the group's first step
        if self.whole:
            return [self._run(group, [xs[0] for xs in inputs], 0, head.tower.shares)]
        placed = head.tower
        layouts = placed.layouts_in or (placed.layout_in,)
        routed = [self._route(placed.route, xs, lay)
                  for xs, lay in zip(inputs, layouts, strict=True)]
        towers = 1 if placed.single else len(routed[0])
        return [self._run(group, [xs[i] for xs in routed], i, 1) for i in range(towers)]

    def _run(self, group: list[Layer], xs: list[View], tower: int, shares: int) -> View:
        device = self.device_of[tower]
        params = sum(layer.counts.params for layer in group) // self.towers
        self.now = len(self.walk.steps)
        self.walk.steps.append(Step(self.now, group[0].id, device, params))
        for x in xs:
            self._read(x)
        if len(group) > 1 and self.target.fused:
            return self._kernel(group, xs[0], device)
        for layer in group:
            xs = [self._op(layer, xs, device, shares)]
        return xs[0]

    def _out_shape(self, layer: Layer) -> Shape:
        split = not self.whole and layer.tower.layout is Layout.SPLIT
        return share(layer.shape, self.towers) if split else layer.shape

    def _kernel(self, group: list[Layer], x: View, device: int) -> View:
        """The fused Triton kernel keeps its input and, for a chain that pools, an int8 argmax
        per output."""
        shape = self._out_shape(group[-1])
        out = View(self._new(group[-1].id, device, shape.elements, x.dtype, grad=x.buf.grad),
                   shape, x.dtype)
        fusion, head = group[0].fusion, group[0].id
        if self.training and x.buf.grad:  # else autograd records nothing
            self._save(x.buf, head)
            if fusion is not None and fusion.argmax:
                self._save(self._new(head, device, shape.elements, "int8"), head)
        return out

    def _op(self, layer: Layer, xs: list[View], device: int, shares: int) -> View:
        op = layer.op
        if (op.final and layer.id == self.last) or (op.training_only and not self.training):
            return xs[0]  # left to the loss, or handed on untouched
        compute = self._compute(layer, xs)
        shape = self._out_shape(layer)
        input_grad = any(x.buf.grad for x in xs)
        grad = layer.counts.params > 0 or input_grad
        out = View(self._new(layer.id, device, shape.elements, compute, grad=grad), shape,
                   compute)
        if self.training and grad:  # nothing to differentiate: autograd records nothing
            low = Lowered(self.target.device, shares)
            for s in op.saves(layer.args, xs[0].shape, shape, low):
                if input_grad or not s.for_input_grad:
                    self._keep(s, layer, xs, out, compute, device)
            self.walk.steps[self.now].scratch += op.scratch(layer.args, xs[0].shape, shape,
                                                            low) * FP32_BYTES
        return out

    def _compute(self, layer: Layer, xs: list[View]) -> str:
        """The dtype an op computes and returns in: under mixed precision autocast's choice
        for it, else its (widest) input's."""
        if self.target.precision == "bf16":
            if layer.op.autocast:
                return "bf16"
            if self.target.device in layer.op.autocast_fp32:
                return "fp32"
        return _widest(x.dtype for x in xs)

    def _keep(self, s: Saved, layer: Layer, xs: list[View], out: View, compute: str,
              device: int) -> None:
        dtype = {"same": xs[0].dtype, "compute": compute}.get(s.dtype, s.dtype)
        if s.of == "input":
            for x in xs:
                self._save(x.buf if x.dtype == dtype
                           else self._new(layer.id, device, x.shape.elements, dtype), layer.id)
        elif s.of == "output":
            self._save(out.buf, layer.id)
        elif s.of == "new":
            self._save(self._new(layer.id, device, s.elements, dtype, s.per_step), layer.id)
        elif dtype != "fp32":  # a weight cast for mixed precision; else the parameter itself
            self._save(self._new(layer.id, device, layer.counts.weights // self.towers, dtype,
                                 per_step=True), layer.id)

    def _save(self, buf: Buffer, layer: str) -> None:
        buf.saved_by.append(self.now)
        buf.kept_by = buf.kept_by or layer


def _widest(dtypes: Iterable[str]) -> str:
    """The dtype PyTorch promotes a mix to (fp32 over bf16)."""
    found = set(dtypes)
    return "fp32" if "fp32" in found or not found else "bf16"
