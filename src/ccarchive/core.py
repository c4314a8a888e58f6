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
from .formats.compress import BLOCK_BYTES, gzip_later, should_gzip
from .formats.data import iter_data_entries
from .formats.meta import encode_job_meta
from .loading import JobLoader
from .model import Job, JobData, JobMetric
from .names import check_job_key
from .statistics import StatisticsReport, compute_block_statistics, finalize_job

if TYPE_CHECKING:
    from concurrent.futures import Future

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


class _StreamedJob:
    """One job on its way into the archive, metric by metric in sorted order: statistics as each
    metric arrives, its data.json pieces into the compressor and the file, its rows into the
    Parquet sink; then meta.json with the job statistics gathered on the way.

    Without ``keep_data`` only series names and statistics stay after a metric went by, so one
    metric's arrays are alive at a time.  Loading, statistics, encoding, compression and I/O
    interleave in one stream: the encoder's share is the time spent producing pieces minus the
    loading, statistics and Parquet rows done inside that production."""

    _INNER = ("load", "statistics", "parquet")

    def __init__(self, job: Job, cluster: Cluster, phases: dict[str, float], *, keep_data: bool,
                 sink: ParquetSink | None) -> None:
        self.job, self.cluster, self.phases = job, cluster, phases
        self.keep_data, self.sink = keep_data, sink
        self.timer = _Timer(phases)
        self.report = StatisticsReport()
        self.summary: JobData = {}
        self.final: Job | None = None
        self._meta: bytes | None = None
        self.meta_s = 0.0
        self.produced = [0.0]

    def _entries(self, entries: Iterable[tuple[str, dict[str, JobMetric]]]) -> Entries:
        for name, scopes in entries:
            with self.timer("statistics"):
                for scope in sorted(scopes):
                    masked = compute_block_statistics(scopes[scope])
                    if masked:
                        self.report.masked_samples[f"{name}/{scope}"] = masked
                        self.report.warnings.append(
                            f"{name} ({scope}): {masked} samples outside the float32 range treated as missing")
            yield name, scopes  # encoded into data.json before the generator resumes
            if self.sink is not None:
                with self.timer("parquet"):
                    self.sink.add_metric(self.job, name, scopes)
            self.summary[name] = scopes if self.keep_data else {s: b.without_samples() for s, b in scopes.items()}
            del scopes

    def meta(self) -> bytes:
        """meta.json, once every metric went by (computed once)."""
        if self._meta is None:
            t0 = time.perf_counter()
            self.final = finalize_job(self.job, self.summary, self.cluster, self.report)
            self._meta = encode_job_meta(self.final)
            self.meta_s += time.perf_counter() - t0
        return self._meta

    def run(self, entries: Iterable[tuple[str, dict[str, JobMetric]]], archive: Archive | None,
            warnings: list[str]) -> ArchiveResult:
        """Write the job; ``warnings`` is read at the end (a loader appends to it as it goes)."""
        inner_before = sum(self.phases.get(k, 0.0) for k in self._INNER)
        pieces = _timed(iter_data_entries(self._entries(entries)), self.produced)
        try:
            written, raw = self._write(pieces, archive)
        except BaseException:
            if self.sink is not None:
                self.sink.abandon()
            raise
        self._count_encoding(inner_before)
        return self._result(written, raw, warnings)

    def prepare(self, entries: Iterable[tuple[str, dict[str, JobMetric]]], warnings: list[str],
                gzip_ahead: bool = False) -> PreparedJob:
        """Load, summarise and encode the whole job into memory, writing nothing (no sink);
        ``gzip_ahead``: start compressing data.json in the background right away."""
        assert self.sink is None, "a prepared job cannot feed a Parquet sink"
        inner_before = sum(self.phases.get(k, 0.0) for k in self._INNER)
        encoded = b"".join(_timed(iter_data_entries(self._entries(entries)), self.produced))
        self.meta()
        self._count_encoding(inner_before)
        gzipped = gzip_later(encoded) if gzip_ahead and should_gzip(len(encoded)) else None
        return PreparedJob(self, encoded, warnings, gzipped)

    def _count_encoding(self, inner_before: float) -> None:
        """The encoder's share: producing the pieces minus the loading and statistics inside, plus meta.json."""
        inner = sum(self.phases.get(k, 0.0) for k in self._INNER) - inner_before
        self.phases["encode"] = self.phases.get("encode", 0.0) + max(0.0, self.produced[0] - inner) + self.meta_s

    def _result(self, written: WriteResult | None, raw: int, warnings: list[str]) -> ArchiveResult:
        assert self.final is not None
        result = ArchiveResult(self.final, self.summary, phases=self.phases, raw_data_bytes=raw,
                               warnings=list(warnings) + self.report.warnings)
        if written is not None:
            result.path, result.bytes_written = written.path, written.bytes_written
        if self.sink is not None:
            with self.timer("parquet"):
                self.sink.add(self.final)  # its metrics went in one by one: this adds the job row
        return result

    def _store_cluster(self, archive: Archive) -> None:
        """cluster.json, the first time the archive sees the cluster."""
        check_job_key(self.job.key)  # a key the archive refuses must fail before cluster.json is stored
        with self.timer("write"):
            if not archive.has_cluster(self.cluster.name):
                archive.store_cluster(self.cluster)

    def _write_gzipped(self, encoded: bytes, gzipped: Future[bytes], archive: Archive) -> WriteResult:
        """Write data.json.gz compressed in the background: the archive awaits it once the entry's
        files exist, so their creation overlaps the compression (the wait counts as ``compress``)."""
        self._store_cluster(archive)
        meta = self.meta()
        assert self.final is not None
        waited = [0.0]

        def payload() -> bytes:
            t0 = time.perf_counter()
            try:
                return gzipped.result()
            finally:
                waited[0] += time.perf_counter() - t0

        t0 = time.perf_counter()
        try:
            return archive.write_encoded(self.final, encoded, meta, gzipped=payload)
        finally:
            self.phases["compress"] = self.phases.get("compress", 0.0) + waited[0]
            self.phases["write"] = self.phases.get("write", 0.0) + time.perf_counter() - t0 - waited[0]

    def _write(self, pieces: Iterator[bytes], archive: Archive | None,
               threads: int | None = None) -> tuple[WriteResult | None, int]:
        if archive is None:
            raw = sum(len(piece) for piece in pieces)
            self.meta()
            return None, raw
        self._store_cluster(archive)
        write_stream = getattr(archive, "write_stream", None)
        if write_stream is None:  # backends that store whole payloads (SQLite, Parquet)
            encoded = b"".join(pieces)
            meta = self.meta()
            assert self.final is not None
            with self.timer("write"):
                return archive.write_encoded(self.final, encoded, meta), len(encoded)
        produced, meta_s = self.produced[0], self.meta_s
        t0 = time.perf_counter()
        written: WriteResult = write_stream(self.job, pieces, self.meta, threads=threads)
        total = time.perf_counter() - t0
        io_s = written.phases.get("write", 0.0)
        self.phases["compress"] = self.phases.get("compress", 0.0) + max(
            0.0, total - (self.produced[0] - produced) - (self.meta_s - meta_s) - io_s)
        self.phases["write"] = self.phases.get("write", 0.0) + io_s
        return written, written.raw_data_bytes


@dataclass
class PreparedJob:
    """A job loaded, summarised and encoded in memory with nothing written yet (:func:`prepare_job`).

    Why: the archiving worker prepares job N+1 while job N is written and recorded on another
    thread, so the two halves of consecutive small jobs overlap on two cores; with ``gzipped``
    the compression runs on a third thread meanwhile, so the writer mostly waits for the disk."""

    _streamed: _StreamedJob
    encoded: bytes
    _warnings: list[str]
    #: data.json.gz being compressed in the background (None: compressed by :meth:`write`, if at all)
    gzipped: Future[bytes] | None = None

    @property
    def job(self) -> Job:
        """The job as meta.json will hold it (statistics, footprint, energy)."""
        assert self._streamed.final is not None
        return self._streamed.final

    def write(self, archive: Archive) -> ArchiveResult:
        """Write data.json(.gz) then meta.json, exactly as :func:`archive_job` would have."""
        if self.gzipped is not None:
            gz_written = self._streamed._write_gzipped(self.encoded, self.gzipped, archive)
            return self._streamed._result(gz_written, len(self.encoded), self._warnings)
        one_block = len(self.encoded) <= BLOCK_BYTES  # compressed on this thread: same bytes, no hand-off
        written, raw = self._streamed._write(iter([self.encoded]), archive, threads=1 if one_block else None)
        return self._streamed._result(written, raw, self._warnings)


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

    With a Parquet ``sink`` the job is also added to the dataset (metric by metric; its job row is
    written at the sink's next flush).
    """
    streamed = _StreamedJob(job, cluster, phases if phases is not None else {}, keep_data=True, sink=sink)
    return streamed.run(((m, data[m]) for m in sorted(data)), archive, list(warnings or []))


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
    loader: JobLoader | None = None,
) -> ArchiveResult:
    """Load a finished job's metrics from ``source``, compute statistics, write it to ``archive``.

    Returns the job as archived (statistics, footprint, energy, ``monitoringStatus`` 3) with its
    data.  With ``archive=None`` nothing is written (dry run / analysis).  The job is streamed:
    each metric is loaded, summarised, encoded and written before the next one is fetched; with
    ``keep_data=False`` (the archiving worker) its sample arrays are dropped afterwards, so memory
    stays at about one metric's arrays however large the job (``result.data`` then holds the
    series and their statistics without samples).  ``loader``: this job's loader, made (and
    perhaps started) by the caller, who closes it.
    """
    check_job(job, cluster)
    if loader is None:
        loader = JobLoader(job, cluster, source, core_scope_max_nodes=core_scope_max_nodes, cancelled=cancelled)
    phases: dict[str, float] = {}
    return _StreamedJob(job, cluster, phases, keep_data=keep_data, sink=sink).run(
        _timed_load(loader, phases), archive, loader.report.missing)


def _timed_load(loader: JobLoader, phases: dict[str, float]) -> Entries:
    """The loader's metrics, the time spent fetching each counted as ``load``."""
    timer = _Timer(phases)
    it = iter(loader)
    while True:
        with timer("load"):
            entry = next(it, None)
        if entry is None:
            return
        yield entry
        del entry


#: Jobs planning at most this many samples (about 8 MB of data.json) can be prepared in memory;
#: larger ones are streamed metric by metric so the worker's memory stays bounded.
PREPARE_MAX_SAMPLES = 1 << 20


def planned_samples(loader: JobLoader) -> int:
    """Samples the job's archive will hold: planned series x samples per series, every metric."""
    duration = loader.job.duration
    return sum(len(p.series) * (duration // max(1, p.metric.timestep) + 1)
               for plans in loader.plans.values() for p in plans)


def prepare_job(job: Job, *, cluster: Cluster, loader: JobLoader, max_samples: int = PREPARE_MAX_SAMPLES,
                gzip_ahead: bool = False) -> PreparedJob | None:
    """What :func:`archive_job` does before writing: load, statistics and the encoded data.json and
    meta.json, all in memory; :meth:`PreparedJob.write` then stores it.  None (nothing loaded)
    when the job plans more than ``max_samples`` samples: archive those with ``archive_job``
    (give it the same ``loader``).  Sample arrays are not kept, as with ``keep_data=False``.
    ``gzip_ahead``: compress data.json in the background from now on (for an archive whose
    ``stores_gzip`` is true; :meth:`PreparedJob.write` hands it over)."""
    check_job(job, cluster)
    if planned_samples(loader) > max_samples:
        return None
    phases: dict[str, float] = {}
    return _StreamedJob(job, cluster, phases, keep_data=False, sink=None).prepare(
        _timed_load(loader, phases), loader.report.missing, gzip_ahead)
