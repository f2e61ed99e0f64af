"""Where training images come from: an ImageNet-layout folder, the embedded digits, or noise.

Every source yields the same thing: uint8 tensors C x S x S (the image scaled so its shorter
side is S, then centre-cropped, as the paper does) with an integer label. The random crops,
flips and colour noise happen later, per batch, on the training device (see `augment`), so
the DataLoader workers only decode and resize.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from alexnetc.backends.train.config import DIGITS, SYNTHETIC

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                  ".webp"}
BAD_IMAGE_LIMIT = 0.01  # more than this fraction of unreadable images is an error, not a warning
BAD_IMAGE_FLOOR = 10  # ... but this many are always tolerated


class DataError(Exception):
    """A data set the run cannot use; the message names the folder or file."""


class NoData(DataError):
    """The data folder named does not exist (a usage error at the command line)."""


Item = tuple[Tensor | None, int, str]  # (C x S x S uint8 or None if unreadable, label, problem)


@dataclass
class Batch:
    images: Tensor  # N x C x S x S uint8
    labels: Tensor  # N int64
    bad: list[str]  # "path: reason" for each unreadable image left out of this batch


@dataclass
class DataSet:
    """A training and a validation split with the class names, from one source."""

    train: Dataset[Item]
    val: Dataset[Item]
    classes: list[str]
    source: str  # what to print: "digits (sklearn)", a folder path, "synthetic"


def load_image(path: Path, side: int, channels: int) -> Tensor:
    """Decode, scale the shorter side to `side`, centre-crop to side x side: C x S x S uint8."""
    with Image.open(path) as f:
        im = f.convert("L" if channels == 1 else "RGB")
    w, h = im.size
    scale = side / min(w, h)
    nw, nh = max(side, round(w * scale)), max(side, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - side) // 2, (nh - side) // 2
    arr = np.asarray(im.crop((left, top, left + side, top + side)), dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]  # S x S x 1
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1)  # C x S x S
    if t.shape[0] != channels:  # grey source for a colour network
        t = t.expand(channels, -1, -1).contiguous()
    return t


class FolderImages(Dataset[Item]):
    """Images listed as (path, label); an unreadable file becomes (None, label, reason)."""

    def __init__(self, files: Sequence[tuple[Path, int]], side: int, channels: int):
        self.files = list(files)
        self.side = side
        self.channels = channels

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Item:
        path, label = self.files[i]
        try:
            return load_image(path, self.side, self.channels), label, ""
        except (OSError, ValueError, SyntaxError, UnidentifiedImageError,
                Image.DecompressionBombError) as e:
            return None, label, f"{path}: {e}"


class TensorImages(Dataset[Item]):
    """Images already in memory: P x C x S x S uint8 and N labels; image i is images[i % P].

    P < N lets synthetic data cycle through a small pool instead of holding N images.
    """

    def __init__(self, images: Tensor, labels: Tensor):
        self.images = images  # P x C x S x S
        self.labels = labels  # N

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> Item:
        return self.images[i % self.images.shape[0]], int(self.labels[i]), ""

    def batch(self, idx: Tensor) -> Batch:
        return Batch(self.images[idx % self.images.shape[0]], self.labels[idx], [])


def collate(items: list[Item]) -> Batch:
    """Stack the readable images; report the unreadable ones instead of failing the batch."""
    good = [(x, y) for x, y, _ in items if x is not None]
    bad = [problem for x, _, problem in items if x is None]
    if not good:
        return Batch(torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), bad)
    images = torch.stack([x for x, _ in good])  # N x C x S x S
    labels = torch.tensor([y for _, y in good], dtype=torch.long)  # N
    return Batch(images, labels, bad)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of epoch `epoch` (0-based)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def open_data(data: str, side: int, channels: int, classes: int) -> DataSet:
    """The data set named by `--data` (DIGITS, SYNTHETIC or a folder), checked against the spec."""
    if data == DIGITS:
        ds = digits(side, channels)
    elif data == SYNTHETIC:
        ds = synthetic(side, channels, classes)
    else:
        ds = image_folder(Path(data), side, channels)
    if len(ds.classes) != classes:
        raise DataError(f"the spec's last layer has {classes} outputs but {ds.source} has "
                        f"{len(ds.classes)} classes; change the spec's final FC to "
                        f"FC({len(ds.classes)})")
    return ds


def digits(side: int, channels: int) -> DataSet:
    """scikit-learn's 1,797 8x8 handwritten digits, scaled to side x side, grey → C channels.

    The split (1,437 train / 360 held out, stratified) is fixed and independent of the run's
    seed, so every run reports accuracy on the same held-out images.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    pixels = torch.from_numpy(d.images.astype(np.float32) * (255.0 / 16.0))  # N x 8 x 8
    big = torch.nn.functional.interpolate(pixels[:, None], size=(side, side), mode="bilinear",
                                          align_corners=False)  # N x 1 x S x S
    images = big.round().clamp(0, 255).to(torch.uint8).expand(-1, channels, -1, -1)
    labels = torch.from_numpy(d.target.astype(np.int64))  # N
    idx_train, idx_val = train_test_split(np.arange(len(labels)), test_size=0.2,
                                          stratify=d.target, random_state=0)
    it, iv = torch.from_numpy(idx_train), torch.from_numpy(idx_val)
    return DataSet(TensorImages(images[it].contiguous(), labels[it]),
                   TensorImages(images[iv].contiguous(), labels[iv]),
                   [str(c) for c in range(10)], "digits (scikit-learn, 1437 train / 360 held out)")


def synthetic(side: int, channels: int, classes: int, n: int = 2048) -> DataSet:
    """Uniform noise with arbitrary labels: measures throughput, learns nothing."""
    g = torch.Generator().manual_seed(0)
    pool = torch.randint(0, 256, (64, channels, side, side), dtype=torch.uint8, generator=g)
    labels = torch.arange(n) % classes  # n
    val = max(n // 8, 1)
    return DataSet(TensorImages(pool, labels), TensorImages(pool, labels[:val]),
                   [f"class{c}" for c in range(classes)], "synthetic")


def _class_folders(split: Path) -> list[Path]:
    return sorted(p for p in split.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                  and p.is_file())


def scan_folder(root: Path) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """(classes, train files, val files) of root/train/CLASS/* and root/val/CLASS/*."""
    if not root.exists():
        raise NoData(f"no such data folder: {root}")
    if not root.is_dir():
        raise DataError(f"{root} is not a folder (expected {root}/train/CLASS/*.jpg)")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataError(f"{root} has no {split}/ folder (expected {root}/{split}/CLASS/*.jpg)")
    class_dirs = _class_folders(root / "train")
    if not class_dirs:
        raise DataError(f"{root / 'train'} has no class folders (expected "
                        f"{root / 'train'}/CLASS/*.jpg)")
    classes = [p.name for p in class_dirs]
    index = {c: i for i, c in enumerate(classes)}
    train: list[tuple[Path, int]] = []
    for d in class_dirs:
        files = _images_in(d)
        if not files:
            raise DataError(f"{d} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        train += [(f, index[d.name]) for f in files]
    val: list[tuple[Path, int]] = []
    for d in _class_folders(root / "val"):
        if d.name not in index:
            raise DataError(f"{d} is a class that {root / 'train'} does not have")
        val += [(f, index[d.name]) for f in _images_in(d)]
    if not val:
        raise DataError(f"{root / 'val'} has no images (expected {root / 'val'}/CLASS/*.jpg)")
    return classes, train, val


def image_folder(root: Path, side: int, channels: int) -> DataSet:
    classes, train, val = scan_folder(root)
    splits = {"train": FolderImages(train, side, channels),
              "val": FolderImages(val, side, channels)}
    for split, images in splits.items():
        ensure_readable(images, root / split)
    return DataSet(splits["train"], splits["val"], classes, str(root))


def ensure_readable(images: FolderImages, folder: Path) -> None:
    """Raise DataError unless some image of a split decodes, before any training.

    A few unreadable images are skipped (BadImages), but a split with none would train on
    without learning, or validate on 0 images (an error of NaN) to the end. Reading stops at
    the first image that decodes: one image for usable data; every image only when none is."""
    first = ""
    for i in range(len(images)):
        image, _, problem = images[i]
        if image is not None:
            return
        first = first or problem
    raise DataError(f"{folder} has no readable image: none of its {len(images)} image files "
                    f"could be read (the first: {first})")


class BadImages:
    """Counts unreadable images; warns about each, and stops once there are too many."""

    def __init__(self, total: int, warn: Callable[[str], None] | None = None):
        self.limit = max(BAD_IMAGE_FLOOR, int(BAD_IMAGE_LIMIT * total))
        self.seen: dict[str, None] = {}
        self.warn = warn or (lambda msg: print(msg, file=sys.stderr))

    def add(self, problems: list[str]) -> None:
        for p in problems:
            if p in self.seen:
                continue
            self.seen[p] = None
            self.warn(f"warning: skipping unreadable image {p}")
        if len(self.seen) > self.limit:
            first = "\n  ".join(list(self.seen)[:5])
            raise DataError(f"{len(self.seen)} unreadable images (more than {self.limit}); "
                            f"the first:\n  {first}")

    @property
    def count(self) -> int:
        return len(self.seen)
