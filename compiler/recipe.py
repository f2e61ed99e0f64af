"""The training recipe a spec carries (`train`, `augment`, `init` lines), defaulting to the paper's.

Kept free of torch so `--check-shapes` validates it instantly; `alexnetc train` reads it and
lets command-line flags override it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from alexnetc.compiler import ast
from alexnetc.compiler.errors import DUPLICATE, SETTING, Diagnostics

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


_MINIMUM = {"batch": 1, "epochs": 1, "patience": 1, "resize": 0, "lr": 0.0, "momentum": 0.0,
            "weight_decay": 0.0, "lr_drop": 0.0, "min_lr": 0.0, "pca": 0.0, "std": 0.0}


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
                            f"got {arg.value}", f"e.g. {arg.name}={getattr(section, f.name)}")
                continue
            low = _MINIMUM.get(arg.name)
            if low is not None and not isinstance(value, bool) and value < low:
                diags.error(SETTING, arg.loc, f"'{arg.name}' must be at least {low}, got {value}",
                            f"e.g. {arg.name}={getattr(section, f.name)}")
                continue
            section = replace(section, **{arg.name: value})
        sections[setting.section] = section
    return Recipe(**sections)


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
        return float(value) if isinstance(value, int | float) else None
    return None


def _describe(kind: Any) -> str:
    name = kind if isinstance(kind, str) else kind.__name__
    return {"bool": "true or false", "int": "a whole number", "float": "a number"}[name]
