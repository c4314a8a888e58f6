"""Number formatting kernels for data.json: Go's 2-decimal float text, written straight into bytes.

Why a kernel: a data.json holds millions of samples, and ``format(x, '.2f')`` plus ``str.join``
costs about 150 ns per value in Python; the archiver must write at least 300 MB/s of JSON.

Exactness argument (the output must equal Go's ``strconv.AppendFloat``):

* data points (``'f', 2, 32``): the value is first rounded to float32.  ``float64(f32) * 100`` is
  exact in float64 (24 significant bits + 7 bits for 100 <= 53), so ``rint`` of it is the exact
  round-half-even of the decimal value, as Go computes it.  Values with ``|f32| >= 1e16`` do not fit
  the int64 digit path; they are rare and formatted exactly by Python (the kernel reports them).
* float64 values (``'f', 2, 64``): ``x * 100`` is not exact.  An error-free product
  (Veltkamp split + Dekker TwoProduct) gives ``p + e == x * 100`` exactly; the rounded product
  ``p`` alone decides the result unless ``p`` lands exactly on a half-integer, where the sign of
  ``e`` breaks the tie (monotonic rounding: the exact value is above the half-integer iff ``e > 0``).
  Values with ``|x * 100| >= 2**52`` and +-Inf go to the exact Python path.

Negative values keep their sign, including ``-0.0`` and tiny negatives (``-0.00``), as Go does.
NaN becomes ``null``, and so does a data point whose float32 cast overflows to +-Inf
(``reduce.outside_float32``, the rule the statistics use to mask samples): Go would write ``+Inf``,
which is not JSON.  A value above FLT_MAX that still rounds to it (3.4028235e38) is written as
FLT_MAX, ``340282346638528859811704183484516925440.00``, as Go does.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
import numpy.typing as npt

from .reduce import outside_float32

# Two ASCII digits per entry: _PAIRS[2k], _PAIRS[2k+1] are the digits of k (00..99).
_PAIRS = np.frombuffer("".join(f"{k:02d}" for k in range(100)).encode(), dtype=np.uint8).copy()
_NULL = np.frombuffer(b"null", dtype=np.uint8).copy()

_F32_FAST_LIMIT = 1e16     # |f32| below this: |f32*100| < 1e18 fits int64
_F64_FAST_LIMIT = 2.0**52  # |x*100| below this: half-integers are representable
_MAX_VALUE_BYTES = 22      # sign + 16 integer digits + '.' + 2 decimals + ',' (+ slack)
_SPLITTER = 134217729.0    # 2**27 + 1 (Veltkamp)
_NO_BOUNDS = np.zeros(1, dtype=np.int64)


@nb.njit(cache=True, inline="always")
def _put_fixed2(buf, pos, n, neg, pairs):  # pragma: no cover - compiled
    """Write ``n / 100`` with exactly two decimals (``n >= 0`` integer hundredths) at ``pos``."""
    if neg:
        buf[pos] = 45  # '-'
        pos += 1
    q = n // 100
    r = n - q * 100
    # number of integer digits of q (>= 1)
    nd = 1
    t = q
    while t >= 100:
        t //= 100
        nd += 2
    if t >= 10:
        nd += 1
    end = pos + nd
    k = end
    while q >= 100:
        p = q // 100
        d = q - p * 100
        k -= 2
        buf[k] = pairs[2 * d]
        buf[k + 1] = pairs[2 * d + 1]
        q = p
    if q >= 10:
        k -= 2
        buf[k] = pairs[2 * q]
        buf[k + 1] = pairs[2 * q + 1]
    else:
        buf[k - 1] = 48 + q
    buf[end] = 46  # '.'
    buf[end + 1] = pairs[2 * r]
    buf[end + 2] = pairs[2 * r + 1]
    return end + 3


@nb.njit(cache=True, inline="always")
def _put_null(buf, pos):  # pragma: no cover - compiled
    buf[pos] = 110
    buf[pos + 1] = 117
    buf[pos + 2] = 108
    buf[pos + 3] = 108
    return pos + 4


@nb.njit(cache=True, nogil=True)
def _grow(buf, need):  # pragma: no cover - compiled
    cap = buf.shape[0] * 2
    if cap < need:
        cap = need
    out = np.empty(cap, dtype=np.uint8)
    out[: buf.shape[0]] = buf
    return out


@nb.njit(cache=True, inline="always")
def _put_row(buf, pos, data, i, m, pairs):  # pragma: no cover - compiled
    """``data[i, :m]`` as ``[v,v,...]`` (float32, 2 decimals, ``null`` for NaN) at ``pos``; returns
    the end, or -1 when a value needs the exact Python path (``|f32| >= 1e16``)."""
    buf[pos] = 91  # '['
    pos += 1
    for j in range(m):
        if j > 0:
            buf[pos] = 44  # ','
            pos += 1
        x = data[i, j]
        if math.isnan(x) or outside_float32(x):
            pos = _put_null(buf, pos)
            continue
        f = np.float64(np.float32(x))
        a = abs(f)
        if a >= _F32_FAST_LIMIT:
            return -1
        neg = math.copysign(1.0, f) < 0.0
        pos = _put_fixed2(buf, pos, np.int64(np.rint(a * 100.0)), neg, pairs)
    buf[pos] = 93  # ']'
    return pos + 1


@nb.njit(cache=True, nogil=True)
def encode_rows_kernel(data, lengths, pairs):  # pragma: no cover - compiled
    """Rows of float64 -> JSON arrays of float32 values with 2 decimals; rows with huge values
    are left empty and flagged in ``slow`` for the exact Python path."""
    n = lengths.shape[0]
    offsets = np.empty(n + 1, dtype=np.int64)
    slow = np.zeros(n, dtype=np.bool_)
    total = 0
    for i in range(n):
        total += lengths[i]
    buf = np.empty(max(64, total * 7 + 2 * n), dtype=np.uint8)
    pos = 0
    for i in range(n):
        offsets[i] = pos
        m = lengths[i]
        need = pos + m * _MAX_VALUE_BYTES + 2
        if need > buf.shape[0]:
            buf = _grow(buf, need)
        end = _put_row(buf, pos, data, i, m, pairs)
        if end < 0:
            slow[i] = True
        else:
            pos = end
    offsets[n] = pos
    return buf[:pos], offsets, slow


@nb.njit(cache=True, inline="always")
def _round_hundredths(x):  # pragma: no cover - compiled
    """round_half_even(|x| * 100) exactly, for finite x with |x*100| < 2**52."""
    a = abs(x)
    p = a * 100.0
    # Dekker TwoProduct(a, 100) with a Veltkamp-split: 100 has 7 significant bits, so it is its own
    # high half and both partial products are exact; p + e == a * 100 exactly.
    c = _SPLITTER * a
    ah = c - (c - a)
    al = a - ah
    e = ((ah * 100.0 - p) + al * 100.0)
    fl = math.floor(p)
    if p - fl == 0.5:
        if e > 0.0:
            return np.int64(fl) + 1
        if e < 0.0:
            return np.int64(fl)
    return np.int64(np.rint(p))


@nb.njit(cache=True, inline="always")
def _put_f64(buf, pos, x, pairs):  # pragma: no cover - compiled
    """Finite ``x`` with exactly two decimals (``'f', 2, 64``) at ``pos``; returns the end, or -1
    when it needs the exact Python path (+-Inf, ``|x * 100| >= 2**52``)."""
    if not math.isfinite(x) or abs(x) * 100.0 >= _F64_FAST_LIMIT:
        return -1
    return _put_fixed2(buf, pos, _round_hundredths(x), math.copysign(1.0, x) < 0.0, pairs)


@nb.njit(cache=True, nogil=True)
def format_f64_kernel(values, bounds, pairs, as_arrays):  # pragma: no cover - compiled
    """float64 values -> 2-decimal text.  ``as_arrays``: ``values[bounds[a]:bounds[a + 1]]`` as one
    ``[v,v,...]`` per array ``a``, with per-array offsets; otherwise values back to back with
    per-value offsets (``bounds`` unused).  Values needing the exact path are flagged in ``slow``
    and written as nothing."""
    n = values.shape[0]
    arrays = bounds.shape[0] - 1 if as_arrays else 0
    offsets = np.empty(arrays + 1 if as_arrays else n + 1, dtype=np.int64)
    slow = np.zeros(n, dtype=np.bool_)
    buf = np.empty(n * _MAX_VALUE_BYTES + 2 * arrays + 2, dtype=np.uint8)
    pos = 0
    a = 0
    for i in range(n + 1):
        if as_arrays:
            while a < arrays and bounds[a] == i:  # close the previous array, open the next
                if a > 0:
                    buf[pos] = 93
                    pos += 1
                offsets[a] = pos
                buf[pos] = 91
                pos += 1
                a += 1
            if i == n:
                break
            if i > bounds[a - 1]:
                buf[pos] = 44
                pos += 1
        elif i == n:
            break
        else:
            offsets[i] = pos
        x = values[i]
        if math.isnan(x):
            pos = _put_null(buf, pos)
            continue
        end = _put_f64(buf, pos, x, pairs)
        if end < 0:
            slow[i] = True
        else:
            pos = end
    if as_arrays:
        if arrays:
            buf[pos] = 93
            pos += 1
        offsets[arrays] = pos
    else:
        offsets[n] = pos
    return buf[:pos], offsets, slow


def _literal(text: bytes) -> npt.NDArray[np.uint8]:
    return np.frombuffer(text, dtype=np.uint8).copy()


_STATS_MIN = _literal(b',"statistics":{"min":')
_STATS_AVG = _literal(b',"avg":')
_STATS_MAX = _literal(b',"max":')
_DATA = _literal(b'},"data":')
#: encode_series_kernel's status: done, a statistic is NaN or +-Inf, a value needs the exact path
SERIES_OK, SERIES_NOT_FINITE, SERIES_SLOW = 0, 1, 2


@nb.njit(cache=True, inline="always")
def _put_bytes(buf, pos, src, start, end):  # pragma: no cover - compiled
    for k in range(start, end):
        buf[pos] = src[k]
        pos += 1
    return pos


@nb.njit(cache=True, nogil=True)
def encode_series_kernel(heads, head_offsets, stats, data, lengths, r0, r1, pairs):  # pragma: no cover
    """Series ``r0:r1`` of a block as Go's ``Series.MarshalJSON`` writes them, comma separated (a
    comma first unless ``r0 == 0``): head ``i`` (``heads[head_offsets[i]:head_offsets[i + 1]]``,
    the hostname and id part), ``"statistics"`` from ``stats[i]`` (``'f', 2, 64``), ``"data"``
    (as :func:`encode_rows_kernel`) and ``}``.  Returns ``(text, status, row)``: with a status
    other than SERIES_OK, ``row`` is the first series concerned and the text is incomplete."""
    width = data.shape[1]
    size = 0
    for i in range(r0, r1):
        m = lengths[i]
        if m < 0 or m > width:
            return np.empty(0, dtype=np.uint8), SERIES_SLOW, i  # the exact path says what is wrong
        size += head_offsets[i + 1] - head_offsets[i] + (m + 3) * _MAX_VALUE_BYTES + 48
    buf = np.empty(size, dtype=np.uint8)
    pos = 0
    for i in range(r0, r1):
        if i > 0:
            buf[pos] = 44
            pos += 1
        pos = _put_bytes(buf, pos, heads, head_offsets[i], head_offsets[i + 1])
        for c in range(3):
            x = stats[i, c]
            if not math.isfinite(x):
                return buf[:0], SERIES_NOT_FINITE, i
            if c == 0:
                pos = _put_bytes(buf, pos, _STATS_MIN, 0, _STATS_MIN.shape[0])
            elif c == 1:
                pos = _put_bytes(buf, pos, _STATS_AVG, 0, _STATS_AVG.shape[0])
            else:
                pos = _put_bytes(buf, pos, _STATS_MAX, 0, _STATS_MAX.shape[0])
            pos = _put_f64(buf, pos, x, pairs)
            if pos < 0:
                return buf[:0], SERIES_SLOW, i
        pos = _put_bytes(buf, pos, _DATA, 0, _DATA.shape[0])
        pos = _put_row(buf, pos, data, i, lengths[i], pairs)
        if pos < 0:
            return buf[:0], SERIES_SLOW, i
        buf[pos] = 125  # '}'
        pos += 1
    return buf[:pos], SERIES_OK, -1


# ----------------------------------------------------------------------------------------------
# Public wrappers: exact for every input (slow values formatted by Python, which is exact).


def f32_2dp_reference(x: float) -> str:
    """One data point as Go writes it (``'f', 2, 32``; NaN/Inf after the cast -> ``null``)."""
    with np.errstate(over="ignore"):
        f = float(np.float32(x))
    return format(f, ".2f") if math.isfinite(f) else "null"


def f64_2dp_reference(x: float) -> str:
    """One float64 as Go's ``schema.Float`` writes it (``'f', 2, 64``; NaN -> ``null``)."""
    if math.isnan(x):
        return "null"
    if math.isinf(x):
        raise ValueError(f"cannot encode {x!r} as JSON")
    return format(x, ".2f")


def encode_rows_reference(data: npt.NDArray[np.float64], lengths: npt.NDArray[np.int64]) -> list[bytes]:
    """Plain-Python twin of :func:`encode_rows` (one ``bytes`` per row)."""
    return [
        ("[" + ",".join(f32_2dp_reference(v) for v in data[i, : int(lengths[i])].tolist()) + "]").encode()
        for i in range(len(lengths))
    ]


def encode_rows(
    data: npt.NDArray[np.float64], lengths: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """Encode ``data[i, :lengths[i]]`` as the JSON array text ``[v,v,...]`` for every row ``i``.

    Returns ``(buf, offsets)``: row ``i`` is ``buf[offsets[i]:offsets[i+1]]``.  Values are cast
    to float32 and written with exactly two decimals (round half to even), non-finite as ``null``.
    """
    data = np.ascontiguousarray(data, dtype=np.float64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if data.ndim != 2 or data.shape[0] != lengths.shape[0]:
        raise ValueError(f"encode_rows: data {data.shape} does not match {lengths.shape[0]} lengths")
    if lengths.shape[0] and (lengths.min() < 0 or lengths.max() > data.shape[1]):
        raise ValueError("encode_rows: lengths out of range")
    buf, offsets, slow = encode_rows_kernel(data, lengths, _PAIRS)
    if not slow.any():
        return buf, offsets
    # Rare: rows with |value| >= 1e16.  Re-assemble with those rows formatted in Python.
    rows = np.flatnonzero(slow)
    fixed = dict(zip(rows.tolist(), encode_rows_reference(data[rows], lengths[rows]), strict=True))
    pieces: list[bytes | npt.NDArray[np.uint8]] = []
    new_offsets = np.empty_like(offsets)
    pos = 0
    for i in range(lengths.shape[0]):
        new_offsets[i] = pos
        piece = fixed[i] if i in fixed else buf[offsets[i] : offsets[i + 1]]
        pieces.append(piece)
        pos += len(piece)
    new_offsets[-1] = pos
    out = np.frombuffer(b"".join(bytes(p) for p in pieces), dtype=np.uint8)
    return out, new_offsets


def _slow_f64(x: float) -> str:
    try:
        return f64_2dp_reference(x)
    except ValueError:
        raise ValueError(f"cannot encode {x!r} as JSON (Go's encoder fails on Inf)") from None


def format_f64_2dp(values: npt.ArrayLike) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """float64 values as Go's ``schema.Float`` text, one after the other.

    Returns ``(buf, offsets)``: value ``i`` is ``buf[offsets[i]:offsets[i+1]]``; NaN -> ``null``.
    Raises ValueError for +-Inf, which Go cannot encode.
    """
    v = np.ascontiguousarray(values, dtype=np.float64).ravel()
    buf, offsets, slow = format_f64_kernel(v, _NO_BOUNDS, _PAIRS, False)
    if not slow.any():
        return buf, offsets
    texts = [
        _slow_f64(float(x)).encode() if s else bytes(buf[offsets[i] : offsets[i + 1]])
        for i, (x, s) in enumerate(zip(v.tolist(), slow.tolist(), strict=True))
    ]
    new_offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in texts], out=new_offsets[1:])
    return np.frombuffer(b"".join(texts), dtype=np.uint8), new_offsets


def f64_array_json(values: npt.ArrayLike) -> bytes:
    """float64 values as the JSON array ``[v,v,...]`` of Go ``[]schema.Float`` (2 decimals, NaN -> null).

    Raises ValueError for +-Inf."""
    v = np.ascontiguousarray(values, dtype=np.float64).ravel()
    buf, _offsets, slow = format_f64_kernel(v, np.array([0, v.shape[0]], dtype=np.int64), _PAIRS, True)
    if not slow.any():
        return buf.tobytes()
    return ("[" + ",".join(_slow_f64(x) for x in v.tolist()) + "]").encode()


def f64_arrays_json(arrays: list[npt.NDArray[np.float64]]) -> list[bytes] | None:
    """Several float64 arrays as :func:`f64_array_json` writes each, in one kernel call (a
    block's ``statisticsSeries``); None when one of them needs the exact path (+-Inf or huge
    values): the caller then formats them one by one, which names the bad one."""
    if not arrays:
        return []
    bounds = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([a.size for a in arrays], out=bounds[1:])
    v = np.concatenate([np.ravel(a) for a in arrays]).astype(np.float64, copy=False)
    buf, offsets, slow = format_f64_kernel(v, bounds, _PAIRS, True)
    if slow.any():
        return None
    text, o = buf.tobytes(), offsets.tolist()
    return [text[o[a] : o[a + 1]] for a in range(len(arrays))]


class NonFiniteStatistic(ValueError):
    """A series statistic is NaN or +-Inf, which Go's encoder refuses; ``row`` is the series."""

    def __init__(self, row: int) -> None:
        super().__init__(f"series {row} has a non-finite statistic")
        self.row = row


def encode_series(
    heads: npt.NDArray[np.uint8], head_offsets: npt.NDArray[np.int64], stats: npt.NDArray[np.float64],
    data: npt.NDArray[np.float64], lengths: npt.NDArray[np.int64], r0: int, r1: int,
) -> bytes:
    """Series ``r0:r1`` of a data.json block, comma separated (with a leading comma unless
    ``r0 == 0``): per series ``heads[head_offsets[i]:head_offsets[i + 1]]`` (the
    ``{"hostname":..,"id":..`` part), ``,"statistics":{"min":..,"avg":..,"max":..}`` from the
    (n, 3) ``stats`` with 2 decimals, ``,"data":`` with :func:`encode_rows`' text, and ``}``.

    Why one call for many series: a block's series are small (a 1-hour job has 60 samples), so
    assembling them in Python cost more than formatting their numbers.  Raises
    :class:`NonFiniteStatistic` for a NaN / Inf statistic."""
    stats = np.ascontiguousarray(stats, dtype=np.float64)
    data = np.ascontiguousarray(data, dtype=np.float64)
    lengths = np.ascontiguousarray(lengths, dtype=np.int64)
    if data.ndim != 2 or stats.shape != (data.shape[0], 3) or lengths.shape != (data.shape[0],) \
            or head_offsets.shape != (data.shape[0] + 1,) or not 0 <= r0 <= r1 <= data.shape[0]:
        raise ValueError(f"encode_series: data {data.shape}, stats {stats.shape}, {lengths.shape[0]} lengths, "
                         f"{head_offsets.shape[0] - 1} heads and rows {r0}:{r1} do not match")
    buf, status, row = encode_series_kernel(heads, head_offsets, stats, data, lengths, r0, r1, _PAIRS)
    if status == SERIES_OK:
        return buf.tobytes()
    if status == SERIES_NOT_FINITE:
        raise NonFiniteStatistic(int(row))
    # Rare: huge values.  The same text from the exact per-value paths.
    sbuf, soff = format_f64_2dp(stats[r0:r1])
    rbuf, roff = encode_rows(data[r0:r1], lengths[r0:r1])
    text, so, rows, ro = sbuf.tobytes(), soff.tolist(), rbuf.tobytes(), roff.tolist()
    hb, ho = heads.tobytes(), head_offsets.tolist()
    parts = []
    for i in range(r1 - r0):
        k = 3 * i
        parts += [b"," if r0 + i else b"", hb[ho[r0 + i] : ho[r0 + i + 1]],
                  b',"statistics":{"min":', text[so[k] : so[k + 1]], b',"avg":', text[so[k + 1] : so[k + 2]],
                  b',"max":', text[so[k + 2] : so[k + 3]], b'},"data":', rows[ro[i] : ro[i + 1]], b"}"]
    return b"".join(parts)


def warm_up() -> None:
    """Compile (or load from the on-disk cache) every kernel of this module."""
    encode_rows(np.zeros((1, 1)), np.ones(1, dtype=np.int64))
    format_f64_2dp(np.zeros(1))
    f64_array_json(np.zeros(1))
    f64_arrays_json([np.zeros(1), np.zeros(2)])
    heads = np.frombuffer(b'{"hostname":"h"', dtype=np.uint8)
    encode_series(heads, np.array([0, heads.shape[0]]), np.zeros((1, 3)), np.zeros((1, 1)), np.ones(1, np.int64), 0, 1)
