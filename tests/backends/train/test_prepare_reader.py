"""Reading a prepared set: memory-mapped batches, refused cheaply when a file is truncated,
edited or corrupt, every chunk checked by verify."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alexnetc.backends.train.data import DataError, collate, open_data
from alexnetc.backends.train.prepare import Options, prepare, verify
from alexnetc.backends.train.prepared import (
    HEADER,
    PreparedError,
    PreparedImages,
    _digest,
    is_prepared,
    open_prepared,
    read_header,
)
from alexnetc.backends.train.run import batches

from helpers import copy_files

SIDE = 10


def make_data(root: Path, n: int = 9) -> Path:
    rng = np.random.default_rng(1)
    for split, count in (("train", n), ("val", 2)):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(count):
                arr = rng.integers(0, 256, (14, 11, 3), dtype=np.uint8)
                Image.fromarray(arr).save(root / split / c / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("prepared")
    prepare(Options(make_data(root / "data"), root / "p", SIDE, chunk=4))
    return root / "p"


@pytest.fixture
def copy(prepared: Path, tmp_path: Path) -> Path:
    return copy_files(prepared, tmp_path / "p")


def test_batches_are_read_whole_in_any_order(prepared: Path) -> None:
    ds = open_prepared(prepared, SIDE, 3)
    train = ds.train
    assert isinstance(train, PreparedImages) and len(train) == 18
    order = [5, 0, 17, 5, 9]
    batch = collate(train.__getitems__(order))
    singles = [train[i] for i in order]
    assert torch.equal(batch.images, torch.stack([x for x, _, _ in singles if x is not None]))
    assert batch.labels.tolist() == [y for _, y, _ in singles] == [0, 0, 1, 0, 1]
    assert batch.images.shape == (5, 3, SIDE, SIDE) and batch.bad == []
    assert collate(train.__getitems__([])).images.shape == (0, 3, SIDE, SIDE)


def test_workers_map_the_file_themselves(prepared: Path) -> None:
    train = open_prepared(prepared, SIDE, 3).train
    assert isinstance(train, PreparedImages)
    train[0]  # maps the file in this process
    assert len(pickle.dumps(train)) < 4000  # its bytes (5,400) do not travel
    seen = list(batches(train, [3, 1, 4, 1, 5, 9, 2, 6], 3, workers=1))
    assert [b.images.shape[0] for b in seen] == [3, 3, 2]
    direct = collate(train.__getitems__([3, 1, 4, 1, 5, 9, 2, 6]))
    assert torch.equal(torch.cat([b.images for b in seen]), direct.images)


def test_open_data_recognises_a_prepared_folder(prepared: Path) -> None:
    assert is_prepared(prepared) and not is_prepared(prepared.parent / "data")
    ds = open_data(str(prepared), SIDE, 3, 2)
    assert ds.source == f"{prepared} (prepared, {SIDE}x{SIDE})" and ds.classes == ["cat", "dog"]
    with pytest.raises(DataError, match=r"holds 10x10 images, but this spec trains on 12x12 "
                       r".* prepare it with --side 12, or set `augment resize=10`"):
        open_data(str(prepared), 12, 3, 2)
    with pytest.raises(DataError, match=r"images of 3 channel.* input has 1; prepare it "
                       r"with --channels 1"):
        open_data(str(prepared), SIDE, 1, 2)
    with pytest.raises(DataError, match="has 2 classes"):
        open_data(str(prepared), SIDE, 3, 1000)


def _edit_header(p: Path, change: Callable[[dict], None]) -> None:
    raw = json.loads((p / HEADER).read_text())
    change(raw)
    (p / HEADER).write_text(json.dumps(raw, indent=1))


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "train.u8").write_bytes((p / "train.u8").read_bytes()[:-1]),
     r"train.u8 holds 5,399 bytes, not the 5,400 its header says \(truncated\?\)"),
    (lambda p: (p / "val.u8").unlink(), "val.u8 is missing"),
    (lambda p: _edit_header(p, lambda h: h["classes"].reverse()),
     "prepared.json does not match its checksum"),
    (lambda p: _edit_header(p, lambda h: h["splits"]["train"]["chunks"].__setitem__(0, "0" * 64)),
     "prepared.json does not match its checksum"),
    (lambda p: _edit_header(p, lambda h: h.update(checksum="0" * 64)),
     "prepared.json does not match its checksum"),
    (lambda p: (p / HEADER).write_text((p / HEADER).read_text()[:100]),
     r"prepared.json is corrupt \(it is not JSON\)"),
    (lambda p: _edit_header(p, lambda h: h.update(version=99)), "is version 99 of the prepared"),
    (lambda p: _edit_header(p, lambda h: h.pop("splits")), r"corrupt \(fields are missing\)"),
    (lambda p: _edit_header(p, lambda h: h.update(splits=[])),
     "prepared.json does not match its checksum"),
    (lambda p: _edit_header(p, lambda h: h.update(splits=[],  # with its checksum made to match
                                                  checksum=_digest({**h, "splits": []}))),
     r"corrupt \(fields are malformed\)"),
    (lambda p: (p / "train.labels").write_bytes(b"\x01" + (p / "train.labels").read_bytes()[1:]),
     "train.labels does not match its checksum"),
    (lambda p: (p / "mean.npy").unlink(), "mean.npy is missing or does not match"),
])
def test_damaged_sets_are_refused_before_training(copy: Path, damage: Callable[[Path], object],
                                                  message: str) -> None:
    damage(copy)
    with pytest.raises(PreparedError, match=message) as e:
        open_prepared(copy, SIDE, 3)
    assert "\n" not in str(e.value)
    if "checksum" in message and "prepared.json" in message:  # no value of it is trusted
        assert str(e.value).endswith(f"alexnetc prepare DATA -o {copy}")
    elif "version" not in message and "not JSON" not in message and "fields" not in message:
        assert str(e.value).endswith(f"-o {copy} --side {SIDE}")  # how to make it again


def test_a_folder_that_is_no_prepared_set_is_said_to_be_none(tmp_path: Path) -> None:
    with pytest.raises(PreparedError, match=r"^\S+ is not a prepared set \(no prepared.json\)$"):
        read_header(tmp_path)
    (tmp_path / ".prepare").mkdir()
    with pytest.raises(PreparedError, match="is an unfinished `alexnetc prepare`"):
        read_header(tmp_path)


def test_verify_finds_a_flipped_byte(copy: Path) -> None:
    header, problems = verify(copy, workers=0)
    assert problems == [] and header.splits["train"].kept == 18
    with open(copy / "train.u8", "r+b") as f:  # image 13 of 18: the fourth chunk of 4
        f.seek(13 * 300 + 17)
        byte = f.read(1)
        f.seek(13 * 300 + 17)
        f.write(bytes([byte[0] ^ 0x10]))
    open_prepared(copy, SIDE, 3)  # sizes and header: the cheap checks cannot see it
    _, problems = verify(copy, workers=2)
    assert problems == [f"{copy / 'train.u8'}: images 12–15 (chunk 4 of 5) do not match their "
                        "checksum"]
