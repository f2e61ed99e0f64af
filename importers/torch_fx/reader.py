"""The traced graph into a draft, node by node in the order they run: which nodes join the
stage before them, which start one, which are merges, and which only reshape."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from alexnetc.compiler.ast import NETWORK_INPUT
from alexnetc.compiler.errors import Diagnostic, Severity
from alexnetc.importers import Imported, Options
from alexnetc.importers.draft import Draft, Op, Stage
from alexnetc.importers.source import UNSUPPORTED
from alexnetc.importers.torch_fx.ops import (
    ADDS,
    CATS,
    FUNCTIONS,
    MEANS,
    METHODS,
    RESHAPE_METHODS,
    RESHAPES,
    SUPPORTED,
    SpecOp,
    Unsupported,
    Val,
    as_module,
    module_rules,
    spatial_mean,
)
from alexnetc.importers.torch_fx.trace import class_name, described, within
from alexnetc.importers.torch_fx.where import Where, qualified


@dataclass
class Reader:
    """Turns the traced graph into a draft, node by node in the order they run."""

    gm: Any
    target: str
    options: Options
    where: Where
    draft: Draft = field(init=False)
    vals: dict[Any, Val] = field(default_factory=dict)
    tails: dict[str, Any] = field(default_factory=dict)  # stage name → node of its output
    sources: dict[str, dict[int, Any]] = field(default_factory=dict)  # stage → op → module
    warnings: list[Diagnostic] = field(default_factory=list)
    called: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.nodes = list(self.gm.graph.nodes)
        self.order = {n: i for i, n in enumerate(self.nodes)}
        self.output = next(n for n in self.nodes if n.op == "output")
        self.needed = self._ancestors(self.output)
        self.rules = module_rules()
        h, w, c = self.options.input or (0, 0, 0)
        name = re.sub(r"\W", "_", self.target.split(":")[1].split(".")[-1])
        cls = type(self.where.root)
        self.draft = Draft(name, (h, w, c), notes=[
            f"Imported from the PyTorch module {self.target} ({class_name(cls)}), traced with "
            "torch.fx in eval mode.",
            f"The module does not state its input size: {h}x{w}x{c} was given (--input)."])
        self.draft.setting_notes.append(
            "A PyTorch module states no training recipe: the paper's (alexnetc's defaults) "
            "applies.")

    def read(self) -> Imported:
        for node in self.nodes:
            try:
                if node.op == "output":
                    self._finish(node)
                    self._left_out()
                    break
                self._node(node)
            except Unsupported as e:
                self._unsupported(node, e)
                break
        return Imported(self.draft, self.warnings)

    def _left_out(self) -> None:
        """Modules with weights that forward does not run in eval mode (GoogLeNet's and
        Inception v3's auxiliary heads, built by default): a warning and a note, since the
        spec's parameter count is then not the module's."""
        kept = {n for n, _ in self.gm.named_parameters(remove_duplicate=False)}
        unused: dict[str, int] = {}
        for name, p in self.where.root.named_parameters(remove_duplicate=False):
            if name not in kept:
                top = _outermost(name, kept)
                unused[top] = unused.get(top, 0) + p.numel()
        if not unused:
            return
        names = ", ".join(f"'{n}'" for n in unused)
        total = sum(unused.values())
        what = f"{names} ({total:,} parameter{'s' if total != 1 else ''})"
        self.draft.notes.append(f"Left out: {what}, which forward does not use in eval mode.")
        _, loc = self.where.at_forward()
        self.warnings.append(Diagnostic(
            UNSUPPORTED, loc, f"{what} {'is' if len(unused) == 1 else 'are'} not used by "
            f"{self.where.name}.forward in eval mode: the spec leaves "
            f"{'it' if len(unused) == 1 else 'them'} out, and counts "
            f"{total:,} parameters fewer than the module",
            "build the module without them (e.g. aux_logits=False) to import what it "
            "evaluates", Severity.WARNING))

    def _unsupported(self, node: Any, e: Unsupported) -> None:
        """Fail, or with --skip-unsupported end the network before the node (with a warning)."""
        hint = e.hint or f"alexnetc imports {SUPPORTED}"
        if not self.options.skip_unsupported or not self.draft.stages or node.op == "output":
            skip = "" if self.options.skip_unsupported or node.op == "output" else \
                "; --skip-unsupported cuts the network before it"
            raise self.where.fail(e.at or node, UNSUPPORTED, e.message, hint + skip)
        _, loc = self.where.of(e.at or node)
        last = self.draft.stages[-1].name
        self.warnings.append(Diagnostic(
            UNSUPPORTED, loc, f"{e.message}; the network is cut before it and ends at stage "
            f"'{last}' (--skip-unsupported)", hint, Severity.WARNING))

    def _name(self, node: Any) -> str:
        """The node as the module's code wrote it, and where: `torch.matmul in Net.forward`."""
        return described(node, self.gm) + within(node, self.where.name)

    def _ancestors(self, node: Any) -> set[Any]:
        seen: set[Any] = set()
        todo = [node]
        while todo:
            n = todo.pop()
            for m in n.all_input_nodes:
                if m not in seen:
                    seen.add(m)
                    todo.append(m)
        return seen

    # nodes

    def _node(self, node: Any) -> None:
        from torch.fx.passes.shape_prop import TensorMetadata

        if node not in self.needed:
            if self._in_place(node):
                raise Unsupported(f"{self._name(node)} changes a tensor in place and its "
                                   "result is not used: the spec's dataflow cannot express it")
            return
        if node.op == "placeholder":
            if self.vals:
                raise Unsupported(f"forward takes a second input, '{node.name}': a spec "
                                   "network takes one image batch")
            self.vals[node] = Val(node, None, _spec_shape(node.meta["tensor_meta"].shape))
            return
        meta = node.meta.get("tensor_meta")
        if node.op == "get_attr" or meta is None:
            return  # a parameter read directly, or not a tensor (x.size(0)): used or refused
        if not isinstance(meta, TensorMetadata):
            raise Unsupported(f"{self._name(node)} gives several tensors, which no "
                               "alexnetc op does")
        if self._reshape(node):
            return
        if len(meta.shape) not in (2, 4):
            raise Unsupported(f"{self._name(node)} gives a {len(meta.shape)}-D tensor: "
                               "alexnetc's ops take N x C x H x W maps or N x F vectors")
        if self._merge(node):
            return
        mod = self._layer(node)
        arg, x = self._input(node)
        rule = self.rules.get(type(mod))
        if rule is None:
            raise Unsupported(f"{self._name(node)} has no alexnetc op")
        out = tuple(meta.shape[1:])
        if len(out) == 1 and len(x.shape) == 3 and _is_mean(node):
            out = (out[0], 1, 1)  # the 1x1 maps a mean without keepdim drops, as the spec has
        try:
            op = rule(mod, x, out, len(arg.meta["tensor_meta"].shape))
        except Unsupported as e:  # the rules say what; the node is who
            raise Unsupported(f"{self._name(node)}: {e.message}", e.hint) from None
        self._clobbers(node, x)
        self._add(node, op, x, out=out)

    def _layer(self, node: Any) -> Any:
        """The nn module a node runs or equals."""
        if node.op == "call_module":
            mod = self.gm.get_submodule(node.target)
            if next(mod.parameters(), None) is not None or next(mod.buffers(), None) is not None:
                if node.target in self.called:
                    raise Unsupported(f"'{node.target}' is called a second time: its weights "
                                       "are shared, which a spec cannot express",
                                       "give each use its own module")
                self.called.add(node.target)
            return mod
        name = qualified(node.target) if node.op == "call_function" else None
        try:
            if name in FUNCTIONS:
                return as_module(name, node.args, dict(node.kwargs), FUNCTIONS)
            if node.op == "call_method" and node.target in METHODS:
                return as_module(node.target, node.args, dict(node.kwargs), METHODS)
            if _is_mean(node):
                dims = len(node.args[0].meta["tensor_meta"].shape)
                return spatial_mean(node.args, dict(node.kwargs), dims)
        except Unsupported as e:
            raise Unsupported(f"{self._name(node)}: {e.message}", e.hint) from None
        raise Unsupported(f"{self._name(node)} has no alexnetc op")

    def _input(self, node: Any) -> tuple[Any, Val]:
        """The one network tensor an op reads (its first argument): its node and value."""
        from torch import fx

        first = node.args[0] if node.args else next(iter(node.kwargs.values()), None)
        if isinstance(first, list | tuple) and len(first) == 1:
            first = first[0]  # torch.cat([x], 1): x
        others = [a for a in node.all_input_nodes if a is not first and a in self.vals]
        if not isinstance(first, fx.Node) or first not in self.vals or others:
            raise Unsupported(f"{self._name(node)} reads a tensor that is not computed "
                               "from the input (a parameter or constant), or several tensors")
        return first, self.vals[first]

    def _reshape(self, node: Any) -> bool:
        """A flatten (or nn.Identity, .contiguous()): nothing in the spec, where FC flattens."""
        if not _passes_through(node, self.gm):
            return False
        arg, x = self._input(node)
        before, after = arg.meta["tensor_meta"].shape, node.meta["tensor_meta"].shape
        n = before[0]
        rest = 1
        for d in before[1:]:
            rest *= d
        if tuple(after) == tuple(before):
            self.vals[node] = x
            return True
        if tuple(after) != (n, rest):
            raise Unsupported(f"{self._name(node)} reshapes {_dims(before)} to "
                               f"{_dims(after)}: alexnetc flattens only each whole image, "
                               "inside FC",
                               "flatten with torch.flatten(x, 1) or x.view(x.size(0), -1) "
                               "right before an nn.Linear")
        maps = len(x.shape) == 3 and x.shape[1] * x.shape[2] > 1
        self.vals[node] = replace(x, flattened_at=node if maps else x.flattened_at)
        return True

    def _merge(self, node: Any) -> bool:
        """torch.cat(dim=1) as Concat, + as Add: a stage reading the stages it joins."""
        from torch import fx

        name = qualified(node.target) if node.op == "call_function" else \
            str(node.target) if node.op == "call_method" else ""
        if name in CATS:
            tensors = node.args[0] if node.args else node.kwargs.get("tensors", ())
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            dims = len(node.meta["tensor_meta"].shape)
            if not isinstance(dim, int) or dim % dims != 1:
                raise Unsupported(f"torch.cat along dimension {dim}: alexnetc's Concat "
                                   "joins channels", "concatenate along dim=1")
            inputs = list(tensors)
            op = "Concat"
        elif name in ADDS or (node.op == "call_method" and name in ("add", "add_")):
            inputs = list(node.args[:2]) + [node.kwargs[k] for k in ("other",)
                                            if k in node.kwargs]
            if node.kwargs.get("alpha", 1) != 1:
                raise Unsupported(f"{name}(…, alpha={node.kwargs['alpha']}): alexnetc's Add "
                                   "adds its inputs unscaled")
            op = "Add"
        else:
            return False
        if not all(isinstance(a, fx.Node) and a in self.vals for a in inputs):
            raise Unsupported(f"{self._name(node)} joins a constant or a parameter with "
                               "the network's tensors; alexnetc's merges join stages")
        vals = [self.vals[a] for a in inputs]
        shapes = {tuple(a.meta["tensor_meta"].shape) for a in [*inputs, node]}
        if op == "Add" and len(shapes) > 1:
            raise Unsupported(f"{self._name(node)} adds tensors of different shapes "
                               f"(broadcasting): alexnetc's Add takes equal shapes")
        self._add(node, SpecOp(op, head=True), *vals,
                  out=tuple(node.meta["tensor_meta"].shape[1:]))
        return True

    # building stages

    def _add(self, node: Any, op: SpecOp, *inputs: Val, out: tuple[int, ...] = ()) -> None:
        """Append the op to the stage of its input when it follows it alone, else start one."""
        out = out or tuple(node.meta["tensor_meta"].shape[1:])
        x = inputs[0]
        if not (op.elementwise or op.flattens):
            for v in inputs:
                self._not_flattened(v, node)
        shape = out if len(out) == 3 or op.head or len(x.shape) == 1 else x.shape
        stage = x.stage
        if (op.head or stage is None or len(inputs) > 1
                or self.tails.get(stage.name) is not x.node or self._readers(x.node) != 1):
            stage = self._stage(node, op, inputs)
        else:
            stage.ops.append(Op(op.text, tied=op.tied))
            if op.comment:
                stage.comments.append(op.comment)
        if op.weights is not None:
            self.sources.setdefault(stage.name, {})[len(stage.ops) - 1] = op.weights
        self.tails[stage.name] = node
        flattened = x.flattened_at if op.elementwise else None
        self.vals[node] = Val(node, stage, shape, flattened)

    def _stage(self, node: Any, op: SpecOp, inputs: Sequence[Val]) -> Stage:
        reads = [v.stage.name if v.stage else NETWORK_INPUT for v in inputs]
        above = self.draft.stages[-1].name if self.draft.stages else NETWORK_INPUT
        stage = self.draft.add(self._raw_name(node), [Op(op.text)],
                               comments=[op.comment] if op.comment else [])
        if reads != [above]:
            stage.sources = tuple(reads)
        return stage

    def _raw_name(self, node: Any) -> str:
        """`features.0` for a module; for a function, the module whose forward calls it
        (`layer1.0` for its `+`), or its own name at the top (`cat`)."""
        if node.op == "call_module":
            return str(node.target)
        stack = node.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        base = re.sub(r"_\d+$", "", node.name)
        if path and not self.draft.names.known(path):
            return str(path)
        return f"{path}.{base}" if path else base

    def _readers(self, node: Any) -> int:
        """How many ops read a node's tensor, through flattens (which are no ops)."""
        count = 0
        for user in node.users:
            if user.op == "output":
                count += 1
            elif user in self.needed and "tensor_meta" in user.meta:
                count += self._readers(user) if _passes_through(user, self.gm) else 1
        return count

    def _not_flattened(self, v: Val, node: Any) -> None:
        at = v.flattened_at
        if at is not None:
            c, h, w = v.shape
            raise Unsupported(f"{self._name(at)} flattens {h}x{w}x{c} maps that "
                               f"{self._name(node)} then reads: alexnetc flattens only "
                               "inside FC, so only an nn.Linear (or an activation or "
                               "dropout before it) may read the flattened vector",
                               "flatten right before the nn.Linear", at)

    def _in_place(self, node: Any) -> bool:
        if node.op not in ("call_module", "call_function", "call_method"):
            return False
        if node.op == "call_module":
            return bool(getattr(self.gm.get_submodule(node.target), "inplace", False))
        if node.kwargs.get("inplace"):
            return True
        name = str(node.target) if node.op == "call_method" else \
            getattr(node.target, "__name__", "")
        return name.endswith("_") and not name.endswith("__")

    def _clobbers(self, node: Any, x: Val) -> None:
        """An op that overwrites its input which a later op still reads: the spec, where
        every stage keeps its output, would compute something else."""
        if not self._in_place(node):
            return
        later = [u for u in _readers_through(x.node, self.gm)
                 if u is not node and self.order[u] > self.order[node] and u in self.needed]
        if later:
            raise Unsupported(f"{self._name(node)} overwrites its input in place, which "
                               f"{self._name(later[0])} reads afterwards: the spec keeps "
                               "every stage's output", "use inplace=False")

    def _finish(self, node: Any) -> None:
        from torch import fx

        out = node.args[0]
        if not isinstance(out, fx.Node):
            n = len(out) if isinstance(out, tuple | list | dict) else 0
            raise Unsupported(f"forward returns {n or 'no'} tensor{'s' if n != 1 else ''}: "
                               "a spec network gives one")
        x = self.vals.get(out)
        if x is None or x.stage is None:
            raise Unsupported("forward returns its input or a constant: the module computes "
                               "nothing from its input that a spec can express")
        self._not_flattened(x, node)
        if x.stage is not self.draft.stages[-1]:  # the spec's output is its last stage
            raise Unsupported(f"forward returns the output of '{x.stage.name}', computed "
                               "before other stages that nothing reads")


def _outermost(name: str, kept: set[str]) -> str:
    """The outermost module holding parameter `name` and none of `kept` (`aux1`)."""
    parts = name.split(".")
    for i in range(1, len(parts)):
        prefix = ".".join(parts[:i]) + "."
        if not any(k.startswith(prefix) for k in kept):
            return prefix[:-1]
    return name


def _is_mean(node: Any) -> bool:
    from torch import fx

    mean = (node.op == "call_method" and node.target == "mean") or \
        (node.op == "call_function" and qualified(node.target) in MEANS)
    return mean and bool(node.args) and isinstance(node.args[0], fx.Node)


def _spec_shape(shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(d) for d in shape[1:])


def _dims(shape: Sequence[int]) -> str:
    """`N x 8 x 4 x 4`: a shape of the shape run, its batch size left open."""
    return " x ".join(["N", *map(str, shape[1:])])


def _passes_through(node: Any, gm: Any) -> bool:
    """Flattens, views and identities: spec-wise the tensor they read."""
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__ in ("Flatten", "Identity")
    if node.op == "call_method":
        return node.target in RESHAPE_METHODS
    if node.op == "call_function":
        name = qualified(node.target)
        tensors = node.args[0] if node.args else ()
        single_cat = name in CATS and isinstance(tensors, list | tuple) and len(tensors) == 1
        return name in RESHAPES or single_cat
    return False


def _readers_through(node: Any, gm: Any) -> Iterator[Any]:
    for user in node.users:
        yield user
        if _passes_through(user, gm):
            yield from _readers_through(user, gm)
