"""`prepare`: the same images as the folder path, exact statistics, unreadable images left
out, resuming after an interruption or a full disk with the bytes of an uninterrupted run."""

from __future__ import annotations

import errno
import os
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnetc.atomic import WriteFailed
from alexnetc.backends.train import prepare as prep
from alexnetc.backends.train.augment import pixel_stats
from alexnetc.backends.train.data import DataError, FolderImages, collate, scan_folder
from alexnetc.backends.train.prepare import Conflict, Options, Quiet, prepare
from alexnetc.backends.train.prepared import (
    HEADER,
    WORK,
    PreparedError,
    PreparedImages,
    mean_image,
    open_prepared,
    read_header,
)

from helpers import fill

SIDE = 12


def make_data(root: Path, per_class: int = 6, val: int = 2, classes: int = 3,
              seed: int = 0) -> Path:
    """Small photos of random sizes and aspect ratios, JPEG and PNG, colour and grey."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("val", val)):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                h, w = int(rng.integers(10, 40)), int(rng.integers(10, 40))
                arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                arr[..., c] //= 2  # something for a network to tell the classes by
                im = Image.fromarray(arr).convert("L" if i == 3 else "RGB")
                im.save(folder / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_prepared_images_are_the_folder_paths_images(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data")
    (data / "train" / "class1" / "broken.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    quiet = Quiet()
    summary = prepare(Options(data, tmp_path / "p", SIDE, workers=2), quiet)
    assert summary.converted == 25 and summary.before == 0 and not summary.already
    broken = data / "train" / "class1" / "broken.jpg"
    assert summary.header.left_out == [f"{broken}: cannot identify image file '{broken}'"]
    assert len(quiet.warnings) == 1 and "broken.jpg" in quiet.warnings[0]
    ds = open_prepared(tmp_path / "p", SIDE, 3)
    classes, train, val = scan_folder(data)
    assert ds.classes == classes
    for split, files in (("train", train), ("val", val)):
        folder = FolderImages([f for f in files if f[0].name != "broken.jpg"], SIDE, 3)
        prepared = getattr(ds, split)
        assert len(prepared) == len(folder)
        for i in range(len(folder)):
            x, y, _ = folder[i]
            px, py, problem = prepared[i]
            assert x is not None and torch.equal(px, x) and py == y and problem == ""


def test_statistics_are_exactly_pixel_stats_of_the_training_images(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data")
    prepare(Options(data, tmp_path / "p", SIDE, chunk=4))
    ds = open_prepared(tmp_path / "p", SIDE, 3)
    train = ds.train
    assert isinstance(train, PreparedImages)
    images = collate(train.__getitems__(list(range(len(train))))).images  # N x C x S x S
    expected = pixel_stats([images[:7], images[7:]])
    assert ds.stats is not None
    for name in ("mean", "eigvals", "eigvecs"):
        assert torch.equal(getattr(ds.stats, name), getattr(expected, name)), name
    torch.testing.assert_close(mean_image(tmp_path / "p"), images.double().mean(0).float())
    assert len(ds.val) == 6  # the statistics are the training split's alone


def test_chunks_and_workers_change_no_byte_of_the_arrays(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data")
    prepare(Options(data, tmp_path / "a", SIDE))
    prepare(Options(data, tmp_path / "b", SIDE, workers=2, chunk=5))
    a, b = files_of(tmp_path / "a"), files_of(tmp_path / "b")
    for name in ("train.u8", "val.u8", "train.labels", "val.labels", "mean.npy"):
        assert a[name] == b[name], name
    assert len(read_header(tmp_path / "b").splits["train"].chunks) == 4  # 18 images in 5s


class StopAfter(Quiet):
    """Stops the conversion, as Ctrl-C would, after `n` chunks."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def advance(self, images: int) -> None:
        self.n -= 1
        if self.n == 0:
            raise KeyboardInterrupt


def test_an_interrupted_conversion_continues_to_the_same_bytes(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data")
    prepare(Options(data, tmp_path / "whole", SIDE, chunk=2))
    out = tmp_path / "p"
    with pytest.raises(KeyboardInterrupt):
        prepare(Options(data, out, SIDE, chunk=2), StopAfter(4))
    assert not (out / HEADER).exists() and (out / WORK / "journal").exists()
    with pytest.raises(DataError, match="unfinished `alexnetc prepare`.*finish it with: "
                       r"alexnetc prepare .* --side 12 --chunk 2"):
        open_prepared(out, SIDE, 3)
    # A torn last record (a kill in mid-append) and a lost per-pixel sum change nothing.
    with open(out / WORK / "journal", "a") as f:
        f.write('{"split":"train","chunk":7,"ima')
    (out / WORK / prep.PIXEL_SUM).unlink()
    with pytest.raises(KeyboardInterrupt):
        prepare(Options(data, out, SIDE), StopAfter(3))  # the plan's --chunk 2 is kept
    summary = prepare(Options(data, out, SIDE))
    assert summary.before == 14 and summary.converted == 10
    assert files_of(out) == files_of(tmp_path / "whole")
    assert not (out / WORK).exists()


def test_a_journalled_chunk_whose_bytes_changed_is_converted_again(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data")
    prepare(Options(data, tmp_path / "whole", SIDE, chunk=2))
    out = tmp_path / "p"
    with pytest.raises(KeyboardInterrupt):
        prepare(Options(data, out, SIDE, chunk=2), StopAfter(5))
    (out / WORK / prep.PIXEL_SUM).unlink()  # so the rerun reads chunks back from the array
    with open(out / WORK / "train.u8", "r+b") as f:
        f.seek(3)
        f.write(b"\x01\x02")
    summary = prepare(Options(data, out, SIDE))
    assert summary.converted == 16  # the 14 images of the chunks left, and chunk 0's 2 again
    assert files_of(out) == files_of(tmp_path / "whole")


def test_too_many_unreadable_images_are_an_error(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data")
    for i in range(11):
        (data / "train" / "class0" / f"junk{i}.png").write_text("not a PNG")
    with pytest.raises(DataError, match=r"11 unreadable images \(more than 10\)"):
        prepare(Options(data, tmp_path / "p", SIDE))


def test_a_split_with_no_readable_image_is_an_error(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data", val=1, classes=2)
    for p in (data / "val").rglob("*.png"):
        p.write_bytes(b"junk")
    with pytest.raises(DataError, match="val has no readable image"):
        prepare(Options(data, tmp_path / "p", SIDE))


def test_a_finished_set_is_left_alone_and_other_options_are_a_conflict(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data")
    out = tmp_path / "p"
    prepare(Options(data, out, SIDE))
    before = files_of(out)
    assert prepare(Options(data, out, SIDE)).already
    assert files_of(out) == before
    with pytest.raises(Conflict, match=r"already holds .* --side 12"):
        prepare(Options(data, out, 16))
    with pytest.raises(KeyboardInterrupt):
        prepare(Options(data, tmp_path / "q", SIDE, chunk=2), StopAfter(1))
    with pytest.raises(Conflict, match=r"unfinished prepare .* with --side 12; finish it with"):
        prepare(Options(data, tmp_path / "q", 16))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(Conflict, match="a folder with other files in it"):
        prepare(Options(data, tmp_path / "other", SIDE))


def test_a_damaged_finished_set_is_a_conflict_not_nothing_to_do(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data")
    out = tmp_path / "p"
    prepare(Options(data, out, SIDE))
    (out / "val.u8").write_bytes((out / "val.u8").read_bytes()[:-1])
    with pytest.raises(Conflict, match=r"p holds a prepared set that cannot be used \(.*val.u8 "
                       r"holds .* bytes.*\); delete it and prepare again$"):
        prepare(Options(data, out, SIDE))


def test_a_finished_set_is_found_before_the_source_is_scanned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_data(tmp_path / "data")
    prepare(Options(data, tmp_path / "p", SIDE))

    def scan(*_: object) -> None:
        raise AssertionError("scanned the source")

    monkeypatch.setattr(prep, "scan_folder", scan)
    assert prepare(Options(data, tmp_path / "p", SIDE)).already


def test_the_advice_to_prepare_again_is_the_command_quoted(tmp_path: Path) -> None:
    data = make_data(tmp_path / "my data", classes=2)
    out = tmp_path / "my set"
    prepare(Options(data, out, SIDE, channels=1, chunk=2))
    (out / "val.u8").write_bytes(b"")
    with pytest.raises(PreparedError) as e:
        open_prepared(out, SIDE, 1)
    assert str(e.value).endswith("; prepare the set again: " + shlex.join(
        ["alexnetc", "prepare", str(data.resolve()), "-o", str(out), "--side", str(SIDE),
         "--channels", "1"]))


def test_a_file_system_that_cannot_open_folders_still_finishes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = make_data(tmp_path / "data")
    real = os.open

    def open_files_only(path: str | Path, flags: int, *args: int, **kwargs: int) -> int:
        if os.path.isdir(path):
            raise PermissionError(errno.EACCES, "a folder cannot be opened here", str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_files_only)
    prepare(Options(data, tmp_path / "p", SIDE))
    assert read_header(tmp_path / "p").splits["train"].kept == 18


def test_changed_images_cannot_be_continued(tmp_path: Path) -> None:
    data = make_data(tmp_path / "data")
    with pytest.raises(KeyboardInterrupt):
        prepare(Options(data, tmp_path / "p", SIDE, chunk=2), StopAfter(2))
    (data / "train" / "class0" / "0.png").rename(data / "train" / "class0" / "new.png")
    with pytest.raises(DataError, match="changed since the unfinished prepare"):
        prepare(Options(data, tmp_path / "p", SIDE))


class FillDiskAfter(Quiet):
    """Fills the disk after `n` chunks: the next chunk's write, or the journal, finds it full."""

    def __init__(self, n: int, disk: Path):
        super().__init__()
        self.n = n
        self.disk = disk

    def advance(self, images: int) -> None:
        self.n -= 1
        if self.n == 0:
            fill(self.disk)


def test_a_full_disk_keeps_what_was_converted(tmp_path: Path, small_disk: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prep, "FLUSH_S", 0.0)  # journal every chunk at once, as a slow run would
    data = make_data(tmp_path / "data", per_class=14)
    prepare(Options(data, tmp_path / "whole", SIDE, chunk=1))
    out = small_disk / "p"
    with pytest.raises(WriteFailed, match="the disk is full"):
        prepare(Options(data, out, SIDE, chunk=1), FillDiskAfter(12, small_disk))
    assert not (out / HEADER).exists()
    for name in (".filler", ".filler-bytes"):
        (small_disk / name).unlink()
    summary = prepare(Options(data, out, SIDE))
    assert 12 <= summary.before < 48 and summary.before + summary.converted == 48
    assert files_of(out) == files_of(tmp_path / "whole")


def test_a_disk_too_small_is_refused_before_converting(tmp_path: Path, small_disk: Path) -> None:
    data = make_data(tmp_path / "data")
    with pytest.raises(WriteFailed, match=r"needs .* MB more and its disk has .* MB free"):
        prepare(Options(data, small_disk / "p", 256))


def test_a_worker_whose_parent_is_gone_exits_at_once() -> None:
    """A worker started just as its parent died (before the prctl that kills it with its
    parent could apply) sees another parent, and exits rather than write as an orphan."""
    pid = os.fork()
    if pid == 0:
        try:
            prep._worker_init(parent=-1)  # no process's pid: "my parent has gone"
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1
