"""Hypothesis strategies for specs: valid layer stacks with their closed-form shapes and counts.

The expected numbers here are computed independently of the compiler (plain arithmetic on the
generated choices), so a property test compares two implementations, not one with itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hypothesis import strategies as st

if TYPE_CHECKING:
    from alexnetc.compiler.pipeline import CheckResult


@dataclass
class SpecCase:
    """A generated spec and what a correct checker must say about it."""

    text: str
    towers: int
    input: tuple[int, int, int]
    stage_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    params: int = 0
    buffers: int = 0
    macs: int = 0
    neurons: int = 0


def _out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def _hw(h: int, w: int) -> str:
    """A size as a spec writes it: `3` when square, `1x7` otherwise."""
    return str(h) if h == w else f"{h}x{w}"


def _ceil_out(n: int, k: int, s: int, p: int) -> int:
    """Caffe's pooled length: windows until one covers the end, none starting past the input
    and its left padding."""
    out = -(-(n + 2 * p - k) // s) + 1
    return out - 1 if (out - 1) * s >= n + p else out


@st.composite
def valid_specs(draw: st.DrawFn, max_size: int = 32, max_channels: int = 8) -> SpecCase:
    """A small AlexNet-family spec: conv blocks (Conv, square or rectangular, strided,
    dilated or `pad=same`, optionally without bias and with a BatchNorm, + ReLU or PReLU,
    optional ResNorm and pool, floor or ceil), an optional global or adaptive pool, FCs."""
    towers = draw(st.sampled_from([1, 1, 2]))
    h = draw(st.integers(6, max_size))
    w = draw(st.sampled_from([h, draw(st.integers(6, max_size))]))
    c = draw(st.integers(1, 3))
    case = SpecCase("", towers, (h, w, c))
    lines = [f"network Gen\ninput {h}x{w}x{c}\ntowers {towers}"]
    n_conv = draw(st.integers(1, 3))
    for i in range(n_conv):
        if min(h, w) < 2:
            break
        kh = draw(st.integers(1, min(5, h)))
        kw = draw(st.sampled_from([*([kh] if kh <= w else []), draw(st.integers(1, min(5, w)))]))
        dil = draw(st.sampled_from([1, 1, 2]))
        if dil * (kh - 1) + 1 > h or dil * (kw - 1) + 1 > w:
            dil = 1
        span_h, span_w = dil * (kh - 1) + 1, dil * (kw - 1) + 1  # the dilated kernel's reach
        same = draw(st.integers(0, 4)) == 0
        stride_h = 1 if same else draw(st.integers(1, 3))
        stride_w = 1 if same else draw(st.sampled_from([stride_h, draw(st.integers(1, 3))]))
        pad_h = draw(st.integers(0, kh // 2))
        pad_w = draw(st.sampled_from([min(pad_h, kw // 2), draw(st.integers(0, kw // 2))]))
        drop = ((h + 2 * pad_h - span_h) % stride_h) or ((w + 2 * pad_w - span_w) % stride_w)
        groups = draw(st.sampled_from([1, towers])) if c % towers == 0 else 1
        unit = towers * groups
        out_c = unit * draw(st.integers(1, max(1, max_channels // unit)))
        kwargs = ["pad=same"] if same else [f"pad={_hw(pad_h, pad_w)}"] if pad_h or pad_w else []
        if dil > 1:
            kwargs.append(f"dilation={dil}")
        if groups > 1:
            kwargs.append(f"groups={groups}")
        if drop and not same:
            kwargs.append("remainder=drop")
        norm = draw(st.booleans())
        if norm:
            kwargs.append("bias=false")
        args = ", ".join([_hw(kh, kw), _hw(stride_h, stride_w), *kwargs])
        act = draw(st.sampled_from(["ReLU", "PReLU"]))
        ops = [f"Conv({args}) x{out_c}" + ("; BatchNorm" if norm else "") + f" + {act}"]
        if not same:
            h, w = _out(h, span_h, stride_h, pad_h), _out(w, span_w, stride_w, pad_w)
        per_out = kh * kw * (c // groups)
        case.params += per_out * out_c + (0 if norm else out_c)
        if norm:  # a scale and a shift per channel; a mean, a variance and the batch counter
            case.params += 2 * out_c
            case.buffers += 2 * out_c + 1
        if act == "PReLU":
            case.params += out_c
        case.macs += h * w * out_c * per_out
        case.neurons += h * w * out_c
        c = out_c
        if draw(st.booleans()):
            size = draw(st.sampled_from([1, 3, 5]))
            ops.append(f"ResNorm({size})")
        if min(h, w) >= 2 and draw(st.booleans()):
            pk = draw(st.integers(2, min(3, h, w)))
            ps = draw(st.integers(1, 2))
            pdrop = ((h - pk) % ps) or ((w - pk) % ps)
            ceil = bool(pdrop) and draw(st.booleans())
            remainder = ", remainder=ceil" if ceil else ", remainder=drop" if pdrop else ""
            ops.append(f"MaxPool({pk},{ps}{remainder})")
            pooled = _ceil_out if ceil else _out
            h, w = pooled(h, pk, ps, 0), pooled(w, pk, ps, 0)
        name = f"conv{i + 1}"
        case.stage_shapes[name] = (h, w, c)
        lines.append(f"{name}: " + "; ".join(ops) + f" -> {h}x{w}x{c}")
    pool = draw(st.sampled_from(["", "", "GlobalAvgPool", "AdaptiveAvgPool"]))
    if pool:
        h = w = 1 if pool == "GlobalAvgPool" else draw(st.integers(1, 3))
        call = pool if pool == "GlobalAvgPool" else f"{pool}({h})"
        lines.append(f"pool: {call} -> {h}x{w}x{c}")
        case.stage_shapes["pool"] = (h, w, c)
    features = h * w * c
    n_fc = draw(st.integers(0, 2))
    for j in range(n_fc):
        out = towers * draw(st.integers(1, 8))
        case.params += features * out + out
        case.macs += features * out
        case.neurons += out
        features = out
        dropout = "; Dropout(0.5)" if draw(st.booleans()) else ""
        lines.append(f"fc{j + 1}: FC({out}) + ReLU{dropout}")
        case.stage_shapes[f"fc{j + 1}"] = (out,)
    classes = towers * draw(st.integers(1, 5))
    case.params += features * classes + classes
    case.macs += features * classes
    case.neurons += classes
    lines.append(f"out: FC({classes}) + Softmax -> {classes}")
    case.stage_shapes["out"] = (classes,)
    case.text = "\n".join(lines) + "\n"
    return case


# --- networks that branch -----------------------------------------------------------------
#
# Every window here keeps the maps' size (1x1 convs, 3x3 convs and pools with pad=1, stride 1),
# so any stage may read any stage above it; the arithmetic is a conv's k·k·Cin·Cout weights,
# Cout biases, H·W·Cout neurons and H·W·Cout·k·k·Cin multiply-adds, whatever the graph.


@dataclass
class DagCase:
    """A generated branching spec: stages that read named stages, Concat and Add merges,
    blocks with parameters instantiated (and repeated); what a correct checker must say."""

    text: str
    towers: int
    input: tuple[int, int, int]
    stage_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    params: int = 0
    macs: int = 0
    neurons: int = 0


@dataclass(frozen=True)
class _DagOp:
    """A conv (`channels` a number, or a block parameter's name; `size` 1 or 3, or None for
    the block's `k` parameter), or a stride-1 pool (`pool` its op name)."""

    pool: str | None = None
    size: int | None = 1
    channels: int | str = 0
    relu: bool = False

    def text(self) -> str:
        if self.pool:
            return f"{self.pool}(3,1, pad=1)"
        window = "k,1, pad=p" if self.size is None else \
            "1,1" if self.size == 1 else "3,1, pad=1"
        return f"Conv({window}) x{self.channels}" + (" + ReLU" if self.relu else "")


@dataclass(frozen=True)
class _Branch:
    name: str
    source: str  # the stage it reads
    ops: tuple[_DagOp, ...]
    named: bool = True  # False: written without `(source)`, as it is the stage above


@dataclass(frozen=True)
class _Module:
    """Branches merged by one stage, `merge(branches…, extra…): Concat|Add [+ ReLU]`."""

    branches: tuple[_Branch, ...]
    extra: tuple[str, ...]  # stages merged as they are (Add: a shortcut)
    merge: str
    relu: bool
    out: str

    def lines(self) -> list[str]:
        lines = [f"{b.name}{f'({b.source})' if b.named else ''}: "
                 + "; ".join(op.text() for op in b.ops) for b in self.branches]
        inputs = ", ".join([*(b.name for b in self.branches), *self.extra])
        return [*lines, f"{self.out}({inputs}): {self.merge}" + (" + ReLU" if self.relu else "")]


def _run_module(case: DagCase, module: _Module, channels: dict[str, int],
                env: dict[str, int], prefix: str, hw: tuple[int, int]) -> int:
    """Count a module's convs into `case` and record its stages' shapes (names under
    `prefix`); `channels` maps each readable stage to its channel count and gains the
    module's stages. Its output's channel count."""
    h, w = hw
    for b in module.branches:
        c = channels[b.source]
        for op in b.ops:
            if op.pool:
                continue
            k = env["k"] if op.size is None else op.size
            out = env[op.channels] if isinstance(op.channels, str) else op.channels
            case.params += k * k * c * out + out
            case.macs += h * w * out * k * k * c
            case.neurons += h * w * out
            c = out
        channels[b.name] = c
        case.stage_shapes[prefix + b.name] = (h, w, c)
    merged = [channels[n] for n in (*(b.name for b in module.branches), *module.extra)]
    c = sum(merged) if module.merge == "Concat" else merged[0]
    assert module.merge == "Concat" or len(set(merged)) == 1  # the generator's own rule
    channels[module.out] = c
    case.stage_shapes[prefix + module.out] = (h, w, c)
    return c


@st.composite
def _branch_ops(draw: st.DrawFn, end: int | str | None, params: list[str],
                kernel: bool, unit: int) -> tuple[_DagOp, ...]:
    """One to three ops; with `end`, the last conv has that many channels (an Add's input)
    and nothing after it but pools."""
    ops: list[_DagOp] = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 3)) == 0:  # a branch of pools only passes its input through
            ops.append(_DagOp(pool=draw(st.sampled_from(["MaxPool", "AvgPool"]))))
            continue
        size = draw(st.sampled_from([1, 3, *([None] if kernel else [])]))
        named = bool(params) and draw(st.booleans())  # a block parameter's channels
        channels = draw(st.sampled_from(params)) if named else unit * draw(st.integers(1, 6))
        ops.append(_DagOp(size=size, channels=channels, relu=draw(st.booleans())))
    if end is not None:
        convs = [i for i, op in enumerate(ops) if op.pool is None]
        if not convs:
            ops.insert(0, _DagOp(size=1, channels=end))
        else:
            last = ops[convs[-1]]
            ops[convs[-1]] = _DagOp(size=last.size, channels=end, relu=last.relu)
    return tuple(ops)


@st.composite
def _module(draw: st.DrawFn, names: list[str], prefix: str, out: str,
            shortcuts: list[str], params: list[str], add_channels: int | str,
            kernel: bool, unit: int) -> _Module:
    """A module whose branches read `names` (or each other); Add merges may also take a
    stage of `shortcuts` (those with the Add's channel count) as it is."""
    merge = draw(st.sampled_from(["Concat", "Add"]))
    end = add_channels if merge == "Add" else None
    branches: list[_Branch] = []
    readable = list(names)
    for j in range(draw(st.integers(1, 3))):
        source = draw(st.sampled_from(readable))
        above = branches[-1].name if branches else names[-1]
        ops = draw(_branch_ops(end, params, kernel, unit))
        name = f"{prefix}b{j + 1}"
        branches.append(_Branch(name, source, ops, source != above or draw(st.booleans())))
        readable.append(name)
    extra = [draw(st.sampled_from(shortcuts))] if merge == "Add" and shortcuts and \
        draw(st.booleans()) else []
    if len(branches) + len(extra) < 2:
        branches.append(_Branch(f"{prefix}b{len(branches) + 1}", draw(st.sampled_from(names)),
                                draw(_branch_ops(end, params, kernel, unit))))
    return _Module(tuple(branches), tuple(extra), merge, draw(st.booleans()), out)


@st.composite
def dag_specs(draw: st.DrawFn) -> DagCase:
    """A stem, then one to three units, each either a module written out at the top level
    or a stage of block instances (one block, called with one to two argument lists, each
    repeated one to three times); then global pooling and an FC classifier."""
    towers = draw(st.sampled_from([1, 1, 2]))  # each conv's and FC's maps split evenly
    h, w = draw(st.integers(3, 9)), draw(st.integers(3, 9))
    c = draw(st.integers(1, 3))
    case = DagCase("", towers, (h, w, c))
    channels: dict[str, int] = {"input": c}
    stem = towers * draw(st.integers(1, 6))
    case.params += 9 * c * stem + stem
    case.macs += h * w * stem * 9 * c
    case.neurons += h * w * stem
    channels["stem"] = stem
    case.stage_shapes["stem"] = (h, w, stem)
    blocks: list[str] = []
    lines = ["stem: Conv(3,1, pad=1) x" + str(stem) + " + ReLU"]
    top = ["input", "stem"]
    for u in range(1, draw(st.integers(1, 3)) + 1):
        if draw(st.booleans()):
            add = towers * draw(st.integers(1, 6))
            module = draw(_module(top, f"u{u}", f"u{u}", [n for n in top if channels[n] == add],
                                  [], add, False, towers))
            _run_module(case, module, channels, {}, "", (h, w))
            lines += module.lines()
            top += [*(b.name for b in module.branches), module.out]
        else:
            lines += _block_unit(draw, case, f"u{u}", top, channels, blocks, (h, w), towers)
            top.append(f"u{u}")
    classes = towers * draw(st.integers(1, 5))
    last = channels[top[-1]]
    case.params += last * classes + classes
    case.macs += last * classes
    case.neurons += classes
    lines.append(f"out: GlobalAvgPool; FC({classes})")
    case.stage_shapes["out"] = (classes,)
    case.text = f"network Dag\ninput {h}x{w}x{c}\ntowers {towers}\n" + "\n".join(
        [*blocks, *lines]) + "\n"
    return case


def _block_unit(draw: st.DrawFn, case: DagCase, name: str, top: list[str],
                channels: dict[str, int], blocks: list[str], hw: tuple[int, int],
                unit: int) -> list[str]:
    """Define a block and instantiate it in stage `name`; the stage's lines."""
    source = draw(st.sampled_from(top))
    cin = channels[source]
    params = [f"c{i}" for i in range(1, draw(st.integers(1, 3)) + 1)]
    kernel = draw(st.booleans())
    # Add may take the instance's input as it is (its channels split over the towers)
    shortcut = cin % unit == 0 and draw(st.booleans())
    module = draw(_module(["in"], "", "out", ["in"] if shortcut else [], params, "c1", kernel,
                          unit))
    if "in" in module.extra:  # then every instance reads and gives c1 = its input's channels
        values = [[cin] + [unit * draw(st.integers(1, 6)) for _ in params[1:]]]
        repeats = [draw(st.integers(1, 3))]
    else:
        values = [[unit * draw(st.integers(1, 6)) for _ in params]
                  for _ in range(draw(st.integers(1, 2)))]
        repeats = [draw(st.integers(1, 3)) for _ in values]
    header = ", ".join([*params, *(["k", "p=0"] if kernel else [])])
    blocks.append(f"block {name}blk({header}) {{\n  "
                  + "\n  ".join(module.lines()) + "\n}")
    total = sum(repeats)
    calls = []
    i = 0
    for vals, n in zip(values, repeats, strict=True):
        env = dict(zip(params, vals, strict=True))
        named = draw(st.booleans())  # every parameter by name, in any order
        args = [f"{k}={v}" if named else str(v) for k, v in env.items()]
        if kernel:
            env["k"] = draw(st.sampled_from([1, 3]))
            args += [f"k={env['k']}", *(["p=1"] if env["k"] == 3 else [])]
        if named:
            args = draw(st.permutations(args))
        calls.append(f"{name}blk({', '.join(args)})" + (f" * {n}" if n > 1 else ""))
        for _ in range(n):
            inner = {"in": cin}
            prefix = f"{name}.{i}." if total > 1 else f"{name}."
            cin = _run_module(case, module, inner, env, prefix, hw)
            i += 1
    channels[name] = cin
    above = top[-1]
    reads = "" if source == above and draw(st.booleans()) else f"({source})"
    return [f"{name}{reads}: " + "; ".join(calls)]


def checked_as_stated(case: SpecCase | DagCase, file: str) -> CheckResult:
    """A generated case checked: it must check, with every stage's shape and the parameter,
    multiply-add and neuron totals its closed form states."""
    from alexnetc.compiler.errors import Severity
    from alexnetc.compiler.pipeline import check

    result = check(case.text, file)
    errs = [d.render(case.text) for d in result.diagnostics if d.severity is Severity.ERROR]
    assert result.network is not None, "\n".join(errs) + "\n" + case.text
    net = result.network
    assert {layer.stage: layer.shape.dims() for layer in net.layers()} == case.stage_shapes
    total = net.total()
    assert (total.params, total.macs, total.neurons) == (case.params, case.macs, case.neurons)
    return result
