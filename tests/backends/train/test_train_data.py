"""Reading image folders (good, bad and empty), the embedded digits, and batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnetc.backends.train.data import (
    BadImages,
    DataError,
    FolderImages,
    TensorImages,
    collate,
    digits,
    epoch_order,
    image_folder,
    load_image,
    open_data,
    scan_folder,
)
from alexnetc.backends.train.run import batches


def write_image(path: Path, size: tuple[int, int] = (20, 14), mode: str = "RGB",
                value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour: int | tuple[int, ...] = value if mode == "L" else (value,) * len(mode)
    Image.new(mode, size, colour).save(path)


def make_folder(root: Path, per_class: int = 3) -> Path:
    for split in ("train", "val"):
        for i, cls in enumerate(("cat", "dog")):
            for j in range(per_class):
                write_image(root / split / cls / f"{j}.png", value=40 + 150 * i)
    return root


def test_scan_finds_classes_and_files(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data")
    write_image(root / "train" / "dog" / "nested" / "x.JPG", mode="L")  # any depth, any case
    (root / "train" / "dog" / "notes.txt").write_text("not an image")
    classes, train, val = scan_folder(root)
    assert classes == ["cat", "dog"]
    assert len(train) == 7 and len(val) == 6
    assert sum(label for _, label in train) == 4


@pytest.mark.parametrize("setup, message", [
    (lambda r: None, "no such data folder"),
    (lambda r: r.mkdir(), "has no train/ folder"),
    (lambda r: ((r / "train").mkdir(parents=True), (r / "val").mkdir()),
     "has no class folders"),
    (lambda r: ((r / "train" / "cat").mkdir(parents=True), (r / "val").mkdir()),
     r"train/cat has no images"),
])
def test_unusable_folders_are_clear_errors(tmp_path: Path, setup, message: str) -> None:
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(DataError, match=message):
        scan_folder(root)


def test_val_class_unknown_to_train(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data")
    write_image(root / "val" / "bird" / "0.png")
    with pytest.raises(DataError, match="val/bird is a class that"):
        scan_folder(root)


def test_empty_val(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data")
    for p in (root / "val").rglob("*.png"):
        p.unlink()
    with pytest.raises(DataError, match="val has no images"):
        scan_folder(root)


def test_load_image_scales_shorter_side_and_centre_crops(tmp_path: Path) -> None:
    arr = np.zeros((10, 30, 3), dtype=np.uint8)
    arr[:, 10:20] = 255  # a white band in the middle third of a wide image
    Image.fromarray(arr).save(tmp_path / "wide.png")
    x = load_image(tmp_path / "wide.png", 10, 3)
    assert x.shape == (3, 10, 10) and x.dtype == torch.uint8
    assert x.min() == 255  # the centre crop is exactly the band


@pytest.mark.parametrize("mode, channels", [("L", 3), ("RGBA", 3), ("RGB", 1), ("P", 3)])
def test_load_image_converts_modes(tmp_path: Path, mode: str, channels: int) -> None:
    write_image(tmp_path / "i.png", (7, 9), "RGB" if mode == "P" else mode)
    if mode == "P":
        Image.open(tmp_path / "i.png").convert("P").save(tmp_path / "i.png")
    assert load_image(tmp_path / "i.png", 6, channels).shape == (channels, 6, 6)


def test_unreadable_images_are_skipped_with_a_warning_and_counted(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data", per_class=6)
    (root / "train" / "cat" / "empty.jpg").write_bytes(b"")
    (root / "train" / "dog" / "text.png").write_text("hello")
    good = root / "train" / "dog" / "0.png"
    (root / "train" / "dog" / "cut.png").write_bytes(good.read_bytes()[:40])
    ds = image_folder(root, 8, 3)
    messages: list[str] = []
    bad = BadImages(len(ds.train), messages.append)
    seen = 0
    for b in batches(ds.train, range(len(ds.train)), 4, workers=1):
        bad.add(b.bad)
        seen += b.labels.numel()
        assert b.images.shape[1:] == (3, 8, 8)
    assert seen == 12 and bad.count == 3
    assert all(m.startswith("warning: skipping unreadable image") for m in messages)
    for name in ("cut.png", "empty.jpg", "text.png"):
        assert sum(f"/{name}: " in m for m in messages) == 1, (name, messages)


def test_too_many_unreadable_images_stop_the_run(tmp_path: Path) -> None:
    files = []
    for i in range(12):
        (tmp_path / f"{i}.jpg").write_bytes(b"junk")
        files.append((tmp_path / f"{i}.jpg", 0))
    ds = FolderImages(files, 8, 3)
    bad = BadImages(len(ds), lambda m: None)
    with pytest.raises(DataError, match=r"12 unreadable images \(more than 10\)"):
        bad.add(collate([ds[i] for i in range(12)]).bad)


def test_collate_of_only_bad_items_is_empty() -> None:
    b = collate([(None, 0, "a: bad"), (None, 1, "b: bad")])
    assert b.images.numel() == 0 and b.labels.numel() == 0 and b.bad == ["a: bad", "b: bad"]


def test_digits_are_resized_replicated_and_split() -> None:
    ds = digits(20, 3)
    assert isinstance(ds.train, TensorImages) and isinstance(ds.val, TensorImages)
    x, _, problem = ds.train[0]
    assert x is not None and x.shape == (3, 20, 20) and x.dtype == torch.uint8
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])
    assert len(ds.train) == 1437 and len(ds.val) == 360
    assert ds.classes == [str(i) for i in range(10)] and problem == ""
    counts = torch.bincount(ds.val.labels, minlength=10)
    assert counts.min() >= 35  # stratified
    assert int(ds.train.images.max()) == 255


def test_class_count_must_match_the_spec(tmp_path: Path) -> None:
    root = make_folder(tmp_path / "data")
    with pytest.raises(DataError, match=r"has 1000 outputs but .* has 2 classes"):
        open_data(str(root), 8, 3, 1000)


def test_synthetic_has_the_specs_classes() -> None:
    ds = open_data("synthetic", 8, 3, 7)
    assert len(ds.classes) == 7


def test_epoch_order_is_a_seeded_permutation() -> None:
    a = epoch_order(100, seed=1, epoch=0)
    assert sorted(a) == list(range(100))
    assert a == epoch_order(100, seed=1, epoch=0)
    assert a != epoch_order(100, seed=1, epoch=1) and a != epoch_order(100, seed=2, epoch=0)


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_split_with_no_readable_image_is_an_error_naming_it(tmp_path: Path,
                                                              split: str) -> None:
    """Found before training: a val split of none would validate on 0 images (an error of
    NaN) to the end, a train split of none would never learn."""
    root = make_folder(tmp_path / "data")
    for p in (root / split).rglob("*.png"):
        p.write_bytes(b"not an image")
    with pytest.raises(DataError, match=rf"{root / split} has no readable image: none of its "
                       rf"6 image files could be read \(the first: {root / split / 'cat'}/0"):
        image_folder(root, 8, 3)


def test_one_readable_image_is_enough_to_start(tmp_path: Path) -> None:
    """The rest are BadImages' to count and warn about, as they are met."""
    root = make_folder(tmp_path / "data")
    for p in sorted((root / "val").rglob("*.png"))[:-1]:
        p.write_bytes(b"not an image")
    assert len(image_folder(root, 8, 3).val) == 6
