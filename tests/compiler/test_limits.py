"""What the checker refuses so that `compile` and `train` never fail on a spec it passed:
stage names the PyTorch module already uses, sizes beyond PyTorch's 32-bit integers, and
recipe settings outside their meaning (each a located error with a hint)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alexnetc.compiler import errors
from alexnetc.compiler.graph import free_stage_name, reserved_stage_name
from alexnetc.compiler.pipeline import CheckResult, check
from alexnetc.compiler.recipe import FLOAT32_MAX
from alexnetc.compiler.records import INT32_MAX
from alexnetc.compiler.registry import first_tiling_pad

FAST = settings(max_examples=60, deadline=None)


def errors_of(result: CheckResult) -> list[errors.Diagnostic]:
    return [d for d in result.diagnostics if d.severity is errors.Severity.ERROR]


def only_error(text: str) -> errors.Diagnostic:
    result = check(text, "t.net")
    assert not result.ok
    (d,) = errors_of(result)
    d.render(text)  # renders whatever the numbers
    return d


def at(text: str, d: errors.Diagnostic, piece: str) -> bool:
    """Whether `d` points at the first occurrence of `piece` in `text`."""
    line = text[:text.index(piece)].count("\n") + 1
    col = text.index(piece) - (text.rfind("\n", 0, text.index(piece)) + 1) + 1
    return (d.loc.line, d.loc.col) == (line, col)


# --- stage names --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["forward", "eval", "type", "state_dict", "predict",
                                  "final_softmax", "_tower0", "__init__", "training", "net",
                                  "stage_names", "to", "cuda", "class", "None", "_"])
def test_reserved_stage_names_are_located_with_a_free_name(name: str) -> None:
    text = f"input 8x8x3\nconv1: Conv(3,1) x4 + ReLU\n{name}: FC(2)\n"
    d = only_error(text)
    assert d.kind == errors.RESERVED
    assert (d.loc.line, d.loc.col, d.loc.end_col) == (3, 1, 1 + len(name))
    assert f"stage name '{name}' is reserved" in d.message
    fixed = d.hint.split("`")[1].rstrip(":")
    assert check(text.replace(f"\n{name}:", f"\n{fixed}:")).ok


@pytest.mark.parametrize("name", ["conv1", "forward_1", "tower0", "init_1", "Forward",
                                  "self", "print", "match", "x", "conv", "evaluate"])
def test_ordinary_stage_names_pass(name: str) -> None:
    assert check(f"input 8x8x3\n{name}: Conv(3,1) x4 + ReLU\n").ok


def test_a_suggested_name_is_free() -> None:
    text = "input 8x8x3\nforward_1: ReLU\nforward: ReLU\n"
    d = only_error(text)
    assert "`forward_2:`" in d.hint


@FAST
@given(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True),
       st.sets(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), max_size=5))
def test_free_stage_name_is_never_reserved_or_taken(name: str, taken: set[str]) -> None:
    free = free_stage_name(name, taken)
    assert free != name and free not in taken and reserved_stage_name(free) is None
    assert free[0].isalpha() and free.isidentifier()


# --- sizes beyond PyTorch's 32-bit integers -----------------------------------------------------

def test_the_reported_case() -> None:
    text = "input 32x32x3\nc1: Conv(5,1) x99999999999999999999999\n"
    d = only_error(text)
    assert d.kind == errors.LIMIT and at(text, d, "x9999")
    assert "99,999,999,999,999,999,999,999 output channels" in d.message
    assert "2,147,483,647 (2**31 − 1)" in d.message and d.hint


@FAST
@given(st.integers(1, 2**80))
def test_channel_counts(n: int) -> None:
    text = f"input 8x8x3\nc: Conv(1,1) x{n}\n"
    result = check(text, "t.net")
    if n > INT32_MAX:
        (d,) = errors_of(result)
        assert d.kind == errors.LIMIT and "output channels" in d.message
        assert at(text, d, f"x{n}")
    elif 8 * 8 * n > INT32_MAX:
        (d,) = errors_of(result)
        assert d.kind == errors.LIMIT and f"{64 * n:,} values per image" in d.message
        assert at(text, d, "Conv")
    else:
        assert result.ok and result.network is not None
        assert result.network.total().params == 3 * n + n


@FAST
@given(st.sampled_from(["Conv({}, 1) x4", "Conv(1, {}) x4", "Conv(1,1, pad={}) x4",
                        "Conv(1,1, groups={}) x4", "MaxPool({}, 1)", "MaxPool(1, {})",
                        "AvgPool(1,1, pad={})", "ResNorm({})", "FC({})"]),
       st.integers(INT32_MAX + 1, 10**60))
def test_every_integer_argument_has_the_int32_limit(op: str, n: int) -> None:
    text = f"input 8x8x3\ns: {op.format(n)}\n"
    d = only_error(text)
    assert d.kind == errors.LIMIT and "2,147,483,647 (2**31 − 1)" in d.message
    named = next((f"{k}={n}" for k in ("pad", "groups") if f"{k}={n}" in text), str(n))
    assert at(text, d, named)


@FAST
@given(st.integers(1, 2**40), st.integers(1, 2**40), st.integers(1, 2**40))
def test_input_sizes(h: int, w: int, c: int) -> None:
    text = f"input {h}x{w}x{c}\ns: ReLU\n"
    result = check(text, "t.net")
    if max(h, w, c) > INT32_MAX or h * w * c > INT32_MAX:
        (d,) = errors_of(result)
        assert d.kind == errors.LIMIT and at(text, d, f"{h}x")
        assert "2,147,483,647" in d.message
    else:
        assert result.ok


def test_largest_tensor_that_fits_passes() -> None:
    n = INT32_MAX // 64
    result = check(f"input 8x8x1\nc: Conv(1,1) x{n}\n")
    assert result.ok and result.network is not None
    assert result.network.output.elements == 64 * n <= INT32_MAX
    assert only_error(f"input 8x8x1\nc: Conv(1,1) x{n + 1}\n").kind == errors.LIMIT


def test_towers_limit() -> None:
    text = f"input 8x8x4\ntowers {2**31}\ns: ReLU\n"
    d = only_error(text)
    assert d.kind == errors.LIMIT and "2,147,483,648" in d.message


@pytest.mark.parametrize("arg", ["k=1e999", "alpha=1e400", "beta=-1e999", "k=" + "9" * 400])
def test_float_arguments_must_be_finite(arg: str) -> None:
    text = f"input 8x8x3\ns: ResNorm(5, {arg})\n"
    d = only_error(text)
    assert d.kind == errors.ARGUMENT and "finite" in d.message and at(text, d, arg)


@pytest.mark.parametrize("op", ["Conv(1e999,1) x4", "Conv(1,-1e999) x4", "FC(1e999)",
                                "Conv(1,1, std=1e999) x4", "FC(2, bias=-1e999)",
                                "Dropout(1e999)"])
def test_infinite_literals_are_located_errors(op: str) -> None:
    d = only_error(f"input 8x8x3\ns: {op}\n")
    assert d.kind == errors.ARGUMENT and d.loc.line == 2


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["input {n}x8x3\ns: ReLU", "input 8x8x3\ns: Conv(3,1) x{n}",
                        "input 8x8x3\ns: Conv({n},1) x4", "input 8x8x3\ns: FC(2, std={n})",
                        "towers {n}\ninput 8x8x3\ns: ReLU", "input 8x8x3\ns: ReLU -> {n}",
                        "input 8x8x3\ntrain lr={n}, seed={n}\ns: ReLU",
                        "input 8x8x3\naugment resize={n}\ns: ReLU"]),
       st.integers(1, 4000).map(lambda k: "9" * k))
def test_huge_literals_never_escape(template: str, n: str) -> None:
    """Up to the 4,300 digits Python converts: a located error, or a clean pass."""
    text = template.format(n=n) + "\n"
    result = check(text, "t.net")
    for d in result.diagnostics:
        assert d.render(text).startswith(f"t.net:{d.loc.line}:{d.loc.col}: ")


@pytest.mark.parametrize("text", ["input 8x8x3\ns: Conv(3,1) x{n}\n", "input {n}x8x3\ns: ReLU\n",
                                  "input 8x8x3\ns: FC({n})\n", "towers {n}\ninput 8x8x3\n",
                                  "input 8x8x3\ntrain seed={n}\ns: ReLU\n"])
def test_literals_beyond_python_int_conversion_are_located_errors(text: str) -> None:
    source = text.format(n="9" * 5000)
    result = check(source, "t.net")
    assert not result.ok and all(d.loc.line >= 1 for d in result.diagnostics)


# --- the recipe ---------------------------------------------------------------------------------

def _setting(section: str, name: str, value: float) -> tuple[str, CheckResult]:
    shown = "1e999" if value == math.inf else "-1e999" if value == -math.inf else repr(value)
    text = f"input 32x32x3\n{section} {name}={shown}\ns: ReLU\n"
    return text, check(text, "t.net")


FLOATS = st.floats(allow_nan=False) | st.sampled_from([0.0, 1.0, -0.0, 0.5, 1e-5])


@FAST
@given(st.sampled_from([("train", "momentum", lambda v: 0 <= v < 1),
                        ("train", "lr_drop", lambda v: 0 < v <= 1),
                        ("train", "lr", lambda v: 0 <= v <= FLOAT32_MAX),
                        ("train", "weight_decay", lambda v: 0 <= v <= FLOAT32_MAX),
                        ("train", "min_lr", lambda v: 0 <= v <= FLOAT32_MAX),
                        ("augment", "pca", lambda v: 0 <= v <= FLOAT32_MAX),
                        ("init", "std", lambda v: 0 <= v <= FLOAT32_MAX),
                        ("init", "bias", lambda v: abs(v) <= FLOAT32_MAX)]),
       FLOATS)
def test_float_settings_ranges(setting: tuple, value: float) -> None:
    section, name, valid = setting
    text, result = _setting(section, name, value)
    if valid(value):
        assert result.ok and result.recipe is not None
        assert getattr(getattr(result.recipe, section), name) == value
    else:
        (d,) = errors_of(result)
        assert d.kind == errors.SETTING and at(text, d, f"{name}=") and d.hint


@FAST
@given(st.sampled_from([("train", "batch", 1), ("train", "epochs", 1),
                        ("train", "patience", 1), ("train", "seed", -(2**31)),
                        ("augment", "resize", 0)]),
       st.integers(-(2**70), 2**70))
def test_whole_number_settings_ranges(setting: tuple, value: int) -> None:
    section, name, low = setting
    text = f"input 8x8x3\n{section} {name}={value}\ns: ReLU\n"
    result = check(text, "t.net")
    if value > INT32_MAX:
        (d,) = errors_of(result)
        assert d.kind == errors.LIMIT and at(text, d, f"{name}=")
    elif value < low:
        (d,) = errors_of(result)
        assert d.kind == errors.SETTING and f"at least {low}" in d.message
    elif name == "resize" and 0 < value < 8:
        (d,) = errors_of(result)
        assert d.kind == errors.SETTING and "smaller than the spec's 8x8 input" in d.message
    elif name == "resize" and value ** 2 * 3 > INT32_MAX:
        (d,) = errors_of(result)
        assert d.kind == errors.LIMIT and "values" in d.message
    else:
        assert result.ok


@pytest.mark.parametrize("inp, resize, ok", [("32x32x3", 10, False), ("32x32x3", 31, False),
                                             ("32x32x3", 32, True), ("32x32x3", 0, True),
                                             ("20x40x3", 39, False), ("20x40x3", 40, True),
                                             ("227x227x3", 256, True)])
def test_resize_must_cover_the_input(inp: str, resize: int, ok: bool) -> None:
    text = f"input {inp}\naugment resize={resize}\ns: ReLU\n"
    result = check(text, "t.net")
    assert result.ok == ok
    if not ok:
        (d,) = errors_of(result)
        assert at(text, d, "resize=")
        assert f"use resize ≥ {max(map(int, inp.split('x')[:2]))}" in d.hint


def test_resize_is_reported_with_the_networks_errors() -> None:
    text = "input 32x32x3\naugment resize=10\nforward: Conv(5,1) x4\nc: Conv(99,1) x4\n"
    result = check(text, "t.net")
    assert [d.kind for d in errors_of(result)] == [errors.SETTING, errors.RESERVED]


def test_the_check_path_still_never_imports_torch() -> None:
    code = ("import sys\nfrom alexnetc.compiler.pipeline import check\n"
            "r = check('input 8x8x3\\ntrain momentum=5\\nforward: Conv(1,1) x3000000000\\n')\n"
            "assert len(r.diagnostics) == 3, r.diagnostics\n"
            "sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@FAST
@given(st.integers(1, 60), st.integers(1, 30), st.integers(1, 12), st.integers(0, 15))
def test_first_tiling_pad_is_the_least_that_tiles(length: int, size: int, stride: int,
                                                  pad: int) -> None:
    want = next((p for p in range(pad + 1, size // 2 + 1)
                 if (length + 2 * p - size) % stride == 0), None)
    assert first_tiling_pad(length, size, stride, pad) == want


def test_windows_of_two_billion_pixels_are_checked_at_once() -> None:
    """The pad suggestion once tried every pad up to size/2: minutes for these sizes."""
    text = f"input {INT32_MAX}x1x1\nc: Conv({INT32_MAX - 1}, 2) x1\n"
    d = only_error(text)
    assert d.kind == errors.SHAPE and "does not tile" in d.message
    assert str(INT32_MAX + 1) not in d.hint  # no suggested input beyond PyTorch's sizes


def test_a_float_argument_beyond_float32_is_located() -> None:
    """Weights are 32-bit floats: `bias=1e300` would overflow when the layer is built."""
    result = check("input 8x8x3\nc: Conv(3,1, bias=1e300) x4 + ReLU\nf: FC(10, std=-1e39)\n")
    errors = [d for d in result.diagnostics if d.severity.value == "error"]
    assert [(d.loc.line, d.loc.col) for d in errors] == [(2, 14), (3, 11)]
    assert all("largest 32-bit float" in d.message for d in errors)
