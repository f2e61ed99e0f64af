"""Caffe's protobuf text fields read with their types, and numbers written back as a spec
writes them.

caffe.proto types every field; a value of the wrong type, a singular field given twice or a
misspelt field name is a located error (`Problem`), raised where a layer converts so that one
bad layer does not hide the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import TypeVar

from alexnetc.compiler.errors import Diagnostic, SourceLoc
from alexnetc.importers.draft import call as spec_call
from alexnetc.importers.prototxt import Field, Message, Value
from alexnetc.importers.source import MALFORMED, Source, closest

# The fields of the parameter messages read here (caffe.proto); a near miss is an error.
# The fields of the parameter messages read here (caffe.proto); a near miss is an error.
KNOWN_FIELDS = {
    "convolution_param": (
        "num_output", "bias_term", "pad", "kernel_size", "stride", "dilation", "pad_h", "pad_w",
        "kernel_h", "kernel_w", "stride_h", "stride_w", "group", "weight_filler", "bias_filler",
        "engine", "axis", "force_nd_im2col"),
    "pooling_param": ("pool", "pad", "pad_h", "pad_w", "kernel_size", "kernel_h", "kernel_w",
                      "stride", "stride_h", "stride_w", "engine", "global_pooling",
                      "round_mode"),
    "lrn_param": ("local_size", "alpha", "beta", "norm_region", "k", "engine"),
    "inner_product_param": ("num_output", "bias_term", "weight_filler", "bias_filler", "axis",
                            "transpose"),
    "dropout_param": ("dropout_ratio", "scale_train"),
    "relu_param": ("negative_slope", "engine"),
    "concat_param": ("axis", "concat_dim"),
    "eltwise_param": ("operation", "coeff", "stable_prod_grad"),
    "batch_norm_param": ("use_global_stats", "moving_average_fraction", "eps"),
    "scale_param": ("axis", "num_axes", "filler", "bias_term", "bias_filler"),
    "softmax_param": ("engine", "axis"),
    "prelu_param": ("filler", "channel_shared"),
    "reshape_param": ("shape", "axis", "num_axes"),
    "flatten_param": ("axis", "end_axis"),
}


class Problem(Exception):
    """What stops one layer from converting: a located diagnostic, not yet recorded."""

    def __init__(self, kind: str, loc: SourceLoc, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.diagnostic = Diagnostic(kind, loc, message, hint)


def text_of(f: Field) -> str:
    return f.value.text if isinstance(f.value, Value) else ""


T = TypeVar("T")


def single(msg: Message, key: str) -> Field | None:
    """A singular field: protobuf refuses one given twice."""
    found = msg.all(key)
    if len(found) > 1:
        raise Problem(MALFORMED, found[1].loc, f"`{key}` is given twice",
                      "a singular field takes one value; remove one")
    return found[0] if found else None


def opt(msg: Message, key: str, read: Callable[[Field], T], default: T) -> T:
    f = single(msg, key)
    return default if f is None else read(f)


def loc_of(msg: Message, key: str) -> SourceLoc:
    f = msg.get(key)
    return f.loc if f is not None else msg.loc


def scalar(f: Field, what: str) -> Value:
    if not isinstance(f.value, Value):
        raise Problem(MALFORMED, f.loc, f"`{f.name}` takes {what}, not a message",
                      f"write `{f.name}: VALUE`")
    return f.value


def whole(f: Field, minimum: int = 0) -> int:
    v = scalar(f, "a whole number")
    try:
        value = int(v.text, 16) if v.text.lower().startswith(("0x", "-0x")) else int(v.text)
    except ValueError:
        raise Problem(MALFORMED, v.loc, f"`{f.name}` takes a whole number, not {_shown(v)}",
                      f"write e.g. `{f.name}: 3`") from None
    if value < minimum:
        raise Problem(MALFORMED, v.loc, f"`{f.name}` must be at least {minimum}, not {value}")
    return value


def positive(f: Field) -> int:
    return whole(f, 1)


def signed(f: Field) -> int:
    return whole(f, -(2**31))


def decimal(f: Field) -> Decimal:
    v = scalar(f, "a number")
    try:
        if v.kind != "number":
            raise InvalidOperation
        value = Decimal(v.text.rstrip("fF"))
    except InvalidOperation:
        raise Problem(MALFORMED, v.loc, f"`{f.name}` takes a number, not {_shown(v)}",
                      f"write e.g. `{f.name}: 0.5`") from None
    if not value.is_finite():
        raise Problem(MALFORMED, v.loc, f"`{f.name}` must be finite, not {v.text}")
    return value


def boolean(f: Field) -> bool:
    v = scalar(f, "true or false")
    if v.kind != "string" and v.text in ("true", "True", "t", "1"):
        return True
    if v.kind != "string" and v.text in ("false", "False", "f", "0"):
        return False
    raise Problem(MALFORMED, v.loc, f"`{f.name}` takes true or false, not {_shown(v)}")


def enum(*choices: str) -> Callable[[Field], str]:
    def read(f: Field) -> str:
        v = scalar(f, "one of " + ", ".join(choices))
        if v.kind == "word" and v.text in choices:
            return v.text
        close = closest(v.text.upper(), choices, cutoff=0.5)
        raise Problem(MALFORMED, v.loc, f"`{f.name}` takes one of {', '.join(choices)}, "
                      f"not {_shown(v)}", f"did you mean {close}?" if close else "")

    return read


def string(f: Field) -> str:
    v = scalar(f, "a string")
    if v.kind != "string":
        raise Problem(MALFORMED, v.loc, f"`{f.name}` takes a \"string\", not {_shown(v)}",
                      f'write `{f.name}: "{v.text}"`')
    return v.text


def _shown(v: Value) -> str:
    return f'"{v.text}"' if v.kind == "string" else f"`{v.text}`"


def check_fields(msg: Message, key: str, source: Source) -> None:
    """Caffe refuses a field its message lacks: a near miss of a known field is a typo (an
    error); anything else is taken for a fork's extension and ignored with a warning."""
    known = KNOWN_FIELDS[key]
    for f in msg.fields:
        if f.name in known:
            continue
        close = closest(f.name, known, cutoff=0.75)
        if close:
            raise Problem(MALFORMED, f.loc, f"`{key}` has no field `{f.name}`",
                          f"did you mean `{close}`?")
        source.warning(MALFORMED, f.loc, f"`{key}` has no field `{f.name}` in BVLC Caffe; "
                       "alexnetc ignores it", "it may belong to a fork of Caffe")


def value_loc(f: Field) -> SourceLoc:
    return f.value.loc if isinstance(f.value, Value) else f.loc


def dec(value: Decimal) -> str:
    """An exact decimal as written (0.00002, not 2e-05), or the float's shortest repr when
    the decimal runs long (0.0001 / 3)."""
    value = value.normalize()
    if value == value.to_integral_value():
        return str(int(value))
    text = format(value, "f")
    return text if len(text) <= 16 else repr(float(value))


def call(name: str, positional: Sequence[str], keywords: Sequence[tuple[str, str]]) -> str:
    return spec_call(name, [*positional, *(f"{k}={v}" for k, v in keywords)])
