"""The archiving worker process: take job ids from the queue, archive, report back.

Runs as a module-level function in a *spawned* process (never forked: numba's threading layer
aborts forked children).  Only :class:`JobRef` records arrive through the queue and only
:class:`Message` records go back through a one-way pipe, so no metric array ever crosses the
process boundary.  The worker never decides a job's fate on failure: it reports the reason and
whether it looks transient, and the parent retries or marks the job failed.

Per job, the six steps of cc-backend's archiver:
1. fetch the job's metadata from the job DB
2. select scopes and load metric data from the source
3. kernels: aggregate + statistics
4. encode + write to the archive (data first, meta.json last)
5. update the job DB (footprint, energy, monitoring_status = 3)
6. report the result; the parent runs the hooks
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from queue import Empty
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobRef:
    """What crosses the queue: the job DB id (the worker reads everything else itself)."""

    db_id: int
    attempt: int = 1
    force: bool = False  # re-archive even if the job DB says it is archived (or not monitored)


@dataclass
class WorkerConfig:
    """Everything the worker needs to open its own connections; picklable by design."""

    job_db: str
    archive_url: str
    state_db: str
    source: dict[str, Any] = field(default_factory=lambda: {"kind": "synthetic"})
    storage_options: dict[str, Any] = field(default_factory=dict)
    core_scope_max_nodes: int = 8
    #: also write every archived job to this Parquet dataset (``parquet+URL``); JSON stays the
    #: durable record, the dataset is flushed when the queue is idle and at exit
    parquet_url: str | None = None
    parquet_storage_options: dict[str, Any] = field(default_factory=dict)
    #: longest pause between two tries of a job while the archive or job DB storage is full
    storage_retry_max_s: float = 30.0
    #: data.json.gz compression (None = the process default, see ``formats.compress``)
    gzip_level: int | None = None
    gzip_threads: int | None = None
    log_level: int = logging.WARNING
    log_format: str = "plain"


@dataclass
class Message:
    """Worker -> parent.  kind: ready | fatal | preparing | started | paused | done | skipped | failed
    | cancelled.

    ``preparing``: the job is being loaded and encoded (nothing written) while the job before it
    is still being written; ``started`` follows once that one is reported.  ``paused`` (storage
    full) may come several times between ``started`` and the job's outcome."""

    kind: str
    db_id: int = 0
    attempt: int = 0
    ok: bool = False
    reason: str = ""
    message: str = ""
    transient: bool = False
    phases: dict[str, float] = field(default_factory=dict)
    bytes_written: int = 0
    job: dict[str, Any] | None = None  # hook payload: the archived job's identity and results
    warnings: list[str] = field(default_factory=list)
    pid: int = 0
    retry_in_s: float = 0.0  # paused: seconds until the worker tries the job again


def warm_up() -> None:
    """Archive a small synthetic job into a temporary directory before taking jobs: every kernel
    is compiled (or loaded from the on-disk cache), every lazy import done, the compression
    threads started, so the first real job costs no more than the next and the idle RSS is the
    worker's true floor.  Only this process writes the JIT cache (concurrent first compiles into
    one cache can crash)."""
    import tempfile

    from .archive import open_archive
    from .core import archive_job
    from .demo import embedded_cluster
    from .formats.compress import BLOCK_BYTES, SETTINGS
    from .kernels import jsonnum
    from .sources.synthetic import SyntheticSource, synthetic_job

    cluster = embedded_cluster("fritz")
    # 2 nodes x 72 cores at core scope (aggregation, statisticsSeries), enough text to feed every
    # compression thread a block
    samples = 4 * SETTINGS.threads * BLOCK_BYTES // (2 * 72 * 20 * 7) + 10
    job = synthetic_job(cluster, "main", 1, 1_700_000_000, 2, samples * 60, seed=1)
    with tempfile.TemporaryDirectory(prefix="ccarchive-warm-up-") as tmp:
        archive_job(job, source=SyntheticSource(seed=1), archive=open_archive(tmp, create=True), cluster=cluster,
                    keep_data=False)
    jsonnum.warm_up()  # the metric store's answers are parsed by these kernels


def _hook_payload(job: Any, path: str) -> dict[str, Any]:
    return {
        "id": job.id, "jobId": job.job_id, "cluster": job.cluster, "startTime": job.start_time,
        "subCluster": job.sub_cluster, "user": job.user, "project": job.project,
        "numNodes": job.num_nodes, "duration": job.duration, "jobState": job.job_state,
        "energy": job.energy, "footprint": job.footprint, "energyFootprint": job.energy_footprint,
        "statistics": {m: {"avg": s.avg, "min": s.min, "max": s.max} for m, s in (job.statistics or {}).items()},
        "archivePath": path,
    }


def is_transient(exc: BaseException) -> bool:
    """Whether the parent should retry the job (the rule :mod:`ccarchive.retry` keeps for everyone)."""
    from .retry import is_transient as transient

    return transient(exc)


STORAGE_FULL = "storage-full"
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_FULL_TEXTS = ("database or disk is full", "no space left on device", "disk quota exceeded")


def is_storage_full(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from or while handling) says the disk or
    quota is full: a condition to wait out, not a reason to fail the job."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return True
        if any(t in str(e).lower() for t in _FULL_TEXTS):
            return True
        todo += [e.__cause__, e.__context__]
    return False


def look_ahead(ref: JobRef, cfg: WorkerConfig, env: dict[str, Any], cancelled: Callable[[], bool]) -> None:
    """Read the next queued job and send its first metric requests now, so a remote store answers
    while the current job is encoded, written and recorded (for small jobs the store's answer
    time is most of a job).  Nothing is written for it and it is not reported started: if the
    worker dies, the parent still has it queued.  A failure here is left for the job's own turn,
    which reports it."""
    from .core import check_job
    from .loading import JobLoader

    try:
        job = env["jobdb"].get_job(ref.db_id)
        if job.monitoring_status in (0, 3) and not ref.force:
            return
        cluster = env["archive"].load_cluster(job.cluster)
        check_job(job, cluster)
        loader = JobLoader(job, cluster, env["source"], core_scope_max_nodes=cfg.core_scope_max_nodes,
                           cancelled=cancelled)
        loader.start()
    except Exception as e:  # noqa: BLE001 - reported when the job itself runs
        log.debug("job %s: not opened ahead: %s", ref.db_id, e)
        return
    env.setdefault("ahead", {})[ref.db_id] = (job, loader)


def drop_ahead(env: dict[str, Any], db_id: int) -> tuple[Any, Any] | None:
    """The job and loader :func:`look_ahead` opened for ``db_id`` (None if it did not)."""
    return env.get("ahead", {}).pop(db_id, None)


def _open_job(ref: JobRef, env: dict[str, Any], cancelled: Callable[[], bool]) -> tuple[Any, Any, Any] | Message:
    """Step 1: the job, its cluster and the loader :func:`look_ahead` opened for it (None if it did
    not, or if the job changed since), or the ``skipped`` Message of a job not to archive."""
    from .errors import CancelledError

    ahead = drop_ahead(env, ref.db_id)
    keep = False
    try:
        job = env["jobdb"].get_job(ref.db_id)
        if job.monitoring_status in (0, 3) and not ref.force:
            what = "already archived" if job.monitoring_status == 3 else "not monitored (status 0)"
            return Message("skipped", ref.db_id, ref.attempt, ok=True, reason=what,
                           message=f"{job.label}: {what}; not archived again")
        cluster = env["archive"].load_cluster(job.cluster)
        if cancelled():
            raise CancelledError(f"{job.label}: cancelled before loading")
        keep = ahead is not None and ahead[0] == job  # unchanged since it was opened ahead
        return job, cluster, ahead[1] if keep and ahead is not None else None
    finally:
        if ahead is not None and not keep:
            ahead[1].close()


def _record(ref: JobRef, env: dict[str, Any], result: Any) -> Message:
    """Step 5 and the ``done`` Message (step 6): the job DB learns the job is archived."""
    t0 = time.perf_counter()
    final = result.job
    env["jobdb"].mark_archived(ref.db_id, final.footprint or {}, final.energy_footprint or {}, final.energy)
    result.phases["db"] = time.perf_counter() - t0
    return Message("done", ref.db_id, ref.attempt, ok=True, phases=result.phases,
                   bytes_written=result.bytes_written, job=_hook_payload(final, result.path),
                   warnings=result.warnings[:50])


def _as_message(ref: JobRef, e: BaseException) -> Message:
    from .errors import CancelledError

    if isinstance(e, CancelledError):
        return Message("cancelled", ref.db_id, ref.attempt, reason=e.reason, message=str(e))
    if isinstance(e, Exception):
        return _failure(ref, e)
    raise e


def archive_one(ref: JobRef, cfg: WorkerConfig, env: dict[str, Any], cancelled: Any) -> Message:
    """Steps 1-5 for one job; any exception becomes a failed Message."""
    from .core import archive_job

    loader = None
    try:
        opened = _open_job(ref, env, cancelled)
        if isinstance(opened, Message):
            return opened
        job, cluster, loader = opened
        result = archive_job(job, source=env["source"], archive=env["archive"], cluster=cluster,  # 2-4
                             core_scope_max_nodes=cfg.core_scope_max_nodes, cancelled=cancelled,
                             sink=env.get("sink"), keep_data=False, loader=loader)
        return _record(ref, env, result)                                          # 5-6
    except BaseException as e:  # noqa: BLE001 - the worker must survive anything a job does
        return _as_message(ref, e)
    finally:
        if loader is not None:
            loader.close()  # requests of a loader not iterated to its end


def prepare_one(ref: JobRef, cfg: WorkerConfig, env: dict[str, Any], cancelled: Callable[[], bool]) -> Any:
    """Steps 1-3 and the encoding of a small job, nothing written: a ``PreparedJob`` for
    :func:`write_prepared`, a Message (skipped, failed, cancelled), or None when the job is to be
    archived by :func:`archive_one` instead (too large to hold in memory, or a Parquet sink is
    configured: its rows go in as the job streams)."""
    from .core import prepare_job
    from .loading import JobLoader

    if env.get("sink") is not None:
        return None
    loader = None
    try:
        opened = _open_job(ref, env, cancelled)
        if isinstance(opened, Message):
            return opened
        job, cluster, loader = opened
        if loader is None:
            loader = JobLoader(job, cluster, env["source"], core_scope_max_nodes=cfg.core_scope_max_nodes,
                               cancelled=cancelled)
        prepared = prepare_job(job, cluster=cluster, loader=loader, gzip_ahead=env["archive"].stores_gzip)
        if prepared is None:  # archive_one takes the (unstarted) loader over
            env.setdefault("ahead", {})[ref.db_id] = (job, loader)
            loader = None
        return prepared
    except BaseException as e:  # noqa: BLE001 - reported as the job's outcome
        return _as_message(ref, e)
    finally:
        if loader is not None:
            loader.close()


def write_prepared(ref: JobRef, prepared: Any, env: dict[str, Any]) -> Message:
    """Steps 4-6 of a prepared job (runs on the writer thread); any exception becomes a failed Message."""
    try:
        return _record(ref, env, prepared.write(env["archive"]))
    except BaseException as e:  # noqa: BLE001
        return _as_message(ref, e)


def _failure(ref: JobRef, e: Exception) -> Message:
    """The failed Message for an exception: storage full first (wrapped or not), then ours, then the rest."""
    from .errors import CcArchiveError

    if is_storage_full(e):
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        return Message("failed", ref.db_id, ref.attempt, reason=STORAGE_FULL, transient=True,
                       message=f"job {ref.db_id}: storage full: {text}")
    if isinstance(e, CcArchiveError):
        return Message("failed", ref.db_id, ref.attempt, reason=e.reason, message=str(e), transient=is_transient(e))
    if isinstance(e, MemoryError):
        return Message("failed", ref.db_id, ref.attempt, reason="out-of-memory",
                       message=f"job {ref.db_id}: out of memory while archiving")
    where = traceback.format_exception(e, limit=5)[-1].strip()
    return Message("failed", ref.db_id, ref.attempt, reason="transient" if is_transient(e) else "internal",
                   message=f"job {ref.db_id}: {type(e).__name__}: {e} ({where})", transient=is_transient(e))


def archive_until_space(
    ref: JobRef, cfg: WorkerConfig, env: dict[str, Any], cancelled: Callable[[], bool],
    report: Callable[[Message], None], wait: Callable[[float], bool], first: Message | None = None,
) -> Message:
    """:func:`archive_one`, but a full disk pauses the worker instead of failing the job: each try
    leaves nothing half-written, the parent hears ``paused`` (with the wait), and the same job is
    tried again with backoff (1 s doubling up to ``storage_retry_max_s``) until it fits or
    ``wait`` reports a cancellation.  So a full disk never burns through the queue, and every job
    archives once space returns, without a manual retry.  ``first``: the outcome of a first try
    made elsewhere (a prepared job's write)."""
    msg = first if first is not None else archive_one(ref, cfg, env, cancelled)
    pauses = 0
    while msg.kind == "failed" and msg.reason == STORAGE_FULL:
        delay = min(cfg.storage_retry_max_s, 2.0 ** pauses)
        pauses += 1
        report(Message("paused", ref.db_id, ref.attempt, reason=STORAGE_FULL, message=msg.message,
                       retry_in_s=delay, pid=os.getpid()))
        if wait(delay):
            return Message("cancelled", ref.db_id, ref.attempt, reason="cancelled",
                           message=f"job {ref.db_id}: not archived, shutting down while storage was full")
        msg = archive_one(ref, cfg, env, cancelled)
    return msg


def open_environment(cfg: WorkerConfig) -> dict[str, Any]:
    from .archive import open_archive
    from .jobdb import JobDB
    from .sources.registry import source_from_spec

    env: dict[str, Any] = {
        "jobdb": JobDB(cfg.job_db),
        "archive": open_archive(cfg.archive_url, storage_options=cfg.storage_options),
        "source": source_from_spec(cfg.source),
    }
    if cfg.parquet_url:
        env["sink"] = open_archive(cfg.parquet_url, create=True,  # type: ignore[attr-defined]
                                   storage_options=cfg.parquet_storage_options).sink()
    return env


def flush_sink(env: dict[str, Any]) -> None:
    """Write buffered Parquet rows; a failure is logged (JSON is the record; convert backfills)."""
    sink = env.get("sink")
    if sink is not None and sink.pending:
        try:
            sink.flush()
        except Exception:  # noqa: BLE001
            log.exception("Parquet flush failed; `ccarchive convert` can backfill the dataset")


def worker_main(cfg: WorkerConfig, queue: Any, results: Any, cancel: Any) -> None:
    """Entry point of the worker process."""
    import signal

    # Ctrl-C reaches the whole foreground process group; only the parent decides how to stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from .logs import setup_logging

    setup_logging(0 if cfg.log_level >= logging.WARNING else 1, cfg.log_format)
    pid = os.getpid()
    try:
        from .formats import compress

        compress.configure(level=cfg.gzip_level, threads=cfg.gzip_threads)
        warm_up()
        env = open_environment(cfg)
        # The ~130,000 objects of the imports and the warm-up live as long as the process: out of
        # the collector's sight, a full collection no longer walks them all (~50 ms each here).
        gc.freeze()
    except BaseException as e:  # noqa: BLE001 - report why the worker cannot run, then exit
        results.send(Message("fatal", reason=getattr(e, "reason", "worker-start"), message=str(e), pid=pid))
        return
    results.send(Message("ready", pid=pid))
    parent = os.getppid()

    def cancelled() -> bool:
        # an orphaned worker (parent killed) stops at the next check instead of running on
        return cancel.is_set() or os.getppid() != parent

    def wait_or_cancelled(seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if cancel.wait(min(left, 1.0)) or os.getppid() != parent:
                return True
        return cancelled()

    taken: list[JobRef | None] = []  # the next queue item, taken early to look ahead
    # A small job is prepared (loaded, summarised, encoded) while the job before it is written on
    # this thread, and reported started only once that one is reported done: the parent sees
    # one job at a time, and "preparing" tells it which job a crash meanwhile belongs to.
    writer = ThreadPoolExecutor(1, thread_name_prefix="ccarchive-writer")
    writing: tuple[JobRef, Future[Message]] | None = None

    def settle() -> None:
        """Report the job being written (waiting for it; a full disk pauses here)."""
        nonlocal writing
        if writing is not None:
            ref, fut = writing
            writing = None
            results.send(archive_until_space(ref, cfg, env, cancelled, results.send, wait_or_cancelled,
                                             first=fut.result()))

    try:
        while True:
            if taken:
                ref = taken.pop()
            else:
                try:
                    ref = queue.get_nowait() if writing is not None else queue.get(timeout=1.0)
                except Empty:
                    if writing is not None:
                        settle()
                        continue
                    flush_sink(env)
                    if os.getppid() != parent:
                        return
                    continue
            if ref is None:
                settle()
                flush_sink(env)
                break
            if cancelled():
                settle()
                ahead = drop_ahead(env, ref.db_id)
                if ahead is not None:
                    ahead[1].close()
                results.send(Message("cancelled", ref.db_id, ref.attempt, reason="cancelled",
                                     message=f"job {ref.db_id}: not started, shutting down"))
                continue
            overlapped = writing is not None
            results.send(Message("preparing" if overlapped else "started", ref.db_id, ref.attempt, pid=pid))
            try:
                taken.append(queue.get_nowait())
                if taken[0] is not None:
                    look_ahead(taken[0], cfg, env, cancelled)
            except Empty:
                pass
            outcome = prepare_one(ref, cfg, env, cancelled)
            if overlapped:
                settle()
                results.send(Message("started", ref.db_id, ref.attempt, pid=pid))
            if isinstance(outcome, Message):  # (a full disk met while loading pauses too)
                results.send(archive_until_space(ref, cfg, env, cancelled, results.send, wait_or_cancelled,
                                                 first=outcome))
            elif outcome is None:
                results.send(archive_until_space(ref, cfg, env, cancelled, results.send, wait_or_cancelled))
            else:
                writing = (ref, writer.submit(write_prepared, ref, outcome, env))
    except (BrokenPipeError, OSError):
        return  # the parent is gone; the job DB still says pending where it matters
    finally:
        writer.shutdown(wait=True)
