"""ccarchive's own per-job bookkeeping: attempts, last error and retry schedule.

cc-backend's job table has room for only one bit of archiving state (``monitoring_status``), and
ccarchive must not add columns to a database it does not own.  Why a job failed, how often it was
tried and when to try again therefore live in a small separate SQLite file, keyed by the job DB id.
The parent process (triggers, ``ccarchive retry``) and the archiving worker both write it, so it
uses WAL, a busy timeout and one short ``BEGIN IMMEDIATE`` transaction per update.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import CcArchiveError, TransientError
from .jobdb import SQLiteConnections

STATE_SCHEMA_VERSION = 1
_MAX_MESSAGE = 1000

_DDL = """
CREATE TABLE IF NOT EXISTS job_state (
    db_id INTEGER PRIMARY KEY,          -- job.id in cc-backend's job DB
    attempts INTEGER NOT NULL DEFAULT 0,
    first_seen REAL NOT NULL,           -- unix seconds
    last_attempt REAL,
    last_error_reason TEXT,             -- CcArchiveError.reason
    last_error_message TEXT,            -- one line
    next_retry_at REAL,
    archived_at REAL
);
CREATE INDEX IF NOT EXISTS job_state_failed ON job_state (db_id) WHERE last_error_reason IS NOT NULL;
CREATE INDEX IF NOT EXISTS job_state_retry ON job_state (next_retry_at) WHERE next_retry_at IS NOT NULL;
"""
_COLUMNS = (
    "db_id, attempts, first_seen, last_attempt, last_error_reason, last_error_message, "
    "next_retry_at, archived_at"
)


class StateStoreError(CcArchiveError):
    """The state store file cannot be opened or written."""

    reason = "state-store"


class StateStoreBusyError(StateStoreError, TransientError):
    """The state store stayed locked longer than the busy timeout."""

    reason = "state-store-busy"


@dataclass(frozen=True)
class JobState:
    """What ccarchive knows about one job's archiving."""

    db_id: int
    attempts: int
    first_seen: float
    last_attempt: float | None
    last_error_reason: str | None
    last_error_message: str | None
    next_retry_at: float | None
    archived_at: float | None

    @property
    def failed(self) -> bool:
        return self.last_error_reason is not None


def one_line(message: str, limit: int = _MAX_MESSAGE) -> str:
    """Collapse whitespace/newlines and cut to ``limit`` characters."""
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reopen(path: str, busy_timeout_ms: int) -> StateStore:
    return StateStore(path, busy_timeout_ms=busy_timeout_ms)


class StateStore:
    """Per-job archiving state in its own SQLite file (created on first use)."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_ms: int = 60000) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise StateStoreError(f"state store {self.path}: directory {self.path.parent} does not exist")
        self._conns = SQLiteConnections(
            self.path, busy_timeout_ms=busy_timeout_ms, create=True,
            error_cls=StateStoreError, busy_cls=StateStoreBusyError, label="state store",
        )
        if self._version() != STATE_SCHEMA_VERSION:  # only a new file needs the write lock
            with self._conns.write("create schema") as conn:
                self._version()
                for stmt in filter(str.strip, _DDL.split(";")):
                    conn.execute(stmt)
                conn.execute(f"PRAGMA user_version = {STATE_SCHEMA_VERSION}")

    def _version(self) -> int:
        try:
            version = int(self._conns.get().execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.Error as e:
            raise self._conns.error(e, "cannot read") from e
        if version not in (0, STATE_SCHEMA_VERSION):
            raise StateStoreError(f"state store {self.path} has version {version}; "
                                  f"this ccarchive needs {STATE_SCHEMA_VERSION}")
        return version

    def __reduce__(self) -> tuple[Callable[..., StateStore], tuple[str, int]]:
        return _reopen, (str(self.path), self._conns.busy_timeout_ms)

    def __enter__(self) -> StateStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close this process's connections."""
        self._conns.close()

    @staticmethod
    def _ensure(conn: sqlite3.Connection, db_id: int, now: float) -> None:
        conn.execute(
            "INSERT INTO job_state (db_id, first_seen) VALUES (?, ?) ON CONFLICT (db_id) DO NOTHING",
            (db_id, now),
        )

    def record_attempt(self, db_id: int, *, now: float | None = None) -> int:
        """Count one more archiving attempt; returns the number of attempts so far."""
        t = time.time() if now is None else now
        with self._conns.write("record attempt") as conn:
            self._ensure(conn, db_id, t)
            conn.execute(
                "UPDATE job_state SET attempts = attempts + 1, last_attempt = ? WHERE db_id = ?", (t, db_id)
            )
            return int(conn.execute("SELECT attempts FROM job_state WHERE db_id = ?", (db_id,)).fetchone()[0])

    def record_failure(
        self, db_id: int, reason: str, message: str, next_retry_at: float | None = None, *,
        now: float | None = None,
    ) -> None:
        """Remember why the last attempt failed and when (if ever) to retry automatically."""
        t = time.time() if now is None else now
        with self._conns.write("record failure") as conn:
            self._ensure(conn, db_id, t)
            conn.execute(
                "UPDATE job_state SET last_error_reason = ?, last_error_message = ?, next_retry_at = ?, "
                "archived_at = NULL WHERE db_id = ?",
                (reason or "error", one_line(message), next_retry_at, db_id),
            )

    def record_success(self, db_id: int, *, now: float | None = None) -> None:
        """Mark the job archived; clears the error and the retry schedule."""
        t = time.time() if now is None else now
        with self._conns.write("record success") as conn:
            self._ensure(conn, db_id, t)
            conn.execute(
                "UPDATE job_state SET archived_at = ?, last_error_reason = NULL, last_error_message = NULL, "
                "next_retry_at = NULL WHERE db_id = ?",
                (t, db_id),
            )

    def reset(self, db_id: int) -> bool:
        """Forget attempts, error and schedule (manual retry); False if the job was unknown."""
        with self._conns.write("reset") as conn:
            n = conn.execute(
                "UPDATE job_state SET attempts = 0, last_attempt = NULL, last_error_reason = NULL, "
                "last_error_message = NULL, next_retry_at = NULL, archived_at = NULL WHERE db_id = ?",
                (db_id,),
            ).rowcount
        return n == 1

    def get(self, db_id: int) -> JobState | None:
        """The state of one job, or None if ccarchive never saw it."""
        with self._conns.read("get") as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM job_state WHERE db_id = ?", (db_id,)).fetchone()
        return None if row is None else JobState(*row)

    def failures(self) -> list[JobState]:
        """Jobs whose last attempt failed, by id, with reason and message."""
        with self._conns.read("list failures") as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM job_state WHERE last_error_reason IS NOT NULL ORDER BY db_id"
            ).fetchall()
        return [JobState(*r) for r in rows]

    def due_retries(self, now: float | None = None) -> list[int]:
        """Ids of failed jobs whose ``next_retry_at`` has passed, earliest first."""
        t = time.time() if now is None else now
        with self._conns.read("list due retries") as conn:
            return [r[0] for r in conn.execute(
                "SELECT db_id FROM job_state WHERE next_retry_at IS NOT NULL AND next_retry_at <= ? "
                "ORDER BY next_retry_at, db_id",
                (t,),
            )]
