"""cc-backend's stop_job, reproduced against the shared SQLite job DB, so ccarchive can own the stop path.

What cc-backend does (internal/api/job.go ``stopJobByRequest``/``checkAndHandleStopJob``,
repository/jobFind.go, jobCreate.go; docs/compatibility.md):

1. decode ``StopJobAPIRequest`` strictly (unknown fields are an error; ``jobId`` required);
2. look the job up in ``job_cache`` first, then in ``job`` (``WHERE job_id = ? [AND cluster = ?]
   [AND start_time = ?] ORDER BY id DESC LIMIT 1``); none -> 404;
3. ``job_state <> 'running'`` -> 422; ``startTime > stopTime`` -> 400; unknown ``jobState`` -> 400,
   empty -> ``completed``;
4. a cached job is moved into ``job`` (``INSERT INTO job (...) SELECT ... FROM job_cache WHERE id = ?;
   DELETE FROM job_cache WHERE id = ?``), then ``UPDATE job SET job_state = ?, duration = ?,
   monitoring_status = ? WHERE job.id = ?`` (monitoring_status unchanged);
5. answer 200 with the job; archive it unless ``monitoring_status = 0``.

Here steps 2-4 run in **one** ``BEGIN IMMEDIATE`` transaction, so two stops of the same job cannot
both pass the running check (cc-backend's in-process mutex does not reach another process), and the
transaction is committed before anything waits for the archiving queue.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from ..formats.gojson import fits_go_int
from ..jobdb import JOB_COLUMNS, SQLiteConnections, job_from_row
from ..model import JOB_STATES, MONITORING_DISABLED, Job

_FIELDS = {"jobid": "jobId", "cluster": "cluster", "starttime": "startTime", "jobstate": "jobState",
           "stoptime": "stopTime"}
#: Columns cc-backend's ``TransferCachedJobToMain`` copies from job_cache to job (jobCreate.go).
_TRANSFER_COLUMNS = (
    "job_id, cluster, subcluster, start_time, hpc_user, project, cluster_partition, array_job_id, num_nodes, "
    "num_hwthreads, num_acc, shared, monitoring_status, smt, job_state, duration, walltime, footprint, energy, "
    "energy_footprint, resources, meta_data"
)


class StopJobError(Exception):
    """A stop request cc-backend would refuse; ``status`` is its HTTP status code."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class StopRequest:
    """cc-backend's ``StopJobAPIRequest``."""

    job_id: int
    cluster: str | None
    start_time: int | None
    state: str
    stop_time: int


@dataclass(frozen=True)
class StoppedJob:
    """The job as cc-backend returns it after the stop (``Find`` columns), and whether to archive it."""

    job: Job
    archive: bool
    transferred_from_cache: bool

    @property
    def db_id(self) -> int:
        assert self.job.id is not None
        return self.job.id


class _Pairs(list):  # type: ignore[type-arg]
    """A JSON object as its (key, value) pairs, so duplicate and case-folded keys can be handled."""


def _json_type(v: Any) -> str:
    if isinstance(v, _Pairs):
        return "object"
    return {list: "array", str: "string", bool: "bool", type(None): "null"}.get(type(v), "number")


def _reject_constant(name: str) -> None:
    raise ValueError(f"invalid JSON number {name}")


def _has_surrogate(text: str) -> bool:
    """JSON's ``\ud800`` escapes decode to lone surrogates, which no database or encoder accepts."""
    return any("\ud800" <= c <= "\udfff" for c in text)


def _quoted(text: str, limit: int = 80) -> str:
    """A client's string for an error message: ASCII-escaped (also lone surrogates), shortened."""
    shown = json.dumps(text[:limit])
    return shown + ("..." if len(text) > limit else "")


def parse_stop_request(body: bytes | str) -> StopRequest:
    """Decode a stop payload like Go's ``json.Decoder`` with ``DisallowUnknownFields`` (keys match
    case-insensitively, ``null`` leaves a field unset); raises :class:`StopJobError` (400)."""
    def bad(msg: str) -> StopJobError:
        return StopJobError(400, f"parsing request body failed: {msg}")

    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        obj = json.loads(text, object_pairs_hook=_Pairs, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise bad("body is not UTF-8") from None
    except json.JSONDecodeError as e:
        raise bad(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except ValueError as e:
        raise bad(str(e)) from None
    except RecursionError:
        raise bad("JSON nested too deeply (a stop request is one flat object)") from None
    if not isinstance(obj, _Pairs):
        raise bad(f"json: cannot unmarshal {_json_type(obj)} into Go value of type api.StopJobAPIRequest")
    values: dict[str, Any] = {}
    for key, value in obj:
        name = _FIELDS.get(key.lower())
        if name is None:
            raise bad(f"json: unknown field {_quoted(key)}")
        if isinstance(value, str) and _has_surrogate(value):
            raise bad(f"field {name}: string {_quoted(value)} holds an unpaired UTF-16 surrogate escape, "
                      "which is not text")
        values[name] = value

    def integer(name: str) -> int | None:
        v = values.get(name)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not fits_go_int(v):
            what = "number " + json.dumps(v) if type(v) in (int, float) else _json_type(v)
            raise bad(f"json: cannot unmarshal {what} into Go struct field StopJobAPIRequest.{name} of type int64")
        return v

    def string(name: str) -> str | None:
        v = values.get(name)
        if v is not None and not isinstance(v, str):
            raise bad(f"json: cannot unmarshal {_json_type(v)} into Go struct field "
                      f"StopJobAPIRequest.{name} of type string")
        return v

    job_id = integer("jobId")
    if job_id is None:
        raise StopJobError(400, "the field 'jobId' is required")
    return StopRequest(job_id=job_id, cluster=string("cluster"), start_time=integer("startTime"),
                       state=string("jobState") or "", stop_time=integer("stopTime") or 0)


def _job_from_row(row: tuple[Any, ...]) -> Job:
    """A ``Job`` from ``JOB_COLUMNS`` (what cc-backend's ``scanJob`` reads: no meta_data, tags,
    submit_time or energy_footprint)."""
    r = dict(zip(JOB_COLUMNS, row, strict=True))
    return job_from_row(r, f"job DB: id {r['id']}")


def _find(conn: sqlite3.Connection, table: str, req: StopRequest) -> tuple[Any, ...] | None:
    sql = f"SELECT {', '.join(f'{table}.{c}' for c in JOB_COLUMNS)} FROM {table} WHERE {table}.job_id = ?"
    params: list[Any] = [req.job_id]
    if req.cluster is not None:
        sql, params = sql + f" AND {table}.cluster = ?", [*params, req.cluster]
    if req.start_time is not None:
        sql, params = sql + f" AND {table}.start_time = ?", [*params, req.start_time]
    row: tuple[Any, ...] | None = conn.execute(sql + f" ORDER BY {table}.id DESC LIMIT 1", params).fetchone()
    return row


def _describe(req: StopRequest) -> str:
    parts = [f"jobId {req.job_id}"]
    if req.cluster is not None:
        parts.append(f"cluster {req.cluster!r}")
    if req.start_time is not None:
        parts.append(f"startTime {req.start_time}")
    return ", ".join(parts)


class StopJobService:
    """Runs stop requests against the job DB (thread-safe: one connection per thread)."""

    def __init__(self, job_db: str, *, busy_timeout_ms: int = 60000) -> None:
        self._conns = SQLiteConnections(job_db, busy_timeout_ms=busy_timeout_ms)

    def close(self) -> None:
        self._conns.close()

    def stop(self, req: StopRequest) -> StoppedJob:
        """Steps 2-4 of the module docstring in one transaction; :class:`StopJobError` with
        cc-backend's status code when the request is refused (nothing is changed then)."""
        with self._conns.write("stop job") as conn:
            cached = True
            row = _find(conn, "job_cache", req)
            if row is None:
                cached, row = False, _find(conn, "job", req)
            if row is None:
                raise StopJobError(404, f"finding job failed: no job with {_describe(req)} in job_cache or job")
            job = _job_from_row(row)
            where = f"jobId {job.job_id} (id {job.id}) on {job.cluster}"
            if job.job_state != "running":
                raise StopJobError(422, f"{where} : job has already been stopped (state is: {job.job_state})")
            if job.start_time > req.stop_time:
                raise StopJobError(400, f"{where} : stopTime {req.stop_time} must be larger/equal than "
                                        f"startTime {job.start_time}")
            state = req.state or "completed"
            if state not in JOB_STATES:
                raise StopJobError(400, f"{where} : invalid requested job state: {req.state!r} "
                                        f"(valid: {', '.join(JOB_STATES)})")
            db_id = job.id
            if cached:
                db_id = self._transfer(conn, job)
            duration = req.stop_time - job.start_time
            conn.execute("UPDATE job SET job_state = ?, duration = ?, monitoring_status = ? WHERE job.id = ?",
                         (state, duration, job.monitoring_status, db_id))
            after = conn.execute(f"SELECT {', '.join(f'job.{c}' for c in JOB_COLUMNS)} FROM job WHERE job.id = ?",
                                 (db_id,)).fetchone()
        stopped = _job_from_row(after)
        return StoppedJob(stopped, stopped.monitoring_status != MONITORING_DISABLED, cached)

    @staticmethod
    def _transfer(conn: sqlite3.Connection, job: Job) -> int:
        """``TransferCachedJobToMain``; when cc-backend's commit worker already copied the row (it
        deletes the cache rows after inserting), the copy in ``job`` is the one to stop."""
        try:
            cur = conn.execute(f"INSERT INTO job ({_TRANSFER_COLUMNS}) SELECT {_TRANSFER_COLUMNS} "
                               "FROM job_cache WHERE id = ?", (job.id,))
            new_id = int(cur.lastrowid or 0)
        except sqlite3.IntegrityError:
            row = conn.execute("SELECT job.id, job.job_state FROM job WHERE job.job_id = ? AND job.cluster = ? "
                               "AND job.start_time = ?", (job.job_id, job.cluster, job.start_time)).fetchone()
            if row is None:
                raise
            if row[1] != "running":
                raise StopJobError(422, f"jobId {job.job_id} (id {row[0]}) on {job.cluster} : job has already "
                                        f"been stopped (state is: {row[1]})") from None
            new_id = int(row[0])
        conn.execute("DELETE FROM job_cache WHERE id = ?", (job.id,))
        return new_id


def job_json(job: Job) -> bytes:
    """The 200 response body: Go's ``json.NewEncoder(rw).Encode(job)`` of the stopped job."""
    from ..formats.meta import encode_job_meta

    return encode_job_meta(job)
