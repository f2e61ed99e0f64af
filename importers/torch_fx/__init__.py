"""PyTorch modules, `alexnetc import package.module:ClassOrFactory`, read through torch.fx.

The module is imported as `python -m` would (the current folder first on the path), built
with no arguments and put in eval mode, then traced with torch.fx (`symbolic_trace`'s tracer,
recording each node's stack so that errors point at the line of the module's source) and run
once on zeros of the `--input` size to know every tensor's shape. Each traced op becomes a
spec op; an op and the activations, norms and pools that follow it, each the only reader of
the one before, form one stage named after the op's module (`features.0` → `features_0`).
What the spec cannot express is a located error at the line of the module's code.

The reading runs top to bottom in `read`: build the module (`build`), trace it and know its
shapes (`trace`), turn its nodes into stages (`reader`, by the op table in `ops`), fold
repeated blocks, and write the weights (`weights`). torch is imported only when a module is
read: `alexnetc import` of a Caffe or Darknet file asks this format's `sniff` too, which must
stay cheap.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from alexnetc.importers import Format, Imported, Options
from alexnetc.importers.blocks import fold_blocks
from alexnetc.importers.torch_fx.build import build, cwd_on_path
from alexnetc.importers.torch_fx.reader import Reader
from alexnetc.importers.torch_fx.trace import propagate, trace
from alexnetc.importers.torch_fx.weights import write_weights
from alexnetc.importers.torch_fx.where import Where

_TARGET = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def sniff(paths: Sequence[str], texts: Sequence[str] | None) -> bool:
    """One `dotted.module:Name` that names no file."""
    return (len(paths) == 1 and _TARGET.fullmatch(paths[0]) is not None
            and not Path(paths[0]).exists())


def read(paths: Sequence[str], options: Options) -> Imported:
    from alexnetc.cli.main import UsageError

    target = paths[0]
    if _TARGET.fullmatch(target) is None:
        raise UsageError(f"{target}: a PyTorch module is named `package.module:ClassOrFactory`")
    with cwd_on_path():
        root = build(target)
        if options.input is None:
            raise UsageError(f"{target}: a PyTorch module does not state its input size; give "
                             "it with --input HxWxC, e.g. --input 224x224x3")
        where = Where(root)
        gm = trace(root, target, where)
        propagate(gm, options.input, where)
        reader = Reader(gm, target, options, where)
        imported = reader.read()
    folded = fold_blocks(imported.draft)
    imported.draft = folded.draft
    if options.weights is not None and imported.draft.stages:
        imported.weights = write_weights(imported.draft, folded.rekey(reader.sources),
                                          Path(options.weights), target)
    return imported


FORMAT = Format("torch", "PyTorch module (torch.fx)", sniff, read,
                weights="a PyTorch module")
