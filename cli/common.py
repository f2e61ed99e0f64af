"""Helpers the subcommands share: reading a spec, turning spec errors into exit codes."""

from __future__ import annotations

import sys
from pathlib import Path

from alexnetc.cli.main import UsageError
from alexnetc.compiler.errors import SpecError
from alexnetc.compiler.graph import CheckedNetwork
from alexnetc.compiler.pipeline import check_bytes
from alexnetc.compiler.recipe import Recipe


def read_spec(path: str) -> tuple[str, bytes]:
    """(display name, bytes) of a spec file or stdin; an unreadable file is a usage error."""
    if path == "-":
        return "<stdin>", sys.stdin.buffer.read()
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{path} is a folder, not a spec file")
    try:
        return path, p.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"no such spec file: {path}") from None
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None


def run_folder(path: str) -> Path:
    """The RUN_DIR argument of eval/predict/plot; a missing folder is a usage error (exit 2),
    like a missing spec file."""
    p = Path(path)
    if not p.is_dir():
        raise UsageError(f"no such run folder: {path}")
    return p


def load_checked(path: str) -> tuple[CheckedNetwork, Recipe, str]:
    """Check a spec for a backend command: print its errors and exit 1 if it has any."""
    name, data = read_spec(path)
    result = check_bytes(data, name)
    if result.network is None or result.recipe is None:
        raise SpecError(result.diagnostics, result.source)
    return result.network, result.recipe, result.source
