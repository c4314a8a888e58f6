"""The archiving pipeline with real processes and real SQLite files.

Faults are injected through ``faulty_source.FaultySource`` (a synthetic source that reads a JSON
fault file at every fetch), so the worker process under test is the real one.  Waiting is always
on a condition with a bounded timeout, never a bare sleep.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from ccarchive.archive import TMP_PREFIX, open_archive
from ccarchive.demo import embedded_cluster
from ccarchive.jobdb import JobDB
from ccarchive.pipeline import (
    QUEUE_SIZE,
    Archiver,
    ArchiverStateError,
    QueueFullError,
    RetryPolicy,
    ShutdownTimeoutError,
)
from ccarchive.sources.synthetic import synthetic_job
from ccarchive.statestore import StateStore
from ccarchive.worker import Message, WorkerConfig

TESTS = Path(__file__).parent
START = int(time.time()) // 3600 * 3600 - 3 * 86400


def wait_for(cond, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Env:
    """A job DB, an archive and a fault file in a temporary folder."""

    def __init__(self, root: Path, n_small: int = 0, large: list[tuple[int, int]] | None = None):
        self.root = root
        self.cluster = embedded_cluster("fritz")
        self.arch = open_archive(str(root / "archive"), create=True)
        self.arch.store_cluster(self.cluster)
        self.db_path = root / "job.db"
        self.db = JobDB.create(self.db_path)
        self.faults = root / "faults.json"
        self.marker = root / "started"
        jobs = [synthetic_job(self.cluster, "main", 10_000 + i, START + i * 60, 1, 600) for i in range(n_small)]
        for k, (nodes, duration) in enumerate(large or []):
            jobs.append(synthetic_job(self.cluster, "main", 90_000 + k, START + 86400 + k, nodes, duration))
        self.ids = self.db.insert_jobs(jobs) if jobs else []
        self.job_ids = {i: j.job_id for i, j in zip(self.ids, jobs, strict=True)}

    def set_faults(self, **faults) -> None:
        faults.setdefault("started_marker", str(self.marker))
        self.faults.write_text(json.dumps(faults))

    def config(self) -> WorkerConfig:
        return WorkerConfig(
            job_db=str(self.db_path), archive_url=str(self.root / "archive"), state_db=str(self.root / "state.db"),
            source={"kind": "python", "class": "faulty_source:FaultySource", "faults_file": str(self.faults),
                    "nan_gap_probability": 0.01},
        )

    def archiver(self, **kw) -> Archiver:
        kw.setdefault("retry", RetryPolicy(max_attempts=3, base_s=0.05, cap_s=0.2))
        return Archiver(self.config(), **kw)

    def statuses(self) -> dict[int, int]:
        with sqlite3.connect(self.db_path) as c:
            return dict(c.execute("SELECT id, monitoring_status FROM job"))

    def assert_complete(self, ids=None) -> None:
        """Every job archived (status 3) with a complete entry, no temporary files anywhere."""
        ids = self.ids if ids is None else ids
        st = self.statuses()
        assert [i for i in ids if st[i] != 3] == []
        for i in ids:
            job = self.db.get_job(i)
            d = Path(self.arch.job_dir(job))
            names = sorted(p.name for p in d.iterdir())
            assert names in (["data.json", "meta.json"], ["data.json.gz", "meta.json"]), (d, names)
            assert self.arch.load_meta(job).monitoring_status == 3
        assert not [p for p in (self.root / "archive").rglob("*") if p.name.startswith(TMP_PREFIX)]


@pytest.fixture(autouse=True)
def _tests_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))  # spawned workers import faulty_source from here


def test_500_jobs_from_4_threads_archived_exactly_once(tmp_path: Path):
    env = Env(tmp_path, n_small=500)
    done: list[int] = []
    a = env.archiver(on_result=lambda m: done.append(m.db_id) if m.kind == "done" else None)
    a.start()
    accepted: list[bool] = []
    lock = threading.Lock()

    def feed(part: int) -> None:
        # threads overlap: every id is triggered twice, duplicates while pending are refused
        for db_id in env.ids[part * 100: part * 100 + 200]:
            r = a.trigger(db_id)
            with lock:
                accepted.append(r)

    threads = [threading.Thread(target=feed, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for db_id in env.ids[:100] + env.ids[400:]:  # 1 trigger each so far
        a.trigger(db_id)
    assert a.wait_idle(300)
    a.shutdown(30)
    assert sorted(done) == sorted(env.ids)  # each job archived exactly once
    env.assert_complete()
    state = StateStore(tmp_path / "state.db")
    assert all(state.get(i).archived_at and not state.get(i).failed for i in env.ids)
    assert a.stats.archived == 500 and not a.stats.failed


def test_trigger_blocks_at_128_queued_and_resumes(tmp_path: Path):
    env = Env(tmp_path, n_small=QUEUE_SIZE + 3)
    first = env.ids[0]
    env.set_faults(slow={str(env.job_ids[first]): 0.05})  # ~1 s in flight
    a = env.archiver()
    a.start()
    a.trigger(first)
    wait_for(env.marker.exists, what="first job in flight")
    for db_id in env.ids[1:QUEUE_SIZE + 1]:
        a.trigger(db_id, timeout=5)
    assert a.status()["queued"] == QUEUE_SIZE
    with pytest.raises(QueueFullError, match="archive queue full"):
        a.trigger(env.ids[QUEUE_SIZE + 1], timeout=0.2)
    blocked = threading.Thread(target=a.trigger, args=(env.ids[QUEUE_SIZE + 1],))
    blocked.start()
    blocked.join(0.2)
    assert blocked.is_alive()  # blocks while 128 are queued ...
    blocked.join(60)
    assert not blocked.is_alive()  # ... and resumes when the worker takes the next job
    a.trigger(env.ids[QUEUE_SIZE + 2])
    a.shutdown(120)
    env.assert_complete()


def test_misuse_gives_clear_errors(tmp_path: Path):
    env = Env(tmp_path, n_small=1)
    a = env.archiver()
    with pytest.raises(ArchiverStateError, match=r"trigger\(\) before start\(\)"):
        a.trigger(env.ids[0])
    a.start()
    with pytest.raises(ArchiverStateError, match="called twice"):
        a.start()
    a.shutdown(30)
    with pytest.raises(ArchiverStateError, match="no new jobs accepted after shutdown"):
        a.trigger(env.ids[0])
    with pytest.raises(ArchiverStateError, match="called twice"):
        a.shutdown(1)


def test_shutdown_within_timeout_archives_everything(tmp_path: Path):
    env = Env(tmp_path, n_small=40)
    a = env.archiver()
    a.start()
    for db_id in env.ids:
        a.trigger(db_id)
    a.shutdown(120)  # no exception: everything finished
    env.assert_complete()


def test_shutdown_timeout_leaves_job_pending_then_restart_archives_it(tmp_path: Path):
    env = Env(tmp_path, n_small=1)
    slow = env.ids[0]
    env.set_faults(slow={str(env.job_ids[slow]): 2.0})  # ~40 s: far beyond the timeout
    a = env.archiver()
    a.start()
    a.trigger(slow)
    wait_for(env.marker.exists, what="slow job in flight")
    t0 = time.monotonic()
    with pytest.raises(ShutdownTimeoutError, match=rf"1 jobs not archived .*: {slow}") as exc:
        a.shutdown(timeout=0.5, grace=5)
    assert time.monotonic() - t0 < 15
    assert exc.value.unfinished == [slow]
    assert not a._worker.is_alive()
    assert env.statuses()[slow] == 1  # still pending, not failed
    env.faults.unlink()
    b = env.archiver(reconcile_interval_s=3600, reconcile_grace_s=0)
    b.start()  # the reconciler's first pass (on its own thread) finds the pending job
    wait_for(lambda: env.statuses()[slow] == 3, timeout=120, what="reconciled job archived")
    b.shutdown(30)
    env.assert_complete()


def test_kill_worker_mid_large_job(tmp_path: Path, caplog):
    env = Env(tmp_path, n_small=5, large=[(64, 2 * 86400)])
    large = env.ids[-1]
    env.set_faults(slow={str(env.job_ids[large]): 0.2})
    done: list[int] = []
    a = env.archiver(on_result=lambda m: done.append(m.db_id) if m.kind == "done" else None)
    a.start()
    old_pid = a.worker_pid
    a.trigger(large)
    for db_id in env.ids[:-1]:
        a.trigger(db_id)
    wait_for(env.marker.exists, what="large job in flight")
    env.faults.unlink()
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: a.worker_pid != old_pid and a._ready.is_set(), what="replacement worker")
    assert a.wait_idle(300)
    a.shutdown(30)
    assert a.stats.worker_restarts == 1
    assert sorted(done) == sorted(env.ids)
    env.assert_complete()
    assert StateStore(tmp_path / "state.db").get(large).attempts == 2  # the killed attempt counts
    assert f"died with exit code -9 while archiving job {large}" in caplog.text


def test_failed_job_marked_2_worker_continues_and_retry_archives(tmp_path: Path, capsys):
    env = Env(tmp_path, n_small=6)
    bad = env.ids[2]
    env.set_faults(fail=[env.job_ids[bad]])
    a = env.archiver()
    a.start()
    for db_id in env.ids:
        a.trigger(db_id)
    assert a.wait_idle(120)
    a.shutdown(30)
    st = env.statuses()
    assert st[bad] == 2
    assert all(st[i] == 3 for i in env.ids if i != bad)
    rec = StateStore(tmp_path / "state.db").get(bad)
    assert rec.last_error_reason == "bad-input" and "injected data failure" in rec.last_error_message
    env.faults.unlink()
    from ccarchive.cli.main import main

    rc = main(["retry", "--job-db", str(env.db_path), "--archive", str(tmp_path / "archive"),
               "--state-db", str(tmp_path / "state.db"), "--no-progress",
               "--source", json.dumps(env.config().source)])
    assert rc == 0, capsys.readouterr()
    env.assert_complete()


def test_transient_failures_are_retried_with_backoff(tmp_path: Path):
    env = Env(tmp_path, n_small=2)
    flaky = env.ids[0]
    env.set_faults(transient={str(env.job_ids[flaky]): 2})
    a = env.archiver()
    a.start()
    for db_id in env.ids:
        a.trigger(db_id)
    assert a.wait_idle(120)
    a.shutdown(30)
    env.assert_complete()
    assert a.stats.retries == 2
    assert StateStore(tmp_path / "state.db").get(flaky).attempts == 3


def test_db_stays_readable_like_cc_backend(tmp_path: Path):
    env = Env(tmp_path, n_small=3)
    a = env.archiver()
    a.start()
    for db_id in env.ids:
        a.trigger(db_id)
    a.shutdown(120)
    cols = ("id, job_id, hpc_user, project, cluster, subcluster, start_time, cluster_partition, array_job_id, "
            "num_nodes, num_hwthreads, num_acc, shared, monitoring_status, smt, job_state, duration, walltime, "
            "resources, footprint, energy")
    with sqlite3.connect(env.db_path) as c:
        rows = c.execute(f"SELECT {cols}, energy_footprint, typeof(footprint) FROM job").fetchall()
    for r in rows:
        resources = json.loads(r[18])
        footprint = json.loads(r[19])
        assert resources and resources[0]["hostname"]
        assert set(footprint) == {"cpu_load_avg", "flops_any_avg", "mem_bw_avg", "mem_used_max"}
        assert isinstance(r[20], float) and json.loads(r[21]).keys() == {"cpu_power", "mem_power"}
        assert r[22] == "text" and r[13] == 3
        # the archive's meta.json carries the same footprint and energy
        meta = env.arch.load_meta(("fritz", r[1], r[6]))
        assert meta.footprint == footprint and meta.energy == r[20]


def test_worker_writes_json_and_parquet(tmp_path: Path):
    """With ``parquet_url`` every archived job also lands in the Parquet dataset, matching the JSON."""
    import dataclasses

    env = Env(tmp_path, n_small=12)
    cfg = dataclasses.replace(env.config(), parquet_url=f"parquet+{tmp_path / 'ds'}")
    a = Archiver(cfg, retry=RetryPolicy(max_attempts=3, base_s=0.05, cap_s=0.2))
    a.start()
    for db_id in env.ids:
        a.trigger(db_id)
    a.shutdown(120)
    env.assert_complete()
    ds = open_archive(f"parquet+{tmp_path / 'ds'}")
    keys = sorted(ds.iter_job_keys())
    assert keys == sorted(env.arch.iter_job_keys())
    for key in keys[:3]:
        assert ds.load_meta_bytes(key) == env.arch.load_meta_bytes(key)
        assert ds.load_data_bytes(key) == env.arch.load_data_bytes(key)


def test_small_jobs_are_prepared_while_the_one_before_is_written(tmp_path: Path):
    """The worker overlaps job N's write with job N+1's loading and encoding, yet the parent
    still sees one job started at a time, in order, and the archive is what archive_job writes."""
    from ccarchive.core import archive_job
    from ccarchive.sources.registry import source_from_spec

    env = Env(tmp_path, n_small=12)
    seen: list[tuple[str, int]] = []
    a = env.archiver(on_result=lambda m: seen.append((m.kind, m.db_id)))
    kinds: list[tuple[str, int]] = []
    handle = a._handle

    def spy(msg):
        kinds.append((msg.kind, msg.db_id))
        handle(msg)

    a._handle = spy  # type: ignore[method-assign]
    a.start()
    for db_id in env.ids:
        a.trigger(db_id)
    assert a.wait_idle(120)
    a.shutdown(30)
    env.assert_complete()
    assert ("preparing", env.ids[-1]) in kinds  # the overlap did happen
    order = [(k, i) for k, i in kinds if k in ("started", "done")]
    assert order == [(k, i) for i in env.ids for k in ("started", "done")]  # one at a time, in order
    for i in env.ids:  # "preparing" (if any) comes before its "started", and after the previous job began
        if ("preparing", i) in kinds:
            assert kinds.index(("preparing", i)) < kinds.index(("started", i))
    # same bytes as the one-step path
    ref = open_archive(str(tmp_path / "ref"), create=True)
    source = source_from_spec(env.config().source)
    for i in env.ids[:3]:
        job = env.db.get_job(i)
        archive_job(job, source=source, archive=ref, cluster=env.cluster)
        assert ref.load_data_bytes(job) == env.arch.load_data_bytes(job)
        assert ref.load_meta_bytes(job) == env.arch.load_meta_bytes(job)


def test_a_crash_while_preparing_is_charged_to_the_prepared_job(tmp_path: Path):
    """A job that kills the worker while it is prepared beside another's write fails after the
    allowed attempts; the job being written meanwhile is archived, never blamed."""
    env = Env(tmp_path, n_small=6)
    poison = env.ids[2]
    env.set_faults(crash=[env.job_ids[poison]])
    failed: list[tuple[int, str]] = []
    a = env.archiver(on_result=lambda m: failed.append((m.db_id, m.reason)) if m.kind == "failed" else None)
    a.start()
    for db_id in env.ids:
        a.trigger(db_id)
    assert a.wait_idle(120)
    a.shutdown(30)
    st = env.statuses()
    assert st[poison] == 2
    env.assert_complete([i for i in env.ids if i != poison])
    assert a.stats.failed == {"worker-died": 1} and a.stats.worker_restarts == 3
    assert failed == []  # the parent fails it itself: no worker ever reported a failure
    store = StateStore(tmp_path / "state.db")
    assert store.get(poison).attempts == 3
    assert all(store.get(i).last_error_reason != "worker-died" for i in env.ids if i != poison)


def test_worker_killed_with_a_full_queue_its_job_is_archived_once_without_restart(tmp_path: Path):
    """The job a dead worker was archiving goes back to the front, even when 128 jobs are queued and
    more wait behind them; no pending job is ever outside the backlog, queue, worker or a retry."""
    env = Env(tmp_path, n_small=QUEUE_SIZE + 20)
    first = env.ids[0]
    env.set_faults(slow={str(env.job_ids[first]): 0.5})  # ~10 s in flight
    done: dict[int, int] = {}
    a = env.archiver(on_result=lambda m: done.__setitem__(m.db_id, done.get(m.db_id, 0) + 1)
                     if m.kind == "done" else None)
    a.start()
    a.trigger(first)
    wait_for(env.marker.exists, what="first job in flight")
    blocked = threading.Thread(target=a.trigger, args=(env.ids[-1],))  # a library caller waiting for a slot
    for db_id in env.ids[1:-1]:
        assert a.trigger(db_id, block=False)
    blocked.start()
    st = a.status()
    assert (st["in_flight_db_id"], st["queued"], st["backlog"]) == (first, QUEUE_SIZE, 19 - (not blocked.is_alive()))
    assert a.check_invariant() == []
    env.faults.unlink()
    old_pid = a.worker_pid
    t_kill = time.monotonic()
    os.kill(old_pid, signal.SIGKILL)
    problems: list[str] = []

    def archived_first() -> bool:  # in the job DB, and reported to the parent (written on a thread first)
        problems.extend(a.check_invariant())
        return env.statuses()[first] == 3 and first not in a.pending()

    wait_for(archived_first, timeout=30, what="the killed worker's job archived")
    recovery_s = time.monotonic() - t_kill
    assert problems == []
    assert a.trigger(first) is True  # no longer pending: a new trigger is taken (and skipped as archived)
    assert a.wait_idle(120)
    blocked.join(10)
    a.shutdown(30)
    assert done == {i: 1 for i in env.ids}  # every job archived exactly once
    assert a.stats.worker_restarts == 1
    env.assert_complete()
    print(f"\nworker killed with {QUEUE_SIZE} queued + {19} waiting: its job archived {recovery_s:.1f} s later")


def test_full_storage_pauses_the_worker_instead_of_failing_jobs(tmp_path: Path, caplog):
    """ENOSPC is waited out: the job is kept and tried again with backoff, no job fails, nothing
    burns through the queue, the state is visible, and everything archives once space returns."""
    env = Env(tmp_path, n_small=6)
    full = env.ids[1]
    env.set_faults(enospc={str(env.job_ids[full]): 4})
    cfg = env.config()
    cfg.storage_retry_max_s = 0.2
    seen: list[Message] = []
    a = Archiver(cfg, retry=RetryPolicy(max_attempts=2, base_s=0.05, cap_s=0.1),
                 on_result=seen.append)
    a.start()
    states: list[dict | None] = []
    a_handle = a._handle

    def spy(msg):  # record what status() says right after each report (deterministic, no polling race)
        a_handle(msg)
        if msg.kind == "paused":
            states.append(a.status()["storage_full"])

    a._handle = spy  # type: ignore[method-assign]
    for db_id in env.ids:
        a.trigger(db_id)
    assert a.wait_idle(120)
    a.shutdown(30)
    assert len(states) == 4 and all(s is not None and s["job"] == full for s in states)
    assert "No space left on device" in states[0]["error"]
    assert [s["retry_in_s"] for s in states] == [0.2, 0.2, 0.2, 0.2]
    assert a.status()["storage_full"] is None
    assert a.stats.storage_full_pauses == 1 and a.stats.failed == {} and a.stats.retries == 0
    assert [m.db_id for m in seen if m.kind == "failed"] == []
    env.assert_complete()
    assert StateStore(tmp_path / "state.db").get(full).attempts == 1  # one attempt, paused inside it
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("archiving paused" in w for w in warnings) == 1
    assert sum("archiving resumed" in w for w in warnings) == 1


def test_full_storage_pause_ends_at_shutdown_and_the_job_stays_pending(tmp_path: Path):
    env = Env(tmp_path, n_small=2)
    stuck = env.ids[0]
    env.set_faults(enospc={str(env.job_ids[stuck]): 10_000})
    a = env.archiver()
    a.start()
    a.trigger(stuck)
    wait_for(lambda: a.status()["storage_full"] is not None, what="storage-full pause")
    with pytest.raises(ShutdownTimeoutError) as e:
        a.shutdown(timeout=0.5, grace=10)
    assert e.value.unfinished == [stuck]
    assert env.statuses()[stuck] == 1  # pending in the job DB, not failed


def test_atomic_file_leaves_no_temporary_file_when_close_fails_on_a_full_disk(tmp_path: Path):
    """A full disk can fail ``write`` and then ``close`` again (flushing the buffer): the temporary
    file must still be removed."""
    import errno

    from ccarchive.atomicio import AtomicFile

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self):
            self.f.close()
            raise OSError(errno.ENOSPC, "No space left on device")

    fs = open_archive(str(tmp_path / "a"), create=True).fs
    out = AtomicFile(fs, str(tmp_path / "a" / "x" / "data.json.gz"))
    out.file = FullDisk(out.file)  # type: ignore[assignment]
    with pytest.raises(OSError, match="No space"), out:
        out.file.write(b"x" * 100)
    assert [p.name for p in (tmp_path / "a" / "x").iterdir()] == []
