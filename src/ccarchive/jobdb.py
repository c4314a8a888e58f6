"""cc-backend's SQLite job database, read and updated exactly like cc-backend's Go archiver.

ccarchive runs next to a live cc-backend, so it must not surprise it: it accepts only schema
version 11 (``schema_migrations`` = (11, 0)), reads the JSON columns whether Go stored them as
BLOB (``[]byte`` parameters at job start) or TEXT (``string`` parameters of the footprint
updates), writes footprints the way Go's ``json.Marshal`` of a map does, and never leaves SQL NULL
in ``footprint``/``resources`` (cc-backend's ``scanJob`` cannot read such a row).  Another process
writes the same file, so every write is one short ``BEGIN IMMEDIATE`` transaction under a busy
timeout, and sqlite3 connections are kept per (process, thread), never shared.
docs/compatibility.md lists the statements reproduced here.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib import resources as _resources
from pathlib import Path
from typing import Any

from .errors import CcArchiveError, FormatError, TransientError
from .formats.gojson import fits_go_int, go_float64, go_string
from .model import (
    MONITORING_ARCHIVED,
    MONITORING_ARCHIVING_FAILED,
    MONITORING_RUNNING_OR_ARCHIVING,
    Job,
    Resource,
    Tag,
)
from .names import shown

log = logging.getLogger(__name__)

SCHEMA_VERSION = 11

#: ``jobColumns`` of cc-backend (internal/repository/job.go), in its order.
JOB_COLUMNS = (
    "id", "job_id", "hpc_user", "project", "cluster", "subcluster", "start_time", "cluster_partition",
    "array_job_id", "num_nodes", "num_hwthreads", "num_acc", "shared", "monitoring_status", "smt",
    "job_state", "duration", "walltime", "resources", "footprint", "energy",
)
_READ_COLUMNS = JOB_COLUMNS + ("meta_data", "submit_time", "energy_footprint")
_SELECT = "SELECT " + ", ".join(f"job.{c}" for c in _READ_COLUMNS) + " FROM job"

#: The reconciler query: the ``start_time`` bound lets SQLite use a start_time index.
PENDING_JOBS_SQL = (
    "SELECT job.id FROM job WHERE job.start_time > ? AND job.job_state <> 'running'"
    " AND job.monitoring_status = 1 AND job.start_time + job.duration < ?"
    " ORDER BY job.start_time, job.id"
)
MARK_ARCHIVED_SQL = (
    "UPDATE job SET footprint = ?, energy_footprint = ?, energy = ?, monitoring_status = ? WHERE job.id = ?"
)
MARK_STATUS_SQL = "UPDATE job SET monitoring_status = ? WHERE job.id = ?"
_INSERT_COLUMNS = (
    "job_id", "hpc_user", "project", "cluster", "subcluster", "cluster_partition", "array_job_id",
    "num_nodes", "num_hwthreads", "num_acc", "shared", "monitoring_status", "smt", "job_state",
    "start_time", "duration", "walltime", "footprint", "energy", "energy_footprint", "resources",
    "meta_data", "submit_time",
)
_INSERT_SQL = f"INSERT INTO job ({', '.join(_INSERT_COLUMNS)}) VALUES ({', '.join('?' * 23)})"
_BATCH = 500  # rows per keyset page and ids per IN (...) list


class JobDBError(CcArchiveError):
    """The job database is missing, has the wrong schema, or refused a statement."""

    reason = "job-db"


class JobNotFoundError(JobDBError):
    """No row with the requested id (e.g. deleted by cc-backend's retention)."""

    reason = "job-not-found"


class JobDBBusyError(JobDBError, TransientError):
    """The database stayed locked longer than the busy timeout; retrying may succeed."""

    reason = "job-db-busy"


_WRITERS: dict[tuple[int, str], threading.Lock] = {}
_WRITERS_LOCK = threading.Lock()


def _writer_lock(resolved: str) -> threading.Lock:
    """One lock per (process, database file) for write transactions (``resolved``: the file's
    absolute path).  Threads of one process queue on it and are woken the moment the writer before
    them commits; on SQLite's own lock they would poll with its busy handler's growing sleeps (1,
    2, 5 ... 100 ms), which is what made answers slow under 16 concurrent stop requests.  Other
    processes still meet SQLite's lock."""
    key = (os.getpid(), resolved)
    with _WRITERS_LOCK:
        return _WRITERS.setdefault(key, threading.Lock())


#: Database files (resolved paths) whose WAL this process checkpoints from a thread of its own
#: (:class:`WalCheckpointer`): its connections to them never checkpoint while committing.
_BACKGROUND_CHECKPOINTS: set[str] = set()


class SQLiteConnections:
    """sqlite3 connections to one file, one per (process, thread), with WAL and a busy timeout.

    ``write()`` is a short ``BEGIN IMMEDIATE`` transaction; ``read()`` a deferred one that gives
    several SELECTs one snapshot.  sqlite3 errors become ``error_cls`` (``busy_cls`` for locks).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, busy_timeout_ms: int, create: bool = False,
        error_cls: type[CcArchiveError] = JobDBError, busy_cls: type[CcArchiveError] = JobDBBusyError,
        label: str = "job DB",
    ) -> None:
        self.path = Path(path)
        #: resolved once: a write transaction must not walk the path (five stat calls) each time
        self._resolved = str(self.path.resolve())
        self.busy_timeout_ms = int(busy_timeout_ms)
        self._mode = "rwc" if create else "rw"
        self._error_cls, self._busy_cls, self._label = error_cls, busy_cls, label
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[tuple[int, threading.Thread, sqlite3.Connection]] = []

    def get(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use in this process and thread)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        conn = self._open()
        self._local.conn, self._local.pid = conn, os.getpid()
        with self._lock:  # also close what threads that have ended left behind
            pid = os.getpid()
            dead = [e for e in self._all if e[0] == pid and not e[1].is_alive()]
            self._all = [e for e in self._all if e not in dead] + [(pid, threading.current_thread(), conn)]
        for _, _, c in dead:
            c.close()
        return conn

    def _open(self) -> sqlite3.Connection:
        uri = Path(self._resolved).as_uri() + f"?mode={self._mode}"
        conn = None
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout_ms / 1000, isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA journal_mode = WAL")  # persistent; a no-op when already WAL
            if self._resolved in _BACKGROUND_CHECKPOINTS:
                conn.execute("PRAGMA wal_autocheckpoint = 0")
        except sqlite3.Error as e:
            if conn is not None:
                conn.close()
            raise self.error(e, "cannot open") from e
        return conn

    def error(self, e: sqlite3.Error, what: str) -> CcArchiveError:
        """A one-line ccarchive error for an sqlite3 exception."""
        text = str(e).replace("\n", " ")
        if isinstance(e, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            return self._busy_cls(f"{self._label} {self.path} stayed locked for more than "
                                  f"{self.busy_timeout_ms} ms ({what}): {text}")
        return self._error_cls(f"{self._label} {self.path}: {what}: {text}")

    @contextmanager
    def write(self, what: str = "write") -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` ... ``COMMIT`` transaction (rolled back on any exception), one
        writer of this process at a time."""
        lock = _writer_lock(self._resolved)
        if not lock.acquire(timeout=self.busy_timeout_ms / 1000):
            raise self._busy_cls(f"{self._label} {self.path}: another thread of this process held the write "
                                 f"lock for more than {self.busy_timeout_ms} ms ({what})")
        try:
            with self._transaction("BEGIN IMMEDIATE", what) as conn:
                yield conn
        finally:
            lock.release()

    @contextmanager
    def read(self, what: str = "read") -> Iterator[sqlite3.Connection]:
        """One deferred read transaction (a consistent snapshot)."""
        with self._transaction("BEGIN", what) as conn:
            yield conn

    @contextmanager
    def _transaction(self, begin: str, what: str) -> Iterator[sqlite3.Connection]:
        conn = self.get()
        try:
            conn.execute(begin)
        except sqlite3.Error as e:
            raise self.error(e, what) from e
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise self.error(exc, what) from exc
            raise

    def close(self) -> None:
        """Close every connection this process opened (call when no thread uses them)."""
        with self._lock:
            mine = [c for pid, _, c in self._all if pid == os.getpid()]
            self._all = [e for e in self._all if e[0] != os.getpid()]
        for conn in mine:
            conn.close()
        self._local = threading.local()


class WalCheckpointer:
    """Checkpoints a job DB's write-ahead log from a thread of its own, so that this process's
    commits never do.

    Why: with cc-backend's schema and its many indexes, a stop_job update appends about 50 pages
    (200 KB) to the WAL, so SQLite's automatic checkpoint (at 1,000 pages) ran inside every 20th
    commit of a burst, copying megabytes into the database file and syncing it while every other
    stop request waited for that commit (one stop after another: p99 6 ms instead of under 1 ms;
    16 clients: 20-25 % fewer stops per second).  A passive
    checkpoint here runs beside the writers instead: it never takes the write lock and never waits
    on a busy handler.  Other processes (cc-backend, the archiving worker) keep SQLite's automatic
    checkpoints; two checkpoints never run at once, the second one just finds the WAL done.
    """

    def __init__(self, path: str | os.PathLike[str], *, interval_s: float = 0.25) -> None:
        self._conns = SQLiteConnections(path, busy_timeout_ms=5000, label="job DB checkpointer")
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: frames this checkpointer copied into the database file so far
        self.checkpointed = 0

    def start(self) -> WalCheckpointer:
        """From now on, this process's new connections to the file leave checkpoints to this thread."""
        _BACKGROUND_CHECKPOINTS.add(self._conns._resolved)
        self._thread = threading.Thread(target=self._run, name="ccarchive-checkpointer", daemon=True)
        self._thread.start()
        return self

    def checkpoint(self) -> tuple[int, int]:
        """One passive checkpoint now: (frames in the WAL, frames now in the database file)."""
        _busy, frames, done = self._conns.get().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if done > 0:
            self.checkpointed += int(done)
        return int(frames), int(done)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._checkpoint_logged()
        self._checkpoint_logged()  # what the last commits left, before the process exits

    def _checkpoint_logged(self) -> None:
        try:
            self.checkpoint()
        except (sqlite3.Error, CcArchiveError) as e:  # locked or vanished: the next round tries again
            log.debug("job DB checkpoint skipped: %s", e)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Checkpoint once more, stop the thread, and let new connections checkpoint again."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        _BACKGROUND_CHECKPOINTS.discard(self._conns._resolved)
        self._conns.close()


def encode_float_map(m: Mapping[str, float] | None) -> str:
    """``json.Marshal(map[string]float64)``: sorted keys, compact, Go floats; nil -> ``null``."""
    if m is None:
        return "null"
    return "{" + ",".join(f"{go_string(k)}:{go_float64(float(m[k]))}" for k in sorted(m)) + "}"


def _encode_string_map(m: Mapping[str, str] | None) -> str:
    if m is None:
        return "null"
    return "{" + ",".join(f"{go_string(k)}:{go_string(m[k])}" for k in sorted(m)) + "}"


def encode_resources(resources: Sequence[Resource]) -> str:
    """``json.Marshal([]*schema.Resource)`` (field order and omitempty of cc-lib)."""
    parts = []
    for r in resources:
        s = '{"hostname":' + go_string(r.hostname)
        if r.configuration:
            s += ',"configuration":' + go_string(r.configuration)
        if r.hwthreads:
            s += ',"hwthreads":[' + ",".join(str(int(h)) for h in r.hwthreads) + "]"
        if r.accelerators:
            s += ',"accelerators":[' + ",".join(go_string(a) for a in r.accelerators) + "]"
        parts.append(s + "}")
    return "[" + ",".join(parts) + "]"


def _decode(value: Any) -> Any:
    """A JSON column value (BLOB, TEXT or NULL) -> Python object; NULL/empty -> None."""
    if value is None:
        return None
    if isinstance(value, (bytes, memoryview)):
        value = bytes(value).decode("utf-8")
    if not value.strip():
        return None
    return json.loads(value)


def _resource(i: Any) -> Resource:
    """One element of the ``resources`` column, typed as Go's ``schema.Resource``."""
    if not isinstance(i, dict) or not isinstance(i.get("hostname"), str):
        raise ValueError("not an array of objects with a hostname")
    hw, acc, conf = i.get("hwthreads"), i.get("accelerators"), i.get("configuration")
    if hw is not None and not (isinstance(hw, list) and all(type(h) is int and fits_go_int(h) for h in hw)):
        raise ValueError(f"hwthreads of {i['hostname']!r} are not an array of integers")
    if acc is not None and not (isinstance(acc, list) and all(isinstance(a, str) for a in acc)):
        raise ValueError(f"accelerators of {i['hostname']!r} are not an array of strings")
    if conf is not None and not isinstance(conf, str):
        raise ValueError(f"configuration of {i['hostname']!r} is not a string")
    return Resource(i["hostname"], conf or "", hw, acc)


def _decode_column(name: str, value: Any) -> Any:
    """Decode and type-check one JSON column; ValueError says what is wrong."""
    v = _decode(value)
    if v is None:
        return None
    if name == "resources":
        if not isinstance(v, list):
            raise ValueError("not an array of objects with a hostname")
        return [_resource(i) for i in v]
    if name == "meta_data":
        if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
            raise ValueError("not an object of strings")
        return v
    if not isinstance(v, dict) or not all((type(x) is float and math.isfinite(x)) or (type(x) is int and fits_go_int(x))
                                          for x in v.values()):
        raise ValueError("not an object of finite numbers")
    return {k: float(x) for k, x in v.items()}


#: Columns of ``job`` by the Go type cc-backend scans them into: SQLite keeps any value in any
#: column, so a row written by something else can hold a string where Go expects an int64.
_INT_COLUMNS = ("id", "job_id", "start_time", "array_job_id", "duration", "walltime", "monitoring_status", "smt",
                "num_nodes", "num_hwthreads", "num_acc", "submit_time")
_TEXT_COLUMNS = ("cluster", "subcluster", "hpc_user", "project", "cluster_partition", "job_state", "shared")


def job_from_row(r: Mapping[str, Any], where: str, tags: list[Tag] | None = None) -> Job:
    """A :class:`Job` from a ``job`` (or ``job_cache``) row given by column name (columns not
    read count as NULL); JobDBError ``<where>: column <name> ...`` for a value of the wrong type."""
    for name in _INT_COLUMNS:
        v = r.get(name)
        if v is not None and type(v) is not int:
            raise JobDBError(f"{where}: column {name} must be an integer, got {shown(v)}")
    for name in _TEXT_COLUMNS:
        v = r.get(name)
        if v is not None and not isinstance(v, str):
            raise JobDBError(f"{where}: column {name} must be text, got {shown(v)}")
    energy = r.get("energy")
    if energy is not None and (type(energy) not in (int, float) or not math.isfinite(energy)):
        raise JobDBError(f"{where}: column energy must be a number, got {shown(energy)}")
    decoded = {}
    for name in ("resources", "footprint", "energy_footprint", "meta_data"):
        try:
            decoded[name] = _decode_column(name, r.get(name))
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError included
            raise JobDBError(f"{where}: column {name} is invalid: {e}") from e
    return Job(
        cluster=r["cluster"], sub_cluster=r["subcluster"], job_id=r["job_id"], start_time=r["start_time"],
        user=r["hpc_user"], project=r["project"], resources=decoded["resources"] or [],
        num_nodes=r["num_nodes"],
        partition=r["cluster_partition"] or "", shared=r["shared"], job_state=r["job_state"], tags=tags or [],
        energy_footprint=decoded["energy_footprint"], footprint=decoded["footprint"], meta_data=decoded["meta_data"],
        energy=float(energy or 0.0), array_job_id=r["array_job_id"] or 0, walltime=r["walltime"] or 0,
        duration=r["duration"] or 0, smt=r["smt"] or 0, monitoring_status=r["monitoring_status"],
        num_acc=r["num_acc"] or 0, num_hwthreads=r["num_hwthreads"] or 0, id=r["id"],
        submit_time=r.get("submit_time") or 0,
    )


def _reopen(path: str, busy_timeout_ms: int) -> JobDB:
    return JobDB(path, busy_timeout_ms=busy_timeout_ms)


class JobDB:
    """cc-backend's job database (schema v11); safe to use from several threads and processes."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 60000) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise JobDBError(f"job DB {self.path} does not exist")
        if not self.path.is_file():
            raise JobDBError(f"job DB {self.path} is not a file")
        self._conns = SQLiteConnections(self.path, busy_timeout_ms=busy_timeout_ms)
        self._check_version()

    def __reduce__(self) -> tuple[Callable[..., JobDB], tuple[str, int]]:
        # Pickled (e.g. to a spawned worker) as path + timeout; the child opens its own connections.
        return _reopen, (str(self.path), self._conns.busy_timeout_ms)

    def __enter__(self) -> JobDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close this process's connections."""
        self._conns.close()

    def _check_version(self) -> None:
        try:
            rows = self._conns.get().execute("SELECT version, dirty FROM schema_migrations").fetchall()
        except sqlite3.DatabaseError as e:
            self.close()
            if "no such table" in str(e):
                raise JobDBError(f"job DB {self.path} has no schema_migrations table; it is not a cc-backend "
                                 f"job database (ccarchive needs schema version {SCHEMA_VERSION})") from e
            raise JobDBError(f"job DB {self.path} cannot be read: {e}") from e
        if len(rows) != 1:
            self.close()
            raise JobDBError(f"job DB {self.path} has {len(rows)} rows in schema_migrations; ccarchive needs "
                             f"exactly one with version {SCHEMA_VERSION} — run cc-backend -migrate-db")
        version, dirty = rows[0]
        dirty = int(dirty or 0)
        if version == SCHEMA_VERSION and not dirty:
            return
        self.close()
        if dirty:
            hint = "the last migration failed; fix the DB, then run cc-backend -force-db"
        elif isinstance(version, int) and version > SCHEMA_VERSION:
            hint = "this job DB is newer than ccarchive supports"
        else:
            hint = "run cc-backend -migrate-db"
        raise JobDBError(f"job DB {self.path} has schema version {version} (dirty={dirty}); "
                         f"ccarchive needs version {SCHEMA_VERSION} — {hint}")

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, busy_timeout_ms: int = 60000) -> JobDB:
        """Create an empty job DB with exactly cc-backend's v11 schema; never overwrites data."""
        p = Path(path)
        if p.exists() and p.stat().st_size > 0:
            raise JobDBError(f"job DB {p} already exists and is not empty; refusing to overwrite it")
        if not p.parent.is_dir():
            raise JobDBError(f"job DB {p}: directory {p.parent} does not exist")
        ddl = _resources.files("ccarchive").joinpath("jobdb_schema.sql").read_text(encoding="utf-8")
        conns = SQLiteConnections(p, busy_timeout_ms=busy_timeout_ms, create=True)
        try:
            conn = conns.get()
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                raise JobDBError(f"job DB {p} already has tables; refusing to overwrite it")
            conn.executescript("BEGIN IMMEDIATE;\n" + ddl + "\nCOMMIT;")
        except sqlite3.Error as e:
            raise conns.error(e, "cannot create schema") from e
        finally:
            conns.close()
        return cls(p, busy_timeout_ms=busy_timeout_ms)

    def get_job(self, db_id: int) -> Job:
        """The job with this ``job.id``, tags included; :class:`JobNotFoundError` if absent."""
        with self._conns.read("get job") as conn:
            row = conn.execute(_SELECT + " WHERE job.id = ?", (db_id,)).fetchone()
            if row is None:
                raise JobNotFoundError(f"job DB {self.path} has no job with id {db_id}")
            return self._jobs(conn, [row])[0]

    def find_job(self, job_id: int, cluster: str, start_time: int) -> Job | None:
        """Look a job up by its archive identity (uses the UNIQUE autoindex)."""
        with self._conns.read("find job") as conn:
            row = conn.execute(_SELECT + " WHERE job.job_id = ? AND job.cluster = ? AND job.start_time = ?",
                               (job_id, cluster, start_time)).fetchone()
            return None if row is None else self._jobs(conn, [row])[0]

    def iter_jobs_between(
        self, start_from: int, start_to: int, *, states: Iterable[str] | None = None
    ) -> Iterator[Job]:
        """Jobs with ``start_from <= start_time <= start_to`` in (start_time, id) order, paged so
        no transaction stays open between yields."""
        state_list = None if states is None else [states] if isinstance(states, str) else list(states)
        where = "job.start_time BETWEEN ? AND ? AND (job.start_time, job.id) > (?, ?)"
        if state_list is not None:
            if not state_list:
                return
            where += f" AND job.job_state IN ({', '.join('?' * len(state_list))})"
        sql = f"{_SELECT} WHERE {where} ORDER BY job.start_time, job.id LIMIT {_BATCH}"
        last = (start_from - 1, 0)
        while True:
            with self._conns.read("list jobs") as conn:
                rows = conn.execute(sql, (start_from, start_to, *last, *(state_list or ()))).fetchall()
                jobs = self._jobs(conn, rows)
            yield from jobs
            if len(rows) < _BATCH:
                return
            last = (rows[-1][6], rows[-1][0])

    def pending_jobs(
        self, *, now: float, grace_s: float, horizon_s: float, limit: int | None = None
    ) -> list[int]:
        """Ids of stopped jobs still waiting for archiving (``monitoring_status = 1``) that stopped
        more than ``grace_s`` ago and started less than ``horizon_s`` ago."""
        sql = PENDING_JOBS_SQL + ("" if limit is None else f" LIMIT {int(limit)}")
        with self._conns.read("list pending jobs") as conn:
            return [r[0] for r in conn.execute(sql, (now - horizon_s, now - grace_s))]

    def failed_jobs(self, cluster: str | None = None, since: int | None = None) -> list[int]:
        """Ids of jobs whose archiving failed (``monitoring_status = 2``), optionally only of one
        cluster and with ``start_time >= since``."""
        sql = "SELECT job.id FROM job WHERE job.monitoring_status = ?"
        params: list[Any] = [MONITORING_ARCHIVING_FAILED]
        if cluster is not None:
            sql, params = sql + " AND job.cluster = ?", [*params, cluster]
        if since is not None:
            sql, params = sql + " AND job.start_time >= ?", [*params, since]
        with self._conns.read("list failed jobs") as conn:
            return [r[0] for r in conn.execute(sql + " ORDER BY job.id", params)]

    def counts_by_status(self) -> dict[int, int]:
        """Number of jobs per ``monitoring_status`` (all four statuses present)."""
        counts = {s: 0 for s in range(4)}
        with self._conns.read("count jobs") as conn:
            for status, n in conn.execute("SELECT monitoring_status, count(*) FROM job GROUP BY 1"):
                counts[int(status)] = n
        return counts

    def _jobs(self, conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> list[Job]:
        tags = self._tags(conn, [r[0] for r in rows])
        return [self._job(r, tags.get(r[0], [])) for r in rows]

    @staticmethod
    def _tags(conn: sqlite3.Connection, ids: Sequence[int]) -> dict[int, list[Tag]]:
        out: dict[int, list[Tag]] = {}
        for i in range(0, len(ids), _BATCH):
            chunk = ids[i : i + _BATCH]
            for job_id, tid, ttype, name, scope in conn.execute(
                "SELECT jobtag.job_id, tag.id, tag.tag_type, tag.tag_name, tag.tag_scope FROM jobtag "
                f"JOIN tag ON tag.id = jobtag.tag_id WHERE jobtag.job_id IN ({', '.join('?' * len(chunk))}) "
                "ORDER BY jobtag.job_id, tag.id",
                chunk,
            ):
                out.setdefault(job_id, []).append(Tag(ttype, name, scope, tid))
        return out

    def _job(self, row: tuple[Any, ...], tags: list[Tag]) -> Job:
        r = dict(zip(_READ_COLUMNS, row, strict=True))
        return job_from_row(r, f"job DB {self.path}: job id {r['id']}", tags)

    def _update(self, what: str, sql: str, params: Sequence[Any], db_id: int) -> None:
        with self._conns.write(what) as conn:
            n = conn.execute(sql, params).rowcount
        if n != 1:
            raise JobNotFoundError(f"job DB {self.path} has no job with id {db_id} ({what})")

    def mark_archived(
        self, db_id: int, footprint: Mapping[str, float] | None, energy_footprint: Mapping[str, float] | None,
        energy: float,
    ) -> None:
        """Go's UpdateFootprint + UpdateEnergy + MarkArchived as one statement; JSON stored as TEXT.
        A missing map is written as ``{}`` (Go always builds the map), never NULL."""
        if not math.isfinite(energy):
            raise FormatError(f"cannot store energy {energy!r} for job id {db_id}: not a finite number")
        fp = encode_float_map(footprint or {})
        efp = encode_float_map(energy_footprint or {})
        params = (fp, efp, float(energy), MONITORING_ARCHIVED, db_id)
        self._update("mark archived", MARK_ARCHIVED_SQL, params, db_id)

    def mark_failed(self, db_id: int) -> None:
        """``monitoring_status = 2`` (archiving failed), as Go's UpdateMonitoringStatus."""
        self._update("mark failed", MARK_STATUS_SQL, (MONITORING_ARCHIVING_FAILED, db_id), db_id)

    def mark_pending(self, db_id: int) -> None:
        """Back to ``monitoring_status = 1`` so the reconciler archives the job again (retry)."""
        self._update("mark pending", MARK_STATUS_SQL, (MONITORING_RUNNING_OR_ARCHIVING, db_id), db_id)

    def insert_job(self, job: Job, *, json_as_blob: bool = True) -> int:
        """Insert a stopped job as cc-backend's start+stop path leaves it; returns its new id."""
        return self.insert_jobs([job], json_as_blob=json_as_blob)[0]

    def insert_jobs(self, jobs: Iterable[Job], *, json_as_blob: bool = True) -> list[int]:
        """Insert many jobs (and their tags) in one transaction; ``job.id`` is ignored.

        JSON columns are BLOBs like Go's ``[]byte`` parameters unless ``json_as_blob=False``;
        ``footprint``/``meta_data`` None -> ``null`` text, ``energy_footprint`` None -> SQL NULL.
        Unlike Go's start path, ``submit_time`` is stored too.
        """
        def js(text: str) -> str | bytes:
            return text.encode("utf-8") if json_as_blob else text

        ids: list[int] = []
        with self._conns.write("insert jobs") as conn:
            for job in jobs:
                efp = None if job.energy_footprint is None else js(encode_float_map(job.energy_footprint))
                params = (
                    job.job_id, job.user, job.project, job.cluster, job.sub_cluster, job.partition,
                    job.array_job_id, job.num_nodes, job.num_hwthreads, job.num_acc, job.shared,
                    job.monitoring_status, job.smt, job.job_state, job.start_time, job.duration, job.walltime,
                    js(encode_float_map(job.footprint)), float(job.energy), efp,
                    js(encode_resources(job.resources)), js(_encode_string_map(job.meta_data)),
                    job.submit_time,
                )
                try:
                    db_id = int(conn.execute(_INSERT_SQL, params).lastrowid or 0)
                except sqlite3.IntegrityError as e:
                    raise JobDBError(f"job DB {self.path} refused {job.label}: {e}") from e
                for tag in job.tags:  # the tag UNIQUE is (tag_type, tag_name), without the scope
                    conn.execute("INSERT INTO tag (tag_type, tag_name, tag_scope) VALUES (?, ?, ?) "
                                 "ON CONFLICT (tag_type, tag_name) DO NOTHING",
                                 (tag.type, tag.name, tag.scope or "global"))
                    (tag_id,) = conn.execute("SELECT id FROM tag WHERE tag_type = ? AND tag_name = ?",
                                             (tag.type, tag.name)).fetchone()
                    conn.execute("INSERT OR IGNORE INTO jobtag (job_id, tag_id) VALUES (?, ?)",
                                 (db_id, tag_id))
                ids.append(db_id)
        return ids
