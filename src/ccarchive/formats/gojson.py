"""Primitives that reproduce Go ``encoding/json`` output byte for byte.

Go's encoder differs from Python's ``json`` module in float formatting (shortest digits, 'f' form
between 1e-6 and 1e21, ``e-7`` not ``e-07``), HTML escaping of ``<>&``, the escaping of U+2028 /
U+2029 and of invalid UTF-8, and the absence of spaces.  Struct encoders in ``formats.meta``,
``formats.data`` and ``cluster`` build their output from these pieces.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

from ..errors import FormatError

_ESCAPES = {i: f"\\u{i:04x}" for i in range(0x20)}
_ESCAPES.update({
    ord("\\"): "\\\\", ord('"'): '\\"',
    ord("\b"): "\\b", ord("\f"): "\\f", ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t",
    ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026",
    0x2028: "\\u2028", 0x2029: "\\u2029",
})
_ESCAPES.update({c: "\\ufffd" for c in range(0xD800, 0xE000)})  # lone surrogates = invalid UTF-8 in Go
_NEEDS_ESCAPE = frozenset(chr(c) for c in _ESCAPES)

#: The range of Go's ``int`` (64 bits where cc-backend runs): an integer outside it does not
#: decode in Go, and would not fit a job DB or Parquet column either.
GO_INT_MIN, GO_INT_MAX = -(1 << 63), (1 << 63) - 1


def fits_go_int(v: int) -> bool:
    """True when ``v`` is within Go's ``int`` range."""
    return GO_INT_MIN <= v <= GO_INT_MAX


def go_number(v: int | float) -> float:
    """A JSON number as Go's float64 decodes it, or FormatError for an integer beyond the float64
    range (Go refuses it; Python's ``float`` raises OverflowError)."""
    try:
        return float(v)
    except OverflowError:  # only an int overflows here
        raise FormatError(f"an integer of {len(str(abs(v)))} digits is beyond the float64 range") from None


def go_string(s: str) -> str:
    """A JSON string literal exactly as Go writes it (HTML escaping on)."""
    if _NEEDS_ESCAPE.isdisjoint(s):
        return '"' + s + '"'
    return '"' + s.translate(_ESCAPES) + '"'


def go_float64(x: float) -> str:
    """A float64 the way Go's encoding/json writes it; NaN and Inf cannot be encoded."""
    if not math.isfinite(x):
        raise FormatError(f"cannot encode {x!r} as JSON (Go's encoder refuses NaN and Inf)")
    r = repr(float(x))
    if "e" not in r:  # 1e-4 <= |x| < 1e16 or zero: the same shortest digits, Go drops a ".0"
        return r[:-2] if r.endswith(".0") else r
    sign, digits, exp = Decimal(r).as_tuple()
    assert isinstance(exp, int)
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    exp += len("".join(map(str, digits))) - len(ds)  # value = ds * 10**exp
    neg = "-" if sign else ""
    a = abs(x)
    if 1e-6 <= a < 1e21:
        if exp >= 0:
            return neg + ds + "0" * exp
        point = len(ds) + exp
        if point > 0:
            return neg + ds[:point] + "." + ds[point:]
        return neg + "0." + "0" * (-point) + ds
    e10 = len(ds) - 1 + exp
    mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
    esign = "-" if e10 < 0 else "+"
    ed = abs(e10)
    # Go writes at least two exponent digits, then json cleans e-0X to e-X (not e+0X).
    etxt = f"{ed:02d}" if esign == "+" else str(ed)
    return f"{neg}{mant}e{esign}{etxt}"


def go_f2(x: float) -> str:
    """``strconv.AppendFloat(x, 'f', 2, 64)``: exactly two decimals, round half to even on the
    exact binary value (Python's ``format`` does the same)."""
    return format(x, ".2f")


def parse_object(raw: bytes | str | dict[str, Any], what: str) -> dict[str, Any]:
    """A JSON document that must be an object (``raw`` may already be parsed), or a
    FormatError naming ``what`` (``data.json``, ``meta.json``)."""
    if isinstance(raw, dict):
        return raw
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError(f"{what}: not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise FormatError(f"{what}: top level must be an object, not {type(obj).__name__}")
    return obj
