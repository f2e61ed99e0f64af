"""Golden error messages: one spec per error kind in specs/invalid/, its message pinned.

Regenerate after an intended wording change with `UPDATE_GOLDEN=1 pytest tests/compiler`,
then read the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from alexnetc.cli.main import main

from helpers import ROOT, SPECS

INVALID = sorted((SPECS / "invalid").glob("*.net"))


@pytest.mark.parametrize("spec", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_spec_message(spec: Path, capsys: pytest.CaptureFixture[str],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A spec with errors exits 1 and the golden pins its standard error; one with only
    warnings (a warning kind's golden) checks, exits 0, and the golden pins the warnings
    `check -q` prints."""
    monkeypatch.chdir(ROOT)
    code = main(["check", "-q", str(spec.relative_to(ROOT))])
    out = capsys.readouterr()
    assert code in (0, 1)
    shown = out.err if code == 1 else out.out
    golden = spec.with_suffix(".err")
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(shown, encoding="utf-8")
    assert shown == golden.read_text(encoding="utf-8")
    assert "Traceback" not in out.err + out.out
    first = shown.splitlines()[0]
    assert first.startswith(f"specs/invalid/{spec.name}:")
    assert (": error: " if code == 1 else ": warning: ") in first
    if code == 0:
        assert out.err == ""


def test_every_error_kind_has_a_golden_spec() -> None:
    kinds_seen = set()
    from alexnetc.compiler.pipeline import check_file

    for spec in INVALID:
        kinds_seen |= {d.kind for d in check_file(spec).diagnostics}
    from alexnetc.compiler import errors

    every = {v for k, v in vars(errors).items() if k.isupper() and isinstance(v, str)}
    assert every <= kinds_seen, every - kinds_seen


@pytest.mark.parametrize("spec", [SPECS / "alexnet.net", SPECS / "alexnet-slides.net",
                                  SPECS / "invalid" / "syntax-unicode-arrow.net"],
                         ids=lambda p: p.stem)
def test_a_byte_order_mark_changes_nothing(spec: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Windows editors may start a file with a UTF-8 BOM: the spec checks as without it."""
    data = spec.read_bytes()
    results = []
    for name, raw in (("plain.net", data), ("marked.net", b"\xef\xbb\xbf" + data)):
        path = tmp_path / name
        path.write_bytes(raw)
        code = main(["check", str(path)])
        out = capsys.readouterr()
        results.append((code, out.out.replace(name, "X"), out.err.replace(name, "X")))
    assert results[0] == results[1]
    assert "Traceback" not in results[1][2]
