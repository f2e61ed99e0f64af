"""A prepared data set: what `alexnetc prepare` writes and `train --data PREPARED` reads.

The paper's form of every image (shorter side scaled to S, centre-cropped, uint8) is stored
once, so that a training run's DataLoader workers only copy bytes. PREPARED/ holds:

  prepared.json     the header: side, channels, classes; per split its image count, the
                    sha256 of each chunk of images and of its labels; the images left out
                    and why; the training pixels' exact sums; and the header's own sha256.
                    Written last: a folder without it is no prepared set, whatever else it
                    holds.
  train.u8, val.u8  N x C x S x S uint8, image i at byte i·C·S·S; training memory-maps them
                    and never reads them whole
  train.labels, val.labels   N int32 little-endian class indices; -1 marks an image left
                    out (unreadable): its bytes are zeros and nothing reads them
  mean.npy          the per-pixel mean of the training images, C x S x S float32

Opening a set checks what is cheap before any training (the header's checksum, every file's
size, the labels' and the mean's checksums); `alexnetc prepare --verify` checks every chunk.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from alexnetc.backends.train.augment import PixelStats, stats_from_sums
from alexnetc.backends.train.data import (
    Batch,
    DataError,
    DataSet,
    Images,
    Item,
    empty_batch,
)

FORMAT = "alexnetc-prepared"
VERSION = 1
HEADER = "prepared.json"
MEAN = "mean.npy"
WORK = ".prepare"  # a conversion in progress: its plan, journal and partial arrays
PLAN = "plan.json"  # in WORK: what is being converted, and the command that continues it
SPLITS = ("train", "val")


def array_name(split: str) -> str:
    return f"{split}.u8"


def labels_name(split: str) -> str:
    return f"{split}.labels"


class PreparedError(DataError):
    """A prepared set that cannot be used; the message names the file and how to redo it."""


@dataclass(frozen=True)
class SplitInfo:
    """One split's array: its images in order, `chunk` to a checksum."""

    slots: int  # images in the array, those left out included
    kept: int  # images that training reads
    chunks: list[str]  # sha256 of each run of `chunk` images (the last may be shorter)
    labels_sha256: str


@dataclass(frozen=True)
class PixelSums:
    """Exact integer sums over every pixel of the kept training images."""

    pixels: int
    sum: list[int]  # C
    outer: list[list[int]]  # C x C, Σ x xᵀ

    def stats(self) -> PixelStats:
        return stats_from_sums(torch.tensor(self.sum, dtype=torch.float64),
                               torch.tensor(self.outer, dtype=torch.float64), self.pixels)


@dataclass(frozen=True)
class Header:
    source: str  # the image folder it was prepared from
    side: int
    channels: int
    chunk: int  # images per checksum
    classes: list[str]
    splits: dict[str, SplitInfo]
    sums: PixelSums
    mean_sha256: str
    left_out: list[str]  # "path: reason" of each unreadable image

    @property
    def image_bytes(self) -> int:
        return self.channels * self.side * self.side

    def to_json(self) -> str:
        """The header's text, with the derived statistics for people to read and the
        checksum of everything else."""
        stats = self.sums.stats()
        body: dict[str, Any] = {"format": FORMAT, "version": VERSION, **asdict(self),
                                "stats": {"mean": stats.mean.tolist(),
                                          "eigvals": stats.eigvals.tolist(),
                                          "eigvecs": stats.eigvecs.tolist()}}
        body["checksum"] = _digest(body)
        return json.dumps(body, indent=1) + "\n"

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Header:
        splits = {k: SplitInfo(**v) for k, v in raw["splits"].items()}
        if sorted(splits) != sorted(SPLITS):
            raise ValueError(f"splits {sorted(splits)}")
        return cls(raw["source"], int(raw["side"]), int(raw["channels"]), int(raw["chunk"]),
                   list(raw["classes"]), splits, PixelSums(**raw["sums"]), raw["mean_sha256"],
                   list(raw["left_out"]))

    def command(self, folder: Path) -> str:
        """The command that prepares this set again into `folder`, quoted for a shell."""
        from alexnetc.backends.train.prepare import Options  # it imports this module

        return Options(Path(self.source), folder, self.side, self.channels).command()


def _digest(body: dict[str, Any]) -> str:
    """sha256 of the header's content, whatever its spacing: edit a value, and it differs."""
    content = {k: v for k, v in body.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_prepared(folder: Path) -> bool:
    """Whether `folder` holds a prepared set, finished or not."""
    return (folder / HEADER).is_file() or (folder / WORK).is_dir()


def unfinished_command(folder: Path) -> str | None:
    """The command that continues an unfinished conversion into `folder`, from its plan."""
    try:
        return str(json.loads((folder / WORK / PLAN).read_text(encoding="utf-8"))["command"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_header(folder: Path) -> Header:
    """The header of a finished set, its checksum checked; PreparedError if it is not one."""
    path = folder / HEADER
    if not path.is_file():
        if not (folder / WORK).is_dir():
            raise PreparedError(f"{folder} is not a prepared set (no {HEADER})")
        command = unfinished_command(folder)
        raise PreparedError(f"{folder} is an unfinished `alexnetc prepare` (stopped before its "
                            "end); finish it with: " + (command or
                                                        f"alexnetc prepare DATA -o {folder}"))
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise PreparedError(f"cannot read {path}: {e.strerror}") from None
    except ValueError:
        raise PreparedError(f"{path} is corrupt (it is not JSON); prepare the set again") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise PreparedError(f"{path} is not the header of an `alexnetc prepare` set")
    if raw.get("version") != VERSION:
        raise PreparedError(f"{path} is version {raw.get('version')} of the prepared format; "
                            f"this alexnetc reads version {VERSION}: prepare the set again")
    if any(f.name not in raw for f in fields(Header)):
        raise PreparedError(f"{path} is corrupt (fields are missing); prepare the set again")
    if raw.get("checksum") != _digest(raw):  # so none of its values is to be trusted
        raise PreparedError(f"{path} does not match its checksum (it was edited or is "
                            f"corrupt); prepare the set again: alexnetc prepare DATA -o {folder}")
    try:
        return Header.from_json(raw)
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PreparedError(f"{path} is corrupt (fields are malformed); prepare the set "
                            "again") from None


def check_files(folder: Path, header: Header) -> None:
    """Cheap checks of the files the header describes: every size, and the checksums of the
    labels and the mean. The images' own checksums are `prepare --verify`'s."""
    again = f"; prepare the set again: {header.command(folder)}"
    for split, info in header.splits.items():
        for name, size in ((array_name(split), info.slots * header.image_bytes),
                           (labels_name(split), info.slots * 4)):
            path = folder / name
            try:
                actual = path.stat().st_size
            except OSError:
                raise PreparedError(f"{path} is missing{again}") from None
            if actual != size:
                raise PreparedError(f"{path} holds {actual:,} bytes, not the {size:,} its "
                                    f"header says (truncated?){again}")
        if file_sha256(folder / labels_name(split)) != info.labels_sha256:
            raise PreparedError(f"{folder / labels_name(split)} does not match its "
                                f"checksum{again}")
    if not (folder / MEAN).is_file() or file_sha256(folder / MEAN) != header.mean_sha256:
        raise PreparedError(f"{folder / MEAN} is missing or does not match its "
                            f"checksum{again}")


def open_prepared(folder: Path, side: int, channels: int) -> DataSet:
    """The prepared set in `folder` as a DataSet of `side` x `side` images with `channels`,
    checked cheaply first (`check_files`)."""
    header = read_header(folder)
    check_files(folder, header)
    if header.side != side:
        raise PreparedError(f"{folder} holds {header.side}x{header.side} images, but this "
                            f"spec trains on {side}x{side} (the side it scales images to "
                            f"before cropping); prepare it with --side {side}, or set "
                            f"`augment resize={header.side}` in the spec")
    if header.channels != channels:
        raise PreparedError(f"{folder} holds images of {header.channels} channel(s), but this "
                            f"spec's input has {channels}; prepare it with --channels "
                            f"{channels}")
    train, val = (PreparedImages.open(folder, split, header) for split in SPLITS)
    return DataSet(train, val, header.classes,
                   f"{folder} (prepared, {side}x{side})", header.sums.stats())


def mean_image(folder: Path) -> Tensor:
    """The per-pixel mean of the training images, C x S x S float32."""
    return torch.from_numpy(np.load(folder / MEAN))


class PreparedImages(Images):
    """One split of a prepared set, memory-mapped: images are read where they lie in the file
    and never all at once. Pickles without its bytes, so each DataLoader worker maps the
    file itself. Reads a whole batch at once (`__getitems__`), in file order, into shared
    memory when in a worker, so the batch reaches the training process without a copy."""

    def __init__(self, array: Path, shape: tuple[int, int, int], slots: int,
                 index: np.ndarray, labels: np.ndarray):
        self.array = array
        self.shape = shape  # C x S x S
        self.slots = slots
        self.index = index  # K int64: the slot in the array of each image read
        self.labels = labels  # K int64
        self._images: np.ndarray | None = None

    @classmethod
    def open(cls, folder: Path, split: str, header: Header) -> PreparedImages:
        info = header.splits[split]
        labels = np.fromfile(folder / labels_name(split), dtype="<i4").astype(np.int64)
        index = np.flatnonzero(labels >= 0)  # K
        if len(index) != info.kept or (labels >= len(header.classes)).any():
            raise PreparedError(f"{folder / labels_name(split)} does not agree with its "
                                f"header; prepare the set again: {header.command(folder)}")
        return cls(folder / array_name(split), (header.channels, header.side, header.side),
                   info.slots, index, labels[index])

    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = np.memmap(self.array, dtype=np.uint8, mode="r",
                                     shape=(self.slots, *self.shape))
        return self._images

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_images": None}

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Item:
        image = np.array(self.images()[self.index[i]])  # C x S x S
        return torch.from_numpy(image), int(self.labels[i]), ""

    def __getitems__(self, indices: list[int]) -> Batch:
        idx = np.asarray(indices, dtype=np.int64)  # N
        slots = self.index[idx]  # N
        out = empty_batch(len(slots), self.shape)  # N x C x S x S
        dst, src = out.numpy(), self.images()
        for j in np.argsort(slots, kind="stable"):  # in file order: read-ahead helps
            dst[j] = src[slots[j]]
        return Batch(out, torch.from_numpy(self.labels[idx]), [])
