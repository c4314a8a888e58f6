"""Byte-compatibility of meta.json / data.json with Go's encoding/json, the number-formatting
kernels against Python's exact formatting, tolerant decoding of the reference fixtures, and gzip.

Expected strings are copied from go-archive-format.md §5 (output of the real Go code)."""

from __future__ import annotations

import gzip
import io
import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ccarchive.errors import FormatError
from ccarchive.formats import compress
from ccarchive.formats import data as data_fmt
from ccarchive.formats.data import decode_job_data, encode_job_data, iter_job_data
from ccarchive.formats.gojson import go_float64
from ccarchive.formats.meta import decode_job_meta, encode_job_meta
from ccarchive.kernels.encode import (
    NonFiniteStatistic,
    encode_rows,
    encode_rows_reference,
    encode_series,
    f32_2dp_reference,
    f64_2dp_reference,
    f64_array_json,
    f64_arrays_json,
    format_f64_2dp,
)
from ccarchive.model import (
    ConcurrentJobs,
    Job,
    JobLink,
    JobMetric,
    JobStatistics,
    Resource,
    StatsSeries,
    Tag,
    Unit,
)
from ccarchive.statistics import compute_block_statistics

FIXTURES = Path(__file__).parent / "fixtures" / "cc-backend"
EMMY = FIXTURES / "archive" / "emmy" / "1403" / "244" / "1608923076"
IMPORT = FIXTURES / "import"
NAN = math.nan


# ----------------------------------------------------------------------------------------------
# meta.json


META_EXAMPLE = (
    '{"cluster":"fritz","subCluster":"main","partition":"singlenode","project":"abcd","user":"abcd10h",'
    '"shared":"none","jobState":"completed","resources":[{"hostname":"f0101","hwthreads":[0,1,2,3,4,5,6,7]}],'
    '"energyFootprint":null,"footprint":{"cpu_load_avg":7.93,"flops_any_avg":10.5,"mem_used_max":12.3},'
    '"metaData":{"jobName":"test","jobScript":"#!/bin/bash"},"concurrentJobs":{"items":null,"count":0},'
    '"energy":0,"walltime":86400,"jobId":1234567,"duration":240,"smt":1,"monitoringStatus":1,'
    '"numHwthreads":8,"numNodes":1,"statistics":{"cpu_load":{"unit":{"base":""},"avg":7.93,"min":7.88,'
    '"max":8.01},"flops_any":{"unit":{"base":"F/s","prefix":"G"},"avg":28.5,"min":3.5,"max":42}},'
    '"id":17,"startTime":1700000000}'
)


def example_job() -> Job:
    return Job(
        cluster="fritz", sub_cluster="main", job_id=1234567, start_time=1700000000,
        user="abcd10h", project="abcd", partition="singlenode", shared="none", job_state="completed",
        resources=[Resource("f0101", hwthreads=list(range(8)))], num_nodes=1,
        footprint={"mem_used_max": 12.3, "flops_any_avg": 10.5, "cpu_load_avg": 7.93},
        meta_data={"jobScript": "#!/bin/bash", "jobName": "test"},
        walltime=86400, duration=240, smt=1, monitoring_status=1, num_hwthreads=8,
        statistics={
            "flops_any": JobStatistics(Unit("F/s", "G"), avg=28.5, min=3.5, max=42.0),
            "cpu_load": JobStatistics(Unit(""), avg=7.93, min=7.88, max=8.01),
        },
        id=17,
    )


def test_meta_example_byte_identical() -> None:
    assert encode_job_meta(example_job()) == (META_EXAMPLE + "\n").encode()


def test_meta_example_decodes_and_reencodes() -> None:
    job = decode_job_meta(META_EXAMPLE)
    assert job == example_job()
    assert encode_job_meta(job) == (META_EXAMPLE + "\n").encode()


def _minimal(**kw: object) -> Job:
    job = Job(cluster="c", sub_cluster="s", job_id=1, start_time=2)
    for k, v in kw.items():
        setattr(job, k, v)
    return job


def _meta(**kw: object) -> str:
    return encode_job_meta(_minimal(**kw)).decode()


def test_meta_minimal_omitempty_and_nulls() -> None:
    assert _meta() == (
        '{"cluster":"c","subCluster":"s","project":"","user":"","shared":"none","jobState":"completed",'
        '"resources":[],"energyFootprint":null,"footprint":null,"metaData":null,'
        '"concurrentJobs":{"items":null,"count":0},"energy":0,"jobId":1,"duration":0,"numNodes":0,'
        '"statistics":null,"startTime":2}\n'
    )


def test_meta_optional_fields_in_go_order() -> None:
    out = _meta(
        tags=[Tag("Debug", "Testjob", "global", 3)], array_job_id=5, requested_memory=128000, num_acc=2,
        submit_time=99, id=0, energy_footprint={"cpu_power": 1.5}, energy=2.25,
        resources=[Resource("g1", configuration="cfg", accelerators=["00:01.0"])],
        concurrent_jobs=ConcurrentJobs([JobLink(7, 70)], 1),
    )
    assert out == (
        '{"cluster":"c","subCluster":"s","project":"","user":"","shared":"none","jobState":"completed",'
        '"tags":[{"type":"Debug","name":"Testjob","scope":"global","id":3}],'
        '"resources":[{"hostname":"g1","configuration":"cfg","accelerators":["00:01.0"]}],'
        '"energyFootprint":{"cpu_power":1.5},"footprint":null,"metaData":null,'
        '"concurrentJobs":{"items":[{"id":7,"jobId":70}],"count":1},"energy":2.25,"arrayJobId":5,'
        '"requestedMemory":128000,"jobId":1,"duration":0,"numAcc":2,"numNodes":0,"statistics":null,'
        '"id":0,"submitTime":99,"startTime":2}\n'
    )


@pytest.mark.parametrize(("value", "text"), [
    (2599.0, "2599"), (0.0, "0"), (63.57, "63.57"), (1e-7, "1e-7"), (1e21, "1e+21"),
    (3.4028234663852886e38, "3.4028234663852886e+38"), (1e20, "100000000000000000000"),
    (0.000001, "0.000001"), (-0.0, "-0"),
])
def test_meta_float64_go_formatting(value: float, text: str) -> None:
    job = _minimal(statistics={"m": JobStatistics(Unit("x"), avg=value, min=0.0, max=0.0)}, energy=value)
    out = encode_job_meta(job).decode()
    assert f'"energy":{text},' in out
    assert f'"statistics":{{"m":{{"unit":{{"base":"x"}},"avg":{text},"min":0,"max":0}}}}' in out


def test_meta_html_escaping() -> None:
    out = _meta(project="p<1>&", meta_data={"jobScript": "a\nb\u2028\t"})
    assert '"project":"p\\u003c1\\u003e\\u0026"' in out
    assert '"metaData":{"jobScript":"a\\nb\\u2028\\t"}' in out


def test_meta_nan_statistic_refused() -> None:
    with pytest.raises(FormatError, match="statistics.m.avg"):
        _meta(statistics={"m": JobStatistics(Unit("x"), avg=NAN, min=0.0, max=0.0)})


def test_meta_decode_emmy_legacy() -> None:
    job = decode_job_meta((EMMY / "meta.json").read_bytes())
    assert job.key == ("emmy", 1403244, 1608923076)
    assert (job.sub_cluster, job.partition, job.num_nodes, job.duration) == ("haswell", "work", 32, 86486)
    assert len(job.resources) == 32 and job.resources[0] == Resource("e0102")
    assert job.tags == [] and job.shared == "none"
    assert job.statistics is not None and len(job.statistics) == 9
    assert job.statistics["mem_bw"] == JobStatistics(Unit("B/s", "G"), 63.57, 0.0, 74.5)
    assert job.statistics["cpu_load"].unit == Unit("load")
    assert job.footprint is None and job.meta_data is None


@pytest.mark.parametrize("name", ["fritzMinimal", "fritzError"])
def test_meta_decode_fritz_import_roundtrip(name: str) -> None:
    raw = json.loads((IMPORT / f"meta-{name}.input").read_bytes())
    golden = json.loads((IMPORT / f"{name}-golden.json").read_bytes())
    job = decode_job_meta(raw)
    assert (job.job_id, job.cluster, job.start_time, job.duration) == (
        golden["jobId"], golden["cluster"], golden["startTime"], golden["duration"])
    again = decode_job_meta(encode_job_meta(job))
    assert again == job
    # Every key of the input survives with the same value (Go would drop zero omitempty fields).
    out = json.loads(encode_job_meta(job))
    for k, v in raw.items():
        if k in out:
            assert out[k] == v, k
        else:
            assert v in (0, "", None, []), k


def test_meta_decode_legacy_exclusive_and_missing_unit() -> None:
    base = {"cluster": "c", "jobId": 1, "startTime": 2, "stopTime": 9, "unknown": {"x": 1}}
    assert decode_job_meta({**base, "exclusive": 1}).shared == "none"
    assert decode_job_meta({**base, "exclusive": 0}).shared == "multi_user"
    assert decode_job_meta({**base, "exclusive": 2}).shared == "single_user"
    assert decode_job_meta({**base, "exclusive": 2, "shared": "none"}).shared == "none"
    job = decode_job_meta({**base, "statistics": {"m": {"avg": 1, "min": 0.5, "max": 2}}})
    assert job.statistics == {"m": JobStatistics(Unit(), 1.0, 0.5, 2.0)}


@pytest.mark.parametrize(("obj", "message"), [
    ({"cluster": "c", "jobId": "1", "startTime": 2}, "meta.json: jobId must be an integer"),
    ({"cluster": "c", "jobId": 1.5, "startTime": 2}, "meta.json: jobId must be an integer"),
    ({"cluster": "c", "startTime": 2}, "meta.json: jobId is missing"),
    ({"jobId": 1, "startTime": 2}, "meta.json: cluster is missing"),
    ({"cluster": "c", "jobId": 1, "startTime": 2, "resources": [{"hostname": 5}]},
     r"meta.json: resources\[0\].hostname must be a string"),
    ({"cluster": "c", "jobId": 1, "startTime": 2, "statistics": {"m": {"avg": "x"}}},
     "meta.json: statistics.m.avg must be a number"),
    ({"cluster": "c", "jobId": 1, "startTime": 2, "exclusive": 7}, "exclusive must be 0, 1 or 2"),
    # integers beyond what Go decodes (and a job DB or Parquet column holds): one-line FormatErrors
    ({"cluster": "c", "jobId": 2**63, "startTime": 2},
     "meta.json: jobId must be a 64-bit integer, got one of 19 digits"),
    ({"cluster": "c", "jobId": 1, "startTime": -(2**63) - 1}, "meta.json: startTime must be a 64-bit integer"),
    ({"cluster": "c", "jobId": 1, "startTime": 2, "duration": 1e300}, "meta.json: duration must be a 64-bit integer"),
    ({"cluster": "c", "jobId": 1, "startTime": 2, "energy": 10**400},
     "meta.json: energy: an integer of 401 digits is beyond the float64 range"),
    ({"cluster": "c", "jobId": 1, "startTime": 2, "statistics": {"m": {"avg": -(10**309)}}},
     "meta.json: statistics.m.avg: an integer of 310 digits is beyond the float64 range"),
    ({"cluster": "c", "jobId": 1, "startTime": 2, "footprint": {"x_avg": 10**400}},
     "meta.json: footprint.x_avg: an integer"),
    ({"cluster": "c", "jobId": 1, "startTime": 2, "resources": [{"hostname": "a", "hwthreads": [0, 2**64]}]},
     r"meta.json: resources\[0\].hwthreads must be an array of 64-bit integers"),
])
def test_meta_decode_errors(obj: dict[str, object], message: str) -> None:
    with pytest.raises(FormatError, match=message):
        decode_job_meta(obj)


def test_meta_decode_not_json() -> None:
    with pytest.raises(FormatError, match="meta.json: not valid JSON"):
        decode_job_meta(b"{nope")
    with pytest.raises(FormatError, match="must be an object"):
        decode_job_meta("[1]")


# ----------------------------------------------------------------------------------------------
# data.json


def _block(unit: Unit, hosts: list[str], ids: list[str | None], rows: list[list[float]],
           stats: list[tuple[float, float, float]], ss: StatsSeries | None = None) -> JobMetric:
    b = JobMetric.from_rows(unit, 60, hosts, ids, rows)
    b.statistics = np.array(stats, dtype=np.float64)
    b.statistics_series = ss
    return b


def example_job_data() -> dict[str, dict[str, JobMetric]]:
    core_rows = [[1.11, 0.0, 0.0, NAN], [2.22, 1.5, 0.125, NAN]]
    core_rows += [[float(i), 1.0, 0.5, NAN] for i in range(2, 8)]
    core_stats = [(0.0, 0.37, 1.11), (0.13, 1.28, 2.22)] + [(0.5, 1.0, float(i)) for i in range(2, 8)]
    ss = StatsSeries(
        min=np.array([1.11, 0.0, 0.0, NAN]), median=np.array([5.0, 5.25, 0.4375, NAN]),
        max=np.array([8.89, 10.5, 0.88, NAN]),
    )
    return {
        "flops_any": {
            "node": _block(Unit("F/s", "G"), ["f0101"], ["0"], [[40.0, 42.0, 3.5, NAN]], [(3.5, 28.5, 42.0)]),
            "core": _block(Unit("F/s", "G"), ["f0101"] * 8, [str(i) for i in range(8)], core_rows, core_stats,
                           ss),
        },
        "cpu_load": {
            "node": _block(Unit(""), ["f0101"], [None], [[7.9, 8.01, NAN, 7.88]], [(7.88, 7.93, 8.01)]),
        },
    }


DATA_PREFIX = (
    '{"cpu_load":{"node":{"unit":{"base":""},"series":[{"hostname":"f0101","statistics":{"min":7.88,"avg":7.93,'
    '"max":8.01},"data":[7.90,8.01,null,7.88]}],"timestep":60}},'
    '"flops_any":{"core":{"statisticsSeries":{"mean":null,"median":[5.00,5.25,0.44,null],"min":[1.11,0.00,0.00,null],'
    '"max":[8.89,10.50,0.88,null]},'
    '"unit":{"base":"F/s","prefix":"G"},"series":[{"hostname":"f0101","id":"0","statistics":{"min":0.00,"avg":0.37,'
    '"max":1.11},"data":[1.11,0.00,0.00,null]},'
    '{"hostname":"f0101","id":"1","statistics":{"min":0.13,"avg":1.28,"max":2.22},"data":[2.22,1.50,0.12,null]},'
)
DATA_SUFFIX = (
    '],"timestep":60},'
    '"node":{"unit":{"base":"F/s","prefix":"G"},"series":[{"hostname":"f0101","id":"0","statistics":{"min":3.50,'
    '"avg":28.50,"max":42.00},"data":[40.00,42.00,3.50,null]}],"timestep":60}}}\n'
)


def test_data_example_matches_go_output() -> None:
    out = encode_job_data(example_job_data()).decode()
    assert out.startswith(DATA_PREFIX)
    assert out.endswith(DATA_SUFFIX)
    middle = out[len(DATA_PREFIX) : -len(DATA_SUFFIX)]
    assert middle.count('{"hostname":"f0101","id":"') == 6
    assert '"id":"7","statistics":{"min":0.50,"avg":1.00,"max":7.00},"data":[7.00,1.00,0.50,null]}' in middle
    assert out.count("\n") == 1


def test_data_decode_roundtrip_exact() -> None:
    raw = encode_job_data(example_job_data())
    again = decode_job_data(raw)
    assert encode_job_data(again) == raw
    core = again["flops_any"]["core"]
    assert core.statistics_series is not None and core.statistics_series.mean is None
    assert core.ids == [str(i) for i in range(8)]
    assert again["cpu_load"]["node"].ids == [None]
    assert bool(np.all(core.has_statistics))


def test_data_stats_series_percentiles_and_mean() -> None:
    ss = StatsSeries(min=np.array([1.0]), median=np.array([2.0]), max=np.array([3.0]), mean=np.array([2.5]),
                     percentiles={90: np.array([2.9]), 9: np.array([1.1]), 10: np.array([1.2])})
    assert data_fmt.encode_stats_series(ss) == (
        b'{"percentiles":{"10":[1.20],"9":[1.10],"90":[2.90]},"mean":[2.50],"median":[2.00],'
        b'"min":[1.00],"max":[3.00]}'
    )
    empty = StatsSeries(np.array([]), np.array([]), np.array([]), percentiles={})
    assert data_fmt.encode_stats_series(empty) == b'{"mean":null,"median":[],"min":[],"max":[]}'


def test_data_html_escaping_and_sorting() -> None:
    b = _block(Unit("a<b"), ["h&1"], ["x>"], [[1.0]], [(1.0, 1.0, 1.0)])
    out = encode_job_data({"z": {"node": b}, "a<": {"socket": b, "core": b}}).decode()
    assert out.startswith('{"a\\u003c":{"core":{"unit":{"base":"a\\u003cb"},"series":['
                          '{"hostname":"h\\u00261","id":"x\\u003e",')
    assert out.index('"core"') < out.index('"socket"') < out.index('"z"')


def test_data_refuses_what_go_cannot_encode() -> None:
    b = _block(Unit(""), ["h"], [None], [[1.0]], [(NAN, 1.0, 1.0)])
    with pytest.raises(FormatError, match="non-finite statistic"):
        encode_job_data({"m": {"node": b}})
    good = _block(Unit(""), ["h"], [None], [[1.0]], [(1.0, 1.0, 1.0)])
    with pytest.raises(FormatError, match="z/node"):
        next(iter_job_data({"a": {"node": good}, "z": {"node": b}}))  # fails before the first piece
    b.statistics = None
    with pytest.raises(FormatError, match="statistics were not computed"):
        encode_job_data({"m": {"node": b}})
    b = _block(Unit(""), ['h"1'], [None], [[1.0]], [(1.0, 1.0, 1.0)])
    with pytest.raises(FormatError, match="hostname"):
        encode_job_data({"m": {"node": b}})
    ss = StatsSeries(min=np.array([math.inf]), median=np.array([1.0]), max=np.array([1.0]))
    b = _block(Unit(""), ["h"], [None], [[1.0]], [(1.0, 1.0, 1.0)], ss)
    with pytest.raises(FormatError, match="statisticsSeries.min"):
        encode_job_data({"m": {"node": b}})


def test_data_zero_series_and_ragged_rows() -> None:
    empty = JobMetric(Unit("x"), 30, [], [], np.zeros((0, 0)), np.zeros(0, dtype=np.int64), np.zeros((0, 3)))
    expected = b'{"m":{"node":{"unit":{"base":"x"},"series":null,"timestep":30}}}\n'
    assert encode_job_data({"m": {"node": empty}}) == expected
    b = _block(Unit(""), ["a", "b"], [None, None], [[1.0, 2.0, 3.0], [4.0]], [(1, 2, 3), (4, 4, 4)])
    out = encode_job_data({"m": {"node": b}})
    assert b'"data":[1.00,2.00,3.00]}' in out and b'"data":[4.00]}' in out
    back = decode_job_data(out)["m"]["node"]
    assert back.lengths.tolist() == [3, 1] and np.isnan(back.data[1, 1:]).all()


def test_data_streaming_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    rows = np.round(rng.gamma(2.0, 40.0, (300, 500)), 2)
    b = JobMetric(Unit("B"), 60, [f"h{i // 4:03d}" for i in range(300)], [str(i % 4) for i in range(300)],
                  rows, np.full(300, 500, dtype=np.int64), np.zeros((300, 3)))
    jd = {"m": {"core": b}, "n": {"node": b}}
    whole = encode_job_data(jd)
    monkeypatch.setattr(data_fmt, "CHUNK_SAMPLES", 1000)
    monkeypatch.setattr(data_fmt, "CHUNK_BYTES", 50_000)
    pieces = list(iter_job_data(jd))
    assert b"".join(pieces) == whole
    assert len(pieces) > 10
    assert max(map(len, pieces)) < 50_000 + 20_000
    assert pieces[-1].endswith(b"}\n")
    json.loads(whole)


def test_data_decode_emmy_legacy() -> None:
    raw = gzip.decompress((EMMY / "data.json.gz").read_bytes())
    jd = decode_job_data(raw)
    assert sorted(jd) == sorted(["cpu_load", "clock", "rapl_power", "ipc", "mem_bw", "flops_sp", "mem_used",
                                 "flops_dp", "flops_any"])
    for metric, scopes in jd.items():
        assert list(scopes) == ["node"], metric
        b = scopes["node"]
        assert b.data.shape == (32, 1441) and b.timestep == 60
        assert b.lengths.tolist() == [1441] * 32
        assert b.ids == [None] * 32
    assert int(np.isnan(jd["cpu_load"]["node"].data).sum()) == 4221
    ipc = jd["ipc"]["node"]
    assert ipc.has_statistics is not None and not ipc.has_statistics.any()
    assert ipc.statistics is not None and not ipc.statistics.any()
    cpu = jd["cpu_load"]["node"]
    assert cpu.unit == Unit("load") and cpu.hostnames[0] == "e0102"
    assert cpu.statistics is not None and cpu.statistics[0].tolist() == [4.01, 17.98, 19.42]
    assert cpu.data[0, :3].tolist() == [4.01, 14.37, 16.29] and math.isnan(cpu.data[0, 3])
    assert jd["mem_used"]["node"].unit == Unit("B/s", "G")
    # Re-encoding gives valid JSON with the same values (at 2-decimal precision).
    again = json.loads(encode_job_data(jd))
    assert again["cpu_load"]["node"]["series"][0]["data"][:4] == [4.01, 14.37, 16.29, None]


@pytest.mark.parametrize("name", ["fritzMinimal", "fritzError"])
def test_data_fritz_reencode_same_number_text(name: str) -> None:
    raw = (IMPORT / f"data-{name}.json").read_bytes()
    out = encode_job_data(decode_job_data(raw))
    # Go output from an older cc-lib (timestep before series): same content, same number text.
    assert len(out) == len(raw)
    assert json.loads(out, parse_float=str) == json.loads(raw, parse_float=str)
    assert out.endswith(b"}\n")


def test_data_decode_tolerant_shapes() -> None:
    raw = """{"m": {"node": {"timestep": 60, "unit": {"base": "x"}, "extra": 1,
        "series": [{"hostname": "a", "id": 3, "data": [1.23456789012345, null, 2]},
                   {"statistics": {"avg": 1, "max": 2}, "hostname": "b", "data": [1]}],
        "statisticsSeries": {"min": [1, null], "median": [1, 1], "max": [2, 2],
                             "percentiles": {"50": [1, 1]}}}}}"""
    b = decode_job_data(raw)["m"]["node"]
    assert b.ids == ["3", None] and b.lengths.tolist() == [3, 1]
    assert b.has_statistics is not None and b.has_statistics.tolist() == [False, True]
    assert b.statistics is not None and b.statistics.tolist() == [[0, 0, 0], [0, 1, 2]]
    assert b.statistics_series is not None and b.statistics_series.mean is None
    assert b.statistics_series.percentiles is not None and list(b.statistics_series.percentiles) == [50]
    assert math.isnan(b.statistics_series.min[1])


@pytest.mark.parametrize(("raw", "message"), [
    ("[]", "top level"), ('{"m": {"node": {"series": []}}}', "m/node.timestep"),
    ('{"m": {"node": {"timestep": 1, "series": [{"data": []}]}}}', "hostname"),
    ('{"m": {"node": {"timestep": 1, "series": [{"hostname": "a", "data": ["x"]}]}}}', "numbers"),
    ("{", "not valid JSON"),
    ('{"m": {"node": {"timestep": 1%s, "series": []}}}' % ("0" * 30), "m/node.timestep must be a 64-bit integer"),
    ('{"m": {"node": {"timestep": 1, "series": [{"hostname": "a", "data": [1], '
     '"statistics": {"min": 1%s, "avg": 1, "max": 1}}]}}}' % ("0" * 400),
     r"m/node.series\[0\].statistics.min: an integer of 401 digits is beyond the float64 range"),
])
def test_data_decode_errors(raw: str, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        decode_job_data(raw)
    with pytest.raises(FormatError, match=message):  # the same from an object decoded by json
        decode_job_data(json.loads(raw)) if raw.startswith("{\"") else decode_job_data(raw)


@pytest.mark.parametrize(("field", "message"), [
    ("data", r"m/node: series data hold an integer beyond the float64 range"),
    ("statisticsSeries", r"m/node.statisticsSeries.min holds an integer beyond the float64 range"),
])
def test_decoded_object_with_huge_integers_is_a_format_error(field: str, message: str) -> None:
    """json.loads keeps a 400-digit integer an int (the text decoder reads it as a float, inf):
    an object holding one is refused with a FormatError, not an OverflowError."""
    block: dict[str, Any] = {"timestep": 1, "series": [{"hostname": "a", "data": [1.0]}]}
    if field == "data":
        block["series"][0]["data"] = [10**400]
    else:
        block["statisticsSeries"] = {"min": [10**400], "median": [1.0], "max": [1.0]}
    with pytest.raises(FormatError, match=message):
        decode_job_data({"m": {"node": block}})


# ----------------------------------------------------------------------------------------------
# Number-formatting kernels

#: Go's strconv.AppendFloat(float64(float32(3.4028235e38)), 'f', 2, 32): FLT_MAX with two decimals
FLT_MAX_TEXT = "340282346638528859811704183484516925440.00"
#: 2**128 - 2**103, the smallest magnitude whose float32 cast overflows to Inf
F32_OVERFLOW = 2.0**128 - 2.0**103


@pytest.mark.parametrize(("value", "text"), [
    (0.125, "0.12"), (0.375, "0.38"), (16777217.0, "16777216.00"), (0.2850000001, "0.28"), (-0.0, "-0.00"),
    (-0.001, "-0.00"), (-1.5, "-1.50"), (NAN, "null"), (math.inf, "null"), (1e39, "null"), (7.9, "7.90"),
    (3.4028234663852886e38, "340282346638528859811704183484516925440.00"), (1e16, "10000000272564224.00"),
    (9.999999e15, "9999999198822400.00"), (1e-45, "0.00"), (99.995, "100.00"),
    # the float32 range limit: below 2**128 - 2**103 the cast rounds to FLT_MAX, from there on it overflows
    (3.4028235e38, FLT_MAX_TEXT), (-3.4028235e38, "-" + FLT_MAX_TEXT), (3.4028236e38, "null"),
    (-3.4028236e38, "null"), (F32_OVERFLOW, "null"), (-F32_OVERFLOW, "null"),
    (float(np.nextafter(F32_OVERFLOW, 0.0)), FLT_MAX_TEXT),
    (float(np.nextafter(-F32_OVERFLOW, 0.0)), "-" + FLT_MAX_TEXT),
    (float(np.nextafter(F32_OVERFLOW, math.inf)), "null"), (-math.inf, "null"),
])
def test_encode_rows_values(value: float, text: str) -> None:
    buf, off = encode_rows(np.array([[value, 1.0]]), np.array([1]))
    assert bytes(buf) == f"[{text}]".encode()
    assert off.tolist() == [0, len(text) + 2]
    assert f32_2dp_reference(value) == text


def _float32_bits() -> st.SearchStrategy[float]:
    return st.integers(0, 2**32 - 1).map(lambda b: float(np.uint32(b).view(np.float32)))


_row_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1e6, 1e6),
    _float32_bits(),
    st.integers(-10**6, 10**6).map(lambda k: k / 8),       # exact ties x.x25 / x.x75
    st.integers(-10**7, 10**7).map(lambda k: k / 1000),    # near-ties after the float32 cast
    st.sampled_from([0.0, -0.0, 1e30, -1e30, 3.4028234663852886e38, 3.4028235e38, 1e-40, -1e-40, 1e15, 1e16]),
    st.sampled_from([3.4028236e38, F32_OVERFLOW, float(np.nextafter(F32_OVERFLOW, 0.0)),
                     float(np.nextafter(F32_OVERFLOW, math.inf))]).flatmap(lambda x: st.sampled_from([x, -x])),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(_row_values, max_size=40), min_size=0, max_size=8))
def test_encode_rows_matches_python(rows: list[list[float]]) -> None:
    width = max((len(r) for r in rows), default=0)
    data = np.full((len(rows), width), 123.0)
    for i, r in enumerate(rows):
        data[i, : len(r)] = r
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    buf, off = encode_rows(data, lengths)
    got = [bytes(buf[off[i] : off[i + 1]]) for i in range(len(rows))]
    assert got == encode_rows_reference(data, lengths)
    assert off[-1] == len(buf)


_f64_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=False),
    st.floats(-1e5, 1e5),
    st.integers(-10**8, 10**8).map(lambda k: k / 1000),
    st.integers(-10**8, 10**8).map(lambda k: k / 8),
    st.integers(-10**8, 10**8).map(lambda k: np.nextafter(k / 200, math.inf)),
    st.integers(-10**8, 10**8).map(lambda k: np.nextafter(k / 200, -math.inf)),
    st.floats(4e13, 5e13), st.floats(1e14, 1e25),
    st.sampled_from([0.0, -0.0, 0.005, 0.015, 0.285, 1.005, 2.675, 45035996273704.95, 1e-300, 5e-324]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_f64_values, max_size=50))
def test_format_f64_matches_python(values: list[float]) -> None:
    v = np.array(values, dtype=np.float64)
    expected = ["null" if math.isnan(x) else format(x, ".2f") for x in values]
    buf, off = format_f64_2dp(v)
    assert [bytes(buf[off[i] : off[i + 1]]).decode() for i in range(len(values))] == expected
    assert f64_array_json(v).decode() == "[" + ",".join(expected) + "]"


def test_format_f64_exhaustive_hundredths() -> None:
    # Every value k/1000 and its float neighbours in [-100, 100]: all near-ties of the 2-decimal grid.
    k = np.arange(-100_000, 100_001) / 1000
    v = np.concatenate([k, np.nextafter(k, np.inf), np.nextafter(k, -np.inf)])
    buf, off = format_f64_2dp(v)
    text = buf.tobytes().decode()
    o = off.tolist()
    assert [text[o[i] : o[i + 1]] for i in range(len(v))] == [format(x, ".2f") for x in v.tolist()]


def test_format_f64_refuses_inf() -> None:
    with pytest.raises(ValueError):
        format_f64_2dp(np.array([1.0, math.inf]))
    with pytest.raises(ValueError):
        f64_array_json(np.array([-math.inf]))


_stat_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False), st.floats(-1e5, 1e5),
    st.integers(-10**8, 10**8).map(lambda k: k / 8), st.floats(1e14, 1e25).flatmap(lambda x: st.sampled_from([x, -x])),
    st.sampled_from([0.0, -0.0, 0.005, 2.675, 45035996273704.95, 5e-324]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.lists(_row_values, max_size=30), st.tuples(_stat_values, _stat_values, _stat_values),
                          st.sampled_from(['{"hostname":"f0101"', '{"hostname":"a","id":"7"', ""])),
                max_size=8), st.data())
def test_encode_series_matches_the_per_value_encoders(series: list[Any], draw: st.DataObject) -> None:
    n = len(series)
    width = max((len(r) for r, _, _ in series), default=0)
    data = np.full((n, width), 7.0)
    for i, (r, _, _) in enumerate(series):
        data[i, : len(r)] = r
    lengths = np.array([len(r) for r, _, _ in series], dtype=np.int64)
    stats = np.array([s for _, s, _ in series], dtype=np.float64).reshape(n, 3)
    heads = [h.encode() for _, _, h in series]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([len(h) for h in heads], out=offsets[1:])
    text = np.frombuffer(b"".join(heads), dtype=np.uint8)
    rows = encode_rows_reference(data, lengths)
    expected = b",".join(
        heads[i] + b',"statistics":{"min":%s,"avg":%s,"max":%s},"data":' % tuple(
            f64_2dp_reference(x).encode() for x in stats[i].tolist()) + rows[i] + b"}"
        for i in range(n))
    assert encode_series(text, offsets, stats, data, lengths, 0, n) == expected
    cut = draw.draw(st.integers(0, n))
    assert encode_series(text, offsets, stats, data, lengths, 0, cut) \
        + encode_series(text, offsets, stats, data, lengths, cut, n) == expected


@pytest.mark.parametrize("bad", [NAN, math.inf, -math.inf])
def test_encode_series_names_a_non_finite_statistic(bad: float) -> None:
    heads = np.frombuffer(b'{"hostname":"a"{"hostname":"b"', dtype=np.uint8)
    stats = np.array([[1.0, 1.0, 1.0], [1.0, bad, 1e30]])
    with pytest.raises(NonFiniteStatistic) as e:
        encode_series(heads, np.array([0, 15, 30]), stats, np.ones((2, 1)), np.ones(2, dtype=np.int64), 0, 2)
    assert e.value.row == 1
    with pytest.raises(ValueError, match="do not match"):
        encode_series(heads, np.array([0, 15]), stats, np.ones((2, 1)), np.ones(2, dtype=np.int64), 0, 2)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(_f64_values, max_size=12), max_size=6))
def test_f64_arrays_json_is_f64_array_json_of_each(arrays: list[list[float]]) -> None:
    values = [np.array(a, dtype=np.float64) for a in arrays]
    got = f64_arrays_json(values)
    if got is None:  # huge values: the exact path, array by array
        assert any(abs(x) * 100 >= 2.0**52 for a in arrays for x in a)
    else:
        assert got == [f64_array_json(v) for v in values]
    if values:
        values[-1] = np.append(values[-1], math.inf)
        assert f64_arrays_json(values) is None  # the caller formats one by one and names the bad one


def test_data_series_heads_are_reused_and_still_checked() -> None:
    a = _block(Unit("x"), ["h1", "h1"], ["0", "1"], [[1.0], [2.0]], [(1, 1, 1), (2, 2, 2)])
    b = _block(Unit("y"), ["h1", "h1"], ["0", "1"], [[3.0], [4.0]], [(3, 3, 3), (4, 4, 4)])
    out = encode_job_data({"a": {"core": a}, "b": {"core": b}})
    assert out.count(b'{"hostname":"h1","id":"1","statistics":') == 2
    assert json.loads(out)["b"]["core"]["series"][1]["data"] == [4.0]
    for _ in range(2):  # a refused name is not remembered as encodable
        bad = _block(Unit(""), ["h1", "h\n"], ["0", "1"], [[1.0], [1.0]], [(1, 1, 1), (1, 1, 1)])
        with pytest.raises(FormatError, match="hostname"):
            encode_job_data({"m": {"core": bad}})
    bad = _block(Unit(""), ["h1"], ['0"'], [[1.0]], [(1, 1, 1)])
    with pytest.raises(FormatError, match="series id"):
        encode_job_data({"m": {"core": bad}})


def _go_float64_reference(x: float) -> str:
    """Go's shortest 'f' / 'e' float64 text, derived from the shortest digits by Decimal."""
    sign, digits, exp = Decimal(repr(x)).as_tuple()
    assert isinstance(exp, int)
    if not any(digits):
        return "-0" if sign else "0"
    ds = "".join(map(str, digits)).lstrip("0")
    e10 = exp + len(ds) - 1
    ds = ds.rstrip("0")
    neg = "-" if sign else ""
    if -6 <= e10 < 21:
        whole = e10 + 1
        if whole <= 0:
            return neg + "0." + "0" * -whole + ds
        if whole >= len(ds):
            return neg + ds + "0" * (whole - len(ds))
        return neg + ds[:whole] + "." + ds[whole:]
    return f"{neg}{ds[0]}{'.' + ds[1:] if len(ds) > 1 else ''}e{'-' if e10 < 0 else '+'}{abs(e10):02d}" \
        .replace("e-0", "e-")


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.floats(-1e7, 1e7),
                 st.integers(-10**17, 10**17).map(float), st.integers(-30, 30).map(lambda e: 10.0**e)))
def test_go_float64_matches_go_rules(x: float) -> None:
    assert go_float64(x) == _go_float64_reference(x)


# ----------------------------------------------------------------------------------------------
# gzip


def test_gzip_rule() -> None:
    assert not compress.should_gzip(2000)
    assert compress.should_gzip(2001)


@pytest.mark.parametrize("level", [0, 1, 2, 3, 4, 9])
def test_gzip_bytes_roundtrip(level: int) -> None:
    payload = encode_job_data(example_job_data()) * 500
    z = compress.gzip_bytes(payload, level)
    assert compress.is_gzip(z)
    assert gzip.decompress(z) == payload
    assert compress.gunzip_bytes(gzip.compress(payload)) == payload
    assert compress.gzip_bytes(payload, level) == z  # deterministic (mtime 0)


@pytest.mark.parametrize(("threads", "level"), [(1, 1), (2, 3), (2, 6)])
def test_gzip_writer_roundtrip(threads: int, level: int) -> None:
    rng = np.random.default_rng(3)
    rows = np.round(rng.normal(50, 20, (400, 2000)), 2)
    payload = encode_rows(rows, np.full(400, 2000))[0].tobytes() * 2
    sink = io.BytesIO()
    with compress.open_gzip_writer(sink, level=level, threads=threads) as w:
        for i in range(0, len(payload), 700_000):
            w.write(payload[i : i + 700_000])
    assert not sink.closed
    assert gzip.decompress(sink.getvalue()) == payload
    with compress.open_gzip_reader(io.BytesIO(sink.getvalue())) as r:
        assert r.read() == payload
    assert gzip.decompress(compress.gzip_bytes(payload, level, threads=2)) == payload


def test_gzip_level_checked() -> None:
    with pytest.raises(ValueError, match="0..9"):
        compress.gzip_bytes(b"x", 10)


@pytest.mark.parametrize("raw", [b"[]", b"42", b"{", b"\xff\xfe", b""])
def test_decoders_reject_non_objects_with_a_format_error(raw: bytes) -> None:
    for decode, what in ((decode_job_meta, "meta.json"), (decode_job_data, "data.json")):
        with pytest.raises(FormatError, match=what):
            decode(raw)


def test_data_float32_boundary_statistics_and_bytes() -> None:
    """From samples to data.json: a sample float32 rounds down to FLT_MAX is kept, in the statistics
    with its float64 value and in the data as FLT_MAX; one whose cast overflows is masked before the
    statistics and written as null."""
    below, above = float(np.nextafter(F32_OVERFLOW, 0.0)), float(np.nextafter(F32_OVERFLOW, math.inf))
    row = [3.4028235e38, -3.4028235e38, 3.4028236e38, -3.4028236e38, F32_OVERFLOW, below, -above, math.inf, NAN, 1.0]
    block = JobMetric(Unit("F/s"), 60, ["h1"], [None], np.array([row]), np.array([len(row)], dtype=np.int64))
    assert compute_block_statistics(block) == 5
    assert block.statistics is not None
    assert block.statistics.tolist() == [[-3.4028235e38, below / 4, below]]  # mean: (x - x + below + 1) / 4
    flt = FLT_MAX_TEXT
    assert encode_job_data({"m": {"node": block}}) == (
        '{"m":{"node":{"unit":{"base":"F/s"},"series":[{"hostname":"h1","statistics":{'
        '"min":-340282349999999991754788743781432688640.00,"avg":85070589194933405964651883125245214720.00,'
        '"max":340282356779733623858607532500980858880.00},'
        f'"data":[{flt},-{flt},null,null,null,{flt},null,null,null,1.00]}}],"timestep":60}}}}}}\n'
    ).encode()
