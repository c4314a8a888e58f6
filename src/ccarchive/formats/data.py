"""data.json: encoder byte-identical to Go's ``json.NewEncoder(w).Encode(schema.JobData)``, and a
tolerant decoder.

The encoder streams: it yields the text in pieces of about a megabyte, never the whole job, so a
large job's JSON is never held in memory at once (the worker's memory stays bounded).  Sample arrays are
formatted by the ``ccarchive.kernels.encode`` kernel (float32 cast, 2 decimals, ``null`` for NaN);
everything around them (keys, hostnames, per-series statistics) is assembled here in Go's order:

* ``JobData``: metric names sorted, scope names sorted (Go map keys);
* ``JobMetric``: ``statisticsSeries`` (omitted when absent), ``unit``, ``series``, ``timestep``;
* ``StatsSeries``: ``percentiles`` (omitempty, keys sorted as decimal strings), ``mean`` (``null``
  when absent), ``median``, ``min``, ``max``, all ``'f', 2, 64``;
* ``Series`` (custom MarshalJSON in cc-lib float.go): ``hostname``, ``id`` (omitted when None),
  ``statistics`` as ``{min, avg, max}`` with 2 decimals, ``data``.

The decoder accepts legacy files (pretty-printed, unsorted or unknown keys, series without
``statistics``, ``null`` samples, long decimals) and builds the columnar :class:`JobMetric`
straight from the text: the numbers are parsed by the ``ccarchive.kernels.jsonnum`` kernel into
numpy, exactly (``float(text)``), without a Python object per sample.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import FormatError
from ..kernels.encode import NonFiniteStatistic, encode_series, f64_array_json, f64_arrays_json
from ..kernels.jsonnum import NumberDocument, gather_rows, parse_document
from ..model import FloatArray, IntArray, JobData, JobMetric, StatsSeries, Unit
from .gojson import fits_go_int, go_number, go_string

#: Flush the pending output once it reaches this size (bytes).
CHUNK_BYTES = 1 << 18
#: Samples encoded per kernel call: bounds the kernel's scratch buffer (~7 bytes per sample).
CHUNK_SAMPLES = 1 << 16

_UNSAFE_RAW = frozenset('"\\') | frozenset(chr(c) for c in range(0x20))


def encode_unit(unit: Unit) -> str:
    """``schema.Unit``: ``{"base":...}`` plus ``"prefix"`` when not empty."""
    if unit.prefix:
        return '{"base":' + go_string(unit.base) + ',"prefix":' + go_string(unit.prefix) + "}"
    return '{"base":' + go_string(unit.base) + "}"


@lru_cache(maxsize=256)
def _unit_json(unit: Unit) -> bytes:
    return encode_unit(unit).encode()


def _raw_string(s: str, what: str) -> bytes:
    """A hostname or id as Go's Series.MarshalJSON writes it: pasted raw between quotes, then
    re-compacted with HTML escaping.  Characters that would change or break the JSON are refused."""
    if not _UNSAFE_RAW.isdisjoint(s) or any(0xD800 <= ord(c) < 0xE000 for c in s):
        raise FormatError(f"data.json: {what} {s!r} cannot be encoded (Go writes it unescaped)")
    return go_string(s).encode()


def _float_array(values: FloatArray | None, where: str) -> bytes:
    if values is None:
        return b"null"
    try:
        return f64_array_json(values)
    except ValueError as e:
        raise FormatError(f"data.json: {where}: {e}") from None


def encode_stats_series(ss: StatsSeries, where: str = "statisticsSeries") -> bytes:
    """``schema.StatsSeries``: percentiles (omitempty), mean, median, min, max."""
    keys = sorted(ss.percentiles, key=lambda k: str(int(k))) if ss.percentiles else []  # Go sorts int keys as strings
    arrays: list[FloatArray | None] = [ss.percentiles[k] for k in keys] if ss.percentiles else []
    arrays += [ss.mean, ss.median, ss.min, ss.max]
    present = [np.asarray(a, dtype=np.float64) for a in arrays if a is not None]
    texts = f64_arrays_json(present)  # all arrays in one call; None: one is Inf or huge
    if texts is None:
        names = [f"{where}.percentiles[{k}]" for k in keys] + [f"{where}.{f}" for f in ("mean", "median", "min", "max")]
        texts = [_float_array(a, w) for a, w in zip(arrays, names, strict=True) if a is not None]
    it = iter(texts)
    out = [b"null" if a is None else next(it) for a in arrays]
    parts = [b"{"]
    if keys:
        parts.append(b'"percentiles":{')
        parts.append(b",".join(b'"%d":' % int(k) + t for k, t in zip(keys, out, strict=False)))
        parts.append(b"},")
    mean, median, vmin, vmax = out[len(keys):]
    parts += [b'"mean":', mean, b',"median":', median, b',"min":', vmin, b',"max":', vmax, b"}"]
    return b"".join(parts)


def _statistics(block: JobMetric, where: str) -> FloatArray:
    """The block's (n, 3) statistics (min, avg, max per series), refusing missing ones."""
    n = block.num_series
    stats = block.statistics
    if stats is None:
        raise FormatError(f"data.json: {where}: series statistics were not computed before encoding")
    stats = np.asarray(stats, dtype=np.float64)
    if stats.shape != (n, 3):
        raise FormatError(f"data.json: {where}: statistics shape {stats.shape}, expected ({n}, 3)")
    return stats


def _checked_statistics(block: JobMetric, where: str) -> FloatArray:
    """The block's (n, 3) statistics, refusing what Go cannot encode (missing, NaN, Inf)."""
    stats = _statistics(block, where)
    if not np.isfinite(stats).all():
        i = int(np.flatnonzero(~np.isfinite(stats).all(axis=1))[0])
        raise FormatError(
            f"data.json: {where}: series {i} ({block.hostnames[i]}) has a non-finite statistic "
            f"{stats[i].tolist()} (min, avg, max); Go cannot encode it"
        )
    return stats


@lru_cache(maxsize=4096)
def _id_json(sid: str) -> bytes:
    """``,"id":"<sid>"`` (the same core and socket ids come back on every node)."""
    return b',"id":' + _raw_string(sid, "series id")


Heads = tuple[npt.NDArray[np.uint8], IntArray]

#: Series heads of recent blocks by (hostnames, ids): a job's metrics share their hosts and ids,
#: and later jobs run on the same nodes.  Bounded by the number of series held.
_heads_cache: dict[tuple[tuple[str, ...], tuple[str | None, ...]], Heads] = {}
_heads_series = 0
_heads_lock = threading.Lock()
HEADS_CACHE_SERIES = 1 << 16


def _series_heads(block: JobMetric) -> Heads:
    """Per series ``{"hostname":..,"id":..`` (``id`` omitted when None) as one text with offsets;
    the kernel appends the statistics, the data and ``}``.  A hostname or id Go would write
    broken is refused."""
    global _heads_series
    key = (tuple(block.hostnames), tuple(block.ids))
    got = _heads_cache.get(key)
    if got is not None:
        return got
    host_cache: dict[str, bytes] = {}
    heads = []
    for host, sid in zip(block.hostnames, block.ids, strict=True):
        h = host_cache.get(host)
        if h is None:
            h = host_cache[host] = b'{"hostname":' + _raw_string(host, "hostname")
        heads.append(h if sid is None else h + _id_json(str(sid)))
    offsets = np.zeros(len(heads) + 1, dtype=np.int64)
    np.cumsum([len(h) for h in heads], out=offsets[1:])
    offsets.flags.writeable = False
    got = (np.frombuffer(b"".join(heads), dtype=np.uint8), offsets)
    n = len(heads)
    with _heads_lock:
        if _heads_series + n > HEADS_CACHE_SERIES:
            _heads_cache.clear()
            _heads_series = 0
        if n <= HEADS_CACHE_SERIES:
            _heads_cache[key] = got
            _heads_series += n
    return got


def iter_job_metric(block: JobMetric, where: str = "metric") -> Iterator[bytes]:
    """One ``schema.JobMetric`` object, in pieces (the series are encoded a chunk of rows at a time)."""
    head = [b"{"]
    if block.statistics_series is not None:
        ss = encode_stats_series(block.statistics_series, f"{where}.statisticsSeries")
        head += [b'"statisticsSeries":', ss, b","]
    head += [b'"unit":', _unit_json(block.unit), b',"series":']
    n = block.num_series
    if n == 0:
        yield b"".join(head) + b'null,"timestep":%d}' % int(block.timestep)
        return
    head.append(b"[")
    stats = _statistics(block, where)
    try:
        heads, head_offsets = _series_heads(block)
    except FormatError:
        _checked_statistics(block, where)  # a non-finite statistic is named first
        raise
    data = np.ascontiguousarray(block.data, dtype=np.float64)
    lengths = np.asarray(block.lengths, dtype=np.int64)
    rows = max(1, CHUNK_SAMPLES // max(1, data.shape[1]))
    if rows < n:  # the kernel checks the statistics chunk by chunk: check all before the first piece
        _checked_statistics(block, where)
    for r0 in range(0, n, rows):
        try:
            text = encode_series(heads, head_offsets, stats, data, lengths, r0, min(n, r0 + rows))
        except NonFiniteStatistic:
            _checked_statistics(block, where)  # raises, naming the series and its values
            raise
        if r0 == 0:
            yield b"".join(head)
        yield text
    yield b'],"timestep":%d}' % int(block.timestep)


def iter_job_data(data: JobData) -> Iterator[bytes]:
    """The data.json text in pieces (metric by metric, large blocks in ~1 MB chunks), ending with
    the trailing ``"\\n"`` of Go's ``Encoder.Encode``.  Statistics are checked for every block
    before the first piece is produced, so a job Go could not encode fails before any write."""
    for metric, scopes in data.items():
        for scope, block in (scopes or {}).items():
            if block is not None and block.num_series:
                _checked_statistics(block, f"{metric}/{scope}")
    return iter_data_entries((metric, data[metric]) for metric in sorted(data))


def iter_data_entries(entries: Iterable[tuple[str, dict[str, JobMetric] | None]]) -> Iterator[bytes]:
    """data.json pieces for ``(metric, {scope: block})`` entries that arrive in sorted metric order,
    possibly produced one at a time (the streamed archiver loads a metric only when its turn
    comes).  A block is checked before its first piece; an error mid-way aborts the stream."""
    pending: list[bytes] = [b"{"]
    size = 1
    previous: str | None = None
    for metric, scopes in entries:
        if previous is not None and metric <= previous:
            raise FormatError(f"data.json: metric {metric!r} after {previous!r}: entries must be sorted and unique")
        if scopes is None:
            raise FormatError(f"data.json: metric {metric!r} has no scopes")
        pending.append((("," if previous is not None else "") + go_string(metric) + ":").encode())
        previous = metric
        if not scopes:
            pending.append(b"{}")
            continue
        for si, scope in enumerate(sorted(scopes)):
            block = scopes[scope]
            pending.append((("," if si else "{") + go_string(scope) + ":").encode())
            if block is None:
                pending.append(b"null")
                continue
            for piece in iter_job_metric(block, f"{metric}/{scope}"):
                pending.append(piece)
                size += len(piece)
                if size >= CHUNK_BYTES:
                    yield b"".join(pending)
                    pending, size = [], 0
        pending.append(b"}")
        yield b"".join(pending)
        pending, size = [], 0
        del scopes, block  # drop this metric's arrays before the next one is produced
    pending.append(b"}\n")
    yield b"".join(pending)


def encode_job_data(data: JobData) -> bytes:
    """The whole data.json text (compact, one trailing newline), byte-identical to Go."""
    return b"".join(iter_job_data(data))


# ----------------------------------------------------------------------------------------------
# Decoding
#
# The text goes through one kernel call (``kernels.jsonnum.parse_document``): every array of
# numbers -- the samples, statisticsSeries -- lands in one float64 array, and the small rest of
# the document (keys, hostnames, statistics) is decoded by ``json`` from the skeleton, where
# number array k reads ``[k]``.  Series objects in Go's compact layout are first taken out of the
# skeleton by a regular expression, as columns (:class:`_LiftedSeries`).  Blocks whose rows
# follow each other with one length (every data.json Go writes) are views of that array: no
# copy of the samples is made.


#: A series object exactly as Go writes it: hostname, optional id (strings without escapes or
#: control characters), statistics of three JSON numbers (integers of at most 16 digits: no
#: overflow on the way to float), data a number array's marker.
_NUM = r"(-?(?:0|[1-9][0-9]{0,15})(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"
_STR = r'"([^"\\\x00-\x1f]*)"'
_GO_SERIES = re.compile(
    r'\{"hostname":' + _STR + r'(,"id":' + _STR + r')?,"statistics":\{"min":' + _NUM + ',"avg":' + _NUM
    + ',"max":' + _NUM + r'\},"data":\[([0-9]+)\]\}')


class _Unlifted(Exception):
    """A lifted series object was not where a block's series list holds it: decode again without."""


class _LiftedSeries:
    """The series objects of a skeleton in Go's layout, taken out by one regular expression
    before ``json`` decodes the rest: each becomes its data marker ``[k]`` in the skeleton, and
    its hostname, id and statistics wait here as columns.  Why: decoding a dict per series (and
    a float per statistic) was most of the time spent holding the GIL when reading data.json."""

    def __init__(self, skeleton: str, num_arrays: int) -> None:
        # one pass: the text between series objects, then each object's 7 groups, and so on
        parts = _GO_SERIES.split(skeleton)
        g = _GO_SERIES.groups + 1
        self.count = len(parts) // g
        self.consumed = 0
        self.row_of = np.full(num_arrays, -1, dtype=np.int64)
        self.skeleton = skeleton
        if not self.count:
            return
        marks = parts[7::g]
        pieces: list[str] = [""] * (2 * self.count + 1)
        pieces[0::2] = parts[0::g]
        pieces[1::2] = ["[" + k + "]" for k in marks]
        self.skeleton = "".join(pieces)
        self.hostnames: list[str] = parts[1::g]
        self.ids: list[str | None] = parts[3::g]  # None where the object has no id
        self.stats = np.array((parts[4::g], parts[5::g], parts[6::g]), dtype=np.float64).T.copy()
        self.row_of[np.array(marks, dtype=np.int64)] = np.arange(self.count)

    def columns(self, series: list[Any], arrays: _NumberArrays) -> _Columns | None:
        """The columns of a series list whose items are all lifted; None when none is; raises
        :class:`_Unlifted` for a list mixing lifted and other items."""
        if not self.count or not series:
            return None
        marks = [NumberDocument.marker(s) for s in series]
        if None in marks:
            if any(m is not None and self.row_of[m] >= 0 for m in marks):
                raise _Unlifted
            return None
        index = np.array(marks, dtype=np.int64)
        rows = self.row_of[index]
        if (rows < 0).any():
            if (rows >= 0).any():
                raise _Unlifted
            return None
        self.consumed += len(rows)
        first, n = int(rows[0]), len(rows)
        if bool((np.diff(rows) == 1).all()):
            hostnames, ids = self.hostnames[first:first + n], self.ids[first:first + n]
        else:
            hostnames, ids = [self.hostnames[r] for r in rows.tolist()], [self.ids[r] for r in rows.tolist()]
        data, lengths = arrays.rows_of(index)
        return hostnames, ids, data, lengths, self.stats[rows], np.ones(n, dtype=np.bool_)


class _NumberArrays:
    """The number arrays of a parsed data.json (``doc``), or plain lists when the caller passed an
    already decoded object (``doc`` None); ``lifted``: its series taken out of the skeleton."""

    def __init__(self, doc: NumberDocument | None, lifted: _LiftedSeries | None = None) -> None:
        self.doc = doc
        self.lifted = lifted

    def index(self, value: Any) -> int | None:
        """Which number array ``value`` stands for, if it is one."""
        return None if self.doc is None else self.doc.marker(value)

    def floats(self, value: Any, where: str) -> FloatArray:
        """A JSON array of numbers / nulls as float64 (null -> NaN; a missing array is empty)."""
        if value is None:
            return np.empty(0, dtype=np.float64)
        k = self.index(value)
        if k is not None and self.doc is not None:
            return self.doc.array(k)
        if not isinstance(value, list):
            raise FormatError(f"data.json: {where} must be an array")
        if self.doc is not None:  # a parsed array that is left in the skeleton holds a non-number
            raise FormatError(f"data.json: {where} must be an array of numbers or null")
        try:
            return np.array(value, dtype=np.float64)  # None becomes NaN
        except (TypeError, ValueError):
            raise FormatError(f"data.json: {where} must be an array of numbers or null") from None
        except OverflowError:
            raise FormatError(f"data.json: {where} holds an integer beyond the float64 range") from None

    def series_list(self, value: Any, where: str) -> list[Any]:
        """The ``series`` array (null or missing: none)."""
        if not value:
            return []
        k = self.index(value)
        if k is not None:  # an array of numbers: fine when empty
            if self.doc is not None and self.doc.counts[k] == 0:
                return []
            raise FormatError(f"data.json: {where}.series[0] must be an object")
        if not isinstance(value, list):
            raise FormatError(f"data.json: {where}.series must be an array")
        return value

    def rows(self, rows: list[Any], where: str) -> tuple[FloatArray, IntArray]:
        """The ``data`` arrays of a block's series as an (n, width) array padded with NaN, and
        their lengths.  A view of the parsed values when the rows are adjacent and equally long."""
        n = len(rows)
        if self.doc is None:
            return self._rows_from_lists(rows, where)
        index = np.empty(n, dtype=np.int64)
        for i, d in enumerate(rows):
            k = self.index(d)
            if k is None:
                if d is not None:
                    raise FormatError(f"data.json: {where}.series[{i}].data must be an array of numbers or null")
                k = -1
            index[i] = k
        return self.rows_of(index)

    def rows_of(self, index: IntArray) -> tuple[FloatArray, IntArray]:
        """:meth:`rows` for the series whose data are number arrays ``index`` (-1: null)."""
        assert self.doc is not None
        n = len(index)
        present = index >= 0
        lengths = np.zeros(n, dtype=np.int64)
        offsets = np.zeros(n, dtype=np.int64)
        lengths[present] = self.doc.counts[index[present]]
        offsets[present] = self.doc.offsets[index[present]]
        width = int(lengths.max()) if n else 0
        if n and bool((lengths == width).all()) and bool((np.diff(offsets) == width).all()):
            start = int(offsets[0])
            return self.doc.values[start : start + n * width].reshape(n, width), lengths
        return gather_rows(self.doc.values, offsets, lengths, width), lengths

    @staticmethod
    def _rows_from_lists(rows: list[Any], where: str) -> tuple[FloatArray, IntArray]:
        n = len(rows)
        for i, d in enumerate(rows):
            if d is not None and not isinstance(d, list):
                raise FormatError(f"data.json: {where}.series[{i}].data must be an array")
        rows = [d or [] for d in rows]
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=n)
        width = int(lengths.max()) if n else 0
        try:
            if n and int(lengths.min()) == width:
                return np.array(rows, dtype=np.float64).reshape(n, width), lengths
            data = np.full((n, width), np.nan, dtype=np.float64)
            for i, r in enumerate(rows):
                data[i, : len(r)] = np.array(r, dtype=np.float64)
            return data, lengths
        except (TypeError, ValueError):
            raise FormatError(f"data.json: {where}: series data must be arrays of numbers or null") from None
        except OverflowError:
            raise FormatError(f"data.json: {where}: series data hold an integer beyond the float64 range") from None


def _number(v: Any, where: str) -> float:
    if v is None:
        return 0.0  # Go leaves a float64 untouched on null
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise FormatError(f"data.json: {where} must be a number")
    try:
        return go_number(v)
    except FormatError as e:
        raise FormatError(f"data.json: {where}: {e}") from None


def decode_unit(obj: Any, where: str) -> Unit:
    """``schema.Unit`` from a decoded JSON object (missing or null -> empty unit)."""
    if obj is None:
        return Unit()
    if not isinstance(obj, dict):
        raise FormatError(f"{where}: unit must be an object")
    base, prefix = obj.get("base") or "", obj.get("prefix") or ""
    if not isinstance(base, str) or not isinstance(prefix, str):
        raise FormatError(f"{where}: unit base and prefix must be strings")
    return Unit(base, prefix)


def _decode_stats_series(obj: Any, where: str, arrays: _NumberArrays) -> StatsSeries | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise FormatError(f"data.json: {where}.statisticsSeries must be an object")
    percentiles = None
    raw_p = obj.get("percentiles")
    if raw_p:
        if not isinstance(raw_p, dict):
            raise FormatError(f"data.json: {where}.statisticsSeries.percentiles must be an object")
        try:
            percentiles = {int(k): arrays.floats(v, f"{where}.percentiles[{k}]") for k, v in raw_p.items()}
        except ValueError:
            raise FormatError(f"data.json: {where}: percentile keys must be integers") from None
    mean = obj.get("mean")
    return StatsSeries(
        min=arrays.floats(obj.get("min"), f"{where}.statisticsSeries.min"),
        median=arrays.floats(obj.get("median"), f"{where}.statisticsSeries.median"),
        max=arrays.floats(obj.get("max"), f"{where}.statisticsSeries.max"),
        mean=None if mean is None else arrays.floats(mean, f"{where}.statisticsSeries.mean"),
        percentiles=percentiles,
    )


_NONE = type(None)
_STATS_KEYS = ("min", "avg", "max")


_Columns = tuple[list[str], list[str | None], FloatArray, IntArray, FloatArray, npt.NDArray[np.bool_]]


def _usual_series(series: list[Any], arrays: _NumberArrays) -> _Columns | None:
    """Hostnames, ids, data, lengths, statistics and has-statistics of a block's series in the
    layout Go writes (every series an object with a string hostname, a string or no id, a number
    array as data and a statistics object of three floats), taken column by column instead of
    series by series; None for anything else, which :func:`_each_series` decodes (and names what
    is wrong).  Exact types are compared, so bools and ints in the statistics go the long way."""
    if arrays.doc is None or not series:
        return None
    if arrays.lifted is not None and (lifted := arrays.lifted.columns(series, arrays)) is not None:
        return lifted
    get: Callable[[dict[str, Any], str], Any] = dict.get
    try:
        if set(map(type, series)) != {dict}:
            return None
        hostnames: list[Any] = list(map(get, series, repeat("hostname")))
        ids: list[Any] = list(map(get, series, repeat("id")))
        rows: list[Any] = list(map(get, series, repeat("data")))
        stats: list[Any] = list(map(get, series, repeat("statistics")))
        if (set(map(type, hostnames)) != {str} or not set(map(type, ids)) <= {str, _NONE}
                or set(map(type, rows)) != {list} or set(map(len, rows)) != {1} or set(map(type, stats)) != {dict}):
            return None
        index = list(map(itemgetter(0), rows))  # markers [k] (an array left in the skeleton never is [int])
        values = [v for key in _STATS_KEYS for v in map(get, stats, repeat(key))]  # all mins, avgs, maxs
        if set(map(type, index)) != {int} or set(map(type, values)) != {float}:
            return None
    except (AttributeError, TypeError):
        return None
    n = len(series)
    data, lengths = arrays.rows_of(np.array(index, dtype=np.int64))
    stats_array = np.ascontiguousarray(np.array(values, dtype=np.float64).reshape(3, n).T)
    return hostnames, ids, data, lengths, stats_array, np.ones(n, dtype=np.bool_)


def _each_series(series: list[Any], where: str, arrays: _NumberArrays) -> _Columns:
    """:func:`_usual_series` for any series, one by one: the first one that is malformed raises
    the FormatError that says what is wrong with it."""
    n = len(series)
    hostnames: list[str] = []
    ids: list[str | None] = []
    rows: list[Any] = []
    stats = np.zeros((n, 3), dtype=np.float64)
    has_stats = np.zeros(n, dtype=np.bool_)
    for i, s in enumerate(series):
        if not isinstance(s, dict):
            raise FormatError(f"data.json: {where}.series[{i}] must be an object")
        host = s.get("hostname")
        if not isinstance(host, str):
            raise FormatError(f"data.json: {where}.series[{i}].hostname must be a string")
        hostnames.append(host)
        sid = s.get("id")
        ids.append(None if sid is None else str(sid))
        rows.append(s.get("data"))
        st = s.get("statistics")
        if isinstance(st, dict):
            w = f"{where}.series[{i}].statistics"
            stats[i] = (_number(st.get("min"), w + ".min"), _number(st.get("avg"), w + ".avg"),
                        _number(st.get("max"), w + ".max"))
            has_stats[i] = True
        elif st is not None:
            raise FormatError(f"data.json: {where}.series[{i}].statistics must be an object")
    data, lengths = arrays.rows(rows, where)
    return hostnames, ids, data, lengths, stats, has_stats


def decode_job_metric(obj: Any, where: str = "metric", arrays: _NumberArrays | None = None) -> JobMetric:
    """One ``schema.JobMetric`` from its decoded JSON object (``arrays``: the parsed document its
    number arrays refer to; None for plain lists)."""
    arrays = arrays if arrays is not None else _NumberArrays(None)
    if not isinstance(obj, dict):
        raise FormatError(f"data.json: {where} must be an object")
    timestep = obj.get("timestep")
    if isinstance(timestep, float) and timestep.is_integer():
        timestep = int(timestep)
    if isinstance(timestep, bool) or not isinstance(timestep, int) or not fits_go_int(timestep):
        raise FormatError(f"data.json: {where}.timestep must be a 64-bit integer")
    series = arrays.series_list(obj.get("series"), where)
    hostnames, ids, data, lengths, stats, has_stats = _usual_series(series, arrays) or \
        _each_series(series, where, arrays)
    return JobMetric(
        unit=decode_unit(obj.get("unit"), f"data.json: {where}"),
        timestep=timestep,
        hostnames=hostnames,
        ids=ids,
        data=data,
        lengths=lengths,
        statistics=stats,
        has_statistics=has_stats,
        statistics_series=_decode_stats_series(obj.get("statisticsSeries"), where, arrays),
    )


def decode_job_data(raw: bytes | bytearray | memoryview | npt.NDArray[np.uint8] | str | dict[str, Any]) -> JobData:
    """Parse a data.json (Go output or a legacy file) into columnar :class:`JobMetric` blocks.

    ``raw`` is the UTF-8 text (bytes-like or a uint8 array, read in place) or an already decoded
    object.  The text is not referenced afterwards: a caller that drops it frees it.  Sample
    arrays may be views of one array holding every number of the file (copy a block's ``data``
    to keep it alone).  ``has_statistics[i]`` is False for series stored without ``statistics``
    (their statistics read as zeros, as Go decodes them).  Malformed input is a FormatError that
    says what is wrong and where (line, column and byte offset for broken JSON)."""
    if isinstance(raw, dict):
        return _decode_object(raw, _NumberArrays(None))
    try:
        doc = parse_document(raw)
    except ValueError as e:  # JsonSyntaxError, or a str that is not encodable as UTF-8
        raise FormatError(f"data.json: not valid JSON: {e}") from None
    lifted = _LiftedSeries(doc.skeleton, doc.num_arrays)
    if lifted.count:
        try:
            out = _decode_object(json.loads(lifted.skeleton), _NumberArrays(doc, lifted))
            if lifted.consumed == lifted.count:
                return out
        except (_Unlifted, FormatError, ValueError):
            pass  # decoded again below: the same result or error as without lifting
    return _decode_object(doc.loads(), _NumberArrays(doc))


def _decode_object(obj: Any, arrays: _NumberArrays) -> JobData:
    """:func:`decode_job_data` of the decoded document ``obj`` (number arrays in ``arrays``)."""
    if not isinstance(obj, dict):
        raise FormatError(f"data.json: top level must be an object, not {type(obj).__name__}")
    out: JobData = {}
    for metric, scopes in obj.items():
        if not isinstance(scopes, dict):
            raise FormatError(f"data.json: {metric} must be an object of scopes")
        out[metric] = {
            scope: decode_job_metric(block, f"{metric}/{scope}", arrays)
            for scope, block in scopes.items()
            if block is not None
        }
    return out
