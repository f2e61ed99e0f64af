"""What runs is what the checker states: parameter counts, stage shapes, tower bytes, and
numbers equal to a plain whole-tensor PyTorch reference, for the repository's specs and for
random valid specs."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from alexnetc.backends.lowering import (
    AlexnetcModule,
    StageModule,
    assemble,
    build_module,
    count_cross_bytes,
)
from alexnetc.backends.lowering.export import export_program
from alexnetc.backends.lowering.layers import Sharded
from alexnetc.compiler.errors import RESERVED, SpecError
from alexnetc.compiler.graph import (
    ALEXNETC_MODULE_ATTRIBUTES,
    INPUT,
    NN_MODULE_ATTRIBUTES,
    CheckedNetwork,
    reserved_stage_name,
)
from alexnetc.compiler.passes import verify
from alexnetc.compiler.pipeline import check, check_file, load

from helpers import SPECS
from strategies import valid_specs

SPEC_FILES = sorted(SPECS.glob("*.net"))
PROPERTY = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def run_with_hooks(model: AlexnetcModule,
                   x: torch.Tensor) -> tuple[torch.Tensor, dict[str, tuple[int, ...]]]:
    """The output, and each stage's whole output shape per image in the checker's H x W x C."""
    seen: dict[str, tuple[int, ...]] = {}

    def hook(stage, args, out):
        whole = assemble(out, stage.layout)  # N x C (x H x W)
        assert whole.shape[0] == x.shape[0]
        dims = tuple(whole.shape[1:])
        seen[stage.stage] = dims if len(dims) == 1 else (dims[1], dims[2], dims[0])

    handles = [model.get_submodule(n).register_forward_hook(hook) for n in model.stage_names]
    try:
        y = model(x)
    finally:
        for h in handles:
            h.remove()
    return y, seen


def checker_shapes(net: CheckedNetwork) -> dict[str, tuple[int, ...]]:
    return {name: layers[-1].shape.dims() for name, layers in net.stages()}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def image(net: CheckedNetwork, batch: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, net.input.c, net.input.h, net.input.w, generator=g)


def reference_forward(net: CheckedNetwork, model: AlexnetcModule, x: torch.Tensor) -> torch.Tensor:
    """The network on whole tensors with stock torch ops (eval mode, logits), each layer on
    the outputs it reads: towers matter only to LRN, whose window stays inside each tower's
    channels once they are split, and to Concat, which joins each tower's shares (the whole
    activation interleaves its inputs by tower)."""
    towers, last = net.towers, list(net.layers())[-1].id
    out: dict[str, torch.Tensor] = {INPUT: x}
    split: dict[str, bool] = {INPUT: False}  # whether the maps are cut over the towers
    for name, layers in net.stages():
        shards = iter(m for m in model.get_submodule(name).children() if isinstance(m, Sharded))
        for layer in layers:
            a, op = layer.args, layer.op.name
            x, cut = out[layer.inputs[0]], any(split[i] for i in layer.inputs)
            if op in ("Conv", "FC"):
                sh = next(shards).towers
                w = _joined(sh, "weight")
                b = None if sh[0].bias is None else _joined(sh, "bias")
                if op == "Conv":
                    pad = "same" if a.pad == "same" else a.pad.hw
                    x = F.conv2d(x, w, b, a.stride.hw, pad, a.dilation.hw, a.groups)
                else:
                    x = F.linear(x.flatten(1), w, b)
                cut = True
            elif op == "Concat":
                shares = layer.tower.shares  # 1: the inputs whole, side by side
                x = torch.cat([out[i].unflatten(1, (shares, -1)) for i in layer.inputs],
                              2).flatten(1, 2)  # N x ΣCi (x H x W), tower by tower
            elif op == "Add":
                x = sum((out[i] for i in layer.inputs[1:]), x)
            elif op in ("BatchNorm", "PReLU"):
                cat = partial(_joined, next(shards).towers)
                x = (F.prelu(x, cat("weight")) if op == "PReLU" else
                     F.batch_norm(x, cat("running_mean"), cat("running_var"), cat("weight"),
                                  cat("bias"), False, 0.0, a.eps))
            elif op in ("ReLU", "Tanh", "Sigmoid", "ReLU6"):
                x = {"ReLU": torch.relu, "Tanh": torch.tanh, "Sigmoid": torch.sigmoid,
                     "ReLU6": F.relu6}[op](x)
            elif op == "LeakyReLU":
                x = F.leaky_relu(x, a.slope)
            elif op == "ResNorm":
                parts = x.chunk(towers, 1) if cut or x.shape[1] % towers == 0 else (x,)
                x = torch.cat([_paper_lrn(p, a.size, a.alpha, a.beta, a.k) for p in parts], 1)
            elif op in ("MaxPool", "AvgPool"):
                pool = F.max_pool2d if op == "MaxPool" else F.avg_pool2d
                x = pool(x, a.size.hw, a.stride.hw, a.pad.hw, ceil_mode=a.remainder == "ceil")
            elif op in ("AdaptiveAvgPool", "GlobalAvgPool"):
                x = F.adaptive_avg_pool2d(x, a.size.hw if op == "AdaptiveAvgPool" else 1)
            elif op == "Softmax" and layer.id != last:
                x = torch.softmax(x, 1)
            out[layer.id], split[layer.id] = x, cut
    x = out[last]
    return x.flatten(1) if net.class_vector else x


def _joined(shards: torch.nn.ModuleList, name: str) -> torch.Tensor:
    return torch.cat([getattr(s, name).cpu() for s in shards])


def _paper_lrn(x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    out = torch.empty_like(x)
    for i in range(x.shape[1]):
        lo, hi = max(0, i - size // 2), min(x.shape[1], i + size // 2 + 1)
        out[:, i] = x[:, i] / (k + alpha * (x[:, lo:hi] ** 2).sum(1)) ** beta
    return out


class RecordOps(TorchDispatchMode):
    """Every aten op that runs (allocations included) while active."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def assert_lowering_states_the_checker(net: CheckedNetwork, batches=(1, 3)) -> None:
    """Parameter count, stage shapes, bytes between towers and the reference's numbers."""
    model = build_module(net, devices=["cpu"] * net.towers, seed=1, merge=False).eval()
    assert n_params(model) == net.total().params
    assert {n for n in model.stage_names} == {n for n, _ in net.stages()}
    with torch.no_grad():
        for i, batch in enumerate(batches):
            x = image(net, batch)
            with count_cross_bytes() as moved:
                y, shapes = run_with_hooks(model, x)
            assert shapes == checker_shapes(net)
            for layer in net.layers():
                assert moved.get(layer.id, 0) == layer.tower.cross_bytes * batch, layer.id
            ends_gathered = net.towers == 1 or list(net.layers())[-1].op.name == "Softmax"
            assert ("output" in moved) == (not ends_gathered)
            if i == 0:  # the numbers, once: the reference is slow on big specs
                torch.testing.assert_close(y, reference_forward(net, model, x), rtol=1e-4,
                                           atol=1e-5)


@pytest.mark.parametrize("path", SPEC_FILES, ids=[p.stem for p in SPEC_FILES])
def test_every_spec_counts_and_shapes(path: Path):
    result = check_file(path)
    if result.network is None:  # specs/ also shows the checker's errors: nothing to build
        with pytest.raises(SpecError):
            load(path)
        return
    assert_lowering_states_the_checker(result.network)


# --- random valid specs -----------------------------------------------------------------------

@st.composite
def lowering_specs(draw: st.DrawFn) -> str:
    """Specs exercising what the lead's strategy leaves out: 3 towers, groups that cut
    through towers, Tanh/Sigmoid/ReLU6/LeakyReLU/PReLU, BatchNorm (on maps and flat), convs
    and FCs without bias, AvgPool, padding and ceil on pools, global pooling, init overrides,
    flat LRN."""
    towers = draw(st.sampled_from([1, 2, 3]))
    h, w, c = draw(st.integers(4, 20)), draw(st.integers(4, 20)), draw(st.integers(1, 4))
    lines = [f"input {h}x{w}x{c}", f"towers {towers}"]
    for i in range(draw(st.integers(1, 3))):
        k = draw(st.integers(1, 4))
        groups = draw(st.sampled_from([g for g in (1, 2, 3, towers, 2 * towers) if c % g == 0]))
        out = math.lcm(groups, towers) * draw(st.integers(1, 3))
        args = [str(k), str(draw(st.integers(1, 2))), f"pad={draw(st.integers(0, k // 2))}",
                f"groups={groups}", "remainder=drop"]
        norm = draw(st.booleans())
        if norm:
            args.append("bias=false")
        elif draw(st.booleans()):
            args.append(f"std={draw(st.sampled_from([0.1, 0.5]))}, bias=0.1")
        act = draw(st.sampled_from(["ReLU", "Tanh", "ReLU6", "LeakyReLU(0.2)", "PReLU"]))
        ops = [f"Conv({', '.join(args)}) x{out}" + ("; BatchNorm" if norm else "") + f" + {act}"]
        if draw(st.booleans()):
            ops.append(f"ResNorm({draw(st.sampled_from([1, 3, 5]))}, alpha=0.01, k=1)")
        if draw(st.booleans()):
            size = draw(st.integers(1, 3))
            ops.append(f"{draw(st.sampled_from(['MaxPool', 'AvgPool']))}({size},"
                       f"{draw(st.integers(1, 2))}, pad={draw(st.integers(0, size // 2))}, "
                       f"remainder={draw(st.sampled_from(['drop', 'ceil']))})")
        lines.append(f"c{i}: " + "; ".join(ops))
        c = out
    fcs = draw(st.integers(0, 2))
    for j in range(fcs):
        tail = draw(st.sampled_from(["", " + Sigmoid", " + ReLU; ResNorm(3)", "; Dropout(0.3)",
                                     ", bias=false); BatchNorm + ReLU", " + PReLU"]))
        call = f"FC({towers * draw(st.integers(1, 4))}"  # the tail closes it or adds bias=
        lines.append(f"f{j}: {call}" + (tail if tail.startswith(",") else f"){tail}"))
    if draw(st.booleans()):
        lines.append(f"out: FC({towers * 2}) + Softmax")
    elif not fcs and draw(st.booleans()):
        lines.append("g: GlobalAvgPool")  # a final 1x1xC map: the class vector
    return "\n".join(lines) + "\n"


@PROPERTY
@given(case=valid_specs(max_size=16, max_channels=6))
def test_random_valid_specs_lower_as_checked(case):
    result = check(case.text)
    assert result.network is not None, case.text
    assert_lowering_states_the_checker(result.network, batches=(1, 2))


@PROPERTY
@given(text=lowering_specs())
def test_random_lowering_specs_lower_as_checked(text):
    result = check(text)
    assume(result.ok)
    assert result.network is not None
    assert_lowering_states_the_checker(result.network, batches=(2,))


@PROPERTY
@given(case=valid_specs(max_size=16, max_channels=6), data=st.data())
def test_rejected_inputs_never_reach_a_tensor(case, data, tmp_path_factory):
    net = check(case.text).network
    assert net is not None
    model = build_module(net, devices=["cpu"])
    h, w, c = case.input
    bad = data.draw(st.sampled_from([(1, c, h + 1, w), (1, c + 1, h, w), (2, c, h, w + 3),
                                     (c, h, w)]))
    x = torch.empty(bad)
    with RecordOps() as rec, pytest.raises(ValueError, match=f"N x {c} x {h} x {w}"):
        model(x)
    assert rec.ops == []
    # an input the checker rejects: no network, so nothing to build
    small = case.text.replace(f"input {h}x{w}x{c}", f"input 1x1x{c}")
    spec = tmp_path_factory.mktemp("bad") / "bad.net"
    spec.write_text(small)
    if not check(small).ok:
        with pytest.raises(SpecError):
            load(spec)


def test_build_module_refuses_anything_but_a_checked_network():
    result = check("input 8x8x3\nc: Conv(9,1) x4\n")
    assert not result.ok
    not_checked: Any = result.network  # None, passed on purpose: the refusal is the test
    with pytest.raises(TypeError, match="CheckedNetwork"):
        build_module(not_checked)


def test_stage_names_that_clash_with_module_attributes_are_refused(monkeypatch):
    result = check("input 2x2x1\nforward: ReLU\n", "clash.net")
    assert result.network is None  # the checker refuses the name, located
    (d,) = result.diagnostics
    assert d.kind == RESERVED and (d.loc.line, d.loc.col) == (2, 1) and "forward_1" in d.hint
    # should a name slip past the checker, the lowering still refuses it with a SpecError
    monkeypatch.setattr(verify, "reserved_stage_name", lambda name: None)
    result = check("input 2x2x1\nforward: ReLU\n", "clash.net")
    assert result.network is not None
    with pytest.raises(SpecError, match="'forward' clashes") as caught:
        build_module(result.network)
    (d,) = caught.value.diagnostics
    assert d.kind == RESERVED and str(d.loc) == "clash.net:2:1" and "forward_1" in d.hint


def _attribute_names(model: AlexnetcModule) -> set[str]:
    """Every name a stage could clash with: the class's and an instance's attributes."""
    names = set(dir(AlexnetcModule)) | set(dir(model))
    return {n for n in names if n.isidentifier()} - set(model.stage_names)


def test_reserved_stage_names_cover_the_module_class():
    """The checker's static list of reserved names (it never imports torch) covers every
    attribute of the lowered module, so a torch upgrade that adds one fails here."""
    result = check("input 6x6x1\ntowers 2\nc: Conv(3,1) x2 + ReLU\nout: FC(2) + Softmax\n")
    assert result.network is not None
    model = build_module(result.network, devices=["cpu", "cpu"], merge=False)
    missing = sorted(n for n in _attribute_names(model) if reserved_stage_name(n) is None)
    assert missing == [], f"add to alexnetc.compiler.graph's reserved names: {missing}"
    public = {n for n in _attribute_names(model) if not n.startswith("_")}
    assert public <= NN_MODULE_ATTRIBUTES | ALEXNETC_MODULE_ATTRIBUTES


@settings(max_examples=40, deadline=None)
@given(name=st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}", fullmatch=True))
def test_every_stage_name_the_checker_accepts_lowers(name):
    result = check(f"input 2x2x1\n{name}: ReLU\n")
    if result.network is None:  # a keyword (`train`) or a reserved name: refused, located
        assert all(d.loc.line == 2 for d in result.diagnostics)
        return
    model = build_module(result.network, devices=["cpu"])
    assert model.stage_names == [name] and isinstance(getattr(model, name), StageModule)
    assert list(model.state_dict()) == [] and model(torch.ones(1, 1, 2, 2)).shape == (1, 1, 2, 2)


@pytest.mark.parametrize("name", ["forward", "eval", "type", "state_dict", "predict",
                                  "final_softmax", "training", "net", "_tower0", "__init__",
                                  "class", "None", "lambda"])
def test_names_that_break_compile_are_refused_by_the_checker(name):
    result = check(f"input 4x4x1\n{name}: Conv(3,1) x2 + ReLU\nfc: FC(2) + Softmax\n")
    assert result.network is None
    assert [d.kind for d in result.diagnostics] == [RESERVED]
    fixed = result.diagnostics[0].hint.split("`")[1].rstrip(":")
    assert check(f"input 4x4x1\n{fixed}: Conv(3,1) x2 + ReLU\nfc: FC(2) + Softmax\n").ok


@pytest.mark.parametrize("name", ["class_1", "self", "print", "match", "x", "conv", "model"])
def test_accepted_stage_names_survive_torch_export(name, tmp_path):
    """Python keywords broke torch.export's generated code; names near them do not."""
    text = f"input 4x4x1\n{name}: Conv(3,1) x2 + ReLU\nfc: FC(2) + Softmax\n"
    result = check(text)
    assert result.network is not None
    export_program(result.network, result.recipe, text.encode(), tmp_path / "m.pt2")
    program = torch.export.load(str(tmp_path / "m.pt2")).module()
    assert program(torch.ones(3, 1, 4, 4)).shape == (3, 2)
