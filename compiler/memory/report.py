"""The memory plan for people and programs: a table per layer, lines per device, JSON, CSV.

Every device map a spec can run on is shown: one device (each layer whole), and with towers
one device per tower, as the paper split AlexNet over two GTX 580s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.memory.plan import ALLOWANCE, MemoryPlan, plan
from alexnetc.compiler.memory.walk import Precision, Target
from alexnetc.compiler.records import DeviceKind

MIB = 2**20
UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9,
         "gb": 10**9, "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30,
         "tib": 2**40}
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")


def parse_size(text: str) -> int:
    """Bytes from `3GiB`, `3 GB`, `512MiB` or `3221225472`; ValueError with what is accepted."""
    m = _SIZE.fullmatch(text)
    unit = m.group(2).lower() if m else ""
    if m is None or unit not in UNITS:
        raise ValueError(f"{text!r} is not a memory size; write e.g. 3GiB, 3GB, 512MiB or a "
                         "number of bytes (GiB = 2**30 bytes, GB = 10**9)")
    size = int(Fraction(m.group(1)) * UNITS[unit])  # exact: no float rounds a byte count
    if size <= 0:
        raise ValueError(f"a memory size must be more than 0 bytes, not {text!r}")
    return size


@dataclass(frozen=True)
class Request:
    """What the user asked: the batch, precision and device kind, and a budget per device."""

    batch: int
    precision: Precision = "fp32"
    device: DeviceKind = "cuda"
    budget: int | None = None


def plans(net: CheckedNetwork, req: Request) -> list[tuple[str, MemoryPlan]]:
    """The plan for each device map, named."""
    maps: list[tuple[str, tuple[int, ...] | None]] = [("one device", None)]
    if net.towers > 1:
        maps.append((f"{net.towers} devices, one tower each", tuple(range(net.towers))))
    return [(name, plan(net, Target(req.batch, req.precision, req.device, devices=devices)))
            for name, devices in maps]


def _mib(n: int) -> str:
    return f"{n / MIB:,.1f}" if n else ""


def _where(req: Request) -> str:
    kind = ("CUDA, fused chains as the Triton kernel" if req.device != "cpu" else "the CPU")
    amp = "bf16 mixed precision" if req.precision == "bf16" else "fp32"
    return f"batch {req.batch:,}, {amp}, on {kind}"


def table_rows(net: CheckedNetwork, found: list[tuple[str, MemoryPlan]],
               req: Request) -> tuple[list[tuple[str, str, bool]], list[tuple[list[str], bool]]]:
    """Columns (header, footer, right-justified) and rows (cells, last of its stage): per op
    its weights' bytes (the gradients and the momentum are as many) and what it keeps for
    backward on each device map, in MiB."""
    b = req.batch
    columns = [("stage", "total", False), ("op", "", False), ("output", str(net.output), True),
               ("weights MiB", _mib(sum(found[0][1].weights_by_layer.values())), True)]
    for _, p in found:
        for d in p.devices:
            columns.append((f"kept MiB, {_column(p, d.device)}", _mib(d.kept.at(b)), True))
    rows: list[tuple[list[str], bool]] = []
    for stage, layers in net.stages():
        for i, layer in enumerate(layers):
            cells = [stage if i == 0 else "",
                     ("+ " if layer.call.joined else "") + layer.call.text(), str(layer.shape),
                     _mib(found[0][1].weights_by_layer.get(layer.id, 0))]
            cells += [_mib(p.kept(layer.id, d.device).at(b)) for _, p in found
                      for d in p.devices]
            rows.append((cells, i == len(layers) - 1))
    return columns, rows


def _column(p: MemoryPlan, device: int) -> str:
    """A device of a plan as a column names it: `one device`, or the tower it holds."""
    return "one device" if len(p.devices) == 1 else f"tower {device}"


def summary(net: CheckedNetwork, found: list[tuple[str, MemoryPlan]], req: Request) -> list[str]:
    """Under the table: each device map's totals per device, its peak and, with a budget,
    whether it fits and the largest batch that does."""
    b = req.batch
    lines = [f"memory of a training step, {_where(req)} (the paper's momentum SGD; "
             "gradients and momentum are fp32 like the weights):"]
    for name, p in found:
        lines.append(f"  {name}:")
        for d in p.devices:
            who = f"device {d.device}" if len(p.devices) > 1 else "the device"
            stats = f", running statistics {_amount(d.buffers)}" if d.buffers else ""
            lines.append(
                f"    {who}: weights, gradients and momentum {_amount(d.weights)} each{stats}; "
                f"kept for backward {_amount(d.kept.at(b))}; peak {_amount(d.peak(b))} "
                f"training, {_amount(d.inference_peak(b))} inference")
        if req.budget is not None:
            lines.append("    " + _fit(p, req.budget, b))
    lines.append(f"  not counted: the CUDA context, the libraries' workspaces (cuDNN, cuBLAS, "
                 f"oneDNN), allocator rounding and fragmentation; a budget keeps "
                 f"{ALLOWANCE:.0%} back for them")
    return lines


def _amount(n: int) -> str:
    """Bytes for a line of text: MiB; KiB under a tenth of one, bytes under one KiB; GiB
    past 100 GiB."""
    if n >= 100 * 2**30:
        return f"{n / 2**30:,.1f} GiB"
    if n >= MIB // 10:
        return f"{n / MIB:,.1f} MiB"
    return f"{n / 1024:,.1f} KiB" if n >= 1024 else f"{n:,} byte{'' if n == 1 else 's'}"


def _fit(p: MemoryPlan, budget: int, batch: int) -> str:
    largest = p.largest_batch(budget)
    each = "each device's" if len(p.devices) > 1 else "the device's"
    verdict = "fits" if p.fits(budget) else "does NOT fit"
    most = ("no batch fits" if largest == 0 else "any batch fits (nothing grows with it)"
            if largest is None else f"the largest batch that fits is {largest:,}")
    return f"batch {batch:,} {verdict} in {each} {_budget(budget)}; {most}"


def _budget(n: int) -> str:
    return f"{n / 2**30:,.2f} GiB" if 2**30 <= n < 100 * 2**30 else _amount(n)


def as_json(net: CheckedNetwork, found: list[tuple[str, MemoryPlan]],
            req: Request) -> dict[str, Any]:
    """The plan as plain data, in bytes."""
    b = req.batch
    return {
        "batch": b, "precision": req.precision, "device": req.device, "budget": req.budget,
        "allowance": ALLOWANCE,
        "maps": [{
            "name": name,
            "devices": [{"device": d.device, "weights": d.weights, "gradients": d.gradients,
                         "momentum": d.momentum, "buffers": d.buffers,
                         "kept": d.kept.at(b), "kept_per_image": d.kept.per_image,
                         "peak": d.peak(b), "inference_peak": d.inference_peak(b),
                         **({"largest_batch": d.largest_batch(req.budget)}
                            if req.budget is not None else {})}
                        for d in p.devices],
            "layers": [{"id": layer.id, "weights": p.weights_by_layer.get(layer.id, 0),
                        "kept": p.kept(layer.id).at(b),
                        "kept_per_device": [p.kept(layer.id, d.device).at(b)
                                            for d in p.devices]}
                       for layer in net.layers()],
            **({"fits": p.fits(req.budget), "largest_batch": p.largest_batch(req.budget)}
               if req.budget is not None else {}),
        } for name, p in found],
    }


def csv_columns(found: list[tuple[str, MemoryPlan]]) -> list[str]:
    return ["weight_bytes", *(f"kept_bytes_{_slug(_column(p, d.device))}" for _, p in found
                              for d in p.devices)]


def csv_cells(layer_id: str, found: list[tuple[str, MemoryPlan]], batch: int) -> list[int]:
    first = found[0][1]
    return [first.weights_by_layer.get(layer_id, 0),
            *(p.kept(layer_id, d.device).at(batch) for _, p in found for d in p.devices)]


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


__all__ = ["Request", "as_json", "csv_cells", "csv_columns", "parse_size", "plans",
           "summary", "table_rows"]
