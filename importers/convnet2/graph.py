"""The layer graph: the layer file's sections and the layer-params sections that go with
them, and the twins (a layer on each GPU, as the two-GPU AlexNet writes every layer twice)
paired into one node of a `towers` spec, with what each node reads."""

from __future__ import annotations

from pathlib import Path

from alexnetc.compiler.errors import SourceLoc
from alexnetc.importers.convnet2.core import (
    COMPUTES,
    COSTS,
    KNOWN,
    NEEDS_PARAMS,
    NOT_ARCHITECTURE,
    PARAMS_HINT,
    PREPROCESSING,
    WEIGHTS,
    WHY_NOT,
    Layer,
    Maps,
    Node,
    Reader,
    value,
)
from alexnetc.importers.convnet2.layers import layer_shape, neuron_op, node_ops
from alexnetc.importers.ini import read_sections
from alexnetc.importers.source import INCONSISTENT, MALFORMED, closest


def check_costs(r: Reader) -> None:
    """The log-loss of the final softmax is how alexnetc trains; other costs are not."""
    for layer in r.layers.values():
        if layer.kind.startswith("cost.") and layer.kind not in COSTS:
            r.unsupported(r.type_loc(layer), layer, f"layer '{layer.name}' is "
                             f"{WHY_NOT[layer.kind]}")


def read_layers(r: Reader) -> None:
    sections = read_sections(r.src, "#;", inline="")
    if r.src.errors:
        return  # what follows a broken line would only add confusion
    r.defined = {s.name for s in sections}
    for section in sections:
        if section.name in r.layers:
            r.src.error(MALFORMED, section.loc, f"layer '{section.name}' is defined twice",
                           "give each layer its own name")
            continue
        kind_entry = next((e for e in reversed(section.entries) if e.key.lower() == "type"),
                          None)
        kind = value(kind_entry) if kind_entry is not None else ""
        if kind_entry is None:
            r.src.error(MALFORMED, section.loc, f"layer '{section.name}' has no `type=`",
                           "add one, e.g. `type=conv`")
        elif kind not in KNOWN:
            close = closest(kind, KNOWN)
            r.src.error(MALFORMED, kind_entry.value_loc, f"unknown layer type '{kind}'",
                           f"did you mean '{close}'?" if close else
                           "cuda-convnet2's types: " + ", ".join(KNOWN))
        layer = Layer(section, kind, [], ())
        if kind != "data":
            layer.inputs = read_inputs(r, layer)
        layer.gpu = read_gpu(r, layer)
        r.layers[section.name] = layer


def read_inputs(r: Reader, layer: Layer) -> list[str]:
    e = r.entry(layer, "inputs")
    if e is None:
        r.src.error(MALFORMED, layer.section.loc, f"layer '{layer.name}' has no "
                       "`inputs=`", "name the layers it reads, e.g. `inputs=conv1`")
        return []
    names = [n.strip() for n in value(e).split(",")]
    col, line = e.value_loc.col, e.value_loc.line
    plain = not layer.kind.startswith("cost.")  # cost layers may read cost layers; no other
    for n, part in zip(names, value(e).split(","), strict=True):
        at = SourceLoc(e.value_loc.file, line, col + len(part) - len(part.lstrip()), line,
                       col + len(part.rstrip()))
        col += len(part) + 1
        if plain and n in r.layers and r.layers[n].kind.startswith("cost."):
            r.src.error(INCONSISTENT, at, f"layer '{layer.name}' reads cost layer "
                           f"'{n}', which produces no output", "read the layer below it")
        elif n not in r.layers:
            later = n in r.defined
            close = closest(n, r.layers)
            r.src.error(INCONSISTENT, at, f"layer '{layer.name}' reads '{n}', which no "
                           "layer above it defines",
                           f"did you mean '{close}'?" if close and not later else
                           "define each layer before the layers that read it")
    return [n for n in names if n in r.layers
            and not (plain and r.layers[n].kind.startswith("cost."))]


def read_gpu(r: Reader, layer: Layer) -> tuple[int, ...]:
    e = r.entry(layer, "gpu")
    if e is None:  # a layer runs where its first input does (a data layer: nowhere yet)
        return r.layers[layer.inputs[0]].gpu if layer.inputs else ()
    try:
        return tuple(int(g) for g in value(e).split(","))
    except ValueError:
        r.src.error(MALFORMED, e.value_loc, f"`gpu` of layer '{layer.name}' must be "
                       f"GPU numbers, got {value(e)!r}", "e.g. `gpu=0`, or `gpu=0,1`")
        return ()


def read_params(r: Reader) -> None:
    seen: set[str] = set()
    sections = read_sections(r.psrc, "#;", inline="")
    if r.psrc.errors or r.src.errors:
        return
    for section in sections:
        if section.name in seen:
            r.psrc.error(MALFORMED, section.loc, f"layer '{section.name}' has two "
                            "sections in the layer-params file", "merge them into one")
            continue
        seen.add(section.name)
        layer = r.layers.get(section.name)
        if layer is None:
            close = closest(section.name, r.layers)
            r.psrc.error(INCONSISTENT, section.loc, f"layer-params section "
                            f"'{section.name}' is for no layer of {Path(r.src.path).name}",
                            f"did you mean '{close}'?" if close else
                            "name a layer of the layer file, or remove the section")
            continue
        layer.params = section
    for layer in r.layers.values():
        if layer.params is None and layer.kind in NEEDS_PARAMS:
            r.src.error(MALFORMED, layer.section.loc, f"layer '{layer.name}' "
                           f"({layer.kind}) has no section in the layer-params file "
                           f"{Path(r.psrc.path).name}", f"cuda-convnet2 requires one: add "
                           f"[{layer.name}] with its " + PARAMS_HINT.get(
                               layer.kind, "settings"))


def twins(r: Reader) -> list[Node]:
    """The layers as nodes: where the network runs as model-parallel towers (each layer on
    one GPU, twins on the others with the same settings reading the same things), a node
    per set of twins. Only what pairs becomes towers; a network with no twins is one."""
    order = [la for la in r.layers.values()
             if not la.kind.startswith("cost.") and not r.is_labels(la)]
    gpus = sorted({g for la in order if la.kind != "data" for g in la.gpu})
    single_gpu = all(len(la.gpu) <= 1 for la in order)
    nodes: list[Node] = []
    taken: set[str] = set()
    for layer in order:
        if layer.name in taken:
            continue
        members = [layer]
        if single_gpu and len(gpus) > 1 and layer.kind != "data":
            key = twin_key(r, layer)
            for other in order[order.index(layer) + 1:]:
                if other.name not in taken and other.gpu not in {m.gpu for m in members} \
                        and key is not None and twin_key(r, other) == key:
                    members.append(other)
            members = members if len(members) == len(gpus) else [layer]
            members.sort(key=lambda m: m.gpu)
        taken |= {m.name for m in members}
        node = Node(members)
        nodes.append(node)
        for m in members:
            r.node_of[m.name] = node
    if any(n.paired for n in nodes):
        r.towers, r.gpus = len(gpus), tuple(gpus)
    else:
        r.gpus = tuple(gpus)
    return nodes


def twin_key(r: Reader, layer: Layer) -> tuple[object, ...] | None:
    """What twins share: their type, settings and (the nodes of) what they read; None
    for a layer that reads what is not a node yet (so no twin of the one at hand)."""
    if any(n not in r.node_of for n in layer.inputs):
        return None
    settings = [(e.key.lower(), value(e)) for e in layer.section.entries
                if e.key.lower() not in NOT_ARCHITECTURE]
    params = [(e.key.lower(), value(e)) for e in layer.params.entries
              if e.key.lower() in COMPUTES] if layer.params is not None else []
    reads = tuple(id(r.node_of[n]) for n in layer.inputs)
    return layer.kind, tuple(sorted(settings)), tuple(sorted(params)), tuple(sorted(reads))


def covers(r: Reader, name: str) -> list[tuple[Node, int]]:
    """The node and GPU (twin index) whose maps reading layer `name` reads; a layer with
    no op of its own stands for what it reads."""
    node = r.node_of[name]
    member = next(m for m in node.members if m.name == name)
    if node.alias is None:
        return [(node, node.members.index(member))]
    return [c for x in member.inputs for c in covers(r, x)]


def connect(r: Reader, node: Node) -> None:
    """What the node reads, and whether each twin reads only its own GPU's twin of it
    (`own`) or every GPU's; anything between has no counterpart in alexnetc's towers."""
    per = [[c for x in m.inputs for c in covers(r, x)] for m in node.members]
    node.reads = list(dict.fromkeys(n for n, _ in per[0]))
    ways = set()
    for t, (m, cs) in enumerate(zip(node.members, per, strict=True)):
        twice = next((n.members[i].name for k, (n, i) in enumerate(cs) if (n, i) in cs[:k]),
                     None)
        if twice is not None:
            r.unsupported(r.value_loc(m, "inputs"), m, f"layer '{m.name}' reads "
                             f"'{twice}' twice: an alexnetc stage reads each stage once")
        for n in dict.fromkeys(n for n, _ in cs):
            got = {i for x, i in cs if x is n}
            way = "all" if len(got) == len(n.members) else \
                "own" if node.paired and got == {t} else None
            if way is None:
                every = f"every GPU's (`inputs={','.join(x.name for x in n.members)}`)"
                own = f"its own twin (`inputs={n.members[t].name}`) or " if node.paired else ""
                r.unsupported(r.value_loc(m, "inputs"), m, partial_note(r, m, n, got),
                                 f"read {own}{every}")
            if n.paired:
                ways.add(way)
    if len(ways) > 1:
        r.unsupported(r.value_loc(node.first, "inputs"), node.first,
                         f"layer '{node.first.name}' reads its own GPU's part of some "
                         "layers and every GPU's of others: alexnetc's towers read one way")
    node.own = ways == {"own"}


def partial_note(r: Reader, layer: Layer, node: Node, got: set[int]) -> str:
    where = f" (gpu {layer.gpu[0]})" if len(layer.gpu) == 1 else ""
    return (f"layer '{layer.name}'{where} reads "
            + " and ".join(f"'{node.members[i].name}'" for i in sorted(got)) + " but not "
            + " and ".join(f"'{x.name}'" for i, x in enumerate(node.members) if i not in got)
            + ": in alexnetc's towers a layer reads its own GPU's maps or all of them")


def build_node(r: Reader, node: Node) -> None:
    connect(r, node)
    layer = node.first
    if layer.kind in WHY_NOT or layer.kind in PREPROCESSING:
        why = WHY_NOT.get(layer.kind, "a data-manipulation layer: alexnetc leaves that to "
                          "its data pipeline (`augment`)")
        r.unsupported(r.type_loc(layer), layer, f"layer '{layer.name}' is {why}")
    if node.paired and not node.own and node.kind not in ("conv", "fc"):
        r.unsupported(layer.section.loc, layer, f"the twins of layer '{layer.name}' each "
                         "read the same maps: alexnetc's towers would split them")
    for m in node.members:
        r.shapes[m.name] = layer_shape(r, m)
    node.ops = node_ops(r, node)
    per = r.shapes[layer.name]
    node.shape = Maps(per.h, per.w, per.c * len(node.members), per.flat)
    neuron_op(r, node)
    if node.kind in WEIGHTS:  # its learning rates make the recipe
        r.weight_layers += node.members
    if not node.ops and len(node.reads) == 1:  # it is what it reads
        node.alias = node.reads[0]
        if node.alias.paired and not node.paired:
            node.comments.append(f"{layer.kind} '{layer.name}' joins its GPUs' maps, as "
                                 "alexnetc's towers do")
        node.alias.comments += node.comments or [f"{layer.kind} '{layer.name}' passes "
                                                 "its input on as it is"]
