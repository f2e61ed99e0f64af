"""The training recipe a spec carries (`train`, `augment`, `init` lines), defaulting to the paper's.

Kept free of torch so `--check-shapes` validates it instantly; `alexnetc train` reads it and
lets command-line flags override it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

from alexnetc.compiler import ast
from alexnetc.compiler.errors import DUPLICATE, LIMIT, SETTING, Diagnostics
from alexnetc.compiler.records import (
    FLOAT32_MAX,
    FLOAT32_TEXT,
    INT32_MAX,
    LIMIT_TEXT,
    Shape,
    show_bound,
    show_int,
    show_value,
)

_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}


@dataclass(frozen=True)
class Train:
    """Optimiser and schedule: the paper's SGD with momentum and weight decay (section 5)."""

    batch: int = 128
    epochs: int = 90
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0005
    lr_drop: float = 0.1  # ε is multiplied by this when validation error stops improving
    patience: int = 1  # epochs without improvement before the drop
    min_lr: float = 1e-5  # no further drops below this
    seed: int = 0


@dataclass(frozen=True)
class Augment:
    """Data augmentation (section 4.1)."""

    resize: int = 0  # shorter side before cropping; 0: 256/224 of the input (256 for AlexNet)
    flip: bool = True
    pca: float = 0.1  # σ of the PCA colour multipliers α; 0 turns it off
    mean: bool = True  # subtract the per-channel training mean
    ten_crop: bool = True  # evaluate on the paper's 10 crops as well as the centre crop


@dataclass(frozen=True)
class Init:
    """Initialisation (section 5); a Conv or FC may override with `std=` and `bias=`."""

    std: float = 0.01
    bias: float = 0.0


@dataclass(frozen=True)
class Recipe:
    train: Train = field(default_factory=Train)
    augment: Augment = field(default_factory=Augment)
    init: Init = field(default_factory=Init)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {s.name: {f.name: getattr(getattr(self, s.name), f.name)
                         for f in fields(getattr(self, s.name))} for s in fields(self)}


@dataclass(frozen=True)
class _Range:
    """The values a numeric setting may take; every float setting must also be finite."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is excluded
    high_open: bool = False  # high itself is excluded
    why: str = ""  # what the setting means, for the hint


_INT32 = _Range(high=INT32_MAX)  # whole-number settings: within PyTorch's 32-bit integers
_RANGES: dict[str, _Range] = {
    "batch": _Range(1, INT32_MAX),
    "epochs": _Range(1, INT32_MAX),
    "patience": _Range(1, INT32_MAX),
    "seed": _Range(-(2**31), INT32_MAX),
    "resize": _Range(0, INT32_MAX),
    "lr": _Range(0.0),
    "momentum": _Range(0.0, 1.0, high_open=True,
                       why="momentum is the fraction of the last step kept in the next "
                       "(the paper's 0.9); at 1 or more the steps never die out"),
    "weight_decay": _Range(0.0),
    "lr_drop": _Range(0.0, 1.0, low_open=True,
                      why="ε is multiplied by lr_drop when the validation error stops "
                      "improving: the paper's 0.1 divides it by 10, 1 never lowers it"),
    "min_lr": _Range(0.0),
    "pca": _Range(0.0),
    "std": _Range(0.0),
}


def build_recipe(settings: tuple[ast.Setting, ...], diags: Diagnostics) -> Recipe:
    """Apply the spec's settings to the paper's defaults, reporting each bad one."""
    sections: dict[str, Any] = {"train": Train(), "augment": Augment(), "init": Init()}
    seen: dict[tuple[str, str], int] = {}
    for setting in settings:
        section = sections[setting.section]
        known = {f.name: f for f in fields(section)}
        for arg in setting.args:
            assert arg.name is not None
            f = known.get(arg.name)
            if f is None:
                diags.error(SETTING, arg.loc, f"'{setting.section}' has no setting '{arg.name}'",
                            f"its settings are: {', '.join(known)}")
                continue
            key = (setting.section, arg.name)
            if key in seen:
                diags.error(DUPLICATE, arg.loc, f"'{arg.name}' is set twice",
                            f"first set on line {seen[key]}; keep one")
                continue
            seen[key] = arg.loc.line
            value = _convert(f.type, arg.value)
            if value is None:
                diags.error(SETTING, arg.loc, f"'{arg.name}' must be {_describe(f.type)}, "
                            f"got {show_value(arg.value)}",
                            f"e.g. {arg.name}={getattr(section, f.name)}")
                continue
            if not isinstance(value, bool) and not _in_range(arg, value, getattr(section, f.name),
                                                             diags):
                continue
            section = replace(section, **{arg.name: value})
        sections[setting.section] = section
    return Recipe(**sections)


def _in_range(arg: ast.Arg, value: int | float, default: object, diags: Diagnostics) -> bool:
    """Report `value` unless it is within its setting's range (`setting_problem`)."""
    problem = setting_problem(str(arg.name), value, show_value(arg.value))
    if problem is None:
        return True
    hint = f"e.g. {arg.name}={default}"
    diags.error(problem.kind, arg.loc, f"'{arg.name}' {problem.what}",
                f"{problem.why}; {hint}" if problem.why else hint)
    return False


@dataclass(frozen=True)
class Problem:
    """Why a value cannot be a setting, worded to follow the setting's name or flag."""

    kind: str  # the diagnostic's kind: SETTING or LIMIT
    what: str  # `must be at least 1, got 0`
    why: str  # the rule's reason, for a hint; "" where the bounds say it all


def setting_problem(name: str, value: int | float, shown: str | None = None
                    ) -> Problem | None:
    """What is wrong with `value` for the numeric setting `name`, or None if nothing is.

    The spec's `train`/`augment`/`init` lines and the command-line flags that override them
    (`flag_problem`) obey this one rule. Every number must be finite as training holds it:
    whole numbers as 32-bit integers, the others as 32-bit floats (an ε beyond ±3.4e38 cannot
    even be multiplied into a weight). `shown` is the value as written."""
    r = _RANGES.get(name, _INT32 if isinstance(value, int) else _Range())
    shown = show_value(value) if shown is None else shown
    if isinstance(value, float) and not math.isfinite(value):
        return Problem(SETTING, f"must be a finite number, got {shown}",
                       "numbers beyond ±1.8e308 are infinite as floats")
    if r.high == INT32_MAX and value > INT32_MAX:
        return Problem(LIMIT, f"is {shown}, more than the limit of {LIMIT_TEXT}",
                       "whole-number settings are 32-bit integers, as PyTorch's sizes are")
    too_low = r.low is not None and (value <= r.low if r.low_open else value < r.low)
    too_high = r.high is not None and (value >= r.high if r.high_open else value > r.high)
    if too_low or too_high:
        return Problem(SETTING, f"must be {_bounds(r)}, got {shown}", r.why)
    if isinstance(value, float) and abs(value) > FLOAT32_MAX:
        return Problem(SETTING, f"must be within {FLOAT32_TEXT}, got {shown}",
                       "training computes in 32-bit floats, as the weights are")
    return None


def flag_problem(flag: str, name: str, value: int | float | None) -> str | None:
    """`--lr must be within ±3.4…e+38 (…), got 1e+300: why` when the value of `flag`, which
    overrides the setting `name`, breaks that setting's rule; None when it keeps it (or the
    flag was not given)."""
    if value is None:
        return None
    problem = setting_problem(name, value)
    if problem is None:
        return None
    return f"{flag} {problem.what}" + (f": {problem.why}" if problem.why else "")


def _bounds(r: _Range) -> str:
    """`at least 0 and less than 1`; the 32-bit limit is reported on its own, so left out."""
    parts = []
    if r.low is not None:
        parts.append(f"{'more than' if r.low_open else 'at least'} {show_bound(r.low)}")
    if r.high is not None and r.high != INT32_MAX:
        parts.append(f"{'less than' if r.high_open else 'at most'} {show_bound(r.high)}")
    return " and ".join(parts)


def check_against_input(settings: tuple[ast.Setting, ...], image: Shape,
                        diags: Diagnostics) -> None:
    """The settings whose valid values depend on the spec's input: `augment resize`.

    Training scales each image's shorter side to `resize` and takes random crops of the
    input's size from it, so a smaller `resize` cannot give a crop. Values `build_recipe`
    rejects on their own (not a whole number, out of range) are left to it.
    """
    arg = next((a for s in settings if s.section == "augment" for a in s.args
                if a.name == "resize"), None)
    if arg is None or not isinstance(arg.value, int) or isinstance(arg.value, bool) \
            or not 0 < arg.value <= INT32_MAX:
        return
    side = max(image.h, image.w)
    if arg.value < side:
        diags.error(SETTING, arg.loc, f"augment resize={arg.value} is smaller than the spec's "
                    f"{image.h}x{image.w} input",
                    f"resize is the side images are scaled to before random {image.h}x{image.w} "
                    f"crops are cut from them; use resize ≥ {side}, or 0 for 256/224 of the "
                    "input")
    elif arg.value ** 2 * image.c > INT32_MAX:
        diags.error(LIMIT, arg.loc, f"augment resize={arg.value} gives {arg.value}x{arg.value}x"
                    f"{image.c} images of {show_int(arg.value ** 2 * image.c)} values, more than "
                    f"the limit of {LIMIT_TEXT}",
                    "many PyTorch kernels index a tensor with a 32-bit integer; use a smaller "
                    f"resize (at least {side}), or 0 for 256/224 of the input")


def _convert(kind: Any, value: object) -> Any:
    name = kind if isinstance(kind, str) else kind.__name__
    if name == "bool":
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        if value in (0, 1) and not isinstance(value, float):
            return bool(value)
        return None
    if name == "int":
        return value if isinstance(value, int) else None
    if name == "float":
        if not isinstance(value, int | float):
            return None
        try:
            return float(value)
        except OverflowError:  # an integer literal too large for a float: not finite
            return math.inf if value > 0 else -math.inf
    return None


def _describe(kind: Any) -> str:
    name = kind if isinstance(kind, str) else kind.__name__
    return {"bool": "true or false", "int": "a whole number", "float": "a number"}[name]
