"""One conversion per cuda-convnet2 layer type: the output shape by layer.py's own rules,
and the spec ops (with the conventions they convert said in comments)."""

from __future__ import annotations

import math
import re

from alexnetc.importers.convnet2.core import Layer, Maps, Node, Reader, finite, value
from alexnetc.importers.draft import Op, number
from alexnetc.importers.source import INCONSISTENT, MALFORMED


def input_shapes(r: Reader, layer: Layer) -> list[Maps]:
    return [r.shapes[n] for n in layer.inputs]


def layer_shape(r: Reader, layer: Layer) -> Maps:
    """cuda-convnet2's output size of one layer (one GPU's, for twins)."""
    if layer.kind == "data":
        return data_shape(r, layer)
    ins = input_shapes(r, layer)
    if layer.kind == "conv":
        return conv_shape(r, layer, ins)
    if layer.kind == "fc":
        outputs = r.integer(layer, "outputs")
        if outputs < 1:
            r.fail(INCONSISTENT, r.value_loc(layer, "outputs"),
                      f"layer '{layer.name}' has {outputs} outputs", "give at least 1")
        return Maps(1, 1, outputs, True)
    if layer.kind == "pool":
        return pool_shape(r, layer, ins[0])
    if layer.kind in ("concat", "pass"):
        return concat_shape(r, layer, ins)
    if layer.kind == "eltsum" and len(set(ins)) > 1:
        r.fail(INCONSISTENT, r.value_loc(layer, "inputs"), f"layer '{layer.name}' "
                  "adds layers of different sizes: " + ", ".join(map(str, ins)),
                  "cuda-convnet2 needs inputs of one dimensionality")
    if layer.kind in ("cmrnorm", "rnorm"):
        check_channels(r, layer, "channels", [r.integer(layer, "channels")], ins)
    if layer.kind == "rnorm":
        check_window(r, layer, ins[0])
    return ins[0]


def data_shape(r: Reader, layer: Layer) -> Maps:
    images = [la for la in r.layers.values() if la.kind == "data" and
              not r.is_labels(la) and any(la.name in o.inputs for o in r.layers.values())]
    if len(images) > 1 and layer is images[1]:
        r.unsupported(layer.section.loc, layer, f"data layer '{layer.name}' is a second "
                         f"input beside '{images[0].name}': an alexnetc network has one")
    if r.options.input is None:
        r.fail(INCONSISTENT, layer.section.loc, f"the size of data layer "
                  f"'{layer.name}' is not in the file: cuda-convnet2 takes it from its "
                  "data provider", "pass --input HxWxC, e.g. --input 224x224x3 (its "
                  "--inner-size 224 on colour images)")
    h, w, c = r.options.input
    start = r.integer(layer, "start", 0)
    end = r.integer(layer, "end", start + h * w * c)
    if end - start != h * w * c:
        r.fail(INCONSISTENT, r.value_loc(layer, "end"), f"data layer '{layer.name}' "
                  f"takes {end - start} values (end − start), but --input {h}x{w}x{c} has "
                  f"{h * w * c}", "make --input match the data layer")
    return Maps(h, w, c)


def check_channels(r: Reader, layer: Layer, key: str, channels: list[int],
                   ins: list[Maps]) -> None:
    for n, want, got in zip(layer.inputs, channels, ins, strict=True):
        if got.flat:
            r.unsupported(r.value_loc(layer, "inputs"), layer,
                             f"layer '{layer.name}' reads '{n}', {got.c} values with no "
                             "maps, as images: alexnetc keeps an FC's output flat")
        if want != got.c:
            r.fail(INCONSISTENT, r.value_loc(layer, key), f"layer '{layer.name}' "
                      f"says its input has {want} channels, but '{n}' gives {got.c} "
                      f"({got})", f"write `{key}={got.c}`")


def check_window(r: Reader, layer: Layer, into: Maps) -> None:
    """layer.py: an rnorm's `size` is 1 to the image's side."""
    size = r.integer(layer, "size")
    if not 1 <= size <= min(into.h, into.w):
        r.fail(INCONSISTENT, r.value_loc(layer, "size"), f"`size` of layer "
                  f"'{layer.name}' must be in 1..{min(into.h, into.w)} (its input is "
                  f"{into})")


def conv_shape(r: Reader, layer: Layer, ins: list[Maps]) -> Maps:
    n = len(layer.inputs)
    channels = r.integers(layer, "channels", count=n)
    check_channels(r, layer, "channels", channels, ins)
    padding = r.integers(layer, "padding", 0, n)
    stride = r.integers(layer, "stride", 1, n)
    size = r.integers(layer, "filterSize", count=n)
    filters = r.integers(layer, "filters", count=n)
    groups = r.integers(layer, "groups", 1, n)
    for key, vals in (("padding", padding), ("stride", stride), ("filterSize", size),
                      ("groups", groups)):
        if len(set(vals)) > 1:
            r.unsupported(r.value_loc(layer, key), layer, f"layer '{layer.name}' "
                             f"takes a different {key} for each input: alexnetc's conv "
                             "has one window")
        if min(vals) < (0 if key == "padding" else 1):
            r.fail(INCONSISTENT, r.value_loc(layer, key), f"`{key}` of layer "
                      f"'{layer.name}' must be at least {0 if key == 'padding' else 1}")
    if n > 1 and groups[0] > 1:
        r.unsupported(r.value_loc(layer, "groups"), layer, f"layer '{layer.name}' "
                         "has groups on several inputs: alexnetc groups one input's channels")
    for c in channels:
        if c % groups[0]:
            r.fail(INCONSISTENT, r.value_loc(layer, "groups"), f"groups={groups[0]} "
                      f"does not divide the {c} channels of layer '{layer.name}'")
    if len({f * groups[0] for f in filters}) > 1:
        r.fail(INCONSISTENT, r.value_loc(layer, "filters"), f"layer "
                  f"'{layer.name}' gives each input a different number of filters",
                  "cuda-convnet2 sums the inputs' convolutions: give each the same")
    p, s, k = padding[0], stride[0], size[0]
    if p > k // 2:
        r.unsupported(r.value_loc(layer, "padding"), layer, f"layer '{layer.name}' "
                         f"pads {p} pixels, more than half its {k}-pixel filter: alexnetc "
                         "pads at most half a window")
    if not r.flag(layer, "sharedBiases", True):
        r.unsupported(r.value_loc(layer, "sharedBiases"), layer, f"layer "
                         f"'{layer.name}' has a bias per position (sharedBiases=false): "
                         "alexnetc's conv has one per filter")
    if r.entry(layer, "weightSource") is not None:
        r.unsupported(r.value_loc(layer, "weightSource"), layer, f"layer "
                         f"'{layer.name}' shares another layer's weights: alexnetc's "
                         "layers each have their own")
    if len({(m.h, m.w) for m in ins}) > 1:
        r.fail(INCONSISTENT, r.value_loc(layer, "inputs"), f"layer '{layer.name}' "
                  "reads maps of different sizes: " + ", ".join(map(str, ins)),
                  "cuda-convnet2 needs every input's output grid to agree")
    h, w = (_conv_out(x + 2 * p, k, s) for x in (ins[0].h, ins[0].w))
    if min(h, w) < 1:
        r.fail(INCONSISTENT, r.value_loc(layer, "filterSize"), f"the {k}-pixel "
                  f"filter of layer '{layer.name}' is larger than its {ins[0].h}x"
                  f"{ins[0].w} input padded by {p}")
    modules = r.integer(layer, "modulesX", 0)
    if modules and modules != h:
        r.unsupported(r.value_loc(layer, "modulesX"), layer, f"layer '{layer.name}' "
                         f"sets modulesX={modules}, not the {h} that cover its input: "
                         "alexnetc's windows cover the input")
    return Maps(h, w, filters[0] * groups[0])


def pool_shape(r: Reader, layer: Layer, into: Maps) -> Maps:
    check_channels(r, layer, "channels", [r.integer(layer, "channels")], [into])
    size, stride = r.integer(layer, "sizeX"), r.integer(layer, "stride")
    start, outputs = r.integer(layer, "start", 0), r.integer(layer, "outputsX", 0)
    kind = r.text(layer, "pool")
    if kind not in ("max", "avg", "maxabs"):
        r.fail(MALFORMED, r.value_loc(layer, "pool"), f"`pool` of layer "
                  f"'{layer.name}' must be max, avg or maxabs, got {kind!r}")
    if not 1 <= size <= min(into.h, into.w):
        r.fail(INCONSISTENT, r.value_loc(layer, "sizeX"), f"`sizeX` of layer "
                  f"'{layer.name}' must be in 1..{min(into.h, into.w)} (its input is "
                  f"{into})")
    if not 1 <= stride <= size:
        r.fail(INCONSISTENT, r.value_loc(layer, "stride"), f"`stride` of layer "
                  f"'{layer.name}' must be in 1..{size} (sizeX)", "cuda-convnet2 takes no "
                  "stride larger than the pool")
    if kind == "avg" and r.flag(layer, "sum", False):
        r.unsupported(r.value_loc(layer, "sum"), layer, f"layer '{layer.name}' sums "
                         "its windows (sum=true): alexnetc's AvgPool takes their mean")
    if kind == "maxabs":
        r.unsupported(r.value_loc(layer, "pool"), layer, f"layer '{layer.name}' "
                         "pools by largest magnitude (maxabs): alexnetc's pools take the "
                         "max or the mean")
    if start:
        r.unsupported(r.value_loc(layer, "start"), layer, f"layer '{layer.name}' "
                         f"starts pooling at {start}: alexnetc's pools start at the edge "
                         "(start=0)", "start=0, or pad the layer below")
    h, w = (_pool_out(x, size, stride) for x in (into.h, into.w))
    if outputs and outputs != h:
        r.unsupported(r.value_loc(layer, "outputsX"), layer, f"layer '{layer.name}' "
                         f"sets outputsX={outputs}, not the {h} that cover its input: "
                         "alexnetc's pools cover the input", "outputsX=0")
    return Maps(h, w, into.c)


def concat_shape(r: Reader, layer: Layer, ins: list[Maps]) -> Maps:
    if all(m.flat for m in ins) or len(ins) == 1:
        return Maps(ins[0].h, ins[0].w, sum(m.c for m in ins), ins[0].flat)
    if any(m.flat for m in ins) or len({(m.h, m.w) for m in ins}) > 1:
        r.unsupported(r.value_loc(layer, "inputs"), layer, f"layer '{layer.name}' "
                         "concatenates activations of different sizes ("
                         + ", ".join(map(str, ins)) + "): alexnetc's Concat joins maps of "
                         "one size, or flat vectors")
    return Maps(ins[0].h, ins[0].w, sum(m.c for m in ins))


def node_ops(r: Reader, node: Node) -> list[Op]:
    layer, t = node.first, len(node.members)
    merge = [Op("Concat")] if len(node.reads) > 1 else []
    if layer.kind == "conv":
        return [*merge, conv_op(r, node)]
    if layer.kind == "fc":
        if node.own and t > 1:
            r.unsupported(r.value_loc(layer, "inputs"), layer, f"the twins of "
                             f"'{layer.name}' each read only their own GPU's maps: "
                             "alexnetc's FC layers read every tower's")
        shapes = [read.shape for read in node.reads]
        if merge and not (all(m.flat for m in shapes) or
                          len({(m.h, m.w, m.flat) for m in shapes}) == 1):
            r.unsupported(r.value_loc(layer, "inputs"), layer, f"layer "
                             f"'{layer.name}' reads activations of different sizes ("
                             + ", ".join(map(str, shapes)) + "): alexnetc's FC reads one, "
                             "or a Concat of maps of one size")
        return [*merge, Op(f"FC({r.integer(layer, 'outputs') * t}{init_keywords(r, node)})")]
    if layer.kind == "pool":
        return [pool_op(r, node)]
    if layer.kind == "cmrnorm":
        return [lrn_op(r, node)]
    if layer.kind == "rnorm":
        return [map_norm_op(r, node)]
    if layer.kind in ("dropout", "dropout2"):
        return dropout_ops(r, node)
    if layer.kind == "softmax":
        return [Op("Softmax")]
    if layer.kind in ("concat", "pass"):
        return [Op("Concat")] if len(node.reads) > 1 else []
    if layer.kind == "eltsum":
        coeffs = r.values(layer, "coeffs", finite, "a number", "1", True,
                             len(layer.inputs))
        if any(c != 1 for c in coeffs):
            r.unsupported(r.value_loc(layer, "coeffs", True), layer, f"layer "
                             f"'{layer.name}' weighs its inputs by {coeffs}: alexnetc's Add "
                             "sums them as they are", "coeffs=1")
        return [Op("Add")]
    return []  # a neuron layer: its `neuron=` is all it does


def conv_op(r: Reader, node: Node) -> Op:
    layer, t = node.first, len(node.members)
    ins = input_shapes(r, layer)
    n = len(layer.inputs)  # every input's window is the same (conv_shape)
    k, s, p, g = (r.integers(layer, key, default, n)[0] for key, default in
                  (("filterSize", None), ("stride", 1), ("padding", 0), ("groups", 1)))
    out = r.shapes[layer.name]
    groups = g * t if node.own else g
    if node.paired and not node.own and g % t == 0 and g > 1:
        r.unsupported(r.value_loc(layer, "groups"), layer, f"the twins of "
                         f"'{layer.name}' each group all {r.towers} GPUs' maps: a "
                         f"grouped conv reading every tower has no counterpart in alexnetc")
    args = [f"{k},{s}"] + ([f"pad={p}"] if p else []) + \
        ([f"groups={groups}"] if groups > 1 else [])
    span = ins[0].h + 2 * p - k, ins[0].w + 2 * p - k
    if span[0] % s or span[1] % s:
        args.append("remainder=ceil")
        x = ins[0].h if span[0] % s else ins[0].w
        node.comments.append(f"cuda-convnet2 rounds up: 1 + ⌈({x}"
                             + (f" + 2·{p}" if p else "") + f" − {k}) / {s}⌉ = "
                             f"{out.h if span[0] % s else out.w}")
    return Op(f"Conv({', '.join(args)}{init_keywords(r, node)}) x{out.c * t}")


def init_keywords(r: Reader, node: Node) -> str:
    """`, bias=…, std=…` where the layer's differ from cuda-convnet2's defaults (alexnetc's
    too: N(0, 0.01) weights, biases 0)."""
    layer = node.first
    std = r.values(layer, "initW", finite, "a number", "0.01",
                      count=max(len(layer.inputs), 1))
    bias = r.real(layer, "initB", 0.0)
    if len(set(std)) > 1:
        node.comments.append(f"initW {', '.join(map(number, std))} per input: alexnetc "
                             "draws one std per layer")
    if len({(r.text(m, "initW", "0.01"), r.text(m, "initB", "0"))
            for m in node.members}) > 1:
        node.comments.append(f"its twins start from different initW or initB: alexnetc "
                             f"draws all as '{layer.name}' does")
    for key in ("initWFunc", "initBFunc"):
        if r.entry(layer, key):
            node.comments.append(f"{key} {r.text(layer, key)}: alexnetc draws N(0, std) "
                                 "weights and constant biases instead")
    return (f", bias={number(bias)}" if bias else "") + \
        (f", std={number(std[0])}" if std[0] != 0.01 else "")


def pool_op(r: Reader, node: Node) -> Op:
    layer = node.first
    into = input_shapes(r, layer)[0]
    size, stride = r.integer(layer, "sizeX"), r.integer(layer, "stride")
    kind = "MaxPool" if r.text(layer, "pool") == "max" else "AvgPool"
    out = r.shapes[layer.name]
    if (into.h - size) % stride or (into.w - size) % stride:
        x = into.h if (into.h - size) % stride else into.w
        node.comments.append(f"cuda-convnet2 rounds up: ⌈({x} − {size}) / {stride}⌉ + 1 = "
                             f"{out.h if (into.h - size) % stride else out.w}"
                             + ("; the edge window averages the pixels inside it, as "
                                f"cuda-convnet2's does (the first cuda-convnet divides it "
                                f"by {size}² all the same)" if kind == "AvgPool" else ""))
        return Op(f"{kind}({size},{stride}, remainder=ceil)")
    return Op(f"{kind}({size},{stride})")


def lrn_op(r: Reader, node: Node) -> Op:
    layer = node.first
    size = r.integer(layer, "size")
    if r.flag(layer, "blocked", False):
        r.unsupported(r.value_loc(layer, "blocked"), layer, f"layer '{layer.name}' "
                         "normalises within fixed blocks of maps (blocked): alexnetc's "
                         "window is centred on each map")
    centred(r, layer, size, f"{size} maps", "c", "ResNorm")
    if node.paired is False and r.towers > 1:
        r.unsupported(layer.section.loc, layer, f"layer '{layer.name}' normalises "
                         f"across all of its input's maps on one GPU: alexnetc's ResNorm "
                         "stays within each tower")
    return Op(f"ResNorm({size}, {norm_keywords(r, node, f'size {size}', size)})")


def map_norm_op(r: Reader, node: Node) -> Op:
    """rnorm: each map on its own, so towers change nothing."""
    layer = node.first
    size = r.integer(layer, "size")
    centred(r, layer, size, f"{size}x{size} pixels", "x", "MapNorm")
    return Op(f"MapNorm({size}, "
              f"{norm_keywords(r, node, f'size² {size * size}', size * size)})")


def centred(r: Reader, layer: Layer, size: int, window: str, at: str, op: str) -> None:
    """cuda-convnet2 starts a window of `size` at −size/2: an even one is off centre."""
    if size % 2 == 0:
        r.unsupported(r.value_loc(layer, "size"), layer, f"layer '{layer.name}' "
                         f"normalises over {window}, an even window (cuda-convnet2 "
                         f"reads {at} − {size // 2} … {at} + {size // 2 - 1}): alexnetc's "
                         f"{op} is centred, of odd size", f"size={size + 1}")


def norm_keywords(r: Reader, node: Node, per: str, count: int) -> str:
    """alpha, k and beta of a response norm: layer.py divides `scale` by the window's count
    (`per`: size for cmrnorm, size² for rnorm), the kernels add `minDiv` and raise to `pow`."""
    layer = node.first
    scale = r.real(layer, "scale", params=True)
    beta = r.real(layer, "pow", params=True)
    k = r.real(layer, "minDiv", 1.0, params=True)
    alpha = float(f"{scale / count:.12g}")
    node.comments.append(f"{layer.kind}: scale {number(scale)} / {per}"
                         + (f", minDiv {number(k)}" if r.entry(layer, "minDiv", True)
                            else ", minDiv 1 (its default)"))
    return f"alpha={number(alpha)}, k={number(k)}, beta={number(beta)}"


def dropout_ops(r: Reader, node: Node) -> list[Op]:
    """`dropout` drops and scales by 1/keep while training (PyTorch's); `dropout2` drops
    while training and scales by keep otherwise, even when disabled (layer.cu)."""
    layer = node.first
    keep = r.real(layer, "keep", 0.5, params=True)
    if not 0 < keep <= 1:
        r.fail(INCONSISTENT, r.value_loc(layer, "keep", True), f"layer "
                  f"'{layer.name}' keeps {number(keep)} of its units",
                  "keep is a probability in (0, 1]")
    if keep == 1:
        node.comments.append(f"{layer.kind} '{layer.name}' keeps every unit (keep=1)")
        return []
    if not r.flag(layer, "enable", True, params=True):
        if layer.kind == "dropout2" and keep != 1:
            r.unsupported(r.value_loc(layer, "enable", True), layer, f"disabled "
                             f"dropout2 layer '{layer.name}' still scales by keep "
                             f"{number(keep)}: alexnetc has no constant scale")
        node.comments.append(f"{layer.kind} '{layer.name}' is disabled (enable=false)")
        return []
    node.comments.append(f"{layer.kind}: keep {number(keep)}" + (
        " (it scales by keep at test time, PyTorch by 1/keep while training: the same "
        "expectation)" if layer.kind == "dropout2" else ""))
    return [Op(f"Dropout({number(float(f'{1 - keep:.12g}'))})")]


def neuron_op(r: Reader, node: Node) -> None:
    """`neuron=` (or a neuron layer's): the activation tied to the op."""
    layer = node.first
    e = r.entry(layer, "neuron")
    if e is None or layer.kind.startswith("cost."):
        if layer.kind == "neuron":
            r.text(layer, "neuron")
        return
    text = value(e)
    m = re.fullmatch(r"\s*(\w+)\s*(?:\[([^\]]*)\])?\s*", text)
    name, args = (m.group(1), m.group(2)) if m else (text, None)
    try:
        params = [float(a) for a in args.split(",")] if args else []
    except ValueError:
        params = [math.nan]
    op = {("relu", 0): "ReLU", ("logistic", 0): "Sigmoid", ("ident", 0): ""}.get(
        (name, len(params)))
    if name == "tanh" and params == [1.0, 1.0]:
        op = "Tanh"
    if name == "brelu" and params == [6.0]:
        op = "ReLU6"
    if op is None:
        known = name in ("abs", "nrelu", "softrelu", "square", "sqrt", "log", "tanh",
                         "brelu", "linear", "drelu", "relu", "logistic", "ident")
        if not known or (args is not None and name in ("relu", "logistic", "ident")):
            r.fail(MALFORMED, e.value_loc, f"unknown neuron '{text}' on layer "
                      f"'{layer.name}'", "cuda-convnet2's neurons: relu, logistic, "
                      "tanh[a,b], brelu[a], softrelu, abs, square, sqrt, log[a], linear[a,b], "
                      "drelu[a], nrelu, ident")
        r.unsupported(e.value_loc, layer, f"neuron '{text}' of layer '{layer.name}' "
                         "has no counterpart in alexnetc (ReLU, Sigmoid, Tanh = tanh[1,1], "
                         "ReLU6 = brelu[6])")
    if op:
        node.ops.append(Op(op, tied=bool(node.ops)))


def _conv_out(padded: int, size: int, stride: int) -> int:
    """layer.py: modulesX = 1 + ⌈(2·padding + imgSize − filterSize) / stride⌉."""
    return 1 + -(-(padded - size) // stride) if padded >= size else 0


def _pool_out(length: int, size: int, stride: int) -> int:
    """layer.py: outputsX = ⌈(imgSize − start − sizeX) / stride⌉ + 1 (start 0)."""
    return -(-(length - size) // stride) + 1
