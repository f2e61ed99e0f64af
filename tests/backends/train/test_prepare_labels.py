"""Validation images loose in val/ with a labels file (CSV `file,label`, ILSVRC's one label
per line, numbers through the devkit's class map), and reduced-scale JPEG decoding."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnetc.backends.train.data import DataError, load_image, scan_folder
from alexnetc.backends.train.prepare import Options, prepare
from alexnetc.backends.train.prepared import open_prepared

SYNSETS = ["n01440764", "n01443537", "n01484850"]  # the first three of ILSVRC's sorted 1000
# Their ILSVRC2012_ID: the devkit numbers classes in its own order, not by synset.
NUMBERS = {"n01440764": 449, "n01443537": 450, "n01484850": 442}


def make_data(root: Path, val: int = 5) -> tuple[Path, list[str]]:
    """train/SYNSET/* and `val` loose images named as ILSVRC's, with their true synsets."""
    rng = np.random.default_rng(2)
    for synset in SYNSETS:
        (root / "train" / synset).mkdir(parents=True)
        for i in range(2):
            arr = rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / "train" / synset / f"{synset}_{i}.JPEG")
    (root / "val").mkdir()
    truth = []
    for i in range(val):
        arr = rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)
        Image.fromarray(arr).save(root / "val" / f"ILSVRC2012_val_{i + 1:08d}.JPEG")
        truth.append(SYNSETS[(i * 2) % 3])
    return root, truth


def val_labels(root: Path) -> list[tuple[str, int]]:
    _, _, val = scan_folder(root)
    return [(p.name, y) for p, y in val]


def expected(truth: list[str]) -> list[tuple[str, int]]:
    return [(f"ILSVRC2012_val_{i + 1:08d}.JPEG", SYNSETS.index(s)) for i, s in enumerate(truth)]


@pytest.mark.parametrize("write", [
    lambda v, t: (v / "labels.csv").write_text(
        "file,label\n" + "".join(f"ILSVRC2012_val_{i + 1:08d}.JPEG,{s}\n" for i, s in
                                 reversed(list(enumerate(t))))),
    lambda v, t: (v / "labels.csv").write_text(
        "".join(f"ILSVRC2012_val_{i + 1:08d}.JPEG, {s}\r\n" for i, s in enumerate(t))),
    # Kaggle's ImageNet: the stem, and the synset first in a string of boxes
    lambda v, t: (v.parent / "LOC_val_solution.csv").write_text(
        "ImageId,PredictionString\n" + "".join(f"ILSVRC2012_val_{i + 1:08d},{s} 1 2 3 4 {s} 5 6 "
                                               "7 8\n" for i, s in enumerate(t))),
], ids=["with-header", "no-header", "kaggle"])
def test_csv_labels(tmp_path: Path, write) -> None:
    root, truth = make_data(tmp_path / "data")
    write(root / "val", truth)
    assert val_labels(root) == expected(truth)


def test_ilsvrc_ground_truth_by_synset(tmp_path: Path) -> None:
    root, truth = make_data(tmp_path / "data")
    (root / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(truth) + "\n")
    assert val_labels(root) == expected(truth)


@pytest.mark.parametrize("class_map", ["map_clsloc.txt", "meta.mat"])
def test_ilsvrc_ground_truth_by_number_through_the_devkit_map(tmp_path: Path,
                                                              class_map: str) -> None:
    root, truth = make_data(tmp_path / "data")
    devkit = tmp_path / "devkit"
    devkit.mkdir()
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text(
        "".join(f"{NUMBERS[s]}\n" for s in truth))
    if class_map == "map_clsloc.txt":
        (devkit / class_map).write_text("".join(f"{s} {n} some_name\n"
                                                for s, n in NUMBERS.items()))
    else:  # the 2012 devkit's meta.mat: leaf synsets, and a parent with children to skip
        from scipy.io import savemat

        rows = [(n, s, 0) for s, n in NUMBERS.items()] + [(1001, "n00001740", 3)]
        synsets = np.array(rows, dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"),
                                        ("num_children", "O")])
        savemat(devkit / class_map, {"synsets": synsets})
    _, _, val = scan_folder(root, devkit / "ILSVRC2012_validation_ground_truth.txt")
    assert [(p.name, y) for p, y in val] == expected(truth)


def test_prepare_reads_loose_validation_images(tmp_path: Path) -> None:
    root, truth = make_data(tmp_path / "data")
    (root / "val" / "labels.csv").write_text(
        "".join(f"ILSVRC2012_val_{i + 1:08d}.JPEG,{s}\n" for i, s in enumerate(truth)))
    prepare(Options(root, tmp_path / "p", 8))
    ds = open_prepared(tmp_path / "p", 8, 3)
    assert [ds.val[i][1] for i in range(len(ds.val))] == [y for _, y in expected(truth)]
    assert ds.classes == SYNSETS


@pytest.mark.parametrize("files, message", [
    ({}, r"val holds images but no labels file: add .*val/labels.csv"),
    ({"labels.txt": "n01440764\n"}, r"labels.txt has 1 labels for the 5 images of"),
    ({"labels.txt": "n01440764\ntench\nn01440764\nn01440764\nn01440764\n"},
     r"labels.txt:2: 'tench' is not a class of .*train \(a label names a class folder, such "
     r"as 'n01440764'\)"),
    ({"labels.txt": "1\n2\n3\n4\n5\n"},
     r"labels.txt labels by number, which needs ILSVRC's class map: put the devkit's "
     r"map_clsloc.txt or meta.mat beside it"),
    ({"labels.txt": "449\n450\n449\n449\n449\n", "map_clsloc.txt": "n01440764 449 tench\n"
      "n09999999 450 unicorn\n"}, r"labels.txt:2: class number 450 is 'n09999999', which is "
     "not a class of"),
    ({"labels.txt": "449\n7\n449\n449\n449\n", "map_clsloc.txt": "n01440764 449 tench\n"},
     r"labels.txt:2: class number 7 is not in the class map"),
    ({"labels.csv": "ILSVRC2012_val_00000001.JPEG,n01440764\n"},
     r"4 images of .*val have no label in .*labels.csv \(the first: "
     r"ILSVRC2012_val_00000002.JPEG\)"),
    ({"labels.csv": "file,label\nnope.JPEG,n01440764\n"},
     r"labels.csv:2: no image 'nope.JPEG' in"),
    ({"labels.csv": "ILSVRC2012_val_00000001.JPEG,n01440764\n"
      "ILSVRC2012_val_00000001.JPEG,n01440764\n"}, r"labels.csv:2: 'ILSVRC2012_val_00000001"
     r".JPEG' is labelled twice"),
    ({"labels.csv": "ILSVRC2012_val_00000001.JPEG\n"}, r"labels.csv:1: expected `file,label`"),
], ids=["none", "count", "unknown", "number-no-map", "number-not-a-class", "number-not-mapped",
        "missing",
        "no-such-image", "twice", "one-column"])
def test_bad_labels_are_located_errors(tmp_path: Path, files: dict[str, str],
                                       message: str) -> None:
    with pytest.raises(DataError, match=message):
        _scan_with(tmp_path, files)


def test_both_layouts_at_once_is_an_error(tmp_path: Path) -> None:
    root, _ = make_data(tmp_path / "data")
    (root / "val" / SYNSETS[0]).mkdir()
    with pytest.raises(DataError, match=r"holds both class folders .* and loose images"):
        scan_folder(root)


def test_large_jpegs_are_decoded_at_reduced_scale(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's draft mode: a 1600x1200 JPEG scaled to 64 decodes at 1/8 scale (200x150) and
    still matches the full decode closely; a PNG, which has no draft mode, decodes whole."""
    y, x = np.mgrid[0:1200, 0:1600]
    arr = np.stack([x * 255 // 1600, y * 255 // 1200, (x + y) * 255 // 2800], -1)
    Image.fromarray(arr.astype(np.uint8)).save(tmp_path / "big.jpg", quality=95)
    opened: list[Image.Image] = []
    real_open = Image.open

    def spy(*args: object, **kw: object) -> Image.Image:
        opened.append(real_open(*args, **kw))  # type: ignore[arg-type]
        return opened[-1]

    monkeypatch.setattr(Image, "open", spy)
    fast = load_image(tmp_path / "big.jpg", 64, 3)
    assert [im.size for im in opened] == [(200, 150)]
    monkeypatch.undo()
    with Image.open(tmp_path / "big.jpg") as f:  # the full decode, scaled by Pillow
        full = f.resize((85, 64), Image.Resampling.BILINEAR).crop((10, 0, 74, 64))
    slow = torch.from_numpy(np.asarray(full).copy()).permute(2, 0, 1)
    assert fast.shape == slow.shape == (3, 64, 64)
    assert (fast.int() - slow.int()).abs().float().mean() < 1.5
    small = load_image(tmp_path / "big.jpg", 400, 1)  # grey, 1/2 scale: 800x600 ≥ 533x400
    assert small.shape == (1, 400, 400)


@pytest.mark.parametrize("files, message", [
    ({"labels.txt": b"n01440764\n\xe9t\xe9\n"}, r"labels.txt is not UTF-8 text \(byte 10 is "
     r"0xe9\); save it as UTF-8"),
    ({"labels.csv": b"\xef\xbb\xbfILSVRC2012_val_00000001.JPEG,\xff\n"},
     r"labels.csv is not UTF-8 text \(byte 32 is 0xff\)"),
    ({"labels.txt": b"449\n449\n449\n449\n449\n", "map_clsloc.txt": b"n01440764 449 t\xeanch\n"},
     r"map_clsloc.txt is not UTF-8 text \(byte 15 is 0xea\)"),
], ids=["lines", "csv", "class-map"])
def test_labels_that_are_not_utf8_are_located_errors(tmp_path: Path, files: dict[str, bytes],
                                                     message: str) -> None:
    with pytest.raises(DataError, match=message):
        _scan_with(tmp_path, files)


def _scan_with(tmp_path: Path, files: dict[str, str] | dict[str, bytes]) -> object:
    """Scan a generated data set whose val folder also holds `files` (text, as UTF-8)."""
    root, _ = make_data(tmp_path / "data")
    for name, content in files.items():
        (root / "val" / name).write_bytes(content if isinstance(content, bytes)
                                          else content.encode())
    return scan_folder(root)
