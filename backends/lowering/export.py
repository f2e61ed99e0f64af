"""Artifacts plain PyTorch (or any ONNX runtime) can load without alexnetc.

The exported program is the eval-mode network with the spec's final Softmax applied, built
from reference ops (never the Triton kernel) with every tower on one device; the batch size
is dynamic. The spec's sha256 and the alexnetc version travel with it (`META_FILE` in the
.pt2's extra files, ONNX metadata_props).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from alexnetc import __version__
from alexnetc.backends.lowering.module import AlexnetcModule, build_module
from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.recipe import Recipe

META_FILE = "alexnetc.json"
MAX_BATCH = 4096


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
    with torch.no_grad():
        program = torch.export.export(Inference(model), (x,), dynamic_shapes=dynamic)
    torch.export.save(program, str(path), extra_files={META_FILE: json.dumps(meta)})
    return meta


def onnx_missing() -> list[str]:
    """The packages torch.onnx.export needs that are not installed."""
    return [m for m in ("onnx", "onnxscript") if importlib.util.find_spec(m) is None]


def export_onnx(net: CheckedNetwork, recipe: Recipe | None, spec: bytes, path: str | Path,
                *, seed: int | None = 0, model: AlexnetcModule | None = None) -> dict[str, Any]:
    """Write ONNX (on the CPU, dynamic batch); raises RuntimeError if onnx is not installed."""
    missing = onnx_missing()
    if missing:
        raise RuntimeError(f"--onnx needs the {' and '.join(missing)} package"
                           f"{'s' if len(missing) > 1 else ''}: pip install {' '.join(missing)}")
    import onnx

    model = model or build_module(net, recipe, devices=["cpu"], seed=seed, fused=False)
    meta = metadata(net, spec, model)
    x, dynamic = _example(net, model.devices[0])
    with torch.no_grad():
        torch.onnx.export(Inference(model), (x,), str(path), input_names=["x"],
                          output_names=["probabilities" if model.final_softmax else "output"],
                          dynamic_shapes=dynamic, dynamo=True)
    proto = onnx.load(str(path))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(proto, str(path))
    return meta


def load_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata recorded in a .pt2 written by `export_program` (plain torch.export.load)."""
    files = {META_FILE: ""}
    torch.export.load(str(path), extra_files=files)
    return json.loads(files[META_FILE])
