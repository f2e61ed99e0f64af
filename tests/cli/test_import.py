"""`alexnetc import` refuses paths that are no network file, a spec it cannot write, and
--weights where it has nothing to write or -o would write over it, in one line each, never a
traceback."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from alexnetc.cli.main import main

from helpers import ROOT

ALEXNET_CFG = ROOT / "tests" / "importers" / "fixtures" / "darknet" / "alexnet.cfg"
CONVNET2 = ROOT / "tests" / "importers" / "fixtures" / "convnet2"


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["import", *argv])
    return code, capsys.readouterr().err


def test_a_folder_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run([str(tmp_path), "--format", "caffe"], capsys)
    assert (code, err) == (2, f"alexnetc: error: {tmp_path} is a folder, not a network file\n")


def test_a_named_pipe_is_refused_without_being_opened(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "net.cfg"
    os.mkfifo(fifo)
    code, err = _run([str(fifo)], capsys)
    assert (code, err) == (2, f"alexnetc: error: {fifo} is a named pipe, not a network file\n")


def test_a_binary_file_is_a_located_error(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    weights = tmp_path / "net.prototxt"
    weights.write_bytes(b"\n\x08caffe\x00\x01\x02")
    code, err = _run([str(weights)], capsys)
    assert code == 1 and "Traceback" not in err
    assert err.startswith(f"{weights}:2:7: error: the file contains a NUL byte")


def test_a_spec_that_cannot_be_written_is_one_line(
        small_disk: Path, remount_read_only: Callable[[], None],
        capsys: pytest.CaptureFixture[str]) -> None:
    out = small_disk / "alexnet.net"
    remount_read_only()
    code, err = _run([str(ALEXNET_CFG), "-o", str(out)], capsys)
    assert code == 1 and err.startswith(f"alexnetc: error: cannot write {out}")
    assert len(err.strip().splitlines()) == 1 and not out.exists()


@pytest.mark.parametrize(("files", "title"), [
    ([ALEXNET_CFG], "Darknet cfg"),
    ([CONVNET2 / "layers-18pct.cfg", CONVNET2 / "layer-params-18pct.cfg", "--input",
      "32x32x3"], "cuda-convnet2 layer files"),
], ids=["darknet", "convnet2"])
def test_weights_for_a_format_without_them_is_a_usage_error(
        files: list[Path | str], title: str, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """alexnetc reads trained weights for PyTorch modules and Caffe nets only: --weights
    elsewhere would write no checkpoint, and says so before anything is written."""
    run = tmp_path / "run"
    code, err = _run([*map(str, files), "--weights", str(run)], capsys)
    assert (code, err) == (2, "alexnetc: error: --weights applies to a Caffe net with its "
                           ".caffemodel (given after the .prototxt) and to a PyTorch module, "
                           f"not to this network ({title}): alexnetc reads no trained weights "
                           "for it\n")
    assert not run.exists()


def test_o_naming_the_checkpoint_is_a_usage_error(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """For a PyTorch module as for a Caffe net: the spec would be written over the checkpoint
    (tests/importers/test_caffe_weights.py has the ways of naming it)."""
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "importers" / "fixtures" / "torch"))
    run = tmp_path / "run"
    run.mkdir()
    checkpoint = run / "checkpoint.pt"
    code, err = _run(["small_custom:SmallNet", "--input", "32x32x3", "--weights", str(run),
                      "-o", str(checkpoint)], capsys)
    assert (code, err) == (2, f"alexnetc: error: -o {checkpoint} names the checkpoint "
                           f"--weights writes ({checkpoint}): give the spec another name\n")
    assert not checkpoint.exists()


def test_weights_never_replace_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "tests" / "importers" / "fixtures" / "torch"))
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"a trained run")
    assert main(["import", "small_custom:SmallNet", "--input", "32x32x3", "--weights", str(run),
                 "-o", str(tmp_path / "s.net")]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == b"a trained run"
    assert not (tmp_path / "s.net").exists()
