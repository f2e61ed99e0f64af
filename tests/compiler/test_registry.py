"""Every registered op is complete: a backend entry, a line in the README's op table, counts,
a lowering that states the checker's numbers, an export, and (for ops with arguments) a golden
error in specs/invalid/. A new op that misses any of them fails here, naming what is missing.

A golden error is required of ops with arguments only: an op without any (ReLU, Softmax) has
no error of its own to pin; the errors it can take part in (a stray `x96`, `+` before a
non-activation) are the language's, pinned once each."""

from __future__ import annotations

import re
from functools import cache

import pytest
import torch

from alexnetc.backends.lowering import build_module, canonical_state_dict, count_cross_bytes
from alexnetc.backends.lowering.export import export_program
from alexnetc.backends.lowering.layers import LAYERS
from alexnetc.backends.lowering.saved import kept_for_backward
from alexnetc.compiler.errors import Severity, SourceLoc
from alexnetc.compiler.graph import CheckedNetwork, Layer
from alexnetc.compiler.memory.plan import plan
from alexnetc.compiler.memory.walk import Target
from alexnetc.compiler.pipeline import check, check_file
from alexnetc.compiler.records import Counts
from alexnetc.compiler.registry import (
    OPS,
    NoArgs,
    OpDef,
    Pair,
    arg,
    as_dict,
    definitions,
    lookup,
    op_args,
    params_of,
    register,
)
from alexnetc.compiler.report import as_json, report_text

from helpers import ROOT, SPECS

OP_DEFS = definitions()
IDS = [op.name for op in OP_DEFS]
# Each op's example runs on the maps of a conv split over two towers (8x8x4, 2 per tower).
PREFIX = "input 8x8x4\ntowers 2\nc: Conv(1,1) x4\n"


def example(op: OpDef[object]) -> tuple[CheckedNetwork, Layer]:
    result = check(f"{PREFIX}{op.example_stage}\n", "example.net")
    assert result.network is not None, (op.name, [d.message for d in result.diagnostics])
    (layer,) = [layer for layer in result.network.layers() if layer.stage == "s"]
    return result.network, layer


def test_the_backend_table_is_the_registry() -> None:
    assert sorted(LAYERS) == sorted(IDS), "every op needs its entry in lowering/layers.py"
    for op in OP_DEFS:
        if op.fusion_role is not None:
            assert LAYERS[op.name].chained is not None, f"{op.name} is chained by the fusion " \
                "pass: its backend entry needs `chained` (its part of the kernel's parameters)"


@cache
def readme_op_rows() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("### Ops", 1)[1].split("\n\n", 2)[1]
    return [line for line in table.splitlines() if line.startswith("| `")]


@pytest.mark.parametrize("op", OP_DEFS, ids=IDS)
def test_every_op_has_a_line_in_the_readme(op: OpDef[object]) -> None:
    rows = [r for r in readme_op_rows() if re.search(rf"`{op.name}\b", r.split("|")[1])]
    assert rows, f"README's op table (### Ops) has no line for {op.name}"
    written = "|".join(rows[0].split("|")[1:3])  # the op and arguments columns
    missing = [p.name for p in op.params if not re.search(rf"\b{p.name}\b", written)]
    assert not missing, f"README's line for {op.name} does not name {missing}"


@pytest.mark.parametrize("op", OP_DEFS, ids=IDS)
def test_every_op_checks_counts_lowers_and_exports(op: OpDef[object], tmp_path) -> None:
    net, layer = example(op)
    counts = layer.counts
    assert isinstance(counts, Counts) and counts.params == counts.weights + counts.biases
    assert counts.activation_bytes == layer.shape.elements * 4  # fp32, its output
    assert op.bind(as_dict(layer.args)) == layer.args  # the JSON's args are the record's
    x = torch.randn(2, 4, 8, 8)
    towers = build_module(net, devices=["cpu", "cpu"], seed=0, merge=False).eval()
    with torch.no_grad(), count_cross_bytes() as moved:
        y = towers(x)
    assert moved.get(layer.id, 0) == layer.tower.cross_bytes * 2
    shape = layer.shape
    assert tuple(y.shape[1:]) == ((shape.c,) if net.class_vector or shape.flat
                                  else (shape.c, shape.h, shape.w))
    assert sum(p.numel() for p in towers.parameters()) == net.total().params
    whole = canonical_state_dict(towers)  # parameters and buffers (running statistics), whole
    assert sum(t.numel() for t in whole.values()) == net.total().params + net.total().buffers
    merged = build_module(net, devices=["cpu"], seed=0).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(x), y)
        export_program(net, None, b"", tmp_path / "m.pt2", model=merged)
        program = torch.export.load(str(tmp_path / "m.pt2")).module()
        torch.testing.assert_close(program(x), merged.predict(x))


def _inside(at: SourceLoc, span: SourceLoc) -> bool:
    return (span.line, span.col) <= (at.line, at.col) < (span.end_line, span.end_col)


@cache
def ops_with_a_golden_error() -> frozenset[str]:
    """The ops some specs/invalid/*.net error falls inside a call of."""
    hit = set()
    for spec in sorted((SPECS / "invalid").glob("*.net")):
        result = check_file(spec)
        if result.ast is None:
            continue
        calls = [c for s in result.ast.stages for c in s.ops]
        for d in result.diagnostics:
            for call in calls:
                op = lookup(call.name)
                if d.severity is Severity.ERROR and op and _inside(d.loc, call.loc):
                    hit.add(op.name)
    return frozenset(hit)


@pytest.mark.parametrize("op", [op for op in OP_DEFS if op.params],
                         ids=[op.name for op in OP_DEFS if op.params])
def test_every_op_with_arguments_has_a_golden_error(op: OpDef[object]) -> None:
    assert op.name in ops_with_a_golden_error(), (
        f"no spec in specs/invalid/ has an error in a call of {op.name}: add one (and its "
        ".err: UPDATE_GOLDEN=1 pytest tests/compiler/test_golden_errors.py)")


def test_arguments_are_described_once_by_their_record() -> None:
    conv = OPS["Conv"]
    assert [p.name for p in conv.params] == ["size", "stride", "pad", "remainder", "groups",
                                             "bias", "std", "dilation"]
    assert conv.signature() == ("Conv(size, stride, pad=0, remainder=error, groups=1, bias=…, "
                                "std=…, dilation=1) xC")
    kinds = {p.name: p.kind for p in conv.params}
    assert kinds["remainder"] == ("error", "drop", "ceil") and kinds["size"] is Pair
    conv_pad, pool_pad = conv.param("pad"), OPS["MaxPool"].param("pad")
    assert conv_pad is not None and conv_pad.words == ("same",)
    assert pool_pad is not None and pool_pad.words == ()
    bias = conv.param("bias")
    assert kinds["bias"] is float and bias is not None and bias.default is None
    assert bias.words == ("false",)  # bias=false: no bias parameter
    assert OPS["Linear"] is OPS["FC"] and OPS["LRN"] is OPS["ResNorm"]


def test_a_malformed_record_or_a_second_name_fails_at_registration() -> None:
    @op_args
    class Untyped:
        n: list[int] = arg(positional=True)  # not a kind the language has

    with pytest.raises(TypeError, match=r"Untyped\.n"):
        params_of(Untyped)
    with pytest.raises(ValueError, match="'ReLU' is registered twice"):
        register(OpDef("ReLU", "again", NoArgs, "ReLU"))


def test_an_op_without_a_size_goes_through_every_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pass reads an argument by name: an op whose record has no `size` (as a BatchNorm's
    would not) checks, is reported and drawn beside the ops that do."""

    @op_args
    class ScaleArgs:
        factor: float = arg(positional=True, minimum=0.0, doc="multiplier")

    monkeypatch.setitem(OPS, "Scale", OpDef("Scale", "x·factor", ScaleArgs, "Scale(2)",
                                            tie=True))
    result = check("input 8x8x4\ntowers 2\nc: Conv(3,1, pad=1) x4 + Scale(2); ResNorm(3); "
                   "MaxPool(2,2)\nf: FC(2) + Scale(0.5) + Softmax\n")
    assert result.network is not None, [d.message for d in result.diagnostics]
    assert "+ Scale(2)" in report_text(result.network)
    layers = as_json(result.network, result.diagnostics, None)["layers"]
    assert [la["args"] for la in layers if la["op"] == "Scale"] == [{"factor": 2.0},
                                                                   {"factor": 0.5}]


@pytest.mark.parametrize("op", OP_DEFS, ids=IDS)
@pytest.mark.parametrize("amp", [False, True], ids=["fp32", "bf16"])
def test_what_each_op_keeps_for_backward_is_what_autograd_keeps(op: OpDef[object],
                                                                 amp: bool) -> None:
    """An op's `saves`, to the byte, on two towers merged and one tower per device."""
    net, _ = example(op)
    x = torch.randn(2, 4, 8, 8)  # N x C x H x W
    for merged in (True, False):
        model = build_module(net, devices=["cpu"] if merged else ["cpu", "cpu"], seed=0,
                             merge=merged).train()
        target = Target(2, "bf16" if amp else "fp32", "cpu",
                        devices=None if merged else (0, 0))
        planned = sum(d.kept.at(2) for d in plan(net, target).devices)
        assert planned == kept_for_backward(model, x, amp), (op.name, merged)


def test_map_norm_keeps_its_input_and_sees_its_window() -> None:
    """Shape kept, nothing learnt, no tower reading another's maps; its field is its
    input's grown by the window less one pixel, centred where it was."""
    result = check("input 9x9x4\ntowers 2\nc: Conv(3,1) x4; MapNorm(5) -> 7x7x4\nf: FC(2)\n")
    assert result.network is not None, [d.message for d in result.diagnostics]
    conv, norm = [la for la in result.network.layers() if la.stage == "c"]
    assert norm.shape == conv.shape and norm.counts.params == 0
    assert norm.tower.cross_bytes == 0
    assert (norm.field.h, norm.field.w, norm.field.stride_h) == (3 + 4, 3 + 4, 1)
    assert (norm.field.offset_h, norm.field.offset_w) == (conv.field.offset_h,
                                                          conv.field.offset_w)
    assert OPS["MapNorm"].bind({"size": 3}).k == 1.0  # Caffe's, cuda-convnet2's default


def test_map_norm_of_a_flat_vector_is_a_located_error() -> None:
    result = check("input 9x9x4\nf: FC(8); MapNorm(3)\n")
    (d,) = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    assert "MapNorm(3) needs HxWxC maps, but its input is a flat vector of 8 features" \
        in d.message
    assert (d.loc.line, d.loc.col) == (2, 11) and "before any FC" in d.hint  # at MapNorm
