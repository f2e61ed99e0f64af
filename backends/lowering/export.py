"""Artifacts plain PyTorch (or any ONNX runtime) can load without alexnetc.

The exported program is the eval-mode network with the spec's final Softmax applied, built
from reference ops (never the Triton kernel) with every tower on one device; the batch size
is dynamic. The spec's sha256 and the alexnetc version travel with it (`META_FILE` in the
.pt2's extra files, ONNX metadata_props). Each is one self-contained file, written through
alexnetc.atomic: a full disk leaves the previous file under the name.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from alexnetc import __version__, atomic
from alexnetc.backends.lowering.layers import held_apart
from alexnetc.backends.lowering.module import AlexnetcModule, build_module
from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.recipe import Recipe

META_FILE = "alexnetc.json"
MAX_BATCH = 4096
# torch.onnx keeps weights past this size in a side file (protobuf stops at 2 GiB).
ONNX_MAX_BYTES = 1536 * 2**20


class Inference(nn.Module):
    """What the artifact computes: `predict` of the module, in eval mode."""

    def __init__(self, model: AlexnetcModule):
        super().__init__()
        self.model = model
        self.eval()

    def forward(self, x: Tensor) -> Tensor:  # N x C x H x W
        return self.model.predict(x)  # N x classes


def metadata(net: CheckedNetwork, spec: bytes, model: AlexnetcModule) -> dict[str, Any]:
    return {
        "alexnetc_version": __version__,
        "network": net.name,
        "spec_sha256": hashlib.sha256(spec).hexdigest(),
        "input": [net.input.c, net.input.h, net.input.w],
        "output": [net.output.c] if net.class_vector else list(net.output.dims()),
        "parameters": sum(p.numel() for p in model.parameters()),
        "softmax": model.final_softmax,
    }


def _example(net: CheckedNetwork, device: torch.device) -> tuple[Tensor, dict[str, Any]]:
    x = torch.zeros(2, net.input.c, net.input.h, net.input.w, device=device)  # 2 x C x H x W
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    return x, {"x": {0: batch}}


def export_program(net: CheckedNetwork, recipe: Recipe | None, spec: bytes, path: str | Path,
                   *, device: str | torch.device = "cpu", seed: int | None = 0,
                   model: AlexnetcModule | None = None) -> dict[str, Any]:
    """Write a torch.export program (.pt2) of the network; returns the recorded metadata.

    `model` exports given weights (it must sit on one device); by default fresh ones from
    `seed`.
    """
    model = model or build_module(net, recipe, devices=[device], seed=seed, fused=False)
    meta = metadata(net, spec, model)
    x, dynamic = _example(net, model.devices[0])
    with torch.no_grad(), held_apart(model):  # the .pt2 stores weights by storage
        program = torch.export.export(Inference(model), (x,), dynamic_shapes=dynamic)
        atomic.write_stream(path, lambda f: torch.export.save(
            program, f, extra_files={META_FILE: json.dumps(meta)}))
    return meta


def onnx_missing() -> list[str]:
    """The packages torch.onnx.export needs that are not installed."""
    return [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]


def onnx_too_large(net: CheckedNetwork) -> str | None:
    """Why the network's weights cannot go in one ONNX file, or None when they can."""
    total = net.total()
    size = 4 * (total.weights + total.biases)  # float32
    if size <= ONNX_MAX_BYTES:
        return None
    return (f"{net.name}'s {size / 2**30:.2f} GiB of weights does not fit in one ONNX file "
            f"(at most {ONNX_MAX_BYTES / 2**30:.1f} GiB; past that ONNX splits off a side "
            "file); write a torch.export program instead: -o NAME.pt2 without --onnx")


def export_onnx(net: CheckedNetwork, recipe: Recipe | None, spec: bytes, path: str | Path,
                *, seed: int | None = 0, model: AlexnetcModule | None = None) -> dict[str, Any]:
    """Write one self-contained ONNX file (on the CPU, dynamic batch); raises RuntimeError if
    onnx is not installed, ValueError if the weights are too large for one file."""
    missing = onnx_missing()
    if missing:
        raise RuntimeError(f"--onnx needs the {' and '.join(missing)} package"
                           f"{'s' if len(missing) > 1 else ''}: pip install {' '.join(missing)}")
    too_large = onnx_too_large(net)
    if too_large:
        raise ValueError(too_large)
    model = model or build_module(net, recipe, devices=["cpu"], seed=seed, fused=False)
    meta = metadata(net, spec, model)
    x, dynamic = _example(net, model.devices[0])
    with torch.no_grad():  # into memory: given a path, torch.onnx writes weights to PATH.data
        program = torch.onnx.export(
            Inference(model), (x,), None, input_names=["x"],
            output_names=["probabilities" if model.final_softmax else "output"],
            dynamic_shapes=dynamic, dynamo=True)
    assert program is not None  # the dynamo exporter returns the program
    for key, value in meta.items():
        program.model.metadata_props[key] = json.dumps(value)
    atomic.write_with(path, lambda tmp: program.save(tmp, external_data=False))
    return meta


def load_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata recorded in a .pt2 written by `export_program` (plain torch.export.load)."""
    files = {META_FILE: ""}
    torch.export.load(str(path), extra_files=files)
    return json.loads(files[META_FILE])
