"""JSON arrays of numbers straight into numpy, exactly and without Python objects.

Why a kernel: ``json.loads`` builds a Python float (24 bytes plus a list slot) for every sample of
a data.json and numpy then copies them; that is most of the time of loading an archived job and
about eight times the text in memory.  These kernels read the UTF-8 text as a ``uint8`` array and
write the numbers into a float64 (or float32) array: one pass, no objects, ~8 bytes per sample.

Two entry points, both exact:

* :func:`parse_array` -- one array: ``[1.5, null, -2e3]`` at ``buf[pos]`` -> values and the offset
  after its ``]``.  The compiled :func:`parse_array_into` does the same into a caller's array and
  can be called from other kernels.
* :func:`parse_document` -- a whole document in one kernel call.  Every array whose elements are
  all numbers or ``null`` (including ``[]``) goes into one flat value array; the rest of the
  document (keys, strings, objects, other arrays, scalars) is kept as a small *skeleton* text in
  which array ``k`` is replaced by the marker ``[k]``.  :meth:`NumberDocument.tree` decodes the
  skeleton with ``json`` and puts each array back as a numpy view, so a caller gets the familiar
  dicts and lists with numpy arrays where the numbers were.  The whole document is checked
  (strict JSON plus Python's ``NaN``/``Infinity``; nesting at most :data:`MAX_DEPTH`), and a
  malformed one raises :class:`JsonSyntaxError` with the byte offset, line and column.
* :func:`parse_query_answer` -- the usual answer of cc-metric-store's query API straight into
  tables, without ``json`` and without the GIL (None for anything else: use ``parse_document``).

Speed: a sample of at most 8 bytes with its separator (``2608.85,`` ``-0.05]`` ``null,``) is read
as one 8-byte word plus a byte; digits, the '.', the end and the validity are found by bit
arithmetic on the word, and the digits converted by three multiplications, without a branch per
character.  Longer numbers take a per-digit path.  About 600-700 MB/s of data.json text on one
core here, 15-25x ``json.loads`` followed by numpy.

Exactness: every number is the float64 Python's ``float(text)`` gives (``null`` -> NaN, ``-0`` ->
-0.0).  Up to 19 significant digits and decimal exponents within +-22 the value is
``digits * 10**e`` or ``digits / 10**-e`` with both operands exact in float64 -- one correctly
rounded operation (Clinger's fast path), which covers data.json's 2-decimal samples.  Other
numbers use the Eisel-Lemire method: the digits times a 128-bit truncated power of five, accepted
only when the discarded bits prove the rounding (otherwise it gives up).  What neither method
decides -- subnormals, overflow to infinity, more than 19 digits that round differently when
truncated, exact ties -- is listed by the kernels as *slow* and converted by the Python wrappers
with ``float(text)``.  float32 output is ``float32(float64 value)``, as numpy converts.

Example (the answer shape of cc-metric-store's query API)::

    >>> import numpy as np
    >>> from ccarchive.kernels.jsonnum import parse_array, parse_document
    >>> text = b'{"results":[[{"data":[1.5,null,2.125],"avg":1.81,"from":60}]]}'
    >>> doc = parse_document(np.frombuffer(text, dtype=np.uint8))
    >>> doc.tree()["results"][0][0]["data"]
    array([1.5  ,   nan, 2.125])
    >>> doc.skeleton
    '{"results":[[{"data":[0],"avg":1.81,"from":60}]]}'
    >>> parse_array(text, text.index(b"[1.5"))
    (array([1.5  ,   nan, 2.125]), 37)
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any

import numba as nb
import numpy as np
import numpy.typing as npt
from llvmlite import ir
from numba.core import types
from numba.cpython.unsafe.numbers import leading_zeros, trailing_zeros
from numba.extending import intrinsic

#: Deepest nesting of objects and arrays accepted (Python's json recursion stays far from its limit).
MAX_DEPTH = 512

# Status codes of the kernels (0 = success); see ERRORS for the messages.
OK = 0
NOT_NUMBERS = 1     # parse_array_into: an element is not a number or null (the array is structure)
OUT_FULL = 2        # parse_array_into: ``out`` has no room for the next value
SLOW_FULL = 3       # parse_array_into: ``slow`` has no room for the next slow value
END_OF_TEXT = 10
EXPECTED_VALUE = 11
BAD_NUMBER = 12
BAD_LITERAL = 13
BAD_STRING = 14
CONTROL_CHARACTER = 15
BAD_ESCAPE = 16
EXPECTED_ARRAY_END = 17
EXPECTED_OBJECT_END = 18
EXPECTED_KEY = 19
EXPECTED_COLON = 20
TRAILING_TEXT = 21
TOO_DEEP = 22
NOT_AN_ARRAY = 23
NOT_UTF8 = 24

ERRORS = {
    NOT_NUMBERS: "array element is not a number or null",
    END_OF_TEXT: "unexpected end of text",
    EXPECTED_VALUE: "expected a value",
    BAD_NUMBER: "malformed number",
    BAD_LITERAL: "unknown literal (expected true, false or null)",
    BAD_STRING: "unterminated string",
    CONTROL_CHARACTER: "control character in a string",
    BAD_ESCAPE: "invalid escape in a string",
    EXPECTED_ARRAY_END: "expected ',' or ']'",
    EXPECTED_OBJECT_END: "expected ',' or '}'",
    EXPECTED_KEY: "expected a string key",
    EXPECTED_COLON: "expected ':'",
    TRAILING_TEXT: "extra text after the document",
    TOO_DEEP: f"nested deeper than {MAX_DEPTH} levels",
    NOT_AN_ARRAY: "expected '['",
    NOT_UTF8: "not UTF-8 text",
}

_U64 = np.uint64
_MASK32 = np.uint64(0xFFFFFFFF)
_TWO53 = np.uint64(1 << 53)
_NAN = math.nan
_INF = math.inf
# exact powers of ten in float64 (10**22 is the last one)
_POW10 = np.array([10.0**k for k in range(23)], dtype=np.float64)
_POW10_INT = np.array([10**k for k in range(20)], dtype=np.uint64)
_EXP_LIMIT = 1_000_000  # exponent digits beyond this cannot change the result (all go to the slow path)
#: The word-at-a-time path reads 8 bytes as one little-endian integer (a compile-time constant).
_WORDS = sys.byteorder == "little"

_Q_MIN, _Q_MAX = -342, 308  # decimal exponents of the Eisel-Lemire table


def _power_of_five_table() -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64], npt.NDArray[np.int64]]:
    """For q in [-342, 308]: T = floor(5**q * 2**s) with 2**127 <= T < 2**128, as (high, low)
    64-bit words, and ``1213 + q - s``, the part of the float64 biased exponent that depends on q.

    Why 1213: with w normalised to [2**63, 2**64) by a shift of lz bits, ``w * T_high`` is
    ``w0 * 10**q * 2**(lz + s - q + 64)``; its high word h has 63 + u significant bits (u = its
    top bit), the 53-bit mantissa m keeps the top bits of h, so ``w0 * 10**q ~ m * 2**(138 + u +
    q - lz - s)``, and a float64 m * 2**(E - 1075) has the biased exponent
    ``E = 1213 + q - s + u - lz``."""
    n = _Q_MAX - _Q_MIN + 1
    hi, lo = np.empty(n, dtype=np.uint64), np.empty(n, dtype=np.uint64)
    base = np.empty(n, dtype=np.int64)
    for i, q in enumerate(range(_Q_MIN, _Q_MAX + 1)):
        if q >= 0:
            p = 5**q
            s = 128 - p.bit_length()
            t = p << s if s >= 0 else p >> -s
        else:
            d = 5**-q
            s = 127 + d.bit_length()
            t = (1 << s) // d
        assert 1 << 127 <= t < 1 << 128
        hi[i], lo[i] = t >> 64, t & ((1 << 64) - 1)
        base[i] = 1213 + q - s
    return hi, lo, base


_P5_HI, _P5_LO, _P5_BASE = _power_of_five_table()


# ----------------------------------------------------------------------------------------------
# Numbers


@nb.njit(cache=True, inline="always")
def _mul128(a, b):  # pragma: no cover - compiled
    """The 128-bit product of two uint64, as (high, low)."""
    a0, a1 = a & _MASK32, a >> _U64(32)
    b0, b1 = b & _MASK32, b >> _U64(32)
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> _U64(32)) + (p01 & _MASK32) + (p10 & _MASK32)
    lo = (mid << _U64(32)) | (p00 & _MASK32)
    hi = p11 + (p01 >> _U64(32)) + (p10 >> _U64(32)) + (mid >> _U64(32))
    return hi, lo


@nb.njit(cache=True)
def _eisel_lemire(w, q):  # pragma: no cover - compiled
    """``w * 10**q`` correctly rounded, for 0 < w < 2**64 and q in the table; (value, True), or
    (0, False) when the product does not prove the rounding or the result is not a normal float.

    The product's high word carries the 54 bits needed (53 and a rounding bit); its low 9 bits
    and low word are guard bits.  The truncated table entry and the unused low word of it make
    the product too small by less than w (in units of the low word), so only when the guard bits
    are all ones can a carry change the result: then the low word's product is added, and if
    that still leaves all ones the method gives up."""
    i = q - _Q_MIN
    lz = np.int64(leading_zeros(w))
    w = w << _U64(lz)
    hi, lo = _mul128(w, _P5_HI[i])
    if hi & _U64(0x1FF) == _U64(0x1FF) and lo + w < lo:
        # the low word of the power may carry into the bits we keep: add its product
        hi2, lo2 = _mul128(w, _P5_LO[i])
        lo_sum = lo + hi2
        if lo_sum < lo:
            hi += _U64(1)
        lo = lo_sum
        if hi & _U64(0x1FF) == _U64(0x1FF) and lo + _U64(1) == _U64(0) and lo2 + w < lo2:
            return 0.0, False
    upper = np.int64(hi >> _U64(63))
    m = hi >> _U64(9 + upper)  # 54 bits
    if lo == _U64(0) and hi & _U64(0x1FF) == _U64(0) and m & _U64(3) == _U64(1):
        return 0.0, False  # exactly half-way in the truncated product: a tie the bits cannot break
    m = (m + (m & _U64(1))) >> _U64(1)
    e = _P5_BASE[i] + upper - lz
    if m >> _U64(53) != _U64(0):
        m = m >> _U64(1)
        e += 1
    if e <= 0 or e >= 0x7FF:
        return 0.0, False  # subnormal or overflow
    return math.ldexp(np.float64(m), e - 1075), True  # m < 2**53 and a normal exponent: exact


@nb.njit(cache=True)
def _literal(buf, pos, n, word):  # pragma: no cover - compiled
    """True when ``buf[pos:]`` starts with ``word`` (uint8 array)."""
    if pos + word.shape[0] > n:
        return False
    for k in range(word.shape[0]):  # noqa: SIM110 - a loop compiles; all() over a generator does not
        if buf[pos + k] != word[k]:
            return False
    return True


_W_NAN = np.frombuffer(b"NaN", dtype=np.uint8).copy()
_W_INFINITY = np.frombuffer(b"Infinity", dtype=np.uint8).copy()
_W_NULL = np.frombuffer(b"null", dtype=np.uint8).copy()
_W_TRUE = np.frombuffer(b"true", dtype=np.uint8).copy()
_W_FALSE = np.frombuffer(b"false", dtype=np.uint8).copy()


@nb.njit(cache=True)
def parse_number(buf, pos):  # pragma: no cover - compiled
    """The JSON number at ``buf[pos]`` (also ``NaN``, ``Infinity``, ``-Infinity``).

    Returns ``(value, end, kind)``: kind 0 = ``value`` is exact, 1 = slow (the caller converts
    ``buf[pos:end]`` exactly), -1 = malformed at ``end``."""
    n = buf.shape[0]
    neg = False
    if buf[pos] == 45:  # '-'
        neg = True
        pos += 1
        if pos >= n:
            return _NAN, pos, -1
    c = buf[pos]
    if c == 78 or c == 73:  # 'N'aN, 'I'nfinity
        if not neg and _literal(buf, pos, n, _W_NAN):
            return _NAN, pos + 3, 0
        if _literal(buf, pos, n, _W_INFINITY):
            return (-_INF if neg else _INF), pos + 8, 0
        return _NAN, pos, -1
    w = _U64(0)
    digits = 0      # significant digits in w
    q = 0           # decimal exponent of w
    dropped = False  # a non-zero digit beyond the 19th was dropped
    if c == 48:  # '0': the integer part is just 0
        pos += 1
    elif 49 <= c <= 57:
        while pos < n:
            d = np.int64(buf[pos]) - 48
            if d < 0 or d > 9:
                break
            if digits < 19:
                w = w * _U64(10) + _U64(d)
                digits += 1
            else:
                q += 1
                dropped = dropped or d != 0
            pos += 1
    else:
        return _NAN, pos, -1
    if pos < n and buf[pos] == 46:  # '.'
        pos += 1
        first = pos
        while pos < n:
            d = np.int64(buf[pos]) - 48
            if d < 0 or d > 9:
                break
            if digits < 19:
                if digits or d:
                    w = w * _U64(10) + _U64(d)
                    digits += 1
                q -= 1
            else:
                dropped = dropped or d != 0
            pos += 1
        if pos == first:
            return _NAN, pos, -1
    if pos < n and (buf[pos] == 101 or buf[pos] == 69):  # 'e', 'E'
        pos += 1
        eneg = False
        if pos < n and (buf[pos] == 45 or buf[pos] == 43):
            eneg = buf[pos] == 45
            pos += 1
        first = pos
        e = 0
        while pos < n:
            d = np.int64(buf[pos]) - 48
            if d < 0 or d > 9:
                break
            if e < _EXP_LIMIT:
                e = e * 10 + d
            pos += 1
        if pos == first:
            return _NAN, pos, -1
        q += -e if eneg else e
    if w == _U64(0):
        return (-0.0 if neg else 0.0), pos, 0
    value = 0.0
    exact = False
    if not dropped and w <= _TWO53:
        if 0 <= q <= 22:
            value, exact = np.float64(w) * _POW10[q], True
        elif -22 <= q < 0:
            value, exact = np.float64(w) / _POW10[-q], True
        elif 22 < q <= 22 + 15 and w <= _TWO53 // _POW10_INT[q - 22]:
            value, exact = np.float64(w * _POW10_INT[q - 22]) * _POW10[22], True
    if not exact and _Q_MIN <= q <= _Q_MAX:
        value, exact = _eisel_lemire(w, q)
        if exact and dropped:  # the digits were truncated: the value must not depend on them
            upper, ok = _eisel_lemire(w + _U64(1), q)
            exact = ok and upper == value
    if not exact:
        return _NAN, pos, 1
    return (-value if neg else value), pos, 0


# ----------------------------------------------------------------------------------------------
# One array


@nb.njit(cache=True, inline="always")
def _skip_ws(buf, pos, n):  # pragma: no cover - compiled
    while pos < n:
        c = buf[pos]
        if c != 32 and c != 10 and c != 13 and c != 9:
            break
        pos += 1
    return pos


@intrinsic
def _load8(typingctx, arr, pos):  # pragma: no cover - compiled
    """The 8 bytes at ``arr[pos]`` as one little-endian uint64 (one unaligned load; the caller
    checks ``pos + 8 <= len(arr)``).  Assembling them byte by byte is not merged by LLVM."""
    sig = types.uint64(arr, types.intp)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        ptr = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(64).as_pointer())
        return builder.load(ptr, align=1)

    return sig, codegen


@nb.njit(cache=True, inline="always")
def _digits8(x):  # pragma: no cover - compiled
    """The run of ASCII digits at the start of 8 little-endian bytes: (length 0..8, value when
    the length is below 8).  Per byte, ``b + 0x46`` and ``b - 0x30`` set the top bit exactly for
    non-digits; carries only reach later bytes, which do not matter after the first non-digit."""
    mask = ((x + _U64(0x4646464646464646)) | (x - _U64(0x3030303030303030))) & _U64(0x8080808080808080)
    if mask == _U64(0):
        return 8, _U64(0)
    length = np.int64(trailing_zeros(mask)) >> 3
    if length == 0:
        return 0, _U64(0)
    # the digits into the top bytes (zero bytes below act as leading zeros), then pairs, quads, all
    y = (x << _U64(64 - 8 * length)) & _U64(0x0F0F0F0F0F0F0F0F)
    y = (y * _U64(2561)) >> _U64(8)
    y = ((y & _U64(0x00FF00FF00FF00FF)) * _U64(6553601)) >> _U64(16)
    y = ((y & _U64(0x0000FFFF0000FFFF)) * _U64(42949672960001)) >> _U64(32)
    return length, y


@nb.njit(cache=True, inline="always")
def _plain_decimal(buf, pos, n):  # pragma: no cover - compiled
    """``-?digits[.digits]`` with at most 7 + 7 digits, read 8 bytes at a time: (value, end,
    True), or (0, pos, False) for anything else (the general parser's job).  The value is exact:
    digits < 2**53 divided by an exact power of ten is one correctly rounded operation."""
    p = pos + (buf[pos] == 45)
    if not _WORDS or p + 16 > n:
        return 0.0, pos, False
    whole, iv = _digits8(_load8(buf, p))
    if whole == 0 or whole == 8 or (whole > 1 and buf[p] == 48):
        return 0.0, pos, False
    p += whole
    value = 0.0
    if buf[p] == 46:  # '.'
        decimals, fv = _digits8(_load8(buf, p + 1))
        if decimals == 0 or decimals == 8:
            return 0.0, pos, False
        p += 1 + decimals
        value = np.float64(iv * _POW10_INT[decimals] + fv) / _POW10[decimals]
    else:
        value = np.float64(iv)
    if buf[p] | 32 == 101:  # an exponent follows
        return 0.0, pos, False
    return (-value if buf[pos] == 45 else value), p, True


_HIGH = np.uint64(0x8080808080808080)
_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)
#: SPAN[t]: the top bit of each of the first t bytes of a word
_SPAN = np.array([((1 << (8 * t)) - 1) & 0x8080808080808080 for t in range(9)], dtype=np.uint64)


def _short_layouts() -> npt.NDArray[np.uint64]:
    """One row per (length 0..8, position of the '.' 0..8 with 8 = none), index ``9*length + dot``:
    valid, leading-zero check needed, then how to drop the '.' and right-align the digits for the
    8-digit conversion (keep-low mask, right shift, left shift, final left shift) and the number
    of decimals.  Without a '.', ``(x >> 63) << 63`` only repeats a bit of x: x stays as it is."""
    rows = np.zeros((81, 7), dtype=np.uint64)
    for length in range(9):
        for dot in range(9):
            has_dot = dot < 8
            valid = 1 <= length <= 8 and (not has_dot or 1 <= dot <= length - 2)
            whole = dot if has_dot else length
            digits = length - has_dot
            if not valid:
                continue
            if has_dot:
                keep, right, left = (1 << (8 * dot)) - 1, 8 * (dot + 1), 8 * dot
            else:
                keep, right, left = (1 << 64) - 1, 63, 63
            decimals = length - 1 - dot if has_dot else 0
            rows[9 * length + dot] = (1, whole > 1, keep, right, left, 64 - 8 * digits, decimals)
    return rows


_LAYOUT = _short_layouts()


@nb.njit(cache=True, inline="always")
def _zero_bytes(v):  # pragma: no cover - compiled
    """The top bit of every zero byte of ``v`` (exact for each byte: no carries between bytes)."""
    return ~(((v & _LOW7) + _LOW7) | v) & _HIGH


@nb.njit(cache=True, inline="always")
def _short_value(x, ninth):  # pragma: no cover - compiled
    """A number of at most 8 bytes followed by ``,`` or ``]``, in the 8 little-endian bytes ``x``
    and the byte after them, ``ninth``: ``-?digits[.digits]``.  Returns (ok, value, length,
    ends_array).

    Branch-free on purpose: only finding the end is on the path to the next value, everything
    else (validation, digits) runs beside it -- 15-20 % faster than reading digit by digit."""
    neg = np.int64((x & _U64(0xFF)) == _U64(45))
    xd = x >> _U64(8 * neg)
    at_least_0 = ((xd | _HIGH) - _U64(0x3030303030303030)) & _HIGH
    above_9 = ((xd & _LOW7) + _U64(0x4646464646464646)) & _HIGH
    digits = at_least_0 & ~above_9 & ~xd
    dots = _zero_bytes(xd ^ _U64(0x2E2E2E2E2E2E2E2E))
    length = np.int64(trailing_zeros(~(digits | dots) & _HIGH)) >> 3  # 8: no end in the word
    dots = dots & _SPAN[length]
    row = 9 * length + (np.int64(trailing_zeros(dots)) >> 3)
    after = (xd >> _U64(8 * (length & 7))) & _U64(0xFF)
    after = _U64(ninth) if length + neg == 8 else after
    ok = (_LAYOUT[row, 0] != _U64(0)) & ((after == _U64(44)) | (after == _U64(93)))
    ok = ok & ((dots & (dots - _U64(1))) == _U64(0))  # at most one '.'
    ok = ok & ~(((xd & _U64(0xFF)) == _U64(48)) & (_LAYOUT[row, 1] != _U64(0)))  # no leading zero
    merged = (xd & _LAYOUT[row, 2]) | ((xd >> _LAYOUT[row, 3]) << _LAYOUT[row, 4])  # without the '.'
    y = (merged << _LAYOUT[row, 5]) & _U64(0x0F0F0F0F0F0F0F0F)  # the digits in the top bytes
    y = (y * _U64(2561)) >> _U64(8)  # pairs, quads, all eight
    y = ((y & _U64(0x00FF00FF00FF00FF)) * _U64(6553601)) >> _U64(16)
    y = ((y & _U64(0x0000FFFF0000FFFF)) * _U64(42949672960001)) >> _U64(32)
    value = np.float64(y) / _POW10[np.int64(_LAYOUT[row, 6])]  # < 10**8 over an exact power of ten
    return ok, (-value if neg else value), length + neg, after == _U64(93)


@nb.njit(cache=True, inline="always")
def _short_null(x):  # pragma: no cover - compiled
    """``null`` and its separator in the little-endian bytes ``x``: as :func:`_short_value`."""
    after = (x >> _U64(32)) & _U64(0xFF)
    return (after == _U64(44)) | (after == _U64(93)), _NAN, 4, after == _U64(93)


@nb.njit(cache=True)
def _array_into(buf, pos, out, k, slow, ns):  # pragma: no cover - compiled
    """The numbers of the array at ``buf[pos] == '['`` into ``out[k:]``, slow values into
    ``slow[ns:]`` as rows (value index, text start, text end).  Returns ``(status, end, k, ns)``;
    on an error ``end`` is where it was found."""
    n = buf.shape[0]
    cap, slow_cap = out.shape[0], slow.shape[0]
    pos = _skip_ws(buf, pos + 1, n)
    if pos >= n:
        return END_OF_TEXT, pos, k, ns
    if buf[pos] == 93:  # ']'
        return OK, pos + 1, k, ns
    while True:
        if _WORDS and pos + 9 <= n:  # the compact form: a short value and its separator in 9 bytes
            x = _load8(buf, pos)
            if x & _U64(0xFFFFFFFF) == _U64(0x6C6C756E):  # null: missing samples come in runs
                ok, value, length, last = _short_null(x)
            else:
                ok, value, length, last = _short_value(x, buf[pos + 8])
            if ok:
                if k >= cap:
                    return OUT_FULL, pos, k, ns
                out[k] = value
                k += 1
                pos += length + 1
                if last:
                    return OK, pos, k, ns
                continue
        pos = _skip_ws(buf, pos, n)
        if pos >= n:
            return END_OF_TEXT, pos, k, ns
        c = buf[pos]
        if c == 45 or 48 <= c <= 57:
            if k >= cap:
                return OUT_FULL, pos, k, ns
            value, end, done = _plain_decimal(buf, pos, n)
            if not done:
                value, end, kind = parse_number(buf, pos)
                if kind < 0:
                    return BAD_NUMBER, end, k, ns
                if kind == 1:
                    if ns >= slow_cap:
                        return SLOW_FULL, pos, k, ns
                    slow[ns, 0], slow[ns, 1], slow[ns, 2] = k, pos, end
                    ns += 1
            out[k] = value
            pos = end
        elif c == 110:  # 'n'
            if not _literal(buf, pos, n, _W_NULL):
                return BAD_LITERAL, pos, k, ns
            if k >= cap:
                return OUT_FULL, pos, k, ns
            out[k] = _NAN
            pos += 4
        elif c == 78 or c == 73:  # NaN, Infinity
            value, end, kind = parse_number(buf, pos)
            if kind < 0:
                return BAD_NUMBER, end, k, ns
            if k >= cap:
                return OUT_FULL, pos, k, ns
            out[k] = value
            pos = end
        elif c == 93 and k:  # ']' right after a comma
            return EXPECTED_VALUE, pos, k, ns
        else:
            return NOT_NUMBERS, pos, k, ns
        k += 1
        pos = _skip_ws(buf, pos, n)
        if pos >= n:
            return END_OF_TEXT, pos, k, ns
        if buf[pos] == 93:
            return OK, pos + 1, k, ns
        if buf[pos] != 44:
            return EXPECTED_ARRAY_END, pos, k, ns
        pos = _skip_ws(buf, pos + 1, n)
        if pos >= n:
            return END_OF_TEXT, pos, k, ns


@nb.njit(cache=True)
def parse_array_into(buf, pos, out, slow):  # pragma: no cover - compiled
    """The array of numbers / ``null`` at ``buf[pos]`` (whitespace before it skipped) into ``out``.

    Returns ``(status, end, count, nslow)``: ``out[:count]`` holds the values (NaN for null),
    ``end`` is the offset after ``]`` (or of the error).  Rows ``slow[:nslow]`` (value index, text
    start, text end) name values to convert exactly with ``float(buf[start:end])``, left NaN here.
    ``status`` is :data:`OK`, :data:`OUT_FULL` / :data:`SLOW_FULL` (too small: nothing is lost by
    retrying with larger arrays) or an error code of :data:`ERRORS`."""
    n = buf.shape[0]
    pos = _skip_ws(buf, pos, n)
    if pos >= n:
        return END_OF_TEXT, pos, 0, 0
    if buf[pos] != 91:
        return NOT_AN_ARRAY, pos, 0, 0
    return _array_into(buf, pos, out, 0, slow, 0)


@nb.njit(cache=True)
def _array_bound(buf, pos):  # pragma: no cover - compiled
    """At least the number of values of the array at ``buf[pos]``: commas before the first ``]``."""
    count = 1
    for i in range(pos, buf.shape[0]):
        c = buf[i]
        if c == 93:
            break
        count += c == 44
    return count


# ----------------------------------------------------------------------------------------------
# A whole document


@nb.njit(cache=True)
def _scan_string(buf, pos, n):  # pragma: no cover - compiled
    """``buf[pos] == '"'``: (status, offset after the closing quote or of the error)."""
    pos += 1
    while pos < n:
        c = buf[pos]
        if c == 34:
            return OK, pos + 1
        if c == 92:  # backslash
            if pos + 1 >= n:
                return BAD_STRING, pos
            e = buf[pos + 1]
            if e == 117:  # \uXXXX
                for j in range(pos + 2, pos + 6):
                    if j >= n:
                        return BAD_ESCAPE, pos
                    h = buf[j] | 32
                    if not (48 <= buf[j] <= 57 or 97 <= h <= 102):
                        return BAD_ESCAPE, pos
                pos += 6
            elif e == 34 or e == 92 or e == 47 or e == 98 or e == 102 or e == 110 or e == 114 or e == 116:
                pos += 2
            else:
                return BAD_ESCAPE, pos
        elif c < 32:
            return CONTROL_CHARACTER, pos
        else:
            pos += 1
    return BAD_STRING, pos


@nb.njit(cache=True)
def _grow_bytes(a, need):  # pragma: no cover - compiled
    b = np.empty(max(need, 2 * a.shape[0]), dtype=np.uint8)
    b[: a.shape[0]] = a
    return b


@nb.njit(cache=True)
def _grow_values(a, keep, need):  # pragma: no cover - compiled
    b = np.empty(need, dtype=a.dtype)
    b[:keep] = a[:keep]
    return b


@nb.njit(cache=True)
def _grow_rows(a, need):  # pragma: no cover - compiled
    b = np.empty((max(need, 2 * a.shape[0]), a.shape[1]), dtype=np.int64)
    b[: a.shape[0]] = a
    return b


@nb.njit(cache=True)
def _put_marker(skel, sk, index):  # pragma: no cover - compiled
    """Write ``[index]`` at ``skel[sk]`` (room checked by the caller); returns the new end."""
    skel[sk] = 91
    digits = 1
    t = index
    while t >= 10:
        t //= 10
        digits += 1
    end = sk + 1 + digits
    t = index
    for j in range(digits):
        skel[end - 1 - j] = 48 + t % 10
        t //= 10
    skel[end] = 93
    return end + 1


_IN_ARRAY, _IN_OBJECT = 1, 2
_WANT_VALUE, _WANT_KEY, _AFTER_VALUE = 0, 1, 2


@nb.njit(cache=True, nogil=True)
def document_kernel(buf, values, arrays, slow, skel, max_depth):  # pragma: no cover - compiled
    """Walk a JSON document: number arrays into ``values``, the rest into the skeleton.

    Every output array grows when full (``values`` at most once: to a bound from the text left).
    Row ``k`` of ``arrays`` is (value offset, count, text start, text end, skeleton offset of the
    marker).  Returns ``(status, position, values, nvalues, arrays, narrays, slow, nslow, skel,
    nskel)``; ``position`` is where an error was found."""
    n = buf.shape[0]
    stack = np.empty(max_depth + 1, dtype=np.uint8)
    depth = na = k = ns = sk = 0
    copied = 0  # the text before this offset is in the skeleton already
    state = _WANT_VALUE
    status = OK
    pos = _skip_ws(buf, 0, n)
    while True:
        if state == _AFTER_VALUE:
            pos = _skip_ws(buf, pos, n)
            if depth == 0:
                if pos < n:
                    status = TRAILING_TEXT
                break
            if pos >= n:
                status = END_OF_TEXT
                break
            c = buf[pos]
            top = stack[depth - 1]
            if c == 44:  # ','
                pos = _skip_ws(buf, pos + 1, n)
                state = _WANT_KEY if top == _IN_OBJECT else _WANT_VALUE
            elif (c == 93 and top == _IN_ARRAY) or (c == 125 and top == _IN_OBJECT):
                depth -= 1
                pos += 1
            else:
                status = EXPECTED_ARRAY_END if top == _IN_ARRAY else EXPECTED_OBJECT_END
                break
            continue
        if pos >= n:
            status = END_OF_TEXT
            break
        c = buf[pos]
        if state == _WANT_KEY:
            if c != 34:
                status = EXPECTED_KEY
                break
            status, pos = _scan_string(buf, pos, n)
            if status != OK:
                break
            pos = _skip_ws(buf, pos, n)
            if pos >= n or buf[pos] != 58:  # ':'
                status = END_OF_TEXT if pos >= n else EXPECTED_COLON
                break
            pos = _skip_ws(buf, pos + 1, n)
            state = _WANT_VALUE
            continue
        state = _AFTER_VALUE  # after this value
        if c == 91:  # '[': a number array, or structure when an element is something else
            status, end, k2, ns2 = _array_into(buf, pos, values, k, slow, ns)
            while status == SLOW_FULL or status == OUT_FULL:  # noqa: SIM109 - compiled comparisons
                if status == SLOW_FULL:
                    slow = _grow_rows(slow, 2 * slow.shape[0] + 16)
                else:  # a value takes at least 2 bytes ("0,"): bound what the text left can hold
                    values = _grow_values(values, k, k2 + (n - end) // 2 + 2)
                status, end, k2, ns2 = _array_into(buf, pos, values, k, slow, ns)
            if status == OK:
                if na >= arrays.shape[0]:
                    arrays = _grow_rows(arrays, 2 * arrays.shape[0] + 16)
                need = sk + (pos - copied) + 24
                if need > skel.shape[0]:
                    skel = _grow_bytes(skel, need)
                skel[sk : sk + pos - copied] = buf[copied:pos]
                sk += pos - copied
                arrays[na, 0], arrays[na, 1], arrays[na, 2], arrays[na, 3], arrays[na, 4] = k, k2 - k, pos, end, sk
                sk = _put_marker(skel, sk, na)
                na += 1
                k, ns = k2, ns2
                pos = copied = end
            elif status == NOT_NUMBERS:
                status = OK
                if depth >= max_depth:
                    status = TOO_DEEP
                    break
                stack[depth] = _IN_ARRAY
                depth += 1
                pos = _skip_ws(buf, pos + 1, n)
                state = _WANT_VALUE
            else:
                pos = end
                break
        elif c == 123:  # '{'
            if depth >= max_depth:
                status = TOO_DEEP
                break
            pos = _skip_ws(buf, pos + 1, n)
            if pos < n and buf[pos] == 125:
                pos += 1
            else:
                stack[depth] = _IN_OBJECT
                depth += 1
                state = _WANT_KEY
        elif c == 34:  # a string
            status, pos = _scan_string(buf, pos, n)
            if status != OK:
                break
        elif c == 45 or 48 <= c <= 57 or c == 78 or c == 73:  # a number (checked, kept as text)
            _value, end, kind = parse_number(buf, pos)
            if kind < 0:
                status, pos = BAD_NUMBER, end
                break
            pos = end
        elif c == 116 or c == 102 or c == 110:  # true, false, null
            word = _W_TRUE if c == 116 else (_W_FALSE if c == 102 else _W_NULL)
            if not _literal(buf, pos, n, word):
                status = BAD_LITERAL
                break
            pos += word.shape[0]
        else:
            status = EXPECTED_VALUE
            break
    if status == OK:
        need = sk + (n - copied)
        if need > skel.shape[0]:
            skel = _grow_bytes(skel, need)
        skel[sk:need] = buf[copied:n]
        sk = need
    return status, pos, values, k, arrays, na, slow, ns, skel, sk


# ----------------------------------------------------------------------------------------------
# The answer of cc-metric-store's query API
#
# ``{"results":[[{"data":[...],"from":F,"to":T,"resolution":R,"avg":..},...],...]}``: the only
# document the archiver parses on every job.  Going through the skeleton and ``json`` costs a dict
# per entry; this kernel reads the known shape straight into tables, without the GIL, and gives
# up (status ANSWER_NOT_USUAL) on anything else -- other keys or values of unexpected types,
# escapes or non-ASCII bytes in strings, malformed text -- which the caller then parses with
# :func:`parse_document` (the general path that also names what is wrong).

ANSWER_NOT_USUAL = 30
#: Columns of an answer's entry table.
E_FROM, E_TO, E_RESOLUTION, E_OFFSET, E_COUNT, E_ERROR_START, E_ERROR_END = range(7)

_K_RESULTS = np.frombuffer(b"results", dtype=np.uint8).copy()
_K_DATA = np.frombuffer(b"data", dtype=np.uint8).copy()
_K_FROM = np.frombuffer(b"from", dtype=np.uint8).copy()
_K_TO = np.frombuffer(b"to", dtype=np.uint8).copy()
_K_RESOLUTION = np.frombuffer(b"resolution", dtype=np.uint8).copy()
_K_ERROR = np.frombuffer(b"error", dtype=np.uint8).copy()


@nb.njit(cache=True, inline="always")
def _plain_string(buf, pos, n):  # pragma: no cover - compiled
    """``buf[pos] == '"'``: the offset after the closing quote of a string of printable ASCII
    without escapes (what it means is then its bytes), or -1."""
    pos += 1
    while pos < n:
        c = buf[pos]
        if c == 34:
            return pos + 1
        if c == 92 or c < 32 or c >= 128:
            return -1
        pos += 1
    return -1


@nb.njit(cache=True, inline="always")
def _same_bytes(buf, start, end, word):  # pragma: no cover - compiled
    if end - start != word.shape[0]:
        return False
    for j in range(word.shape[0]):  # noqa: SIM110 - a loop compiles
        if buf[start + j] != word[j]:
            return False
    return True


@nb.njit(cache=True)
def _member(buf, pos, n):  # pragma: no cover - compiled
    """A key at ``buf[pos]`` and its ':': (key start, key end, offset of the value), or -1s."""
    if pos >= n or buf[pos] != 34:
        return -1, -1, -1
    end = _plain_string(buf, pos, n)
    if end < 0:
        return -1, -1, -1
    p = _skip_ws(buf, end, n)
    if p >= n or buf[p] != 58:
        return -1, -1, -1
    p = _skip_ws(buf, p + 1, n)
    if p >= n:
        return -1, -1, -1
    return pos + 1, end - 1, p


@nb.njit(cache=True)
def _integer(buf, pos, n):  # pragma: no cover - compiled
    """A JSON integer (``-?(0|[1-9][0-9]*)``, at most 18 digits, not followed by a fraction or an
    exponent) at ``buf[pos]``: (value, end), end -1 for anything else."""
    p = pos + (buf[pos] == 45)
    first = p
    value = 0
    while p < n and 48 <= buf[p] <= 57:
        value = value * 10 + np.int64(buf[p]) - 48
        p += 1
    digits = p - first
    if digits == 0 or digits > 18 or (digits > 1 and buf[first] == 48):
        return 0, -1
    if p < n and (buf[p] == 46 or buf[p] | 32 == 101):
        return 0, -1
    return (-value if buf[pos] == 45 else value), p


@nb.njit(cache=True)
def _scalar(buf, pos, n):  # pragma: no cover - compiled
    """The end of a number, ``true``, ``false``, ``null`` or plain string at ``buf[pos]``, or -1."""
    c = buf[pos]
    if c == 34:
        return _plain_string(buf, pos, n)
    if c == 45 or 48 <= c <= 57 or c == 78 or c == 73:
        _value, end, kind = parse_number(buf, pos)
        return -1 if kind < 0 else end
    if c == 116 or c == 102 or c == 110:
        word = _W_TRUE if c == 116 else (_W_FALSE if c == 102 else _W_NULL)
        return pos + word.shape[0] if _literal(buf, pos, n, word) else -1
    return -1


@nb.njit(cache=True, nogil=True)
def query_answer_kernel(buf, values, slow, entries, queries):  # pragma: no cover - compiled
    """Read a query answer into ``values`` (every ``data`` array, one after the other), ``entries``
    (per entry: from, to, resolution, value offset, count or -1 without ``data``, span of the
    ``error`` text or -1) and ``queries`` (per query: first entry, entries, 1 when they are the
    usual block: no error, same from/to/resolution, ``data`` of equal length).  Every entry has
    integer ``from``, ``to`` and ``resolution``, and ``data`` or ``error``.  Returns ``(status,
    values, nvalues, slow, nslow, entries, nentries, queries, nqueries)``; arrays grow when full."""
    n = buf.shape[0]
    k = ns = ne = nq = 0
    pos = _skip_ws(buf, 0, n)
    if pos >= n or buf[pos] != 123:
        return ANSWER_NOT_USUAL, values, k, slow, ns, entries, ne, queries, nq
    ks, ke, pos = _member(buf, _skip_ws(buf, pos + 1, n), n)
    if pos < 0 or not _same_bytes(buf, ks, ke, _K_RESULTS) or buf[pos] != 91:
        return ANSWER_NOT_USUAL, values, k, slow, ns, entries, ne, queries, nq
    pos = _skip_ws(buf, pos + 1, n)
    more = pos >= n or buf[pos] != 93
    if not more:
        pos += 1
    while more:  # queries
        if pos >= n or buf[pos] != 91:
            return ANSWER_NOT_USUAL, values, k, slow, ns, entries, ne, queries, nq
        if nq >= queries.shape[0]:
            queries = _grow_rows(queries, 2 * queries.shape[0])
        first = ne
        pos = _skip_ws(buf, pos + 1, n)
        entry = pos >= n or buf[pos] != 93
        if not entry:
            pos += 1
        while entry:  # the entries of one query
            if pos >= n or buf[pos] != 123:
                return ANSWER_NOT_USUAL, values, k, slow, ns, entries, ne, queries, nq
            if ne >= entries.shape[0]:
                entries = _grow_rows(entries, 2 * entries.shape[0])
            seen = 0  # data, from, to, resolution, error: bits 1, 2, 4, 8, 16
            frm = to = res = offset = 0
            count = -1
            error_start = error_end = -1
            pos = _skip_ws(buf, pos + 1, n)
            while True:  # members
                ks, ke, pos = _member(buf, pos, n)
                if pos < 0:
                    return ANSWER_NOT_USUAL, values, k, slow, ns, entries, ne, queries, nq
                bit = 0
                if _same_bytes(buf, ks, ke, _K_DATA):
                    bit = 1
                    if buf[pos] != 91:
                        return ANSWER_NOT_USUAL, values, k, slow, ns, entries, ne, queries, nq
                    status, end, k2, ns2 = _array_into(buf, pos, values, k, slow, ns)
                    while status == SLOW_FULL or status == OUT_FULL:  # noqa: SIM109 - compiled comparisons
                        if status == SLOW_FULL:
                            slow = _grow_rows(slow, 2 * slow.shape[0] + 16)
                        else:
                            values = _grow_values(values, k, k2 + (n - end) // 2 + 2)
                        status, end, k2, ns2 = _array_into(buf, pos, values, k, slow, ns)
                    if status != OK:
                        return ANSWER_NOT_USUAL, values, k, slow, ns, entries, ne, queries, nq
                    offset, count = k, k2 - k
                    k, ns = k2, ns2
                elif _same_bytes(buf, ks, ke, _K_FROM):
                    bit = 2
                    frm, end = _integer(buf, pos, n)
                elif _same_bytes(buf, ks, ke, _K_TO):
                    bit = 4
                    to, end = _integer(buf, pos, n)
                elif _same_bytes(buf, ks, ke, _K_RESOLUTION):
                    bit = 8
                    res, end = _integer(buf, pos, n)
                elif _same_bytes(buf, ks, ke, _K_ERROR):
                    bit = 16
                    end = _plain_string(buf, pos, n) if buf[pos] == 34 else -1
                    error_start, error_end = pos + 1, end - 1
                else:
                    end = _scalar(buf, pos, n)
                if end < 0 or seen & bit:
                    return ANSWER_NOT_USUAL, values, k, slow, ns, entries, ne, queries, nq
                seen |= bit
                pos = _skip_ws(buf, end, n)
                if pos < n and buf[pos] == 44:
                    pos = _skip_ws(buf, pos + 1, n)
                    continue
                if pos < n and buf[pos] == 125:
                    pos += 1
                    break
                return ANSWER_NOT_USUAL, values, k, slow, ns, entries, ne, queries, nq
            if (seen & 14) != 14 or (seen & 17) == 0:  # from, to, resolution; data or error
                return ANSWER_NOT_USUAL, values, k, slow, ns, entries, ne, queries, nq
            entries[ne, E_FROM], entries[ne, E_TO], entries[ne, E_RESOLUTION] = frm, to, res
            entries[ne, E_OFFSET], entries[ne, E_COUNT] = offset, count
            entries[ne, E_ERROR_START], entries[ne, E_ERROR_END] = error_start, error_end
            ne += 1
            pos = _skip_ws(buf, pos, n)
            if pos < n and buf[pos] == 44:
                pos = _skip_ws(buf, pos + 1, n)
            elif pos < n and buf[pos] == 93:
                pos += 1
                entry = False
            else:
                return ANSWER_NOT_USUAL, values, k, slow, ns, entries, ne, queries, nq
        block = 1
        for e in range(first, ne):
            if entries[e, E_ERROR_START] >= 0 or entries[e, E_COUNT] < 0:
                block = 0
            for c in (E_FROM, E_TO, E_RESOLUTION, E_COUNT):
                if entries[e, c] != entries[first, c]:
                    block = 0
        queries[nq, 0], queries[nq, 1], queries[nq, 2] = first, ne - first, block
        nq += 1
        pos = _skip_ws(buf, pos, n)
        if pos < n and buf[pos] == 44:
            pos = _skip_ws(buf, pos + 1, n)
        elif pos < n and buf[pos] == 93:
            pos += 1
            more = False
        else:
            return ANSWER_NOT_USUAL, values, k, slow, ns, entries, ne, queries, nq
    pos = _skip_ws(buf, pos, n)
    if pos >= n or buf[pos] != 125 or _skip_ws(buf, pos + 1, n) != n:
        return ANSWER_NOT_USUAL, values, k, slow, ns, entries, ne, queries, nq
    return OK, values, k, slow, ns, entries, ne, queries, nq


@nb.njit(cache=True, nogil=True)
def gather_rows(values, offsets, counts, width):  # pragma: no cover - compiled
    """Arrays ``values[offsets[i] : offsets[i] + counts[i]]`` as the rows of a new ``(n, width)``
    array, padded with NaN (ragged series into one block; without the GIL, so that convert's
    lanes decode side by side)."""
    n = offsets.shape[0]
    out = np.empty((n, width), dtype=values.dtype)
    for i in range(n):
        c, o = counts[i], offsets[i]
        out[i, :c] = values[o : o + c]
        out[i, c:] = np.nan
    return out


@nb.njit(cache=True)
def line_and_column(buf, pos):  # pragma: no cover - compiled
    """1-based line and column (in bytes) of offset ``pos``."""
    line, start = 1, 0
    for i in range(min(pos, buf.shape[0])):
        if buf[i] == 10:
            line += 1
            start = i + 1
    return line, pos - start + 1


# ----------------------------------------------------------------------------------------------
# Python wrappers (exact for every input: slow values are converted by Python's float)


class JsonSyntaxError(ValueError):
    """Malformed JSON: ``reason`` says what, ``position`` (byte offset), ``line`` and ``column``
    (1-based, in bytes) say where."""

    def __init__(self, reason: str, position: int, line: int, column: int) -> None:
        super().__init__(f"{reason} at line {line} column {column} (byte {position})")
        self.reason, self.position, self.line, self.column = reason, position, line, column


Buffer = bytes | bytearray | memoryview | npt.NDArray[np.uint8]


def as_buffer(text: Buffer | str) -> npt.NDArray[np.uint8]:
    """The text as a read-only contiguous uint8 array (no copy for bytes-like objects and arrays;
    read-only so that every caller uses the same compiled kernel variant)."""
    if isinstance(text, str):
        text = text.encode("utf-8")
    if isinstance(text, np.ndarray):
        if text.dtype != np.uint8 or text.ndim != 1:
            raise ValueError(f"expected a 1-D uint8 array, got {text.dtype} with shape {text.shape}")
        arr = np.ascontiguousarray(text).view()
    else:
        arr = np.frombuffer(text, dtype=np.uint8)
    arr.flags.writeable = False
    return arr


def syntax_error(buf: npt.NDArray[np.uint8], status: int, position: int) -> JsonSyntaxError:
    """The exception for a kernel's error ``status`` at ``position``."""
    line, column = line_and_column(buf, position)
    return JsonSyntaxError(ERRORS.get(status, f"error {status}"), int(position), int(line), int(column))


def _fix_slow(buf: npt.NDArray[np.uint8], out: np.ndarray, slow: npt.NDArray[np.int64]) -> None:
    for index, start, end in slow.tolist():
        out[index] = float(buf[start:end].tobytes())


def parse_array(
    text: Buffer | str, pos: int = 0, dtype: npt.DTypeLike = np.float64
) -> tuple[np.ndarray, int]:
    """The JSON array of numbers / ``null`` at ``text[pos]`` (whitespace before it skipped) as a
    new float64 (or float32) array, NaN for null, and the offset after its ``]``.

    Raises :class:`JsonSyntaxError` when there is no such array there or it is malformed."""
    buf = as_buffer(text)
    if not 0 <= pos <= buf.shape[0]:
        raise ValueError(f"position {pos} outside the text of {buf.shape[0]} bytes")
    out = np.empty(_array_bound(buf, pos), dtype=dtype)
    slow = np.empty((16, 3), dtype=np.int64)
    while True:
        status, end, count, nslow = parse_array_into(buf, pos, out, slow)
        if status != SLOW_FULL:
            break
        slow = np.empty((4 * slow.shape[0], 3), dtype=np.int64)
    if status != OK:
        raise syntax_error(buf, status, end)
    out = out[:count]
    _fix_slow(buf, out, slow[:nslow])
    return out, int(end)


@dataclass
class NumberDocument:
    """A JSON document whose number arrays were parsed by :func:`parse_document`.

    ``skeleton`` is the document's text with number array ``k`` replaced by ``[k]`` (nothing else
    changed, whitespace included); ``values[offsets[k] : offsets[k] + counts[k]]`` are its
    numbers.  Markers are unambiguous: an array left in the skeleton always holds something that
    is not a number, so a one-integer list there can only be a marker."""

    skeleton: str
    values: np.ndarray
    offsets: npt.NDArray[np.int64]
    counts: npt.NDArray[np.int64]
    #: (start, end) byte offsets of each number array in the original text
    text_spans: npt.NDArray[np.int64]

    @property
    def num_arrays(self) -> int:
        return int(self.offsets.shape[0])

    def array(self, k: int) -> np.ndarray:
        """Number array ``k`` (a view of ``values``)."""
        o = int(self.offsets[k])
        return self.values[o : o + int(self.counts[k])]

    @staticmethod
    def marker(obj: Any) -> int | None:
        """The array index if ``obj`` (from :meth:`loads`) is a marker ``[k]``, else None."""
        if type(obj) is list and len(obj) == 1 and type(obj[0]) is int:
            return obj[0]
        return None

    def loads(self) -> Any:
        """The skeleton decoded by ``json`` (markers left in place)."""
        return json.loads(self.skeleton)

    def tree(self) -> Any:
        """The document as ``json.loads`` gives it, with each number array as a numpy view."""
        root = [self.loads()]
        stack: list[Any] = [root]
        while stack:
            node = stack.pop()
            items = node.items() if isinstance(node, dict) else enumerate(node)
            for key, child in items:
                if isinstance(child, (dict, list)):
                    k = self.marker(child)
                    if k is None:
                        stack.append(child)
                    else:
                        node[key] = self.array(k)
        return root[0]


def _text_position(arrays: npt.NDArray[np.int64], skeleton_pos: int) -> int:
    """The offset in the original text of skeleton offset ``skeleton_pos`` (rows of ``arrays``
    as the document kernel fills them)."""
    k = int(np.searchsorted(arrays[:, 4], skeleton_pos, side="right")) - 1
    if k < 0:
        return skeleton_pos
    marker_end = int(arrays[k, 4]) + len(b"[%d]" % k)
    return int(arrays[k, 2]) if skeleton_pos < marker_end else int(arrays[k, 3]) + skeleton_pos - marker_end


def parse_document(
    text: Buffer | str, dtype: npt.DTypeLike = np.float64, max_depth: int = MAX_DEPTH
) -> NumberDocument:
    """Parse a whole JSON document (UTF-8) in one kernel call (see the module docstring).

    The result does not reference the text, so the caller can free it right after.  Raises
    :class:`JsonSyntaxError` for malformed JSON, text that is not UTF-8 and nesting deeper than
    ``max_depth``."""
    if not 1 <= max_depth <= MAX_DEPTH:
        raise ValueError(f"max_depth must be 1..{MAX_DEPTH}, got {max_depth}")
    buf = as_buffer(text)
    # np.empty does not touch the memory: only the part the numbers fill becomes resident.  A
    # value with its separator takes at least 5 bytes in data.json ("0.00," or "null,"), so this
    # only grows for denser text.
    values = np.empty(buf.shape[0] // 4 + 16, dtype=dtype)
    arrays = np.empty((buf.shape[0] // 4096 + 16, 5), dtype=np.int64)
    slow = np.empty((16, 3), dtype=np.int64)
    skel = np.empty(min(buf.shape[0], 1 << 16) + 32, dtype=np.uint8)
    status, position, values, nv, arrays, na, slow, ns, skel, nsk = document_kernel(
        buf, values, arrays, slow, skel, max_depth)
    if status != OK:
        err = syntax_error(buf, status, position)
        if status == TOO_DEEP:
            err = JsonSyntaxError(f"nested deeper than {max_depth} levels", err.position, err.line, err.column)
        raise err
    arrays = arrays[:na]
    try:
        skeleton = skel[:nsk].tobytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise syntax_error(buf, NOT_UTF8, _text_position(arrays, e.start)) from None
    del skel
    _fix_slow(buf, values, slow[:ns])
    return NumberDocument(skeleton=skeleton, values=values[:nv], offsets=arrays[:, 0].copy(),
                          counts=arrays[:, 1].copy(), text_spans=arrays[:, 2:4].copy())


@dataclass
class QueryAnswer:
    """A cc-metric-store query answer read by :func:`parse_query_answer`.

    ``values`` holds every ``data`` array, one after the other; row ``e`` of ``entries`` is entry
    ``e`` (columns ``E_FROM`` ... ``E_ERROR_END``: ``E_COUNT`` is -1 without ``data``); row ``q`` of
    ``queries`` is (first entry, number of entries, 1 when they are one block: no error, the same
    from/to/resolution and ``data`` of the same length); ``errors`` maps entries to their error."""

    values: npt.NDArray[np.float64]
    entries: npt.NDArray[np.int64]
    queries: npt.NDArray[np.int64]
    errors: dict[int, str]


def parse_query_answer(text: Buffer | str) -> QueryAnswer | None:
    """The usual answer of cc-metric-store's query API (see :func:`query_answer_kernel`) in one
    kernel call that runs without the GIL; None for any other document, even a valid one (parse
    it with :func:`parse_document`).  Numbers are exact, as everywhere in this module."""
    buf = as_buffer(text)
    values = np.empty(buf.shape[0] // 4 + 16, dtype=np.float64)
    slow = np.empty((16, 3), dtype=np.int64)
    entries = np.empty((buf.shape[0] // 512 + 16, 7), dtype=np.int64)
    queries = np.empty((64, 3), dtype=np.int64)
    status, values, nv, slow, ns, entries, ne, queries, nq = query_answer_kernel(buf, values, slow, entries, queries)
    if status != OK:
        return None
    _fix_slow(buf, values, slow[:ns])
    entries = entries[:ne]
    errors = {}
    for e in np.flatnonzero(entries[:, E_ERROR_START] >= 0).tolist():
        errors[e] = buf[entries[e, E_ERROR_START] : entries[e, E_ERROR_END]].tobytes().decode("ascii")
    return QueryAnswer(values[:nv], entries, queries[:nq], errors)


# ----------------------------------------------------------------------------------------------
# Plain-Python twins (the tests compare the kernels against these)


class _IntText(int):
    """An integer from ``json`` that remembers its text (``-0`` is -0.0 as a float)."""

    text: str

    def __new__(cls, text: str) -> _IntText:
        obj = super().__new__(cls, int(text))
        obj.text = text
        return obj


def _is_number(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _as_float(v: Any) -> float:
    if v is None:
        return math.nan
    return float(v.text) if isinstance(v, _IntText) else float(v)


def _plain(v: Any) -> Any:
    return int(v) if isinstance(v, _IntText) else v


def parse_array_reference(text: bytes, pos: int = 0) -> tuple[list[float], int]:
    """Plain-Python twin of :func:`parse_array` (values as a list)."""
    s = text[pos:].decode("utf-8")
    stripped = s.lstrip(" \t\n\r")
    skipped = len(s) - len(stripped)
    obj, end = json.JSONDecoder(parse_int=_IntText).raw_decode(stripped)
    if not isinstance(obj, list) or not all(map(_is_number, obj)):
        raise ValueError("not an array of numbers")
    return [_as_float(v) for v in obj], pos + skipped + len(stripped[:end].encode())


def document_reference(text: bytes) -> Any:
    """Plain-Python twin of :meth:`NumberDocument.tree`: ``json.loads`` with every array of
    numbers / null as a float64 numpy array."""

    def convert(v: Any) -> Any:
        if isinstance(v, list):
            if all(map(_is_number, v)):
                return np.array([_as_float(x) for x in v], dtype=np.float64)
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {key: convert(x) for key, x in v.items()}
        return _plain(v)

    return convert(json.loads(text, parse_int=_IntText))


def warm_up() -> None:
    """Compile (or load from the on-disk cache) the kernels of this module."""
    parse_document(b'{"a":[1.5,null,1e30,12345678901234567890],"b":"c","d":[[1]],"e":[true]}')
    parse_array(b"[1,2]")
    parse_query_answer(b'{"results":[[{"data":[1.5,null],"from":60,"to":180,"resolution":60,"avg":1.0}]]}')
