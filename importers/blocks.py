"""Repeated modules of an imported network written once, as blocks.

Caffe, Darknet and PyTorch spell out every Inception module and every residual block; the
importers write each as stages that read named stages and merge them. Here they are folded:

- A *module* is a run of consecutive stages that one stage enters and one leaves (every stage
  of it reads the stage just before the run or stages of the run, and only its last stage is
  read after it), holding a merge: as small as that allows, plus the single stages around it
  that the source names as its own (`blocks_0_proj` after `blocks_0`'s merge). Ops after the
  merge and its activation in a module's last stage (the network's next pool, say) move to a
  stage of their own after it, unless that would split a chain the fused kernels run.
- Modules alike up to the numbers in their ops (channel counts, arguments) make one `block`;
  the numbers that differ between them are its parameters, equal ones stay written. Each
  module becomes one stage using the block, named by what its stages' names share
  (`inception_3a: inception(64, 96, 128, 16, 32, 32)`), the block's stages named by the rest.
- Consecutive uses become one stage where the source numbers them as one (`layer2_0`,
  `layer2_1` → `layer2: down(128); basic(128)`) or their arguments are equal
  (`layer1: basic(64) * 2`).

A module that no other resembles stays as it was, and so does a network with none. The folded
spec is kept only if it checks to the same network as the flat one (every op with its
arguments, shapes, counts, towers, fusion and inputs, in the same order); otherwise the flat
spec stays. Stage names change, which is the point: `Folded` says where each old stage went
(`layer1_0_conv1` → `layer1.0.conv1`), for what an importer keys by stage, such as weights.
"""

from __future__ import annotations

import itertools
import keyword
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from alexnetc.compiler.ast import BLOCK_INPUT, KEYWORDS, NETWORK_INPUT
from alexnetc.compiler.graph import CheckedNetwork, free_stage_name
from alexnetc.compiler.pipeline import check
from alexnetc.compiler.registry import lookup
from alexnetc.importers.draft import Block, Draft, Names, Op, Stage

T = TypeVar("T")

_NUMBER = re.compile(r"[0-9]+(?:x[0-9]+)+"  # a size, 1x7
                     r"|[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_CALL = re.compile(r"(?P<head>[A-Za-z_]\w*)(?:\((?P<args>[^()]*)\))?(?P<channels>\s+x[0-9]+)?")
_WORD = re.compile(r"[A-Za-z_]\w*")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_]+")
# `layer1_0`, `res2a`, `inception_4c`: a name and its position among its siblings.
_NUMBERED = re.compile(r"(?P<base>[A-Za-z_]\w*?)(?P<sep>_?)(?P<index>[0-9]+|[a-z])")
_HOLE = "\0"  # where a number stood in an op's text
_WINDOWED = ("Conv", "MaxPool", "AvgPool")  # positionally (size, stride)
_SHORT = 12  # the longest parameter name taken from a stage's name

# A module's stage as modules alike share it: what it reads (-1: the module's input, else the
# position of a stage of the module) and its ops, each a template and whether it is tied.
_StageShape = tuple[tuple[int, ...], tuple[tuple[str, bool], ...]]


@dataclass(frozen=True)
class Folded:
    """A draft with its repeated modules folded into blocks.

    `names`: each old stage's flat name in the folded spec (the module path: `layer1.0.conv1`),
    as the checker and the lowered module name it; `moved`: old stages whose ops from an index
    on went to a stage of their own after the module (the stage's flat name)."""

    draft: Draft
    names: dict[str, str]
    moved: dict[str, tuple[int, str]] = field(default_factory=dict)

    def where(self, stage: str, index: int) -> tuple[str, int]:
        """The flat stage, and the op's index in it, of op `index` of old stage `stage`."""
        if stage in self.moved and index >= self.moved[stage][0]:
            start, name = self.moved[stage]
            return name, index - start
        return self.names.get(stage, stage), index

    def rekey(self, by_stage: Mapping[str, Mapping[int, T]]) -> dict[str, dict[int, T]]:
        """What an importer keyed by old stage and op index, keyed by the folded spec's."""
        out: dict[str, dict[int, T]] = {}
        for stage, ops in by_stage.items():
            for index, value in ops.items():
                name, i = self.where(stage, index)
                out.setdefault(name, {})[i] = value
        return out


def fold_blocks(draft: Draft) -> Folded:
    """The draft with its repeated modules as blocks; the draft itself is left as it is. A
    draft that does not check is left flat, so that its errors point at plain stages."""
    flat = Folded(draft, {s.name: s.name for s in draft.stages})
    before = check(draft.text())
    if before.network is None:
        return flat
    folded = _Folder(draft).fold()
    if folded is None:
        return flat
    after = check(folded.draft.text())
    if (after.network is None or len(after.diagnostics) > len(before.diagnostics)
            or _layers(after.network) != _layers(before.network)):
        return flat
    return folded


def _layers(net: CheckedNetwork) -> list[tuple[object, ...]]:
    """The network as it computes, whatever its stages are named."""
    layers = list(net.layers())
    index = {layer.id: i for i, layer in enumerate(layers)}
    return [(layer.op.name, layer.args, layer.in_shapes, layer.shape, layer.counts, layer.tower,
             tuple(index.get(i, i) for i in layer.inputs),
             layer.fusion and (layer.fusion.kernel, tuple(index[m] for m in layer.fusion.members)))
            for layer in layers]


# --- ops as templates with numbers -------------------------------------------------------------


@dataclass(frozen=True)
class _Slot:
    """Where a number stands: in op `op` of a module's stage `stage`, as keyword `key`'s value,
    positional argument `index`, or (index -1) the channel count."""

    stage: int
    op: str
    key: str | None
    index: int

    @property
    def channels(self) -> bool:
        return self.index < 0


def _template(text: str, stage: int) -> tuple[str, list[str], list[_Slot]]:
    """An op's text with its numbers cut out (`Conv(\\0,\\0, pad=\\0) x\\0`), the numbers, and
    where each stood. An op that does not read as `Name(args) xC` is kept whole."""
    m = _CALL.fullmatch(text)
    if m is None:
        return text, [], []
    head = m["head"]
    out, values, slots = head, [], []
    if m["args"] is not None:
        parts, position = [], 0
        for part in re.split(r"(,\s*)", m["args"]):
            key, eq, value = part.partition("=") if "=" in part else ("", "", part)
            number = value.strip()
            if not part.startswith(",") and _NUMBER.fullmatch(number):
                values.append(number)
                slots.append(_Slot(stage, head, key.strip() if eq else None,
                                   position if not eq else 0))
                part = key + eq + value.replace(number, _HOLE, 1)
            if not part.startswith(",") and not eq:
                position += 1
            parts.append(part)
        out += "(" + "".join(parts) + ")"
    if m["channels"]:
        values.append(m["channels"].strip()[1:])
        slots.append(_Slot(stage, head, None, -1))
        out += m["channels"][:m["channels"].index("x") + 1] + _HOLE
    return out, values, slots


def _filled(template: str, words: list[str]) -> str:
    pieces = template.split(_HOLE)
    return pieces[0] + "".join(w + p for w, p in zip(words, pieces[1:], strict=True))


# --- modules -------------------------------------------------------------------------------------


@dataclass
class _Module:
    """Stages `start:end` of the draft, one module; its last stage's ops `keep:` run after it.
    `shape` is what modules alike share, `values` its numbers, `slots` where they stand."""

    start: int
    end: int
    keep: int
    shape: tuple[_StageShape, ...]
    values: list[str]
    slots: list[_Slot]
    old: list[str]  # the stages' names in the draft
    name: str = ""  # the stage that uses the block
    own_name: bool = False  # named by what its stages' names share
    inner: list[str] = field(default_factory=list)  # the block's stage names
    call: str = ""
    comments: list[str] = field(default_factory=list)
    after: Stage | None = None  # the ops moved out of the last stage


def _reads(stages: list[Stage]) -> list[tuple[int, ...]]:
    """What each stage reads, by position (-1: the network's input)."""
    where = {NETWORK_INPUT: -1}
    out = []
    for i, s in enumerate(stages):
        out.append((i - 1,) if s.sources is None else tuple(where[n] for n in s.sources))
        where[s.name] = i
    return out


def _spans(stages: list[Stage], reads: list[tuple[int, ...]]) -> list[tuple[int, int]]:
    """The modules: the smallest runs of stages with one way in and one way out that merge
    something, with the single stages before and after them that the source names as part of
    them (`blocks_0_proj` after `blocks_0`'s merge).

    After stage p the network divides when no later stage reads one before p; the stages
    between two such points are entered from the first and left from the second."""
    n = len(reads)
    earliest = [n] * (n + 1)  # earliest[j]: the first stage read by stage j or a later one
    for j in range(n - 1, -1, -1):
        earliest[j] = min(earliest[j + 1], *reads[j])
    cuts = [p for p in range(-1, n) if earliest[p + 1] >= p]
    parts = [(p + 1, q + 1) for p, q in itertools.pairwise(cuts)]
    single = {a for a, b in parts if b == a + 1 and len(reads[a]) == 1}
    out: list[tuple[int, int]] = []
    for a, b in parts:
        if not any(len(reads[k]) > 1 for k in range(a, b)):
            continue
        prefix = _prefix([s.name for s in stages[a:b]])
        if prefix:
            while a - 1 in single and _within(stages[a - 1].name, prefix) \
                    and not (out and out[-1][1] > a - 1):
                a -= 1
            while b in single and _within(stages[b].name, prefix):
                b += 1
        out.append((a, b))
    return out


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + "_")


def _kept(stage: Stage, merges: bool) -> int:
    """How many of a module's last stage's ops belong to the module: its merge and the
    activations tied to it, unless the next op would join a fused chain with them."""
    ops = stage.ops
    if not merges:
        return len(ops)
    keep = 1
    while keep < len(ops) and ops[keep].tied:
        keep += 1
    if keep < len(ops) and _role(ops[keep - 1]) == "relu" and _role(ops[keep]) in ("lrn",
                                                                                    "maxpool"):
        return len(ops)
    return keep


def _role(op: Op) -> str | None:
    m = _WORD.match(op.text)
    found = lookup(m.group()) if m else None
    return found.fusion_role if found else None


def _module(stages: list[Stage], reads: list[tuple[int, ...]], start: int, end: int) -> _Module:
    keep = _kept(stages[end - 1], len(reads[end - 1]) > 1)
    shape: list[_StageShape] = []
    values: list[str] = []
    slots: list[_Slot] = []
    for k in range(start, end):
        ops = stages[k].ops[:keep] if k == end - 1 else stages[k].ops
        templates = []
        for op in ops:
            template, numbers, where = _template(op.text, k - start)
            templates.append((template, op.tied))
            values += numbers
            slots += where
        refs = tuple(-1 if r == start - 1 else r - start for r in reads[k])
        shape.append((refs, tuple(templates)))
    return _Module(start, end, keep, tuple(shape), values, slots,
                   [s.name for s in stages[start:end]])


# --- names ---------------------------------------------------------------------------------------


def _valid(name: str) -> bool:
    """Whether `name` can name a stage as it is."""
    return bool(name) and Names().new(name) == name


def _prefix(names: list[str]) -> str:
    """The longest `P` each name is (`P`) or extends (`P_…`): the module's own name."""
    first = names[0]
    for i in range(len(first), 0, -1):
        p = first[:i]
        if (i == len(first) or first[i] == "_") and all(_within(n, p) for n in names):
            return p
    return ""


def _inner(old: list[str], prefix: str) -> list[str]:
    """The stages' names within their module, as the source spells them."""
    return [n[len(prefix):].lstrip("_") if prefix else n for n in old]


def _stage_names(modules: list[_Module]) -> tuple[list[str], list[str] | None]:
    """The block's stage names, and the modules' own ones (None where they differ: Darknet's
    `conv2`, `conv5` …, named by kind then, `conv1`, `conv2`, `shortcut`)."""
    raw = [_inner(m.old, _prefix(m.old)) for m in modules]
    agreed = raw[0] if all(r == raw[0] for r in raw) else None
    if agreed is not None:
        bases = [r or "out" for r in agreed]
    else:
        stems = [re.sub(r"[0-9_]+$", "", r) or "stage" for r in raw[0]]
        count, seen = Counter(stems), Counter[str]()
        bases = []
        for s in stems:
            seen[s] += 1
            bases.append(f"{s}{seen[s]}" if count[s] > 1 else s)
    names = Names()
    return [names.new(b) for b in bases], agreed


def _param_names(uses: list[list[_Slot]], agreed: list[str] | None,
                 forbidden: set[str]) -> list[str]:
    """Readable parameter names: channel counts `c<stage>` where each is one stage's and the
    source's names are short (`c1x1`, `c3x3_reduce`), else `c` (one) or `c1`, `c2` …; other
    numbers by their keyword, or `k`, `s` for a window's size and stride."""
    channels = [i for i, u in enumerate(uses) if any(s.channels for s in u)]
    stages = [{s.stage for s in uses[i]} for i in channels]
    own = [] if agreed is None else ["c" + _NOT_NAME.sub("_", agreed[min(st)] or "out")
                                     for st in stages]
    if not (all(len(st) == 1 for st in stages) and len(set(own)) == len(channels)
            and all(s.channels for i in channels for s in uses[i])
            and all(len(n) <= _SHORT for n in own)):
        own = ["c"] if len(channels) == 1 else [f"c{n}" for n in range(1, len(channels) + 1)]
    wanted = dict(zip(channels, own, strict=True))
    taken = set(forbidden)
    out = []
    for i, u in enumerate(uses):
        s = u[0]
        name = wanted.get(i) or s.key or (("k", "s")[s.index] if s.op in _WINDOWED
                                          and s.index < 2 else s.op.lower())
        candidate, n = name, 1
        while candidate in taken or not candidate.isidentifier() or keyword.iskeyword(candidate):
            n += 1
            candidate = f"{name}{n}"
        taken.add(candidate)
        out.append(candidate)
    return out


def _block_name(modules: list[_Module]) -> str:
    """What the modules' own names share (`inception` of `inception_3a`, `inception_4b`), or
    '' (also where a module is named by its last stage: Darknet's `shortcut4` says nothing
    about the module)."""
    if not all(m.own_name for m in modules):
        return ""
    names = [m.name for m in modules]
    p = names[0][:min(len(n) for n in names)]
    while p and not all(n.startswith(p) for n in names):
        p = p[:-1]
    while p and p[-1].isalpha() and any(len(n) > len(p) and n[len(p)].isalpha() for n in names):
        p = p[:-1]  # not within a word
    p = re.sub(r"[^A-Za-z]+$", "", p).lower()
    return p if len(p) > 1 and _valid(p) and lookup(p) is None else ""


def _kind(module: _Module) -> str:
    """A name for a block from what its merge does."""
    refs, ops = module.shape[-1]
    head = _WORD.match(ops[0][0]) if ops else None
    merge = head.group() if head else ""
    if merge == "Add":
        return "residual" if -1 in refs else "projection"
    return "branches" if merge == "Concat" else "module"


# --- folding --------------------------------------------------------------------------------------


class _Folder:
    """One draft's fold: its modules found and grouped, the blocks and the uses named, the
    top level rebuilt with each module's stages replaced by its use."""

    def __init__(self, draft: Draft):
        self.draft = draft
        self.stages = draft.stages
        self.reads = _reads(self.stages)

    def fold(self) -> Folded | None:
        modules = [_module(self.stages, self.reads, a, b)
                   for a, b in _spans(self.stages, self.reads)]
        alike: dict[tuple[_StageShape, ...], list[_Module]] = {}
        for m in modules:
            alike.setdefault(m.shape, []).append(m)
        groups = [g for g in alike.values() if len(g) > 1]
        if not groups:
            return None
        used = sorted((m for g in groups for m in g), key=lambda m: m.start)
        self._name_uses(used)
        blocks = self._blocks(groups)
        items = self._items(used)
        return self._folded(items, blocks)

    def _name_uses(self, used: list[_Module]) -> None:
        """Each use named by its module's prefix where that is free, else by its last stage
        (the name the stages after it read); ops moved out of it named after it."""
        inside = {n for m in used for n in m.old}
        taken = {s.name for s in self.stages if s.name not in inside}
        prefixes = Counter(_prefix(m.old) for m in used)
        for m in used:
            p = _prefix(m.old)
            m.own_name = bool(p) and prefixes[p] == 1 and p not in taken and _valid(p)
            name = p if m.own_name else m.old[-1]
            m.name = name if name not in taken else free_stage_name(name, taken)
            taken.add(m.name)
        for m in used:
            last = self.stages[m.end - 1]
            if m.keep < len(last.ops):
                head = _WORD.match(last.ops[m.keep].text)
                name = f"{m.name}_{head.group().lower() if head else 'ops'}"
                name = name if name not in taken and _valid(name) else \
                    free_stage_name(name, taken)
                taken.add(name)
                m.after = Stage(name, [replace(op) for op in last.ops[m.keep:]], None,
                                list(last.comments))

    def _blocks(self, groups: list[list[_Module]]) -> list[Block]:
        names = [_block_name(g) for g in groups]
        count = Counter(names)
        taken: set[str] = set()
        blocks = []
        for g, name in zip(groups, names, strict=True):
            base = name if name and count[name] == 1 else _kind(g[0])
            chosen, n = base, 1
            while chosen in taken:
                n += 1
                chosen = f"{base}{n}"
            taken.add(chosen)
            blocks.append(self._block(chosen, g))
        return blocks

    def _block(self, name: str, group: list[_Module]) -> Block:
        first = group[0]
        inner, agreed = _stage_names(group)
        columns = [tuple(m.values[i] for m in group) for i in range(len(first.values))]
        params: dict[tuple[str, ...], int] = {}
        for col in columns:
            if len(set(col)) > 1:
                params.setdefault(col, len(params))
        uses: list[list[_Slot]] = [[] for _ in params]
        for col, slot in zip(columns, first.slots, strict=True):
            if col in params:
                uses[params[col]].append(slot)
        forbidden = {w for _, ops in first.shape for t, _ in ops for w in _WORD.findall(t)}
        forbidden |= {*KEYWORDS, BLOCK_INPUT, NETWORK_INPUT}
        pnames = _param_names(uses, agreed, forbidden)
        words = [pnames[params[c]] if c in params else c[0] for c in columns]
        for m in group:
            m.inner = inner
            args = [m.values[columns.index(col)] for col in params]
            m.call = f"{name}({', '.join(args)})" if args else name
        stages = self._block_stages(group, inner, words)
        return Block(name, pnames, stages)

    def _block_stages(self, group: list[_Module], inner: list[str],
                      words: list[str]) -> list[Stage]:
        first = group[0]
        out = []
        taken = 0
        for k, (refs, ops) in enumerate(first.shape):
            texts = []
            for template, tied in ops:
                n = template.count(_HOLE)
                texts.append(Op(_filled(template, words[taken:taken + n]), tied))
                taken += n
            default = (k - 1,)
            sources = None if refs == default else tuple(
                BLOCK_INPUT if r == -1 else inner[r] for r in refs)
            said = [self._said(m, k) for m in group]
            same = all(s == said[0] for s in said)
            for m, s in zip(group, said, strict=True):
                if not same:
                    m.comments += [f"{inner[k]}: {c}" for c in s]
            out.append(Stage(inner[k], texts, sources, list(said[0]) if same else []))
        return out

    def _said(self, m: _Module, k: int) -> list[str]:
        """The comments of a module's stage k (those of a last stage split go with its ops
        moved out)."""
        stage = self.stages[m.start + k]
        return [] if m.after is not None and m.start + k == m.end - 1 else stage.comments

    def _items(self, used: list[_Module]) -> list[Stage | _Module]:
        """The top level in order: stages not in a module, uses, the ops moved out of them."""
        starts = {m.start: m for m in used}
        items: list[Stage | _Module] = []
        i = 0
        while i < len(self.stages):
            m = starts.get(i)
            if m is None:
                items.append(self.stages[i])
                i += 1
                continue
            items.append(m)
            if m.after is not None:
                items.append(m.after)
            i = m.end
        return items

    def _folded(self, items: list[Stage | _Module], blocks: list[Block]) -> Folded:
        inside = {n for i in items if isinstance(i, _Module) for n in i.old}
        flat = {s.name: s.name for s in self.stages if s.name not in inside}
        renamed: dict[str, str] = {}  # an old stage → the top-level stage with its output
        moved: dict[str, tuple[int, str]] = {}
        top: list[Stage] = []
        for run, name in _runs(items):
            if isinstance(run[0], Stage):
                top.append(replace(run[0], ops=list(run[0].ops),
                                   comments=list(run[0].comments)))
                continue
            mods = [m for m in run if isinstance(m, _Module)]
            for k, m in enumerate(mods):
                prefix = f"{name}.{k}." if len(mods) > 1 else f"{name}."
                flat.update({old: prefix + inner for old, inner in zip(m.old, m.inner,
                                                                        strict=True)})
                renamed[m.old[-1]] = m.after.name if m.after else name
                if m.after is not None:
                    moved[m.old[-1]] = (m.keep, m.after.name)
            top.append(Stage(name, _calls(mods), None, _comments(mods)))
        top = [replace(s, sources=tuple(renamed.get(r, r) for r in s.sources))
               if s.sources is not None else s for s in top]
        d = self.draft
        draft = replace(d, stages=top, blocks=blocks, notes=list(d.notes),
                        settings={k: list(v) for k, v in d.settings.items()},
                        setting_notes=list(d.setting_notes))
        return Folded(draft, flat, moved)


def _runs(items: list[Stage | _Module]) -> list[tuple[list[Stage | _Module], str]]:
    """The top level's stages, each with its name: uses that the source numbers as one
    (`layer2_0`, `layer2_1` → `layer2`) and that mix blocks or repeat a call; uses that repeat
    one call, named by the last (whose output the stages after them read); the rest alone."""
    out: list[tuple[list[Stage | _Module], str]] = []
    i = 0
    while i < len(items):
        n, name = _numbered_run(items, i)
        if not n:
            n = _repeated_run(items, i)
            name = items[i + n - 1].name
        out.append((items[i:i + n], name))
        i += n
    return out


def _numbered_run(items: list[Stage | _Module], i: int) -> tuple[int, str]:
    """How many uses from i on the source numbers as one, from 0, 1 or a, and their common
    name; 0 where none is worth one stage (one use, or uses of one block each with its own
    arguments, as GoogLeNet's `inception_4a` … `inception_4e`)."""
    first = _numbered(items[i])
    if first is None or (first[2] != 0 and not (first[2] == 1 and first[1].endswith("0"))):
        return 0, ""
    base, start = first[0], first[2]
    n = 1
    while i + n < len(items):
        nxt = _numbered(items[i + n])
        if nxt is None or nxt[:2] != first[:2] or nxt[2] != start + n:
            break
        n += 1
    mods = [m for m in items[i:i + n] if isinstance(m, _Module)]
    mixed = len({m.call.partition("(")[0] for m in mods}) > 1
    repeated = any(a.call == b.call for a, b in itertools.pairwise(mods))
    others = {item.name for item in items if all(item is not m for m in mods)}
    worth = n > 1 and (mixed or repeated) and _valid(base) and base not in others
    return (n, base) if worth else (0, "")


def _numbered(item: Stage | _Module) -> tuple[str, str, int] | None:
    """A use's name as a base, how it is numbered and its number: `layer2_1` → (layer2, '_0',
    1), `res3b` → (res3, 'a', 1): the separator, then `0` for digits or `a` for letters."""
    if not isinstance(item, _Module):
        return None
    m = _NUMBERED.fullmatch(item.name)
    if m is None:
        return None
    index = m["index"]
    kind = "0" if index.isdigit() else "a"
    return m["base"], m["sep"] + kind, int(index) if index.isdigit() else ord(index) - ord("a")


def _repeated_run(items: list[Stage | _Module], i: int) -> int:
    first = items[i]
    if not isinstance(first, _Module):
        return 1
    n = 1
    while i + n < len(items) and isinstance(nxt := items[i + n], _Module) \
            and nxt.call == first.call:
        n += 1
    return n


def _calls(mods: list[_Module]) -> list[Op]:
    """`down(128); basic(128) * 2`: consecutive equal calls as one, repeated."""
    return [Op(call if (n := len(list(same))) == 1 else f"{call} * {n}")
            for call, same in itertools.groupby(m.call for m in mods)]


def _comments(mods: list[_Module]) -> list[str]:
    if len(mods) == 1:
        return list(mods[0].comments)
    return [f"{k}.{c}" for k, m in enumerate(mods) for c in m.comments]
