"""The state of reading a cfg into a draft: each layer's output shape and the stage that
holds it, and how a layer's ops start a stage or join the one before (Darknet's in-place
[dropout], a final [softmax])."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alexnetc.compiler.ast import NETWORK_INPUT
from alexnetc.compiler.errors import Diagnostic, Severity
from alexnetc.compiler.records import Shape
from alexnetc.importers import Options
from alexnetc.importers.darknet.cfg import (
    ACTIVATIONS,
    CUT_HINT,
    OTHER_ACTIVATIONS,
    SLOPES,
    CfgLayer,
    Stop,
    Unsupported,
)
from alexnetc.importers.draft import Draft, Names, Op
from alexnetc.importers.source import INCONSISTENT, MALFORMED, UNSUPPORTED, Source, closest


class Reader:
    """One cfg read into a draft: layers sized with Darknet's rules as they are converted."""

    def __init__(self, source: Source, options: Options) -> None:
        self.source = source
        self.options = options
        self.draft = Draft(Names().new(Path(source.path).stem))
        self.layers: list[CfgLayer] = []
        self.reads: dict[int, list[int]] = {}  # route/shortcut: the layers each reads
        self.shapes: dict[int, Shape] = {}  # each layer's output, by Darknet's rules
        self.alias: dict[int, str] = {}  # the stage that holds each layer's output
        self.last = NETWORK_INPUT  # the last stage added
        self.input: Shape | None = None
        self.said: set[str] = set()  # conventions already explained in a comment
        self.pending: list[str] = []  # comments for the next stage
        self.unsupported: list[tuple[CfgLayer, Unsupported]] = []

    def before(self, index: int) -> str:
        """The stage holding the output of the layer before `index` (or the input)."""
        return self.alias[index - 1] if index else NETWORK_INPUT

    def stage(self, layer: CfgLayer, prefix: str, ops: list[Op], comments: Sequence[str] = (),
               reads: Sequence[int] | None = None) -> None:
        """A stage for `layer`, reading the layers in `reads` (default: the one before it)."""
        name = f"{prefix}{layer.index}"
        if self.unsupported:  # the network ends before the first layer it cannot express
            self.alias[layer.index] = name  # for messages about later layers
            return
        if reads is None:
            before = self.before(layer.index)
            sources: tuple[str, ...] | None = None if before == self.last else (before,)
        else:
            sources = tuple(self.alias[i] for i in reads)
        self.draft.add(name, ops, sources, [*self.pending, *comments])
        self.pending = []
        self.alias[layer.index] = self.last = name

    def tie(self, layer: CfgLayer, prefix: str, ops: list[Op],
             comments: Sequence[str] = ()) -> None:
        """Ops appended to the stage the layer reads when it is the last one (Darknet's
        [dropout] works in place); a stage of their own otherwise."""
        before = self.before(layer.index)
        if self.unsupported:
            self.alias[layer.index] = before
            return
        if before != self.last or not self.draft.stages:
            first, *rest = ops
            self.stage(layer, prefix, [Op(first.text), *rest], comments)
            return
        stage = self.draft.stages[-1]
        stage.ops += ops
        stage.comments += [*self.pending, *comments]
        self.pending = []
        self.alias[layer.index] = before

    def once(self, key: str, comment: str) -> list[str]:
        """A convention's comment, on the first line it applies to."""
        if not comment or key in self.said:
            return []
        self.said.add(key)
        return [comment]

    def activation_op(self, layer: CfgLayer, default: str) -> tuple[list[Op], list[str]]:
        """`activation=` as a tied op and its comment; parser.c's default if absent."""
        values = layer.values
        name = values.text("activation", default)
        if name not in ACTIVATIONS:
            loc = values.loc("activation")
            if name in OTHER_ACTIVATIONS:
                raise Unsupported(loc, f"activation {name} has no alexnetc counterpart",
                                   "alexnetc has relu, leaky (0.1), relie (0.01), logistic, "
                                   "tanh and relu6; " + CUT_HINT)
            close = closest(name, [*ACTIVATIONS, *OTHER_ACTIVATIONS])
            self.source.error(MALFORMED, loc, f"{layer.title}: unknown activation {name!r}",
                              (f"did you mean {close}? " if close else "")
                              + "(Darknet would quietly use relu)")
            raise Stop()
        op = ACTIVATIONS[name]
        comments = [] if values.given("activation") or op is None else \
            [f"no activation=: Darknet's default, {default}"]
        comments += self.once(name, SLOPES[name]) if name in SLOPES else []
        return ([Op(op, tied=True)] if op else []), comments

    def too_small(self, layer: CfgLayer, x: Shape, size: int, padding: int) -> Stop:
        self.source.error(INCONSISTENT, layer.values.loc("size"), f"{layer.title}: a "
                          f"{size}-pixel kernel does not fit the {x.h}x{x.w} input padded by "
                          f"{padding}", "use a smaller kernel or more padding")
        return Stop()

    def batchnorm_notes(self) -> list[str]:
        return self.once("bn", "batch_normalize=1: no bias; Darknet's running statistics "
                          "are 0.99·old + 0.01·batch (momentum=0.01), its eps 1e-5 (cuDNN's)")

    def is_last(self, layer: CfgLayer) -> bool:
        """Whether only [cost] layers follow."""
        return all(later.kind == "cost" for later in self.layers[layer.index + 1:])

    def named(self, index: int) -> str:
        """`layer 7 (shortcut7, 64x64x64)`: a layer as messages name it."""
        stage = self.alias.get(index, NETWORK_INPUT)
        held = "" if stage == NETWORK_INPUT else f"{stage}, "
        return f"layer {index} ({held}{self.shapes[index]})"

    def cut(self) -> Diagnostic:
        """End the network before the first layer alexnetc cannot express."""
        layer, u = self.unsupported[0]
        end = self.before(layer.index)
        if end == NETWORK_INPUT:
            self.source.error(UNSUPPORTED, u.loc, f"{layer.title}: {u.message}",
                              "it is the first layer, so cutting the network here leaves "
                              "nothing")
            raise self.source.failure()
        keep = self.draft.names.of(end)
        while self.draft.stages[-1].name != keep:
            self.draft.stages.pop()
        unread = _drop_unread(self.draft)
        last = len(self.layers) - 1
        left = f"layer {layer.index}" if last == layer.index else \
            f"layers {layer.index}–{last}"
        self.draft.notes.append(f"--skip-unsupported cut the network before {layer.title}: "
                                f"{left} left out" + (f", and {', '.join(unread)}, which "
                                f"{keep} does not read" if unread else ""))
        return Diagnostic(UNSUPPORTED, u.loc, f"{layer.title}: {u.message}; --skip-"
                          f"unsupported cuts the network before it",
                          f"the spec ends with {keep} (layer {layer.index - 1}); {left} "
                          "left out", Severity.WARNING)


def _drop_unread(draft: Draft) -> list[str]:
    """Drop the stages the last one does not read (a cut before a detection head can leave
    the branch that fed only the head): the names of those dropped."""
    reads: dict[str, tuple[str, ...]] = {}
    before = NETWORK_INPUT
    for stage in draft.stages:
        reads[stage.name] = stage.sources if stage.sources is not None else (before,)
        before = stage.name
    needed = {draft.stages[-1].name}
    for stage in reversed(draft.stages):
        if stage.name in needed:
            needed.update(reads[stage.name])
    dropped = [s.name for s in draft.stages if s.name not in needed]
    kept = [s for s in draft.stages if s.name in needed]
    before = NETWORK_INPUT
    for stage in kept:
        if stage.sources is None and reads[stage.name] != (before,):
            stage.sources = reads[stage.name]
        elif stage.sources == (before,):
            stage.sources = None
        before = stage.name
    draft.stages[:] = kept
    return dropped
