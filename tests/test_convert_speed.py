"""The fast paths of ``convert``: the column-wise decoding of a block's series (same result, or the
same FormatError, as the per-series loop), the float32 values with a packed validity bitmap, and
the digests that compare the Arrow rows with the source without a canonical copy of the rows."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccarchive.backends import parquet_schema as S
from ccarchive.convert import _packed_nulls, data_digest, rows_digest
from ccarchive.errors import FormatError
from ccarchive.formats import data as data_fmt
from ccarchive.formats.data import decode_job_data
from ccarchive.kernels.jsonnum import gather_rows
from ccarchive.model import Job, JobData, JobMetric, Unit

# ----------------------------------------------------------------------------------------------
# decode_job_metric: the column-wise fast path against the per-series loop


def _decode(raw: str, slow: bool, monkeypatch: pytest.MonkeyPatch, lift: bool = True) -> JobData | str:
    """The decoded job, or the FormatError's message; ``slow``: the fast path switched off;
    ``lift``: series objects in Go's compact layout taken out of the skeleton by the regex."""
    with monkeypatch.context() as m:
        if slow:
            m.setattr(data_fmt, "_usual_series", lambda series, arrays: None)
        if not lift:
            m.setattr(data_fmt, "_GO_SERIES", re.compile(r"(?!)" + "()" * 7))
        try:
            return decode_job_data(raw)
        except FormatError as e:
            return f"{type(e).__name__}: {e}"


def _plain(data: JobData | str) -> Any:
    """Everything of the decoded job as comparable Python values (arrays with dtype and shape)."""
    if isinstance(data, str):
        return data

    def arr(a: Any) -> Any:
        return None if a is None else (str(a.dtype), a.shape, np.asarray(a).tobytes())

    out = {}
    for metric, scopes in data.items():
        for scope, b in scopes.items():
            ss = b.statistics_series
            out[metric, scope] = (
                b.unit, b.timestep, b.hostnames, b.ids, [type(i).__name__ for i in b.ids], arr(b.data),
                arr(b.lengths), arr(b.statistics), arr(b.has_statistics),
                None if ss is None else (arr(ss.min), arr(ss.median), arr(ss.max), arr(ss.mean),
                                         None if ss.percentiles is None else
                                         {k: arr(v) for k, v in ss.percentiles.items()}))
    return out


def _same_both_ways(doc: Any, monkeypatch: pytest.MonkeyPatch) -> JobData | str:
    """Decoded column-wise (series lifted out of the skeleton or not) and by the per-series loop:
    the same result or error; an object is tried as ``json`` writes it and as compactly as Go
    does (only that form is lifted)."""
    texts = [doc] if isinstance(doc, str) else [json.dumps(doc), json.dumps(doc, separators=(",", ":"))]
    first: JobData | str | None = None
    for raw in texts:
        fast = _decode(raw, False, monkeypatch)
        slow, unlifted = _decode(raw, True, monkeypatch), _decode(raw, False, monkeypatch, False)
        assert _plain(fast) == _plain(slow) == _plain(unlifted)
        first = fast if first is None else first
        assert _plain(fast) == _plain(first)
    assert first is not None
    return first


def _series(n: int, width: int = 4, **overrides: Any) -> list[dict[str, Any]]:
    return [{"hostname": f"n{i % 3}", "id": str(i), "statistics": {"min": 0.5, "avg": 1.25, "max": 2.0},
             "data": [float(i + k) for k in range(width)], **overrides} for i in range(n)]


def _doc(series: Any, **block: Any) -> dict[str, Any]:
    return {"cpu_load": {"node": {"unit": {"base": "load"}, "timestep": 60, "series": series, **block}}}


def test_fast_path_is_taken_for_the_layout_go_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Go's layout decodes column-wise (the per-series loop never runs) to the loop's result."""
    calls = []
    real = data_fmt._usual_series
    monkeypatch.setattr(data_fmt, "_usual_series", lambda s, a: calls.append(r := real(s, a)) or r)
    doc = _doc(_series(5))
    doc["mem"] = {"socket": {"unit": {"base": "B"}, "timestep": 60, "series": _series(3, id=None)}}
    got = decode_job_data(json.dumps(doc))
    assert len(calls) == 2 and all(c is not None for c in calls)
    b = got["cpu_load"]["node"]
    assert b.hostnames == ["n0", "n1", "n2", "n0", "n1"] and b.ids == ["0", "1", "2", "3", "4"]
    assert b.has_statistics is not None and b.has_statistics.all() and b.has_statistics.dtype == np.bool_
    assert b.statistics is not None and b.statistics.tolist() == [[0.5, 1.25, 2.0]] * 5
    assert b.data.tolist() == [[float(i + k) for k in range(4)] for i in range(5)]
    assert got["mem"]["socket"].ids == [None, None, None]
    monkeypatch.undo()
    _same_both_ways(doc, monkeypatch)


@pytest.mark.parametrize("change", [
    # statistics the loop reads differently or refuses: bools, ints, strings, nulls, missing keys
    {"statistics": {"min": True, "avg": 1.0, "max": 2.0}},
    {"statistics": {"min": 0.0, "avg": False, "max": 2.0}},
    {"statistics": {"min": 1, "avg": 1.0, "max": 2.0}},
    {"statistics": {"min": 0.5, "avg": "1.0", "max": 2.0}},
    {"statistics": {"min": 0.5, "avg": None, "max": 2.0}},
    {"statistics": {"min": 0.5, "max": 2.0}},
    {"statistics": {}},
    {"statistics": None},
    {"statistics": [0.5, 1.0, 2.0]},
    {"statistics": "x"},
    {"statistics": {"min": 10**400, "avg": 1.0, "max": 2.0}},
    # hostnames and ids
    {"hostname": 3}, {"hostname": None}, {"hostname": ["a"]}, {"hostname": True},
    {"id": 7}, {"id": 1.5}, {"id": True}, {"id": ["x"]}, {"id": {"a": 1}}, {"id": None},
    # data: null, empty, missing, not numbers, nested, a one-element array holding a string or a list
    {"data": None}, {"data": []}, {"data": ["x"]}, {"data": [[1, 2]]}, {"data": [1, "x"]}, {"data": "abc"},
    {"data": {"k": 1}}, {"data": 5}, {"data": [None, None]}, {"data": [True]}, {"data": [[3]]},
])
@pytest.mark.parametrize("where", [0, 2, "all"])
def test_unusual_series_decode_as_the_loop_decodes_them(change: dict[str, Any], where: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    series = _series(3)
    for i in range(3) if where == "all" else [where]:
        series[i].update(change)
    _same_both_ways(_doc(series), monkeypatch)


@pytest.mark.parametrize("drop", ["hostname", "id", "statistics", "data"])
def test_missing_members_decode_as_the_loop_decodes_them(drop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    series = _series(4)
    del series[1][drop]
    _same_both_ways(_doc(series), monkeypatch)
    for s in series:
        s.pop(drop, None)
    _same_both_ways(_doc(series), monkeypatch)


@pytest.mark.parametrize("series", [
    [], None, [1, 2], [[1]], ["x"], [None], [True], 5, "x", {"hostname": "a"},
    [{"hostname": "a", "data": [1]}, 3], [{"hostname": "a", "data": [1]}, []], [{"hostname": "a", "data": [1]}, None],
])
def test_series_that_are_not_objects_decode_as_the_loop_decodes_them(series: Any,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _same_both_ways(_doc(series), monkeypatch)


def test_ragged_and_shuffled_rows_decode_as_the_loop_decodes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    series = _series(4)
    series[2]["data"] = [1.0]  # ragged: gather_rows pads it
    _same_both_ways(_doc(series), monkeypatch)
    # rows whose arrays are not adjacent in the text (statisticsSeries arrays in between)
    raw = json.dumps(_doc(_series(3), statisticsSeries={"min": [1, 2], "max": [3, 4], "median": [2, 3]}))
    _same_both_ways(raw.replace('"series"', '"statisticsSeries2": {"a": [9, 9]}, "series"'), monkeypatch)


def test_go_layout_series_are_lifted_out_of_the_skeleton(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compact text in Go's layout: every block's series come from the lifted columns (no dict
    per series); a series-shaped object anywhere else, or a list mixing lifted and other items,
    is decoded again without lifting, to the same result."""
    lifted = []
    real = data_fmt._LiftedSeries.columns
    monkeypatch.setattr(data_fmt._LiftedSeries, "columns",
                        lambda self, s, a: lifted.append(r := real(self, s, a)) or r)
    doc = _doc(_series(5))
    no_ids = [{k: v for k, v in s.items() if k != "id"} for s in _series(3)]  # Go leaves a nil id out
    doc["mem"] = {"socket": {"unit": {"base": "B"}, "timestep": 60, "series": no_ids}}
    compact = json.dumps(doc, separators=(",", ":"))
    got = decode_job_data(compact)
    assert len(lifted) == 2 and all(c is not None for c in lifted)
    assert got["mem"]["socket"].ids == [None, None, None] and got["cpu_load"]["node"].ids == list("01234")
    monkeypatch.undo()
    _same_both_ways(compact, monkeypatch)
    # a series-shaped object where no series list holds it (an unknown member of a block)
    extra = _doc(_series(2), extra={"hostname": "x", "statistics": {"min": 1.0, "avg": 1.0, "max": 1.0},
                                    "data": [1.0]})
    _same_both_ways(json.dumps(extra, separators=(",", ":")), monkeypatch)
    # a list mixing lifted objects and others (an escaped hostname is not lifted)
    mixed = _series(3)
    mixed[1]["hostname"] = 'n"1'
    _same_both_ways(json.dumps(_doc(mixed), separators=(",", ":")), monkeypatch)
    # statistics as Go may write them: integers, exponents, negative zero
    odd = _series(2)
    odd[0]["statistics"] = {"min": 0, "avg": -0.0, "max": 12345678901234567}
    odd[1]["statistics"] = {"min": 1e-7, "avg": 2.5e21, "max": 1e308}
    assert isinstance(_same_both_ways(_doc(odd), monkeypatch), dict)


def test_error_messages_of_the_loop_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop names the first offending series: the fast path falls back to it."""
    series = _series(4)
    series[3]["hostname"] = 1
    series[2]["statistics"] = {"min": True}
    got = _same_both_ways(_doc(series), monkeypatch)
    assert got == "FormatError: data.json: cpu_load/node.series[2].statistics.min must be a number"
    series[2]["statistics"] = {"min": 1.0}
    assert _same_both_ways(_doc(series), monkeypatch) == \
        "FormatError: data.json: cpu_load/node.series[3].hostname must be a string"


_number = st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=32), st.integers(-5, 5))
_odd = st.one_of(st.none(), st.booleans(), st.text(max_size=2), st.lists(st.integers(0, 3), max_size=2),
                 st.dictionaries(st.sampled_from(["min", "x"]), st.integers(0, 3), max_size=1))


@st.composite
def _random_series(draw: st.DrawFn) -> dict[str, Any]:
    """A series that is mostly well formed, with now and then a member of another type or none."""
    s: dict[str, Any] = {}
    usual = draw(st.integers(0, 9)) > 0
    if usual or draw(st.booleans()):
        s["hostname"] = draw(st.sampled_from(["a", "b", "node-ü"])) if usual else draw(_odd)
    if draw(st.booleans()):
        s["id"] = draw(st.text(max_size=3)) if usual else draw(_odd)
    if usual or draw(st.booleans()):
        stats: Any = {k: draw(st.floats(-1e3, 1e3, allow_nan=False)) for k in ("min", "avg", "max")}
        if not usual:
            stats = draw(st.one_of(_odd, st.fixed_dictionaries({"min": _number, "avg": _odd})))
        s["statistics"] = stats
    if usual or draw(st.booleans()):
        width = draw(st.integers(0, 5))
        s["data"] = draw(st.lists(st.one_of(_number, st.none()), min_size=width, max_size=width)) if usual \
            else draw(st.one_of(_odd, st.lists(_number, max_size=3)))
    return s


@settings(max_examples=300, deadline=None)
@given(st.lists(_random_series(), max_size=6), st.integers(0, 2))
def test_random_blocks_decode_as_the_loop_decodes_them(series: list[dict[str, Any]], equal: int) -> None:
    if equal and series:  # most blocks Go writes: every row as long as the first, all well formed
        first = series[0].get("data")
        width = len(first) if isinstance(first, list) else 3
        series = [{**s, "data": [1.5] * width} for s in series]
    with pytest.MonkeyPatch.context() as mp:
        _same_both_ways(_doc(series), mp)


def test_gather_rows_runs_without_the_gil() -> None:
    """convert's lanes decode side by side: the ragged-rows kernel must not hold the GIL."""
    assert gather_rows.targetoptions.get("nogil") is True
    out = gather_rows(np.arange(6.0), np.array([4, 0]), np.array([2, 3]), 3)
    assert np.array_equal(out, [[4.0, 5.0, np.nan], [0.0, 1.0, 2.0]], equal_nan=True)


# ----------------------------------------------------------------------------------------------
# float32 values with a packed validity bitmap; digests without a canonical copy of the rows

_NEG_NAN = np.array([0xFFC00000], dtype=np.uint32).view(np.float32)[0]
_PAYLOAD_NAN = np.array([0x7FC00123], dtype=np.uint32).view(np.float32)[0]


@pytest.mark.parametrize("values", [
    [], [1.0], [np.nan], [np.nan] * 9, [1.0, np.nan, 2.0] * 7, [_NEG_NAN, 1.0, _PAYLOAD_NAN, -0.0, np.inf],
    list(np.random.default_rng(1).normal(size=1000)),
])
def test_float32_values_match_a_masked_array(values: list[float]) -> None:
    flat = np.array(values, dtype=np.float32)
    want = pa.array(flat.copy(), mask=np.isnan(flat))
    got = S.float32_values(flat)
    got.validate(full=True)
    assert got.equals(want) and got.null_count == want.null_count == int(np.isnan(flat).sum())
    bits = np.frombuffer(got.buffers()[1], dtype=np.uint32, count=len(flat))
    assert (bits[np.isnan(flat)] == 0x7FC00000).all()  # the one quiet NaN in every null slot


def _job() -> Job:
    return Job(cluster="c", sub_cluster="main", job_id=7, start_time=1_700_000_000)


def _blocks(rng: np.random.Generator) -> JobData:
    """Blocks with NaN samples (some of them with other NaN bit patterns), ragged rows, a block of
    NaN only, and an empty block."""
    def block(n: int, width: int) -> JobMetric:
        data = rng.normal(size=(n, width))
        data[rng.random((n, width)) < 0.2] = np.nan
        lengths = np.full(n, width, dtype=np.int64)
        return JobMetric(Unit("x"), 60, [f"h{i}" for i in range(n)], [None] * n, data, lengths,
                         statistics=np.zeros((n, 3)), has_statistics=np.ones(n, dtype=bool))
    ragged = block(4, 9)
    ragged.lengths[1] = 2
    ragged.data[1, 2:] = np.nan
    odd = block(3, 5)
    odd.data[0, 0] = float(_NEG_NAN)
    odd.data[2, 4] = -np.nan
    empty = block(2, 3)
    empty.data[:] = np.nan
    return {"a": {"node": block(3, 11), "core": ragged}, "b": {"socket": odd}, "c": {"node": empty},
            "d": {"node": block(0, 0)}}


def test_rows_digest_equals_the_source_digest_for_nan_and_ragged_blocks() -> None:
    data = _blocks(np.random.default_rng(2))
    metrics, series = S.data_rows(_job(), [(m, data[m]) for m in sorted(data)], "b")
    assert rows_digest(metrics, series) == data_digest(data)
    # the same rows in other shapes: several chunks, rows out of order, a sliced values array
    chunked = pa.concat_tables([series.slice(0, 5), series.slice(5)])
    assert rows_digest(metrics, chunked) == data_digest(data)
    shuffled = series.take(np.random.default_rng(3).permutation(series.num_rows))
    assert rows_digest(metrics, shuffled) == data_digest(data)


def _with_values(series: pa.Table, change: Any) -> pa.Table:
    """``series`` with its data column rebuilt from ``change(values, valid)`` of its flat values."""
    lists = series["data"].combine_chunks()
    values = lists.values
    flat = np.frombuffer(values.buffers()[1], dtype=np.float32, count=len(values)).copy()
    valid = ~np.asarray(values.is_null().to_numpy(zero_copy_only=False))
    change(flat, valid)
    new = pa.Array.from_buffers(pa.float32(), len(flat), [pa.py_buffer(np.packbits(valid, bitorder="little")),
                                                          pa.py_buffer(flat)], null_count=int((~valid).sum()))
    data = pa.ListArray.from_arrays(lists.offsets, new)
    return series.set_column(series.schema.get_field_index("data"), "data", data)


@pytest.mark.parametrize("case", ["valid value", "null slot value", "null made valid", "valid made null"])
def test_rows_digest_sees_every_change_of_the_values_or_nulls(case: str) -> None:
    """A changed sample, a null that a reader would see as a value (or the other way round), and a
    null slot that holds anything but the quiet NaN: never the source's digest."""
    data = _blocks(np.random.default_rng(4))
    metrics, series = S.data_rows(_job(), [(m, data[m]) for m in sorted(data)], "b")

    def change(flat: np.ndarray, valid: np.ndarray) -> None:
        i_valid, i_null = int(np.flatnonzero(valid)[5]), int(np.flatnonzero(~valid)[3])
        if case == "valid value":
            flat[i_valid] += 1.0
        elif case == "null slot value":
            flat[i_null] = 0.0
        elif case == "null made valid":
            valid[i_null] = True  # the quiet NaN stays: a reader sees NaN, a valid float
        else:
            valid[i_valid] = False
    assert rows_digest(metrics, _with_values(series, lambda f, v: None)) == data_digest(data)
    assert rows_digest(metrics, _with_values(series, change)) != data_digest(data)


@pytest.mark.parametrize("offset", [0, 3, 8, 13])
def test_packed_nulls_of_a_sliced_array_and_of_ranges(offset: int) -> None:
    rng = np.random.default_rng(offset)
    flat = rng.normal(size=200).astype(np.float32)
    flat[rng.random(200) < 0.3] = np.nan
    values = S.float32_values(flat.copy()).slice(offset, 150)
    nan = np.isnan(flat[offset:offset + 150])
    assert np.array_equal(_packed_nulls(values, [(0, 60), (60, 150)]), np.packbits(nan, bitorder="little"))
    ranges = [(100, 150), (0, 30), (30, 30), (40, 100)]  # out of order, an empty one, a gap
    want = np.concatenate([nan[a:b] for a, b in ranges])
    assert np.array_equal(_packed_nulls(values, ranges), np.packbits(want, bitorder="little"))
    assert math.ceil(150 / 8) == len(_packed_nulls(values, [(0, 150)]))
