"""data.json decoding from text (the number kernel plus the skeleton) against decoding the same
document from ``json.loads`` objects, the memory it keeps, its errors, and inflating gzip
straight into an array."""

from __future__ import annotations

import gc
import gzip
import io
import json
import weakref
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccarchive.errors import FormatError
from ccarchive.formats import compress
from ccarchive.formats.data import decode_job_data, encode_job_data
from ccarchive.model import JobData, JobMetric, StatsSeries, Unit


def assert_same_data(got: JobData, want: JobData) -> None:
    assert list(got) == list(want)
    for metric in want:
        assert list(got[metric]) == list(want[metric]), metric
        for scope, w in want[metric].items():
            g = got[metric][scope]
            where = f"{metric}/{scope}"
            assert (g.unit, g.timestep, g.hostnames, g.ids) == (w.unit, w.timestep, w.hostnames, w.ids), where
            np.testing.assert_array_equal(g.lengths, w.lengths, err_msg=where)
            assert g.data.shape == w.data.shape, where
            np.testing.assert_array_equal(g.data, w.data, err_msg=where)
            np.testing.assert_array_equal(g.statistics, w.statistics, err_msg=where)
            np.testing.assert_array_equal(g.has_statistics, w.has_statistics, err_msg=where)
            gs, ws = g.statistics_series, w.statistics_series
            assert (gs is None) == (ws is None), where
            if gs is not None and ws is not None:
                for field in ("min", "median", "max", "mean"):
                    np.testing.assert_array_equal(getattr(gs, field), getattr(ws, field), err_msg=f"{where} {field}")
                assert (gs.percentiles is None) == (ws.percentiles is None)
                for k in ws.percentiles or {}:
                    np.testing.assert_array_equal(gs.percentiles[k], ws.percentiles[k])  # type: ignore[index]


# ----------------------------------------------------------------------------------------------
# Same blocks as decoding json.loads' objects, for Go output and legacy shapes

samples = st.one_of(
    st.none(), st.integers(-10**6, 10**6).map(lambda k: round(k / 100, 2)), st.integers(-1000, 1000),
    st.floats(allow_nan=False, allow_infinity=False, width=32), st.floats(-1e3, 1e3),
)


@st.composite
def series_objects(draw: Any, length: int) -> dict[str, Any]:
    s: dict[str, Any] = {"hostname": draw(st.sampled_from(["f0101", "f0102", "e\u00e9\u20ac", "a\\\"b"]))}
    if draw(st.booleans()):
        s["id"] = draw(st.one_of(st.integers(0, 99).map(str), st.integers(0, 99)))
    if draw(st.booleans()):
        s["statistics"] = {k: draw(st.one_of(st.none(), st.floats(-1e3, 1e3))) for k in ("min", "avg", "max")}
    ragged = draw(st.integers(0, 3)) == 0
    n = draw(st.integers(0, length)) if ragged else length
    s["data"] = draw(st.one_of(st.just(None), st.lists(samples, min_size=n, max_size=n))) if ragged else \
        draw(st.lists(samples, min_size=n, max_size=n))
    if draw(st.integers(0, 4)) == 0:
        s["extra"] = draw(st.one_of(st.lists(samples, max_size=3), st.text(max_size=3)))
    return s


@st.composite
def job_metrics(draw: Any) -> dict[str, Any]:
    length = draw(st.integers(0, 12))
    jm: dict[str, Any] = {
        "unit": draw(st.sampled_from([{"base": "F/s", "prefix": "G"}, {"base": "load"}, None])),
        "series": draw(st.lists(series_objects(length), max_size=6)),
        "timestep": draw(st.sampled_from([60, 30, 60.0])),
    }
    if draw(st.booleans()):
        jm["statisticsSeries"] = {
            k: draw(st.lists(samples, min_size=length, max_size=length)) for k in ("min", "median", "max")
        }
        jm["statisticsSeries"]["mean"] = draw(st.one_of(st.none(), st.lists(samples, max_size=length)))
        if draw(st.booleans()):
            jm["statisticsSeries"]["percentiles"] = {"50": draw(st.lists(samples, max_size=length))}
    if draw(st.booleans()):
        jm["stopTime"] = 12
    return jm


data_documents = st.dictionaries(
    st.sampled_from(["cpu_load", "flops_any", "mem_bw", "ipc"]),
    st.dictionaries(st.sampled_from(["node", "core", "socket", "accelerator"]),
                    st.one_of(st.none(), job_metrics()), min_size=1, max_size=3),
    min_size=1, max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(data_documents, st.sampled_from([None, 1, 4]), st.booleans())
def test_text_decodes_like_the_object_tree(doc: dict[str, Any], indent: int | None, sort_keys: bool) -> None:
    text = json.dumps(doc, indent=indent, sort_keys=sort_keys, ensure_ascii=False).encode()
    assert_same_data(decode_job_data(text), decode_job_data(json.loads(text)))


def _root(a: np.ndarray) -> Any:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def test_go_output_blocks_are_views_of_one_array() -> None:
    rng = np.random.default_rng(4)
    data: JobData = {}
    for m, scope, n in (("a", "node", 8), ("b", "node", 3), ("b", "core", 24)):
        rows = np.round(rng.gamma(2.0, 40.0, (n, 50)), 2)
        rows[rng.random(rows.shape) < 0.05] = np.nan
        stats = np.zeros((n, 3))
        ss = StatsSeries(np.zeros(50), np.zeros(50), np.zeros(50), np.zeros(50)) if n >= 8 else None
        data.setdefault(m, {})[scope] = JobMetric(Unit("x"), 60, [f"h{i}" for i in range(n)], [None] * n, rows,
                                                   np.full(n, 50), stats, None, ss)
    raw = encode_job_data(data)
    back = decode_job_data(raw)
    blocks = [back["a"]["node"], back["b"]["node"], back["b"]["core"]]
    roots = {id(_root(b.data)) for b in blocks}
    assert len(roots) == 1  # no copy of the samples
    for b, (m, s) in zip(blocks, (("a", "node"), ("b", "node"), ("b", "core")), strict=True):
        np.testing.assert_array_equal(b.data, data[m][s].data)  # 2-decimal values survive the text
    assert encode_job_data(back) == raw


def test_ragged_and_separated_rows_are_gathered() -> None:
    raw = b"""{"m": {"node": {"timestep": 60, "series": [
        {"hostname": "a", "data": [1, 2, 3]},
        {"hostname": "b", "data": null},
        {"hostname": "c", "extra": [9, 9], "data": [4, null]},
        {"hostname": "d"}]}}}"""
    b = decode_job_data(raw)["m"]["node"]
    assert b.lengths.tolist() == [3, 0, 2, 0]
    np.testing.assert_array_equal(b.data, [[1, 2, 3], [np.nan] * 3, [4, np.nan, np.nan], [np.nan] * 3])
    same_length = b'{"m": {"node": {"timestep": 60, "series": [{"hostname": "a", "data": [1, 2]}, ' \
                  b'{"hostname": "b", "x": [7], "data": [3, 4]}]}}}'
    np.testing.assert_array_equal(decode_job_data(same_length)["m"]["node"].data, [[1, 2], [3, 4]])


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview, "array", "str"])
def test_every_text_form_decodes_alike(kind: Any) -> None:
    raw = encode_job_data({"m": {"node": JobMetric(Unit("x"), 60, ["h"], [None], np.array([[1.5, np.nan]]),
                                                    np.array([2]), np.zeros((1, 3)))}})
    text: Any = {"array": lambda r: np.frombuffer(r, dtype=np.uint8), "str": bytes.decode}.get(kind, kind)(raw)
    assert encode_job_data(decode_job_data(text)) == raw


def test_the_text_is_not_kept() -> None:
    """The caller's text can be freed as soon as decoding returns (the samples live elsewhere)."""
    raw = encode_job_data({"m": {"node": JobMetric(Unit("x"), 60, ["h"] * 4, [None] * 4, np.ones((4, 1000)),
                                                    np.full(4, 1000), np.zeros((4, 3)))}})
    text = np.frombuffer(bytearray(raw), dtype=np.uint8)
    alive = weakref.ref(text)
    data = decode_job_data(text)
    del text
    gc.collect()
    assert alive() is None
    assert data["m"]["node"].data.sum() == 4000


# ----------------------------------------------------------------------------------------------
# Errors: one line, saying what and where


@pytest.mark.parametrize(("raw", "message"), [
    (b'{"m": {"node": {"timestep": 60, "series": [{"hostname": "a", "data": [1, true]}]}}}',
     "data.json: m/node.series[0].data must be an array of numbers or null"),
    (b'{"m": {"node": {"timestep": 60, "series": [1, 2]}}}', "data.json: m/node.series[0] must be an object"),
    (b'{"m": {"node": {"timestep": 60, "series": "x"}}}', "data.json: m/node.series must be an array"),
    (b'{"m": {"node": {"timestep": 60, "series": [], "statisticsSeries": {"min": [1, "x"]}}}}',
     "data.json: m/node.statisticsSeries.min must be an array of numbers or null"),
    (b'{"m": {"node": {"timestep": 60, "series": [{"hostname": "a", "data": 5}]}}}',
     "data.json: m/node.series[0].data must be an array of numbers or null"),
    (b'{\n "m": {\n  "node": {\n   "series": [1 2]}}}',
     "data.json: not valid JSON: expected ',' or ']' at line 4 column 17 (byte 38)"),
    (b'{"m": {"node": {"series": [{"hostname": "\xc3("}]}}}',
     "data.json: not valid JSON: not UTF-8 text at line 1 column 42 (byte 41)"),
    (b"[" * 100_000, "data.json: not valid JSON: nested deeper than 512 levels at line 1 column 513 (byte 512)"),
    (b'{"m":' * 100_000, "data.json: not valid JSON: nested deeper than 512 levels"),
    (b'{"m": {"node": {"series": [{"hostname": "a", "data": [1, 2,]}]}}}',
     "data.json: not valid JSON: expected a value at line 1 column 60 (byte 59)"),
])
def test_errors_say_what_and_where(raw: bytes, message: str) -> None:
    with pytest.raises(FormatError) as info:
        decode_job_data(raw)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------------------------
# gzip straight into an array


def test_gunzip_array_matches_gzip(tmp_path: Any) -> None:
    text = np.random.default_rng(2).integers(48, 58, 3_000_000, dtype=np.uint8).tobytes()
    one = compress.gzip_bytes(text, threads=2)
    assert compress.gunzip_array(one).tobytes() == text
    assert compress.gzip_size_hint(one) == len(text)
    # several members, the last one small: the trailer announces too little and the array grows
    members = gzip.compress(text[:2_000_000]) + gzip.compress(text[2_000_000:])
    assert compress.gunzip_array(members).tobytes() == text
    path = tmp_path / "d.json.gz"
    path.write_bytes(one)
    with path.open("rb") as f:
        assert compress.gunzip_array(f, len(text)).tobytes() == text
    assert compress.gunzip_array(io.BytesIO(members)).tobytes() == text
    assert compress.gunzip_array(gzip.compress(b"")).tobytes() == b""


@pytest.mark.parametrize(("damage", "error"), [
    (lambda z: z[: len(z) // 2], EOFError),
    (lambda z: z[:12] + bytes(40) + z[52:], OSError),
    (lambda z: z[:-8] + b"\x00" * 8, OSError),  # CRC and size wrong
])
def test_gunzip_array_refuses_broken_data(damage: Any, error: type[Exception]) -> None:
    z = compress.gzip_bytes(b"[1.00,2.00]" * 10_000)
    with pytest.raises(error):
        compress.gunzip_array(damage(z))
