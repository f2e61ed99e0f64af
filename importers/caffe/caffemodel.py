"""A `.caffemodel` read without protobuf: the layers' names and parameter blobs.

A caffemodel is a `NetParameter` (caffe.proto) in protobuf's binary wire format: a run of
fields, each a varint key (field number << 3 | wire type) and a value — a varint (0), 8 bytes
(1), a length and that many bytes (2: strings, messages, packed repeated numbers) or 4 bytes
(5). Only what the weights need is decoded; every other field is skipped by its wire type:

- NetParameter: `name` 1, `layers` 2 (V1LayerParameter: BVLC's older models, AlexNet and
  CaffeNet among them), `layer` 100 (LayerParameter);
- LayerParameter: `name` 1, `blobs` 7; V1LayerParameter: `name` 4, `blobs` 6, and `layer` 1
  for a V0 layer inside it (from before Caffe 1.0, refused);
- BlobProto: the legacy 4-D shape `num` 1, `channels` 2, `height` 3, `width` 4, or `shape` 7
  (BlobShape: `dim` 1, int64); the values as `data` 5 (float) or `double_data` 8, each packed
  or not (a repeated field may come in several pieces).

A model holds hundreds of MB of values (AlexNet's fc6 alone 151 MB): the file is mapped and
parsed in place, each packed run of values left where it is and read from the file only when
its blob is copied (`Caffemodel.values`, any range of a blob's values), so that the weights
are not held in memory beside the network they fill.

What is wrong with the file is one `CaffemodelError` line: not a caffemodel at all (text, an
HDF5 file, another message such as a mean.binaryproto), truncated, or corrupt, with the byte
where it shows; and one with both V1 `layers` and `layer` entries, which Caffe refuses too.
"""

from __future__ import annotations

import codecs
import mmap
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from io import FileIO
from math import prod
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, TypeAlias

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
_WIDTH = {FIXED64: 8, FIXED32: 4}
_HDF5 = b"\x89HDF\r\n\x1a\n"
_HEAD = 4096  # what tells a file that is plainly no caffemodel
# The keys a NetParameter written by Caffe starts with: `name`, `layers` or `layer`.
_NET_STARTS = (b"\x0a", b"\x12", b"\xa2\x06")
_V1, _V2 = 2, 100  # NetParameter's `layers` (V1LayerParameter) and `layer` (LayerParameter)


class CaffemodelError(Exception):
    """The file cannot be read as a caffemodel; the message is one line that names it."""


class _Bad(Exception):
    """A fault at byte `at`; `truncated`: a value runs past the end of what holds it."""

    def __init__(self, at: int, why: str, truncated: bool = False) -> None:
        super().__init__(why)
        self.at = at
        self.why = why
        self.truncated = truncated


# A blob's values, in order: a packed run as where its bytes are in the file (start, end),
# or values given one field each (few, as Caffe never writes them so), as read.
Piece: TypeAlias = "tuple[int, int] | array[float]"


@dataclass(frozen=True)
class Blob:
    """One parameter blob: its shape, whether that came from the legacy 4-D fields
    (num, channels, height, width), and where its values are ('f' or 'd', C order), read
    by `Caffemodel.values`."""

    shape: tuple[int, ...]
    legacy: bool
    typecode: str
    pieces: tuple[Piece, ...]


@dataclass(frozen=True)
class CaffeLayer:
    name: str
    blobs: list[Blob]


class Caffemodel:
    """An open caffemodel: its layers, and each blob's values read from the file only when
    asked. Use it in `with`."""

    def __init__(self, path: str | Path, file: FileIO, layers: list[CaffeLayer]) -> None:
        self.path = path
        self.layers = layers
        self._file = file

    def values(self, blob: Blob, start: int = 0, stop: int | None = None) -> array[float]:
        """Values [start, stop) of the blob (all by default), read now straight into the
        array that holds them."""
        size = array(blob.typecode).itemsize
        stop = _count(blob.pieces, size) if stop is None else stop
        out: array[float] = array(blob.typecode, [0.0]) * (stop - start)
        view = memoryview(out).cast("B")
        at = 0  # the blob's value where the piece starts
        for piece in blob.pieces:
            n = len(piece) if isinstance(piece, array) else (piece[1] - piece[0]) // size
            lo, hi = max(start, at), min(stop, at + n)
            if lo < hi:
                into = view[(lo - start) * size:(hi - start) * size]
                skip = (lo - at) * size
                if isinstance(piece, array):
                    into[:] = memoryview(piece).cast("B")[skip:skip + len(into)]
                else:
                    self._read(into, piece[0] + skip)
            at += n
        if sys.byteorder == "big":
            out.byteswap()
        return out

    def _read(self, into: memoryview, at: int) -> None:
        """The file's bytes from `at` on, as many as `into` holds, into it."""
        try:
            self._file.seek(at)
            while len(into):
                n = self._file.readinto(into)
                if not n:
                    raise CaffemodelError(f"{self.path} is truncated: it changed while being "
                                          f"read (at byte {at:,})")
                into = into[n:]
        except OSError as e:
            raise CaffemodelError(f"cannot read {self.path}: {e.strerror or e}") from None

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Caffemodel:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()


def read_caffemodel(path: str | Path) -> Caffemodel:
    """The layers of a binary NetParameter, in the file's order, parsed in place from the
    mapped file (its values are not read here: `Caffemodel.values`)."""
    try:
        file = open(path, "rb", buffering=0)  # noqa: SIM115 (the Caffemodel closes it)
    except OSError as e:
        raise CaffemodelError(f"cannot read {path}: {e.strerror or e}") from None
    try:
        return Caffemodel(path, file, _parse(path, file))
    except BaseException:
        file.close()
        raise


def _parse(path: str | Path, file: FileIO) -> list[CaffeLayer]:
    """The layers, parsed from the file mapped in memory: only the pages holding their
    names and the blobs' keys are read; the mapping goes with the last view of it."""
    try:
        head = file.read(_HEAD)
    except OSError as e:
        raise CaffemodelError(f"cannot read {path}: {e.strerror or e}") from None
    what = _not_binary(head)
    if what is not None:
        raise CaffemodelError(f"{path} is {what}, not a binary .caffemodel (Caffe's trained "
                              "weights, e.g. bvlc_alexnet.caffemodel)")
    try:
        buf = memoryview(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ))
    except (OSError, ValueError) as e:  # ValueError: a file that cannot be mapped
        raise CaffemodelError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") \
            from None
    layers: list[CaffeLayer] = []
    spelling: Field | None = None  # the first layer's field: `layers` or `layer`
    try:
        for f in _fields(buf, 0, len(buf)):
            if f.number in (1, _V1, _V2):
                f.expect(LENGTH, "NetParameter")
            if f.number in (_V1, _V2):
                spelling = spelling or f
                _consistent(path, spelling, f)
                layers.append(_layer(buf, f, v1=f.number == _V1))
    except _Bad as e:
        raise CaffemodelError(_explain(path, e, head, len(buf), layers)) from None
    if not layers:
        raise CaffemodelError(f"{path} holds no layers: it is not a Caffe model (a "
                              "NetParameter with `layer` entries)")
    return layers


def _consistent(path: str | Path, first: Field, f: Field) -> None:
    """V1 `layers` and current `layer` entries never mix: Caffe's UpgradeV1Net refuses such
    a NetParameter as inconsistent rather than choose between them."""
    if f.number != first.number:
        v1, v2 = (first, f) if first.number == _V1 else (f, first)
        raise CaffemodelError(f"{path} holds both V1 `layers` (at byte {v1.at:,}) and "
                              f"current `layer` entries (at byte {v2.at:,}), which Caffe "
                              "refuses as inconsistent: save it with one of them")


def _not_binary(data: bytes) -> str | None:
    """What a file that is plainly no protobuf is: empty, HDF5, or text."""
    if not data:
        return "empty"
    if data.startswith(_HDF5):
        return "an HDF5 file (Caffe's .caffemodel.h5, which alexnetc does not read)"
    try:  # a character cut at the end of the head is still text
        text = codecs.getincrementaldecoder("utf-8")().decode(data[:_HEAD], final=False)
    except UnicodeDecodeError:
        return None
    return "a text file" if all(c.isprintable() or c in "\t\r\n" for c in text) else None


def _explain(path: str | Path, e: _Bad, head: bytes, size: int,
             layers: list[CaffeLayer]) -> str:
    """Truncated or corrupt where the file starts as a NetParameter does (its name or a
    layer), else not a caffemodel at all (a mean.binaryproto starts with a blob's `num`)."""
    where = f"at byte {e.at:,} of {size:,}" + (f", after layer '{layers[-1].name}'"
                                               if layers else "")
    if not head.startswith(_NET_STARTS):
        return f"{path} is not a Caffe model (a binary NetParameter): {e.why} {where}"
    return f"{path} is {'truncated' if e.truncated else 'corrupt'}: {e.why} {where}"


class Field(NamedTuple):
    """One field of a message: `value` is the varint itself, or where the bytes of a
    length-delimited or fixed-width value start (they end at `end`); `at`: where its key is."""

    number: int
    wire: int
    value: int
    end: int
    at: int

    def expect(self, wire: int, message: str) -> None:
        if self.wire != wire:
            raise _Bad(self.at, f"field {self.number} of a {message} has wire type "
                       f"{self.wire}, not {wire}")


def _layer(buf: memoryview, field: Field, v1: bool) -> CaffeLayer:
    name_number, blobs_number = (4, 6) if v1 else (1, 7)
    kind = "V1LayerParameter" if v1 else "LayerParameter"
    name = ""
    blobs: list[Blob] = []
    for f in _fields(buf, field.value, field.end):
        if f.number in (name_number, blobs_number) or (v1 and f.number == 1):
            f.expect(LENGTH, kind)
        if f.number == name_number:
            name = bytes(buf[f.value:f.end]).decode("utf-8", "replace")
        elif f.number == blobs_number:
            blobs.append(_blob(buf, f))
        elif v1 and f.number == 1:
            raise _Bad(f.at, "a V0 layer (from before Caffe 1.0; upgrade the model with "
                       "Caffe's tools/upgrade_net_proto_binary)")
    return CaffeLayer(name, blobs)


def _blob(buf: memoryview, field: Field) -> Blob:
    legacy = [0, 0, 0, 0]
    has_legacy = False
    shape: list[int] = []
    pieces: dict[str, list[Piece]] = {"f": [], "d": []}
    for f in _fields(buf, field.value, field.end):
        if 1 <= f.number <= 4:
            f.expect(VARINT, "BlobProto")
            legacy[f.number - 1] = _dimension(f.value, f.at)
            has_legacy = True
        elif f.number == 7:
            f.expect(LENGTH, "BlobProto")
            shape = _shape(buf, f)
        elif f.number in (5, 8):
            _numbers(buf, f, "f" if f.number == 5 else "d", pieces)
    # Caffe's choice: double_data when it has any
    typecode = "d" if _count(pieces["d"], 8) else "f"
    count = _count(pieces[typecode], array(typecode).itemsize)
    dims = tuple(legacy if has_legacy else shape)  # the legacy fields win, as in Caffe
    if count != prod(dims):
        raise _Bad(field.at, f"a blob of shape {'x'.join(map(str, dims)) or '()'} holds "
                   f"{count:,} values")
    return Blob(dims, has_legacy, typecode, tuple(pieces[typecode]))


def _shape(buf: memoryview, field: Field) -> list[int]:
    """BlobShape's `dim`s, packed or one varint each."""
    dims: list[int] = []
    for f in _fields(buf, field.value, field.end):
        if f.number != 1:
            continue
        if f.wire != LENGTH:
            f.expect(VARINT, "BlobShape")
            dims.append(_dimension(f.value, f.at))
            continue
        pos = f.value
        while pos < f.end:
            at = pos
            v, pos = _varint(buf, pos, f.end)
            dims.append(_dimension(v, at))
    return dims


def _numbers(buf: memoryview, f: Field, typecode: str,
             pieces: dict[str, list[Piece]]) -> None:
    """A piece of a repeated float or double: packed (one length-delimited run, left in the
    file) or one value of the field's own width (read, joining the values before it)."""
    width = array(typecode).itemsize
    if f.wire == LENGTH and (f.end - f.value) % width:
        raise _Bad(f.at, f"packed values of {f.end - f.value:,} bytes, not a multiple of "
                   f"{width}")
    if f.wire != LENGTH and _WIDTH.get(f.wire) != width:
        raise _Bad(f.at, f"a {'float' if width == 4 else 'double'} with wire type {f.wire}")
    run = pieces[typecode]
    if f.wire == LENGTH:
        run.append((f.value, f.end))
        return
    if not run or not isinstance(run[-1], array):
        run.append(array(typecode))
    last = run[-1]
    assert isinstance(last, array)
    last.frombytes(buf[f.value:f.end])


def _count(pieces: list[Piece] | tuple[Piece, ...], width: int) -> int:
    """How many values of `width` bytes the pieces hold."""
    return sum(len(p) if isinstance(p, array) else (p[1] - p[0]) // width for p in pieces)


def _fields(buf: memoryview, start: int, end: int) -> Iterator[Field]:
    """The fields of the message in buf[start:end], in order."""
    pos = start
    while pos < end:
        at = pos
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _Bad(at, "a field numbered 0")
        if wire == VARINT:
            v, pos = _varint(buf, pos, end)
            yield Field(number, wire, v, pos, at)
        elif wire == LENGTH:
            n, pos = _varint(buf, pos, end)
            if n > end - pos:
                raise _Bad(at, f"field {number} of {n:,} bytes runs past the end", True)
            yield Field(number, wire, pos, pos + n, at)
            pos += n
        elif wire in _WIDTH:
            if pos + _WIDTH[wire] > end:
                raise _Bad(at, f"field {number} runs past the end", True)
            yield Field(number, wire, pos, pos + _WIDTH[wire], at)
            pos += _WIDTH[wire]
        else:
            raise _Bad(at, f"field {number} has wire type {wire}, which caffe.proto never "
                       "uses")


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise _Bad(start, "a number runs past the end", True)
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise _Bad(start, "a number longer than 10 bytes")


def _dimension(value: int, at: int) -> int:
    """A dimension as the int32/int64 varint encodes it (a negative one takes 10 bytes)."""
    signed = value - (1 << 64) if value >= 1 << 63 else value
    if signed < 0:
        raise _Bad(at, f"a negative blob dimension ({signed})")
    return signed
