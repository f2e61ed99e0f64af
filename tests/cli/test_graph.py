"""`alexnetc graph SPEC -o FILE`: what it writes, and its exit codes (0 ok, 1 spec, 2 usage)."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from alexnetc.cli.main import main
from alexnetc.compiler import draw

from helpers import SPECS, fill

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


def _fake_dot(tmp_path: Path, script: str, mode: int = 0o755) -> Path:
    exe = tmp_path / "bin" / "dot"
    exe.parent.mkdir()
    exe.write_text(script)
    exe.chmod(mode)
    return exe


FAILING_DOT = """#!/bin/sh
echo "Warning: something dot warns about first" >&2
echo "Error: <stdin>: syntax error in line 6 near 'x'" >&2
echo "String starting: <<TABLE" >&2
exit 1
"""


@pytest.mark.parametrize("script, mode, said", [
    (FAILING_DOT, 0o755, "Graphviz's `dot -Tsvg` failed: Error: <stdin>: syntax error in "
                         "line 6 near 'x'\n"),
    ("#!/bin/sh\nexit 3\n", 0o755, "Graphviz's `dot -Tsvg` failed: exit status 3\n"),
    ("", 0o644, "could not run Graphviz's `dot` ("),
], ids=["error-line", "silent", "not-executable"])
def test_dot_that_fails_is_quoted_not_taken_for_missing(
        script: str, mode: int, said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    exe = _fake_dot(tmp_path, script, mode)
    monkeypatch.setattr(draw, "dot_program", lambda: str(exe))
    out = tmp_path / "alexnet.svg"
    assert main(["graph", ALEXNET, "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("alexnetc: error: " + said)
    assert f"nothing was written to {out}; `-o {tmp_path / 'alexnet.dot'}` writes" in err
    assert "install" not in err and "Warning" not in err and "String starting" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]  # no picture, no fallback


@pytest.mark.skipif(not HAS_DOT, reason="Graphviz's dot is not installed")
def test_a_huge_stage_is_drawn_or_dot_says_why(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Graphviz 2.43 refuses a label over 16,384 characters: 3,000 ops in one stage."""
    spec = tmp_path / "huge.net"
    spec.write_text("input 8x8x1\ns: " + "; ".join(["ReLU"] * 3000) + "\n")
    out = tmp_path / "huge.svg"
    code = main(["graph", str(spec), "-o", str(out)])
    err = capsys.readouterr().err
    assert "install" not in err and "Traceback" not in err
    if code != 0:
        assert code == 1 and err.startswith("alexnetc: error: Graphviz's `dot -Tsvg` failed: ")
        assert "`-o " in err and not out.exists()


@pytest.mark.parametrize("name", ["alexnet.dot", "alexnet.svg"])
def test_a_full_disk_keeps_the_previous_picture(name: str, small_disk: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    if name.endswith(".svg") and not HAS_DOT:
        pytest.skip("Graphviz's dot is not installed")
    out = small_disk / name
    out.write_text("the previous picture")
    fill(small_disk)
    assert main(["graph", ALEXNET, "-o", str(out)]) == 1
    assert capsys.readouterr().err == f"alexnetc: error: cannot write {out}: the disk is full\n"
    assert out.read_text() == "the previous picture"
    assert sorted(p.name for p in small_disk.iterdir()) == [".filler", ".filler-bytes", name]


def test_the_picture_never_replaces_the_spec(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "net.gv"
    spec.write_text((SPECS / "lenet5.net").read_text())
    assert main(["graph", str(spec), "-o", str(spec)]) == 2
    assert "which this command reads" in capsys.readouterr().err
    assert spec.read_text() == (SPECS / "lenet5.net").read_text()


@pytest.mark.parametrize("ext", ["dot", "svg"])
def test_a_branching_spec_is_drawn_with_its_branches_and_blocks(
        ext: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if ext == "svg" and not HAS_DOT:
        pytest.skip("Graphviz's dot is not installed")
    spec = tmp_path / "small.net"
    spec.write_text("input 8x8x4\nblock two(c) {\n  a: Conv(1,1) xc\n  b(in): Conv(3,1, pad=1) xc\n"
                    "  cat(a, b): Concat\n}\nstem: Conv(1,1) x8\nm: two(4)\n"
                    "sum(m, stem): Add + ReLU\n")
    out = tmp_path / f"small.{ext}"
    assert main(["graph", str(spec), "-o", str(out)]) == 0
    if ext == "svg":
        words = "".join(ET.parse(out).getroot().itertext())
        assert all(w in words for w in ("m.a", "m.b", "m.cat", "two(4)", "Add + ReLU"))
        return
    text = out.read_text()
    assert 'subgraph "cluster_1" {' in text and "<B>m</B>  two(4)" in text
    assert '"stage:stem:7" -> "stage:m.a:3";' in text  # the two branches read the stem
    assert '"stage:stem:7" -> "stage:m.b:4";' in text
    assert '"stage:stem:7" -> "stage:sum:9" [headlabel=" 2 "' in text  # the shortcut
