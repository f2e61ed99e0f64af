"""The recipe lines cuda-convnet2's layer-params file states (epsW/momW/wc, the learning
rate schedules), and comments where its per-layer settings do not map."""

from __future__ import annotations

import re
from collections import Counter

from alexnetc.importers.convnet2.core import Layer, Reader, finite
from alexnetc.importers.draft import Draft, number
from alexnetc.importers.source import INCONSISTENT, MALFORMED


def read_recipe(r: Reader, draft: Draft) -> None:
    """`train lr=…, momentum=…, weight_decay=…` where the weight layers agree; comments
    for what does not map."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for layer in r.weight_layers:
        n = len(layer.inputs)
        for key, label in (("epsW", "epsW"), ("momW", "momW"), ("wc", "wc")):
            for v in r.values(layer, key, str, "a value", "0" if key == "wc" else None,
                                 True, n):
                rows.setdefault(label, []).append((layer.name, v))
        for key in ("epsB", "momB"):
            rows.setdefault(key, []).append((layer.name, r.text(layer, key,
                                                                    params=True)))
    if not r.weight_layers:
        return
    lr = [(name, read_rate(r, r.layers[name], "epsW", v)) for name, v in rows["epsW"]]
    set_setting(r, draft, "lr", "epsW", lr)
    set_setting(r, draft, "momentum", "momW",
                 [(n, read_number(r, r.layers[n], "momW", v)) for n, v in rows["momW"]])
    set_setting(r, draft, "weight_decay", "wc",
                 [(n, read_number(r, r.layers[n], "wc", v)) for n, v in rows["wc"]])
    schedules = sorted({v for _, v in rows["epsW"] if (_rate(v) or ("", False))[1]})
    for s in schedules:
        draft.setting_notes.append(f"epsW={s}: alexnetc starts at its base and divides "
                                   "the rate by 10 when validation error stops improving "
                                   "(lr_drop)")
    weights = dict(lr)
    biases = [(n, read_rate(r, r.layers[n], "epsB", v)) for n, v in rows["epsB"]]
    bias_note(r, draft, "epsB", "the biases' learning rate", "trains them at lr",
                   weights, biases)
    weights = {n: read_number(r, r.layers[n], "momW", v) for n, v in rows["momW"]}
    biases = [(n, read_number(r, r.layers[n], "momB", v)) for n, v in rows["momB"]]
    bias_note(r, draft, "momB", "the biases' momentum", "uses one momentum", weights,
                   biases)


def bias_note(r: Reader, draft: Draft, key: str, what: str, instead: str,
              weights: dict[str, float], biases: list[tuple[str, float]]) -> None:
    """A comment where a bias setting differs from its weights' (`epsB=0.02`)."""
    differ = [(n, b) for n, b in biases if b != weights[n]]
    if not differ:
        return
    pairs = {(weights[n], b) for n, b in differ}
    if len(differ) == len(biases) and len(pairs) == 1:
        (w, b), = pairs
        where = f"{number(b)} in every weight layer (their weights' {number(w)})"
    else:
        where = ", ".join(f"{n} {number(b)} (weights {number(weights[n])})" for n, b in differ)
    draft.setting_notes.append(f"{key} ({what}): {where}; alexnetc {instead}")


def set_setting(r: Reader, draft: Draft, key: str, source_key: str,
            values: list[tuple[str, float]]) -> None:
    for name, v in values:
        if v < 0 or (key == "momentum" and v >= 1):
            r.fail(INCONSISTENT, r.value_loc(r.layers[name], source_key, True),
                      f"`{source_key}` of layer '{name}' is {number(v)}",
                      "a momentum is in [0, 1)" if key == "momentum" else
                      f"{source_key} is at least 0")
    counts = Counter(v for _, v in values)
    common = counts.most_common(1)[0][0]
    draft.set("train", key, common)
    if len(counts) > 1:
        others = [f"{n} {number(v)}" for n, v in values if v != common]
        draft.setting_notes.append(f"{source_key} differs by layer: {key}={number(common)} "
                                   "(most layers'); " + ", ".join(others))


def read_rate(r: Reader, layer: Layer, key: str, text: str) -> float:
    """A learning rate, or its schedule's base (`dexp[base=0.01;tgtFactor=250;…]`)."""
    base = _rate(text)
    if base is not None:
        return read_number(r, layer, key, base[0])
    return r.fail(MALFORMED, r.value_loc(layer, key, True), f"`{key}` of layer "
                  f"'{layer.name}' is neither a number nor a schedule: {text!r}",
                  f"e.g. `{key}=0.01` or `{key}=exp[base=0.01;tgtFactor=100]`")


def read_number(r: Reader, layer: Layer, key: str, text: str) -> float:
    try:
        return finite(text)
    except ValueError:
        return r.fail(MALFORMED, r.value_loc(layer, key, True), f"`{key}` of layer "
                      f"'{layer.name}' must be a number, got {text!r}",
                      f"e.g. `{key}={'0.9' if key.startswith('mom') else '0.01'}`")


_SCHEDULE = re.compile(r"\s*(\w+)\s*\[\s*base\s*=\s*([^;\]\s]+)\s*(?:;[^\]]*)?\]\s*")


SCHEDULES = ("const", "linear", "exp", "dexp")  # layer.py's lrs_parsers


def _rate(text: str) -> tuple[str, bool] | None:
    """A learning rate's base and whether it changes while training: `0.01`,
    `const[base=0.01]`, `dexp[base=0.01;tgtFactor=250;numSteps=4]`."""
    m = _SCHEDULE.fullmatch(text)
    if m is not None:
        return (m.group(2), m.group(1) != "const") if m.group(1) in SCHEDULES else None
    return (text.strip(), False) if re.fullmatch(r"\s*[^\s\[\];]+\s*", text) else None
