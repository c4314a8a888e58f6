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

from .errors import InputError
from .formats.data import iter_data_entries
from .formats.meta import encode_job_meta
from .loading import JobLoader
from .model import Job, JobData, JobMetric
from .statistics import StatisticsReport, compute_block_statistics, finalize_job

if TYPE_CHECKING:
    from .archive import WriteResult
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


Entries = Iterator[tuple[str, dict[str, JobMetric]]]


def _with_statistics(entries: Iterable[tuple[str, dict[str, JobMetric]]], timer: _Timer,
                     report: StatisticsReport, summary: JobData, keep_data: bool) -> Entries:
    """Compute each metric's statistics as it arrives and pass it on to the encoder; afterwards keep
    only what the job statistics need (``summary``) unless ``keep_data``, so one metric's arrays are
    alive at a time."""
    for name, scopes in entries:
        with timer("statistics"):
            for scope in sorted(scopes):
                masked = compute_block_statistics(scopes[scope])
                if masked:
                    report.masked_samples[f"{name}/{scope}"] = masked
                    report.warnings.append(
                        f"{name} ({scope}): {masked} samples outside the float32 range treated as missing")
        yield name, scopes
        summary[name] = scopes if keep_data else {s: b.without_samples() for s, b in scopes.items()}
        del scopes


def _archive_entries(
    job: Job,
    entries: Iterable[tuple[str, dict[str, JobMetric]]],
    *,
    archive: Archive | None,
    cluster: Cluster,
    phases: dict[str, float],
    warnings: list[str],
    keep_data: bool = True,
    sink: ParquetSink | None = None,
) -> ArchiveResult:
    """Statistics -> encode -> write for metrics arriving one by one in sorted order.

    data.json goes metric by metric into the compressor and the file, so neither the job's whole
    JSON text nor (without ``keep_data``) all its arrays are ever in memory; meta.json follows with
    the job statistics gathered on the way.  ``warnings`` is read at the end: a loader appends
    missing series to it while it is iterated."""
    timer = _Timer(phases)
    report = StatisticsReport()
    summary: JobData = {}
    finished: list[Job] = []
    meta_s = [0.0]

    def meta() -> bytes:
        t0 = time.perf_counter()
        finished.append(finalize_job(job, summary, cluster, report))
        encoded = encode_job_meta(finished[-1])
        meta_s[0] += time.perf_counter() - t0
        return encoded

    # Loading, statistics, encoding, compression and I/O interleave in one stream: the encoder's
    # share is the time spent producing pieces minus the loading and statistics done inside it.
    before = phases.get("load", 0.0) + phases.get("statistics", 0.0)
    produced = [0.0]
    pieces = _timed(iter_data_entries(_with_statistics(entries, timer, report, summary, keep_data)), produced)
    written: WriteResult | None = None
    if archive is None:
        raw = sum(len(piece) for piece in pieces)
        meta()
    else:
        with timer("write"):
            if not archive.has_cluster(cluster.name):
                archive.store_cluster(cluster)
        write_stream = getattr(archive, "write_stream", None)
        if write_stream is None:  # backends that store whole payloads (SQLite, Parquet)
            encoded = b"".join(pieces)
            meta_bytes = meta()
            with timer("write"):
                written = archive.write_encoded(finished[-1], encoded, meta_bytes)
            raw = len(encoded)
            del encoded
        else:
            t0 = time.perf_counter()
            written = write_stream(job, pieces, meta)
            total = time.perf_counter() - t0
            io_s = written.phases.get("write", 0.0)
            phases["compress"] = phases.get("compress", 0.0) + max(0.0, total - produced[0] - meta_s[0] - io_s)
            phases["write"] = phases.get("write", 0.0) + io_s
            raw = written.raw_data_bytes
    inside = phases.get("load", 0.0) + phases.get("statistics", 0.0) - before
    phases["encode"] = phases.get("encode", 0.0) + max(0.0, produced[0] - inside) + meta_s[0]
    result = ArchiveResult(finished[-1], summary, phases=phases, warnings=list(warnings) + report.warnings,
                           raw_data_bytes=raw)
    if written is not None:
        result.path, result.bytes_written = written.path, written.bytes_written
    if sink is not None:
        with timer("parquet"):
            sink.add(result.job, result.data)
    return result


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
    return _archive_entries(job, ((m, data[m]) for m in sorted(data)), archive=archive, cluster=cluster,
                            phases=phases if phases is not None else {}, warnings=list(warnings or []),
                            sink=sink)


def archive_job(
    job: Job,
    *,
    source: MetricSource,
    archive: Archive | None,
    cluster: Cluster,
    core_scope_max_nodes: int = 8,
    cancelled: Callable[[], bool] | None = None,
    sink: ParquetSink | None = None,
    keep_data: bool = True,
) -> ArchiveResult:
    """Load a finished job's metrics from ``source``, compute statistics, write it to ``archive``.

    Returns the job as archived (statistics, footprint, energy, ``monitoringStatus`` 3) with its
    data.  With ``archive=None`` nothing is written (dry run / analysis).  The job is streamed:
    each metric is loaded, summarised, encoded and written before the next one is fetched; with
    ``keep_data=False`` (the archiving worker) its sample arrays are dropped afterwards, so memory
    stays at about one metric's arrays however large the job (``result.data`` then holds the
    series and their statistics without samples).
    """
    check_job(job, cluster)
    phases: dict[str, float] = {}
    loader = JobLoader(job, cluster, source, core_scope_max_nodes=core_scope_max_nodes, cancelled=cancelled)
    timer = _Timer(phases)

    def loaded() -> Entries:
        it = iter(loader)
        while True:
            with timer("load"):
                entry = next(it, None)
            if entry is None:
                return
            yield entry
            del entry

    return _archive_entries(job, loaded(), archive=archive, cluster=cluster, phases=phases,
                            warnings=loader.report.missing, keep_data=keep_data or sink is not None, sink=sink)
