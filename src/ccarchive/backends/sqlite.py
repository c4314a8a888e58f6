"""cc-backend's SQLite job archive (``{"kind": "sqlite", "db-path": ...}``), read and written.

Same file, same DDL, same semantics as cc-backend's pkg/archive/sqliteBackend.go, so
cc-backend opens what ccarchive writes and vice versa:

* one row per job in ``jobs`` keyed by ``UNIQUE(job_id, cluster, start_time)``; ``meta_json`` holds
  the exact meta.json bytes (compact JSON + ``\\n``), ``data_json`` the data.json bytes or their
  gzip, with ``data_compressed`` 1 when the encoded text incl. its newline exceeds 2000 bytes;
* writes are ``INSERT ... ON CONFLICT(job_id, cluster, start_time) DO UPDATE`` (``created_at`` is
  kept, ``updated_at`` refreshed); one statement, so a job row is never half written;
* ``clusters(name, config_json, updated_at)`` holds cluster.json; ``metadata`` the row
  ``('version', '3')``, inserted on first open and checked on every open;
* WAL journal, ``synchronous=NORMAL``, 64 MB page cache, ``busy_timeout=60000`` (several
  processes may write; a writer waits for the lock instead of failing).

Differences, all deliberate: :meth:`SqliteArchive.exists` and :meth:`iter_job_keys` count only
rows that have data (cc-backend's ``StoreJobMeta`` can create a row without it), and
:meth:`clusters` lists configured clusters as well as those with jobs (cc-backend's Init only sees
``SELECT DISTINCT cluster FROM jobs``, so a cluster with a config but no jobs is invisible to it).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

from ..cluster import Cluster, encode_cluster, load_cluster
from ..errors import ArchiveVersionError, ClusterConfigError, FormatError, InputError
from ..formats.compress import gunzip_array, gunzip_bytes, gzip_bytes, should_gzip
from ..formats.data import decode_job_data, encode_job_data
from ..formats.meta import decode_job_meta, encode_job_meta
from ..model import Job, JobData
from ..names import check_cluster_name, is_cluster_name, is_job_key
from . import ARCHIVE_VERSION, Entry, JobKey, WriteResult, job_path, key_of

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

#: cc-backend's DDL (pkg/archive/sqliteBackend.go), byte for byte
SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL,
    cluster TEXT NOT NULL,
    start_time INTEGER NOT NULL,
    meta_json BLOB NOT NULL,
    data_json BLOB,
    data_compressed BOOLEAN DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE(job_id, cluster, start_time)
);
CREATE INDEX IF NOT EXISTS idx_jobs_cluster ON jobs(cluster);
CREATE INDEX IF NOT EXISTS idx_jobs_start_time ON jobs(start_time);
CREATE INDEX IF NOT EXISTS idx_jobs_order ON jobs(cluster, start_time);
CREATE INDEX IF NOT EXISTS idx_jobs_lookup ON jobs(cluster, job_id, start_time);
CREATE TABLE IF NOT EXISTS clusters (
    name TEXT PRIMARY KEY,
    config_json BLOB NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS metadata (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA cache_size=-64000",
    "PRAGMA busy_timeout=60000",
)

_UPSERT_JOB = """
INSERT INTO jobs (job_id, cluster, start_time, meta_json, data_json, data_compressed, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(job_id, cluster, start_time) DO UPDATE SET
    meta_json = excluded.meta_json,
    data_json = excluded.data_json,
    data_compressed = excluded.data_compressed,
    updated_at = excluded.updated_at
"""
_UPSERT_META = """
INSERT INTO jobs (job_id, cluster, start_time, meta_json, created_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT(job_id, cluster, start_time) DO UPDATE SET
    meta_json = excluded.meta_json,
    updated_at = excluded.updated_at
"""
_UPSERT_CLUSTER = """
INSERT INTO clusters (name, config_json, updated_at)
VALUES (?, ?, ?)
ON CONFLICT(name) DO UPDATE SET
    config_json = excluded.config_json,
    updated_at = excluded.updated_at
"""
_WHERE_KEY = "job_id = ? AND cluster = ? AND start_time = ?"
_PAGE = 512


class SqliteArchive:
    """A cc-backend SQLite archive file with the same API as :class:`~ccarchive.backends.tree.JobArchive`."""

    stores_gzip = True

    def __init__(self, path: str, *, create: bool = False) -> None:
        if not path:
            raise InputError("SQLite archive: empty database path")
        self.path = path
        self.url = f"sqlite://{path}"
        if not create and not os.path.exists(path):
            raise InputError(f"{path}: no such SQLite archive; check the path "
                             "(ccarchive import and convert create a new archive)")
        self._lock = threading.RLock()
        self._clusters: dict[str, Cluster] = {}
        try:
            self._db = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
            for pragma in PRAGMAS:
                self._db.execute(pragma)
            self._init_schema(create)
        except sqlite3.DatabaseError as e:
            raise InputError(f"{path}: not a usable SQLite archive: {e}") from None

    def _init_schema(self, create: bool) -> None:
        tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not create and not {"jobs", "metadata"} <= tables:
            raise InputError(f"{self.path}: not a cc-backend SQLite archive (no jobs/metadata tables)")
        self._db.executescript(SCHEMA)
        row = self._db.execute("SELECT value FROM metadata WHERE key = 'version'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO metadata (key, value) VALUES ('version', ?)", (str(ARCHIVE_VERSION),))
            return
        try:
            version = int(str(row[0]))
        except ValueError:
            version = -1
        if version != ARCHIVE_VERSION:
            raise ArchiveVersionError(f"{self.url}: unsupported job archive version {str(row[0])!r}, "
                                      f"ccarchive needs {ARCHIVE_VERSION}")

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _exec(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        with self._lock:
            self._db.execute(sql, args)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> SqliteArchive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- clusters ---------------------------------------------------------------------------------
    def clusters(self) -> list[str]:
        """Clusters with a stored config or with jobs, sorted; rows other tools wrote with a name
        that is not a valid cluster name are left out (no other backend could hold them)."""
        rows = self._query("SELECT name FROM clusters UNION SELECT DISTINCT cluster FROM jobs ORDER BY 1")
        return [r[0] for r in rows if is_cluster_name(r[0])]

    def has_cluster(self, name: str) -> bool:
        return bool(self._query("SELECT 1 FROM clusters WHERE name = ?", (check_cluster_name(name),)))

    def load_cluster_bytes(self, name: str) -> bytes:
        """``config_json`` as stored; FileNotFoundError when the cluster has none."""
        rows = self._query("SELECT config_json FROM clusters WHERE name = ?", (check_cluster_name(name),))
        if not rows:
            raise FileNotFoundError(f"{self.url}: no config for cluster {name!r}")
        return _blob(rows[0][0])

    def load_cluster(self, name: str) -> Cluster:
        if name not in self._clusters:
            try:
                raw = self.load_cluster_bytes(name)
            except FileNotFoundError:
                raise ClusterConfigError(f"{self.url}: unknown cluster {name!r} (no row in clusters)") from None
            self._clusters[name] = load_cluster(raw, name_hint=f"{self.url} clusters[{name}]")
        return self._clusters[name]

    def store_cluster(self, cluster: Cluster) -> None:
        self._exec(_UPSERT_CLUSTER, (check_cluster_name(cluster.name), encode_cluster(cluster), int(time.time())))
        self._clusters[cluster.name] = cluster

    # -- writing ----------------------------------------------------------------------------------
    def write_job(self, job: Job, data: JobData) -> WriteResult:
        return self.write_encoded(job, encode_job_data(data), encode_job_meta(job))

    def write_encoded(self, job: Job | JobKey, encoded_data: bytes, meta: bytes, *,
                      gzipped: bytes | Callable[[], bytes] | None = None) -> WriteResult:
        """Upsert one job row (cc-backend's ImportJob): gzip above 2000 bytes (``gzipped``: that
        gzip, or a function returning it, when the caller compresses it already), ``created_at`` kept."""
        cluster, job_id, start = key_of(job)
        if should_gzip(len(encoded_data)):
            payload = gzip_bytes(encoded_data) if gzipped is None else gzipped() if callable(gzipped) else gzipped
            compressed, name = True, "data.json.gz"
        else:
            payload, compressed, name = bytes(encoded_data), False, "data.json"
        now = int(time.time())
        self._exec(_UPSERT_JOB, (job_id, cluster, start, bytes(meta), payload, compressed, now, now))
        return WriteResult(job_path(cluster, job_id, start), name, len(payload) + len(meta), len(encoded_data))

    def store_meta(self, job: Job) -> None:
        """cc-backend's StoreJobMeta: upsert only ``meta_json`` (a new row has no data)."""
        cluster, job_id, start = key_of(job)
        now = int(time.time())
        self._exec(_UPSERT_META, (job_id, cluster, start, encode_job_meta(job), now, now))

    def delete_job(self, job: Job | JobKey) -> None:
        cluster, job_id, start = key_of(job)
        self._exec(f"DELETE FROM jobs WHERE {_WHERE_KEY}", (job_id, cluster, start))

    # -- reading ----------------------------------------------------------------------------------
    def exists(self, job: Job | JobKey) -> bool:
        """True when the job has a row with data (a complete entry)."""
        cluster, job_id, start = key_of(job)
        return bool(self._query(f"SELECT 1 FROM jobs WHERE {_WHERE_KEY} AND data_json IS NOT NULL",
                                (job_id, cluster, start)))

    def _label(self, job: Job | JobKey) -> str:
        return job_path(*key_of(job))

    def load_meta_bytes(self, job: Job | JobKey) -> bytes:
        cluster, job_id, start = key_of(job)
        rows = self._query(f"SELECT meta_json FROM jobs WHERE {_WHERE_KEY}", (job_id, cluster, start))
        if not rows:
            raise InputError(f"{self.url}: no archived job {self._label(job)}")
        return _blob(rows[0][0])

    def load_meta(self, job: Job | JobKey) -> Job:
        try:
            return decode_job_meta(self.load_meta_bytes(job))
        except FormatError as e:
            raise FormatError(f"{self.url} {self._label(job)} meta_json: {e}") from e

    def _data_blob(self, job: Job | JobKey) -> tuple[bytes, bool]:
        """The stored ``data_json`` and whether it is gzipped."""
        cluster, job_id, start = key_of(job)
        rows = self._query(f"SELECT data_json, data_compressed FROM jobs WHERE {_WHERE_KEY}",
                           (job_id, cluster, start))
        if not rows or rows[0][0] is None:
            raise InputError(f"{self.url}: job {self._label(job)} has no data")
        return _blob(rows[0][0]), bool(rows[0][1])

    def _inflate(self, job: Job | JobKey, inflate: Callable[[bytes], Any]) -> Any:
        blob, compressed = self._data_blob(job)
        if not compressed:
            return blob
        try:
            return inflate(blob)
        except (OSError, EOFError) as e:
            raise FormatError(f"{self.url} {self._label(job)}: broken gzip in data_json: {e}") from None

    def load_data_bytes(self, job: Job | JobKey) -> bytes:
        """The data.json text (gunzipped when ``data_compressed``), as cc-backend's LoadJobData."""
        return cast(bytes, self._inflate(job, gunzip_bytes))

    def load_data_text(self, job: Job | JobKey) -> bytes | npt.NDArray[np.uint8]:
        """The data.json text in the form the decoder reads fastest (gzip inflated straight into
        a uint8 array)."""
        return cast("bytes | npt.NDArray[np.uint8]", self._inflate(job, gunzip_array))

    def load_data(self, job: Job | JobKey) -> JobData:
        raw = self.load_data_text(job)
        try:
            return decode_job_data(raw)
        except FormatError as e:
            raise FormatError(f"{self.url} {self._label(job)} data_json: {e}") from e

    def _pages(self, columns: str, cluster: str | None, complete: bool) -> Iterator[tuple[Any, ...]]:
        """Rows sorted by (cluster, job_id, start_time), fetched a page at a time (keyset paging);
        rows whose key is not valid (written by other tools) are skipped."""
        if cluster is not None:
            check_cluster_name(cluster)
        where = ["(cluster, job_id, start_time) > (?, ?, ?)"]
        if complete:
            where.append("data_json IS NOT NULL")
        if cluster is not None:
            where.append("cluster = ?")
        sql = (f"SELECT cluster, job_id, start_time, {columns} FROM jobs WHERE {' AND '.join(where)} "
               f"ORDER BY cluster, job_id, start_time LIMIT {_PAGE}")
        last: tuple[Any, ...] = ("", -(2**63), -(2**63))
        while True:
            rows = self._query(sql, (*last, *([cluster] if cluster is not None else [])))
            yield from (r for r in rows if is_job_key(tuple(r[:3])))
            if len(rows) < _PAGE:
                return
            last = rows[-1][:3]

    def iter_job_keys(self, cluster: str | None = None) -> Iterator[JobKey]:
        """Keys of complete rows (with data), sorted by cluster, jobId, startTime."""
        for c, j, s, _ in self._pages("1", cluster, complete=True):
            yield (c, int(j), int(s))

    def iter_jobs(self, cluster: str | None = None) -> Iterator[Job]:
        for c, j, s, meta in self._pages("meta_json", cluster, complete=True):
            try:
                yield decode_job_meta(_blob(meta))
            except FormatError as e:
                raise FormatError(f"{self.url} {job_path(c, j, s)} meta_json: {e}") from e

    def jobs_table(self, cluster: str | None = None, user: str | None = None, since: Any = None,
                   until: Any = None, state: str | None = None) -> Any:
        """One row per job, statistics as flat columns (:mod:`ccarchive.jobstable`), in one pass."""
        from ..jobstable import JobFilter, scan_jobs_table

        flt = JobFilter.make(self, cluster, user, since, until, state)
        return scan_jobs_table(self.iter_jobs(flt.cluster), flt)

    def list_entries(self, cluster: str) -> Iterator[Entry]:
        """Every row of a cluster as the file names it stands for (``meta.json``, ``data.json[.gz]``)."""
        for c, j, s, has_data, compressed in self._pages("data_json IS NOT NULL, data_compressed", cluster,
                                                         complete=False):
            names = ["meta.json"]
            if has_data:
                names.append("data.json.gz" if compressed else "data.json")
            yield Entry(job_path(c, j, s), (c, int(j), int(s)), sorted(names))

    def temporary_files(self) -> list[str]:
        """None: every write is one SQL statement."""
        return []


def _blob(v: Any) -> bytes:
    """A BLOB or TEXT column value as bytes (rows written by other tools may hold TEXT)."""
    return v.encode("utf-8") if isinstance(v, str) else bytes(v)
