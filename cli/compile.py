"""`alexnetc compile SPEC -o FILE [--onnx]`: an artifact plain PyTorch loads without alexnetc."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from alexnetc.cli.common import output_file, read_spec, run_errors, run_folder
from alexnetc.cli.main import RunError, UsageError
from alexnetc.compiler.errors import SpecError
from alexnetc.compiler.pipeline import check_bytes


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compile", help="write a torch.export program (or ONNX) of a spec",
        description="Check a spec and write the network (eval mode, final Softmax applied, "
        "reference ops, all towers on one device, dynamic batch) as a torch.export program "
        "that torch.export.load reads without alexnetc. The spec's sha256 and the alexnetc "
        "version are recorded in it.")
    p.add_argument("spec", help="the .net file ('-' for standard input)")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write it (default: the spec's name with .pt2, or .onnx)")
    p.add_argument("--onnx", action="store_true",
                   help="write ONNX instead (needs the onnx and onnxscript packages)")
    p.add_argument("--devices", metavar="DEVICE", default="cpu",
                   help="the one device to export on (default: cpu)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the initial weights (default: the spec's train seed)")
    p.add_argument("--weights", metavar="RUN_DIR",
                   help="export the trained weights of an `alexnetc train` run of this spec "
                   "(RUN_DIR/checkpoint.pt) instead of freshly initialised ones")
    p.set_defaults(func=run)


def _named_for_what_it_is(out: Path, onnx: bool) -> None:
    """One artifact, with the suffix of its format (torch.export.save asks for .pt2 too)."""
    want = ".onnx" if onnx else ".pt2"
    if out.suffix != want:
        what = "an ONNX model" if onnx else "a torch.export program"
        other = " add --onnx, or" if out.suffix == ".onnx" else ""
        raise UsageError(f"-o {out}: compile writes {what}, a {want} file;{other} use -o "
                         f"{out.with_suffix(want)}")


def _output(path: str, spec: str, weights: Path | None, onnx: bool) -> Path:
    """The -o file (or the default name), checked before any work: never one of the inputs."""
    inputs: list[tuple[str, str | Path]] = [("the spec", spec)] if spec != "-" else []
    if weights is not None:
        from alexnetc.backends.train.checkpoint import FILE

        inputs.append(("the checkpoint of --weights", weights / FILE))
    out = output_file(path, inputs)
    _named_for_what_it_is(out, onnx)
    return out


def run(args: argparse.Namespace) -> int:
    # The paths first: a typo in one is a usage error at once, before torch is imported.
    weights = run_folder(args.weights) if args.weights else None
    chosen = _output(args.output, args.spec, weights, args.onnx) if args.output else None

    from alexnetc.backends.lowering.export import (
        export_onnx,
        export_program,
        onnx_missing,
        onnx_too_large,
    )
    from alexnetc.backends.lowering.placement import parse_devices

    name, data = read_spec(args.spec)
    result = check_bytes(data, name)
    if result.network is None or result.recipe is None:
        raise SpecError(result.diagnostics, result.source)
    net, recipe = result.network, result.recipe
    if "," in args.devices:
        raise UsageError(f"--devices {args.devices}: an exported program runs every tower on "
                         "one device; give one, e.g. --devices cpu")
    try:
        devices = parse_devices(args.devices, 1)
    except ValueError as e:
        raise UsageError(f"--devices: {e}") from None
    if args.onnx and onnx_missing():
        raise UsageError(f"--onnx needs the {' and '.join(onnx_missing())} package(s): "
                         f"pip install {' '.join(onnx_missing())}")
    if args.onnx and (too_large := onnx_too_large(net)):
        raise UsageError(too_large)
    stem = Path(name).stem if name != "<stdin>" else net.name
    out = chosen or _output(f"{stem}.{'onnx' if args.onnx else 'pt2'}", args.spec, weights,
                            args.onnx)
    seed = recipe.train.seed if args.seed is None else args.seed
    model = None
    if weights is not None:
        model = _trained(net, recipe, result.source, weights, "cpu" if args.onnx else devices[0],
                         name)
    with run_errors():  # a full disk, a read-only folder
        if args.onnx:
            meta = export_onnx(net, recipe, data, out, seed=seed, model=model)
        else:
            meta = export_program(net, recipe, data, out, device=devices[0], seed=seed,
                                  model=model)
    print(f"{net.name}: {meta['parameters']:,} parameters, input "
          f"{'x'.join(map(str, meta['input']))} (C x H x W), spec sha256 "
          f"{meta['spec_sha256'][:12]}")
    source = (f"trained weights of {args.weights}" if args.weights
              else f"initial weights, seed {seed}")
    print(f"wrote {out} ({'ONNX' if args.onnx else 'torch.export program'}, {source})")
    return 0


def _trained(net: Any, recipe: Any, spec_text: str, run_dir: Path, device: Any,
             spec: str) -> Any:
    """The lowered module with a run's weights; the run must be of this very spec."""
    from alexnetc.backends.lowering import build_module
    from alexnetc.backends.train.checkpoint import FILE, SpecMismatch, load

    with run_errors():
        try:
            state = load(run_dir / FILE, spec_text)
        except SpecMismatch as e:  # its own message advises train --resume
            kept = run_dir / "spec.net"  # the spec the run was trained from, as train wrote it
            fix = (f"compile the spec it was trained from: alexnetc compile {kept} --weights "
                   f"{run_dir}" if kept.is_file() else "compile the spec it was trained from")
            raise RunError(f"{e.path} was trained from a different spec than {spec} (sha256 "
                           f"{e.stored[:12]}…, {spec} is {e.given[:12]}…); {fix}") from None
    model = build_module(net, recipe, devices=[device], fused=False)
    model.load_state_dict(state["model"])
    return model
