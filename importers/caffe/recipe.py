"""What a Caffe net and its solver say about training, as recipe lines where alexnetc has the
setting and as comments where it does not: the TRAIN data layer (batch, mirroring), the
fillers (the init line), per-parameter multipliers, and the solver's lr, momentum, decay and
lr policy.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from alexnetc.importers.caffe.fields import (
    Problem,
    boolean,
    dec,
    decimal,
    enum,
    opt,
    positive,
    signed,
    single,
    string,
    whole,
)
from alexnetc.importers.caffe.net import Layer
from alexnetc.importers.draft import Draft
from alexnetc.importers.prototxt import Field, Message
from alexnetc.importers.source import UNSUPPORTED, Source


@dataclass
class Fillers:
    """What the fillers of the Convolution and InnerProduct layers state: the init line's
    std and bias (the commonest), and the filler types alexnetc cannot draw, with layers."""

    std: Decimal | None = None
    bias: Decimal | None = None
    other: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class Recipe:
    """What the net itself says about training: its TRAIN data layer, its multipliers."""

    batch: int | None = None
    flip: bool | None = None
    scale: str | None = None
    data_layer: bool = False  # a TRAIN data layer states the augmentation
    multipliers: dict[str, list[str]] = field(default_factory=dict)  # pattern → layers
    shared: dict[str, str] = field(default_factory=dict)  # param name → layer


def data_recipe(recipe: Recipe, layer: Layer) -> None:
    """The TRAIN data layer's batch size, mirroring and pixel scale (in transform_param,
    or the older data_param fields it replaced)."""
    recipe.data_layer = True
    recipe.flip = False  # Caffe's default
    params = [layer.msg.message(k) for k in ("transform_param", "data_param",
                                              "image_data_param", "window_data_param",
                                              "memory_data_param", "hdf5_data_param")]
    for p in reversed([p for p in params if p is not None]):
        if p.get("batch_size") is not None:
            recipe.batch = opt(p, "batch_size", positive, 1)
        if p.get("mirror") is not None:
            recipe.flip = opt(p, "mirror", boolean, False)
        scale = opt(p, "scale", decimal, Decimal(1))
        if scale != 1:
            recipe.scale = dec(scale)


def multipliers(recipe: Recipe, layer: Layer, blobs: int) -> None:
    """Caffe's lr_mult/decay_mult (V1: blobs_lr/weight_decay) per parameter blob, and
    weight sharing by param name (which changes what is counted: not expressible)."""
    specs = layer.msg.messages("param")
    if specs:
        pairs = [(opt(s, "lr_mult", decimal, Decimal(1)),
                  opt(s, "decay_mult", decimal, Decimal(1))) for s in specs]
        for s in specs:
            _shared(recipe, layer, s.get("name"))
    else:
        lrs = [decimal(f) for f in layer.msg.all("blobs_lr")]
        decays = [decimal(f) for f in layer.msg.all("weight_decay")]
        pairs = [(lrs[i] if i < len(lrs) else Decimal(1),
                  decays[i] if i < len(decays) else Decimal(1))
                 for i in range(max(len(lrs), len(decays)))]
        for f in layer.msg.all("param"):
            _shared(recipe, layer, f)
    what = ("weights", "biases")
    text = "; ".join(f"{what[i]} lr ×{dec(lr)}, decay ×{dec(decay)}"
                     for i, (lr, decay) in enumerate(pairs[:blobs]))
    if text:
        recipe.multipliers.setdefault(text, []).append(layer.name)


def _shared(recipe: Recipe, layer: Layer, f: Field | None) -> None:
    name = string(f) if f is not None else ""
    if not name:
        return
    shared = recipe.shared
    if name in shared:
        raise Problem(UNSUPPORTED, f.loc if f else layer.loc, f"'{layer.name}' shares its "
                      f"parameter \"{name}\" with '{shared[name]}'", "alexnetc's layers "
                      "never share weights")
    shared[name] = layer.name


def init_keywords(fillers: Fillers, p: Message) -> list[tuple[str, str]]:
    """`bias=false`, and `std=`/`bias=` where the fillers differ from the init line."""
    weight, bias = p.message("weight_filler"), p.message("bias_filler")
    std = _gaussian_std(weight) if weight is not None else None
    out = [("std", dec(std))] if std is not None and std != fillers.std else []
    if not opt(p, "bias_term", boolean, True):
        return [("bias", "false"), *out]
    value = _constant(bias) if bias is not None else \
        Decimal(0) if weight is not None else None  # Caffe's default bias filler
    if value is not None and value != fillers.bias:
        out.insert(0, ("bias", dec(value)))
    return out


def _gaussian_std(filler: Message) -> Decimal | None:
    if (opt(filler, "type", string, "constant") == "gaussian"
            and opt(filler, "mean", decimal, Decimal(0)) == 0
            and opt(filler, "sparse", signed, -1) == -1):
        return opt(filler, "std", decimal, Decimal(1))
    return None


def _constant(filler: Message) -> Decimal | None:
    if opt(filler, "type", string, "constant") != "constant":
        return None
    return opt(filler, "value", decimal, Decimal(0))


def read_fillers(layers: list[Layer]) -> Fillers:
    """The init line: the commonest gaussian std and constant bias the Convolution and
    InnerProduct layers state; filler types alexnetc cannot draw, with their layers."""
    stds: Counter[Decimal] = Counter()
    biases: Counter[Decimal] = Counter()
    other: dict[str, list[str]] = {}
    for layer in layers:
        p = layer.msg.message("convolution_param" if layer.type == "Convolution" else
                              "inner_product_param" if layer.type == "InnerProduct" else "")
        if p is None:
            continue
        try:
            weight, bias = p.message("weight_filler"), p.message("bias_filler")
            std = _gaussian_std(weight) if weight is not None else None
            if std is not None:
                stds[std] += 1
            elif weight is not None:
                other.setdefault(opt(weight, "type", string, "constant"), []).append(layer.name)
            value = _constant(bias) if bias is not None else \
                Decimal(0) if weight is not None else None
            if value is not None and opt(p, "bias_term", boolean, True):
                biases[value] += 1
        except Problem:
            continue  # reported where the layer converts
    return Fillers(_commonest(stds), _commonest(biases), other)


def _commonest(counts: Counter[Decimal]) -> Decimal | None:
    return counts.most_common(1)[0][0] if counts else None


def read_solver(source: Source, msg: Message, draft: Draft, batch: int | None) -> None:
    """base_lr, momentum, weight_decay and the lr policy onto the train line; what does not
    map (Caffe's iteration-counted schedule, other solvers) as comments above it."""
    notes = draft.setting_notes
    name = Path(source.path).name
    kind = _solver_type(msg)
    if kind != "SGD":
        notes.append(f"{name}: Caffe's {kind} solver has no counterpart: alexnetc trains with "
                     "the paper's SGD with momentum")
    iter_size = opt(msg, "iter_size", positive, 1)
    if batch is not None and iter_size > 1:
        draft.set("train", "batch", batch * iter_size)
        notes.append(f"batch: Caffe accumulates iter_size {iter_size} batches of {batch} per "
                     "step")
    for key, setting in (("base_lr", "lr"), ("momentum", "momentum"),
                         ("weight_decay", "weight_decay")):
        f = single(msg, key)
        if f is not None:
            draft.set("train", setting, plain(decimal(f)))
    _policy(msg, draft, name)
    seed = opt(msg, "random_seed", signed, -1)
    if seed >= 0:
        draft.set("train", "seed", seed)
    regularisation = opt(msg, "regularization_type", string, "L2")
    if regularisation != "L2":
        notes.append(f"{name}: regularization_type {regularisation}: alexnetc's weight decay "
                     "is L2")
    clip = opt(msg, "clip_gradients", decimal, Decimal(-1))
    if clip >= 0:
        notes.append(f"{name}: clip_gradients {dec(clip)}: alexnetc does not clip gradients")
    max_iter = single(msg, "max_iter")
    if max_iter is not None:
        per = f" of {batch * iter_size} images" if batch else ""
        notes.append(f"{name}: Caffe stops after max_iter {whole(max_iter)} iterations{per}; "
                     "alexnetc counts epochs")


def _solver_type(msg: Message) -> str:
    named = opt(msg, "type", string, "")
    if named:
        return named
    old = opt(msg, "solver_type", enum("SGD", "NESTEROV", "ADAGRAD", "RMSPROP", "ADADELTA",
                                         "ADAM"), "SGD")
    return {"NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
            "ADADELTA": "AdaDelta", "ADAM": "Adam"}.get(old, "SGD")


def _policy(msg: Message, draft: Draft, name: str) -> None:
    policy = opt(msg, "lr_policy", string, "")
    gamma = opt(msg, "gamma", decimal, None)
    notes = draft.setting_notes
    if policy == "fixed":
        draft.set("train", "lr_drop", 1)
        notes.append(f"{name}: lr_policy \"fixed\": the learning rate never drops (lr_drop=1)")
    elif policy in ("step", "multistep") and gamma is not None:
        draft.set("train", "lr_drop", plain(gamma))
        steps = [str(whole(f)) for f in msg.all("stepvalue")]
        stepsize = opt(msg, "stepsize", positive, 0)
        when = (f"every {stepsize} iterations" if policy == "step" and stepsize else
                f"at iterations {', '.join(steps)}" if steps else "on a fixed schedule")
        notes.append(f"{name}: Caffe multiplies the learning rate by gamma {dec(gamma)} {when} "
                     f"(lr_policy \"{policy}\"); alexnetc by lr_drop when the validation error "
                     "stops improving")
    elif policy:
        stated = ", ".join(f"{k} {dec(decimal(f))}" for k in ("gamma", "power", "stepsize")
                           if (f := single(msg, k)) is not None)
        notes.append(f"{name}: lr_policy \"{policy}\"" + (f" ({stated})" if stated else "")
                     + " has no counterpart: alexnetc multiplies the learning rate by lr_drop "
                     "when the validation error stops improving")


def plain(value: Decimal) -> float | int:
    return int(value) if value == value.to_integral_value() else float(value)


def recipe_lines(draft: Draft, r: Recipe, f: Fillers) -> None:
    """The batch, augmentation and init lines the net's data layer and fillers state, and
    notes on what does not map (pixel scaling, multipliers, other fillers)."""
    if r.batch is not None:
        draft.set("train", "batch", r.batch)
    if r.data_layer:
        draft.set("augment", "pca", 0)
        draft.setting_notes.append("Caffe's data layer adds no PCA colour noise: pca=0"
                                   + ("" if r.flip else "; it does not mirror: flip=false"))
        if not r.flip:
            draft.set("augment", "flip", False)
    if r.scale is not None:
        draft.setting_notes.append(f"Caffe scales the pixels by {r.scale} (transform_param); "
                                   "alexnetc subtracts the per-channel mean")
    _multiplier_notes(draft, r.multipliers)
    if f.std is not None:
        draft.set("init", "std", plain(f.std))
    if f.bias is not None:
        draft.set("init", "bias", plain(f.bias))
    for kind, names in f.other.items():
        shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
        draft.setting_notes.append(f"Caffe's {kind} weight filler ({shown}) has no "
                                   "counterpart: alexnetc draws normal weights (the init "
                                   "line's std)")

def _multiplier_notes(draft: Draft, patterns: dict[str, list[str]]) -> None:
    if not patterns:
        return
    parts = []
    for text, names in patterns.items():
        where = "every conv and FC layer" if len(patterns) == 1 else \
            ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
        parts.append(f"{text} on {where}")
    draft.setting_notes.append("Caffe's per-parameter multipliers have no counterpart (alexnetc "
                               "applies one lr and weight_decay to every parameter): "
                               + "; ".join(parts))
