"""Prometheus metrics of the sidecar (``GET /metrics``), on a registry of its own.

Two kinds of sources, chosen so that no number is counted twice in two places:

* **read at scrape time** from the Archiver (its ``stats`` and ``status()``), the hook runner, the
  NATS subscriber and, through psutil, the worker process: queue depth, in-flight, pending,
  archived / failed (by reason) / retries / worker restarts / shutdown timeouts, bytes written,
  hook failures, worker RSS and CPU time;
* **observed** in the Archiver's ``on_result`` callback (its result thread): per-phase and
  per-job duration histograms, the lag from job stop to archive, skipped jobs by reason; and by the
  HTTP/NATS layer: stop events and triggers by outcome.

Metric names start with ``ccarchive_``; counters end in ``_total`` in the exposition.  Beside them,
``ccarchive_build_info`` (version, git commit, Python, numba as labels, value 1) and the standard
``process_*`` metrics of the sidecar process (CPU seconds, resident memory, open file descriptors,
start time).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

CONTENT_TYPE = CONTENT_TYPE_LATEST
_PHASE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_LAG_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)


class _LiveCollector:
    """Exports the pipeline's own counters and gauges when scraped."""

    def __init__(self, owner: ServiceMetrics) -> None:
        self.owner = owner

    def describe(self) -> Iterator[Metric]:
        return iter(self._families(None))

    def collect(self) -> Iterator[Metric]:
        return iter(self._families(self.owner.archiver))

    def _families(self, archiver: Any) -> list[Metric]:
        def gauge(name: str, doc: str, value: float | None, labels: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, doc, value=None if labels else value or 0.0, labels=labels)

        def counter(name: str, doc: str, value: float | None, labels: list[str] | None = None) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, value=None if labels else value or 0.0, labels=labels)

        status = archiver.status() if archiver is not None else {}
        stats = archiver.stats if archiver is not None else None
        out: list[Metric] = [
            gauge("ccarchive_worker_up", "1 while the archiving worker is running and accepting jobs",
                  1.0 if status.get("state") == "running" else 0.0),
            gauge("ccarchive_queue_depth", "jobs waiting in the archive queue (max 128)", status.get("queued", 0)),
            gauge("ccarchive_in_flight", "jobs the worker is archiving now (0 or 1)",
                  0.0 if status.get("in_flight_db_id") is None else 1.0),
            gauge("ccarchive_pending_jobs", "jobs accepted and not finished: queued, in flight or waiting for a retry",
                  status.get("pending", 0)),
            gauge("ccarchive_retry_wait_jobs", "jobs waiting for a retry after a transient failure",
                  status.get("retry_wait", 0)),
            gauge("ccarchive_backlog_jobs", "accepted jobs waiting for a slot in the archive queue",
                  status.get("backlog", 0)),
            gauge("ccarchive_storage_full", "1 while archiving is paused because the archive or job DB "
                  "storage is full (ENOSPC, quota)", 0.0 if status.get("storage_full") is None else 1.0),
            counter("ccarchive_storage_full_pauses", "times archiving paused on full storage",
                    stats.storage_full_pauses if stats else 0),
            counter("ccarchive_jobs_deferred", "triggered jobs left to the reconciler because the backlog was full",
                    stats.deferred if stats else 0),
            counter("ccarchive_jobs_archived", "jobs archived successfully", stats.archived if stats else 0),
            counter("ccarchive_archive_bytes_written", "bytes written to the archive",
                    stats.bytes_written if stats else 0),
            counter("ccarchive_retries", "retries after transient failures", stats.retries if stats else 0),
            counter("ccarchive_worker_restarts", "archiving worker processes replaced after dying",
                    stats.worker_restarts if stats else 0),
            counter("ccarchive_shutdown_timeouts", "shutdowns that hit the timeout with jobs unfinished",
                    stats.shutdown_timeouts if stats else 0),
            counter("ccarchive_hook_failures", "post-archive hook calls that failed",
                    archiver.hooks.failures if archiver is not None else 0),
        ]
        failed = counter("ccarchive_jobs_failed", "jobs whose archiving failed (monitoring_status 2), by reason",
                         None, ["reason"])
        for reason, n in sorted((stats.failed if stats else {}).items()):
            failed.add_metric([reason], n)
        out.append(failed)
        rss, cpu = self.owner.worker_usage(archiver)
        out += [gauge("ccarchive_worker_resident_memory_bytes", "resident memory of the archiving worker "
                      "and its children", rss),
                counter("ccarchive_worker_cpu_seconds", "CPU time of the archiving worker (user + system)", cpu)]
        nats = self.owner.nats
        if nats is not None:
            out.append(gauge("ccarchive_nats_connected", "1 while subscribed to the NATS job-event subject",
                             1.0 if nats.connected.is_set() else 0.0))
            out.append(counter("ccarchive_nats_connection_failures", "failed NATS connects and lost connections "
                               "(the log has the first of an outage, then one line per 5 minutes)",
                               nats.outage.failures))
            msgs = counter("ccarchive_nats_lines", "NATS job-event lines by kind", None, ["kind"])
            for kind, n in sorted(dict(nats.stats).items()):
                msgs.add_metric([kind], n)
            out.append(msgs)
        return out


class ServiceMetrics:
    """The sidecar's metrics; ``attach()`` the Archiver (and NATS subscriber) once they exist."""

    def __init__(self) -> None:
        disable_created_metrics()  # no *_created series: they double the output and nobody graphs them
        self.registry = CollectorRegistry()
        self.archiver: Any = None
        self.nats: Any = None
        self._proc: Any = None
        r = self.registry
        self.phase_seconds = Histogram("ccarchive_archive_phase_seconds", "worker time per archiving phase",
                                       ["phase"], buckets=_PHASE_BUCKETS, registry=r)
        self.job_seconds = Histogram("ccarchive_archive_job_seconds", "worker time per archived job (all phases)",
                                     buckets=_PHASE_BUCKETS, registry=r)
        self.lag_seconds = Histogram("ccarchive_stop_to_archive_lag_seconds",
                                     "time from the job's stop (start + duration) until it is archived",
                                     buckets=_LAG_BUCKETS, registry=r)
        self.skipped = Counter("ccarchive_jobs_skipped", "triggered jobs the worker did not archive again, by reason",
                               ["reason"], registry=r)
        self.stop_events = Counter("ccarchive_stop_events", "stop_job requests (REST) and events (NATS) by outcome",
                                   ["via", "result"], registry=r)
        self.triggers = Counter("ccarchive_triggers", "archive triggers from stop events and the admin API",
                                ["via", "result"], registry=r)
        self.http_requests = Counter("ccarchive_http_requests", "HTTP requests by endpoint and status code",
                                     ["endpoint", "code"], registry=r)
        r.register(_LiveCollector(self))
        ProcessCollector(registry=r)  # process_* of the sidecar itself (Linux /proc), as Go services export
        from ..buildinfo import build_info

        info = build_info()
        Gauge("ccarchive_build_info", "always 1; the labels say which build runs",
              ["version", "python", "numba", "commit"], registry=r).labels(
            info["version"], info["python"], info["numba"], info.get("commit", "")).set(1)

    def attach(self, archiver: Any, nats: Any = None) -> None:
        self.archiver, self.nats = archiver, nats

    def on_result(self, msg: Any, now: Callable[[], float] = time.time) -> None:
        """The Archiver's ``on_result`` callback (runs in its result thread)."""
        if msg.kind == "done":
            for phase, seconds in msg.phases.items():
                self.phase_seconds.labels(phase).observe(seconds)
            self.job_seconds.observe(sum(msg.phases.values()))
            job = msg.job or {}
            if isinstance(job.get("startTime"), int) and isinstance(job.get("duration"), int):
                self.lag_seconds.observe(max(0.0, now() - job["startTime"] - job["duration"]))
        elif msg.kind == "skipped":
            self.skipped.labels(msg.reason or "skipped").inc()

    def worker_usage(self, archiver: Any) -> tuple[float, float]:
        """(RSS bytes, CPU seconds) of the worker process tree, 0 when there is none."""
        pid = getattr(archiver, "worker_pid", None) if archiver is not None else None
        if not pid:
            return 0.0, 0.0
        import psutil

        try:
            if self._proc is None or self._proc.pid != pid:
                self._proc = psutil.Process(pid)
            procs = [self._proc, *self._proc.children(recursive=True)]
            rss = cpu = 0.0
            for p in procs:
                with p.oneshot():
                    rss += p.memory_info().rss
                    t = p.cpu_times()
                    cpu += t.user + t.system
            return rss, cpu
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return 0.0, 0.0

    def render(self) -> bytes:
        """The text exposition of every metric."""
        return generate_latest(self.registry)
