"""The archiving pipeline: parent-side queue, one worker process, results, retries, shutdown.

::

  trigger(job) ──► capacity (128 slots) ──► multiprocessing.Queue(128) ──► worker process
     ▲  any thread                                                           │ started/done/failed
     │                                        result thread ◄── Pipe ◄───────┘ + worker sentinel
     │                                           │ pending set, state store, DB status 2, retries
  reconciler thread (job DB: stopped, status 1)  └──► hook thread (callables, entry points, shell)

State: new → running → draining → stopped.  The parent keeps every job it accepted in
``pending`` until the worker reports it finished; that set is what makes triggers idempotent,
what a dead worker's queue is rebuilt from, and what a shutdown timeout names.  A capacity
semaphore released when the worker *takes* a job bounds the queue at 128, so ``trigger`` blocks
only while 128 jobs are queued and the multiprocessing queue itself never blocks; that keeps a
replacement queue safe to fill after a worker died holding the old queue's lock.

The job DB is the durable queue: jobs still pending when the process dies or shuts down keep
``monitoring_status = 1`` and the reconciler enqueues them at the next start.
"""

from __future__ import annotations

import logging
import multiprocessing
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import wait as mp_wait
from typing import Any

from .errors import CcArchiveError
from .hooks import HookRunner
from .jobdb import JobDB
from .statestore import StateStore
from .worker import JobRef, Message, WorkerConfig, worker_main

log = logging.getLogger(__name__)

QUEUE_SIZE = 128


class ArchiverStateError(CcArchiveError):
    reason = "archiver-state"


class QueueFullError(CcArchiveError):
    reason = "queue-full"


class ShutdownTimeoutError(CcArchiveError):
    """Raised by ``shutdown`` when jobs were still unfinished after the timeout."""

    reason = "shutdown-timeout"

    def __init__(self, message: str, unfinished: list[int]):
        super().__init__(message)
        self.unfinished = unfinished


@dataclass
class RetryPolicy:
    """Exponential backoff with full jitter for transient failures."""

    max_attempts: int = 4
    base_s: float = 2.0
    cap_s: float = 300.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))


@dataclass
class ArchiverStats:
    """Counters the parent keeps (exported as Prometheus metrics by the service)."""

    archived: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    worker_restarts: int = 0
    bytes_written: int = 0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    shutdown_timeouts: int = 0


class Archiver:
    """One archiving worker process fed by a bounded queue.

    Args:
        config: how the worker opens the job DB, archive and metric source.
        hooks: called in the parent with the archived job's summary after each success.
        retry: backoff policy for transient failures.
        on_result: optional callback for every finished job (progress bars, tests).
    """

    def __init__(
        self,
        config: WorkerConfig,
        *,
        hooks: HookRunner | None = None,
        retry: RetryPolicy | None = None,
        on_result: Callable[[Message], None] | None = None,
        reconcile_interval_s: float | None = None,
        reconcile_grace_s: float = 60.0,
        reconcile_horizon_s: float = 90 * 86400.0,
        start_method: str = "spawn",
    ) -> None:
        if start_method not in ("spawn", "forkserver"):
            raise ValueError("start_method must be 'spawn' or 'forkserver' (numba aborts forked children)")
        self.config = config
        self.hooks = hooks or HookRunner()
        self.retry = retry or RetryPolicy()
        self.on_result = on_result
        self.reconcile_interval_s = reconcile_interval_s
        self.reconcile_grace_s = reconcile_grace_s
        self.reconcile_horizon_s = reconcile_horizon_s
        self.stats = ArchiverStats()
        self._ctx: Any = multiprocessing.get_context(start_method)
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._state = "new"
        self._pending: dict[int, JobRef] = {}   # accepted and not finished: queued, in flight, retry wait
        self._queued: set[int] = set()          # holding a capacity slot
        self._in_flight: int | None = None
        self._slots = threading.BoundedSemaphore(QUEUE_SIZE)
        self._retry_timers: dict[int, threading.Timer] = {}
        self._stop = threading.Event()
        self._state_store = StateStore(config.state_db)
        self._jobdb: JobDB | None = None
        self._threads: list[threading.Thread] = []
        self._ready = threading.Event()
        self._fatal: str | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, *, wait_ready: float | None = 120.0) -> None:
        """Start the worker (and the reconciler if configured); once only."""
        with self._lock:
            if self._state != "new":
                raise ArchiverStateError(f"Archiver.start() called twice (state {self._state})")
            self._state = "running"
        self._jobdb = JobDB(self.config.job_db)
        self._spawn_worker()
        self._start_thread(self._result_loop, "ccarchive-results")
        self.hooks.start()
        if wait_ready is not None and not self._ready.wait(wait_ready):
            raise ArchiverStateError(f"archiving worker not ready after {wait_ready:.0f} s")
        if self._fatal:
            raise ArchiverStateError(f"archiving worker cannot start: {self._fatal}")
        if self.reconcile_interval_s is not None:
            self._start_thread(self._reconcile_loop, "ccarchive-reconciler")

    def _start_thread(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def _spawn_worker(self) -> None:
        self._queue = self._ctx.Queue(QUEUE_SIZE)
        self._results_r, results_w = self._ctx.Pipe(duplex=False)
        self._cancel = self._ctx.Event()
        self._worker = self._ctx.Process(
            target=worker_main, args=(self.config, self._queue, results_w, self._cancel),
            name="ccarchive-worker", daemon=True,
        )
        self._worker.start()
        results_w.close()  # the parent keeps only the reading end, so EOF means the worker is gone

    @property
    def worker_pid(self) -> int | None:
        return self._worker.pid if self._state != "new" else None

    # -- triggering --------------------------------------------------------------------------------
    def trigger(self, job: Any, *, timeout: float | None = None, force: bool = False) -> bool:
        """Queue a job (a Job with ``id``, or a job DB id) for archiving.

        Returns False when the job is already pending (queued, in flight or waiting for a retry).
        The worker skips jobs the DB already marks archived unless ``force``.  Blocks while 128
        jobs are queued; with ``timeout`` raises QueueFullError instead.
        """
        db_id = int(job if isinstance(job, int) else job.id)
        return self._enqueue(JobRef(db_id, 1, force), timeout=timeout, new=True)

    def _enqueue(self, ref: JobRef, *, timeout: float | None, new: bool) -> bool:
        with self._lock:
            self._check_accepting()
            if new and ref.db_id in self._pending:
                return False
            self._pending[ref.db_id] = ref
        if not self._slots.acquire(timeout=timeout):
            with self._lock:
                self._pending.pop(ref.db_id, None)
                self._changed.notify_all()
            raise QueueFullError(f"job {ref.db_id}: archive queue full ({QUEUE_SIZE} queued) for {timeout} s")
        with self._lock:
            if self._state not in ("running", "draining") or ref.db_id not in self._pending:
                self._slots.release()
                return False
            self._queued.add(ref.db_id)
            self._queue.put(ref)
        return True

    def _check_accepting(self) -> None:
        if self._state == "new":
            raise ArchiverStateError("Archiver.trigger() before start()")
        if self._state != "running":
            raise ArchiverStateError(f"Archiver is {self._state}: no new jobs accepted after shutdown()")

    def pending(self) -> list[int]:
        with self._lock:
            return sorted(self._pending)

    def status(self) -> dict[str, Any]:
        with self._lock:
            return {"state": self._state, "queued": len(self._queued), "in_flight": self._in_flight,
                    "pending": len(self._pending), "retry_wait": len(self._retry_timers),
                    "worker_pid": self._worker.pid if self._state != "new" else None}

    # -- results -------------------------------------------------------------------------------------
    def _result_loop(self) -> None:
        while True:
            worker, conn = self._worker, self._results_r
            ready = mp_wait([conn, worker.sentinel], timeout=1.0)
            if conn in ready:
                try:
                    msg = conn.recv()
                except (EOFError, OSError):
                    msg = None
                if msg is not None:
                    self._handle(msg)
                    continue
            if worker.sentinel in ready or (conn in ready) or not worker.is_alive():
                # drain what the worker sent before dying, then decide
                while conn.poll(0):
                    try:
                        self._handle(conn.recv())
                    except (EOFError, OSError):
                        break
                if not self._on_worker_exit():
                    return
            if self._stop.is_set() and not worker.is_alive():
                return

    def _handle(self, msg: Message) -> None:
        if msg.kind == "ready":
            self._ready.set()
            return
        if msg.kind == "fatal":
            self._fatal = f"{msg.reason}: {msg.message}"
            log.error("archiving worker cannot start: %s", msg.message)
            self._ready.set()
            return
        if msg.kind == "started":
            with self._lock:
                self._in_flight = msg.db_id
                if msg.db_id in self._queued:
                    self._queued.discard(msg.db_id)
                    self._slots.release()
            self._state_store.record_attempt(msg.db_id)
            return
        with self._lock:
            if self._in_flight == msg.db_id:
                self._in_flight = None
            if msg.db_id in self._queued:  # cancelled before it started
                self._queued.discard(msg.db_id)
                self._slots.release()
        if msg.kind == "done":
            self._state_store.record_success(msg.db_id)
            self.stats.archived += 1
            self.stats.bytes_written += msg.bytes_written
            for k, v in msg.phases.items():
                self.stats.phase_seconds[k] = self.stats.phase_seconds.get(k, 0.0) + v
            if msg.job is not None:
                self.hooks.submit(msg.job)
            self._finish(msg.db_id)
        elif msg.kind == "failed":
            self._on_failure(msg.db_id, msg.attempt, msg.reason, msg.message, msg.transient)
        elif msg.kind == "skipped":
            log.info("%s", msg.message)
            self._finish(msg.db_id)
        elif msg.kind == "cancelled":
            log.info("job %s not archived (shutdown); it stays pending in the job DB", msg.db_id)
            self._finish(msg.db_id, keep_pending=True)
        if self.on_result is not None:
            try:
                self.on_result(msg)
            except Exception:  # noqa: BLE001 - a progress callback must not stop the pipeline
                log.exception("on_result callback failed")

    def _finish(self, db_id: int, *, keep_pending: bool = False) -> None:
        with self._lock:
            if not keep_pending or self._state != "running":
                self._pending.pop(db_id, None)
            self._changed.notify_all()

    def _on_failure(self, db_id: int, attempt: int, reason: str, message: str, transient: bool) -> None:
        if transient and attempt < self.retry.max_attempts and self._state == "running":
            delay = self.retry.delay(attempt)
            self.stats.retries += 1
            self._state_store.record_failure(db_id, reason, message, next_retry_at=time.time() + delay)
            log.warning("%s (attempt %d, retry in %.1f s)", message, attempt, delay)
            force = self._pending[db_id].force if db_id in self._pending else False
            timer = threading.Timer(delay, self._retry_now, args=(JobRef(db_id, attempt + 1, force),))
            timer.daemon = True
            with self._lock:
                self._retry_timers[db_id] = timer
            timer.start()
            return
        log.error("archiving failed: %s [reason=%s]", message, reason)
        self.stats.failed[reason] = self.stats.failed.get(reason, 0) + 1
        self._state_store.record_failure(db_id, reason, message)
        try:
            assert self._jobdb is not None
            self._jobdb.mark_failed(db_id)
        except Exception:  # noqa: BLE001 - the job stays pending; the reconciler retries it
            log.exception("job %s: could not mark it failed in the job DB", db_id)
        self._finish(db_id)

    def _retry_now(self, ref: JobRef) -> None:
        with self._lock:
            self._retry_timers.pop(ref.db_id, None)
            if self._state != "running":
                self._pending.pop(ref.db_id, None)
                self._changed.notify_all()
                return
        try:
            self._enqueue(ref, timeout=None, new=False)
        except ArchiverStateError:
            self._finish(ref.db_id)

    def _on_worker_exit(self) -> bool:
        """The worker process is gone. Returns True when a replacement was started."""
        self._worker.join(10)  # reap it, so the exit code is known
        code = self._worker.exitcode
        with self._lock:
            stopping = self._state in ("draining", "stopped") and (self._stop.is_set() or not self._pending)
            lost = self._in_flight
            self._in_flight = None
        if self._stop.is_set():
            return False
        cause = f"archiving worker (pid {self._worker.pid}) died with exit code {code}"
        log.error("%s%s", cause, f" while archiving job {lost}" if lost else "")
        if lost is not None:
            self._state_store.record_failure(lost, "worker-died", cause)
            st = self._state_store.get(lost)
            attempts = st.attempts if st is not None else 1
            if attempts >= self.retry.max_attempts:
                self._on_failure(lost, attempts, "worker-died", f"job {lost}: {cause} ({attempts} times)", False)
        if stopping:
            return False
        # Rebuild: a new queue (the dead worker may hold the old one's lock) with every job still pending.
        self.stats.worker_restarts += 1
        self._ready.clear()
        with self._lock:
            old_queue = self._queue
            refs = sorted(self._pending.values(), key=lambda r: r.db_id)
            waiting = set(self._retry_timers)
            self._spawn_worker()
            for r in refs:
                if r.db_id in waiting:
                    continue
                if r.db_id not in self._queued:
                    if not self._slots.acquire(blocking=False):
                        continue  # will be picked up by the reconciler
                    self._queued.add(r.db_id)
                self._queue.put(r)
        old_queue.cancel_join_thread()
        old_queue.close()
        return True

    # -- reconciler -----------------------------------------------------------------------------------
    def reconcile(self) -> int:
        """Enqueue stopped jobs still waiting for archiving (status 1) older than the grace period."""
        assert self._jobdb is not None
        ids = self._jobdb.pending_jobs(now=int(time.time()), grace_s=int(self.reconcile_grace_s),
                                       horizon_s=int(self.reconcile_horizon_s))
        n = 0
        for db_id in ids:
            while not self._stop.is_set():
                try:
                    if self.trigger(db_id, timeout=1.0):
                        n += 1
                    break
                except QueueFullError:
                    continue
                except ArchiverStateError:
                    return n
        if n:
            log.info("reconciler queued %d pending jobs", n)
        return n

    def _reconcile_loop(self) -> None:
        """A first pass right after start, then one every ``reconcile_interval_s``."""
        assert self.reconcile_interval_s is not None
        while True:
            try:
                self.reconcile()
            except Exception:  # noqa: BLE001 - keep reconciling; the DB may be busy
                log.exception("reconciler pass failed")
            if self._stop.wait(self.reconcile_interval_s):
                return

    # -- shutdown ----------------------------------------------------------------------------------------
    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is pending (queued, in flight or waiting for a retry)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._changed.wait(timeout=min(left, 1.0) if left is not None else 1.0)
            return True

    def shutdown(self, timeout: float = 60.0, *, grace: float = 10.0) -> None:
        """Stop accepting, wait up to ``timeout`` for pending jobs, then cancel and stop the worker.

        Raises ShutdownTimeoutError naming the jobs not finished; they stay pending in the job DB.
        """
        with self._lock:
            if self._state == "new":
                self._state = "stopped"
                return
            if self._state != "running":
                raise ArchiverStateError(f"Archiver.shutdown() called twice (state {self._state})")
            self._state = "draining"
            timers = list(self._retry_timers.values())
            self._retry_timers.clear()
        for timer in timers:  # jobs waiting for a retry stay pending in the DB
            timer.cancel()
        with self._lock:
            for db_id in [d for d in self._pending if d not in self._queued and d != self._in_flight]:
                self._pending.pop(db_id, None)
        finished = self.wait_idle(timeout)
        unfinished = self.pending()
        if not finished:
            self._cancel.set()
            self.stats.shutdown_timeouts += 1
        self._stop.set()
        try:
            self._queue.put(None)
        except (ValueError, OSError):
            pass
        self._worker.join(grace)
        if self._worker.is_alive():
            _terminate_tree(self._worker.pid, grace)
            self._worker.join(grace)
        for t in self._threads:
            t.join(timeout=grace)
        self.hooks.stop(timeout=grace)
        self._queue.cancel_join_thread()
        self._queue.close()
        with self._lock:
            self._state = "stopped"
        if not finished:
            shown = ", ".join(map(str, unfinished[:20])) + (" ..." if len(unfinished) > 20 else "")
            raise ShutdownTimeoutError(
                f"shutdown timeout after {timeout:g} s: {len(unfinished)} jobs not archived "
                f"(they stay pending in the job DB): {shown}", unfinished)


def _terminate_tree(pid: int | None, grace: float) -> None:
    """SIGTERM the worker and its children, SIGKILL what is left after ``grace``."""
    if pid is None:
        return
    import psutil

    try:
        parent = psutil.Process(pid)
        procs = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


def trigger_all(archiver: Archiver, ids: Iterable[int]) -> int:
    """Trigger many jobs (blocking on back-pressure); returns how many were new."""
    return sum(1 for i in ids if archiver.trigger(i))
