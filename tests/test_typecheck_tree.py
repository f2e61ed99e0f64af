"""The tree mypy reads the package through, `.typecheck/alexnetc/`, stays complete.

The subpackages live in top-level folders (pyproject's [tool.setuptools.package-dir]) that
the editable install maps with an import hook mypy does not follow; the tree of relative
symlinks lays the package out as it is installed. A subpackage or module missing from it
would not be type-checked at all, and every import of it would be silently `Any`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGES: list[str] = SETUPTOOLS["packages"]
PACKAGE_DIR: dict[str, str] = SETUPTOOLS["package-dir"]
MYPY = PYPROJECT["tool"]["mypy"]
TREE_ROOT = ROOT / MYPY["mypy_path"]
TREE = TREE_ROOT / "alexnetc"


def source_dir(package: str) -> Path:
    """Where a package's files are, by the longest package-dir entry that holds it."""
    owner = max((p for p in PACKAGE_DIR if package == p or package.startswith(p + ".")),
                key=len)
    rest = package[len(owner):].lstrip(".")
    return ROOT / PACKAGE_DIR[owner] / rest.replace(".", "/")


def tree_dir(package: str) -> Path:
    return TREE_ROOT / package.replace(".", "/")


def test_mypy_reads_the_package_through_the_tree() -> None:
    assert MYPY["mypy_path"] == ".typecheck"
    assert ".typecheck/alexnetc" in MYPY["files"]
    assert ".typecheck" in PYPROJECT["tool"]["ruff"]["extend-exclude"]


@pytest.mark.parametrize("package", PACKAGES)
def test_every_listed_package_is_in_the_tree(package: str) -> None:
    init = tree_dir(package) / "__init__.py"
    assert init.is_file(), f"{package} is missing from {TREE.relative_to(ROOT)}: add a " \
        f"relative symlink to {source_dir(package).relative_to(ROOT)}"
    assert init.resolve() == (source_dir(package) / "__init__.py").resolve(), package


def test_every_module_of_alexnetc_folder_is_linked() -> None:
    for module in sorted((ROOT / "alexnetc").glob("*.py")):
        linked = TREE / module.name
        assert linked.is_symlink(), f"alexnetc/{module.name} is missing from the tree: " \
            f"ln -s ../../alexnetc/{module.name} {linked.relative_to(ROOT)}"
        assert linked.resolve() == module.resolve(), module.name


def test_the_tree_holds_only_relative_links_that_resolve() -> None:
    """Relative, so any checkout's tree points into itself; none dangling (a module removed
    from alexnetc/ takes its link with it)."""
    top = {p.split(".")[1] for p in PACKAGE_DIR if p.count(".") == 1}
    for entry in sorted(TREE.iterdir()):
        assert entry.is_symlink(), f"{entry.relative_to(ROOT)} is a copy, not a link"
        assert not os.path.isabs(os.readlink(entry)), entry.name
        assert entry.exists(), f"{entry.relative_to(ROOT)} points at nothing"
        if entry.is_dir():
            assert entry.name in top, f"{entry.name}: not a subpackage of package-dir"
            assert entry.resolve() == source_dir(f"alexnetc.{entry.name}").resolve()


def test_every_package_folder_is_listed() -> None:
    """A folder with an __init__.py inside the package's folders is in pyproject's package
    list (setuptools installs only those; the tree links the folders whole)."""
    listed = {source_dir(p).resolve() for p in PACKAGES}
    for package in PACKAGE_DIR:
        for init in sorted(source_dir(package).rglob("__init__.py")):
            assert init.parent.resolve() in listed, \
                f"{init.parent.relative_to(ROOT)} is not in [tool.setuptools] packages"
