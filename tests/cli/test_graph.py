"""`alexnetc graph SPEC -o FILE`: what it writes, and its exit codes (0 ok, 1 spec, 2 usage)."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from alexnetc.cli.main import main
from alexnetc.compiler import draw

from helpers import SPECS

ALEXNET = str(SPECS / "alexnet.net")
HAS_DOT = shutil.which("dot") is not None


@pytest.fixture
def bad_spec(tmp_path: Path) -> Path:
    """AlexNet with the lecture slides' wrong conv3 size."""
    p = tmp_path / "bad.net"
    p.write_text((SPECS / "alexnet.net").read_text().replace("-> 13x13x384\nconv4",
                                                             "-> 14x14x384\nconv4"))
    return p


def test_dot_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a.dot"
    assert main(["graph", ALEXNET, "-o", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    text = out.read_text()
    assert text.startswith("digraph AlexNet {") and "86,528 B" in text


def test_dash_writes_dot_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["graph", ALEXNET, "-o", "-", "--rankdir", "LR"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("digraph AlexNet {") and 'rankdir="LR"' in out


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("ext", ["svg", "png"])
def test_picture(tmp_path: Path, ext: str) -> None:
    out = tmp_path / f"alexnet.{ext}"
    assert main(["graph", ALEXNET, "-o", str(out)]) == 0
    data = out.read_bytes()
    if ext == "png":
        assert data.startswith(b"\x89PNG")
    else:
        assert "conv1" in "".join(ET.fromstring(data).itertext())


def test_failing_spec_is_drawn_and_exits_1(bad_spec: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bad.dot"
    assert main(["graph", str(bad_spec), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "conv3 produces 13x13x384, not 14x14x384" in err
    assert "drawing what checked" in err
    assert f'color="{draw.ERROR_INK}"' in out.read_text()


def test_syntax_error_draws_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "syntax.net"
    spec.write_text("input 227x227x3\nconv1: Conv(11 x96\n")
    out = tmp_path / "syntax.dot"
    assert main(["graph", str(spec), "-o", str(out)]) == 1
    assert "nothing to draw" in capsys.readouterr().err
    assert not out.exists()


def test_without_graphviz_writes_dot_and_says_how_to_render(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(draw, "dot_program", lambda: None)
    out = tmp_path / "alexnet.svg"
    assert main(["graph", ALEXNET, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert not out.exists()
    fallback = tmp_path / "alexnet.dot"
    assert fallback.read_text().startswith("digraph")
    assert f"dot -Tsvg {fallback} -o {out}" in err


@pytest.mark.parametrize("argv, message", [
    (["graph", ALEXNET, "-o", "alexnet.jpg"], "cannot tell the picture format"),
    (["graph", ALEXNET, "-o", "no/such/folder/a.svg"], "no such folder"),
    (["graph", "no-such.net", "-o", "a.dot"], "no such spec file"),
])
def test_usage_errors_exit_2(argv: list[str], message: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_output_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["graph", ALEXNET])
    assert e.value.code == 2
    assert "-o/--output" in capsys.readouterr().err
