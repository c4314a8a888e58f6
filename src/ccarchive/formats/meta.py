"""meta.json: encoder byte-identical to Go's ``json.NewEncoder(w).Encode(schema.Job)``, and a
tolerant decoder.

The key order and the omitempty flags below are those of cc-lib ``schema/job.go`` (``Job``,
``Tag``, ``Resource``, ``JobLinkResultList``, ``JobLink``, ``Unit``, ``JobStatistics``); the
``Raw*`` fields are ``json:"-"`` and never written.  Go's rules reproduced here: nil maps are
``null``, map keys are sorted, float64 uses the shortest round-trip form (``2599``, ``1e-7``),
strings are HTML-escaped, and ``Encode`` appends one ``"\\n"``.

The decoder reads what cc-backend and older tools wrote: pretty-printed files, unknown keys
(``stopTime``), the legacy ``exclusive`` integer instead of ``shared``, statistics without a unit,
missing optional fields.  Malformed values give a :class:`FormatError` naming the field.
"""

from __future__ import annotations

import operator
from typing import Any

from ..errors import FormatError
from ..model import ConcurrentJobs, Job, JobLink, JobStatistics, Resource, Tag
from .data import decode_unit, encode_unit
from .gojson import fits_go_int, go_float64, go_number, go_string, parse_object

#: Legacy ``exclusive`` values (cc-backend before ``shared``) mapped to ``shared``.
EXCLUSIVE_TO_SHARED = {0: "multi_user", 1: "none", 2: "single_user"}


# ----------------------------------------------------------------------------------------------
# Encoding


def _int(v: Any, name: str) -> str:
    try:
        return str(operator.index(v))
    except TypeError:
        raise FormatError(f"meta.json: {name} must be an integer, got {v!r}") from None


def _float(v: Any, name: str) -> str:
    try:
        return go_float64(float(v))
    except (TypeError, ValueError):
        raise FormatError(f"meta.json: {name} must be a number, got {v!r}") from None
    except FormatError as e:
        raise FormatError(f"meta.json: {name}: {e}") from None


def _float_map(m: dict[str, float] | None, name: str) -> str:
    if m is None:
        return "null"
    return "{" + ",".join(go_string(k) + ":" + _float(m[k], f"{name}.{k}") for k in sorted(m)) + "}"


def _string_map(m: dict[str, str] | None, name: str) -> str:
    if m is None:
        return "null"
    for k, v in m.items():
        if not isinstance(v, str):
            raise FormatError(f"meta.json: {name}.{k} must be a string, got {type(v).__name__}")
    return "{" + ",".join(go_string(k) + ":" + go_string(m[k]) for k in sorted(m)) + "}"


def _tag(t: Tag) -> str:
    return (
        '{"type":' + go_string(t.type) + ',"name":' + go_string(t.name)
        + ',"scope":' + go_string(t.scope) + ',"id":' + _int(t.id, "tags.id") + "}"
    )


def _resource(r: Resource) -> str:
    out = '{"hostname":' + go_string(r.hostname)
    if r.configuration:
        out += ',"configuration":' + go_string(r.configuration)
    if r.hwthreads:
        out += ',"hwthreads":[' + ",".join(_int(h, "resources.hwthreads") for h in r.hwthreads) + "]"
    if r.accelerators:
        out += ',"accelerators":[' + ",".join(go_string(a) for a in r.accelerators) + "]"
    return out + "}"


def _concurrent(c: ConcurrentJobs | None) -> str:
    if c is None:
        c = ConcurrentJobs()
    if c.items is None:
        items = "null"
    else:
        links = (
            '{"id":' + _int(j.id, "concurrentJobs.id")
            + ',"jobId":' + _int(j.job_id, "concurrentJobs.jobId") + "}"
            for j in c.items
        )
        items = "[" + ",".join(links) + "]"
    return '{"items":' + items + ',"count":' + _int(c.count, "concurrentJobs.count") + "}"


def _statistics(stats: dict[str, JobStatistics] | None) -> str:
    if stats is None:
        return "null"
    parts = []
    for k in sorted(stats):
        s = stats[k]
        w = f"statistics.{k}"
        parts.append(
            go_string(k) + ':{"unit":' + encode_unit(s.unit) + ',"avg":' + _float(s.avg, w + ".avg")
            + ',"min":' + _float(s.min, w + ".min") + ',"max":' + _float(s.max, w + ".max") + "}"
        )
    return "{" + ",".join(parts) + "}"


def job_meta_json(job: Job) -> str:
    """The compact JSON of ``schema.Job`` without a trailing newline (Go's ``json.Marshal``)."""
    f: list[str] = [
        '{"cluster":' + go_string(job.cluster),
        '"subCluster":' + go_string(job.sub_cluster),
    ]
    if job.partition:
        f.append('"partition":' + go_string(job.partition))
    f += [
        '"project":' + go_string(job.project),
        '"user":' + go_string(job.user),
        '"shared":' + go_string(job.shared),
        '"jobState":' + go_string(job.job_state),
    ]
    if job.tags:
        f.append('"tags":[' + ",".join(_tag(t) for t in job.tags) + "]")
    resources = "null" if job.resources is None else "[" + ",".join(_resource(r) for r in job.resources) + "]"
    f += [
        '"resources":' + resources,
        '"energyFootprint":' + _float_map(job.energy_footprint, "energyFootprint"),
        '"footprint":' + _float_map(job.footprint, "footprint"),
        '"metaData":' + _string_map(job.meta_data, "metaData"),
        '"concurrentJobs":' + _concurrent(job.concurrent_jobs),
        '"energy":' + _float(job.energy, "energy"),
    ]
    for key, value in (("arrayJobId", job.array_job_id), ("walltime", job.walltime),
                       ("requestedMemory", job.requested_memory)):
        if value:
            f.append(f'"{key}":' + _int(value, key))
    f += ['"jobId":' + _int(job.job_id, "jobId"), '"duration":' + _int(job.duration, "duration")]
    for key, value in (("smt", job.smt), ("monitoringStatus", job.monitoring_status),
                       ("numAcc", job.num_acc), ("numHwthreads", job.num_hwthreads)):
        if value:
            f.append(f'"{key}":' + _int(value, key))
    f += ['"numNodes":' + _int(job.num_nodes, "numNodes"), '"statistics":' + _statistics(job.statistics)]
    if job.id is not None:  # *int64: omitted only when nil, so id 0 is written
        f.append('"id":' + _int(job.id, "id"))
    if job.submit_time:
        f.append('"submitTime":' + _int(job.submit_time, "submitTime"))
    f.append('"startTime":' + _int(job.start_time, "startTime") + "}")
    return ",".join(f)


def encode_job_meta(job: Job) -> bytes:
    """meta.json bytes: compact JSON of ``schema.Job`` plus ``"\\n"``, byte-identical to Go."""
    return (job_meta_json(job) + "\n").encode()


# ----------------------------------------------------------------------------------------------
# Decoding


class _Reader:
    """Typed field access with ``meta.json: <field> must be ...`` errors; null means absent."""

    def __init__(self, obj: Any, where: str) -> None:
        if not isinstance(obj, dict):
            raise FormatError(f"{where} must be an object")
        self.obj, self.where = obj, where

    def _fail(self, key: str, what: str) -> FormatError:
        return FormatError(f"{self.where}{key} must be {what}, got {self.obj.get(key)!r}")

    def text(self, key: str, default: str | None = "") -> str:
        v = self.obj.get(key)
        if v is None:
            if default is None:
                raise FormatError(f"{self.where}{key} is missing")
            return default
        if not isinstance(v, str):
            raise self._fail(key, "a string")
        return v

    def integer(self, key: str, default: int | None = 0) -> int:
        v = self.obj.get(key)
        if v is None:
            if default is None:
                raise FormatError(f"{self.where}{key} is missing")
            return default
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise self._fail(key, "an integer")
        if not fits_go_int(v):
            raise FormatError(f"{self.where}{key} must be a 64-bit integer, got one of {len(str(abs(v)))} digits")
        return v

    def opt_integer(self, key: str) -> int | None:
        return None if self.obj.get(key) is None else self.integer(key)

    def number(self, key: str) -> float:
        v = self.obj.get(key)
        if v is None:
            return 0.0
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self._fail(key, "a number")
        try:
            return go_number(v)
        except FormatError as e:
            raise FormatError(f"{self.where}{key}: {e}") from None

    def array(self, key: str) -> list[Any] | None:
        v = self.obj.get(key)
        if v is not None and not isinstance(v, list):
            raise self._fail(key, "an array")
        return v

    def mapping(self, key: str) -> dict[str, Any] | None:
        v = self.obj.get(key)
        if v is not None and not isinstance(v, dict):
            raise self._fail(key, "an object")
        return v


def _decode_resource(obj: Any, i: int) -> Resource:
    r = _Reader(obj, f"meta.json: resources[{i}].")
    hw = r.array("hwthreads")
    acc = r.array("accelerators")
    if hw is not None and not all(isinstance(h, int) and not isinstance(h, bool) and fits_go_int(h) for h in hw):
        raise FormatError(f"meta.json: resources[{i}].hwthreads must be an array of 64-bit integers")
    return Resource(
        hostname=r.text("hostname", None),
        configuration=r.text("configuration"),
        hwthreads=hw or None,
        accelerators=[str(a) for a in acc] if acc else None,
    )


def _decode_tag(obj: Any, i: int) -> Tag:
    r = _Reader(obj, f"meta.json: tags[{i}].")
    return Tag(type=r.text("type"), name=r.text("name"), scope=r.text("scope", "global"), id=r.integer("id"))


def _decode_concurrent(obj: Any) -> ConcurrentJobs:
    if obj is None:
        return ConcurrentJobs()
    r = _Reader(obj, "meta.json: concurrentJobs.")
    items = r.array("items")
    links = None
    if items is not None:
        links = []
        for i, it in enumerate(items):
            ir = _Reader(it, f"meta.json: concurrentJobs.items[{i}].")
            links.append(JobLink(id=ir.integer("id"), job_id=ir.integer("jobId")))
    return ConcurrentJobs(items=links, count=r.integer("count"))


def _decode_float_map(obj: dict[str, Any] | None, name: str) -> dict[str, float] | None:
    if obj is None:
        return None
    r = _Reader(obj, f"meta.json: {name}.")
    return {k: r.number(k) for k in obj}


def _decode_statistics(obj: dict[str, Any] | None) -> dict[str, JobStatistics] | None:
    if obj is None:
        return None
    out = {}
    for metric, st in obj.items():
        r = _Reader(st, f"meta.json: statistics.{metric}.")
        out[metric] = JobStatistics(
            unit=decode_unit(st.get("unit"), f"meta.json: statistics.{metric}"),
            avg=r.number("avg"), min=r.number("min"), max=r.number("max"),
        )
    return out


def decode_job_meta(raw: bytes | str | dict[str, Any]) -> Job:
    """Parse a meta.json (Go output or a legacy file) into a :class:`Job`.

    Unknown keys are ignored; ``cluster``, ``jobId`` and ``startTime`` are required."""
    obj = parse_object(raw, "meta.json")
    r = _Reader(obj, "meta.json: ")
    if obj.get("shared") is None and obj.get("exclusive") is not None:
        exclusive = r.integer("exclusive")
        if exclusive not in EXCLUSIVE_TO_SHARED:
            raise FormatError(f"meta.json: exclusive must be 0, 1 or 2, got {exclusive}")
        shared = EXCLUSIVE_TO_SHARED[exclusive]
    else:
        shared = r.text("shared", "none")
    meta_data = r.mapping("metaData")
    if meta_data is not None:
        md = _Reader(meta_data, "meta.json: metaData.")
        meta_data = {k: md.text(k) for k in meta_data}
    return Job(
        cluster=r.text("cluster", None),
        sub_cluster=r.text("subCluster"),
        job_id=r.integer("jobId", None),
        start_time=r.integer("startTime", None),
        user=r.text("user"),
        project=r.text("project"),
        resources=[_decode_resource(x, i) for i, x in enumerate(r.array("resources") or [])],
        num_nodes=r.integer("numNodes"),
        partition=r.text("partition"),
        shared=shared,
        job_state=r.text("jobState", "completed"),
        tags=[_decode_tag(x, i) for i, x in enumerate(r.array("tags") or [])],
        energy_footprint=_decode_float_map(r.mapping("energyFootprint"), "energyFootprint"),
        footprint=_decode_float_map(r.mapping("footprint"), "footprint"),
        meta_data=meta_data,
        concurrent_jobs=_decode_concurrent(r.mapping("concurrentJobs")),
        energy=r.number("energy"),
        array_job_id=r.integer("arrayJobId"),
        walltime=r.integer("walltime"),
        requested_memory=r.integer("requestedMemory"),
        duration=r.integer("duration"),
        smt=r.integer("smt"),
        monitoring_status=r.integer("monitoringStatus"),
        num_acc=r.integer("numAcc"),
        num_hwthreads=r.integer("numHwthreads"),
        statistics=_decode_statistics(r.mapping("statistics")),
        id=r.opt_integer("id"),
        submit_time=r.integer("submitTime"),
    )
