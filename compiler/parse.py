"""Spec text → AST, with every syntax error turned into a located, friendly diagnostic."""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import cast

from lark import Lark, Token, Transformer, Tree, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError

from alexnetc.compiler import ast
from alexnetc.compiler.errors import SYNTAX, Diagnostic, SourceLoc, SpecError, source_lines
from alexnetc.grammar import grammar_text

MAX_SOURCE_BYTES = 1_000_000

BOM = "\ufeff"  # a UTF-8 byte-order mark, which some Windows editors put at the start of a file

KEYWORDS, _SECTIONS = ast.KEYWORDS, ast.SECTIONS
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # the grammar's NAME
_TRAILING_SHAPE = re.compile(r"[ \t\f]*([0-9]+(?:[x×][0-9]+)*)[ \t\f]*(?:#.*)?\r?")

# Common mistakes, matched by lark's `match_examples` against the parser state they fail in.
_EXAMPLES: dict[str, list[str]] = {
    "a stage needs a name and a colon: `conv1: Conv(11,4) x96 + ReLU`": [
        "Conv(11,4)\n",
        "Conv(11,4) x96 + ReLU\n",
    ],
    "an argument list is missing its closing `)`": [
        "c: Conv(11,4\n",
        "c: Conv(11,4 x96\n",
        "c: MaxPool(3,2;\n",
        "c: Conv(11,4x96 + ReLU\n",
    ],
    "the output channels come after the arguments, as `x96`": [
        "c: Conv(11,4) 96\n",
        "c: Conv(11,4) x 96\n",
    ],
    "sizes are written HxWxC, like `227x227x3`": [
        "input 227,227,3\n",
        "input 227 x 227 x 3\n",
        "input\n",
        "c: Conv(11,4) x96 -> 27 x 27 x 96\n",
        "c: Conv(11,4) x96 ->\n",
    ],
    "ops in a stage are joined by `;` (or `+` for an activation): `Conv(3,1) x384 + ReLU`": [
        "c: Conv(11,4) x96 ReLU\n",
        "c: Conv(11,4) ReLU\n",
        "c: ReLU ReLU\n",
    ],
    "a stage lists at least one op after its colon": [
        "c:\n",
        "c: -> 1x1x1\n",
    ],
    "keyword arguments are `name=value`, separated by commas": [
        "c: Conv(11,4, pad)\n",
        "c: Conv(11,4, pad=)\n",
        "c: Conv(11 4)\n",
        "train lr\n",
        "train lr=\n",
    ],
}


@lru_cache(maxsize=1)
def _examples() -> dict[str, list[str]]:
    """Each example as a first statement and after another one: the parser states differ."""
    prefixes = [lead + stmts for lead in ("", "\n")
                for stmts in ("", "input 1x1x1\n", "s: ReLU\n", "input 1x1x1\ns: ReLU\n")]
    return {label: [p + ex for ex in exs for p in prefixes] for label, exs in _EXAMPLES.items()}


@lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(
        grammar_text(),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=False,
        cache=True,
    )


def _loc(file: str, meta: object) -> SourceLoc:
    m = meta
    return SourceLoc(
        file,
        getattr(m, "line", 1),
        getattr(m, "column", 1),
        getattr(m, "end_line", getattr(m, "line", 1)),
        getattr(m, "end_column", getattr(m, "column", 1) + 1),
    )


# Whole numbers longer than this are refused while parsing: Python will not convert more
# (sys.get_int_max_str_digits()). Shorter ones reach the checker, which reports any beyond
# its limits (2**31 − 1 for sizes) with their meaning.
MAX_DIGITS = 4300


class _TooLong(Exception):
    """A whole number with more than MAX_DIGITS digits (lark wraps it in a VisitError)."""

    def __init__(self, tok: Token, digits: int):
        super().__init__(str(tok))
        self.tok = tok
        self.digits = digits


def _int(text: str, tok: Token) -> int:
    digits = len(text.lstrip("+-"))
    if digits > MAX_DIGITS:
        raise _TooLong(tok, digits)
    return int(text)


def _number(text: str, tok: Token) -> int | float:
    if any(ch in text for ch in ".eE"):
        return float(text)  # any length: a float too large is inf, which the checker reports
    return _int(text, tok)


def _channels(tok: Token) -> int | str:
    """`x96` → 96; `xc` → "c", a block parameter's name."""
    text = str(tok)[1:]
    return _int(text, tok) if text.isdigit() else text


def _dims(tok: Token) -> tuple[int, ...]:
    return tuple(_int(p, tok) for p in str(tok).split("x"))


class _ToAst(Transformer):
    """Parse tree → AST. Only structure here; meaning is checked by the passes."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _tok(self, tok: Token) -> SourceLoc:
        return _loc(self.file, tok)

    @v_args(meta=True)
    def number(self, meta: object, children: list[Token]) -> tuple[int | float, SourceLoc]:
        return _number(str(children[0]), children[0]), self._tok(children[0])

    @v_args(meta=True)
    def word(self, meta: object, children: list[Token]) -> tuple[str, SourceLoc]:
        return str(children[0]), self._tok(children[0])

    @v_args(meta=True)
    def size(self, meta: object, children: list[Token]) -> tuple[tuple[int, ...], SourceLoc]:
        return _dims(children[0]), self._tok(children[0])

    @v_args(meta=True)
    def arg(self, meta: object, children: list[object]) -> ast.Arg:
        if len(children) == 1:
            value, loc = cast(tuple[ast.Value, SourceLoc], children[0])
            return ast.Arg(None, value, loc)
        name = children[0]
        value, _ = cast(tuple[ast.Value, SourceLoc], children[1])
        return ast.Arg(str(name), value, _loc(self.file, meta))

    kwarg = arg

    @v_args(meta=True)
    def call(self, meta: object, children: list[object]) -> ast.OpCall:
        name = children[0]
        assert isinstance(name, Token)
        args = tuple(c for c in children[1:] if isinstance(c, ast.Arg))
        chan = next((c for c in children[1:] if isinstance(c, Token)), None)
        repeat = next((c for c in children[1:] if isinstance(c, tuple)), None)
        return ast.OpCall(
            name=str(name),
            args=args,
            channels=_channels(chan) if chan is not None else None,
            loc=_loc(self.file, meta),
            name_loc=self._tok(name),
            channels_loc=self._tok(chan) if chan is not None else None,
            joined=False,
            repeat=repeat[0] if repeat else None,
            repeat_loc=repeat[1] if repeat else None,
        )

    def repeat(self, children: list[Token]) -> tuple[int | float, SourceLoc]:
        return _number(str(children[0]), children[0]), self._tok(children[0])

    def term(self, children: list[ast.OpCall]) -> list[ast.OpCall]:
        first, *rest = children
        return [first] + [dataclasses.replace(c, joined=True) for c in rest]

    @v_args(meta=True)
    def ref(self, meta: object, children: list[Token]) -> ast.Ref:
        return ast.Ref(str(children[0]), self._tok(children[0]))

    def sources(self, children: list[ast.Ref]) -> tuple[ast.Ref, ...]:
        return tuple(children)

    @v_args(meta=True)
    def param(self, meta: object, children: list[object]) -> ast.BlockParam:
        name = children[0]
        assert isinstance(name, Token)
        default = cast(tuple[ast.Value, SourceLoc], children[1])[0] if len(children) > 1 \
            else None
        return ast.BlockParam(str(name), default, _loc(self.file, meta))

    @v_args(meta=True)
    def block(self, meta: object, children: list[object]) -> ast.Block:
        name = children[0]
        assert isinstance(name, Token)
        params = tuple(c for c in children[1:] if isinstance(c, ast.BlockParam))
        stages = tuple(c for c in children[1:] if isinstance(c, ast.Stage))
        return ast.Block(str(name), params, stages, _loc(self.file, meta), self._tok(name))

    @v_args(meta=True)
    def expect(self, meta: object, children: list[Token]) -> ast.Expect:
        return ast.Expect(_dims(children[0]), self._tok(children[0]))

    @v_args(meta=True)
    def stage(self, meta: object, children: list[object]) -> ast.Stage:
        name = children[0]
        assert isinstance(name, Token)
        ops: list[ast.OpCall] = []
        expect = None
        sources: tuple[ast.Ref, ...] = ()
        for c in children[1:]:
            if isinstance(c, list):
                ops.extend(c)
            elif isinstance(c, ast.Expect):
                expect = c
            elif isinstance(c, tuple):
                sources = c
        return ast.Stage(str(name), tuple(ops), expect, _loc(self.file, meta), self._tok(name),
                         sources)

    @v_args(meta=True)
    def setting(self, meta: object, children: list[object]) -> ast.Setting:
        section = children[0]
        assert isinstance(section, Token)
        args = tuple(c for c in children[1:] if isinstance(c, ast.Arg))
        return ast.Setting(str(section), args, _loc(self.file, meta))

    @v_args(meta=True)
    def network(self, meta: object, children: list[Token]) -> ast.Header:
        return ast.Header("network", str(children[0]), _loc(self.file, meta),
                          self._tok(children[0]))

    @v_args(meta=True)
    def input(self, meta: object, children: list[Token]) -> ast.Header:
        return ast.Header("input", _dims(children[0]), _loc(self.file, meta),
                          self._tok(children[0]))

    @v_args(meta=True)
    def towers(self, meta: object, children: list[Token]) -> ast.Header:
        return ast.Header("towers", _number(str(children[0]), children[0]),
                          _loc(self.file, meta),
                          self._tok(children[0]))


def _syntax_diagnostic(file: str, text: str, err: UnexpectedInput) -> Diagnostic:
    line = max(getattr(err, "line", 1) or 1, 1)
    col = max(getattr(err, "column", 1) or 1, 1)
    rectangle = _rectangle(file, text, line, col)
    if rectangle is not None:
        return rectangle
    label = None
    if isinstance(err, UnexpectedToken):
        try:
            label = err.match_examples(_parser().parse, _examples(), use_accepts=True)
        except Exception:  # it re-parses the examples; never let that escape to the user
            label = None
    if isinstance(err, UnexpectedToken):
        tok = err.token
        if tok.type == "$END":
            lines = source_lines(text) or [""]
            line, col = len(lines), len(lines[-1]) + 1
            what = "unexpected end of file"
        elif tok.type == "_NL":
            what = "unexpected end of line"
        else:
            what = f"unexpected {_describe(tok)}"
        width = max(len(str(tok)), 1) if tok.type not in ("$END", "_NL") else 1
        expected = _expected(err.accepts or err.expected)
        if tok.type == "COLON":
            label = _keyword_stage_hint(text, line, col) or label
    elif isinstance(err, UnexpectedCharacters):
        pos = err.pos_in_stream or 0
        ch = text[pos] if pos < len(text) else ""
        what = f"unexpected character {ch!r}"
        width = 1
        expected = _expected(err.allowed or set())
        label = _character_hint(text, pos) if ch else None
    else:  # UnexpectedEOF
        lines = source_lines(text) or [""]
        line, col, width = len(lines), len(lines[-1]) + 1, 1
        what = "unexpected end of file"
        expected = _expected(getattr(err, "expected", []) or [])
    message = what + (f"; expected {expected}" if expected else "")
    loc = SourceLoc(file, line, col, line, col + width)
    return Diagnostic(SYNTAX, loc, message, label or "")


# A size `AxB` where the language takes one whole number: an op's argument or a setting's value.
_SIZE_VALUE = re.compile(r"(?<=[(,=])[ \t\f]*([0-9]+(?:x[0-9]+)+)")
_SIZE = re.compile(r"(?<![A-Za-z0-9_])[0-9]+(?:x[0-9]+)+")


def _rectangle(file: str, text: str, line: int, col: int) -> Diagnostic | None:
    """`resize=256x256`: the parser stops at the `x256` or the token after it and would blame
    a missing `=`; the mistake is the rectangle itself (a setting takes one number)."""
    lines = source_lines(text)
    src = lines[line - 1] if 0 < line <= len(lines) else ""
    for match in _SIZE_VALUE.finditer(src):
        start, end = match.span(1)
        after = end + len(src[end:]) - len(src[end:].lstrip(" \t\f"))  # the next token
        if not start < col - 1 <= after:
            continue
        hint = _rectangle_hint(src, start, end, after)
        if hint is None:
            return None
        loc = SourceLoc(file, line, start + 1, line, end + 1)
        return Diagnostic(SYNTAX, loc, f"unexpected size {match.group(1)!r}; expected one number",
                          hint)
    return None


def _rectangle_hint(src: str, start: int, end: int, after: int) -> str | None:
    """The hint for the size at src[start:end], with the statement rewritten as an example;
    None where it is more likely something else (`Conv(11,4x96 + ReLU`: a missing `)`)."""
    if src.rfind("(", 0, start) > src.rfind(")", 0, start):
        return None  # an op's argument takes sizes: something else is wrong there
    words = src.split(None, 1)
    if not words or words[0] not in _SECTIONS:
        return None
    statement = src.split("#", 1)[0].strip()
    return f"a setting's value is one number, e.g. `{_SIZE.sub(_larger_side, statement)}`"


def _larger_side(size: re.Match[str]) -> str:
    """`1x7` → `7`: compared as digit strings, which may be longer than int() takes."""
    return max(size.group().split("x"), key=lambda d: (len(d.lstrip("0")), d.lstrip("0")))


def _keyword_stage_hint(text: str, line: int, col: int) -> str | None:
    """`train: …` or `input: …`: a keyword where a stage name (or a YAML habit) was meant."""
    lines = source_lines(text)
    word = lines[line - 1][:col - 1].strip() if 0 < line <= len(lines) else ""
    if word not in KEYWORDS:
        return None
    usage = "k=v, …" if word in _SECTIONS else {
        "network": "NAME", "input": "HxWxC", "towers": "N", "block": "NAME(params) {"}[word]
    return (f"`{word}` is a keyword: its line is written `{word} {usage}`, without a colon, and "
            f"a stage cannot be named `{word}` (call it, say, `{word}1`)")


def _character_hint(text: str, pos: int) -> str | None:
    """A hint for a character no token can start with: mostly Unicode pasted into a spec."""
    ch = text[pos]
    end = text.find("\n", pos)
    rest = text[pos + 1:len(text) if end < 0 else end]
    if ch == "→":
        shape = _TRAILING_SHAPE.fullmatch(rest)
        example = "-> " + (shape.group(1).replace("×", "x") if shape else "HxWxC")
        return ("`→ …` is the checker's output, not input: shapes are computed, not written, so "
                "delete the `→ …` part; to have the checker confirm a stage's final shape, end "
                f"the stage with `{example}` (ASCII `->`)")
    if ch == "×":
        start, stop = _run(text, pos, lambda c: c in "0123456789x×")
        word = text[start:stop]
        towers = word.split("×")[0]
        if towers and text[text.rfind("\n", 0, start) + 1:start].strip() == "towers":
            return (f"`{word}` is how the checker's table prints towers × maps per tower; the "
                    f"line takes only the number of towers: `towers {towers}`")
        return (f"write an ASCII `x` for `×`: `{word.replace('×', 'x')}` (the checker prints "
                "`×` in its table; a spec writes `x`)")
    if ch == BOM:
        return ("this is an invisible byte-order mark (U+FEFF), which belongs only at the very "
                "start of a file (one is left where two files were joined, say): delete it")
    if ch.isascii():
        return None
    what = _unicode_name(ch)
    if ch.isspace():
        return f"this is {what}, not an ordinary space: retype it as a space"
    category = unicodedata.category(ch)
    if category[0] in "LM":
        start, stop = _run(text, pos, lambda c: c.isalnum() or c == "_"
                           or unicodedata.category(c)[0] == "M")
        word = text[start:stop]
        ascii_word = "".join(c for c in unicodedata.normalize("NFKD", word)
                             if unicodedata.category(c) != "Mn")
        fix = f": write `{ascii_word}` for `{word}`" if _NAME.fullmatch(ascii_word) else ""
        return ("names are ASCII letters, digits and `_`, and start with a letter or `_` "
                f"(`[A-Za-z_][A-Za-z0-9_]*`){fix}")
    if category[0] == "N":
        return f"this is {what}; numbers and sizes are written with the ASCII digits 0-9"
    return f"{what} is not part of the language: outside comments a spec is ASCII"


def _run(text: str, pos: int, ok: Callable[[str], bool]) -> tuple[int, int]:
    """The extent of the run of `ok` characters on `pos`'s line around `pos`."""
    start, stop = pos, pos + 1
    while start > 0 and text[start - 1] != "\n" and ok(text[start - 1]):
        start -= 1
    while stop < len(text) and text[stop] != "\n" and ok(text[stop]):
        stop += 1
    return start, stop


def _unicode_name(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" {name}" if name else "")


_TERMINAL_NAMES = {
    "NAME": "name",
    "NUMBER": "number",
    "DIMS": "a size like 27x27x96",
    "SIZE": "a size like 1x7",
    "CHANNELS": "a channel count like x96",
    "SECTION": "train/augment/init",
    "_NL": "end of line",
    "LPAR": "'('",
    "RPAR": "')'",
    "COMMA": "','",
    "COLON": "':'",
    "SEMICOLON": "';'",
    "PLUS": "'+'",
    "EQUAL": "'='",
    "__ANON_0": "'->'",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "STAR": "",  # `* N` repeats a block: after every call, but never what was meant there
    "BLOCK": "'block'",
    "NETWORK": "'network'",
    "INPUT": "'input'",
    "TOWERS": "'towers'",
}


def _describe(tok: Token) -> str:
    if tok.type in ("NAME", "NUMBER", "DIMS", "SIZE", "CHANNELS", "SECTION"):
        kind = {"DIMS": "size", "SIZE": "size", "CHANNELS": "channel count",
                "SECTION": "keyword"}.get(tok.type, tok.type.lower())
        return f"{kind} {str(tok)!r}"
    return repr(str(tok))


def _expected(names: Iterable[str]) -> str:
    article = {"NAME": "a name", "NUMBER": "a number"}
    shown = sorted({article.get(n) or _TERMINAL_NAMES.get(n, n) for n in names
                    if not n.startswith("$")})
    shown = [s for s in shown if s and not s.startswith("__")]
    if not shown:
        return ""
    if len(shown) > 6:
        return ", ".join(shown[:6]) + ", ..."
    return " or ".join(shown) if len(shown) <= 2 else ", ".join(shown[:-1]) + " or " + shown[-1]


def parse(text: str, file: str = "<spec>") -> ast.Network:
    """Parse spec text; raise `SpecError` (never a lark exception) on bad input.

    A byte-order mark at the very start is dropped: it is invisible in the editor, so the
    columns of the first line count from the first character the user sees.
    """
    if text.startswith(BOM):
        text = text[len(BOM):]
    if len(text) > MAX_SOURCE_BYTES:
        loc = SourceLoc(file, 1, 1, 1, 2)
        raise SpecError([Diagnostic(SYNTAX, loc, f"spec is {len(text):,} characters long",
                                    f"specs are limited to {MAX_SOURCE_BYTES:,} characters")],
                        None)
    bad = next((i for i, ch in enumerate(text) if ch == "\x00"), None)
    if bad is not None:
        line = text.count("\n", 0, bad) + 1
        col = bad - (text.rfind("\n", 0, bad) + 1) + 1
        loc = SourceLoc(file, line, col, line, col + 1)
        raise SpecError([Diagnostic(SYNTAX, loc, "spec contains a NUL byte (is it a binary file?)",
                                    "a spec is plain text")], None)
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as err:
        raise SpecError([_syntax_diagnostic(file, text, err)], text) from None
    except RecursionError:
        loc = SourceLoc(file, 1, 1, 1, 2)
        raise SpecError([Diagnostic(SYNTAX, loc, "spec is nested too deeply to parse")],
                        text) from None
    try:
        return _to_network(file, text, tree)
    except VisitError as err:
        if not isinstance(err.orig_exc, _TooLong):
            raise
        tok, digits = err.orig_exc.tok, err.orig_exc.digits
        raise SpecError([Diagnostic(
            SYNTAX, _loc(file, tok), f"a number of {digits:,} digits",
            f"numbers have at most {MAX_DIGITS:,} digits; sizes are at most 2147483647 "
            "(2**31 − 1)")], text) from None


def _to_network(file: str, text: str, tree: Tree) -> ast.Network:
    items = _ToAst(file).transform(tree).children
    headers = tuple(i for i in items if isinstance(i, ast.Header))
    settings = tuple(i for i in items if isinstance(i, ast.Setting))
    stages = tuple(i for i in items if isinstance(i, ast.Stage))
    blocks = tuple(i for i in items if isinstance(i, ast.Block))
    lines = source_lines(text) or [""]
    whole = SourceLoc(file, 1, 1, len(lines), len(lines[-1]) + 1)
    return ast.Network(file, text, headers, settings, stages, whole, blocks)
