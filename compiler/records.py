"""Typed metadata the passes write onto graph nodes (cf. torch.fx ShapeProp's tensor_meta)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Literal

FP32_BYTES = 4

# PyTorch's limits, checked so that a spec that checks also builds and runs. Kernels take sizes
# (channels, kernel sizes, strides, image sides) as 32-bit integers, and many index a tensor
# with a 32-bit integer, so no tensor may hold more than INT32_MAX values per image.
INT32_MAX = 2**31 - 1
LIMIT_TEXT = f"{INT32_MAX:,} (2**31 − 1)"
# The largest 32-bit float: training computes in float32, so a larger number overflows.
FLOAT32_MAX = 3.4028234663852886e38
FLOAT32_TEXT = f"±{FLOAT32_MAX:.17g} (the largest 32-bit float)"


def show_int(n: int) -> str:
    """An integer for a message, with thousands separators; a huge one by its length."""
    digits = str(abs(n))
    if len(digits) > 24:
        return f"{'-' if n < 0 else ''}{digits[:6]}… (a {len(digits):,}-digit number)"
    return f"{n:,}"


def show_value(value: object) -> str:
    """A spec's value for a message: integers as show_int writes them, the rest as written."""
    return show_int(value) if isinstance(value, int) and not isinstance(value, bool) \
        else str(value)


def show_bound(x: float) -> str:
    """A limit for a message: `1`, not `1.0`; `0.5` as is."""
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True)
class Shape:
    """An activation per image: HxWxC maps, or a flat vector of C features (`flat`)."""

    h: int
    w: int
    c: int
    flat: bool = False

    @property
    def elements(self) -> int:
        return self.h * self.w * self.c

    def dims(self) -> tuple[int, ...]:
        return (self.c,) if self.flat else (self.h, self.w, self.c)

    def __str__(self) -> str:
        return str(self.c) if self.flat else f"{self.h}x{self.w}x{self.c}"


@dataclass(frozen=True)
class Counts:
    """What a layer costs per image, counted as the paper counts."""

    weights: int = 0
    biases: int = 0
    neurons: int = 0
    macs: int = 0
    activation_bytes: int = 0
    # state that is not learnt (a BatchNorm's running statistics): saved and exported with the
    # weights, but not in the parameter count the papers publish
    buffers: int = 0
    # forward plus backward multiply-adds of a training step: the gradient of the weights costs
    # the forward's again, and that of the input once more unless nothing before the layer is
    # learnt (a first layer needs no gradient of the image)
    train_macs: int = 0

    @property
    def params(self) -> int:
        return self.weights + self.biases


@dataclass(frozen=True)
class Window:
    """A layer's window as the receptive-field recurrence takes it, per axis (h, w): the span
    of its taps (a dilated kernel's, gaps included), its stride, and the padding before the
    first pixel (so the first window's centre lies at (span − 1)/2 − pad)."""

    span: tuple[int, int]
    stride: tuple[int, int]
    pad: tuple[int, int] = (0, 0)


@dataclass(frozen=True)
class Field:
    """The input pixels one output position sees, per axis: the receptive field's extent, the
    effective stride (input pixels between neighbouring outputs) and the centre of the first
    output's field in input pixel coordinates (a half for an even field; negative when padding
    puts it before the image)."""

    h: int
    w: int
    stride_h: int
    stride_w: int
    offset_h: float
    offset_w: float

    @classmethod
    def pixel(cls) -> Field:
        """The image itself: each position sees itself."""
        return cls(1, 1, 1, 1, 0.0, 0.0)


class Layout(enum.Enum):
    """Where an activation lives when each tower runs on its own device.

    - ``SPLIT``: tower t holds channels [t·C/T, (t+1)·C/T) (the paper's towers; with one tower,
      the whole activation);
    - ``REPLICATED``: every tower holds all of it (the input image, given to every tower);
    - ``SINGLE``: only tower 0 holds it (after a gather, or ahead of the first split when the
      towers cannot split the channels).
    """

    SPLIT = "split"
    REPLICATED = "replicated"
    SINGLE = "single"


class Route(enum.Enum):
    """How an op's input is brought to the towers it runs on."""

    NONE = "none"  # as it is
    ALL_GATHER = "all-gather"  # every tower gets the whole activation
    GATHER = "gather"  # tower 0 gets the whole activation; the op runs there alone
    SCATTER = "scatter"  # each tower gets its own channel share


@dataclass(frozen=True)
class TowerInfo:
    """How a layer splits over the towers (the paper's two GPUs), decided once by the towers
    pass: the report's numbers and everything the lowering needs to place it.

    `reads` is "tower" when each tower reads only its own maps, "all" when every tower
    needs every tower's maps (an all-gather across devices), and "gather" when the result
    is collected on the first tower (the final softmax). `route` brings the input, which
    arrives in `layout_in` (each input of a merge: `layouts_in`), to the towers; `single`:
    the op runs on tower 0 alone; `layout`:
    where its output lives. `cross_bytes` are what `route` moves between towers per image.
    """

    towers: int
    channels_per_tower: int
    reads: str
    cross_bytes: int
    params_per_tower: int
    activation_bytes_per_tower: int
    layout_in: Layout
    route: Route
    single: bool
    layout: Layout
    layouts_in: tuple[Layout, ...] = ()  # every input's, in order (a merge reads several)

    @property
    def shares(self) -> int:
        """Into how many tower shares the op's input is split as the op reads it (1: whole)."""
        split = self.route is Route.SCATTER or (self.route is Route.NONE
                                                and self.layout_in is Layout.SPLIT)
        return self.towers if split else 1


@dataclass(frozen=True)
class Fusion:
    """Membership in a chain that one fused kernel runs (e.g. ReLU→LRN→MaxPool); `argmax`:
    the kernel keeps a one-byte argmax per output for its backward, besides its input."""

    kernel: str
    head: str
    members: tuple[str, ...]
    argmax: bool = False


SavedDtype = Literal["same", "fp32", "compute", "int64", "int8", "bool"]
DeviceKind = Literal["cuda", "cpu"]


@dataclass(frozen=True)
class Saved:
    """One tensor an op's lowering keeps for the backward pass, as a pack hook of
    `torch.autograd.graph.saved_tensors_hooks` sees it.

    `of`: the op's input (each input of a merge) or output as they are, a `new` tensor of
    `elements` per image (per training step with `per_step`), or the op's `weight` (a
    parameter, so nothing new unless mixed precision casts it); `for_input_grad`: kept only
    to compute the input's gradient (a matrix product's weight). `dtype`: "same" is the input's;
    "compute" the op's compute dtype (the low precision under mixed precision for ops autocast
    lowers, else the input's); an input saved in a dtype it is not in is a new copy.
    """

    of: Literal["input", "output", "new", "weight"]
    elements: int = 0
    dtype: SavedDtype = "same"
    per_step: bool = False
    for_input_grad: bool = False  # kept only when the op's input needs a gradient


@dataclass(frozen=True)
class Lowered:
    """How an op is lowered, as far as what it saves depends on it: the device kind (CUDA's
    dropout keeps a one-byte mask, the CPU's a noise tensor of the input's dtype) and into
    how many tower shares the op cuts its input (a ResNorm normalises each on its own)."""

    device: DeviceKind
    shares: int = 1
