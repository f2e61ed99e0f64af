"""PyTorch modules, `alexnetc import package.module:ClassOrFactory`, read through torch.fx.

The module is imported as `python -m` would (the current folder first on the path), built
with no arguments and put in eval mode, then traced with torch.fx (`symbolic_trace`'s tracer,
recording each node's stack so that errors point at the line of the module's source) and run
once on zeros of the `--input` size to know every tensor's shape. Each traced op becomes a
spec op; an op and the activations, norms and pools that follow it, each the only reader of
the one before, form one stage named after the op's module (`features.0` → `features_0`).
What the spec cannot express is a located error at the line of the module's code.

torch is imported only when a module is read: `alexnetc import` of a Caffe or Darknet file
asks this format's `sniff` too, which must stay cheap.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import io
import os
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from alexnetc.compiler.ast import NETWORK_INPUT
from alexnetc.compiler.errors import Diagnostic, Severity, SourceLoc, SpecError
from alexnetc.importers import Format, Imported, Options
from alexnetc.importers.blocks import fold_blocks
from alexnetc.importers.draft import Draft, Op, Stage, number
from alexnetc.importers.source import INCONSISTENT, MALFORMED, UNSUPPORTED, Source

_TARGET = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")
_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')
_BATCH = 2  # images in the shape run: a batch of 1 would hide `view(1, -1)` among flattens

SUPPORTED = ("Conv2d, Linear, BatchNorm2d/1d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, ReLU, "
             "ReLU6, LeakyReLU, PReLU, Tanh, Sigmoid, LocalResponseNorm, Dropout, Softmax "
             "(modules or functions), flatten, torch.cat and +")


def sniff(paths: Sequence[str], texts: Sequence[str] | None) -> bool:
    """One `dotted.module:Name` that names no file."""
    return (len(paths) == 1 and _TARGET.fullmatch(paths[0]) is not None
            and not Path(paths[0]).exists())


def read(paths: Sequence[str], options: Options) -> Imported:
    from alexnetc.cli.main import UsageError

    target = paths[0]
    if _TARGET.fullmatch(target) is None:
        raise UsageError(f"{target}: a PyTorch module is named `package.module:ClassOrFactory`")
    with _cwd_on_path():
        root = _build(target)
        if options.input is None:
            raise UsageError(f"{target}: a PyTorch module does not state its input size; give "
                             "it with --input HxWxC, e.g. --input 224x224x3")
        where = _Where(root)
        gm = _trace(root, target, where)
        _propagate(gm, options.input, where)
        reader = _Reader(gm, target, options, where)
        imported = reader.read()
    folded = fold_blocks(imported.draft)
    imported.draft = folded.draft
    if options.weights is not None and imported.draft.stages:
        imported.weights = _write_weights(imported.draft, folded.rekey(reader.sources),
                                          Path(options.weights), target)
    return imported


FORMAT = Format("torch", "PyTorch module (torch.fx)", sniff, read)


# --- finding the module ------------------------------------------------------------------------


@contextmanager
def _cwd_on_path() -> Iterator[None]:
    """The current folder first on sys.path while the module is read, as `python -m` has it."""
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        yield
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)


def _build(target: str) -> Any:
    """The module `target` names, built with no arguments, in eval mode, float32 on the CPU."""
    from torch import nn

    from alexnetc.cli.main import UsageError

    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name + ".").startswith(e.name + "."):
            raise UsageError(f"{target}: no module named '{e.name}' (looked in the current "
                             "folder and on Python's path)") from None
        raise _exception_error(e, f"importing {module_name} raised {_raised(e)}") from None
    except SyntaxError as e:
        raise _syntax_error(e) from None
    except Exception as e:
        raise _exception_error(e, f"importing {module_name} raised {_raised(e)}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            raise UsageError(f"{target}: {module_name} has no '{attr}'"
                             + (f" (did you mean '{close[0]}'?)" if close else ""))
        obj = getattr(obj, part)
    if not isinstance(obj, nn.Module):
        obj = _call(obj, target)
    return obj.float().cpu().eval()


def _call(factory: Any, target: str) -> Any:
    """The class instantiated, or the factory called, with no arguments."""
    from torch import nn

    if not callable(factory):
        raise _definition_error(factory, target, f"{target} is a {type(factory).__name__}, "
                                "not an nn.Module class or a function that returns one")
    try:
        signature = inspect.signature(factory)
        signature.bind()
    except TypeError:
        needed = [p.name for p in signature.parameters.values()
                  if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY,
                                                          p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        raise _definition_error(factory, target, f"{target} needs arguments "
                                f"({', '.join(needed)}), and alexnetc import calls it with none",
                                "import a function that builds the network with its "
                                "arguments, e.g. `def net(): return Net(10)` as module:net"
                                ) from None
    except ValueError:
        pass  # no signature to read (a builtin): call it and see
    try:
        obj = factory()
    except Exception as e:
        raise _exception_error(e, f"{target}() raised {_raised(e)}") from None
    if not isinstance(obj, nn.Module):
        raise _definition_error(factory, target, f"{target}() gives a {type(obj).__name__}, "
                                "not a torch.nn.Module")
    return obj


def _definition_error(obj: Any, target: str, message: str, hint: str = "") -> SpecError:
    """An error at the line that defines `obj` (the class or function named)."""
    found = _defined_at(obj)
    source, loc = _located(found) if found else _nowhere(target)
    return source.fail(UNSUPPORTED, loc, message, hint)


def _defined_at(obj: Any) -> tuple[str, int] | None:
    try:
        file = inspect.getsourcefile(obj)
        line = inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        return None
    return (file, max(line, 1)) if file else None


# --- where in the module's source --------------------------------------------------------------


def _shown(file: str) -> str:
    """A file's name as messages give it: relative to the current folder when inside it."""
    rel = os.path.relpath(file)
    return file if rel.startswith("..") else rel


def _own_code(file: str) -> bool:
    """Whether a frame's file is the user's code, not torch's or alexnetc's, and readable."""
    import torch

    torch_dir = os.path.dirname(os.path.abspath(torch.__file__))
    path = os.path.abspath(file)
    ours = {os.path.abspath(f) for name, m in list(sys.modules.items())
            if name.split(".")[0] == "alexnetc" and (f := getattr(m, "__file__", None))}
    return not path.startswith(torch_dir + os.sep) and path not in ours \
        and os.path.isfile(path)


def _located(frame: tuple[str, int], words: Sequence[str] = ()) -> tuple[Source, SourceLoc]:
    """The source and location of `frame`'s line: under the first of `words` it holds, else
    the whole statement."""
    file, line = frame
    try:
        source = Source.read(file)
        source.path = _shown(file)
    except OSError:
        return _nowhere(_shown(file), line)
    lines = source.lines
    text = lines[line - 1] if 0 < line <= len(lines) else ""
    for word in words:
        pattern = rf"(?<!\w){re.escape(word)}\b" if word.isidentifier() else re.escape(word)
        m = re.search(pattern, text)
        if m:
            return source, source.loc(line, m.start() + 1, len(word))
    indent = len(text) - len(text.lstrip())
    return source, source.loc(line, indent + 1)


def _nowhere(name: str, line: int = 1) -> tuple[Source, SourceLoc]:
    source = Source(name, "")
    return source, SourceLoc(name, line, 1, line, 1)


def _user_frame(frames: Sequence[tuple[str, int]]) -> tuple[str, int] | None:
    """The innermost frame in the user's own code."""
    return next((f for f in reversed(frames) if _own_code(f[0])), None)


def _raised(e: BaseException) -> str:
    from alexnetc.cli.main import first_lines

    return f"{type(e).__name__}: {first_lines(str(e), 1)}"


def _exception_error(e: BaseException, message: str, fallback: tuple[str, int] | None = None,
                     kind: str = MALFORMED, hint: str = "") -> SpecError:
    """An exception of the module's code as an error at its innermost line in that code."""
    frames = [(f.filename, f.lineno or 1) for f in traceback.extract_tb(e.__traceback__)]
    frame = _user_frame(frames) or fallback
    source, loc = _located(frame) if frame else _nowhere("<module>")
    return source.fail(kind, loc, message, hint)


def _syntax_error(e: SyntaxError) -> SpecError:
    file, line = e.filename or "<module>", e.lineno or 1
    source, loc = _located((file, line)) if os.path.isfile(file) else _nowhere(file, line)
    if e.offset:
        one_line = e.end_lineno in (None, line) and e.end_offset
        width = max((e.end_offset or 0) - e.offset, 1) if one_line else 0
        loc = source.loc(line, e.offset, width)
    return source.fail(MALFORMED, loc, f"invalid Python: {e.msg}")


class _Where:
    """Locations in the module's source: the line that calls each traced op, else the line
    that defines the module's forward."""

    def __init__(self, root: Any):
        self.root = root
        self.forward = _defined_at(type(root).forward) or _defined_at(type(root))
        self.name = type(root).__name__

    def of(self, node: Any) -> tuple[Source, SourceLoc]:
        frames = [(m["file"], int(m["line"])) for m in _FRAME.finditer(node.stack_trace or "")]
        frame = _user_frame(frames) or self.forward
        if frame is None:
            return _nowhere(self.name)
        return _located(frame, _words(node))

    def fail(self, node: Any, kind: str, message: str, hint: str = "") -> SpecError:
        source, loc = self.of(node) if node is not None else self.at_forward()
        return source.fail(kind, loc, message, hint)

    def at_forward(self) -> tuple[Source, SourceLoc]:
        return _located(self.forward) if self.forward else _nowhere(self.name)


def _words(node: Any) -> list[str]:
    """What the caret should underline on a node's line: the function, method or module."""
    if node.op == "call_module":
        return [p for p in reversed(str(node.target).split(".")) if p.isidentifier()]
    if node.op == "call_method":
        return [str(node.target)]
    if node.op != "call_function":
        return []
    name = _qualified(node.target)
    return [_SYMBOLS[name].strip("[]") or "["] if name in _SYMBOLS else [name.split(".")[-1]]


# --- tracing -------------------------------------------------------------------------------------


def _trace(root: Any, target: str, where: _Where) -> Any:
    """torch.fx's graph of the module; a forward fx cannot follow is one located error."""
    import torch.fx as fx

    tracer = fx.Tracer()
    tracer.record_stack_traces = True  # each node's line in the module's source
    try:
        graph = tracer.trace(root)
    except Exception as e:
        data_dependent = isinstance(e, fx.proxy.TraceError) and "control flow" in str(e)
        if data_dependent:
            hint = ("torch.fx follows one path through forward: compute it without `if` or "
                    "`while` on a tensor's values, or import a module that does")
            raise _exception_error(e, f"torch.fx cannot trace {target}: its forward branches "
                                   "on a tensor's values (data-dependent control flow)",
                                   where.forward, UNSUPPORTED, hint) from None
        raise _exception_error(e, f"torch.fx cannot trace {target}: {_raised(e)}",
                               where.forward, UNSUPPORTED) from None
    return fx.GraphModule(tracer.root, graph, type(root).__name__)


def _propagate(gm: Any, input_hwc: tuple[int, int, int], where: _Where) -> None:
    """Every node's output shape (`node.meta["tensor_meta"]`) from a zero image batch."""
    import torch
    from torch.fx.passes.shape_prop import ShapeProp

    current: list[Any] = []

    class Shapes(ShapeProp):
        def run_node(self, n: Any) -> Any:
            current[:] = [n]
            return super().run_node(n)

    h, w, c = input_hwc
    try:  # ShapeProp prints the traceback of a failing node: the error below says it all
        with torch.no_grad(), redirect_stderr(io.StringIO()):
            Shapes(gm).propagate(torch.zeros(_BATCH, c, h, w))
    except Exception as e:
        cause = e.__cause__ or e
        node = current[0] if current else None
        what = _what(node, gm) if node is not None else "the module"
        raise where.fail(node, INCONSISTENT, f"on a {h}x{w}x{c} input, {what} raises "
                         f"{_raised(cause)}",
                         "give the input size the module expects with --input HxWxC") from None


# --- describing nodes --------------------------------------------------------------------------


def _class_name(cls: type) -> str:
    module = cls.__module__
    return f"nn.{cls.__name__}" if module.startswith("torch.nn.") else \
        f"{module}.{cls.__qualname__}"


# Python's operators as the module's code writes them.
_SYMBOLS = {"operator.add": "+", "operator.iadd": "+=", "operator.sub": "-", "operator.mul": "*",
            "operator.imul": "*=", "operator.truediv": "/", "operator.matmul": "@",
            "operator.neg": "-", "operator.pow": "**", "operator.getitem": "[]"}


def _qualified(target: Any) -> str:
    from torch.fx.node import _get_qualified_name

    try:
        name = _get_qualified_name(target)
    except Exception:
        name = getattr(target, "__name__", repr(target))
    return name.replace("_operator.", "operator.").replace("torch.nn.functional.", "F.")


def _what(node: Any, gm: Any) -> str:
    """`'features.3' (nn.GELU)`, `torch.matmul`, `.view()`: the node as the module wrote it."""
    if node.op == "call_module":
        return f"'{node.target}' ({_class_name(type(gm.get_submodule(node.target)))})"
    if node.op == "call_method":
        return f".{node.target}()"
    if node.op == "call_function":
        name = _qualified(node.target)
        return f"`{_SYMBOLS[name]}` ({name})" if name in _SYMBOLS else name
    return f"'{node.name}'"


def _within(node: Any, root_name: str) -> str:
    """` in 'blocks.0' (Scale, custom.py:8)`: the module whose forward holds a function node."""
    stack = node.meta.get("nn_module_stack") or {}
    if node.op == "call_module":
        return ""  # the node is the module, named already
    if not stack:
        return f" in {root_name}.forward"
    path, cls = list(stack.values())[-1]
    defined = _defined_at(cls)
    where = f", {os.path.basename(defined[0])}:{defined[1]}" if defined else ""
    return f" in '{path}' ({_class_name(cls)}{where})"


# --- what each traced op becomes -----------------------------------------------------------------


class _Unsupported(Exception):
    """What the spec cannot express; `at`: the node to point at, when not the one read."""

    def __init__(self, message: str, hint: str = "", at: Any = None):
        super().__init__(message)
        self.message, self.hint, self.at = message, hint, at


@dataclass(frozen=True)
class _Op:
    """One spec op: its text, whether it starts a stage (Conv, FC) or may follow the op
    before in one, the conversion said in a comment, the source module holding its weights."""

    text: str
    head: bool = False
    tied: bool = False  # an activation: joined with `+`
    comment: str = ""
    weights: Any = None
    elementwise: bool = False  # same on a flattened vector as on the maps it came from
    flattens: bool = False  # FC: reads maps as the flattened vector


@dataclass(frozen=True)
class _Val:
    """A tensor of the traced network as the spec sees it: the stage whose output it is (None:
    the input), its spec shape ((C, H, W) maps or (F,)), and the node that flattened it while
    the spec keeps its maps for an FC to flatten."""

    node: Any
    stage: Stage | None
    shape: tuple[int, ...]
    flattened_at: Any = None


def _two(v: Any) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    a, b = v
    return int(a), int(b)


def _hw(x: _Val) -> tuple[int, int]:
    return x.shape[1], x.shape[2]


def _pair(p: tuple[int, int]) -> str:
    return str(p[0]) if p[0] == p[1] else f"{p[0]}x{p[1]}"


def _untiled(hw: tuple[int, int], span: tuple[int, int], stride: tuple[int, int],
             pad: tuple[int, int]) -> str:
    """Where windows do not tile, as the checker words it: `(224 + 2·2 − 11) = 217 is not a
    multiple of stride 4` (each axis named when they differ); "" where they tile."""
    parts = {}
    for axis, n, k, s, p in zip(("height", "width"), hw, span, stride, pad, strict=True):
        if (n + 2 * p - k) % s:
            parts[axis] = (f"({n} + 2·{p} − {k}) = {n + 2 * p - k} is not a multiple of "
                           f"stride {s}")
    if len(parts) == 2 and len(set(parts.values())) == 1:
        return parts["height"]
    return "; ".join(f"{axis}: {text}" for axis, text in parts.items())


def _conv(mod: Any, x: _Val, out: tuple[int, ...], dims: int) -> _Op:
    if mod.padding_mode != "zeros":
        raise _Unsupported(f"padding_mode='{mod.padding_mode}': alexnetc pads with zeros only")
    k, s, d = _two(mod.kernel_size), _two(mod.stride), _two(mod.dilation)
    span = (d[0] * (k[0] - 1) + 1, d[1] * (k[1] - 1) + 1)
    args = [f"{_pair(k)},{_pair(s)}"]
    comment = ""
    if mod.padding == "same":
        args.append("pad=same")
    else:
        pad = (0, 0) if mod.padding == "valid" else _two(mod.padding)
        if pad[0] > span[0] // 2 or pad[1] > span[1] // 2:
            raise _Unsupported(f"padding {_pair(pad)} is more than half the kernel's span "
                               f"{_pair(span)}: alexnetc's windows pad at most half their span",
                               "pad the input once before the convolution with a wider "
                               "kernel, or use less padding")
        if pad != (0, 0):
            args.append(f"pad={_pair(pad)}")
        untiled = _untiled(_hw(x), span, s, pad)
        if untiled:
            comment = f"PyTorch floors: {untiled}"
    if d != (1, 1):
        args.append(f"dilation={_pair(d)}")
    if mod.groups != 1:
        args.append(f"groups={mod.groups}")
    if mod.bias is None:
        args.append("bias=false")
    if comment:
        args.append("remainder=drop")
    return _Op(f"Conv({', '.join(args)}) x{mod.out_channels}", head=True, comment=comment,
               weights=mod)


def _linear(mod: Any, x: _Val, out: tuple[int, ...], dims: int) -> _Op:
    if dims != 2:
        raise _Unsupported(f"on a {dims}-D tensor it applies to its last dimension only, "
                           "which alexnetc's FC does not",
                           "flatten each image first: torch.flatten(x, 1)")
    bias = "" if mod.bias is not None else ", bias=false"
    return _Op(f"FC({mod.out_features}{bias})", head=True, weights=mod, flattens=True)


def _batch_norm(mod: Any, x: _Val, out: tuple[int, ...], dims: int) -> _Op:
    want = 4 if type(mod).__name__ == "BatchNorm2d" else 2
    if dims != want:
        raise _Unsupported(f"a {dims}-D input: alexnetc normalises maps (N x C x H x W) or "
                           "feature vectors (N x F)")
    if not mod.affine:
        raise _Unsupported("affine=False: alexnetc's BatchNorm always learns a scale and "
                           "a shift", "use affine=True (the default)")
    if not mod.track_running_stats or mod.momentum is None:
        what = ("track_running_stats=False: it normalises with each batch's statistics even "
                "in eval mode" if not mod.track_running_stats else
                "momentum=None (a cumulative average of the batches)")
        raise _Unsupported(f"{what}, which alexnetc's BatchNorm does not",
                           "use the default running statistics (momentum=0.1)")
    args = ([f"eps={number(mod.eps)}"] if mod.eps != 1e-5 else []) + \
        ([f"momentum={number(mod.momentum)}"] if mod.momentum != 0.1 else [])
    return _Op("BatchNorm" + (f"({', '.join(args)})" if args else ""), weights=mod)


def _pool(mod: Any, x: _Val, out: tuple[int, ...], dims: int) -> _Op:
    kind = "MaxPool" if type(mod).__name__ == "MaxPool2d" else "AvgPool"
    if kind == "MaxPool" and (mod.return_indices or _two(mod.dilation) != (1, 1)):
        raise _Unsupported("return_indices=True: alexnetc's MaxPool gives the maxima only"
                           if mod.return_indices else
                           f"dilation={mod.dilation}: alexnetc's pools read whole windows")
    k = _two(mod.kernel_size)
    s = _two(mod.stride) if mod.stride not in (None, [], ()) else k
    pad = _two(mod.padding)
    if kind == "AvgPool":
        if mod.divisor_override is not None:
            raise _Unsupported(f"divisor_override={mod.divisor_override}: alexnetc's AvgPool "
                               "divides by the window")
        if not mod.count_include_pad and pad != (0, 0):
            raise _Unsupported("count_include_pad=False: alexnetc's AvgPool counts the zero "
                               "padding in each window's mean", "use count_include_pad=True "
                               "(the default), or no padding")
    args = [f"{_pair(k)},{_pair(s)}"] + ([f"pad={_pair(pad)}"] if pad != (0, 0) else [])
    comment = ""
    untiled = _untiled(_hw(x), k, s, pad)
    if untiled and mod.ceil_mode:
        args.append("remainder=ceil")
        comment = f"PyTorch ceil_mode: {untiled}"
    elif untiled:
        args.append("remainder=drop")
        comment = f"PyTorch floors: {untiled}"
    return _Op(f"{kind}({', '.join(args)})", comment=comment)


def _adaptive(mod: Any, x: _Val, out: tuple[int, ...], dims: int) -> _Op:
    size = (out[1], out[2])
    return _Op("GlobalAvgPool" if size == (1, 1) else f"AdaptiveAvgPool({_pair(size)})")


def _lrn(mod: Any, x: _Val, out: tuple[int, ...], dims: int) -> _Op:
    n = int(mod.size)
    if n % 2 == 0:
        raise _Unsupported(f"a LocalResponseNorm window of {n} channels is not centred on "
                           f"its channel (PyTorch's reaches {n // 2} before it and "
                           f"{n // 2 - 1} after); alexnetc's ResNorm takes odd windows")
    args = [str(n), f"alpha={number(mod.alpha / n)}"]
    if mod.beta != 0.75:
        args.append(f"beta={number(mod.beta)}")
    if mod.k != 2:
        args.append(f"k={number(mod.k)}")
    return _Op(f"ResNorm({', '.join(args)})",
               comment=f"PyTorch LRN: alpha {number(mod.alpha)} / size {n}")


def _prelu(mod: Any, x: _Val, out: tuple[int, ...], dims: int) -> _Op:
    channels = x.shape[0]
    comment = ""
    if mod.num_parameters != channels:
        comment = (f"PyTorch PReLU: 1 slope shared by {channels} channels, here {channels} "
                   f"({channels - 1} more parameters)")
    return _Op("PReLU", tied=True, comment=comment, weights=mod)


def _leaky(mod: Any, x: _Val, out: tuple[int, ...], dims: int) -> _Op:
    if mod.negative_slope < 0:
        raise _Unsupported(f"negative_slope={mod.negative_slope}: alexnetc's LeakyReLU takes "
                           "slopes of 0 or more")
    return _Op(f"LeakyReLU({number(mod.negative_slope)})", tied=True, elementwise=True)


def _softmax(mod: Any, x: _Val, out: tuple[int, ...], dims: int) -> _Op:
    dim = mod.dim if mod.dim is not None else (0 if dims in (0, 1, 3) else 1)
    if dim % dims != 1:
        raise _Unsupported(f"Softmax over dimension {dim} of a {dims}-D tensor: alexnetc's "
                           "Softmax is over the channels", "use dim=1")
    return _Op("Softmax", tied=True)


def _dropout(mod: Any, x: _Val, out: tuple[int, ...], dims: int) -> _Op:
    return _Op(f"Dropout({number(mod.p)})", elementwise=True)


_Rule = Callable[[Any, _Val, tuple[int, ...], int], _Op]  # (module, input, output, input dims)


def _activation(text: str) -> _Rule:
    return lambda mod, x, out, dims: _Op(text, tied=True, elementwise=True)


def _module_rules() -> dict[type, _Rule]:
    from torch import nn

    return {nn.Conv2d: _conv, nn.Linear: _linear, nn.BatchNorm2d: _batch_norm,
            nn.BatchNorm1d: _batch_norm, nn.MaxPool2d: _pool, nn.AvgPool2d: _pool,
            nn.AdaptiveAvgPool2d: _adaptive, nn.LocalResponseNorm: _lrn, nn.PReLU: _prelu,
            nn.LeakyReLU: _leaky, nn.Softmax: _softmax, nn.Dropout: _dropout,
            nn.ReLU: _activation("ReLU"), nn.ReLU6: _activation("ReLU6"),
            nn.Tanh: _activation("Tanh"), nn.Sigmoid: _activation("Sigmoid")}


# Functions and tensor methods as the module they equal: (module class name, the names of the
# arguments after the input, in order); `training` is F.dropout's, checked apart.
_FUNCTIONS = {
    "F.relu": ("ReLU", ("inplace",)), "torch.relu": ("ReLU", ()), "torch.relu_": ("ReLU", ()),
    "F.relu_": ("ReLU", ()), "F.relu6": ("ReLU6", ("inplace",)),
    "F.leaky_relu": ("LeakyReLU", ("negative_slope", "inplace")),
    "torch.tanh": ("Tanh", ()), "F.tanh": ("Tanh", ()),
    "torch.sigmoid": ("Sigmoid", ()), "F.sigmoid": ("Sigmoid", ()),
    "F.softmax": ("Softmax", ("dim", "_stacklevel", "dtype")),
    "torch.softmax": ("Softmax", ("dim", "dtype")),
    "F.dropout": ("Dropout", ("p", "training", "inplace")),
    "F.local_response_norm": ("LocalResponseNorm", ("size", "alpha", "beta", "k")),
    "F.max_pool2d": ("MaxPool2d", ("kernel_size", "stride", "padding", "dilation",
                                   "ceil_mode", "return_indices")),
    "F.avg_pool2d": ("AvgPool2d", ("kernel_size", "stride", "padding", "ceil_mode",
                                   "count_include_pad", "divisor_override")),
    "torch._C._nn.avg_pool2d": ("AvgPool2d", ("kernel_size", "stride", "padding", "ceil_mode",
                                              "count_include_pad", "divisor_override")),
    "F.adaptive_avg_pool2d": ("AdaptiveAvgPool2d", ("output_size",)),
}
_METHODS = {"relu": ("ReLU", ()), "relu_": ("ReLU", ()), "tanh": ("Tanh", ()),
            "tanh_": ("Tanh", ()), "sigmoid": ("Sigmoid", ()), "sigmoid_": ("Sigmoid", ()),
            "softmax": ("Softmax", ("dim", "dtype"))}
# Arguments a function takes that its module does not (checked, then left out).
_NOT_MODULE_ARGS = {"inplace", "_stacklevel", "dtype", "training"}

_RESHAPES = {"torch.flatten", "torch.reshape"}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "contiguous"}
_ADDS = {"operator.add", "operator.iadd", "torch.add"}
_CATS = {"torch.cat", "torch.concat", "torch.concatenate"}


def _as_module(name: str, args: Sequence[Any], kwargs: dict[str, Any],
               table: dict[str, tuple[str, tuple[str, ...]]]) -> Any:
    """The nn module a function call equals (F.max_pool2d(x, 2) → nn.MaxPool2d(2))."""
    from torch import fx, nn

    cls, names = table[name]
    given = dict(zip(names, args[1:], strict=False)) | kwargs
    unknown = set(given) - set(names)
    if unknown or len(args) - 1 > len(names):
        raise _Unsupported(f"argument(s) {', '.join(sorted(unknown)) or '…'} that alexnetc's "
                           "op does not take")
    if any(isinstance(v, fx.Node) for v in given.values()):
        raise _Unsupported("an argument computed by the network")
    if given.get("dtype") is not None:
        raise _Unsupported(f"dtype={given['dtype']}: alexnetc computes in the network's own "
                           "precision")
    if given.get("training"):
        raise _Unsupported("training=True drops in eval mode too",
                           "pass training=self.training, or use nn.Dropout")
    return getattr(nn, cls)(**{k: v for k, v in given.items() if k not in _NOT_MODULE_ARGS})


# --- reading the graph -------------------------------------------------------------------------


@dataclass
class _Reader:
    """Turns the traced graph into a draft, node by node in the order they run."""

    gm: Any
    target: str
    options: Options
    where: _Where
    draft: Draft = field(init=False)
    vals: dict[Any, _Val] = field(default_factory=dict)
    tails: dict[str, Any] = field(default_factory=dict)  # stage name → node of its output
    sources: dict[str, dict[int, Any]] = field(default_factory=dict)  # stage → op → module
    warnings: list[Diagnostic] = field(default_factory=list)
    called: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.nodes = list(self.gm.graph.nodes)
        self.order = {n: i for i, n in enumerate(self.nodes)}
        self.output = next(n for n in self.nodes if n.op == "output")
        self.needed = self._ancestors(self.output)
        self.rules = _module_rules()
        h, w, c = self.options.input or (0, 0, 0)
        name = re.sub(r"\W", "_", self.target.split(":")[1].split(".")[-1])
        cls = type(self.where.root)
        self.draft = Draft(name, (h, w, c), notes=[
            f"Imported from the PyTorch module {self.target} ({_class_name(cls)}), traced with "
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
                    break
                self._node(node)
            except _Unsupported as e:
                self._unsupported(node, e)
                break
        return Imported(self.draft, self.warnings)

    def _unsupported(self, node: Any, e: _Unsupported) -> None:
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
        return _what(node, self.gm) + _within(node, self.where.name)

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
                raise _Unsupported(f"{self._name(node)} changes a tensor in place and its "
                                   "result is not used: the spec's dataflow cannot express it")
            return
        if node.op == "placeholder":
            if self.vals:
                raise _Unsupported(f"forward takes a second input, '{node.name}': a spec "
                                   "network takes one image batch")
            self.vals[node] = _Val(node, None, _spec_shape(node.meta["tensor_meta"].shape))
            return
        meta = node.meta.get("tensor_meta")
        if node.op == "get_attr" or meta is None:
            return  # a parameter read directly, or not a tensor (x.size(0)): used or refused
        if not isinstance(meta, TensorMetadata):
            raise _Unsupported(f"{self._name(node)} gives several tensors, which no "
                               "alexnetc op does")
        if self._reshape(node):
            return
        if len(meta.shape) not in (2, 4):
            raise _Unsupported(f"{self._name(node)} gives a {len(meta.shape)}-D tensor: "
                               "alexnetc's ops take N x C x H x W maps or N x F vectors")
        if self._merge(node):
            return
        mod = self._layer(node)
        arg, x = self._input(node)
        rule = self.rules.get(type(mod))
        if rule is None:
            raise _Unsupported(f"{self._name(node)} has no alexnetc op")
        try:
            op = rule(mod, x, tuple(meta.shape[1:]), len(arg.meta["tensor_meta"].shape))
        except _Unsupported as e:  # the rules say what; the node is who
            raise _Unsupported(f"{self._name(node)}: {e.message}", e.hint) from None
        self._clobbers(node, x)
        self._add(node, op, x)

    def _layer(self, node: Any) -> Any:
        """The nn module a node runs or equals."""
        if node.op == "call_module":
            mod = self.gm.get_submodule(node.target)
            if next(mod.parameters(), None) is not None or next(mod.buffers(), None) is not None:
                if node.target in self.called:
                    raise _Unsupported(f"'{node.target}' is called a second time: its weights "
                                       "are shared, which a spec cannot express",
                                       "give each use its own module")
                self.called.add(node.target)
            return mod
        name = _qualified(node.target) if node.op == "call_function" else None
        try:
            if name in _FUNCTIONS:
                return _as_module(name, node.args, dict(node.kwargs), _FUNCTIONS)
            if node.op == "call_method" and node.target in _METHODS:
                return _as_module(node.target, node.args, dict(node.kwargs), _METHODS)
        except _Unsupported as e:
            raise _Unsupported(f"{self._name(node)}: {e.message}", e.hint) from None
        raise _Unsupported(f"{self._name(node)} has no alexnetc op")

    def _input(self, node: Any) -> tuple[Any, _Val]:
        """The one network tensor an op reads (its first argument): its node and value."""
        from torch import fx

        first = node.args[0] if node.args else next(iter(node.kwargs.values()), None)
        others = [a for a in node.all_input_nodes if a is not first and a in self.vals]
        if not isinstance(first, fx.Node) or first not in self.vals or others:
            raise _Unsupported(f"{self._name(node)} reads a tensor that is not computed "
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
            raise _Unsupported(f"{self._name(node)} reshapes {_dims(before)} to "
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

        name = _qualified(node.target) if node.op == "call_function" else \
            str(node.target) if node.op == "call_method" else ""
        if name in _CATS:
            tensors = node.args[0] if node.args else node.kwargs.get("tensors", ())
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            dims = len(node.meta["tensor_meta"].shape)
            if not isinstance(dim, int) or dim % dims != 1:
                raise _Unsupported(f"torch.cat along dimension {dim}: alexnetc's Concat "
                                   "joins channels", "concatenate along dim=1")
            inputs = list(tensors)
            op = "Concat"
        elif name in _ADDS or (node.op == "call_method" and name in ("add", "add_")):
            inputs = list(node.args[:2]) + [node.kwargs[k] for k in ("other",)
                                            if k in node.kwargs]
            if node.kwargs.get("alpha", 1) != 1:
                raise _Unsupported(f"{name}(…, alpha={node.kwargs['alpha']}): alexnetc's Add "
                                   "adds its inputs unscaled")
            op = "Add"
        else:
            return False
        if not all(isinstance(a, fx.Node) and a in self.vals for a in inputs):
            raise _Unsupported(f"{self._name(node)} joins a constant or a parameter with "
                               "the network's tensors; alexnetc's merges join stages")
        vals = [self.vals[a] for a in inputs]
        shapes = {tuple(a.meta["tensor_meta"].shape) for a in [*inputs, node]}
        if op == "Add" and len(shapes) > 1:
            raise _Unsupported(f"{self._name(node)} adds tensors of different shapes "
                               f"(broadcasting): alexnetc's Add takes equal shapes")
        self._add(node, _Op(op, head=True), *vals,
                  out=tuple(node.meta["tensor_meta"].shape[1:]))
        return True

    # building stages

    def _add(self, node: Any, op: _Op, *inputs: _Val, out: tuple[int, ...] = ()) -> None:
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
        self.vals[node] = _Val(node, stage, shape, flattened)

    def _stage(self, node: Any, op: _Op, inputs: Sequence[_Val]) -> Stage:
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

    def _not_flattened(self, v: _Val, node: Any) -> None:
        at = v.flattened_at
        if at is not None:
            c, h, w = v.shape
            raise _Unsupported(f"{self._name(at)} flattens {h}x{w}x{c} maps that "
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

    def _clobbers(self, node: Any, x: _Val) -> None:
        """An op that overwrites its input which a later op still reads: the spec, where
        every stage keeps its output, would compute something else."""
        if not self._in_place(node):
            return
        later = [u for u in _readers_through(x.node, self.gm)
                 if u is not node and self.order[u] > self.order[node] and u in self.needed]
        if later:
            raise _Unsupported(f"{self._name(node)} overwrites its input in place, which "
                               f"{self._name(later[0])} reads afterwards: the spec keeps "
                               "every stage's output", "use inplace=False")

    def _finish(self, node: Any) -> None:
        from torch import fx

        out = node.args[0]
        if not isinstance(out, fx.Node):
            n = len(out) if isinstance(out, tuple | list | dict) else 0
            raise _Unsupported(f"forward returns {n or 'no'} tensor{'s' if n != 1 else ''}: "
                               "a spec network gives one")
        x = self.vals.get(out)
        if x is None or x.stage is None:
            raise _Unsupported("forward returns its input or a constant: the module computes "
                               "nothing from its input that a spec can express")
        self._not_flattened(x, node)
        if x.stage is not self.draft.stages[-1]:  # the spec's output is its last stage
            raise _Unsupported(f"forward returns the output of '{x.stage.name}', computed "
                               "before other stages that nothing reads")


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
        return node.target in _RESHAPE_METHODS
    if node.op == "call_function":
        name = _qualified(node.target)
        tensors = node.args[0] if node.args else ()
        single_cat = name in _CATS and isinstance(tensors, list | tuple) and len(tensors) == 1
        return name in _RESHAPES or single_cat
    return False


def _readers_through(node: Any, gm: Any) -> Iterator[Any]:
    for user in node.users:
        yield user
        if _passes_through(user, gm):
            yield from _readers_through(user, gm)


# --- weights ------------------------------------------------------------------------------------


def _write_weights(draft: Draft, sources: dict[str, dict[int, Any]], path: Path,
                   target: str) -> Path | None:
    """The module's weights as an `alexnetc train` checkpoint of the imported spec, which
    `eval`, `predict`, `compile --weights` and `train --resume` read. None when the spec does
    not check (the command reports why)."""
    import torch

    from alexnetc.backends.lowering import (
        build_module,
        canonical_state_dict,
        load_canonical_state_dict,
    )
    from alexnetc.cli.common import run_errors
    from alexnetc.compiler.pipeline import check

    text = draft.text()
    result = check(text, str(path))
    if result.network is None or result.recipe is None:
        return None
    net = result.network
    model = build_module(net, result.recipe, devices=["cpu"], seed=result.recipe.train.seed,
                         fused=False)
    state = canonical_state_dict(model)
    with torch.no_grad():
        for name, layers in net.stages():
            stage = model.get_submodule(name)
            steps = {s.layer: s.name for s in stage.steps}
            for index, mod in sources.get(name, {}).items():
                prefix = f"{name}.{steps[layers[index].id]}."
                own = mod.state_dict()
                for key in [k for k in state if k.startswith(prefix)]:
                    state[key] = _fitted(own[key[len(prefix):]], state[key])
    load_canonical_state_dict(model, state)
    with run_errors():
        from alexnetc.backends.train import checkpoint

        checkpoint.save(path, _checkpoint(text, net, result.recipe, model, target, path))
    return path


def _fitted(source: Any, like: Any) -> Any:
    """A source tensor in the shape of the lowered layer's (a PReLU's one shared slope
    repeated per channel)."""
    t = source.detach().to(like.dtype)
    return t.expand_as(like).clone() if t.numel() == 1 and like.numel() > 1 else t.clone()


def _checkpoint(text: str, net: Any, recipe: Any, model: Any, target: str,
                path: Path) -> dict[str, Any]:
    """A checkpoint at epoch 0, as `alexnetc train` writes one: the weights, the recipe as
    its config, classes named 0…N−1 (the embedded digits' names), and pixel statistics that
    leave the images as they are (mean 0: the module's own input normalisation is unknown)."""
    from dataclasses import asdict

    import torch

    from alexnetc.backends.train import checkpoint
    from alexnetc.backends.train.augment import PixelStats
    from alexnetc.backends.train.config import TrainConfig
    from alexnetc.backends.train.optim import PaperSGD, PlateauSchedule
    from alexnetc.backends.train.run import Totals

    cfg = TrainConfig.from_recipe(recipe, target, out=str(path.parent))
    optimiser = PaperSGD(model.parameters(), cfg.lr, cfg.momentum, cfg.weight_decay)
    schedule = PlateauSchedule(optimiser, cfg.lr, cfg.lr_drop, cfg.patience, cfg.min_lr)
    c = net.input.c
    stats = PixelStats(torch.zeros(c), torch.zeros(c), torch.eye(c))
    return {
        "spec_text": text,
        "spec_sha256": checkpoint.spec_hash(text),
        "config": cfg.as_dict(),
        "classes": [str(i) for i in range(net.output.c)],
        "stats": stats.as_dict(),
        "model": model.state_dict(),
        "optimiser": optimiser.state_dict(),
        "schedule": schedule.state_dict(),
        "epoch": 0,
        "step": 0,
        "batch_in_epoch": 0,
        "totals": asdict(Totals()),
        "aug_rng": torch.Generator().manual_seed(cfg.seed).get_state(),
        "rng": checkpoint.rng_state(),
    }
