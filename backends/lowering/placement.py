"""Tower placement: which device each tower runs on, and every byte that crosses between towers.

An activation lives in one of three layouts (`Layout`, decided for every op by the checker's
towers pass, so fixed when the module is built, never at run time):

- ``SPLIT``: tower t holds channels [t·C/T, (t+1)·C/T) on its own device (the paper's towers);
- ``REPLICATED``: every tower holds all of it (the input image, given to every tower for free);
- ``SINGLE``: only tower 0 holds it (after the final Softmax's gather, or a prefix whose
  channels the towers cannot split).

`ROUTES` carries out each `Route` the towers pass chose.

All moves between towers go through `transfer`, which is the only place bytes are counted,
so `count_cross_bytes` measures exactly what the lowering moves. Towers are logical: two
towers on one device still count their exchange, as the checker does.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor

from alexnetc.compiler.records import Layout, Route


def parse_devices(text: str | None, towers: int) -> list[torch.device]:
    """One device per tower from "cuda:0,cuda:1" / "cpu" / None (cuda:0 if available, else cpu).

    A single device holds every tower. Raises ValueError with a message fit for the CLI.
    """
    if towers < 1:
        raise ValueError(f"a network has at least one tower, got {towers}")
    if text is None or not text.strip():
        default = "cuda:0" if torch.cuda.is_available() else "cpu"
        return [torch.device(default)] * towers
    names = [s.strip() for s in text.split(",")]
    if any(not s for s in names):
        raise ValueError(f"empty device name in {text!r}; write e.g. cuda:0,cuda:1")
    return resolve_devices(names, towers)


def resolve_devices(devices: Sequence[str | torch.device], towers: int) -> list[torch.device]:
    """Check a device list against the tower count and the machine; expand one device to all."""
    if len(devices) not in (1, towers):
        raise ValueError(f"{len(devices)} devices given for {towers} tower"
                         f"{'s' if towers != 1 else ''}; give one device (all towers on it) "
                         f"or one per tower")
    out = [_device(d) for d in devices]
    return out * towers if len(out) == 1 else out


def _device(spec: str | torch.device) -> torch.device:
    try:
        dev = torch.device(spec)
    except RuntimeError as e:
        raise ValueError(f"unknown device {spec!r} (e.g. cpu, cuda:0): {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec} asked for, but CUDA is not available here")
        index = 0 if dev.index is None else dev.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {spec} asked for, but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s)")
        dev = torch.device("cuda", index)
    return dev


# --- accounting -------------------------------------------------------------------------------

_tallies: list[dict[str, int]] = []


@contextmanager
def count_cross_bytes() -> Iterator[dict[str, int]]:
    """Tally the bytes moved between towers while the block runs, keyed by layer id.

    The final collection of a SPLIT output onto tower 0 when the network does not end in a
    Softmax (which the checker counts at the Softmax) is keyed ``"output"``.
    """
    tally: dict[str, int] = defaultdict(int)
    _tallies.append(tally)
    try:
        yield tally
    finally:
        _tallies.remove(tally)


def transfer(x: Tensor, device: torch.device, src: int, dst: int, layer: str) -> Tensor:
    """Move `x` from tower `src` to tower `dst` (on `device`), counting it when towers differ."""
    if src != dst:
        for tally in _tallies:
            tally[layer] += x.numel() * x.element_size()
    return x.to(device)


# --- routing: bring an activation into the layout an op reads ----------------------------------

def chunk(x: Tensor, towers: int, t: int) -> Tensor:
    """Tower t's share of the channels (dim 1) of a whole activation."""
    size = x.shape[1] // towers
    return x[:, t * size:(t + 1) * size]  # N x C/T (x H x W)


def all_gather(xs: list[Tensor], layout: Layout, devices: list[torch.device],
               layer: str) -> list[Tensor]:
    """Every tower gets the whole activation (tower order along channels)."""
    towers = len(devices)
    if layout is Layout.REPLICATED or towers == 1:
        return xs
    if layout is Layout.SINGLE:
        return [transfer(xs[0], devices[t], 0, t, layer) for t in range(towers)]
    return [torch.cat([transfer(xs[s], devices[t], s, t, layer) for s in range(towers)], dim=1)
            for t in range(towers)]  # T x [N x C x H x W]


def gather(xs: list[Tensor], layout: Layout, devices: list[torch.device],
           layer: str) -> list[Tensor]:
    """Tower 0 gets the whole activation; the result is SINGLE."""
    if layout is not Layout.SPLIT or len(xs) == 1:
        return [xs[0]]
    return [torch.cat([transfer(x, devices[0], s, 0, layer) for s, x in enumerate(xs)],
                      dim=1)]  # [N x C x H x W] on tower 0


def scatter(xs: list[Tensor], layout: Layout, devices: list[torch.device],
            layer: str) -> list[Tensor]:
    """Each tower gets its own channel share; the result is SPLIT."""
    towers = len(devices)
    if layout is Layout.SPLIT or towers == 1:
        return xs
    if layout is Layout.REPLICATED:
        return [chunk(x, towers, t) for t, x in enumerate(xs)]  # T x [N x C/T x H x W]
    return [transfer(chunk(xs[0], towers, t), devices[t], 0, t, layer)
            for t in range(towers)]  # T x [N x C/T x H x W]


def assemble(xs: list[Tensor], layout: Layout) -> Tensor:
    """The whole activation from per-tower tensors, on the first one's device (for inspection
    and tests: not a tower exchange, so not counted)."""
    if layout is not Layout.SPLIT or len(xs) == 1:
        return xs[0]
    return torch.cat([x.to(xs[0].device) for x in xs], dim=1)  # N x C (x H x W)


RouteFn = Callable[[list[Tensor], Layout, list[torch.device], str], list[Tensor]]

ROUTES: dict[Route, RouteFn | None] = {
    Route.NONE: None,
    Route.ALL_GATHER: all_gather,
    Route.GATHER: gather,
    Route.SCATTER: scatter,
}
