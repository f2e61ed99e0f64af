"""Blocks and references → a flat list of stages, each reading named stages (a DAG).

The language lets a stage read any stage above it (`b2(pool1): …`), merge several
(`sum(b, in): Add + ReLU`), and instantiate blocks written once (`layer1: basic(64) * 2`).
Everything after this step sees only `FlatStage`s: ops with the block's parameters
substituted, the exact stages each reads, and a qualified name that becomes the module path
(`layer1.0.a`: stage `a` of the first instance in `layer1`). A stage with one instance is not
numbered (`inc3a.b1`).

Rules, each reported as a located error:
- a reference names a stage defined above it in the same scope (the top level, or one block),
  or `input` (the network's input; top level) or `in` (the instance's input; in a block);
- no cycle: neither through references (a stage reading one below it that reads it back)
  nor through blocks (a block instantiating itself);
- a stage runs ops or instantiates blocks, not both; a block's use binds its parameters like
  an op call (positionally in order, then by name, defaults for the rest).
Errors inside a block instance carry notes naming the lines that instantiated it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

from alexnetc.compiler import ast
from alexnetc.compiler.errors import (
    BLOCK,
    CYCLE,
    DUPLICATE,
    LIMIT,
    REFERENCE,
    STRUCTURE,
    UNUSED,
    Diagnostics,
    Note,
)
from alexnetc.compiler.registry import lookup

INPUT = "input"  # the graph's input node, and what a flat stage reads for the network input

# Far more ops than any published network (GoogLeNet: ~200, ResNet-152: ~500), few enough that
# checking a runaway `* 100000` stays quick.
MAX_OPS = 100_000


@dataclass(frozen=True)
class Use:
    """One block instance: its flat name (`layer1.0`) and the call as ops are written, with
    its parameters' values (`basic(64)`)."""

    name: str
    call: str


@dataclass(frozen=True)
class FlatStage:
    """One stage of the network as it runs: a written stage in one block instance, or a
    top-level stage.

    `sources` are the flat names it reads (or `INPUT`), in the order written; `written` is the
    stage in the source (its locations); `notes` say which uses of blocks instantiated it,
    innermost first, and `uses` are those instances (one per note); `expect_name` names the
    stage an `->` belongs to (for a stage of block instances, the top-level stage whose
    output this stage is).
    """

    name: str
    ops: tuple[ast.OpCall, ...]
    sources: tuple[str, ...]
    written: ast.Stage
    expect: ast.Expect | None
    expect_name: str
    notes: tuple[Note, ...]
    block: str | None
    uses: tuple[Use, ...] = ()


@dataclass
class _Scope:
    """The stages of the top level, or of one block instance, as they are expanded."""

    prefix: str  # "" at the top level, "layer1.0." in an instance
    input: str  # what the scope's first stage reads by default
    stages: tuple[ast.Stage, ...]
    block: ast.Block | None
    env: dict[str, ast.Value]  # the instance's parameters
    notes: tuple[Note, ...]
    outputs: dict[str, str]  # written name → flat name of its output, as defined so far
    uses: tuple[Use, ...] = ()


class _Expander:
    def __init__(self, net: ast.Network, diags: Diagnostics):
        self.net, self.diags = net, diags
        self.blocks: dict[str, ast.Block] = {}
        self.used: set[str] = set()
        self.out: list[FlatStage] = []
        # stages named by a stage above them (an error): not also reported as never read
        self.read_early: set[str] = set()
        self.ops = 0
        self.stopped = False  # past MAX_OPS: reported once, nothing more expanded

    def blocks_of(self) -> None:
        for b in self.net.blocks:
            if b.name in self.blocks:
                self.diags.error(DUPLICATE, b.name_loc, f"block '{b.name}' is defined twice",
                                 f"first defined on line {self.blocks[b.name].loc.line}; "
                                 "rename one")
                continue
            if lookup(b.name) is not None:
                self.diags.error(BLOCK, b.name_loc, f"block '{b.name}' has the name of an op",
                                 f"name it differently, e.g. `{b.name.lower()}_block`")
                continue
            self.blocks[b.name] = b
            _block_header(b, self.diags)

    def scope(self, scope: _Scope, stack: tuple[str, ...]) -> str:
        """Expand a scope's stages; the flat name of its output (its last stage's)."""
        deps = _dependencies(scope)
        last = scope.input
        for i, stage in enumerate(scope.stages):
            if self.stopped:
                break
            with self.diags.within(scope.notes):
                sources = self._sources(scope, i, stage, deps, last)
            last = self._stage(scope, stage, sources, stack, i == len(scope.stages) - 1)
            if scope.prefix + stage.name in self.read_early:
                self.read_early.add(last)
            scope.outputs[stage.name] = last
        return last

    def _sources(self, scope: _Scope, i: int, stage: ast.Stage,
                 deps: dict[str, list[str]], last: str) -> tuple[str, ...]:
        """The flat names a stage reads. A reference that does not resolve (reported) reads
        the stage above in its place, so the stage keeps as many inputs as it names and the
        later checks report nothing that only follows from the bad reference."""
        if not stage.sources:
            return (last,)
        return tuple(self._resolve(scope, i, stage, ref, deps) or last for ref in stage.sources)

    def _resolve(self, scope: _Scope, i: int, stage: ast.Stage, ref: ast.Ref,
                 deps: dict[str, list[str]]) -> str | None:
        inside = scope.block is not None
        if ref.name == (ast.BLOCK_INPUT if inside else ast.NETWORK_INPUT):
            return scope.input
        if ref.name in scope.outputs:
            return scope.outputs[ref.name]
        if ref.name in (ast.NETWORK_INPUT, ast.BLOCK_INPUT):
            here, other = (("a block's stages read its input", ast.BLOCK_INPUT) if inside else
                           ("`in` is a block's input; a top-level stage reads the network's",
                            ast.NETWORK_INPUT))
            self.diags.error(REFERENCE, ref.loc, f"no '{ref.name}' here: {here} as `{other}`",
                             f"write `{stage.name}({other}): …`")
            return None
        later = [s for s in scope.stages[i:] if s.name == ref.name]
        if later:
            self.read_early.add(scope.prefix + ref.name)
            cycle = _cycle(deps, stage.name, ref.name)
            if ref.name == stage.name:
                self.diags.error(CYCLE, ref.loc, f"stage '{stage.name}' reads itself",
                                 "a stage reads only stages above it: name one of those, or "
                                 f"write `{stage.name}:` to read the stage just above")
            elif cycle is not None:
                self.diags.error(CYCLE, ref.loc, "stages read each other in a cycle: "
                                 + " → ".join(f"'{n}'" for n in cycle) + " (each reads the next)",
                                 f"a stage reads only stages above it, and '{ref.name}' is "
                                 f"below '{stage.name}': read a stage above '{stage.name}' instead")
            else:
                self.diags.error(REFERENCE, ref.loc, f"stage '{ref.name}' is used before it is "
                                 f"defined (on line {later[0].loc.line})",
                                 f"move `{ref.name}:` above `{stage.name}:`; a stage reads only "
                                 "stages above it")
            return None
        words = [*scope.outputs, ast.BLOCK_INPUT if inside else ast.NETWORK_INPUT]
        close = difflib.get_close_matches(ref.name, words, n=1, cutoff=0.6)
        where = f"block '{scope.block.name}'" if scope.block else "the network"
        hint = f"did you mean '{close[0]}'?" if close else (
            "it reads one of: " + ", ".join(f"'{w}'" for w in words))
        self.diags.error(REFERENCE, ref.loc, f"no stage named '{ref.name}' in {where}", hint)
        return None

    def _stage(self, scope: _Scope, stage: ast.Stage, sources: tuple[str, ...],
               stack: tuple[str, ...], last: bool) -> str:
        """Emit a stage (ops) or expand it (block instances); its output's flat name. A stage
        that cannot be expanded (reported) passes its input through, so that the stages
        reading it are wired, and checked, as if it were right."""
        name = scope.prefix + stage.name
        calls = [c for c in stage.ops if c.name in self.blocks]
        expect_name = name if not scope.prefix else scope.prefix.rstrip(".")
        if not calls:
            with self.diags.within(scope.notes):
                ops = tuple(self._substitute(c, scope) for c in stage.ops)
            self._count(len(ops), stage, scope)
            if not self.stopped:
                self.out.append(FlatStage(name, ops, sources, stage, stage.expect,
                                          name if stage.expect else expect_name, scope.notes,
                                          scope.block.name if scope.block else None,
                                          scope.uses))
            return name
        if len(calls) < len(stage.ops):
            op = next(c for c in stage.ops if c.name not in self.blocks)
            hint = f"put {op.text()} in a stage of its own (a stage is a run of ops, or of " \
                "block instances)"
            if lookup(op.name) is None:
                hint = f"'{op.name}' is neither an op nor a block" + (
                    f"; to read stage '{op.name}', write `{stage.name}({op.name}): …`"
                    if op.name in scope.outputs else "")
            with self.diags.within(scope.notes):
                self.diags.error(STRUCTURE, op.name_loc, f"stage '{stage.name}' both runs ops "
                                 "and instantiates blocks", hint)
            return sources[0]
        return self._instances(scope, stage, calls, sources, stack)

    def _instances(self, scope: _Scope, stage: ast.Stage, calls: list[ast.OpCall],
                   sources: tuple[str, ...], stack: tuple[str, ...]) -> str:
        with self.diags.within(scope.notes):
            counts = [self._repeat(c) for c in calls]
            if len(sources) > 1:
                self.diags.error(STRUCTURE, stage.sources[1].loc, f"stage '{stage.name}' "
                                 "instantiates blocks, which read one stage",
                                 "merge the stages first in a stage of their own, e.g. "
                                 f"`m({', '.join(r.name for r in stage.sources)}): Concat`")
        total = sum(counts)
        last = sources[0] if sources else INPUT
        k = 0
        for call, n in zip(calls, counts, strict=True):
            block = self.blocks[call.name]
            self.used.add(block.name)
            with self.diags.within(scope.notes):
                call = self._substitute(call, scope)
                env = _bind(block, call, self.diags)
                if call.joined:
                    self.diags.error(STRUCTURE, call.name_loc, f"`+` ties an activation to the "
                                     f"op before it, and {call.name} is a block",
                                     f"run it as the next block with `;`: `; {call.text()}`")
                if call.channels is not None and call.channels_loc is not None:
                    self.diags.error(BLOCK, call.channels_loc, f"block '{block.name}' takes no "
                                     "channel count", "give its sizes as arguments, "
                                     f"e.g. {_signature(block)}")
                if block.name in stack:
                    chain = " → ".join((*stack[stack.index(block.name):], block.name))
                    self.diags.error(CYCLE, call.name_loc, f"block '{block.name}' instantiates "
                                     f"itself: {chain}", "a block may use other blocks, "
                                     "but not itself, directly or through another")
                    env = None
            if env is None:
                k += n
                continue
            for _ in range(n):
                prefix = f"{scope.prefix}{stage.name}" + (f".{k}" if total > 1 else "") + "."
                note = Note(call.loc, f"in `{prefix.rstrip('.')}`, an instance of block "
                            f"'{block.name}' ({_bound(env)})")
                use = Use(prefix.rstrip("."), f"{block.name}("
                          + ",".join(ast.format_value(v) for v in env.values()) + ")" if env
                          else block.name)
                inner = _Scope(prefix, last, block.stages, block, env, (note, *scope.notes), {},
                               (use, *scope.uses))
                last = self.scope(inner, (*stack, block.name))
                k += 1
                if self.stopped:
                    return last
        if stage.expect is not None and self.out and self.out[-1].name == last:
            self.out[-1] = replace(self.out[-1], expect=stage.expect,
                                   expect_name=scope.prefix + stage.name)
        return last

    def _repeat(self, call: ast.OpCall) -> int:
        n = call.repeat
        if n is None:
            return 1
        assert call.repeat_loc is not None
        if not isinstance(n, int) or n < 1:
            self.diags.error(BLOCK, call.repeat_loc, f"a block is repeated a whole number of "
                             f"times, at least once, not {n}", f"e.g. `{call.name}(…) * 2`")
            return 1
        if n > MAX_OPS:
            self.diags.error(LIMIT, call.repeat_loc, f"{call.name} repeated {n:,} times is "
                             f"more than the limit of {MAX_OPS:,} ops in a network",
                             "repeat it fewer times")
            return 1
        return n

    def _count(self, n: int, stage: ast.Stage, scope: _Scope) -> None:
        self.ops += n
        if self.ops > MAX_OPS and not self.stopped:
            self.stopped = True
            with self.diags.within(scope.notes):
                self.diags.error(LIMIT, stage.loc, f"the network has more than {MAX_OPS:,} "
                                 "ops once its blocks are instantiated",
                                 "repeat blocks fewer times")

    def _substitute(self, call: ast.OpCall, scope: _Scope) -> ast.OpCall:
        """The call with the instance's parameters in place of their names."""
        env = scope.env
        args = tuple(replace(a, value=env[a.value]) if isinstance(a.value, str)
                     and a.value in env else a for a in call.args)
        if call.repeat is not None and call.name not in self.blocks:
            assert call.repeat_loc is not None
            self.diags.error(STRUCTURE, call.repeat_loc, f"`* {call.repeat}` repeats a block, "
                             f"and {call.name} is an op", "write the ops out, or make them a "
                             "block and repeat that")
        channels = call.channels
        if isinstance(channels, str):
            channels = self._channels(call, channels, scope)
        return replace(call, args=args, channels=channels)

    def _channels(self, call: ast.OpCall, name: str, scope: _Scope) -> int | str:
        assert call.channels_loc is not None
        value = scope.env.get(name)
        if value is None:
            if scope.block is None:
                self.diags.error(BLOCK, call.channels_loc, f"`x{name}` names a block "
                                 "parameter, and this stage is not in a block",
                                 "write the number of channels, e.g. x96")
            else:
                self.diags.error(BLOCK, call.channels_loc, f"block '{scope.block.name}' has no "
                                 f"parameter '{name}'", f"its parameters: "
                                 f"{_signature(scope.block)}")
            return name
        if not isinstance(value, int) or isinstance(value, bool):
            self.diags.error(BLOCK, call.channels_loc, f"`x{name}` is a channel count, and "
                             f"'{name}' is {ast.format_value(value)} here",
                             "pass a whole number")
            return name
        return value

    def unused(self) -> None:
        readers = {s for f in self.out for s in f.sources} | self.read_early
        final = self.out[-1].name if self.out else None
        for f in self.out:
            if f.name in readers or f.name == final:
                continue
            what = f"stage '{f.written.name}' of block '{f.block}'" if f.block \
                else f"stage '{f.name}'"
            with self.diags.within(f.notes):
                last = "the block's last stage is its" if f.block else \
                    "the last stage is the network's"
                self.diags.warning(UNUSED, f.written.name_loc, f"the output of {what} is never "
                                   "read", "read it from a later stage, as `next(" +
                                   f"{f.written.name}): …`, or delete it; only {last} output")
        for b in self.blocks.values():
            if b.name not in self.used:
                self.diags.warning(UNUSED, b.name_loc, f"block '{b.name}' is never used",
                                   f"instantiate it in a stage, e.g. `s: {_signature(b)}`, "
                                   "or delete it")


def _block_header(b: ast.Block, diags: Diagnostics) -> None:
    """Parameters named once, required ones before defaulted ones (as a call binds them)."""
    seen: set[str] = set()
    defaulted = False
    for p in b.params:
        if p.name in seen:
            diags.error(DUPLICATE, p.loc, f"block '{b.name}' has two parameters named "
                        f"'{p.name}'", "rename one")
        seen.add(p.name)
        if p.default is None and defaulted:
            diags.error(BLOCK, p.loc, f"parameter '{p.name}' has no default, and follows one "
                        "that has", "put the parameters without defaults first")
        defaulted = defaulted or p.default is not None
    if not b.stages:
        diags.error(BLOCK, b.name_loc, f"block '{b.name}' has no stages",
                    "write at least one, e.g. `a: Conv(3,1, pad=1) xc + ReLU`")


def _bind(block: ast.Block, call: ast.OpCall, diags: Diagnostics) -> dict[str, ast.Value] | None:
    """The instance's parameters from the call, or None after reporting why not."""
    names = [p.name for p in block.params]
    env: dict[str, ast.Value] = {}
    ok = True
    positional = [a for a in call.args if a.name is None]
    for a, name in zip(positional, names, strict=False):
        env[name] = a.value
    if len(positional) > len(names):
        diags.error(BLOCK, positional[len(names)].loc, f"block '{block.name}' takes "
                    f"{len(names)} parameter{'s' if len(names) != 1 else ''}, got "
                    f"{len(positional)}", f"write it as {_signature(block)}")
        ok = False
    for a in call.args:
        if a.name is None:
            continue
        if a.name not in names:
            diags.error(BLOCK, a.loc, f"block '{block.name}' has no parameter '{a.name}'",
                        f"write it as {_signature(block)}")
            ok = False
        elif a.name in env:
            diags.error(DUPLICATE, a.loc, f"parameter '{a.name}' is given twice",
                        "give each parameter once")
            ok = False
        else:
            env[a.name] = a.value
    for p in block.params:
        if p.name not in env:
            if p.default is None:
                diags.error(BLOCK, call.loc, f"block '{block.name}' needs its '{p.name}' "
                            "parameter", f"write it as {_signature(block)}")
                ok = False
            else:
                env[p.name] = p.default
    return env if ok else None


def _signature(block: ast.Block) -> str:
    parts = [p.name if p.default is None else f"{p.name}={ast.format_value(p.default)}"
             for p in block.params]
    return f"{block.name}({', '.join(parts)})"


def _bound(env: dict[str, ast.Value]) -> str:
    return (", ".join(f"{k}={ast.format_value(v)}" for k, v in env.items())
            or "no parameters")


def _dependencies(scope: _Scope) -> dict[str, list[str]]:
    """What each stage of the scope reads by name (the one above it when it names none)."""
    deps: dict[str, list[str]] = {}
    prev: str | None = None
    for s in scope.stages:
        deps.setdefault(s.name, []).extend(
            [r.name for r in s.sources] if s.sources else ([prev] if prev else []))
        prev = s.name
    return deps


def _cycle(deps: dict[str, list[str]], start: str, ref: str) -> list[str] | None:
    """The path start → ref → … → start through what stages read, if there is one."""
    path = [start]
    seen: set[str] = set()

    def walk(node: str) -> bool:
        path.append(node)
        if node == start:
            return True
        if node not in seen:
            seen.add(node)
            if any(walk(d) for d in deps.get(node, [])):
                return True
        path.pop()
        return False

    return path if walk(ref) else None


def expand(net: ast.Network, diags: Diagnostics) -> list[FlatStage]:
    """The network's stages as they run, blocks instantiated and references resolved."""
    ex = _Expander(net, diags)
    ex.blocks_of()
    top = _Scope("", INPUT, net.stages, None, {}, (), {})
    ex.scope(top, ())
    ex.unused()
    return ex.out
