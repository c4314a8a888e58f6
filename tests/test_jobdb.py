"""Job database (cc-backend schema v11) and ccarchive's state store, on real SQLite files."""

from __future__ import annotations

import json
import multiprocessing
import pickle
import sqlite3
import threading
from pathlib import Path

import pytest

from ccarchive import jobdb
from ccarchive.jobdb import JobDB, JobDBError, JobNotFoundError
from ccarchive.model import Job, Resource, Tag
from ccarchive.statestore import StateStore

# The columns cc-backend's scanJob reads (internal/repository/job.go jobColumns).
GO_READ = (
    "SELECT id, job_id, hpc_user, project, cluster, subcluster, start_time, cluster_partition, array_job_id, "
    "num_nodes, num_hwthreads, num_acc, shared, monitoring_status, smt, job_state, duration, walltime, "
    "resources, footprint, energy FROM job"
)
JOB_COLUMNS_V11 = [
    "id", "job_id", "cluster", "subcluster", "submit_time", "start_time", "hpc_user", "project",
    "cluster_partition", "array_job_id", "duration", "walltime", "job_state", "meta_data", "resources",
    "num_nodes", "num_hwthreads", "num_acc", "smt", "shared", "monitoring_status", "energy",
    "energy_footprint", "footprint",
]
NOW = 1_700_000_000


def make_job(i: int = 0, **kw) -> Job:
    base = dict(
        cluster="fritz", sub_cluster="main", job_id=100000 + i, start_time=NOW - 7200 + i, user="k106eb10",
        project="k106eb", partition="singlenode", num_nodes=1, num_hwthreads=72, walltime=86340, duration=600,
        job_state="completed", shared="none", monitoring_status=1, smt=0,
        resources=[Resource(hostname=f"f{i:04d}")],
    )
    base.update(kw)
    return Job(**base)


@pytest.fixture
def db(tmp_path: Path) -> JobDB:
    d = JobDB.create(tmp_path / "job.db")
    yield d
    d.close()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, timeout=60, isolation_level=None)


# --------------------------------------------------------------------------- schema, open, version


def test_create_has_cc_backend_v11_schema_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "job.db"
    JobDB.create(path).close()
    c = raw(path)
    tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"job", "job_cache", "tag", "jobtag", "hpc_user", "configuration", "node", "node_state",
                      "schema_migrations"}
    assert [r[1] for r in c.execute("PRAGMA table_info(job)")] == JOB_COLUMNS_V11
    job_idx = {r[0]: r[1] for r in c.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name='job' AND sql IS NOT NULL")}
    assert len(job_idx) == 54
    assert "WHERE job_state = 'running'" in job_idx["jobs_running_user_stats"]
    assert {"jobs_starttime", "jobs_cluster_jobstate_subcluster_stats",
            "jobs_cluster_user_starttime_stats"} <= set(job_idx)
    assert "jobs_duration" not in job_idx and "jobs_cluster_jobstate_user" not in job_idx  # dropped by 11
    assert c.execute("SELECT version, dirty FROM schema_migrations").fetchall() == [(11, 0)]
    assert "'global'" in c.execute("SELECT sql FROM sqlite_master WHERE name='tag'").fetchone()[0]
    c.close()
    with JobDB(path) as again:
        assert again.counts_by_status() == {0: 0, 1: 0, 2: 0, 3: 0}
    assert raw(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent


def test_create_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "job.db"
    JobDB.create(path).close()
    with pytest.raises(JobDBError, match="already exists and is not empty"):
        JobDB.create(path)
    empty = tmp_path / "empty.db"
    empty.touch()
    JobDB.create(empty).close()  # an empty file is fine


def _set_version(path: Path, version: int, dirty: int) -> None:
    c = raw(path)
    c.execute("UPDATE schema_migrations SET version = ?, dirty = ?", (version, dirty))
    c.close()


@pytest.mark.parametrize(
    ("version", "dirty", "tail"),
    [
        (10, 0, "has schema version 10 (dirty=0); ccarchive needs version 11 — run cc-backend -migrate-db"),
        (11, 1, "has schema version 11 (dirty=1); ccarchive needs version 11 — the last migration failed; "
                "fix the DB, then run cc-backend -force-db"),
        (12, 0, "has schema version 12 (dirty=0); ccarchive needs version 11 — this job DB is newer than "
                "ccarchive supports"),
    ],
)
def test_version_check_messages(tmp_path: Path, version: int, dirty: int, tail: str) -> None:
    path = tmp_path / "job.db"
    JobDB.create(path).close()
    _set_version(path, version, dirty)
    with pytest.raises(JobDBError) as ei:
        JobDB(path)
    assert str(ei.value) == f"job DB {path} {tail}"
    assert ei.value.reason == "job-db"


def test_missing_table_missing_file_not_a_db(tmp_path: Path) -> None:
    path = tmp_path / "job.db"
    JobDB.create(path).close()
    c = raw(path)
    c.execute("DROP TABLE schema_migrations")
    c.close()
    with pytest.raises(JobDBError) as ei:
        JobDB(path)
    assert str(ei.value) == (f"job DB {path} has no schema_migrations table; it is not a cc-backend job "
                             "database (ccarchive needs schema version 11)")
    missing = tmp_path / "nope" / "job.db"
    with pytest.raises(JobDBError) as ei:
        JobDB(missing)
    assert str(ei.value) == f"job DB {missing} does not exist"
    assert not missing.exists()
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JobDBError, match="file is not a database") as ei:
        JobDB(junk)
    assert "\n" not in str(ei.value)


# --------------------------------------------------------------------------- reading / inserting


def test_insert_get_round_trip_blob_json(db: JobDB) -> None:
    job = make_job(
        resources=[Resource("a0128", hwthreads=[112, 113], accelerators=["00000000:E1:00.0"]),
                   Resource("a0129", configuration="cfg")],
        num_nodes=2, num_acc=1, array_job_id=77, submit_time=NOW - 9000, energy=1.5,
        meta_data={"jobName": "a<b>&c", "jobScript": "#!/bin/bash\nsrun x"},
        footprint={"flops_any_avg": 0.0, "cpu_load_avg": 36.87},
        tags=[Tag("app", "vasp"), Tag("jobClass", "lowload", "admin")],
    )
    db_id = db.insert_job(job)
    got = db.get_job(db_id)
    assert got.id == db_id
    for f in ("cluster", "sub_cluster", "job_id", "start_time", "user", "project", "partition",
              "num_nodes", "num_hwthreads", "num_acc", "array_job_id", "walltime", "duration", "job_state",
              "shared", "smt", "monitoring_status", "meta_data", "footprint", "submit_time", "energy",
              "resources"):
        assert getattr(got, f) == getattr(job, f), f
    assert got.energy_footprint is None
    assert [(t.type, t.name, t.scope) for t in got.tags] == [
        ("app", "vasp", "global"), ("jobClass", "lowload", "admin")]
    assert all(t.id > 0 for t in got.tags)
    c = raw(db.path)
    row = c.execute("SELECT typeof(resources), typeof(meta_data), typeof(footprint), energy_footprint, "
                    "resources FROM job WHERE id = ?", (db_id,)).fetchone()
    assert row[:4] == ("blob", "blob", "blob", None)
    assert row[4] == (b'[{"hostname":"a0128","hwthreads":[112,113],"accelerators":["00000000:E1:00.0"]},'
                      b'{"hostname":"a0129","configuration":"cfg"}]')
    assert db.find_job(job.job_id, "fritz", job.start_time).id == db_id
    assert db.find_job(job.job_id, "alex", job.start_time) is None


def test_reads_rows_written_like_go(db: JobDB) -> None:
    """Rows inserted with raw SQL: []byte parameters (BLOB) as Go's start path, TEXT as the updates."""
    c = raw(db.path)
    cols = ("job_id, cluster, subcluster, start_time, hpc_user, project, cluster_partition, array_job_id, "
            "duration, walltime, job_state, meta_data, resources, num_nodes, num_hwthreads, num_acc, smt, "
            "shared, monitoring_status, energy, energy_footprint, footprint")
    ins = f"INSERT INTO job ({cols}) VALUES ({', '.join('?' * 22)})"
    c.execute(ins, (679694, "alex", "a40", 1675777167, "iwi5056h", "iwi5", "a40", 0, 83, 86340, "completed",
                    b'{"jobName":"retrain_SNN"}', b'[{"hostname":"a0128","hwthreads":[112,113]}]',
                    1, 16, 1, 0,
                    "multi_user", 3, 0.0, b'{"acc_power":0,"cpu_power":0}',
                    b'{"cpu_load_avg":36.87,"flops_any_avg":0}'))
    c.execute(ins, (1, "fritz", "main", 1675777168, "u", "p", None, None, 60, 100, "failed", None,
                    '[{"hostname":"f0001"}]', 1, None, None, 1, "none", 1, 0.0, None, "null"))
    ids = [r[0] for r in c.execute("SELECT id FROM job ORDER BY id")]
    a, b = db.get_job(ids[0]), db.get_job(ids[1])
    assert a.meta_data == {"jobName": "retrain_SNN"}
    assert a.resources == [Resource("a0128", hwthreads=[112, 113])]
    assert a.footprint == {"cpu_load_avg": 36.87, "flops_any_avg": 0.0}
    assert a.energy_footprint == {"acc_power": 0.0, "cpu_power": 0.0} and a.shared == "multi_user"
    assert b.meta_data is None and b.footprint is None and b.energy_footprint is None
    assert (b.partition, b.array_job_id, b.num_hwthreads, b.num_acc) == ("", 0, 0, 0)
    c.execute("UPDATE job SET resources = '[{\"hostname\":1}]' WHERE id = ?", (ids[1],))
    with pytest.raises(JobDBError, match=f"job id {ids[1]}: column resources is invalid: not an array"):
        db.get_job(ids[1])
    with pytest.raises(JobNotFoundError, match="has no job with id 999"):
        db.get_job(999)


@pytest.mark.parametrize(("column", "value", "message"), [
    ("start_time", "abc", "column start_time must be an integer, got 'abc'"),
    ("duration", 1.5, "column duration must be an integer, got 1.5"),
    ("num_nodes", b"\x01", "column num_nodes must be an integer"),
    ("cluster_partition", b"\xff", "column cluster_partition must be text"),
    ("energy", "x", "column energy must be a number, got 'x'"),
    ("resources", '[{"hostname":"f0001","hwthreads":["a"]}]', "hwthreads of 'f0001' are not an array of integers"),
    ("resources", '[{"hostname":"f0001","accelerators":[1]}]', "accelerators of 'f0001' are not an array of strings"),
    ("resources", b"\xff\xfe", "column resources is invalid: 'utf-8' codec"),
    ("footprint", '{"a": 1e999}', "column footprint is invalid: not an object of finite numbers"),
    ("footprint", "{", "column footprint is invalid: Expecting property name"),
])
def test_a_row_of_the_wrong_types_is_a_one_line_job_db_error(db: JobDB, column: str, value: object,
                                                              message: str) -> None:
    """SQLite keeps any value in any column: a row another program wrote with a string where Go
    scans an int64 names its job and column instead of failing later with a TypeError."""
    (db_id,) = db.insert_jobs([make_job()])
    with raw(db.path) as c:
        c.execute(f"UPDATE job SET {column} = ? WHERE id = ?", (value, db_id))
    with pytest.raises(JobDBError, match=f"job id {db_id}: ") as info:
        db.get_job(db_id)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_mark_archived_writes_exactly_four_columns(db: JobDB) -> None:
    db_id = db.insert_job(make_job(footprint=None, meta_data={"jobName": "x"}))
    c = raw(db.path)
    c.row_factory = sqlite3.Row
    before = dict(c.execute("SELECT * FROM job WHERE id = ?", (db_id,)).fetchone())
    statements: list[str] = []
    db._conns.get().set_trace_callback(statements.append)
    db.mark_archived(db_id, {"mem_bw_avg": 28.215, "flops_any_avg": 0.0, "cpu_load_avg": 36.87},
                     {"cpu_power": 0.12, "acc_power": 0}, 0.12)
    db._conns.get().set_trace_callback(None)
    updates = [s for s in statements if s.startswith("UPDATE")]
    assert len(updates) == 1 and updates[0].startswith("UPDATE job SET footprint = ")
    assert jobdb.MARK_ARCHIVED_SQL == (
        "UPDATE job SET footprint = ?, energy_footprint = ?, energy = ?, monitoring_status = ? "
        "WHERE job.id = ?")
    after = dict(c.execute("SELECT * FROM job WHERE id = ?", (db_id,)).fetchone())
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"footprint", "energy_footprint", "energy", "monitoring_status"}
    assert after["footprint"] == '{"cpu_load_avg":36.87,"flops_any_avg":0,"mem_bw_avg":28.215}'
    assert after["energy_footprint"] == '{"acc_power":0,"cpu_power":0.12}'
    assert (after["energy"], after["monitoring_status"]) == (0.12, 3)
    types = c.execute("SELECT typeof(footprint), typeof(energy_footprint) FROM job WHERE id = ?",
                      (db_id,)).fetchone()
    assert tuple(types) == ("text", "text")
    assert list(json.loads(after["footprint"])) == ["cpu_load_avg", "flops_any_avg", "mem_bw_avg"]
    db.mark_archived(db_id, None, None, 0.0)  # never NULL
    row = c.execute("SELECT footprint, energy_footprint FROM job WHERE id = ?", (db_id,)).fetchone()
    assert tuple(row) == ("{}", "{}")
    with pytest.raises(JobNotFoundError):
        db.mark_archived(424242, {}, {}, 0.0)


def _wal_frames_after_updates(path: Path, ids: list[int]) -> int:
    """Mark every job archived (one commit each, a few WAL pages) and return the frames then in
    the WAL (what no checkpoint has reset yet)."""
    d = JobDB(path)
    try:
        for i in ids:
            d.mark_archived(i, {"cpu_load_avg": float(i)}, {}, 0.0)
    finally:
        d.close()
    with raw(path) as c:
        return int(c.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])


def test_background_checkpointer_takes_checkpoints_out_of_this_process_commits(tmp_path: Path) -> None:
    path = tmp_path / "job.db"
    with JobDB.create(path) as d:
        ids = d.insert_jobs([make_job(i) for i in range(800)])
    # SQLite's default: a commit that finds more than 1000 pages in the WAL checkpoints it
    assert _wal_frames_after_updates(path, ids[:400]) < 1100
    checkpointer = jobdb.WalCheckpointer(path, interval_s=3600).start()  # its thread only checkpoints at stop
    try:
        with JobDB(path) as d:
            assert d._conns.get().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        frames = _wal_frames_after_updates(path, ids[400:])  # (the test's own check copies them)
        assert frames > 1200  # none of the 400 commits checkpointed
        assert checkpointer.checkpointed == 0
        with JobDB(path) as d:  # more to do for the checkpointer's last round
            d.mark_archived(ids[0], {}, {}, 0.0)
    finally:
        checkpointer.stop()
    assert checkpointer.checkpointed > 0  # its thread's last checkpoint at stop
    with JobDB(path) as d:  # stopped: new connections checkpoint as SQLite does by default again
        assert d._conns.get().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1000
        assert d.get_job(ids[-1]).monitoring_status == 3


def test_status_changes_and_go_read_path(db: JobDB) -> None:
    ids = db.insert_jobs([make_job(i) for i in range(6)])
    ids.append(db.insert_job(make_job(50, footprint=None, meta_data=None), json_as_blob=False))
    db.mark_archived(ids[0], {"cpu_load_avg": 1.0}, {}, 0.0)
    db.mark_failed(ids[1])
    db.mark_failed(ids[2])
    db.mark_pending(ids[2])
    assert db.failed_jobs() == [ids[1]]
    assert db.counts_by_status() == {0: 0, 1: 5, 2: 1, 3: 1}
    with pytest.raises(JobNotFoundError):
        db.mark_failed(10**9)
    c = raw(db.path)
    rows = c.execute(GO_READ).fetchall()
    assert len(rows) == 7
    for r in rows:
        res, fp = r[18], r[19]
        assert res is not None and fp is not None
        res_v = json.loads(res.decode() if isinstance(res, bytes) else res)
        json.loads(fp.decode() if isinstance(fp, bytes) else fp)
        assert isinstance(res_v, list) and res_v[0]["hostname"]


def test_insert_jobs_one_transaction_and_atomic(db: JobDB) -> None:
    statements: list[str] = []
    db._conns.get().set_trace_callback(statements.append)
    ids = db.insert_jobs([make_job(i, tags=[Tag("app", "python")]) for i in range(320)])
    db._conns.get().set_trace_callback(None)
    assert len(set(ids)) == 320 and statements.count("BEGIN IMMEDIATE") == 1
    assert db.counts_by_status()[1] == 320
    assert raw(db.path).execute("SELECT count(*), count(DISTINCT tag_id) FROM jobtag").fetchone() == (320, 1)
    with pytest.raises(JobDBError, match="refused job fritz/100005/"):
        db.insert_jobs([make_job(1000), make_job(5)])  # second one duplicates (job_id, cluster, start_time)
    assert db.find_job(101000, "fritz", NOW - 7200 + 1000) is None  # rolled back


def test_iter_jobs_between_pages_and_filters(db: JobDB) -> None:
    jobs = [make_job(i, start_time=NOW + i // 3, job_state="running" if i % 4 == 0 else "completed")
            for i in range(1100)]
    ids = db.insert_jobs(jobs)
    got = list(db.iter_jobs_between(NOW, NOW + 10_000))
    assert [j.id for j in got] == ids  # (start_time, id) order, all pages, no duplicates
    lo, hi = NOW + 10, NOW + 20
    expected = [ids[i] for i in range(1100) if lo <= NOW + i // 3 <= hi]
    assert [j.id for j in db.iter_jobs_between(lo, hi)] == expected
    running = list(db.iter_jobs_between(NOW, NOW + 10_000, states=["running"]))
    assert len(running) == 275 and all(j.job_state == "running" for j in running)
    assert list(db.iter_jobs_between(NOW, NOW + 10, states=[])) == []


# --------------------------------------------------------------------------- reconciler query


def test_pending_jobs_grace_horizon_and_exclusions(db: JobDB) -> None:
    grace, horizon = 600, 7 * 86400
    spec = {
        "old_enough": dict(start_time=NOW - 3600, duration=1800),
        "in_grace": dict(start_time=NOW - 3600, duration=3300),
        "running": dict(start_time=NOW - 9000, duration=100, job_state="running"),
        "failed_status": dict(start_time=NOW - 9000, duration=100, monitoring_status=2),
        "archived": dict(start_time=NOW - 9000, duration=100, monitoring_status=3),
        "unmonitored": dict(start_time=NOW - 9000, duration=100, monitoring_status=0),
        "beyond_horizon": dict(start_time=NOW - horizon - 10, duration=100),
        "failed_state": dict(start_time=NOW - 5000, duration=100, job_state="failed"),
    }
    ids = {name: db.insert_job(make_job(i, **kw)) for i, (name, kw) in enumerate(spec.items())}
    got = db.pending_jobs(now=NOW, grace_s=grace, horizon_s=horizon)
    assert got == [ids["failed_state"], ids["old_enough"]]  # by start_time
    assert db.pending_jobs(now=NOW, grace_s=grace, horizon_s=horizon, limit=1) == [ids["failed_state"]]
    assert ids["in_grace"] in db.pending_jobs(now=NOW + 1000, grace_s=grace, horizon_s=horizon)


def test_pending_query_uses_a_start_time_index(db: JobDB) -> None:
    db.insert_jobs([make_job(i) for i in range(50)])
    c = raw(db.path)
    c.execute("ANALYZE")
    plan = [r[3] for r in c.execute("EXPLAIN QUERY PLAN " + jobdb.PENDING_JOBS_SQL, (NOW - 86400, NOW - 600))]
    assert any("INDEX" in d and "start_time>?" in d for d in plan), plan
    assert not any(d.startswith("SCAN job") and "INDEX" not in d for d in plan), plan


def test_failed_jobs_filters(db: JobDB) -> None:
    a = db.insert_job(make_job(1, monitoring_status=2))
    b = db.insert_job(make_job(2, monitoring_status=2, cluster="alex", sub_cluster="a40"))
    db.insert_job(make_job(3, monitoring_status=3))
    assert db.failed_jobs() == [a, b]
    assert db.failed_jobs(cluster="alex") == [b]
    assert db.failed_jobs(since=NOW - 7200 + 2) == [b]


# --------------------------------------------------------------------------- concurrency


def _child_mark(db: JobDB, ids: list[int], barrier) -> None:
    barrier.wait()
    for i in ids:
        db.mark_archived(i, {"cpu_load_avg": float(i)}, {"cpu_power": 0.5}, 0.5)


def test_concurrent_writers_processes_and_threads(db: JobDB) -> None:
    ids = db.insert_jobs([make_job(i) for i in range(60)])
    chunks = [ids[k::6] for k in range(6)]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(7, timeout=120)
    procs = [ctx.Process(target=_child_mark, args=(db, chunks[k], barrier)) for k in range(2)]
    errors: list[BaseException] = []

    def run(chunk: list[int]) -> None:
        try:
            _child_mark(db, chunk, barrier)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(chunks[k],)) for k in range(2, 6)]
    blocker = raw(db.path)
    blocker.execute("BEGIN IMMEDIATE")  # everyone starts against a held write lock
    for p in procs:
        p.start()
    for t in threads:
        t.start()
    barrier.wait()
    blocker.execute("COMMIT")
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert errors == []
    assert db.counts_by_status()[3] == 60
    for i in ids:
        assert db.get_job(i).footprint == {"cpu_load_avg": float(i)}


def test_connections_of_ended_threads_are_closed(db: JobDB) -> None:
    db.counts_by_status()  # main thread's connection
    for _ in range(8):  # e.g. one thread per HTTP request
        t = threading.Thread(target=db.counts_by_status)
        t.start()
        t.join(timeout=60)
    assert len(db._conns._all) <= 2  # main + the last thread's, the others were closed


def test_jobdb_pickles_for_spawned_workers(db: JobDB) -> None:
    db_id = db.insert_job(make_job(7))
    clone = pickle.loads(pickle.dumps(db))
    assert clone.get_job(db_id).job_id == 100007
    clone.close()


# --------------------------------------------------------------------------- state store


def test_state_store_lifecycle(tmp_path: Path) -> None:
    st = StateStore(tmp_path / "state.db")
    assert st.get(1) is None
    assert st.record_attempt(1, now=100.0) == 1
    assert st.record_attempt(1, now=200.0) == 2
    st.record_failure(1, "no-data", "metric store returned\nno data\tfor job", next_retry_at=500.0, now=210.0)
    s = st.get(1)
    assert (s.attempts, s.first_seen, s.last_attempt, s.failed) == (2, 100.0, 200.0, True)
    assert s.last_error_message == "metric store returned no data for job"
    assert [(f.db_id, f.last_error_reason) for f in st.failures()] == [(1, "no-data")]
    assert st.due_retries(now=499.0) == [] and st.due_retries(now=500.0) == [1]
    st.record_success(1, now=600.0)
    s = st.get(1)
    assert (s.archived_at, s.last_error_reason, s.next_retry_at, s.attempts) == (600.0, None, None, 2)
    assert st.failures() == []
    st.record_failure(2, "transient", "x" * 5000)
    assert len(st.get(2).last_error_message) == 1000
    assert st.reset(2) is True and st.reset(3) is False
    assert st.get(2).attempts == 0 and st.get(2).last_error_reason is None
    st.close()


def _child_state(store: StateStore, barrier) -> None:
    barrier.wait()
    for _ in range(25):
        store.record_attempt(7)
    store.record_failure(8, "bad-format", "from the worker")


def test_state_store_two_connections_and_processes(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    a, b = StateStore(path), StateStore(path)
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(6, timeout=120)
    proc = ctx.Process(target=_child_state, args=(a, barrier))
    blocker = raw(path)
    blocker.execute("BEGIN IMMEDIATE")  # all writers start against a held write lock
    proc.start()
    errors: list[BaseException] = []

    def bump(store: StateStore) -> None:
        try:
            barrier.wait()
            for _ in range(25):
                store.record_attempt(7)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=bump, args=(s,)) for s in (a, b, a, b)]
    for t in threads:
        t.start()
    barrier.wait()
    blocker.execute("COMMIT")
    for t in threads:
        t.join(timeout=120)
        assert not t.is_alive()
    proc.join(timeout=120)
    assert proc.exitcode == 0 and errors == []
    assert b.get(7).attempts == 125  # 4 threads + 1 process, no lost increment
    assert [(f.db_id, f.last_error_reason, f.last_error_message) for f in a.failures()] == [
        (8, "bad-format", "from the worker")]
    assert raw(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    a.close()
    b.close()
