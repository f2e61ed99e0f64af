"""Random `train` flags and interruptions never break the two promises of a run:

- the exit code says whose fault it was (0 done or stopped on request, 1 a failed run,
  2 a usage error, 128 + signal when interrupted), always with a message, never a traceback
  or an "internal error";
- RUN_DIR/checkpoint.pt, whenever it exists, loads and holds only finite numbers, and a run
  that fails never replaces a good checkpoint with a worse one.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from alexnetc.backends.train import checkpoint, loop
from alexnetc.cli.main import main

SPEC = """\
network Tiny
input 8x8x3
train batch=64, epochs=1, lr=0.01
conv1: Conv(3,1, pad=1) x4 + ReLU; MaxPool(2,2)
fc: FC(10) + Softmax
"""

REAL_STEP = loop.train_step
EXIT_CODES = {0, 1, 2, 128 + signal.SIGINT, 128 + signal.SIGTERM}

# Each flag's values: ordinary ones, and (drawn less often) ones a user may type by mistake.
_VALUES = {
    "--batch-size": (["1", "7", "64", "1500"], ["0", "-3", "2147483648"]),
    "--lr": (["0.01", "0", "1e3", "3e38", "1e300"], ["-1", "nan", "inf"]),
    "--seed": (["0", "7", "2147483647"], ["2147483648", "-2147483649"]),
    "--epochs": (["1", "2"], ["0"]),
    "--max-steps": (["1", "2", "5"], ["0"]),
    "--workers": (["0", "1"], ["-1", "100000"]),
}
FLAGS = {name: st.sampled_from(good * 4 + bad) for name, (good, bad) in _VALUES.items()}


pytestmark = pytest.mark.torch_threads(1)


def _finite_and_loadable(run: Path) -> None:
    path = run / checkpoint.FILE
    if not path.exists():
        return
    state = checkpoint.load(path)
    assert checkpoint.finite_state_problem(state) is None


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code in EXIT_CODES, (argv, code, err)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    if code in (1, 2):
        assert "error" in err, (argv, err)  # a failure always says why
    return code, out + err


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flags=st.fixed_dictionaries({}, optional=FLAGS),
       stop_at=st.one_of(st.none(), st.integers(1, 4)),
       stop_with=st.sampled_from([signal.SIGINT, signal.SIGTERM]),
       resume_flags=st.fixed_dictionaries({}, optional={k: FLAGS[k] for k in
                                                        ("--lr", "--epochs", "--max-steps")}))
def test_random_flags_and_interruptions_keep_the_exit_code_rule_and_the_checkpoint(
        tmp_path_factory: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, flags: dict[str, str], stop_at: int | None,
        stop_with: int, resume_flags: dict[str, str]) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    spec = tmp / "tiny.net"
    spec.write_text(SPEC)
    run = tmp / "run"

    def step_then_signal(tr: loop.Trainer, batch: loop.Batch, stop: loop.Stop | None = None
                         ) -> float:
        value = REAL_STEP(tr, batch, stop)
        if stop_at is not None and tr.step == stop_at:
            os.kill(os.getpid(), stop_with)  # a real signal, through the real handler
        return value

    with monkeypatch.context() as patch:  # undone after each example, not after the test
        patch.setattr(loop, "train_step", step_then_signal)
        _train_then_resume(spec, run, flags, resume_flags, stop_with, capsys)


def _train_then_resume(spec: Path, run: Path, flags: dict[str, str],
                       resume_flags: dict[str, str], stop_with: int,
                       capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", str(spec), "--out", str(run), "--devices", "cpu"]
    for name, value in flags.items():
        argv += [name, value]
    code, said = _run(argv, capsys)
    event(f"first run exit {code}")
    if code == 2:
        assert not (run / checkpoint.FILE).exists()  # a usage error does no work
        return
    _finite_and_loadable(run)
    if code == 128 + stop_with:
        assert (run / checkpoint.FILE).exists() and "--resume" in said, said
    if not (run / checkpoint.FILE).exists():
        return

    before = (run / checkpoint.FILE).read_bytes()
    argv = ["train", str(spec), "--out", str(run), "--devices", "cpu", "--resume"]
    for name, value in resume_flags.items():
        argv += [name, value]
    code, _ = _run(argv, capsys)
    event(f"resume exit {code}")
    _finite_and_loadable(run)
    if code == 2:  # a refused resume leaves the checkpoint as it was
        assert (run / checkpoint.FILE).read_bytes() == before
