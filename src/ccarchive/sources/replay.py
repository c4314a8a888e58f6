"""Archive replay: an existing v3 job archive as a metric source.

Why: re-archiving is how users recompute statistics after a fix, migrate between backends (a
directory to S3, file to Parquet) and convert legacy entries; the archived series are the only
copy of the data once the metric store has rotated it out.  The stored series are already at the
effective scopes, so the source hands back the whole stored ``JobData`` through ``load_job``
(used by ``ccarchive.loading`` when a source has it) instead of native series to aggregate again:
aggregating stored node series once more would be wrong, and the stored finer series may be all
that is left.  Statistics, statisticsSeries, footprint and energy are recomputed downstream.

``fetch`` also works (stored series of the metric at the native scope), so the source can be used
where only the :class:`~ccarchive.sources.base.MetricSource` protocol is known.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import CcArchiveError, InputError, NoDataError, TransientError
from ..model import JobData, JobMetric
from .base import FetchResult, SeriesRequest

if TYPE_CHECKING:
    from ..backends import Archive
    from ..cluster import Cluster, MetricConfig
    from ..model import Job


class ReplaySource:
    """Reads jobs from the v3 archive at ``archive`` (any URL ``open_archive`` accepts)."""

    def __init__(self, archive: str, storage_options: dict[str, Any] | None = None) -> None:
        if not isinstance(archive, str) or not archive:
            raise InputError("replay source needs \"archive\": the URL of a v3 job archive")
        self.url = archive
        self.storage_options = dict(storage_options or {})
        self._archive: Archive | None = None
        self._lock = threading.Lock()
        self._cached: tuple[tuple[str, int, int], JobData] | None = None

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> ReplaySource:
        """``{"kind": "replay", "archive": URL, "storage-options": {...}}``."""
        unknown = sorted(set(spec) - {"kind", "archive", "storage-options"})
        if unknown:
            raise InputError(f"replay source: unknown option(s) {', '.join(unknown)}")
        return cls(spec.get("archive", ""), spec.get("storage-options"))

    @property
    def archive(self) -> Archive:
        """The source archive, opened on first use (the spec stays picklable)."""
        if self._archive is None:
            from ..archive import open_archive

            self._archive = open_archive(self.url, storage_options=self.storage_options)
        return self._archive

    def _data(self, job: Job) -> JobData:
        with self._lock:
            if self._cached is not None and self._cached[0] == job.key:
                return self._cached[1]
            try:
                if not self.archive.exists(job):
                    raise NoDataError(f"{job.label}: not in the replay archive {self.url}")
                data = self.archive.load_data(job)
            except (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError):
                raise
            except OSError as e:  # network file systems: the archive may come back
                raise TransientError(f"{job.label}: replay archive {self.url} unreachable: {e}",
                                     reason="source-unreachable") from e
            self._cached = (job.key, data)
            return data

    def load_job(self, job: Job, cluster: Cluster, *, core_scope_max_nodes: int = 8) -> tuple[JobData, list[str]]:
        """All stored series of the job at their stored scopes (statistics are recomputed later).

        Reported, not fatal: configured metrics and job hosts without any stored series, and
        stored series of hosts the job does not have (dropped)."""
        stored = self._data(job)
        with self._lock:
            self._cached = None  # handed over whole: the caller owns (and mutates) these blocks
        hosts = set(job.hostnames)
        missing = self._absent(job, cluster, stored)
        out: JobData = {}
        for metric, scopes in stored.items():
            for scope, block in scopes.items():
                keep = [n for n, h in enumerate(block.hostnames) if h in hosts]
                if len(keep) < block.num_series:
                    dropped = sorted({h for h in block.hostnames if h not in hosts})
                    missing.append(f"{metric} ({scope}): stored series of hosts {', '.join(dropped)} "
                                   f"that the job does not have were dropped")
                if keep:
                    out.setdefault(metric, {})[scope] = _subset(block, keep)
        return out, missing

    @staticmethod
    def _absent(job: Job, cluster: Cluster, stored: JobData) -> list[str]:
        """Lines for configured metrics and job hosts that have no stored series at all."""
        lines = []
        try:
            from ..scopes import job_sub_cluster

            configured = cluster.metrics_for(job_sub_cluster(job, cluster).name)
        except CcArchiveError:
            configured = []
        for m in configured:
            if m.name not in stored and not (m.scope == "accelerator" and job.num_acc <= 0):
                lines.append(f"{m.name}: no data: not in the archived data")
        seen = {h for scopes in stored.values() for b in scopes.values() for h in b.hostnames}
        lines += [f"no data for host {h}: no archived series" for h in job.hostnames if h not in seen]
        return lines

    def fetch(self, job: Job, cluster: Cluster, metric: MetricConfig, scope: str,
              requests: list[SeriesRequest]) -> FetchResult:
        """Stored series of ``metric`` at ``scope`` (the native scope) for ``requests``."""
        block = self._data(job).get(metric.name, {}).get(scope)
        row_of = {} if block is None else {(h, i): n for n, (h, i) in
                                           enumerate(zip(block.hostnames, block.ids, strict=True))}
        keep: list[int] = []
        missing: list[tuple[str, str | None, str]] = []
        for r in requests:
            for i in r.ids if r.ids is not None else (None,):
                n = row_of.get((r.hostname, i))
                if n is None:
                    missing.append((r.hostname, i, f"not stored at scope {scope} in {self.url}"))
                else:
                    keep.append(n)
        if block is None or not keep:
            return FetchResult(None, missing)
        return FetchResult(_subset(block, keep), missing)


def _subset(block: JobMetric, rows: list[int]) -> JobMetric:
    """The given rows of a block, without the stored statistics (they are recomputed)."""
    if rows == list(range(block.num_series)):
        data, lengths = block.data, block.lengths
    else:
        idx = np.asarray(rows, dtype=np.int64)
        data, lengths = np.ascontiguousarray(block.data[idx]), np.ascontiguousarray(block.lengths[idx])
    return JobMetric(block.unit, block.timestep, [block.hostnames[n] for n in rows], [block.ids[n] for n in rows],
                     data, lengths)
