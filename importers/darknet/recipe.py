"""The [net] section's training settings as recipe lines where alexnetc has them, and
comments where they do not map (Darknet's schedules count iterations, its augmentation
differs)."""

from __future__ import annotations

import re

from alexnetc.compiler.records import Shape
from alexnetc.importers.darknet.cfg import Values
from alexnetc.importers.draft import Draft, number
from alexnetc.importers.ini import Section
from alexnetc.importers.source import Source

_POLICY_KEYS = {"steps": ("steps", "scales"), "step": ("step", "scale"), "poly": ("power",),
                "exp": ("gamma",), "sigmoid": ("gamma", "step"), "sgdr": ("sgdr_cycle",)}


_AUGMENT_KEYS = ("min_crop", "max_crop", "angle", "aspect", "saturation", "exposure", "hue",
                 "jitter", "mosaic", "mixup", "cutmix", "blur", "letter_box")


def net_recipe(v: Values, draft: Draft, source: Source) -> None:
    """The `train` line from [net]: Darknet's SGD is the paper's (its decay scales with the
    learning rate), so lr, momentum and decay map; its schedules and augmentation do not."""
    notes = draft.setting_notes
    batch = v.integer("batch", 1, 1)
    if batch > 1:
        draft.set("train", "batch", batch)
    else:
        commented = _commented_batch(source, v.section)
        notes.append("batch=1 is the cfg's testing setting"
                     + (f" (its commented-out training line: batch={commented})"
                        if commented else "") + "; alexnetc's default batch stays")
    defaults = []
    for key, setting, default in (("learning_rate", "lr", 0.001), ("momentum", "momentum", 0.9),
                                  ("decay", "weight_decay", 0.0001)):
        draft.set("train", setting, v.real(key, default))
        if not v.given(key):
            defaults.append(f"{key} {number(default)}")
    if defaults:
        notes.append("not in the cfg, Darknet's defaults: " + ", ".join(defaults))
    policy = v.text("policy", "constant")
    schedule = [f"{k}={v.text(k, '')}" for k in ("burn_in", "max_batches") if v.given(k)]
    if policy == "constant":
        draft.set("train", "lr_drop", 1)
        notes.append("policy=constant: the learning rate never drops (lr_drop=1)"
                     + (f"; {', '.join(schedule)} not converted" if schedule else ""))
    else:
        stated = [f"{k}={v.text(k, '')}" for k in _POLICY_KEYS.get(policy, ()) if v.given(k)]
        notes.append(f"policy={policy}" + (f" ({', '.join(stated + schedule)})"
                                           if stated or schedule else "")
                     + " has no alexnetc counterpart: alexnetc divides the learning rate by 10 "
                     "when the validation error stops improving")
    if v.integer("adam", 0):
        notes.append("adam=1: alexnetc trains with the paper's SGD with momentum")
    augment = [f"{k}={v.text(k, '')}" for k in _AUGMENT_KEYS if v.given(k)]
    if augment:
        notes.append(f"Darknet's augmentation ({', '.join(augment)}) is not alexnetc's, "
                     "whose own applies (crops, flips, PCA colour noise)")
    if v.integer("flip", 1) == 0:
        draft.set("augment", "flip", False)


def _commented_batch(source: Source, section: Section) -> int | None:
    """`# batch=128` in [net]: Darknet's cfgs keep their training batch as a comment."""
    for line in source.lines[section.loc.line:]:
        if line.strip().startswith("["):
            return None
        m = re.fullmatch(r"\s*[#;]\s*batch\s*=\s*([0-9]+)\s*", line)
        if m and int(m.group(1)) > 1:
            return int(m.group(1))
    return None


def crop_recipe(v: Values, image: Shape, crop: Shape, draft: Draft) -> None:
    """A first [crop] is alexnetc's augmentation: the network's input is the crop."""
    side = min(image.h, image.w)
    if side >= max(crop.h, crop.w):
        draft.set("augment", "resize", side)
    draft.set("augment", "flip", v.integer("flip", 0) != 0)
    draft.setting_notes.append(f"[crop] takes {crop.h}x{crop.w} crops of the {image.h}x"
                               f"{image.w} image [net] loads: the input is the crop, "
                               f"augment resize={side}")
    jitter = [f"{k}={v.text(k, '')}" for k in ("angle", "saturation", "exposure", "shift")
              if v.given(k) and v.real(k, 0) != {"saturation": 1, "exposure": 1}.get(k, 0)]
    if jitter:
        draft.setting_notes.append(f"[crop]'s {', '.join(jitter)} have no alexnetc "
                                   "counterpart")
    if not v.integer("noadjust", 0):
        draft.setting_notes.append("[crop] also maps pixels from [0, 1] to [−1, 1]; alexnetc "
                                   "subtracts the mean instead")
