"""Tests of ccarchive.validate: relaxed gate (errors) vs. strict cc-lib schemas (warnings).

Fixtures are the cc-backend test data (see tests/fixtures/README.md) plus the exact Go output quoted in
reference §5.2/§5.3, which the unmodified schemas reject although cc-backend writes and reads it.
"""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from ccarchive import validate as v
from ccarchive.validate import ValidationReport, validate_cluster, validate_data, validate_meta

FIX = Path(__file__).parent / "fixtures"
CCB = FIX / "cc-backend"
EMMY_JOB = CCB / "archive" / "emmy" / "1403" / "244" / "1608923076"
IMPORT = CCB / "import"

# reference §5.2: meta.json exactly as the Go archiver writes it
GO_META = (
    '{"cluster":"fritz","subCluster":"main","partition":"singlenode","project":"abcd","user":"abcd10h",'
    '"shared":"none","jobState":"completed","resources":[{"hostname":"f0101","hwthreads":[0,1,2,3,4,5,6,7]}],'
    '"energyFootprint":null,"footprint":null,"metaData":null,'
    '"concurrentJobs":{"items":null,"count":0},"energy":0,"walltime":86400,"jobId":1234567,"duration":240,'
    '"smt":1,"monitoringStatus":1,"numHwthreads":8,"numNodes":1,"statistics":{"cpu_load":{"unit":{"base":""},'
    '"avg":7.93,"min":7.88,"max":8.01},"flops_any":{"unit":{"base":"F/s","prefix":"G"},"avg":28.5,"min":3.5,'
    '"max":42}},"id":17,"startTime":1700000000}\n'
)

# reference §5.3: data.json exactly as Go writes it (ids 2..7 filled in), statisticsSeries with "mean":null
_CORE = ",".join(
    f'{{"hostname":"f0101","id":"{i}","statistics":{{"min":0.00,"avg":1.00,"max":2.00}},"data":[2.00,1.00,0.00,null]}}'
    for i in range(8)
)
GO_DATA = (
    '{"cpu_load":{"node":{"unit":{"base":""},"series":[{"hostname":"f0101","statistics":{"min":7.88,"avg":7.93,'
    '"max":8.01},"data":[7.90,8.01,null,7.88]}],"timestep":60}},'
    '"flops_any":{"core":{"statisticsSeries":{"mean":null,"median":[1.0,null,2.0,null],'
    '"min":[1.11,0.00,0.00,null],"max":[8.89,10.50,0.88,null]},"unit":{"base":"F/s","prefix":"G"},'
    f'"series":[{_CORE}],"timestep":60}},'
    '"node":{"unit":{"base":"F/s","prefix":"G"},"series":[{"hostname":"f0101","id":"0","statistics":{"min":3.50,'
    '"avg":28.50,"max":42.00},"data":[40.00,42.00,3.50,null]}],"timestep":60}}}\n'
)


def _load(path: Path) -> Any:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as f:
            return json.load(f)
    return json.loads(path.read_text("utf-8"))


@pytest.fixture(scope="module")
def emmy_data() -> dict[str, Any]:
    return _load(EMMY_JOB / "data.json.gz")


@pytest.fixture(scope="module")
def emmy_data_report(emmy_data: dict[str, Any]) -> ValidationReport:
    return validate_data(emmy_data)


@pytest.fixture
def fritz_data() -> dict[str, Any]:
    return _load(IMPORT / "data-fritzMinimal.json")


@pytest.fixture
def fritz_meta() -> dict[str, Any]:
    return _load(IMPORT / "meta-fritzError.input")


def _has(lines: list[str], *parts: str) -> bool:
    return any(all(p in line for p in parts) for line in lines)


# ---------------------------------------------------------------------------------------------------
# schema files and derivation


def test_packaged_schemas_are_the_unchanged_fixture_copies() -> None:
    for name in v.SCHEMA_NAMES:
        shipped = json.loads((FIX / "cc-lib-schemas" / f"{name}.schema.json").read_text("utf-8"))
        assert v.get_schema(name) == shipped
        assert shipped["$id"] == f"embedfs://{name}.schema.json"


def test_relaxed_schemas_are_derived_without_touching_the_originals() -> None:
    relaxed_unit = v.get_schema("unit", relaxed=True)
    assert "enum" not in relaxed_unit["properties"]["base"]
    assert "enum" in v.get_schema("unit")["properties"]["base"]
    assert "required" in v.get_schema("job-meta")["properties"]["statistics"]
    assert "required" not in v.get_schema("job-meta", relaxed=True)["properties"]["statistics"]
    assert v.get_validator("job-meta", relaxed=True) is v.get_validator("job-meta", relaxed=True)
    assert v.relaxations()


# ---------------------------------------------------------------------------------------------------
# fixtures: no errors in relaxed mode, the known strict failures as warnings


def test_emmy_meta() -> None:
    r = validate_meta(_load(EMMY_JOB / "meta.json"))
    assert r.errors == [] and r.ok
    assert _has(r.warnings, "meta.json: statistics/cpu_load/unit/base:", "'load' is not one of")
    # the required metric list is not a warning (a job has the metrics its cluster measures) ...
    assert not _has(r.warnings, "'cpu_user' is a required property")
    # ... but the strict schema does require it
    assert _strict_has("job-meta", _load(EMMY_JOB / "meta.json"), "'cpu_user' is a required property")


def test_emmy_data(emmy_data_report: ValidationReport) -> None:
    r = emmy_data_report
    assert r.errors == []
    assert _has(r.warnings, "data.json: cpu_load/node/unit/base:", "'load' is not one of")
    assert not _has(r.warnings, "'cpu_user' is a required property")
    # legacy ipc series without statistics: one grouped warning for the 32 hosts, not 32 lines
    ipc = [w for w in r.warnings if w.startswith("data.json: ipc/node/series[*]:")]
    assert len(ipc) == 1
    assert "'statistics' is a required property" in ipc[0] and "32 times" in ipc[0]
    assert len(r.warnings) < 10


@pytest.mark.parametrize("name", ["meta-fritzMinimal.input", "meta-fritzError.input"])
def test_fritz_import_meta(name: str) -> None:
    r = validate_meta(_load(IMPORT / name), where=name)
    assert r.errors == []
    assert _has(r.warnings, f"{name}: statistics/vectorization_ratio/unit/base:", "'%'")
    # ib_recv_pkts is not named by the schema: checked against job-metric-statistics all the same
    assert _has(r.warnings, "statistics/ib_recv_pkts/unit/base:", "'packets/s'")


@pytest.mark.parametrize("name", ["data-fritzMinimal.json", "data-fritzError.json"])
def test_fritz_import_data(name: str) -> None:
    r = validate_data(_load(IMPORT / name), where=name)
    assert r.errors == []
    assert not _has(r.warnings, "'net_bw' is a required property")
    assert _strict_has("job-data", _load(IMPORT / name), "'net_bw' is a required property")
    assert _has(r.warnings, f"{name}: ib_recv_pkts/node/unit/base:", "'packets/s'")


@pytest.mark.parametrize(
    ("path", "units"),
    [
        (CCB / "archive" / "emmy" / "cluster.json", []),
        (CCB / "archive" / "alex" / "cluster.json", ["'Flops/s'"]),
        (CCB / "archive" / "fritz" / "cluster.json", ["'Flops/s'", "'packets/s'"]),
        (IMPORT / "cluster-fritz.json", []),
    ],
)
def test_cluster_fixtures(path: Path, units: list[str]) -> None:
    r = validate_cluster(_load(path))
    assert r.errors == []
    for unit in units:
        assert _has(r.warnings, "cluster.json: metricConfig[", "/unit/base:", unit)
    if not units:
        assert r.warnings == []


# ---------------------------------------------------------------------------------------------------
# Go-style output: what cc-backend writes for every archive is accepted without a warning, though
# the strict schemas reject it


def _strict_has(name: str, doc: Any, *parts: str) -> bool:
    """Whether the unchanged cc-lib schema reports a message containing every part."""
    return any(all(p in m for p in parts) for m in (e.message for e in v.get_validator(name).iter_errors(doc)))


def test_go_style_meta_passes_without_warnings() -> None:
    doc = json.loads(GO_META)
    r = validate_meta(doc)
    assert r.errors == [] and r.warnings == []
    assert _strict_has("job-meta", doc, "None is not of type 'object'")
    assert _strict_has("job-meta", doc, "None is not of type 'array'")
    assert _strict_has("job-meta", doc, "'cpu_user' is a required property")


def test_go_style_data_passes_without_warnings() -> None:
    doc = json.loads(GO_DATA)
    r = validate_data(doc)
    assert r.errors == [] and r.warnings == []
    assert _strict_has("job-data", doc, "'net_bw' is a required property")
    assert _strict_has("job-metric-data", doc["flops_any"]["core"], "None is not of type 'array'")
    assert _strict_has("job-metric-data", doc["flops_any"]["core"], "None is not of type 'number'")


def test_compat_relaxations_are_listed_first() -> None:
    lines = list(v.relaxations())
    compat = v.COMPAT_RELAXATIONS.splitlines()
    assert lines[: len(compat)] == compat and len(lines) > len(compat)
    assert any("energy" in line for line in compat)


def test_short_statistics_series_is_not_a_warning() -> None:
    doc = json.loads(GO_DATA)
    ss = doc["flops_any"]["core"]["statisticsSeries"]
    ss["median"], ss["min"], ss["max"] = [1.0, 2.0], [0.5, None], [3.0, 4.0]
    ss["percentiles"] = {"25": [0.7, 0.8], "75": [None, 2.0]}
    r = validate_data(doc)
    assert r.errors == [] and r.warnings == []
    assert _strict_has("job-metric-data", doc["flops_any"]["core"], "[1.0, 2.0] is too short")
    doc["flops_any"]["core"]["statisticsSeries"]["median"] = ["1.0", 2.0]
    assert _has(
        validate_data(doc).errors, "statisticsSeries/median[0]: '1.0' is not of type 'number', 'null'"
    )


def test_negative_statistics_are_warnings(fritz_data: dict[str, Any]) -> None:
    series = fritz_data["flops_any"]["core"]["series"]
    for s in series:
        s["statistics"]["min"] = -1.0
    series[3]["statistics"]["avg"] = -1.0
    r = validate_data(fritz_data)
    assert r.errors == []
    assert (
        "data.json: flops_any/core/series[3]/statistics/avg: -1.0 is less than the minimum of 0" in r.warnings
    )
    grouped = [w for w in r.warnings if w.startswith("data.json: flops_any/core/series[*]/statistics/min:")]
    assert (
        len(grouped) == 1
        and f"({len(series)} times, first at flops_any/core/series[0]/statistics/min)" in grouped[0]
    )


def test_negative_job_statistics_and_zero_counters_are_warnings(fritz_meta: dict[str, Any]) -> None:
    fritz_meta["statistics"]["cpu_load"]["min"] = -0.5
    fritz_meta["duration"] = 0
    r = validate_meta(fritz_meta)
    assert r.errors == []
    assert _has(r.warnings, "meta.json: statistics/cpu_load/min: -0.5 is less than the minimum of 0")
    assert _has(r.warnings, "meta.json: duration: 0 is less than or equal to the minimum of 0")


def test_all_null_series_is_a_warning(fritz_data: dict[str, Any]) -> None:
    fritz_data["cpu_load"]["node"]["series"][0]["data"] = [None, None, None]
    r = validate_data(fritz_data)
    assert r.errors == []
    assert _has(r.warnings, "cpu_load/node/series[0]/data: [None, None, None] does not contain items")


# ---------------------------------------------------------------------------------------------------
# structural breakage: errors


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda m: m.pop("jobId"), "meta.json: 'jobId' is a required property"),
        (lambda m: m.pop("cluster"), "meta.json: 'cluster' is a required property"),
        (
            lambda m: m.__setitem__("startTime", "1700000000"),
            "meta.json: startTime: '1700000000' is not of type",
        ),
        (
            lambda m: m.__setitem__("resources", "f0720"),
            "meta.json: resources: 'f0720' is not of type 'array'",
        ),
        (
            lambda m: m.__setitem__("resources", [{}]),
            "meta.json: resources[0]: 'hostname' is a required property",
        ),
        (
            lambda m: m.__setitem__("footprint", [1]),
            "meta.json: footprint: [1] is not of type 'object', 'null'",
        ),
        (
            lambda m: m["statistics"]["cpu_load"].pop("avg"),
            "statistics/cpu_load: 'avg' is a required property",
        ),
        # not named by the schema, still a job-metric-statistics entry
        (
            lambda m: m["statistics"]["ib_recv_pkts"].pop("unit"),
            "statistics/ib_recv_pkts: 'unit' is a required",
        ),
    ],
)
def test_meta_structural_errors(fritz_meta: dict[str, Any], mutate: Any, expected: str) -> None:
    assert validate_meta(fritz_meta).errors == []
    mutate(fritz_meta)
    r = validate_meta(fritz_meta)
    assert not r.ok
    assert _has(r.errors, expected), r.errors
    # an error is not repeated as a warning
    assert not set(r.errors) & set(r.warnings)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["cpu_load"]["node"]["series"][0].__setitem__("data", "1.0,2.0"),
            "data.json: cpu_load/node/series[0]/data: '1.0,2.0' is not of type 'array'",
        ),
        (
            lambda d: d["cpu_load"]["node"]["series"][0]["data"].__setitem__(1, "2.0"),
            "data.json: cpu_load/node/series[0]/data[1]: '2.0' is not of type 'number', 'null'",
        ),
        (
            lambda d: d["cpu_load"]["node"].pop("timestep"),
            "data.json: cpu_load/node: 'timestep' is a required",
        ),
        (lambda d: d["cpu_load"]["node"].pop("unit"), "data.json: cpu_load/node: 'unit' is a required"),
        (lambda d: d["cpu_load"]["node"].pop("series"), "data.json: cpu_load/node: 'series' is a required"),
        (
            lambda d: d["flops_any"]["core"]["series"][5].pop("hostname"),
            "data.json: flops_any/core/series[5]: 'hostname' is a required property",
        ),
        (
            lambda d: d["flops_any"]["core"]["series"][5].pop("data"),
            "data.json: flops_any/core/series[5]: 'data' is a required property",
        ),
        (lambda d: d["cpu_load"]["node"]["series"][0].__setitem__("data", []), "should be non-empty"),
        # metrics the schema does not name are checked against job-metric-data as well
        (
            lambda d: d["ib_recv_pkts"]["node"].pop("timestep"),
            "data.json: ib_recv_pkts/node: 'timestep' is a",
        ),
        (
            lambda d: d["ib_recv_pkts"]["node"]["series"][0].pop("hostname"),
            "data.json: ib_recv_pkts/node/series[0]: 'hostname' is a required property",
        ),
        (
            lambda d: d.__setitem__("ib_recv_pkts", [1]),
            "data.json: ib_recv_pkts: [1] is not of type 'object'",
        ),
        (
            lambda d: d["cpu_load"].__setitem__("node", 5),
            "data.json: cpu_load/node: 5 is not of type 'object'",
        ),
    ],
)
def test_data_structural_errors(fritz_data: dict[str, Any], mutate: Any, expected: str) -> None:
    assert validate_data(fritz_data).errors == []
    mutate(fritz_data)
    r = validate_data(fritz_data)
    assert not r.ok
    assert _has(r.errors, expected), r.errors
    assert not set(r.errors) & set(r.warnings)


def test_legacy_series_without_statistics_is_only_a_warning(fritz_data: dict[str, Any]) -> None:
    del fritz_data["cpu_load"]["node"]["series"][0]["statistics"]
    r = validate_data(fritz_data)
    assert r.errors == []
    assert "data.json: cpu_load/node/series[0]: 'statistics' is a required property" in r.warnings


def test_cluster_structural_errors() -> None:
    doc = _load(CCB / "archive" / "emmy" / "cluster.json")
    broken = copy.deepcopy(doc)
    del broken["subClusters"][0]["topology"]
    broken["metricConfig"][2].pop("timestep")
    r = validate_cluster(broken, where="emmy/cluster.json")
    assert _has(r.errors, "emmy/cluster.json: subClusters[0]: 'topology' is a required property")
    assert _has(r.errors, "emmy/cluster.json: metricConfig[2]: 'timestep' is a required property")


@pytest.mark.parametrize("doc", [[], "x", None, 3])
def test_not_an_object(doc: Any) -> None:
    for fn in (validate_meta, validate_data, validate_cluster):
        r = fn(doc)
        assert len(r.errors) == 1 and "is not of type 'object'" in r.errors[0]


# ---------------------------------------------------------------------------------------------------
# message shape


def test_messages_are_short_single_lines(
    fritz_data: dict[str, Any], emmy_data_report: ValidationReport
) -> None:
    fritz_data["cpu_load"]["node"]["series"][0]["data"] = "x\n" * 5000
    r = validate_data(fritz_data)
    for line in [*r.errors, *r.warnings, *emmy_data_report.warnings]:
        assert "\n" not in line and len(line) < 400


def test_many_distinct_messages_are_capped(fritz_meta: dict[str, Any]) -> None:
    for i in range(3 * v.MAX_LINES):
        fritz_meta["statistics"][f"metric_{chr(97 + i % 26)}{i // 26}"] = {"avg": 1, "min": 0, "max": 2}
    r = validate_meta(fritz_meta)
    assert len(r.errors) == v.MAX_LINES
    assert r.errors[-1].startswith("meta.json: ... and ") and "more kinds of message" in r.errors[-1]


def test_report_extend() -> None:
    a = ValidationReport(["e1"], ["w1"])
    a.extend(ValidationReport(["e2"], []))
    assert a.errors == ["e1", "e2"] and a.warnings == ["w1"] and not a.ok
