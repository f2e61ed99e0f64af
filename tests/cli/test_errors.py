"""How `alexnetc` reports what goes wrong outside a spec: a bug's message without torch's C++
backtrace, running out of memory as a plain error, a mistyped command as a usage error."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alexnetc.cli import check
from alexnetc.cli.main import first_lines, main

from helpers import ROOT, SPECS

ALEXNET = str(SPECS / "alexnet.net")

# What str() of a c10::Error looks like: one line of message, then the C++ backtrace, in
# either of the forms torch uses.
CPP_FRAMES = """shape '[3]' is invalid for input of size 2
Exception raised from infer_size_impl at ../aten/src/ATen/InferSize.h:99 (most recent call first):
frame #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x57 (0x7f in libc10.so)
frame #1: c10::detail::torchCheckFail(char const*, char const*, unsigned int, std::string const&)
frame #2: <unknown function> + 0x1a2b3c (0x7f in libtorch_cpu.so)
"""
CAPTURED = """[enforce fail at conv.cpp:12] some check failed. More text here
C++ CapturedTraceback:
#4 std::_Function_handler<std::shared_ptr<c10::LazyValue<std::string> const> ()> from Logging.cpp:0
#5 c10::ThrowEnforceNotMet(char const*, int, char const*, std::string const&, void const*)
"""


def _raising(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Make `alexnetc check` raise `error`, as a bug or a full memory would."""
    def run(args: argparse.Namespace) -> int:
        raise error

    monkeypatch.setattr(check, "run", run)


@pytest.mark.parametrize("message, first", [
    (CPP_FRAMES, "shape '[3]' is invalid for input of size 2"),
    (CAPTURED, "[enforce fail at conv.cpp:12] some check failed. More text here"),
])
def test_internal_error_drops_the_cpp_backtrace(message: str, first: str,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    _raising(monkeypatch, RuntimeError(message))
    assert main(["check", ALEXNET]) == 1
    err = capsys.readouterr().err
    assert f"alexnetc: internal error: RuntimeError: {first}\n" in err
    assert "this is a bug in alexnetc" in err and "ALEXNETC_DEBUG=1" in err
    for tail in ("frame #", "c10::", "Exception raised from", "CapturedTraceback", "#4 "):
        assert tail not in err, tail
    assert len(err.splitlines()) == 2


def test_first_lines_keeps_a_short_message_and_cuts_a_long_one() -> None:
    assert first_lines("one\n\ntwo\n") == "one\n  two"
    assert first_lines("\n".join(f"line {i}" for i in range(10))) == \
        "line 0\n  line 1\n  line 2 …"
    assert first_lines("") == "(no message)"


def test_real_cpu_allocation_failure_is_an_error_not_a_bug(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def run(args: argparse.Namespace) -> int:
        torch.empty(2**62, dtype=torch.uint8)  # 4 EiB: DefaultCPUAllocator: can't allocate
        return 0

    monkeypatch.setattr(check, "run", run)
    assert main(["check", ALEXNET]) == 1
    err = capsys.readouterr().err
    assert err.startswith("alexnetc: error: out of main memory (tried to allocate 4.00 EiB); "
                          "use a smaller --batch-size or a smaller network")
    assert "internal error" not in err and "bug" not in err and "enforce fail" not in err


@pytest.mark.parametrize("error, what", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
                            "total capacity of 79.19 GiB of which 1.5 GiB is free."),
     "out of GPU memory (tried to allocate 2.00 GiB)"),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't "
                  "allocate memory: you tried to allocate 1610612736 bytes. Error code 12 "
                  "(Cannot allocate memory)\n" + CPP_FRAMES),
     "out of main memory (tried to allocate 1.50 GiB)"),
    (MemoryError(), "out of main memory"),
])
def test_out_of_memory_says_what_ran_out(error: BaseException, what: str,
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    _raising(monkeypatch, error)
    assert main(["check", ALEXNET]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"alexnetc: error: {what}; use a smaller --batch-size")
    assert "internal error" not in err and "frame #" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("typo, command", [
    ("trian", "train"), ("chek", "check"), ("complie", "compile"), ("evl", "eval"),
    ("predcit", "predict"), ("plt", "plot"), ("grpah", "graph"), ("Train", "train"),
])
def test_mistyped_command_is_named(typo: str, command: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main([typo, ALEXNET]) == 2
    err = capsys.readouterr().err
    assert f"alexnetc: error: unknown command '{typo}' (did you mean '{command}'?)" in err
    assert "unrecognized arguments" not in err


def test_mistyped_command_from_the_shell() -> None:
    r = subprocess.run([sys.executable, "-m", "alexnetc", "trian", "specs/alexnet.net"],
                       capture_output=True, text=True, cwd=ROOT, timeout=60, check=False)
    assert r.returncode == 2
    assert "unknown command 'trian' (did you mean 'train'?)" in r.stderr
    assert "Traceback" not in r.stderr


def test_spec_shorthand_still_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """An existing file is a spec whatever its name; so is anything with --check-shapes, or
    that looks like a path; a word like no command is a missing spec."""
    monkeypatch.chdir(tmp_path)
    Path("trian").write_text("input 8x8x1\nc: Conv(3,1) x2 -> 6x6x2\n")
    assert main(["trian"]) == 0
    assert main([ALEXNET, "--check-shapes"]) == 0
    capsys.readouterr()
    for argv in (["chek", "--check-shapes"], ["chek.net"], ["frobnicate"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "no such spec file" in err and "unknown command" not in err, argv
