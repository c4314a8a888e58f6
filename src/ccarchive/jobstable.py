"""Jobs as one Arrow table: a row per job, a column per scalar field and per metric statistic.

Why: "the ten jobs with the highest mean mem_bw" or "node hours per user" should be one sort or
one group-by in pandas, polars or DuckDB, not a loop over meta.json documents with units joined
by hand.  Every backend's ``jobs_table()`` ends here; the file and S3 archives read meta.json in
threads (object stores answer slowly one at a time, fast in parallel), the SQLite archive pages
through its rows, and the Parquet dataset reads its own jobs table without any JSON.

Columns, in this order (names as in the Parquet dataset's jobs table):

* the scalar fields of meta.json (:data:`SCALAR_COLUMNS`), plus ``end_time`` (start + duration),
  ``concurrent_jobs`` (their count) and ``node_hours``, ``core_hours`` (hardware threads),
  ``gpu_hours`` (accelerators), each ``duration / 3600`` times the count;
* ``<metric>_avg``, ``<metric>_min``, ``<metric>_max`` for every metric with job statistics;
* ``footprint_<metric>_<avg|min|max>`` for the footprint values, ``energy_<metric>`` (kWh) for
  the energy footprint.

A value a job does not have is null.  Times are Unix seconds (UTC).  Units are in each field's
metadata under ``b"unit"`` (e.g. ``GB/s``, ``h``, ``kWh``): ``table.schema.field("mem_bw_avg")
.metadata[b"unit"]``; :func:`units` returns them all as a dict.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ClusterConfigError, InputError
from .model import JOB_STATES, Job

if TYPE_CHECKING:
    import pyarrow as pa

    from .backends import Archive
    from .cluster import Cluster
    from .names import JobKey

#: (column, Arrow type name, unit) of the per-job scalar columns, in table order.
SCALAR_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("cluster", "string", ""), ("job_id", "int64", ""), ("start_time", "int64", "s"),
    ("end_time", "int64", "s"), ("duration", "int64", "s"), ("user", "string", ""),
    ("project", "string", ""), ("sub_cluster", "string", ""), ("partition", "string", ""),
    ("job_state", "string", ""), ("shared", "string", ""), ("num_nodes", "int64", ""),
    ("num_hwthreads", "int64", ""), ("num_acc", "int64", ""), ("smt", "int64", ""),
    ("walltime", "int64", "s"), ("submit_time", "int64", "s"), ("requested_memory", "int64", "MB"),
    ("array_job_id", "int64", ""), ("monitoring_status", "int64", ""), ("id", "int64", ""),
    ("concurrent_jobs", "int64", ""), ("energy", "float64", "kWh"),
    ("node_hours", "float64", "h"), ("core_hours", "float64", "h"), ("gpu_hours", "float64", "h"),
)
STATS = ("avg", "min", "max")
#: The scalar columns computed from meta.json fields (the Parquet jobs files store them too).
DERIVED_COLUMNS = ("end_time", "node_hours", "core_hours", "gpu_hours")
#: Threads reading meta.json of a file or S3 archive.
READ_THREADS = 16


def _scalar(job: Job, name: str) -> Any:
    if name == "end_time":
        return job.start_time + job.duration
    if name == "concurrent_jobs":
        return job.concurrent_jobs.count if job.concurrent_jobs is not None else 0
    if name.endswith("_hours"):
        count = {"node_hours": job.num_nodes, "core_hours": job.num_hwthreads, "gpu_hours": job.num_acc}[name]
        return count * job.duration / 3600.0
    return getattr(job, name)


# -- filters -------------------------------------------------------------------------------------

def to_epoch(value: Any, what: str = "time") -> int | None:
    """Unix seconds of ``value``: int/float seconds, a ``datetime`` (naive = UTC), a
    ``numpy.datetime64`` or an ISO 8601 string (as the command line takes it); None stays None."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return int((value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp())
    if isinstance(value, np.datetime64):
        return int(value.astype("datetime64[s]").astype(np.int64))
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        if not math.isfinite(float(value)):
            raise InputError(f"{what}: {value!r} is not a point in time")
        return int(value)
    if isinstance(value, str):
        from .times import parse_time

        try:
            return parse_time(value)
        except ValueError as e:
            raise InputError(f"{what}: {e}") from None
    raise InputError(f"{what}: {value!r} is not a point in time (Unix seconds, datetime or ISO 8601 string)")


@dataclass(frozen=True)
class JobFilter:
    """Which jobs ``jobs_table`` keeps: ``since <= start_time < until``, and equal user, state."""

    cluster: str | None = None
    user: str | None = None
    since: int | None = None
    until: int | None = None
    states: frozenset[str] | None = None

    @classmethod
    def make(cls, archive: Archive | None, cluster: str | None = None, user: str | None = None,
             since: Any = None, until: Any = None, state: str | Collection[str] | None = None) -> JobFilter:
        """The checked filter: an unknown cluster of ``archive`` or job state, or a time that is
        none, is an error here rather than an empty table later."""
        if cluster is not None and archive is not None and cluster not in (known := archive.clusters()):
            raise ClusterConfigError(f"{archive.url}: unknown cluster {cluster!r} "
                                     f"(clusters: {', '.join(known) or 'none'})")
        states = None
        if state is not None:
            states = frozenset([state] if isinstance(state, str) else state)
            if bad := sorted(states - set(JOB_STATES)):
                raise InputError(f"unknown job state {bad[0]!r} (one of: {', '.join(JOB_STATES)})")
        return cls(cluster, user, to_epoch(since, "since"), to_epoch(until, "until"), states)

    def keep_start(self, start_time: int) -> bool:
        return (self.since is None or start_time >= self.since) and (self.until is None or start_time < self.until)

    def keep_key(self, key: JobKey) -> bool:
        return (self.cluster is None or key[0] == self.cluster) and self.keep_start(key[2])

    def keep(self, job: Job) -> bool:
        return (self.keep_key(job.key) and (self.user is None or job.user == self.user)
                and (self.states is None or job.job_state in self.states))


# -- building the table ----------------------------------------------------------------------------

@dataclass
class Layout:
    """The flat columns beyond the scalars: metric name -> unit, footprint keys, energy metrics."""

    metrics: dict[str, str]
    footprint: list[str]
    energy: list[str]

    @classmethod
    def of(cls, jobs: Iterable[Job], clusters: Iterable[Cluster] = ()) -> Layout:
        """Every metric, footprint and energy key of ``jobs``, plus those ``clusters`` configure
        (so files written for a cluster have the same columns whichever jobs they hold)."""
        metrics: dict[str, str] = {}
        footprint: set[str] = set()
        energy: set[str] = set()
        for c in clusters:
            for mc in c.metric_config:
                metrics.setdefault(mc.name, mc.unit.prefix + mc.unit.base)
                kinds = {mc.footprint} | {o.footprint for o in mc.sub_clusters}
                footprint |= {f"{mc.name}_{k}" for k in kinds if k in STATS}
                if mc.energy or any(o.energy for o in mc.sub_clusters):
                    energy.add(mc.name)
        for job in jobs:
            for name, st in (job.statistics or {}).items():
                if not metrics.get(name):
                    metrics[name] = st.unit.prefix + st.unit.base
            footprint |= set(job.footprint or ())
            energy |= set(job.energy_footprint or ())
        return cls(dict(sorted(metrics.items())), sorted(footprint), sorted(energy))

    def footprint_unit(self, key: str) -> str:
        metric = key.rsplit("_", 1)[0]
        return self.metrics.get(metric, "")


def _field(name: str, typ: pa.DataType, unit: str) -> pa.Field:
    import pyarrow as pa

    return pa.field(name, typ, metadata={b"unit": unit.encode()} if unit else None)


def _floats(values: list[float | None]) -> pa.Array:
    import pyarrow as pa

    arr = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return pa.array(arr, type=pa.float64(), mask=np.array([v is None for v in values], dtype=bool))


def flat_columns(jobs: list[Job], layout: Layout) -> tuple[list[pa.Field], list[pa.Array]]:
    """The metric statistics, footprint and energy columns of ``jobs`` (null where a job has none)."""
    import pyarrow as pa

    fields: list[pa.Field] = []
    arrays: list[pa.Array] = []
    for metric, unit in layout.metrics.items():
        stats = [(j.statistics or {}).get(metric) for j in jobs]
        for k in STATS:
            fields.append(_field(f"{metric}_{k}", pa.float64(), unit))
            arrays.append(_floats([None if s is None else float(getattr(s, k)) for s in stats]))
    for key in layout.footprint:
        fields.append(_field(f"footprint_{key}", pa.float64(), layout.footprint_unit(key)))
        arrays.append(_floats([(j.footprint or {}).get(key) for j in jobs]))
    for metric in layout.energy:
        fields.append(_field(f"energy_{metric}", pa.float64(), "kWh"))
        arrays.append(_floats([(j.energy_footprint or {}).get(metric) for j in jobs]))
    return fields, arrays


def derived_columns(jobs: list[Job], names: Iterable[str]) -> tuple[list[pa.Field], list[pa.Array]]:
    """The named :data:`SCALAR_COLUMNS` of ``jobs``."""
    import pyarrow as pa

    fields: list[pa.Field] = []
    arrays: list[pa.Array] = []
    spec = {name: (typ, unit) for name, typ, unit in SCALAR_COLUMNS}
    for name in names:
        typ, unit = spec[name]
        fields.append(_field(name, getattr(pa, typ)(), unit))
        arrays.append(pa.array([_scalar(j, name) for j in jobs], type=fields[-1].type))
    return fields, arrays


def jobs_to_table(jobs: Iterable[Job], layout: Layout | None = None) -> pa.Table:
    """The jobs table of ``jobs`` in the order given (columns in the module docstring)."""
    import pyarrow as pa

    jobs = list(jobs)
    layout = layout or Layout.of(jobs)
    fields, arrays = derived_columns(jobs, (name for name, _, _ in SCALAR_COLUMNS))
    more_fields, more_arrays = flat_columns(jobs, layout)
    return pa.Table.from_arrays(arrays + more_arrays, schema=pa.schema(fields + more_fields))


def units(table: pa.Table) -> dict[str, str]:
    """Column name -> unit for the columns that have one (from the field metadata)."""
    return {f.name: f.metadata[b"unit"].decode() for f in table.schema
            if f.metadata and f.metadata.get(b"unit")}


# -- per backend -------------------------------------------------------------------------------------

def read_jobs_table(archive: Archive, flt: JobFilter, *, threads: int = READ_THREADS) -> pa.Table:
    """For archives of meta.json files (file, S3, memory): the keys are filtered first (they hold
    cluster and start time), then the remaining meta.json files are read by ``threads`` threads."""
    keys = [k for k in archive.iter_job_keys(flt.cluster) if flt.keep_key(k)]
    if threads > 1 and len(keys) > 1:
        with ThreadPoolExecutor(max_workers=min(threads, len(keys)), thread_name_prefix="jobs-table") as pool:
            jobs: Iterable[Job] = list(pool.map(archive.load_meta, keys))
    else:
        jobs = map(archive.load_meta, keys)
    return jobs_to_table(j for j in jobs if flt.keep(j))


def scan_jobs_table(jobs: Iterator[Job], flt: JobFilter) -> pa.Table:
    """For backends that iterate their jobs cheaply in one pass (SQLite, the Parquet dataset)."""
    return jobs_to_table(sorted((j for j in jobs if flt.keep(j)), key=lambda j: j.key))
