"""Archive one job, top to bottom, without any queue: load -> statistics -> encode -> write.

This is the logic the archiving worker runs for every job, and what library users and
``ccarchive import`` call directly.  Each phase is timed so the pipeline, the CLI and ``bench/``
report the same figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import CancelledError, InputError
from .formats.data import encode_job_data, iter_job_data
from .formats.meta import encode_job_meta
from .loading import load_job_data
from .model import Job, JobData
from .statistics import StatisticsReport, compute_data_statistics, finalize_job

if TYPE_CHECKING:
    from .backends import Archive
    from .backends.parquet import ParquetSink
    from .cluster import Cluster
    from .sources.base import MetricSource


@dataclass
class ArchiveResult:
    """The archived job (as written to meta.json) plus what happened on the way."""

    job: Job
    data: JobData
    path: str = ""
    bytes_written: int = 0
    raw_data_bytes: int = 0
    phases: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


class _Timer:
    def __init__(self, phases: dict[str, float]) -> None:
        self.phases = phases

    def __call__(self, name: str) -> _Phase:
        return _Phase(self.phases, name)


class _Phase:
    def __init__(self, phases: dict[str, float], name: str) -> None:
        self.phases, self.name = phases, name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.phases[self.name] = self.phases.get(self.name, 0.0) + time.perf_counter() - self.t0


def check_job(job: Job, cluster: Cluster) -> None:
    """Reject job descriptions the archive cannot represent, with one line naming the job."""
    if job.cluster != cluster.name:
        raise InputError(f"{job.label}: cluster config is for {cluster.name!r}, not {job.cluster!r}")
    cluster.sub_cluster(job.sub_cluster)  # raises ClusterConfigError naming the subcluster
    if job.duration < 0:
        raise InputError(f"{job.label}: negative duration {job.duration}")
    if job.start_time <= 0:
        raise InputError(f"{job.label}: startTime must be positive, got {job.start_time}")
    if not job.resources:
        raise InputError(f"{job.label}: no resources (hosts)")
    if job.num_nodes != len(job.resources):
        raise InputError(f"{job.label}: numNodes is {job.num_nodes} but {len(job.resources)} resources are listed")


def check_data_hosts(job: Job, data: JobData) -> None:
    """Every series must belong to one of the job's hosts."""
    hosts = set(job.hostnames)
    for metric, scopes in data.items():
        for scope, block in scopes.items():
            for h in block.hostnames:
                if h not in hosts:
                    raise InputError(f"{job.label}: {metric} ({scope}) has a series of host {h!r}, "
                                     f"which the job does not have")


def _timed(pieces: Iterable[bytes], seconds: list[float]) -> Iterator[bytes]:
    """Yield ``pieces``, adding the time spent producing them to ``seconds[0]``."""
    it = iter(pieces)
    while True:
        t0 = time.perf_counter()
        try:
            piece = next(it)
        except StopIteration:
            seconds[0] += time.perf_counter() - t0
            return
        seconds[0] += time.perf_counter() - t0
        yield piece


def archive_loaded(
    job: Job,
    data: JobData,
    *,
    archive: Archive | None,
    cluster: Cluster,
    phases: dict[str, float] | None = None,
    warnings: list[str] | None = None,
    sink: ParquetSink | None = None,
) -> ArchiveResult:
    """Statistics, encoding and the write for data that is already in memory (import, replay).

    With a Parquet ``sink`` the job is also added to the dataset (written at the sink's next flush).
    """
    phases = phases if phases is not None else {}
    timer = _Timer(phases)
    report = StatisticsReport(warnings=list(warnings or []))
    with timer("statistics"):
        compute_data_statistics(data, report)
        final = finalize_job(job, data, cluster, report)
    with timer("encode"):
        meta = encode_job_meta(final)
    result = ArchiveResult(final, data, phases=phases, warnings=report.warnings)
    if archive is None:
        with timer("encode"):
            result.raw_data_bytes = sum(len(piece) for piece in iter_job_data(data))
        _add_to_sink(sink, result, timer)
        return result
    with timer("write"):
        if not archive.has_cluster(cluster.name):
            archive.store_cluster(cluster)
    write_stream = getattr(archive, "write_stream", None)
    if write_stream is None:  # backends that store whole payloads (SQLite, Parquet)
        with timer("encode"):
            encoded = encode_job_data(data)
        with timer("write"):
            written = archive.write_encoded(final, encoded, meta)
    else:
        # data.json goes metric by metric into the compressor and the file: the job's whole text
        # is never in memory.  Encoding, compression and I/O interleave, so they are told apart
        # by timing the encoder's pieces and the writer's I/O; compression is the rest.
        encode_s = [0.0]
        t0 = time.perf_counter()
        written = write_stream(final, _timed(iter_job_data(data), encode_s), meta)
        total = time.perf_counter() - t0
        io_s = written.phases.get("write", 0.0)
        phases["encode"] = phases.get("encode", 0.0) + encode_s[0]
        phases["compress"] = phases.get("compress", 0.0) + max(0.0, total - encode_s[0] - io_s)
        phases["write"] = phases.get("write", 0.0) + io_s
    result.path, result.bytes_written = written.path, written.bytes_written
    result.raw_data_bytes = written.raw_data_bytes
    _add_to_sink(sink, result, timer)
    return result


def _add_to_sink(sink: ParquetSink | None, result: ArchiveResult, timer: _Timer) -> None:
    if sink is not None:
        with timer("parquet"):
            sink.add(result.job, result.data)


def archive_job(
    job: Job,
    *,
    source: MetricSource,
    archive: Archive | None,
    cluster: Cluster,
    core_scope_max_nodes: int = 8,
    cancelled: Callable[[], bool] | None = None,
    sink: ParquetSink | None = None,
) -> ArchiveResult:
    """Load a finished job's metrics from ``source``, compute statistics, write it to ``archive``.

    Returns the job as archived (statistics, footprint, energy, ``monitoringStatus`` 3) with its
    data.  With ``archive=None`` nothing is written (dry run / analysis).
    """
    check_job(job, cluster)
    phases: dict[str, float] = {}
    with _Timer(phases)("load"):
        data, load_report = load_job_data(
            job, cluster, source, core_scope_max_nodes=core_scope_max_nodes, cancelled=cancelled
        )
    if cancelled is not None and cancelled():
        raise CancelledError(f"{job.label}: cancelled before writing")
    return archive_loaded(job, data, archive=archive, cluster=cluster, phases=phases,
                          warnings=load_report.missing, sink=sink)
