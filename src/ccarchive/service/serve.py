"""``ccarchive serve``: the wiring of the sidecar.

::

  config.json ─► ServiceConfig ─► Archiver (worker process, hooks) ◄── reconciler thread (job DB)
                                    ▲ trigger(db id)            │ on_result
  REST stop_job ──► StopJobService ─┤ (after the 200 answer)    ▼
  NATS stop_job ──► StopJobService ─┤                         ServiceMetrics ◄── GET /metrics
  admin API POST archive/<id> ──────┘

Start: check the job DB (schema 11), the archive (version 3) and the source, start the Archiver
and wait for its worker, then open HTTP, subscribe to NATS and start the reconciler (a first pass
at once, then every ``reconcile-interval``), so ``/healthz`` answering 200 means "ready".
Stop (SIGTERM/SIGINT): unsubscribe, close HTTP, ``Archiver.shutdown(shutdown-timeout)``; exit 0
when everything queued was archived, 1 when the timeout left jobs unfinished (they stay pending
in the job DB for the next start).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from typing import Any

from ..config import ServiceConfig
from ..model import MONITORING_ARCHIVED, MONITORING_ARCHIVING_FAILED, MONITORING_DISABLED
from .http import Response, error
from .metrics import CONTENT_TYPE, ServiceMetrics
from .stopjob import StopJobError, StopJobService, job_json, parse_stop_request

log = logging.getLogger(__name__)
_LEVELS = {"warning": 0, "info": 1, "debug": 2}


class Sidecar:
    """The request logic behind the HTTP and NATS triggers (the ``http.App``)."""

    def __init__(self, config: ServiceConfig, archiver: Any, metrics: ServiceMetrics) -> None:
        from ..jobdb import JobDB
        from ..statestore import StateStore

        self.config, self.archiver, self.prom = config, archiver, metrics
        self.stops = StopJobService(config.job_db)
        self.jobdb = JobDB(config.job_db)
        self.state = StateStore(config.state_db)
        self.closing = threading.Event()

    # -- triggering ---------------------------------------------------------------------------
    def trigger(self, db_id: int, via: str, *, force: bool = False) -> str:
        """Hand a job to the pipeline without waiting for a queue slot (the job DB already holds it).

        Returns ``queued`` (taken: queued now or as soon as a slot frees), ``duplicate`` (already
        pending), ``deferred`` (the backlog is full: the reconciler queues it later) or
        ``not-accepting`` (shutting down: it stays pending in the job DB for the next start).
        """
        from ..pipeline import ArchiverStateError, QueueFullError

        if self.closing.is_set():
            result = "not-accepting"
        else:
            try:
                result = "queued" if self.archiver.trigger(db_id, force=force, block=False) else "duplicate"
            except QueueFullError:
                result = "deferred"
            except ArchiverStateError:
                result = "not-accepting"
        self.prom.triggers.labels(via, result).inc()
        if result == "not-accepting":
            log.info("job %s not queued (shutting down); it stays pending in the job DB", db_id)
        elif result == "deferred":
            log.warning("job %s not queued (backlog full); it stays pending in the job DB for the reconciler", db_id)
        return result

    def handle_stop(self, payload: bytes | str, via: str) -> tuple[Response, int | None]:
        """Stop a job as cc-backend does; returns the response and the db id to queue (or None)."""
        if self.closing.is_set():  # nothing is changed once the queue no longer accepts jobs
            self.prom.stop_events.labels(via, "503").inc()
            return error(503, "ccarchive is shutting down; retry the stop later"), None
        try:
            req = parse_stop_request(payload)
            stopped = self.stops.stop(req)
        except StopJobError as e:
            self.prom.stop_events.labels(via, str(e.status)).inc()
            return error(e.status, str(e)), None
        except Exception as e:  # noqa: BLE001 - a DB failure must answer, not kill the handler
            from ..jobdb import JobDBBusyError

            status = 503 if isinstance(e, JobDBBusyError) else 500
            log.error("%s stop_job: %s", via, e)
            self.prom.stop_events.labels(via, str(status)).inc()
            return error(status, f"marking job as stopped in DB failed: {e}"), None
        job = stopped.job
        self.prom.stop_events.labels(via, "200").inc()
        log.info("%s: stopped job (dbid %s%s): state=%s duration=%s%s", via, stopped.db_id,
                 ", moved from job_cache" if stopped.transferred_from_cache else "", job.job_state, job.duration,
                 "" if stopped.archive else " (monitoring disabled: not archived)",
                 extra={"db_id": job.id, "job_id": job.job_id, "cluster": job.cluster, "start_time": job.start_time})
        return Response(200, job_json(job)), stopped.db_id if stopped.archive else None

    def stop_job(self, body: bytes) -> Response:
        resp, db_id = self.handle_stop(body, "rest")
        if db_id is not None:
            self.trigger(db_id, "rest")  # never waits: the answer goes out at once
        return resp

    def nats_stop(self, payload: str) -> None:
        """NATS stop_job: the same stop; errors are only logged (there is nobody to answer)."""
        resp, db_id = self.handle_stop(payload, "nats")
        if resp.status != 200:
            log.warning("NATS job stop: %s", resp.body.get("error") if isinstance(resp.body, dict) else resp.status)
        elif db_id is not None:
            self.trigger(db_id, "nats")

    # -- admin API ----------------------------------------------------------------------------
    def archive(self, db_id: int, force: bool) -> Response:
        from ..jobdb import JobNotFoundError

        try:
            job = self.jobdb.get_job(db_id)
        except JobNotFoundError:
            return error(404, f"no job with id {db_id} in the job DB")
        what = f"job {db_id} ({job.cluster}/{job.job_id}/{job.start_time})"
        if job.job_state == "running":
            return error(409, f"{what} is still running; it is archived when it stops (stop_job)")
        if not force and job.monitoring_status == MONITORING_ARCHIVED:
            return error(409, f"{what} is already archived (monitoring_status 3); use ?force=true to re-archive")
        if not force and job.monitoring_status == MONITORING_DISABLED:
            return error(409, f"{what} is not monitored (monitoring_status 0); use ?force=true to archive it anyway")
        if job.monitoring_status == MONITORING_ARCHIVING_FAILED:
            self.jobdb.mark_pending(db_id)  # a manual retry, as `ccarchive retry`
            self.state.reset(db_id)
        result = self.trigger(db_id, "admin", force=force)
        body = {"id": db_id, "jobId": job.job_id, "cluster": job.cluster, "startTime": job.start_time,
                "result": result}
        if result == "deferred":
            return error(503, f"{what}: archive backlog full; it stays pending and the reconciler queues it")
        if result == "not-accepting":
            return error(503, f"{what}: ccarchive is shutting down; it stays pending for the next start")
        return Response(202, body)

    def failed(self, cluster: str | None, since: int | None, limit: int) -> Response:
        ids = self.jobdb.failed_jobs(cluster=cluster, since=since)
        jobs = []
        for db_id in ids[:limit]:
            job = self.jobdb.get_job(db_id)
            st = self.state.get(db_id)
            jobs.append({"id": db_id, "jobId": job.job_id, "cluster": job.cluster, "startTime": job.start_time,
                         "reason": st.last_error_reason if st else None,
                         "error": st.last_error_message if st else None,
                         "attempts": st.attempts if st else 0,
                         "lastAttempt": st.last_attempt if st else None})
        return Response(200, {"count": len(ids), "jobs": jobs})

    def status(self) -> Response:
        counts = self.jobdb.counts_by_status()
        return Response(200, {"archiver": self.archiver.status(),
                              "jobDB": {"path": self.config.job_db,
                                        "monitoringStatus": {str(k): v for k, v in counts.items()}},
                              "archive": self.config.archive_url,
                              "nats": None if self.config.nats is None else self.config.nats.subject})

    def health(self) -> Response:
        """200 while jobs get archived; 503 while shutting down or paused on full storage (stops are
        still taken then: they wait in the job DB)."""
        st = self.archiver.status()
        running = st["state"] == "running" and not self.closing.is_set()
        full = st["storage_full"]
        ok = running and full is None
        body: dict[str, Any] = {"status": "ok" if ok else ("storage-full" if running else "unavailable"),
                                "state": st["state"], "queued": st["queued"], "backlog": st["backlog"],
                                "pending": st["pending"]}
        if full is not None:
            body["storageFull"] = {"since": int(full["since"]), "error": full["error"]}
        if self.prom.nats is not None:
            body["nats"] = "connected" if self.prom.nats.connected.is_set() else "disconnected"
        return Response(200 if ok else 503, body)

    def metrics(self) -> Response:
        return Response(200, self.prom.render(), content_type=CONTENT_TYPE)

    def count_request(self, endpoint: str, code: int) -> None:
        self.prom.http_requests.labels(endpoint, str(code)).inc()


def _result_logger(metrics: ServiceMetrics) -> Any:
    """The Archiver's ``on_result``: metrics, plus one log line per archived job with its fields."""
    def on_result(msg: Any) -> None:
        metrics.on_result(msg)
        if msg.kind == "done" and msg.job:
            j = msg.job
            log.info("archived job (dbid %s) in %.2f s, %d bytes", msg.db_id, sum(msg.phases.values()),
                     msg.bytes_written, extra={"db_id": msg.db_id, "job_id": j.get("jobId"),
                                               "cluster": j.get("cluster"), "start_time": j.get("startTime")})

    return on_result


def load_hooks(config: ServiceConfig) -> Any:
    """The HookRunner of ``ccarchive.hooks`` (callables resolved now, so a typo fails at start)."""
    import importlib

    from ..config import ConfigError
    from ..hooks import HookRunner

    callables = []
    for name in config.hooks.callables:
        module, sep, attr = name.partition(":") if ":" in name else name.rpartition(".")
        try:
            callables.append(getattr(importlib.import_module(module), attr))
        except (ImportError, AttributeError, ValueError) as e:
            raise ConfigError(f"{config.path}: ccarchive.hooks.callables: cannot load {name!r}: {e}") from None
    return HookRunner(callables, command=config.hooks.command, command_timeout_s=config.hooks.command_timeout_s,
                      use_entry_points=config.hooks.entry_points)


def _reconcile_loop(archiver: Any, interval_s: float | None, closing: threading.Event) -> None:
    """Queue stopped, unarchived jobs now and every ``interval_s`` (once when None)."""
    while not closing.is_set():
        try:
            archiver.reconcile()
        except Exception:  # noqa: BLE001 - the DB may be busy; try again next time
            log.exception("reconciler pass failed")
        if interval_s is None or closing.wait(interval_s):
            return


def check_backends(config: ServiceConfig) -> None:
    """Fail at start, with the key, if the job DB or the archive cannot be used."""
    from ..archive import open_archive
    from ..config import ConfigError
    from ..errors import CcArchiveError
    from ..jobdb import JobDB

    try:
        JobDB(config.job_db).close()
    except CcArchiveError as e:
        raise ConfigError(f"{config.path}: main.db: {e}") from None
    try:
        open_archive(config.archive_url, storage_options=config.storage_options)
    except CcArchiveError as e:
        raise ConfigError(f"{config.path}: archive: {e}") from None
    except (ValueError, ImportError, OSError) as e:
        raise ConfigError(f"{config.path}: archive (kind {config.archive_kind!r}): cannot open "
                          f"{config.archive_url}: {e}") from None


def _bind(config: ServiceConfig, app: Sidecar, auth: Any) -> Any:
    """The HTTP server bound to ``listen``; a taken or impossible address is a one-line ConfigError."""
    from ..config import ConfigError
    from .http import ServiceHTTPServer

    try:
        return ServiceHTTPServer((config.listen_host, config.listen_port), app, auth)
    except OSError as e:
        raise ConfigError(f"ccarchive.listen: cannot listen on {config.listen_host}:{config.listen_port}: "
                          f"{e.strerror or e}") from None


def run(config: ServiceConfig, *, ready: threading.Event | None = None, stop: threading.Event | None = None) -> int:
    """Run the sidecar until SIGTERM/SIGINT (or ``stop``); returns the exit code."""
    from ..jobdb import WalCheckpointer
    from ..logs import setup_logging

    setup_logging(_LEVELS[config.log_level], config.log_format)
    check_backends(config)
    # Before any connection of this process opens: stop requests commit, this thread checkpoints.
    checkpointer = WalCheckpointer(config.job_db).start()
    try:
        return _serve(config, ready, stop)
    finally:
        checkpointer.stop()


def _serve(config: ServiceConfig, ready: threading.Event | None, stop: threading.Event | None) -> int:
    """:func:`run` once the job DB's checkpoints are in their own thread."""
    from ..pipeline import Archiver, RetryPolicy, ShutdownTimeoutError
    from .auth import Authenticator
    from .nats import NatsSubscriber

    # Request threads hand the GIL over around every SQLite call; with the default 5 ms switch
    # interval a thread coming back from SQLite waits up to 5 ms behind one parsing a request,
    # and 16 concurrent stops queue those waits.  The archiving runs in the worker process.
    sys.setswitchinterval(0.0005)
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: stop.set())
    metrics = ServiceMetrics()
    archiver = Archiver(
        config.worker_config(), hooks=load_hooks(config), on_result=_result_logger(metrics),
        retry=RetryPolicy(config.max_attempts, config.retry_backoff_s, config.retry_backoff_max_s),
        reconcile_grace_s=config.grace_period_s, reconcile_horizon_s=config.reconcile_horizon_s)
    auth = Authenticator(None if config.disable_authentication else config.jwt_public_key,
                         allowed_ips=config.api_allowed_ips)
    if not auth.enabled:
        log.warning("main.disable-authentication is set: stop_job and the admin API accept any caller")
    sidecar = Sidecar(config, archiver, metrics)
    httpd = _bind(config, sidecar, auth)  # before the worker starts: a busy port fails at once
    try:
        archiver.start()
    except BaseException:
        httpd.server_close()
        raise
    nats = None
    if config.nats is not None:
        n = config.nats
        nats = NatsSubscriber(n.address, n.subject, sidecar.nats_stop, username=n.username,
                              password=n.password, creds_file=n.creds_file)
    metrics.attach(archiver, nats)
    httpd.start()
    if nats is not None:
        nats.start()
    # The reconciler runs in its own thread (first pass now) and waits for queue slots; the HTTP and
    # NATS triggers never wait (their jobs queue up in the pipeline's backlog).
    threading.Thread(target=_reconcile_loop, args=(archiver, config.reconcile_interval_s, sidecar.closing),
                     name="ccarchive-reconciler", daemon=True).start()
    host, port = httpd.server_address[:2]
    log.info("ccarchive serve: listening on http://%s:%s (job DB %s, archive %s%s)", host, port, config.job_db,
             config.archive_url, f", NATS subject {config.nats.subject}" if config.nats else "")
    if ready is not None:
        ready.set()
    while not stop.wait(1.0):
        pass
    log.info("ccarchive serve: stopping (waiting up to %.0f s for queued jobs)", config.shutdown_timeout_s)
    sidecar.closing.set()
    if nats is not None:
        nats.stop()
    httpd.stop()
    try:
        archiver.shutdown(config.shutdown_timeout_s)
    except ShutdownTimeoutError as e:
        log.error("ccarchive serve: %s", e)
        return 1
    finally:
        sidecar.stops.close()
    log.info("ccarchive serve: stopped; every queued job was archived (archived %d, failed %d)",
                archiver.stats.archived, sum(archiver.stats.failed.values()))
    return 0
