"""Hypothesis strategies for specs: valid layer stacks with their closed-form shapes and counts.

The expected numbers here are computed independently of the compiler (plain arithmetic on the
generated choices), so a property test compares two implementations, not one with itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st


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
