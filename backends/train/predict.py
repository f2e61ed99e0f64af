"""Top-k labels for single images, as in the paper's Figure 4."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import UnidentifiedImageError

from alexnetc.backends.train.data import IMAGE_SUFFIXES, DataError, load_image
from alexnetc.backends.train.run import LoadedRun
from alexnetc.filekind import special_file


@dataclass(frozen=True)
class Prediction:
    path: Path
    top: list[tuple[str, float]]  # (label, probability), most probable first


def image_files(paths: list[Path]) -> list[Path]:
    """The images to predict: files as given, and for each folder the image files in it and
    its subfolders, by name. A folder without any, or a named pipe, is a DataError."""
    out: list[Path] = []
    for path in paths:
        if not path.is_dir():
            out.append(image_file(path))
            continue
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                       and p.is_file())
        if not found:
            raise DataError(f"{path} is a folder with no images in it (looked for "
                            f"{', '.join(sorted(IMAGE_SUFFIXES))})")
        out.extend(found)
    return out


def image_file(path: Path) -> Path:
    """`path`, unless it is no image file to open: a DataError naming what it is instead."""
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an image")
    if not path.exists():
        raise DataError(f"no such image: {path}")
    kind = special_file(path)
    if kind is not None:
        raise DataError(f"{path} is {kind}, not an image file")
    return path


@torch.no_grad()
def predict(run: LoadedRun, paths: list[Path], k: int = 5, ten_crop: bool = False
            ) -> list[Prediction]:
    """The k most probable labels of each image (10-crop average of softmax if asked)."""
    out: list[Prediction] = []
    for path in paths:
        try:
            image = load_image(image_file(path), run.side,
                               run.net.input.c)[None]  # 1 x C x S x S
        except (OSError, ValueError, SyntaxError, UnidentifiedImageError) as e:
            raise DataError(f"cannot read image {path}: {e}") from None
        if ten_crop:
            crops = run.augment.ten_crop(image).flatten(0, 1)  # 10 x C x h x w
            probs = run.model(crops).float().softmax(1).mean(0)  # K
        else:
            probs = run.model(run.augment.centre(image)).float().softmax(1)[0]  # K
        p, idx = probs.topk(min(k, probs.numel()))
        out.append(Prediction(path, [(run.classes[int(i)], float(q))
                                     for q, i in zip(p.cpu(), idx.cpu(), strict=True)]))
    return out
