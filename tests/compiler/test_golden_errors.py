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
    monkeypatch.chdir(ROOT)
    code = main(["check", str(spec.relative_to(ROOT))])
    out = capsys.readouterr()
    assert code == 1
    golden = spec.with_suffix(".err")
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(out.err, encoding="utf-8")
    assert out.err == golden.read_text(encoding="utf-8")
    assert "Traceback" not in out.err
    first = out.err.splitlines()[0]
    assert first.startswith(f"specs/invalid/{spec.name}:")
    assert ": error: " in first


def test_every_error_kind_has_a_golden_spec() -> None:
    kinds_seen = set()
    from alexnetc.compiler.pipeline import check_file

    for spec in INVALID:
        kinds_seen |= {d.kind for d in check_file(spec).diagnostics}
    from alexnetc.compiler import errors

    every = {v for k, v in vars(errors).items() if k.isupper() and isinstance(v, str)}
    assert every <= kinds_seen, every - kinds_seen
