"""The compiler's front half in one function: text → AST → graph → passes → checked network."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from alexnetc.compiler import ast
from alexnetc.compiler.errors import SYNTAX, Diagnostic, Diagnostics, SourceLoc, SpecError
from alexnetc.compiler.expand import expand
from alexnetc.compiler.graph import CheckedNetwork, build
from alexnetc.compiler.parse import BOM, parse
from alexnetc.compiler.passes import Context, run_passes
from alexnetc.compiler.recipe import Recipe, build_recipe


@dataclass(frozen=True)
class CheckResult:
    """Everything `check` learnt: the network if it checked, and every diagnostic."""

    network: CheckedNetwork | None
    recipe: Recipe | None
    diagnostics: list[Diagnostic]
    source: str
    ast: ast.Network | None
    partial: Context | None  # the annotated graph so far, for drawing a failing spec

    @property
    def ok(self) -> bool:
        return self.network is not None


@contextmanager
def collector_paused() -> Iterator[None]:
    """Checking allocates objects by the hundred thousand and frees almost none until it is
    done, so every run of Python's cyclic collector in the meantime walks them all again for
    nothing, and the time per stage would grow with the spec's length."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def check(text: str, file: str = "<spec>") -> CheckResult:
    """Parse and check a spec; never raises for a bad spec (errors are in `diagnostics`)."""
    with collector_paused():
        return _check(text, file)


def _check(text: str, file: str) -> CheckResult:
    text = text.removeprefix(BOM)  # as the parser does, so the error lines shown match it
    try:
        net = parse(text, file)
    except SpecError as err:
        return CheckResult(None, None, err.diagnostics, text, None, None)
    diags = Diagnostics()
    ctx = Context(net, build(net, expand(net, diags)), diags)
    run_passes(ctx)
    recipe = build_recipe(net.settings, diags)
    items = diags.sorted()
    if diags.errors:
        return CheckResult(None, None, items, text, net, ctx)
    assert ctx.input is not None
    checked = CheckedNetwork(net, ctx.graph, net.name, ctx.input, ctx.towers)
    return CheckResult(checked, recipe, items, text, net, ctx)


def check_bytes(data: bytes, file: str) -> CheckResult:
    """Decode a spec as UTF-8 (reporting the first bad byte, located) and check it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        diag = Diagnostic(SYNTAX, SourceLoc(file, line, col, line, col + 1),
                          f"byte 0x{data[e.start]:02x} is not UTF-8 text (is it a binary file?)",
                          "a spec is plain UTF-8 text")
        return CheckResult(None, None, [diag], "", None, None)
    return check(text, file)


def check_file(path: str | Path) -> CheckResult:
    return check_bytes(Path(path).read_bytes(), str(path))


def load(path: str | Path) -> tuple[CheckedNetwork, Recipe]:
    """Check a spec file for the backends; raise `SpecError` if it has errors."""
    result = check_file(path)
    if result.network is None or result.recipe is None:
        raise SpecError([d for d in result.diagnostics], result.source)
    return result.network, result.recipe
