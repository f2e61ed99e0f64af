"""`alexnetc import FILE [FILE2] [-o SPEC.net] [--weights RUN_DIR]`: a network written for
Caffe, cuda-convnet2, Darknet or PyTorch as a checked alexnetc spec, and with --weights its
trained weights (a PyTorch module's, a .caffemodel's) as a run. (The module is not named
`import`: that is a Python keyword.)"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from alexnetc.atomic import WriteFailed, write_text
from alexnetc.cli.common import output_file
from alexnetc.cli.main import RunError, Subparsers, UsageError
from alexnetc.compiler.errors import Severity
from alexnetc.compiler.pipeline import check
from alexnetc.compiler.report import report_text
from alexnetc.filekind import special_file

if TYPE_CHECKING:
    from alexnetc.importers import Format

_DIMS = re.compile(r"([0-9]+)x([0-9]+)x([0-9]+)")


def register(sub: Subparsers) -> None:
    p = sub.add_parser(
        "import", help="read a Caffe, cuda-convnet2, Darknet or PyTorch network into a spec",
        description="Read a network written for another framework, write it as a spec and "
        "check it. The format comes from the files' names and content: a Caffe .prototxt, a "
        "cuda-convnet2 layer file and its layer-params file, a Darknet .cfg, or a PyTorch "
        "module as `package.module:ClassOrFactory`. A Caffe net may be followed by its "
        "solver.prototxt and, with --weights, its trained .caffemodel.")
    p.add_argument("source", nargs="+", metavar="FILE",
                   help="the network's file(s), or module:Class for PyTorch")
    p.add_argument("-o", "--output", help="the spec to write (default: print it)")
    p.add_argument("--input", metavar="HxWxC",
                   help="the input size, where the format does not state it")
    p.add_argument("--format", help="the source format, when its files do not tell")
    p.add_argument("--skip-unsupported", action="store_true",
                   help="cut the network before the first layer alexnetc cannot express "
                   "(with a warning) instead of failing")
    p.add_argument("--weights", metavar="RUN_DIR",
                   help="also write the trained weights as RUN_DIR/checkpoint.pt (the folder "
                   "is created), a run that `alexnetc eval RUN_DIR`, `predict` and `compile "
                   "--weights RUN_DIR` take: a PyTorch module's own, or a Caffe net's from its "
                   ".caffemodel given after the .prototxt")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from alexnetc.importers import Options, detect, format_named, formats

    paths = list(args.source)
    for p in paths:
        _readable(p)
    fmt = format_named(args.format) if args.format else detect(paths)
    if fmt is None:
        if args.format:
            raise UsageError(f"unknown format '{args.format}'; known: "
                             + ", ".join(f.name for f in formats()))
        raise UsageError(f"cannot tell the format of {' '.join(paths)}: give --format, one of "
                         + ", ".join(f"{f.name} ({f.title})" for f in formats()))
    if len(paths) not in fmt.files:
        raise UsageError(f"{fmt.title} takes {' or '.join(map(str, fmt.files))} file(s), "
                         f"got {len(paths)}")
    checkpoint = _checkpoint(args.weights, fmt, formats())
    _apart(args.output, checkpoint)
    if checkpoint is not None and Path(checkpoint).exists():
        raise UsageError(f"--weights {args.weights} already holds a run ({checkpoint}); "
                         "choose another folder, or delete it to replace the run")
    out = output_file(args.output, [("source", p) for p in paths if Path(p).is_file()]) \
        if args.output else None
    imported = fmt.read(paths, Options(_input(args.input), args.skip_unsupported, checkpoint))
    text = imported.draft.text()
    for d in imported.warnings:
        print(d.render(_text(d.loc.file)), file=sys.stderr)
    name = str(out) if out else "<imported>"
    result = check(text, name)
    if out is not None:
        try:
            write_text(out, text)
        except WriteFailed as e:
            raise RunError(str(e)) from None
        print(f"wrote {out} ({fmt.title}, {len(text.splitlines())} lines)", file=sys.stderr)
        if result.network is not None:
            sys.stdout.write(report_text(result.network))
    else:
        sys.stdout.write(text)
    if imported.weights is not None:
        print(f"wrote {imported.weights} ({imported.weights_from})", file=sys.stderr)
        for note in imported.notes:
            print(f"note: {note}", file=sys.stderr)
    for d in result.diagnostics:
        print(d.render(result.source), file=sys.stderr)
    if not result.ok:
        n = sum(d.severity is Severity.ERROR for d in result.diagnostics)
        raise RunError(f"the imported spec has {n} error{'s' if n != 1 else ''} (above)"
                       + ("" if out else "; write it with -o to edit it"))
    return 0


def _readable(path: str) -> None:
    """A network file the user named must be a readable regular file (`module:Class` names
    none); told from stat, before any open (a named pipe would wait for a writer)."""
    p = Path(path)
    if not p.exists():
        if ":" not in path:
            raise UsageError(f"{path}: no such file")
        return
    kind = "a folder" if p.is_dir() else special_file(p)
    if kind is not None:
        raise UsageError(f"{path} is {kind}, not a network file")
    if not os.access(p, os.R_OK):
        raise UsageError(f"cannot read {path}: permission denied")


def _checkpoint(run: str | None, fmt: Format, known: list[Format]) -> str | None:
    """Where `--weights RUN_DIR` puts the checkpoint, for a format whose trained weights
    alexnetc reads. The folder is made when the checkpoint is written, so that a usage
    error the format finds (a Caffe net without its .caffemodel) leaves nothing behind."""
    if run is None:
        return None
    if not fmt.weights:
        raise UsageError("--weights applies to " + " and to ".join(
            f.weights for f in known if f.weights) + f", not to this network ({fmt.title}): "
            "alexnetc reads no trained weights for it")
    folder = Path(run)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--weights {run} is a file; give the run folder to write "
                         "checkpoint.pt into")
    return str(folder / "checkpoint.pt")


def _apart(out: str | None, checkpoint: str | None) -> None:
    """The spec and the checkpoint are two files: -o naming the checkpoint (or its folder)
    would write one over the other. Compared resolved (links, `..`), before either is
    written or its folder made."""
    if out is None or checkpoint is None:
        return
    spec, ckpt = Path(out).resolve(), Path(checkpoint).resolve()
    if spec == ckpt:
        raise UsageError(f"-o {out} names the checkpoint --weights writes ({checkpoint}): "
                         "give the spec another name")
    if spec == ckpt.parent:
        raise UsageError(f"-o {out} names the run folder --weights writes into "
                         f"({Path(checkpoint).parent}): give the spec another name")


def _text(path: str) -> str | None:
    """A source file's text, to quote the line a warning is about (None: not a file)."""
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _input(text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    m = _DIMS.fullmatch(text.strip())
    if m is None or min(int(g) for g in m.groups()) < 1:
        raise UsageError(f"--input takes HxWxC, e.g. 224x224x3, not {text!r}")
    h, w, c = (int(g) for g in m.groups())
    return h, w, c
