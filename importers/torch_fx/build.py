"""Finding the module a target names and building it, as `python -m` would see it; what
goes wrong in the user's code is a located error at its line, not a traceback."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alexnetc.compiler.errors import SpecError
from alexnetc.importers.source import UNSUPPORTED, closest
from alexnetc.importers.torch_fx.where import (
    defined_at,
    exception_error,
    located,
    nowhere,
    raised,
    syntax_error,
)


@contextmanager
def cwd_on_path() -> Iterator[None]:
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


def build(target: str) -> Any:
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
        raise exception_error(e, f"importing {module_name} raised {raised(e)}") from None
    except SyntaxError as e:
        raise syntax_error(e) from None
    except Exception as e:
        raise exception_error(e, f"importing {module_name} raised {raised(e)}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            names = [n for n in dir(obj) if not n.startswith("_")]
            close = closest(part, names)
            raise UsageError(f"{target}: {module_name} has no '{attr}'"
                             + (f" (did you mean '{close}'?)" if close else ""))
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
        raise exception_error(e, f"{target}() raised {raised(e)}") from None
    if not isinstance(obj, nn.Module):
        raise _definition_error(factory, target, f"{target}() gives a {type(obj).__name__}, "
                                "not a torch.nn.Module")
    return obj


def _definition_error(obj: Any, target: str, message: str, hint: str = "") -> SpecError:
    """An error at the line that defines `obj` (the class or function named)."""
    found = defined_at(obj)
    source, loc = located(found) if found else nowhere(target)
    return source.fail(UNSUPPORTED, loc, message, hint)
