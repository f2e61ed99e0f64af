"""`alexnetc compile`: a program plain torch.export.load runs, equal to the alexnetc module."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from alexnetc.backends.lowering import build_module
from alexnetc.backends.lowering.export import load_metadata, onnx_missing
from alexnetc.cli.main import main
from alexnetc.compiler.pipeline import load

from helpers import ROOT, SPECS, fill

# Runs in a fresh interpreter where importing alexnetc fails: the artifact must not need it.
LOAD_WITHOUT_ALEXNETC = """
import sys
sys.modules["alexnetc"] = None
import torch
files = {"alexnetc.json": ""}
program = torch.export.load(sys.argv[1], extra_files=files)
x = torch.load(sys.argv[2])
torch.save({"y": program.module()(x), "meta": files["alexnetc.json"]}, sys.argv[3])
"""


def test_compile_alexnet_loads_without_alexnetc(tmp_path, capsys):
    out = tmp_path / "alexnet.pt2"
    assert main(["compile", str(SPECS / "alexnet.net"), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "60,965,224 parameters" in printed and str(out) in printed
    x = torch.randn(2, 3, 227, 227)
    torch.save(x, tmp_path / "x.pt")
    script = tmp_path / "run.py"
    script.write_text(LOAD_WITHOUT_ALEXNETC)
    subprocess.run([sys.executable, str(script), str(out), str(tmp_path / "x.pt"),
                    str(tmp_path / "y.pt")], check=True, timeout=120)
    got = torch.load(tmp_path / "y.pt")
    meta = json.loads(got["meta"])
    assert meta["spec_sha256"] == hashlib.sha256((SPECS / "alexnet.net").read_bytes()).hexdigest()
    assert meta["parameters"] == 60_965_224 and meta["alexnetc_version"]
    net, recipe = load(SPECS / "alexnet.net")
    model = build_module(net, recipe, devices=["cpu"], seed=recipe.train.seed).eval()
    program = torch.export.load(str(out))
    with torch.no_grad():
        want = model.predict(x)  # 2 x 1000 probabilities
        torch.testing.assert_close(got["y"], want)
        torch.testing.assert_close(program.module()(x[:1]), model.predict(x[:1]))
    torch.testing.assert_close(got["y"].sum(1), torch.ones(2))
    assert sum(v.numel() for v in program.state_dict.values()) == 60_965_224


def test_compile_small_spec_metadata_and_default_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["compile", str(SPECS / "lenet5.net"), "--seed", "3"]) == 0
    meta = load_metadata(tmp_path / "lenet5.pt2")
    assert meta["network"] == "LeNet5" and meta["input"] == [1, 32, 32]


def test_compile_reports_spec_errors(tmp_path, capsys):
    assert main(["compile", str(SPECS / "alexnet-224.net"), "-o", str(tmp_path / "x.pt2")]) == 1
    err = capsys.readouterr().err
    assert "alexnet-224.net:" in err and "does not tile" in err
    assert not (tmp_path / "x.pt2").exists()


def test_compile_usage_errors(tmp_path, capsys):
    spec = str(SPECS / "lenet5.net")
    assert main(["compile", spec, "--devices", "cpu,cpu"]) == 2
    assert "one device" in capsys.readouterr().err
    assert main(["compile", spec, "--devices", "tpu9"]) == 2
    assert "unknown device" in capsys.readouterr().err


@pytest.mark.skipif(not onnx_missing(), reason="onnx is installed")
def test_compile_onnx_without_onnx_says_what_to_install(tmp_path, capsys):
    assert main(["compile", str(SPECS / "lenet5.net"), "--onnx", "-o",
                 str(tmp_path / "x.onnx")]) == 2
    assert "pip install onnx" in capsys.readouterr().err


@pytest.mark.skipif(bool(onnx_missing()), reason="needs onnx and onnxscript")
def test_compile_onnx(tmp_path):
    import onnx

    out = tmp_path / "lenet5.onnx"
    assert main(["compile", str(SPECS / "lenet5.net"), "--onnx", "-o", str(out)]) == 0
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["network"]) == "LeNet5" and "spec_sha256" in props
    assert [p.name for p in tmp_path.iterdir()] == ["lenet5.onnx"]  # no OUT.data side file


def test_compile_exports_a_runs_trained_weights(tmp_path, capsys):
    spec = tmp_path / "small.net"
    spec.write_text("network S\ninput 9x9x3\ntrain batch=32, epochs=1\naugment resize=9, "
                    "flip=false, pca=0\nc: Conv(3,2) x4 + ReLU; MaxPool(2,2)\n"
                    "f: FC(10) + Softmax\n")
    run = tmp_path / "run"
    assert main(["train", str(spec), "--out", str(run), "--max-steps", "3", "--devices", "cpu",
                 "--workers", "0"]) == 0
    out = tmp_path / "trained.pt2"
    assert main(["compile", str(spec), "-o", str(out), "--weights", str(run)]) == 0
    assert "trained weights" in capsys.readouterr().out
    state = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    net, recipe = load(spec)
    model = build_module(net, recipe, devices=["cpu"]).eval()
    model.load_state_dict(state)
    x = torch.randn(2, 3, 9, 9)
    program = torch.export.load(str(out)).module()
    torch.testing.assert_close(program(x), model.predict(x))
    # The one rule: a path that does not exist is a usage error (2), a checkpoint that
    # exists but cannot be used (another spec's, corrupt) an error (1).
    other = tmp_path / "other.net"
    other.write_text(spec.read_text().replace("FC(10)", "FC(10, bias=1)"))
    assert main(["compile", str(other), "-o", str(out), "--weights", str(run)]) == 1
    err = capsys.readouterr().err
    assert f"was trained from a different spec than {other}" in err
    assert f"alexnetc compile {run / 'spec.net'} --weights {run}" in err
    assert "resume" not in err and "--out" not in err  # train's advice, not compile's
    assert main(["compile", str(spec), "-o", str(out), "--weights", str(tmp_path)]) == 2
    assert f"no checkpoint at {tmp_path / 'checkpoint.pt'}" in capsys.readouterr().err
    assert main(["compile", str(spec), "-o", str(out), "--weights", str(tmp_path / "no")]) == 2
    assert f"no such run folder: {tmp_path / 'no'}" in capsys.readouterr().err
    ckpt = run / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:3000])
    assert main(["compile", str(spec), "-o", str(out), "--weights", str(run)]) == 1
    err = capsys.readouterr().err
    assert f"{ckpt} is truncated or corrupt" in err and err.rstrip().endswith(")")
    assert "miniz" not in err and "If yo" not in err  # torch's text ends at a sentence


def test_compile_checks_the_output_folder_first(tmp_path, capsys):
    out = tmp_path / "no" / "x.pt2"
    assert main(["compile", str(SPECS / "lenet5.net"), "-o", str(out)]) == 2
    assert f"no such folder for {out}: {tmp_path / 'no'}" in capsys.readouterr().err
    assert main(["compile", str(SPECS / "lenet5.net"), "-o", str(tmp_path)]) == 2
    assert "is a folder; give a file name with -o" in capsys.readouterr().err


def test_compile_output_folder_is_checked_before_torch_loads():
    code = ("import sys; from alexnetc.cli.main import main; rc = main(['compile', "
            "'specs/alexnet-small.net', '-o', '/nonexistent/x.pt2']); "
            "print('torch' in sys.modules); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=ROOT, timeout=60, check=False)
    assert r.returncode == 2
    assert r.stdout.strip() == "False"
    assert r.stderr == "alexnetc: error: no such folder for /nonexistent/x.pt2: /nonexistent\n"


def test_compile_never_writes_over_its_input(tmp_path, capsys):
    spec = tmp_path / "small.net"
    spec.write_bytes((SPECS / "lenet5.net").read_bytes())
    link = tmp_path / "link.pt2"
    link.symlink_to(spec)
    for out in (spec, link):
        assert main(["compile", str(spec), "-o", str(out)]) == 2
        assert f"-o {out} is the spec" in capsys.readouterr().err
    assert spec.read_bytes() == (SPECS / "lenet5.net").read_bytes()
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"weights")
    assert main(["compile", str(spec), "--weights", str(run), "-o",
                 str(run / "checkpoint.pt")]) == 2
    assert "is the checkpoint of --weights" in capsys.readouterr().err
    assert (run / "checkpoint.pt").read_bytes() == b"weights"


@pytest.mark.parametrize("flags, out, fix", [
    (["--onnx"], "x.pt2", "use -o x.onnx"),
    ([], "x.onnx", "add --onnx, or use -o x.pt2"),
    ([], "x", "use -o x.pt2"),
])
def test_compile_output_is_named_for_what_it_is(tmp_path, flags, out, fix, capsys):
    """One artifact, with the suffix of its format: no ONNX under a .pt2 name."""
    assert main(["compile", str(SPECS / "lenet5.net"), "-o", str(tmp_path / out), *flags]) == 2
    assert fix.replace(" x", f" {tmp_path}/x") in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_compile_refuses_onnx_too_large_for_one_file(tmp_path, monkeypatch, capsys):
    """Past 1.5 GiB torch.onnx keeps the weights in a side file: refused, not split."""
    from alexnetc.backends.lowering import export

    monkeypatch.setattr(export, "ONNX_MAX_BYTES", 100_000)  # LeNet-5: 61,706 float32 values
    monkeypatch.setattr(export, "onnx_missing", lambda: [])
    assert main(["compile", str(SPECS / "lenet5.net"), "--onnx", "-o",
                 str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err
    assert "does not fit in one ONNX file" in err and "without --onnx" in err
    assert not list(tmp_path.iterdir())


def test_compile_on_a_full_disk_keeps_the_previous_file(small_disk):
    """A clear error, not torch's C++ abort, and the old file as it was. (A subprocess: a
    C++ abort would take pytest with it.)"""
    out = small_disk / "lenet5.pt2"
    out.write_bytes(b"the previous program")
    fill(small_disk)
    r = subprocess.run([sys.executable, "-m", "alexnetc", "compile", str(SPECS / "lenet5.net"),
                        "-o", str(out)], capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 1, r.stderr
    assert r.stderr == f"alexnetc: error: cannot write {out}: the disk is full\n"
    assert out.read_bytes() == b"the previous program"
    assert sorted(p.name for p in small_disk.iterdir()) == [".filler", ".filler-bytes",
                                                            "lenet5.pt2"]


def test_compile_into_a_read_only_folder(small_disk: Path,
                                         remount_read_only: Callable[[], None], capsys):
    remount_read_only()
    out = small_disk / "lenet5.pt2"
    assert main(["compile", str(SPECS / "lenet5.net"), "-o", str(out)]) == 1
    assert f"cannot write {out}: the file system is read-only" in capsys.readouterr().err
