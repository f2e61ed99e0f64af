"""Images per second per core that each data path feeds the training loop, in one run.

Rows, each through the DataLoader of `alexnetc train` with ONE worker process (one core: the
training process only receives the batches), on JPEG photos of ImageNet's typical size:
  folder, before   the folder path as it was: full-size decode, Pillow's bilinear resize,
                   then torch.stack of channel-last views (its code is kept below)
  folder, now      reduced-scale JPEG decode (Pillow's draft), torch's uint8 antialiased
                   resize, batches stacked straight into shared memory
  prepared         `alexnetc train --data PREPARED`: batches copied from the memory-mapped
                   256x256 array (in the page cache: a set that fits in memory)
and `alexnetc prepare` itself, with one and with every worker process. Each figure is the
median of --rounds rounds, the rows taking turns, so the machine's load falls on all alike.

    python benchmarks/bench_data.py [--images 600] [--sizes 500x375,1024x768] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from alexnetc.backends.train.data import FolderImages, Item
from alexnetc.backends.train.prepare import Options, prepare
from alexnetc.backends.train.prepared import PreparedImages, open_prepared
from alexnetc.backends.train.run import batches

SIDE = 256
BATCH = 128


def load_image_before(path: Path, side: int, channels: int) -> torch.Tensor:
    """`load_image` before reduced-scale decoding: what the folder path did."""
    with Image.open(path) as f:
        im = f.convert("L" if channels == 1 else "RGB")
    w, h = im.size
    scale = side / min(w, h)
    nw, nh = max(side, round(w * scale)), max(side, round(h * scale))
    im = im.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - side) // 2, (nh - side) // 2
    arr = np.asarray(im.crop((left, top, left + side, top + side)), dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    t = torch.from_numpy(arr.copy()).permute(2, 0, 1)
    if t.shape[0] != channels:
        t = t.expand(channels, -1, -1).contiguous()
    return t


class FolderBefore(Dataset[Item]):
    def __init__(self, files: Sequence[tuple[Path, int]]):
        self.files = list(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Item:
        path, label = self.files[i]
        return load_image_before(path, SIDE, 3), label, ""


def collate_before(items: list[Item]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([x for x, _, _ in items if x is not None])
    return images, torch.tensor([y for _, y, _ in items])


def photos(folder: Path, n: int, size: tuple[int, int]) -> Path:
    """n JPEGs (quality 90) of `size`: random crops of scikit-learn's two sample photos, as
    DATA/train/CLASS/ and a small DATA/val/CLASS/."""
    from sklearn.datasets import load_sample_images

    sources = load_sample_images().images  # 427 x 640 x 3 each
    rng = np.random.default_rng(0)
    for i in range(n + 8):
        src = sources[i % 2]
        top, left = int(rng.integers(0, 427 - 375)), int(rng.integers(0, 640 - 500))
        im = Image.fromarray(src[top:top + 375, left:left + 500])
        if rng.random() < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if im.size != size:
            im = im.resize(size, Image.Resampling.BICUBIC)
        split = "train" if i < n else "val"
        out = folder / split / f"c{i % 4}"
        out.mkdir(parents=True, exist_ok=True)
        im.save(out / f"{i}.jpg", quality=90)
    return folder


def loader_rate(stream: Iterable[Any]) -> float:
    """Images/s over a pass, the first batch (workers starting) not counted."""
    it = iter(stream)
    next(it)
    start = time.perf_counter()
    seen = 0
    for b in it:
        seen += len(b[1]) if isinstance(b, tuple) else b.labels.numel()
    return seen / (time.perf_counter() - start)


def read_rate(ds: PreparedImages, order: list[int]) -> float:
    """Images/s of reading batches in this process alone: what a worker's copying costs."""
    start = time.perf_counter()
    for i in range(0, len(order), BATCH):
        ds.__getitems__(order[i:i + BATCH])
    return len(order) / (time.perf_counter() - start)


def prepare_rate(root: Path, out: Path, workers: int) -> float:
    start = time.perf_counter()
    summary = prepare(Options(root, out, SIDE, workers=workers))
    return summary.converted / (time.perf_counter() - start)


def one_round(root: Path, tmp: Path, r: int, cpus: int) -> dict[str, float]:
    """Every row once, on the photos in root."""
    files = sorted((p, 0) for p in (root / "train").rglob("*.jpg"))
    order = torch.randperm(len(files), generator=torch.Generator().manual_seed(r)).tolist()
    steps = [order[i:i + BATCH] for i in range(0, len(order), BATCH)]
    out: dict[str, float] = {
        "prepare 1": prepare_rate(root, tmp / f"one-{r}", 1),
        f"prepare {cpus}": prepare_rate(root, tmp / f"all-{r}", cpus),
        "before": loader_rate(DataLoader(FolderBefore(files), batch_sampler=steps,
                                         num_workers=1, collate_fn=collate_before)),
        "now": loader_rate(batches(FolderImages(files, SIDE, 3), order, BATCH, 1)),
    }
    train = open_prepared(tmp / f"one-{r}", SIDE, 3).train
    assert isinstance(train, PreparedImages)
    many = order * 20  # a small array: read it over and over
    out["prepared"] = loader_rate(batches(train, many, BATCH, 1))
    out["read"] = read_rate(train, many)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--sizes", default="500x375,1024x768")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cpus = len(os.sched_getaffinity(0))
    torch.set_num_threads(1)
    print(f"{args.images} JPEGs per size, batch {BATCH}, side {SIDE}, {cpus} CPUs, median of "
          f"{args.rounds} rounds; torch {torch.__version__}, Python {sys.version.split()[0]}, "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| photos | folder, before | folder, now | now/before | prepared | prepared, "
          f"read alone | prepare, 1 process | prepare, {cpus} processes |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        with tempfile.TemporaryDirectory() as name:
            tmp = Path(name)
            root = photos(tmp / "data", args.images, (w, h))
            rounds = [one_round(root, tmp, r, cpus) for r in range(args.rounds)]
        m = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        print(f"| {w}x{h} JPEG | {m['before']:,.0f} | {m['now']:,.0f} | "
              f"{m['now'] / m['before']:.2f} | {m['prepared']:,.0f} | {m['read']:,.0f} | "
              f"{m['prepare 1']:,.0f} | {m[f'prepare {cpus}']:,.0f} |")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
