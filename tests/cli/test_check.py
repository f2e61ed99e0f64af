"""`alexnetc SPEC --check-shapes`: the table, JSON, exit codes, and a check path that never
imports torch (its speed is measured in benchmarks/bench_check.py, not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from alexnetc.cli.main import main

from helpers import BRANCHING, ROOT, SPECS

ALEXNET = str(SPECS / "alexnet.net")


def test_table_shows_the_papers_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([ALEXNET, "--check-shapes"]) == 0
    out = capsys.readouterr().out
    for fact in ("60,965,224", "659,272", "724,406,816", "55x55x96", "27x27x96", "13x13x256",
                 "6x6x256", "relu_lrn_pool", "relu_pool", "2×48", "both", "own", "gather"):
        assert fact in out, fact


def test_json_has_the_same_numbers(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", ALEXNET, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    assert data["total"]["params"] == 60_965_224
    assert data["total"]["neurons"] == 659_272
    assert data["total"]["macs"] == 724_406_816
    fc6 = next(layer for layer in data["layers"] if layer["id"] == "fc6.0")
    assert fc6["weights"] == 9216 * 4096
    assert data["recipe"]["train"]["batch"] == 128


def test_json_reports_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(SPECS / "alexnet-224.net"), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False
    (d,) = data["diagnostics"]
    assert (d["kind"], d["line"], d["col"]) == ("shape-error", 7, 8)


def test_slides_spec_fails_at_each_wrong_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(SPECS / "alexnet-slides.net"), "--check-shapes"]) == 1
    err = capsys.readouterr().err
    for wrong, right in (("56x56x96", "27x27x96"), ("28x28x256", "13x13x256"),
                         ("14x14x384", "13x13x384"), ("7x7x256", "6x6x256")):
        assert f"not {wrong}" in err and f"produces {right}" in err
    assert "5 errors" in err


def test_a_failing_spec_still_gets_its_table(capsys: pytest.CaptureFixture[str]) -> None:
    """The shapes the checker computed, whatever the spec claims, with each failing stage
    marked: the slides' spec shows 55 → 27 → 13 → 6 beside the errors about 56/28/14/7."""
    assert main([str(SPECS / "alexnet-slides.net"), "--check-shapes"]) == 1
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    failing = [cells[-3] for cells in lines if cells[-2:] == ["error", "(below)"]]
    assert failing == ["27x27x96", "13x13x256", "13x13x384", "13x13x384", "6x6x256"]
    assert ["conv1", "Conv(11,4)", "x96", "55x55x96"] in lines
    assert main([str(SPECS / "alexnet-224.net"), "--check-shapes"]) == 1
    out = capsys.readouterr().out
    assert "error (below)" in out and "not reached" in out  # conv1 fails: nothing after it
    assert out.count("error (below)") == 1


def test_a_spec_that_does_not_parse_prints_no_table(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.net"
    bad.write_text("input 8x8x3\nc: Conv(3,1 x4\n")
    assert main(["check", str(bad)]) == 1
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("argv, code, part", [
    (["nope.net", "--check-shapes"], 2, "no such spec file"),
    (["check", str(SPECS)], 2, "is a folder"),
    (["check", ""], 2, "the spec path is empty"),
    (["", "--check-shapes"], 2, "the spec path is empty"),
    (["check", "/dev/null"], 2, "/dev/null is a device, not a spec file"),
    (["check"], 2, "required"),
    (["check", ALEXNET, "--frobnicate"], 2, "unrecognized arguments"),
    ([], 2, "usage"),
])
def test_usage_errors_exit_2(argv: list[str], code: int, part: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    try:
        got = main(argv)
    except SystemExit as e:  # argparse's own usage errors
        got = int(e.code or 0)
    assert got == code
    assert part in capsys.readouterr().err


@pytest.mark.parametrize("command", [["check"], ["graph", "-o", "g.dot"],
                                     ["compile", "-o", "m.pt2"], ["train", "--max-steps", "1"]])
def test_a_named_pipe_as_spec_is_refused_without_waiting_for_a_writer(
        command: list[str], tmp_path) -> None:
    """Opening a FIFO blocks until something writes to it: the spec is never opened."""
    fifo = tmp_path / "spec.net"
    os.mkfifo(fifo)
    name, *flags = command
    r = subprocess.run([sys.executable, "-m", "alexnetc", name, str(fifo), *flags],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr == (f"alexnetc: error: {fifo} is a named pipe, not a spec file: name a "
                        "regular file, or `-` to read standard input\n")


def test_warnings_do_not_fail(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "w.net"
    spec.write_text("input 8x8x3\ntowers 2\nc: Conv(3,1) x4 + ReLU; ResNorm(5)\n")
    assert main([str(spec), "--check-shapes"]) == 0
    assert "warning:" in capsys.readouterr().out


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    fake = io.TextIOWrapper(io.BytesIO(b"input 8x8x1\nc: Conv(3,1) x2 -> 5x5x2\n"))
    monkeypatch.setattr(sys, "stdin", fake)
    assert main(["check", "-"]) == 1
    assert "<stdin>:2:" in capsys.readouterr().err


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, check=False)


def test_check_path_never_imports_torch() -> None:
    code = ("import sys; from alexnetc.cli.main import main; rc = main(['specs/alexnet.net', "
            "'--check-shapes']); bad = [m for m in ('torch', 'triton', 'numpy') "
            "if m in sys.modules]; print('IMPORTED', bad); sys.exit(rc)")
    r = _run("-c", code)
    assert r.returncode == 0, r.stderr
    assert "IMPORTED []" in r.stdout


def test_binary_and_huge_inputs_exit_1_without_traceback(tmp_path) -> None:
    blob = tmp_path / "blob.net"
    blob.write_bytes(bytes(range(256)) * 64)
    huge = tmp_path / "huge.net"
    huge.write_text("input 8x8x1\n" + "c: ReLU\n" * 300_000)
    for path in (blob, huge):
        r = _run("-m", "alexnetc", str(path), "--check-shapes")
        assert r.returncode == 1, r.stderr
        assert "Traceback" not in r.stderr and "error:" in r.stderr


def test_saved_table_keeps_every_cell_whole(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a terminal (a file, a pipe): nothing cut or wrapped, no trailing spaces."""
    assert main(["check", ALEXNET]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "…" not in out
    assert not [line for line in lines if line != line.rstrip()]
    conv2 = next(line for line in lines if line.lstrip().startswith("conv2"))
    assert "Conv(5,1,pad=2,groups=2,bias=1) x256" in conv2 and "223,948,800" in conv2
    assert "2×128 own" in conv2
    fc8 = next(line for line in lines if line.lstrip().startswith("fc8"))
    assert "2×500 both (16,384 B)" in fc8
    towers = next(line for line in lines if line.startswith("each of 2 towers"))
    assert towers.endswith("at conv3, fc6, fc7, fc8")  # one line, not wrapped


def test_saved_table_from_the_shell() -> None:
    r = _run("-m", "alexnetc", "check", "specs/alexnet.net")  # stdout is a pipe
    assert r.returncode == 0
    assert "Conv(5,1,pad=2,groups=2,bias=1) x256" in r.stdout and "…" not in r.stdout
    assert all(line == line.rstrip() for line in r.stdout.splitlines())


@pytest.mark.parametrize("width", [100, 132])
def test_terminal_table_never_cuts_a_number(width: int) -> None:
    """In a terminal (never narrower than 132 columns) the text wraps to fit, but no number
    is ever ellipsised, even at 100 columns."""
    import io

    from rich.console import Console

    from alexnetc.compiler.pipeline import load
    from alexnetc.compiler.report import print_report

    net, _ = load(SPECS / "alexnet.net")
    buf = io.StringIO()
    print_report(net, Console(file=buf, width=width, highlight=False))
    out = buf.getvalue()
    assert max(len(line) for line in out.splitlines()) <= width
    for number in ("60,965,224", "659,272", "724,406,816", "37,752,832", "105,415,200",
                   "27x27x256", "6x6x256", "4096"):
        assert number in out, (width, number)
    numbers = [cell for line in out.splitlines() for cell in line.split()
               if cell[:1].isdigit()]
    assert not [cell for cell in numbers if cell.endswith("…")], width




def test_json_gives_each_layers_inputs_and_the_graph_of_stages(
        tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "small.net"
    spec.write_text(BRANCHING)
    assert main(["check", str(spec), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    inputs = {layer["id"]: layer["inputs"] for layer in data["layers"]}
    assert inputs == {"stem.0": ["input"], "stem.1": ["stem.0"], "m.a.0": ["stem.1"],
                      "m.a.1": ["m.a.0"], "m.b.0": ["stem.1"], "m.b.1": ["m.b.0"],
                      "m.cat.0": ["m.a.1", "m.b.1"], "sum.0": ["m.cat.0", "stem.1"],
                      "sum.1": ["sum.0"], "fc.0": ["sum.1"], "fc.1": ["fc.0"]}
    assert data["stages"] == [
        {"name": "stem", "reads": ["input"], "output": [8, 8, 8], "params": 296,
         "block": None, "instance": None},
        {"name": "m.a", "reads": ["stem"], "output": [8, 8, 4], "params": 36,
         "block": "two", "instance": "m"},
        {"name": "m.b", "reads": ["stem"], "output": [8, 8, 4], "params": 292,
         "block": "two", "instance": "m"},
        {"name": "m.cat", "reads": ["m.a", "m.b"], "output": [8, 8, 8], "params": 0,
         "block": "two", "instance": "m"},
        {"name": "sum", "reads": ["m.cat", "stem"], "output": [8, 8, 8], "params": 0,
         "block": None, "instance": None},
        {"name": "fc", "reads": ["sum"], "output": [10], "params": 5130, "block": None,
         "instance": None},
    ]
    assert sum(s["params"] for s in data["stages"]) == data["total"]["params"]
    assert all(layer["stage"] in {s["name"] for s in data["stages"]} for layer in data["layers"])


def test_json_of_a_chain_reads_the_stage_above(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", ALEXNET, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    names = [s["name"] for s in data["stages"]]
    assert names == ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    assert [s["reads"] for s in data["stages"]] == [["input"]] + [[n] for n in names[:-1]]
    assert data["stages"][5]["params"] == 9216 * 4096 + 4096
    assert data["layers"][1]["inputs"] == [data["layers"][0]["id"]]


def test_the_table_of_a_branching_spec_says_what_each_stage_reads(
        tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "small.net"
    spec.write_text(BRANCHING)
    assert main([str(spec), "--check-shapes"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert lines[2][:3] == ["stage", "reads", "op"]
    assert ["m", "stem", "block", "two(4)", "8x8x8", "328", "512", "20,480"] in lines
    assert ["m.cat", "a,", "b", "Concat", "8x8x8"] in lines
    assert ["sum", "m.cat,", "stem", "Add", "8x8x8"] in lines


def test_the_table_of_a_failing_branching_spec_says_what_each_stage_reads(
        tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "bad.net"
    spec.write_text(BRANCHING.replace("b(in): Conv(3,1, pad=1)", "b(in): Conv(3,1)"))
    assert main([str(spec), "--check-shapes"]) == 1
    captured = capsys.readouterr()
    lines = [line.split() for line in captured.out.splitlines()]
    assert lines[2] == ["stage", "reads", "op", "output", "status"]
    assert ["m", "stem", "block", "two(4)", "?"] in lines  # its output was never computed
    assert ["m.b", "stem", "Conv(3,1)", "x4", "6x6x4"] in lines
    assert ["m.cat", "a,", "b", "Concat", "?", "error", "(below)"] in lines
    assert ["sum", "m.cat,", "stem", "Add", "?"] in lines
    assert "note: in `m`, an instance of block 'two' (c=4)" in captured.err


def test_terminal_table_of_a_branching_spec_cuts_nothing() -> None:
    """GoogLeNet's table is wider than 132 columns: its text wraps and folds, never ends
    in an ellipsis."""
    import io

    from rich.console import Console

    from alexnetc.compiler.pipeline import load
    from alexnetc.compiler.report import print_report

    net, _ = load(SPECS / "googlenet.net")
    buf = io.StringIO()
    print_report(net, Console(file=buf, width=132, highlight=False))
    out = buf.getvalue()
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 132
    assert "6,624,904" in out and "inception3a.out" in out


def test_json_has_fields_and_training_macs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", ALEXNET, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    pool5 = next(layer for layer in data["layers"] if layer["id"] == "conv5.2")
    assert pool5["receptive_field"] == [195, 195] and pool5["effective_stride"] == [32, 32]
    assert pool5["center_offset"] == [33, 33]
    assert data["total"]["train_macs"] == 3 * 724_406_816 - 105_415_200


def test_csv_to_stdout_and_to_a_file(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    import csv

    assert main(["check", ALEXNET, "--csv"]) == 0
    rows = list(csv.reader(capsys.readouterr().out.splitlines()))
    assert rows[0][:4] == ["stage", "reads", "op", "output"] and len(rows) == 24
    conv1 = dict(zip(rows[0], rows[1], strict=True))
    assert (conv1["receptive_field"], conv1["macs"], conv1["train_macs"]) == \
        ("11x11", "105415200", "210830400")
    out = tmp_path / "alexnet.csv"
    assert main(["check", ALEXNET, "--csv", str(out)]) == 0
    assert list(csv.reader(out.read_text().splitlines())) == rows
    assert main(["check", ALEXNET, "--csv", str(tmp_path / "no" / "x.csv")]) == 2


def test_csv_never_replaces_a_pipe_or_a_symlink(tmp_path, capsys: pytest.CaptureFixture[str]
                                               ) -> None:
    """The file is written whole and renamed into place: a named pipe is refused (it would
    be replaced by a file), a symlink is followed (its target gets the CSV, the link stays)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert main(["check", ALEXNET, "--csv", str(fifo)]) == 2
    assert "is a named pipe" in capsys.readouterr().err
    assert fifo.is_fifo()
    target, link = tmp_path / "real.csv", tmp_path / "link.csv"
    target.write_text("old\n")
    link.symlink_to(target)
    assert main(["check", ALEXNET, "--csv", str(link)]) == 0
    assert link.is_symlink() and target.read_text().startswith("stage,")


def test_csv_names_what_each_stage_reads_in_full(capsys: pytest.CaptureFixture[str]) -> None:
    """A spreadsheet has no block-instance rows to read `b` against: `layer1.0.b` it is."""
    import csv

    assert main(["check", str(SPECS / "resnet18.net"), "--csv"]) == 0
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    reads = {r["stage"]: r["reads"] for r in rows}
    assert reads["layer1.0.out"] == "layer1.0.b, conv1"
    assert reads["layer1.0.b"] == "layer1.0.a"
