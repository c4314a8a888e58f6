"""The archiving pipeline: parent-side queue, one worker process, results, retries, shutdown.

::

  trigger(job) ──► backlog (FIFO) ──► multiprocessing.Queue(128) ──► worker process
     ▲  any thread       ▲ fed whenever a slot frees                   │ started/done/failed/paused
     │                   │                  result thread ◄── Pipe ◄───┘ + worker sentinel
     │                   └── a dead worker's job goes back first  │ pending set, state store, retries
  reconciler thread (job DB: stopped, status 1)                  └──► hook thread (callables, shell)

State: new → running → draining → stopped.  The parent keeps every job it accepted in
``pending`` until the worker reports it finished, and every pending job is in exactly one place:
the backlog, the multiprocessing queue, the worker (in flight) or a retry timer.  That set is what
makes triggers idempotent, what a dead worker's work is rebuilt from, and what a shutdown timeout
names.  The queue holds at most 128 jobs; the backlog in front of it is fed as the worker takes
jobs, so the multiprocessing queue itself never blocks, and a replacement queue is safe to fill
after a worker died holding the old queue's lock.

``trigger`` blocks while its job waits in the backlog (library back-pressure, optionally with a
timeout); ``trigger(..., block=False)`` returns at once, which is what the service's stop paths use:
the job DB update already made the stop durable, and the job is fed when a slot frees.

The job DB is the durable queue: jobs still pending when the process dies or shuts down keep
``monitoring_status = 1`` and the reconciler enqueues them at the next start.

A full archive or job DB disk (ENOSPC, EDQUOT, SQLite "disk is full") does not fail jobs: the worker
keeps the job, removes what it had started to write, and retries it with backoff until space
returns; the parent shows the condition (``status()["storage_full"]``, metrics, ``/healthz``).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import wait as mp_wait
from typing import Any

from .errors import CcArchiveError
from .hooks import HookRunner
from .jobdb import JobDB
from .retry import RetryPolicy
from .statestore import StateStore
from .worker import JobRef, Message, WorkerConfig, worker_main

log = logging.getLogger(__name__)

QUEUE_SIZE = 128
#: Jobs waiting in front of the queue before non-blocking triggers stop adding to it; beyond this
#: a triggered job stays pending in the job DB and the reconciler queues it later.
BACKLOG_MAX = 100_000


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
class ArchiverStats:
    """Counters the parent keeps (exported as Prometheus metrics by the service)."""

    archived: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    retries: int = 0
    worker_restarts: int = 0
    bytes_written: int = 0
    phase_seconds: dict[str, float] = field(default_factory=dict)
    shutdown_timeouts: int = 0
    #: times the worker paused because the archive or job DB storage was full
    storage_full_pauses: int = 0
    #: triggers not taken because the backlog was full (the jobs stay pending in the job DB)
    deferred: int = 0


@dataclass
class StorageFull:
    """The worker is paused: the archive or the job DB has no space left."""

    since: float
    db_id: int
    message: str
    retry_in_s: float


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
        # Every pending job is in exactly one of: backlog, queued, in flight, retry timers.
        self._pending: dict[int, JobRef] = {}
        self._backlog: OrderedDict[int, JobRef] = OrderedDict()   # accepted, waiting for a queue slot
        self._queued: OrderedDict[int, JobRef] = OrderedDict()    # in the multiprocessing queue, in order
        self._in_flight: int | None = None
        #: the queued job the worker is preparing (loading, encoding; nothing written) while the
        #: in-flight one is being written: a crash meanwhile is charged to it
        self._preparing: int | None = None
        #: the job whose report the result thread is handling (between "out of the worker" and
        #: "finished, retrying or back in the backlog" it is in that thread's hands)
        self._in_hand: int | None = None
        self._retry_timers: dict[int, threading.Timer] = {}
        self._storage_full: StorageFull | None = None
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
    def trigger(self, job: Any, *, timeout: float | None = None, force: bool = False, block: bool = True) -> bool:
        """Queue a job (a Job with ``id``, or a job DB id) for archiving.

        Returns False when the job is already pending (waiting, queued, in flight or waiting for a
        retry).  The worker skips jobs the DB already marks archived unless ``force``.

        With ``block`` (the default) the call returns once the job is in the 128-slot queue, so it
        blocks while 128 jobs are queued ahead of it; with ``timeout`` it raises QueueFullError
        instead and the job is not taken.  With ``block=False`` it returns at once: the job waits
        in the parent's backlog and is queued when a slot frees; only when that backlog holds
        ``BACKLOG_MAX`` jobs does it raise QueueFullError (the job stays pending in the job DB for
        the reconciler).
        """
        db_id = int(job if isinstance(job, int) else job.id)
        return self._enqueue(JobRef(db_id, 1, force), timeout=timeout, new=True, block=block)

    def _enqueue(self, ref: JobRef, *, timeout: float | None, new: bool, block: bool, first: bool = False) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._check_accepting()
            if new and ref.db_id in self._pending:
                return False
            if not block and len(self._backlog) >= BACKLOG_MAX:
                self.stats.deferred += 1
                raise QueueFullError(f"job {ref.db_id}: archive backlog full ({BACKLOG_MAX} jobs waiting)")
            self._pending[ref.db_id] = ref
            self._backlog[ref.db_id] = ref
            if first:
                self._backlog.move_to_end(ref.db_id, last=False)
            self._feed_locked()
            if not block:
                return True
            while ref.db_id in self._backlog:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    del self._backlog[ref.db_id]
                    self._pending.pop(ref.db_id, None)
                    self._changed.notify_all()
                    raise QueueFullError(f"job {ref.db_id}: archive queue full ({QUEUE_SIZE} queued) for {timeout} s")
                self._changed.wait(timeout=left)
            return True

    def _feed_locked(self) -> None:
        """Move jobs from the backlog into free queue slots (with the lock held)."""
        fed = False
        while self._backlog and len(self._queued) < QUEUE_SIZE and self._state in ("running", "draining"):
            db_id, ref = self._backlog.popitem(last=False)
            self._queued[db_id] = ref
            self._queue.put(ref)  # never blocks: at most QUEUE_SIZE refs are in it
            fed = True
        if fed:
            self._changed.notify_all()

    def _check_accepting(self) -> None:
        if self._state == "new":
            raise ArchiverStateError("Archiver.trigger() before start()")
        if self._state != "running":
            raise ArchiverStateError(f"Archiver is {self._state}: no new jobs accepted after shutdown()")

    def pending(self) -> list[int]:
        with self._lock:
            return sorted(self._pending)

    def status(self) -> dict[str, Any]:
        """A snapshot: ``in_flight_db_id`` is the job DB id the worker is archiving (or None)."""
        with self._lock:
            full = self._storage_full
            return {"state": self._state, "queued": len(self._queued), "backlog": len(self._backlog),
                    "in_flight_db_id": self._in_flight, "pending": len(self._pending),
                    "retry_wait": len(self._retry_timers),
                    "worker_pid": self._worker.pid if self._state != "new" else None,
                    "storage_full": None if full is None else {
                        "since": full.since, "job": full.db_id, "error": full.message,
                        "retry_in_s": full.retry_in_s}}

    def check_invariant(self) -> list[str]:
        """Pending jobs that are nowhere (neither waiting, queued, in flight nor in a retry timer):
        always empty; a non-empty list is a bug the tests look for."""
        with self._lock:
            held = {d for d in (self._in_flight, self._in_hand) if d is not None}
            places: list[set[int]] = [set(self._backlog), set(self._queued), set(self._retry_timers), held]
            lost = [f"job {d} is pending but not waiting, queued, in flight or in retry"
                    for d in self._pending if not any(d in p for p in places)]
            twice = [f"job {d} is in {n} places" for d in self._pending if (n := sum(d in p for p in places)) > 1]
            return lost + twice

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
                    self._handle_safely(msg)
                    continue
            if worker.sentinel in ready or (conn in ready) or not worker.is_alive():
                # drain what the worker sent before dying, then decide
                while conn.poll(0):
                    try:
                        self._handle_safely(conn.recv())
                    except (EOFError, OSError):
                        break
                if not self._on_worker_exit():
                    return
            if self._stop.is_set() and not worker.is_alive():
                return

    def _handle_safely(self, msg: Message) -> None:
        """The result thread must outlive anything one message does (a full state-store disk, a bug):
        if it died, no slot would ever be freed again."""
        with self._lock:
            self._in_hand = msg.db_id
        try:
            self._handle(msg)
        except Exception:  # noqa: BLE001
            log.exception("job %s: handling the worker's %r report failed", msg.db_id, msg.kind)
        finally:
            with self._lock:
                self._in_hand = None

    def _record(self, what: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """A state-store write; its failure is logged, never fatal (the job DB holds the job's fate)."""
        try:
            return fn(*args, **kw)
        except Exception as e:  # noqa: BLE001
            log.warning("state store %s: %s failed: %s", self.config.state_db, what, e)
            return None

    def _handle(self, msg: Message) -> None:
        if msg.kind == "ready":
            self._ready.set()
            return
        if msg.kind == "fatal":
            self._fatal = f"{msg.reason}: {msg.message}"
            log.error("archiving worker cannot start: %s", msg.message)
            self._ready.set()
            return
        if msg.kind == "preparing":  # its attempt counts from here: a crash now is charged to it
            with self._lock:
                self._preparing = msg.db_id
            self._record("record attempt", self._state_store.record_attempt, msg.db_id)
            return
        if msg.kind == "started":
            with self._lock:
                self._in_flight = msg.db_id
                prepared = self._preparing == msg.db_id
                if prepared:
                    self._preparing = None
                if self._queued.pop(msg.db_id, None) is not None:
                    self._feed_locked()
            if not prepared:
                self._record("record attempt", self._state_store.record_attempt, msg.db_id)
            return
        if msg.kind == "paused":
            self._on_storage_full(msg)
            return
        self._on_storage_ok(quiet=msg.kind == "cancelled")
        with self._lock:
            if self._in_flight == msg.db_id:
                self._in_flight = None
            if self._queued.pop(msg.db_id, None) is not None:  # cancelled before it started
                self._feed_locked()
        if msg.kind == "done":
            self._record("record success", self._state_store.record_success, msg.db_id)
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

    def _on_storage_full(self, msg: Message) -> None:
        """The worker paused on a full disk: one warning per outage, the rest at debug level."""
        with self._lock:
            first = self._storage_full is None
            since = time.time() if first else self._storage_full.since  # type: ignore[union-attr]
            self._storage_full = StorageFull(since, msg.db_id, msg.message, msg.retry_in_s)
        if first:
            self.stats.storage_full_pauses += 1
            log.warning("archiving paused: %s; the job is kept and retried until space returns "
                        "(no job is failed meanwhile)", msg.message)
        else:
            log.debug("storage still full: %s (retry in %.0f s)", msg.message, msg.retry_in_s)

    def _on_storage_ok(self, *, quiet: bool = False) -> None:
        with self._lock:
            full, self._storage_full = self._storage_full, None
        if full is not None and not quiet:
            log.warning("archiving resumed: storage has space again after %.0f s", time.time() - full.since)

    def _finish(self, db_id: int, *, keep_pending: bool = False) -> None:
        with self._lock:
            if not keep_pending or self._state != "running":
                self._pending.pop(db_id, None)
            self._changed.notify_all()

    def _on_failure(self, db_id: int, attempt: int, reason: str, message: str, transient: bool) -> None:
        if transient and attempt < self.retry.max_attempts and self._state == "running":
            delay = self.retry.delay(attempt)
            self.stats.retries += 1
            self._record("record failure", self._state_store.record_failure, db_id, reason, message,
                         next_retry_at=time.time() + delay)
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
        self._record("record failure", self._state_store.record_failure, db_id, reason, message)
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
            self._enqueue(ref, timeout=None, new=False, block=False)
        except ArchiverStateError:
            self._finish(ref.db_id)

    def _on_worker_exit(self) -> bool:
        """The worker process is gone. Returns True when a replacement was started."""
        self._worker.join(10)  # reap it, so the exit code is known
        code = self._worker.exitcode
        with self._lock:
            stopping = self._state in ("draining", "stopped") and (self._stop.is_set() or not self._pending)
            lost = self._in_flight
            suspect = self._preparing if self._preparing in self._queued else None
            self._in_flight = self._preparing = None
        if self._stop.is_set():
            return False
        cause = f"archiving worker (pid {self._worker.pid}) died with exit code {code}"
        log.error("%s%s%s", cause, f" while archiving job {lost}" if lost else "",
                  f" and preparing job {suspect}" if suspect else "")
        # The crash is charged to the job whose data was being processed: the one being prepared
        # if any (the job being written is already encoded), else the one in flight.
        blamed = suspect if suspect is not None else lost
        if blamed is not None:
            self._record("record failure", self._state_store.record_failure, blamed, "worker-died", cause)
            st = self._record("read state", self._state_store.get, blamed)
            attempts = st.attempts if st is not None else 1
            if attempts >= self.retry.max_attempts:
                with self._lock:
                    self._queued.pop(blamed, None)
                self._on_failure(blamed, attempts, "worker-died", f"job {blamed}: {cause} ({attempts} times)", False)
                lost = None if blamed == lost else lost
        if stopping:
            return False
        # Rebuild: a new queue (the dead worker may hold the old one's lock).  The job it was
        # archiving goes first, then the jobs of the old queue in their order, then the backlog.
        self.stats.worker_restarts += 1
        self._ready.clear()
        with self._lock:
            old_queue = self._queue
            ahead = list(self._queued.items())
            if lost is not None and lost in self._pending:
                ahead.insert(0, (lost, self._pending[lost]))
            self._queued.clear()
            for db_id, ref in reversed(ahead):
                self._backlog[db_id] = ref
                self._backlog.move_to_end(db_id, last=False)
            self._spawn_worker()
            self._feed_locked()
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
        with self._lock:  # jobs waiting for a retry stay pending in the job DB; the rest is drained
            for db_id in [d for d in self._pending if d not in self._queued and d not in self._backlog
                          and d != self._in_flight]:
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
