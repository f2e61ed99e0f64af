"""The bytes of a training step per layer and per device, its peak, and what fits a budget.

A training step (backends/train/loop.py) runs forward (keeping what backward needs),
backward (freeing each op's kept tensors as it passes, making the weights' gradients) and the
optimizer step (in place: the paper's momentum is one fp32 tensor per weight), and lets the
gradients go (a data-parallel replica keeps them in DDP's buckets). Every quantity is linear
in the batch, `fixed + per_image·N`, so the peak is the largest of the step's candidate
moments and the largest batch a budget holds is solved for, not searched.

Not counted: the CUDA context (outside PyTorch's allocator), the libraries' workspaces
(cuDNN's and cuBLAS's; oneDNN's on the CPU), the allocator's rounding and fragmentation;
`ALLOWANCE` of a budget is kept back for them. Temporaries inside an op's backward are
counted where the registry states them (`scratch`: the reference LRN's).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from alexnetc.compiler.graph import INPUT, CheckedNetwork
from alexnetc.compiler.memory.walk import Buffer, Target, Walk, walk
from alexnetc.compiler.records import FP32_BYTES, INT32_MAX

ALLOWANCE = 0.10  # of a device's memory, for what the plan does not count


@dataclass(frozen=True)
class Linear:
    """Bytes at a batch of N images: `fixed + per_image·N`."""

    fixed: int = 0
    per_image: int = 0

    def at(self, batch: int) -> int:
        return self.fixed + self.per_image * batch

    def __add__(self, other: Linear) -> Linear:
        return Linear(self.fixed + other.fixed, self.per_image + other.per_image)


def _bytes(b: Buffer) -> Linear:
    n = b.elements * b.itemsize
    return Linear(n, 0) if b.per_step else Linear(0, n)


def _sum(buffers: list[Buffer]) -> Linear:
    total = Linear()
    for b in buffers:
        total += _bytes(b)
    return total


@dataclass(frozen=True)
class DeviceMemory:
    """One device's share of a training step.

    `weights` are the parameters' fp32 bytes, which the gradients and the momentum equal;
    `buffers` the state that is not learnt (BatchNorm's running statistics); `kept` what
    autograd keeps for backward; `peaks` the step's candidate moments, the largest of which
    is its peak; `inference` the same for a forward without autograd.
    """

    device: int
    weights: int
    buffers: int
    kept: Linear
    peaks: tuple[Linear, ...]
    inference: tuple[Linear, ...]

    @property
    def gradients(self) -> int:
        return self.weights

    @property
    def momentum(self) -> int:
        return self.weights

    def peak(self, batch: int) -> int:
        return max(p.at(batch) for p in self.peaks)

    def inference_peak(self, batch: int) -> int:
        return max(p.at(batch) for p in self.inference)

    def largest_batch(self, budget: int) -> int | None:
        """The most images per step whose peak fits `budget` less the allowance (0: not even
        one; None: no limit, nothing grows with the batch), at most 2**31 − 1 (PyTorch's
        sizes)."""
        return _largest(self.peaks, budget)


def _largest(candidates: tuple[Linear, ...], budget: int) -> int | None:
    usable = int(budget * (1 - ALLOWANCE))
    limits = []
    for c in candidates:
        if c.fixed + c.per_image > usable:
            return 0
        if c.per_image:
            limits.append((usable - c.fixed) // c.per_image)
    return min(*limits, INT32_MAX) if limits else None


@dataclass(frozen=True)
class MemoryPlan:
    """A training step of `net` on `target`: per device and layer (by id) the bytes the layer
    keeps for backward there (`kept_on`), and each device's totals."""

    target: Target
    kept_on: dict[tuple[int, str], Linear]
    weights_by_layer: dict[str, int]
    devices: tuple[DeviceMemory, ...]

    def kept(self, layer: str, device: int | None = None) -> Linear:
        """What `layer` keeps for backward on `device` (None: on every device)."""
        devices = [d.device for d in self.devices] if device is None else [device]
        return sum((self.kept_on.get((d, layer), Linear()) for d in devices), Linear())

    def largest_batch(self, budget: int) -> int | None:
        """The most images per step with every device within `budget`."""
        found = [d.largest_batch(budget) for d in self.devices]
        limits = [n for n in found if n is not None]
        return min(limits) if limits else None

    def fits(self, budget: int) -> bool:
        usable = budget * (1 - ALLOWANCE)
        return all(d.peak(self.target.batch) <= usable for d in self.devices)


def plan(net: CheckedNetwork, target: Target) -> MemoryPlan:
    train, infer = walk(net, target), walk(net, target, training=False)
    kept: dict[tuple[int, str], Linear] = defaultdict(Linear)
    for b in train.buffers:
        if b.saved_by:
            kept[b.device, b.kept_by] += _bytes(b)
    weights = {layer.id: layer.counts.params * FP32_BYTES for layer in net.layers()}
    devices = tuple(_device(net, train, infer, d) for d in range(train.devices))
    return MemoryPlan(target, dict(kept), weights, devices)


def _device(net: CheckedNetwork, train: Walk, infer: Walk, d: int) -> DeviceMemory:
    weights = sum(s.params for s in train.steps if s.device == d) * FP32_BYTES
    buffers = _buffers(net, train.target, d)
    mine = [b for b in train.buffers if b.device == d]
    kept = _sum([b for b in mine if b.saved_by])
    # weights and momentum, and under data parallelism the gradients (DDP's buckets); else
    # the gradients come with backward and go after the optimizer step
    replicas = train.target.replicas
    resident = Linear(weights * (3 if replicas else 2) + buffers)
    peaks = [resident + Linear(0 if replicas else weights)]  # the optimizer step
    peaks += [resident + m for m in _forward(mine, len(train.steps))]
    peaks += [resident + m for m in _backward(mine, train, d, net.output.c)]
    inference = [Linear(weights + buffers) + m
                 for m in _forward([b for b in infer.buffers if b.device == d],
                                   len(infer.steps), training=False)]
    return DeviceMemory(d, weights, buffers, kept, tuple(peaks), tuple(inference))


def _buffers(net: CheckedNetwork, target: Target, d: int) -> int:
    """Running statistics, fp32, on the devices of the towers holding their shares (a batch
    counter counted as one of them)."""
    total = sum(layer.counts.buffers for layer in net.layers()) * FP32_BYTES
    if target.devices is None:
        return total
    return total * target.devices.count(d) // len(target.devices)


def _sweep(spans: list[tuple[int, int, Linear]], steps: int) -> list[Linear]:
    """The sum at each step 0…steps of the amounts live over [first, last] (inclusive),
    from one pass over the changes rather than one over the spans per step."""
    fixed = [0] * (steps + 2)
    per_image = [0] * (steps + 2)
    for first, last, amount in spans:
        first, last = max(first, 0), min(last, steps)
        if first > last:
            continue
        fixed[first] += amount.fixed
        fixed[last + 1] -= amount.fixed
        per_image[first] += amount.per_image
        per_image[last + 1] -= amount.per_image
    out, f, n = [], 0, 0
    for k in range(steps + 1):
        f, n = f + fixed[k], n + per_image[k]
        out.append(Linear(f, n))
    return out


def _forward(mine: list[Buffer], steps: int, training: bool = True) -> list[Linear]:
    """What is live at each step of forward: what was kept so far, and what a later step
    still reads."""
    return _sweep([(b.created, steps if training and b.saved_by else b.last_read, _bytes(b))
                   for b in mine], steps)


def _backward(mine: list[Buffer], w: Walk, d: int, classes: int) -> list[Linear]:
    """What is live at each step of backward, last step first: the kept tensors of the steps
    still to go back through, the weights' gradients made so far, the gradients of the
    activations between their last reader and their maker, and what the loop holds (the
    image, the output and the loss's log-probabilities)."""
    end = len(w.steps)
    if end == 0:
        return []
    held = [b for b in mine if b.layer == INPUT or b.last_read >= end]
    loss = Linear(0, classes * FP32_BYTES) if any(v.buf.device == d for v in w.output) \
        else Linear()
    # step k of backward still holds a kept tensor while k ≥ the first step that kept it
    kept = [(min(b.saved_by), end, _bytes(b)) for b in mine
            if b.saved_by and not (b.layer == INPUT or b.last_read >= end)]
    grads = [(b.created, b.last_read, _bytes(b)) for b in mine if b.grad]
    # a layer's new weight gradient lives from its step of backward on; under DDP it is
    # copied into its bucket (resident) and let go, so it is there at its step alone
    weights = [(s.index if w.target.replicas else 0, s.index, Linear(s.params * FP32_BYTES))
               for s in w.steps if s.device == d]
    scratch = [(s.index, s.index, Linear(0, s.scratch)) for s in w.steps if s.device == d]
    live = _sweep(kept + grads + weights + scratch, end - 1)
    base = _sum(held) + loss
    return [base + m for m in reversed(live)]
