"""Where training images come from: an ImageNet-layout folder, a prepared set (`alexnetc
prepare`), the embedded digits, or noise.

Every source yields the same thing: uint8 tensors C x S x S (the image scaled so its shorter
side is S, then centre-cropped, as the paper does) with an integer label. The random crops,
flips and colour noise happen later, per batch, on the training device (see `augment`), so
the DataLoader workers only decode and resize, or, from a prepared set, only copy bytes.

A folder's validation images are either in class folders, `val/CLASS/*`, or loose in `val/`
with a labels file (LABEL_FILES): CSV rows `file,label`, or one label per line for the images
in file-name order, as ILSVRC's ground truth. A label is a class name (a folder of `train/`)
or, with ILSVRC's devkit map beside it (CLASS_MAPS), the number it gives a class.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset, get_worker_info

from alexnetc.backends.train.augment import PixelStats
from alexnetc.backends.train.config import DIGITS, SYNTHETIC

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff",
                  ".webp"}
BAD_IMAGE_LIMIT = 0.01  # more than this fraction of unreadable images is an error, not a warning
BAD_IMAGE_FLOOR = 10  # ... but this many are always tolerated
# What an image that cannot be decoded raises (Pillow's errors for truncated, corrupt or
# unknown files, and its refusal of decompression bombs).
READ_ERRORS = (OSError, ValueError, SyntaxError, UnidentifiedImageError,
               Image.DecompressionBombError)
# Labels of loose validation images, looked for in val/ and then in the data folder, in this
# order: `.csv` files hold `file,label` rows, the others one label per line.
LABEL_FILES = ("labels.csv", "val_labels.csv", "LOC_val_solution.csv", "labels.txt",
               "val_labels.txt", "ILSVRC2012_validation_ground_truth.txt")
# ILSVRC's maps from a class's number to its synset (the name of its train/ folder), looked
# for beside the labels file and in the data folder: the 2014+ devkit's text file
# (`n02119789 1 kit_fox` per line) and the 2012 devkit's MATLAB file.
CLASS_MAPS = ("map_clsloc.txt", "meta.mat")


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

    def pin_memory(self) -> Batch:
        """Called by a DataLoader with pin_memory: page-locked images copy to a GPU while
        the next step runs (`non_blocking`), instead of stalling it."""
        return Batch(self.images.pin_memory(), self.labels.pin_memory(), self.bad)


class Images(Dataset[Item]):
    """A map-style data set of Items that knows its length, as every source here does."""

    def __len__(self) -> int:
        raise NotImplementedError


@dataclass
class DataSet:
    """A training and a validation split with the class names, from one source."""

    train: Images
    val: Images
    classes: list[str]
    source: str  # what to print: "digits (sklearn)", a folder path, "synthetic"
    stats: PixelStats | None = None  # the training pixels' statistics, where the source has them


def scaled_size(width: int, height: int, side: int) -> tuple[int, int]:
    """(width, height) with the shorter side scaled to `side`."""
    scale = side / min(width, height)
    return max(side, round(width * scale)), max(side, round(height * scale))


def load_image(path: Path, side: int, channels: int) -> Tensor:
    """Decode, scale the shorter side to `side`, centre-crop to side x side: C x S x S uint8.

    A JPEG much larger than `side` is decoded at 1/2, 1/4 or 1/8 scale (Pillow's draft mode,
    the DCT's own reduction), never below the size it is scaled to. The antialiased bilinear
    scaling is torch's uint8 kernel: Pillow's filter, within one grey level, several times
    faster."""
    mode = "L" if channels == 1 else "RGB"
    with Image.open(path) as f:
        f.draft(mode, scaled_size(f.width, f.height, side))
        im = f if f.mode == mode else f.convert(mode)
        x = torch.from_numpy(np.array(im))  # H x W (x C)
        width, height = im.size
    x = (x[:, :, None] if x.ndim == 2 else x).permute(2, 0, 1)  # C x H x W, channels last
    nw, nh = scaled_size(width, height, side)
    if (nw, nh) != (width, height):
        x = F.interpolate(x[None], size=(nh, nw), mode="bilinear", antialias=True)[0]
    top, left = (nh - side) // 2, (nw - side) // 2
    x = x[:, top:top + side, left:left + side]  # C x S x S
    if x.shape[0] != channels:  # grey source for a colour network
        x = x.expand(channels, -1, -1)
    return x.contiguous()


class FolderImages(Images):
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
        except READ_ERRORS as e:
            return None, label, f"{path}: {e}"


class TensorImages(Images):
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


def collate(items: list[Item] | Batch) -> Batch:
    """Stack the readable images; report the unreadable ones instead of failing the batch.

    A Batch passes through: a data set that reads whole batches at once (`__getitems__`, as a
    prepared set does) has nothing to stack."""
    if isinstance(items, Batch):
        return items
    good = [(x, y) for x, y, _ in items if x is not None]
    bad = [problem for x, _, problem in items if x is None]
    if not good:
        return Batch(torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), bad)
    images = torch.stack([x for x, _ in good],
                         out=empty_batch(len(good), good[0][0].shape))  # N x C x S x S
    labels = torch.tensor([y for _, y in good], dtype=torch.long)  # N
    return Batch(images, labels, bad)


def empty_batch(n: int, shape: tuple[int, ...]) -> Tensor:
    """An uninitialised N x shape uint8 tensor; in a DataLoader worker, in shared memory from
    the start (as torch's default_collate does), so sending it to the training process costs
    no copy."""
    if get_worker_info() is None:
        return torch.empty((n, *shape), dtype=torch.uint8)
    blank = torch.empty(0, dtype=torch.uint8)
    storage = blank._typed_storage()._new_shared(n * math.prod(shape))
    return blank.new(storage).resize_(n, *shape)


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
        from alexnetc.backends.train import prepared

        root = Path(data)
        if prepared.is_prepared(root):
            ds = prepared.open_prepared(root, side, channels)
        else:
            ds = image_folder(root, side, channels)
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


def scan_folder(root: Path, labels: Path | None = None
                ) -> tuple[list[str], list[tuple[Path, int]], list[tuple[Path, int]]]:
    """(classes, train files, val files) of root/train/CLASS/* and root/val/: class folders,
    or loose images with a labels file (`labels`, else the first of LABEL_FILES found)."""
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
    val = _val_files(root, index, labels)
    if not val:
        raise DataError(f"{root / 'val'} has no images (expected {root / 'val'}/CLASS/*.jpg)")
    return classes, train, val


def _val_files(root: Path, index: dict[str, int], labels: Path | None
               ) -> list[tuple[Path, int]]:
    folder = root / "val"
    loose = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                   and p.is_file())
    class_dirs = _class_folders(folder)
    if loose and class_dirs:
        raise DataError(f"{folder} holds both class folders ({class_dirs[0].name}/, …) and "
                        f"loose images ({loose[0].name}, …); keep one layout")
    if not loose:
        if labels is not None:
            raise DataError(f"{folder} has no loose images for the labels in {labels}")
        val: list[tuple[Path, int]] = []
        for d in class_dirs:
            if d.name not in index:
                raise DataError(f"{d} is a class that {root / 'train'} does not have")
            val += [(f, index[d.name]) for f in _images_in(d)]
        return val
    found = labels or find_labels(root)
    if found is None:
        raise DataError(f"{folder} holds images but no labels file: add {folder}/labels.csv "
                        "(rows `file,label`) or ILSVRC2012_validation_ground_truth.txt (one "
                        "label per line, for the images in file-name order)")
    names = _ClassNames(index, found, root)
    if found.suffix.lower() == ".csv":
        return _csv_labels(found, loose, names)
    return _line_labels(found, loose, names)


def find_labels(root: Path) -> Path | None:
    """The labels file of loose validation images: the first of LABEL_FILES in val/, then in
    the data folder."""
    for folder in (root / "val", root):
        for name in LABEL_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


class _ClassNames:
    """Turns a label into a class index: a class name, or a number through ILSVRC's map."""

    def __init__(self, index: dict[str, int], labels: Path, root: Path):
        self.index = index
        self.labels = labels
        self.root = root
        self.numbers: dict[str, str] | None = None  # read on the first numeric label

    def __call__(self, label: str, where: str) -> int:
        if label in self.index:
            return self.index[label]
        if not label.isdigit():
            example = next(iter(self.index))
            raise DataError(f"{where}: '{label}' is not a class of {self.root / 'train'} "
                            f"(a label names a class folder, such as '{example}')")
        if self.numbers is None:
            self.numbers = self._map()
        name = self.numbers.get(str(int(label)))
        if name is None or name not in self.index:
            raise DataError(f"{where}: class number {label} is "
                            + ("not in the class map" if name is None else
                               f"'{name}', which is not a class of {self.root / 'train'}"))
        return self.index[name]

    def _map(self) -> dict[str, str]:
        for folder in dict.fromkeys((self.labels.parent, self.root)):
            for name in CLASS_MAPS:
                if (folder / name).is_file():
                    return read_class_map(folder / name)
        raise DataError(f"{self.labels} labels by number, which needs ILSVRC's class map: "
                        f"put the devkit's {' or '.join(CLASS_MAPS)} beside it, or write "
                        "class names (the folders of train/) instead of numbers")


def read_class_map(path: Path) -> dict[str, str]:
    """{number: synset} from map_clsloc.txt (`n02119789 1 kit_fox`) or the 2012 devkit's
    meta.mat (its leaf synsets, those with no children)."""
    if path.suffix == ".mat":
        return _mat_class_map(path)
    out: dict[str, str] = {}
    for n, line in enumerate(_text(path).splitlines(), 1):
        words = line.split()
        if not words:
            continue
        if len(words) < 2 or not words[1].isdigit():
            raise DataError(f"{path}:{n}: expected `SYNSET NUMBER [name]`, got '{line.strip()}'")
        out[str(int(words[1]))] = words[0]
    return out


def _text(path: Path) -> str:
    """A labels or class-map file's text, a UTF-8 BOM dropped; a DataError naming the file
    (and the first byte that is not UTF-8) where it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text (byte {e.start:,} is 0x{data[e.start]:02x}); "
                        "save it as UTF-8") from None


def _mat_class_map(path: Path) -> dict[str, str]:
    from scipy.io import loadmat

    try:
        synsets = loadmat(str(path), squeeze_me=True)["synsets"]
        leaves = [s for s in synsets if int(s["num_children"]) == 0]
        return {str(int(s["ILSVRC2012_ID"])): str(s["WNID"]) for s in leaves}
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise DataError(f"{path} is not ILSVRC's devkit meta.mat ({e})") from None


def _csv_labels(path: Path, images: list[Path], names: _ClassNames
                ) -> list[tuple[Path, int]]:
    """Rows `file,label`: the file with or without its suffix (Kaggle's LOC_val_solution.csv
    names `ILSVRC2012_val_00000001`), the label's first word (its `PredictionString` starts
    with the synset). A first row that names no image is a header."""
    by_name = {p.name: p for p in images} | {p.stem: p for p in images}
    labelled: dict[Path, int] = {}
    for n, row in enumerate(csv.reader(io.StringIO(_text(path), newline="")), 1):
        if not row or not "".join(row).strip():
            continue
        where = f"{path}:{n}"
        name = row[0].strip()
        image = by_name.get(name) or by_name.get(Path(name).name)
        if image is None and n == 1 and len(row) >= 2:
            continue  # a header row such as `file,label`
        if len(row) < 2 or not row[1].split():
            raise DataError(f"{where}: expected `file,label`, got '{','.join(row)}'")
        if image is None:
            raise DataError(f"{where}: no image '{name}' in {images[0].parent}")
        if image in labelled:
            raise DataError(f"{where}: '{name}' is labelled twice")
        labelled[image] = names(row[1].split()[0], where)
    missing = [p for p in images if p not in labelled]
    if missing:
        raise DataError(f"{len(missing)} images of {images[0].parent} have no label in {path} "
                        f"(the first: {missing[0].name})")
    return [(p, labelled[p]) for p in images]


def _line_labels(path: Path, images: list[Path], names: _ClassNames
                 ) -> list[tuple[Path, int]]:
    """One label per line (ILSVRC's ground truth), the n-th for the n-th image by name."""
    lines = [(n, line.strip()) for n, line in
             enumerate(_text(path).splitlines(), 1) if line.strip()]
    if len(lines) != len(images):
        raise DataError(f"{path} has {len(lines)} labels for the {len(images)} images of "
                        f"{images[0].parent} (one label per line, for the images in file-name "
                        "order)")
    return [(image, names(label.split()[0], f"{path}:{n}"))
            for image, (n, label) in zip(images, lines, strict=True)]


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
