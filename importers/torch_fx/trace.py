"""Tracing the module with torch.fx, running it once for every tensor's shape, and naming
a traced node as the module's code wrote it (for messages)."""

from __future__ import annotations

import io
import os
from contextlib import redirect_stderr
from typing import Any

from alexnetc.importers.source import INCONSISTENT, UNSUPPORTED
from alexnetc.importers.torch_fx.where import (
    SYMBOLS,
    Where,
    defined_at,
    exception_error,
    qualified,
    raised,
)

_BATCH = 2  # images in the shape run: a batch of 1 would hide `view(1, -1)` among flattens


def trace(root: Any, target: str, where: Where) -> Any:
    """torch.fx's graph of the module; a forward fx cannot follow is one located error."""
    import torch.fx as fx

    tracer = fx.Tracer()
    tracer.record_stack_traces = True  # each node's line in the module's source
    try:
        graph = tracer.trace(root)
    except Exception as e:
        data_dependent = isinstance(e, fx.proxy.TraceError) and "control flow" in str(e)
        if data_dependent:
            hint = ("torch.fx follows one path through forward: compute it without `if` or "
                    "`while` on a tensor's values, or import a module that does")
            raise exception_error(e, f"torch.fx cannot trace {target}: its forward branches "
                                   "on a tensor's values (data-dependent control flow)",
                                   where.forward, UNSUPPORTED, hint) from None
        raise exception_error(e, f"torch.fx cannot trace {target}: {raised(e)}",
                               where.forward, UNSUPPORTED) from None
    return fx.GraphModule(tracer.root, graph, type(root).__name__)


def propagate(gm: Any, input_hwc: tuple[int, int, int], where: Where) -> None:
    """Every node's output shape (`node.meta["tensor_meta"]`) from a zero image batch."""
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    current: list[Any] = []

    class Shapes(ShapeProp):
        def run_node(self, n: Any) -> Any:
            current[:] = [n]
            return super().run_node(n)

    h, w, c = input_hwc
    try:  # ShapeProp prints the traceback of a failing node: the error below says it all
        with torch.no_grad(), redirect_stderr(io.StringIO()):
            Shapes(gm).propagate(torch.zeros(_BATCH, c, h, w))
    except Exception as e:
        cause = e.__cause__ or e
        node = current[0] if current else None
        what = described(node, gm) if node is not None else "the module"
        raise where.fail(node, INCONSISTENT, f"on a {h}x{w}x{c} input, {what} raises "
                         f"{raised(cause)}",
                         "give the input size the module expects with --input HxWxC") from None


def class_name(cls: type) -> str:
    module = cls.__module__
    return f"nn.{cls.__name__}" if module.startswith("torch.nn.") else \
        f"{module}.{cls.__qualname__}"


def described(node: Any, gm: Any) -> str:
    """`'features.3' (nn.GELU)`, `torch.matmul`, `.view()`: the node as the module wrote it."""
    if node.op == "call_module":
        return f"'{node.target}' ({class_name(type(gm.get_submodule(node.target)))})"
    if node.op == "call_method":
        return f".{node.target}()"
    if node.op == "call_function":
        name = qualified(node.target)
        return f"`{SYMBOLS[name]}` ({name})" if name in SYMBOLS else name
    return f"'{node.name}'"


def within(node: Any, root_name: str) -> str:
    """` in 'blocks.0' (Scale, custom.py:8)`: the module whose forward holds a function node."""
    stack = node.meta.get("nn_module_stack") or {}
    if node.op == "call_module":
        return ""  # the node is the module, named already
    if not stack:
        return f" in {root_name}.forward"
    path, cls = list(stack.values())[-1]
    defined = defined_at(cls)
    where = f", {os.path.basename(defined[0])}:{defined[1]}" if defined else ""
    return f" in '{path}' ({class_name(cls)}{where})"
