"""The protobuf text-format reader: fields and messages with their positions, as protobuf's
own TextFormat parser reads them, and each malformed file a located error."""

from __future__ import annotations

from pathlib import Path

import pytest

from alexnetc.cli.main import main
from alexnetc.compiler.errors import SpecError
from alexnetc.importers.prototxt import Field, Message, Value, parse
from alexnetc.importers.source import Source


def _parse(tmp_path: Path, text: str) -> Message:
    path = tmp_path / "t.prototxt"
    path.write_text(text)
    return parse(Source.read(path))


def _message(m: Message, name: str) -> Message:
    found = m.message(name)
    assert found is not None, name
    return found


def _text(f: Field | None) -> str:
    """A scalar field's text."""
    assert f is not None and isinstance(f.value, Value), f
    return f.value.text


def _error(tmp_path: Path, text: str) -> tuple[int, int, int, str, str]:
    with pytest.raises(SpecError) as e:
        _parse(tmp_path, text)
    (d,) = e.value.diagnostics
    assert d.kind == "import-malformed"
    return d.loc.line, d.loc.col, d.loc.end_col, d.message, d.hint


def test_fields_messages_and_positions(tmp_path: Path) -> None:
    top = _parse(tmp_path, 'name: "AlexNet"  # a comment\n'
                           'layer {\n  name: "data"\n'
                           "  input_param { shape: { dim: 10 dim: 3 dim: 227 dim: 227 } }\n}\n")
    assert top.names() == ["name", "layer"]
    shape = _message(_message(_message(top, "layer"), "input_param"), "shape")
    dims = shape.all("dim")
    assert [_text(d) for d in dims] == ["10", "3", "227", "227"]
    name = top.get("name")
    assert name is not None and isinstance(name.value, Value)
    assert (name.loc.line, name.loc.col, name.value.loc.col, name.value.loc.end_col) == \
        (1, 1, 7, 16)
    assert (dims[1].loc.line, dims[1].loc.col) == (4, 34)


def test_scalars_as_protobuf_writes_them(tmp_path: Path) -> None:
    """Numbers keep their text (exact decimals); strings are decoded and adjacent ones joined;
    enums and booleans are words; a repeated field may be a list; `,` and `;` separate."""
    top = _parse(tmp_path, "a: 1e-4 b: .75 c: 1. d: -3 e: 0.5f\n"
                           "s: 'it\\'s' \"a\\tb\" t: MAX u: true\n"
                           "dim: [1, 3, 224]; x: 1, y: <z: 2>\n")
    values = {f.name: f.value for f in top.fields if isinstance(f.value, Value)}
    assert {k: v.text for k, v in values.items() if v.kind == "number"} == {
        "a": "1e-4", "b": ".75", "c": "1.", "d": "-3", "e": "0.5f", "dim": "224", "x": "1"}
    assert values["s"].text == "it'sa\tb" and values["s"].kind == "string"
    assert (values["t"].kind, values["u"].kind) == ("word", "word")
    assert [_text(f) for f in top.all("dim")] == ["1", "3", "224"]
    assert top.message("y") is not None


def test_repeated_fields_keep_order_and_get_takes_the_last(tmp_path: Path) -> None:
    top = _parse(tmp_path, 'bottom: "a"\nbottom: "b"\ntop: "c"\n')
    assert [_text(f) for f in top.all("bottom")] == ["a", "b"]
    assert _text(top.get("bottom")) == "b"
    assert top.get("nothing") is None and top.messages("bottom") == []


def test_an_empty_file_is_an_empty_message(tmp_path: Path) -> None:
    assert _parse(tmp_path, "").fields == []
    assert _parse(tmp_path, "# only a comment\n\n").fields == []


@pytest.mark.parametrize(("text", "where", "message"), [
    ('layer {\n  name: "a"\n', (1, 1, 8), "`layer {` is never closed"),
    ("layer {\n  p {\n    k: 1\n}\n", (2, 3, 4), "`p` is never closed: the `}` on line 4 "
     "lines up with `layer` (line 1), which is left open"),
    ("layer { }\n}\n", (2, 1, 2), "`}` closes nothing"),
    ("layer < a: 1 }\n", (1, 14, 15), "`}` cannot close `layer <` (line 1)"),
    ("layer {\n  kernel_size:\n  stride: 2\n}\n", (2, 3, 15), "`kernel_size:` has no value"),
    ("a:\n", (1, 1, 3), "`a:` has no value"),
    ("layer { kernel_size: }\n", (1, 9, 21), "`kernel_size:` has no value"),
    ("stride = 2\n", (1, 8, 9), "unexpected `=`"),
    ("a: 1 @\n", (1, 6, 7), "unexpected `@`"),
    ("a: 3x\n", (1, 4, 6), "`3x` is not a number"),
    ("a: 1.2.3\n", (1, 4, 9), "`1.2.3` is not a number"),
    ('name: "abc\n', (1, 7, 11), "this string is never closed"),
    ("layer { 3 }\n", (1, 9, 10), "expected a field name, got `3`"),
    ("a b\n", (1, 3, 4), "expected `:` or `{` after `a`, got `b`"),
    ("dim: [1, 2\n", (1, 1, 4), "the list of `dim` is never closed"),
])
def test_malformed_text_is_a_located_error(tmp_path: Path, text: str,
                                           where: tuple[int, int, int], message: str) -> None:
    line, col, end, got, hint = _error(tmp_path, text)
    assert (line, col, end) == where
    assert got == message
    assert hint


def test_messages_nested_past_any_caffe_file_are_a_located_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "deep.prototxt"
    path.write_text("layer {" * 3000 + "}" * 3000 + "\n")
    assert main(["import", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:1:707: error: messages nested more than 100 deep" in err, err
