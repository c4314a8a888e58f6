"""Data model: jobs (meta.json) and columnar job metric data (data.json).

Field names follow cc-lib's ``schema.Job`` in snake_case; the JSON names and their order live in
``ccarchive.formats.meta``.  Metric data is columnar: one :class:`JobMetric` per (metric, scope)
holds a C-contiguous 2-D float64 array (series x samples, NaN-padded beyond each series' length)
plus per-series lengths, hostnames and ids, so kernels run over whole blocks and nothing on the
hot path is a list of Python floats.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Scope names and their granularity (cc-lib schema/metrics.go): a higher number is coarser.
SCOPE_GRANULARITY: dict[str, int] = {
    "node": 10,
    "socket": 5,
    "memoryDomain": 4,
    "core": 3,
    "hwthread": 2,
    "accelerator": 1,
}
SCOPES = tuple(SCOPE_GRANULARITY)

#: Job states accepted by cc-backend (cc-lib schema/job.go).
JOB_STATES = (
    "boot_fail", "cancelled", "completed", "deadline", "failed", "node_fail",
    "out_of_memory", "pending", "preempted", "running", "suspended", "timeout",
)
SHARED_VALUES = ("none", "single_user", "multi_user")

MONITORING_DISABLED = 0
MONITORING_RUNNING_OR_ARCHIVING = 1
MONITORING_ARCHIVING_FAILED = 2
MONITORING_ARCHIVED = 3


@dataclass(frozen=True)
class Unit:
    base: str = ""
    prefix: str = ""


@dataclass
class Resource:
    hostname: str
    configuration: str = ""
    hwthreads: list[int] | None = None
    accelerators: list[str] | None = None


@dataclass
class Tag:
    type: str
    name: str
    scope: str = "global"
    id: int = 0


@dataclass
class JobStatistics:
    """Job-level statistics of one metric as stored in meta.json."""

    unit: Unit
    avg: float
    min: float
    max: float


@dataclass
class JobLink:
    id: int
    job_id: int


@dataclass
class ConcurrentJobs:
    items: list[JobLink] | None = None
    count: int = 0


@dataclass
class Job:
    """One batch job, the content of meta.json (cc-lib ``schema.Job``)."""

    cluster: str
    sub_cluster: str
    job_id: int
    start_time: int
    user: str = ""
    project: str = ""
    resources: list[Resource] = field(default_factory=list)
    num_nodes: int = 0
    partition: str = ""
    shared: str = "none"
    job_state: str = "completed"
    tags: list[Tag] = field(default_factory=list)
    energy_footprint: dict[str, float] | None = None
    footprint: dict[str, float] | None = None
    meta_data: dict[str, str] | None = None
    concurrent_jobs: ConcurrentJobs = field(default_factory=ConcurrentJobs)
    energy: float = 0.0
    array_job_id: int = 0
    walltime: int = 0
    requested_memory: int = 0
    duration: int = 0
    smt: int = 0
    monitoring_status: int = 0
    num_acc: int = 0
    num_hwthreads: int = 0
    statistics: dict[str, JobStatistics] | None = None
    id: int | None = None
    submit_time: int = 0

    @property
    def key(self) -> tuple[str, int, int]:
        """The archive identity of a job: (cluster, jobId, startTime)."""
        return (self.cluster, self.job_id, self.start_time)

    @property
    def label(self) -> str:
        """Human-readable job name for log lines and error messages."""
        return f"job {self.cluster}/{self.job_id}/{self.start_time}"

    @property
    def hostnames(self) -> list[str]:
        return [r.hostname for r in self.resources]


@dataclass
class StatsSeries:
    """Per-time-step statistics over the series of one (metric, scope); NaN encodes as null."""

    min: FloatArray
    median: FloatArray
    max: FloatArray
    mean: FloatArray | None = None
    percentiles: dict[int, FloatArray] | None = None


@dataclass
class JobMetric:
    """All series of one metric at one scope, stored column-friendly.

    ``data[i, :lengths[i]]`` are the samples of series ``i``; the rest of the row is NaN.
    ``statistics[i]`` holds (min, avg, max) of series ``i`` (already rounded), or the whole
    array is ``None`` before statistics are computed.  ``has_statistics[i]`` is False for legacy
    series that were stored without a statistics object.
    """

    unit: Unit
    timestep: int
    hostnames: list[str]
    ids: list[str | None]
    data: FloatArray
    lengths: IntArray
    statistics: FloatArray | None = None
    has_statistics: npt.NDArray[np.bool_] | None = None
    statistics_series: StatsSeries | None = None

    def __post_init__(self) -> None:
        n = len(self.hostnames)
        if self.data.ndim != 2 or self.data.shape[0] != n or len(self.ids) != n or len(self.lengths) != n:
            raise ValueError(
                f"inconsistent JobMetric: data {self.data.shape}, {n} hostnames, "
                f"{len(self.ids)} ids, {len(self.lengths)} lengths"
            )

    @property
    def num_series(self) -> int:
        return len(self.hostnames)

    def series(self, i: int) -> FloatArray:
        """The samples of series ``i`` (a view, without padding)."""
        return self.data[i, : int(self.lengths[i])]

    def without_samples(self) -> JobMetric:
        """This block's series names and statistics with the sample arrays dropped: what the job's
        statistics need after the samples have been streamed into the archive."""
        return JobMetric(self.unit, self.timestep, self.hostnames, self.ids,
                         np.empty((self.num_series, 0)), np.zeros(self.num_series, dtype=np.int64),
                         self.statistics, self.has_statistics, None)

    def times(self, start_time: int) -> npt.NDArray[np.datetime64]:
        """The time of each sample column, ``datetime64[s]`` (UTC): sample ``k`` of every series
        was taken at ``start_time + k * timestep`` (``start_time``: the job's, ``job.start_time``)."""
        steps = np.arange(self.data.shape[1], dtype=np.int64) * self.timestep
        return (int(start_time) + steps).astype("datetime64[s]")

    def to_long(self, start_time: int) -> Any:
        """The samples as a long ("tidy") Arrow table, one row per sample: ``time``
        (timestamp[s, UTC]), ``hostname``, ``id`` (null at node scope), ``value`` (null where a
        sample is missing): what seaborn's ``hue="hostname"`` or plotly express expect, after
        ``.to_pandas()``.  Padding beyond a series' length is not a sample and is left out."""
        import pyarrow as pa

        lengths = np.asarray(self.lengths, dtype=np.int64)
        rows = np.repeat(np.arange(self.num_series), lengths)
        cols = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        values = self.data[rows, cols] if len(rows) else np.empty(0)
        secs = int(start_time) + cols * self.timestep
        return pa.table({
            "time": pa.array(secs, type=pa.timestamp("s", tz="UTC")),
            "hostname": pa.array(self.hostnames, pa.string()).take(rows),
            "id": pa.array(self.ids, pa.string()).take(rows),
            "value": pa.array(values, type=pa.float64(), mask=np.isnan(values)),
        })

    def to_arrow(self, metric: str = "", scope: str = "") -> Any:
        """This block as an Arrow table (one row per series, samples as list<float32>)."""
        import pyarrow as pa

        return pa.table(_arrow_rows(metric, scope, self))

    def to_pandas(self, metric: str = "", scope: str = "") -> Any:
        """This block as a pandas DataFrame (needs pandas)."""
        return self.to_arrow(metric, scope).to_pandas()

    @classmethod
    def from_rows(
        cls,
        unit: Unit,
        timestep: int,
        hostnames: list[str],
        ids: list[str | None],
        rows: list[Any],
    ) -> JobMetric:
        """Build from per-series sequences of possibly different lengths (NaN-padded)."""
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        width = int(lengths.max()) if len(rows) else 0
        data = np.full((len(rows), width), np.nan, dtype=np.float64)
        for i, r in enumerate(rows):
            data[i, : len(r)] = np.asarray(r, dtype=np.float64)
        return cls(unit, timestep, list(hostnames), list(ids), data, lengths)


#: data.json content: metric name -> scope name -> series block.
JobData = dict[str, dict[str, JobMetric]]


def iter_metrics(data: JobData) -> Iterator[tuple[str, str, JobMetric]]:
    """(metric, scope, block) in the archive's sorted order."""
    for metric in sorted(data):
        for scope in sorted(data[metric]):
            yield metric, scope, data[metric][scope]


def _arrow_rows(metric: str, scope: str, block: JobMetric) -> dict[str, Any]:
    import pyarrow as pa

    n = block.num_series
    flat = np.concatenate([block.series(i) for i in range(n)]).astype(np.float32) if n else np.empty(0, np.float32)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(block.lengths, out=offsets[1:])
    values = pa.array(flat, type=pa.float32(), from_pandas=True)  # NaN -> null
    stats = block.statistics if block.statistics is not None else np.full((n, 3), np.nan)
    return {
        "metric": [metric] * n,
        "scope": [scope] * n,
        "hostname": block.hostnames,
        "id": block.ids,
        "timestep": [block.timestep] * n,
        "unit": [block.unit.prefix + block.unit.base] * n,
        "min": stats[:, 0],
        "avg": stats[:, 1],
        "max": stats[:, 2],
        "data": pa.ListArray.from_arrays(pa.array(offsets), values),
    }


def data_to_arrow(data: JobData) -> Any:
    """All series of a job as one Arrow table: metric, scope, hostname, id, timestep, unit,
    min/avg/max and the samples as ``list<float32>`` (missing samples are null)."""
    import pyarrow as pa

    tables = [pa.table(_arrow_rows(m, s, b)) for m, s, b in iter_metrics(data)]
    if not tables:
        return pa.table({k: [] for k in ("metric", "scope", "hostname", "id", "timestep", "unit",
                                         "min", "avg", "max", "data")})
    return pa.concat_tables(tables)


def data_to_pandas(data: JobData) -> Any:
    """:func:`data_to_arrow` as a pandas DataFrame (needs pandas)."""
    return data_to_arrow(data).to_pandas()
