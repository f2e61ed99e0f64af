"""The converted nodes as the draft's stages: a node and the nodes after it that only it
feeds share one stage, named after the first layer (or its twins' common name)."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from alexnetc.compiler.ast import NETWORK_INPUT
from alexnetc.importers.convnet2.core import Node, Reader
from alexnetc.importers.convnet2.recipe import read_recipe
from alexnetc.importers.draft import Draft, Names, Op


def assemble(r: Reader, nodes: list[Node]) -> Draft:
    names = Names()
    stem = Path(r.src.path).stem
    network = names.new(re.sub(r"^layers?[-_](?=[A-Za-z])", "", stem))
    draft = Draft(network, r.options.input, r.towers)
    draft.notes += [f"Imported from cuda-convnet2's {Path(r.src.path).name} and "
                    f"{Path(r.psrc.path).name}.",
                    "input: from --input (cuda-convnet2 takes it from its data provider)."]
    if r.towers > 1:
        draft.notes.append(f"towers {r.towers}: each layer's twins on GPUs "
                           + ", ".join(map(str, r.gpus)) + " are one stage; each line "
                           "says whether it stays in its tower or crosses GPUs.")
    elif len(r.gpus) > 1:
        draft.notes.append("cuda-convnet2 spreads it over GPUs "
                           + ", ".join(map(str, r.gpus)) + " (replicas or whole layers); "
                           "alexnetc runs it as one network.")
    stage_of: dict[Node, str] = {}
    previous = NETWORK_INPUT
    for head, chain in group_stages(r, [n for n in nodes if n.alias is None]):
        reads = [stage_of.get(read, NETWORK_INPUT) for read in head.reads] or [NETWORK_INPUT]
        ops = [op for n in chain for op in n.ops]
        ops[0] = Op(ops[0].text)
        notes = [placement(r, head, chain)] + [c for n in chain for c in n.comments]
        stage = draft.add(_common(head), ops, None, [c for c in notes if c])
        if reads != [previous]:
            stage.sources = tuple(reads)
        for n in chain:
            stage_of[n] = stage.name
            for m in n.members:
                draft.names.given[m.name] = stage.name
        previous = stage.name
    read_recipe(r, draft)
    return draft


def group_stages(r: Reader, nodes: list[Node]) -> list[tuple[Node, list[Node]]]:
    """Nodes as stages: a norm, pool, neuron, dropout or softmax that alone reads the layer
    before it joins that layer's stage (as `conv1: Conv…; ResNorm…; MaxPool…`)."""
    readers = Counter(read for n in nodes for read in n.reads)
    out: list[tuple[Node, list[Node]]] = []
    chain_of: dict[Node, list[Node]] = {}
    for n in nodes:
        chain = chain_of.get(n.reads[0]) if len(n.reads) == 1 else None
        if (chain is not None and chain[-1] is n.reads[0] and readers[n.reads[0]] == 1
                and n.kind in ("cmrnorm", "rnorm", "pool", "neuron", "dropout", "dropout2",
                               "softmax")):
            n.ops[0].tied = n.kind in ("neuron", "softmax")
            chain.append(n)
        else:
            chain = [n]
            out.append((n, chain))
        chain_of[n] = chain
    return out


def placement(r: Reader, head: Node, chain: list[Node]) -> str:
    """The layers a stage is made of and, with towers, whether it crosses GPUs."""
    names = ", ".join("|".join(m.name for m in n.members) for n in chain)
    if r.towers == 1:
        return names if len(chain) > 1 or head.first.name != _common(head) else ""
    crosses = any(read.paired for read in head.reads) and not head.own
    if head.paired:
        gpus = "|".join(str(m.gpu[0]) for m in head.members)
        return f"{names} on gpu {gpus}: " + (
            "each tower reads its own maps" if head.own else
            "reads both towers, crossing GPUs" if crosses else
            "each tower reads the whole image" if all(read.kind == "data" for read in head.reads)
            else "each tower reads all of its input")
    return (f"{names} on gpu {head.first.gpu[0] if head.first.gpu else 0} alone, split "
            "over the towers here" + (": reads both towers, crossing GPUs" if crosses
                                      else ""))


def _common(node: Node) -> str:
    """Twins' shared name: `conv1a`, `conv1b` → `conv1`."""
    names = [m.name for m in node.members]
    i = 0
    while all(len(n) > i and n[i] == names[0][i] for n in names):
        i += 1
    return names[0][:i].rstrip("_-.") or names[0]
