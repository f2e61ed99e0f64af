"""Protocol-buffer text format (Caffe's `.prototxt`) with the line and column of every field.

Caffe's nets and solvers are `caffe.NetParameter` and `caffe.SolverParameter` messages in
protobuf's text format: `name: value` fields and `name { … }` messages, repeated as often as
needed, `#` comments. Reading it without protobuf's schema keeps what the importer needs,
where each field and value stands, so that a problem is reported at its line and column; what
a field means is the importer's business, not this module's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from alexnetc.compiler.errors import SourceLoc
from alexnetc.importers.source import MALFORMED, Source

ValueKind = Literal["number", "string", "word"]


@dataclass(frozen=True)
class Value:
    """A scalar: a number (its text as written), a string (decoded) or a word (an enum value,
    `true`, `MAX`)."""

    kind: ValueKind
    text: str
    loc: SourceLoc


@dataclass(frozen=True)
class Field:
    """`name: value` or `name { … }`; `loc` is where the name stands."""

    name: str
    value: Value | Message
    loc: SourceLoc


@dataclass
class Message:
    """A message's fields in the order written (a repeated field appears once per value)."""

    loc: SourceLoc
    fields: list[Field] = field(default_factory=list)

    def all(self, name: str) -> list[Field]:
        return [f for f in self.fields if f.name == name]

    def get(self, name: str) -> Field | None:
        """The field's last occurrence (protobuf keeps the last of a singular field)."""
        found = self.all(name)
        return found[-1] if found else None

    def messages(self, name: str) -> list[Message]:
        return [f.value for f in self.all(name) if isinstance(f.value, Message)]

    def message(self, name: str) -> Message | None:
        found = self.messages(name)
        return found[-1] if found else None

    def names(self) -> list[str]:
        return list(dict.fromkeys(f.name for f in self.fields))


@dataclass(frozen=True)
class _Token:
    kind: str  # "name", "number", "string", "punct", "end"
    text: str
    line: int
    col: int
    width: int


_NUMBER = re.compile(r"-?(?:0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                     r"[fF]?)(?![A-Za-z0-9_.])")
_NAME = re.compile(r"-?[A-Za-z_][A-Za-z0-9_.]*")
_PUNCT = "{}<>:[],;"
MAX_DEPTH = 100  # nested messages; caffe.proto's go a few deep
_CLOSE = {"{": "}", "<": ">"}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "a": "\a",
            "b": "\b", "f": "\f", "v": "\v", "?": "?"}


def parse(source: Source) -> Message:
    """The file's top-level message; a `SpecError` at the first place the text is not protobuf
    text format (a brace never closed or closing nothing, a field without its value, a stray
    character)."""
    return _Parser(source).top()


class _Parser:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.tokens = list(_tokens(source))
        self.pos = 0
        self.closed: list[tuple[_Token, _Token]] = []  # (name, closing brace) of each message
        self.depth = 0  # messages open around the field being read

    def top(self) -> Message:
        message = Message(SourceLoc(self.source.path, 1, 1, 1, 2))
        self._fields(message, None)
        return message

    @property
    def tok(self) -> _Token:
        return self.tokens[self.pos]

    def _take(self) -> _Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def _loc(self, tok: _Token, width: int = 0) -> SourceLoc:
        end = tok.col + max(width or tok.width, 1)
        return SourceLoc(self.source.path, tok.line, tok.col, tok.line, end)

    def _span(self, first: _Token, last: _Token) -> SourceLoc:
        """From `first` to `last` when they share a line, else `first` alone."""
        width = last.col + last.width - first.col if last.line == first.line else first.width
        return self._loc(first, width)

    def _fail(self, tok: _Token, message: str, hint: str = "") -> Exception:
        return self.source.fail(MALFORMED, self._loc(tok), message, hint)

    def _fields(self, message: Message, opened: tuple[_Token, _Token] | None) -> None:
        """Fields up to the token closing `opened` (name, brace), or the end of the file."""
        while True:
            tok = self.tok
            if tok.kind == "end":
                if opened is not None:
                    raise self._unclosed(*opened)
                return
            if tok.kind == "punct" and tok.text in "}>":
                if opened is None:
                    raise self._fail(tok, f"`{tok.text}` closes nothing",
                                     "remove it, or open the message it ends with `name {`")
                name, brace = opened
                if tok.text != _CLOSE[brace.text]:
                    raise self._fail(tok, f"`{tok.text}` cannot close `{name.text} "
                                     f"{brace.text}` (line {name.line})",
                                     f"close it with `{_CLOSE[brace.text]}`")
                self.closed.append((name, tok))
                self.pos += 1
                return
            if tok.kind == "punct" and tok.text in ",;":
                self.pos += 1
                continue
            message.fields.extend(self._field())

    def _unclosed(self, name: _Token, brace: _Token) -> Exception:
        """A message left open at the end of the file. When a message inside it was closed
        by a brace indented as this one's name, that inner message is the one missing its
        brace (the usual slip), and the error points there."""
        close = _CLOSE[brace.text]
        for inner, end in self.closed:
            if ((inner.line, inner.col) > (brace.line, brace.col) and end.col == name.col
                    and inner.col != name.col):
                return self.source.fail(
                    MALFORMED, self._loc(inner), f"`{inner.text}` is never closed: the "
                    f"`{end.text}` on line {end.line} lines up with `{name.text}` (line "
                    f"{name.line}), which is left open", f"add `{close}` to end "
                    f"`{inner.text}` before line {end.line}")
        return self.source.fail(MALFORMED, self._span(name, brace),
                                f"`{name.text} {brace.text}` is never closed",
                                f"add `{close}` after its last field")

    def _field(self) -> list[Field]:
        name = self._take()
        if name.kind != "name" or name.text.startswith("-"):
            raise self._fail(name, f"expected a field name, got `{name.text}`",
                             "each field is `name: value` or `name { … }`")
        loc = self._loc(name)
        colon = self.tok if self.tok.text == ":" and self.tok.kind == "punct" else None
        if colon is not None:
            self.pos += 1
        tok = self.tok
        if tok.kind == "punct" and tok.text in _CLOSE:
            if self.depth >= MAX_DEPTH:
                raise self._fail(tok, f"messages nested more than {MAX_DEPTH} deep",
                                 "no Caffe file nests messages this deep: is it a prototxt?")
            self.pos += 1
            inner = Message(self._loc(tok))
            self.depth += 1
            self._fields(inner, (name, tok))
            self.depth -= 1
            return [Field(name.text, inner, loc)]
        if colon is None:
            got = "the end of the file" if tok.kind == "end" else f"`{tok.text}`"
            raise self._fail(tok if tok.kind != "end" else name,
                             f"expected `:` or `{{` after `{name.text}`, got {got}",
                             f"write `{name.text}: value` or `{name.text} {{ … }}`")
        if tok.kind == "punct" and tok.text == "[":
            return [Field(name.text, v, loc) for v in self._list(name)]
        return [Field(name.text, self._value(name, colon), loc)]

    def _list(self, name: _Token) -> Iterator[Value]:
        """`dim: [1, 3, 224, 224]`: a repeated scalar field written as one list."""
        self.pos += 1
        while not (self.tok.kind == "punct" and self.tok.text == "]"):
            if self.tok.kind == "end":
                raise self._fail(name, f"the list of `{name.text}` is never closed",
                                 "end it with `]`")
            yield self._value(name, self.tokens[self.pos - 1])
            if self.tok.kind == "punct" and self.tok.text == ",":
                self.pos += 1
        self.pos += 1

    def _value(self, name: _Token, colon: _Token) -> Value:
        tok = self.tok
        missing = (tok.kind in ("end", "punct")
                   or (tok.kind == "name" and self.tokens[self.pos + 1].text in (":", "{")
                       and self.tokens[self.pos + 1].kind == "punct"))
        if missing:
            raise self.source.fail(
                MALFORMED, self._span(name, colon), f"`{name.text}:` has no value",
                f"write `{name.text}: VALUE`, e.g. a number, a \"string\" or an enum word")
        self.pos += 1
        if tok.kind == "string":
            text = tok.text
            while self.tok.kind == "string":  # "a" "b" is "ab", as in C
                text += self._take().text
            return Value("string", text, self._loc(tok))
        if tok.kind == "name":
            return Value("word", tok.text, self._loc(tok))
        return Value("number", tok.text, self._loc(tok))


_CONFLICT = re.compile(r"(<{7}|={7}|>{7})(?:\s|$)")


def _tokens(source: Source) -> Iterator[_Token]:
    for n, line in enumerate(source.lines, start=1):
        if _CONFLICT.match(line):  # `<` opens a message too: say what it is before it nests
            raise source.fail(MALFORMED, source.loc(n, 1, 7), "a merge-conflict marker",
                              "the file was saved mid-merge: resolve the conflict (keep one "
                              "side) and import it again")
        i = 0
        while i < len(line):
            ch = line[i]
            if ch in " \t\f\v\r":
                i += 1
            elif ch == "#":
                break
            elif ch in "\"'":
                text, end = _string(source, line, n, i)
                yield _Token("string", text, n, i + 1, end - i)
                i = end
            elif ch in _PUNCT:
                yield _Token("punct", ch, n, i + 1, 1)
                i += 1
            elif m := _NUMBER.match(line, i):
                yield _Token("number", m.group(), n, i + 1, m.end() - i)
                i = m.end()
            elif m := _NAME.match(line, i):
                kind = "number" if m.group().lower().lstrip("-") in ("inf", "infinity", "nan") \
                    else "name"
                yield _Token(kind, m.group(), n, i + 1, m.end() - i)
                i = m.end()
            else:
                word = re.match(r"[^\s{}<>:\[\],;#]+", line[i:])
                shown = word.group() if word else ch
                if re.match(r"-?\.?[0-9]", shown):
                    raise source.fail(MALFORMED, source.loc(n, i + 1, len(shown)),
                                      f"`{shown}` is not a number",
                                      "write a number as 12, 0.0001 or 1e-4")
                hint = ("protobuf text format writes `name: value`" if ch == "=" else
                        "fields are `name: value` or `name { … }`; comments start with `#`")
                raise source.fail(MALFORMED, source.loc(n, i + 1, 1),
                                  f"unexpected `{ch}`" + (f" in `{shown}`" if shown != ch else ""),
                                  hint)
    last = len(source.lines)
    yield _Token("end", "", max(last, 1), len(source.lines[-1]) + 1 if last else 1, 0)


def _string(source: Source, line: str, n: int, start: int) -> tuple[str, int]:
    """The decoded string starting at `start` (its quote) and the index after its end."""
    quote = line[start]
    out: list[str] = []
    i = start + 1
    while i < len(line):
        ch = line[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\" and i + 1 < len(line):
            nxt = line[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            octal = re.match(r"[0-7]{1,3}", line[i + 1:])
            if octal:
                out.append(chr(int(octal.group(), 8)))
                i += 1 + len(octal.group())
                continue
        out.append(ch)
        i += 1
    raise source.fail(MALFORMED, source.loc(n, start + 1), "this string is never closed",
                      f"end it with {quote} on the same line")
