"""Kill -9 of the whole CLI (parent and worker) in the middle of archiving, then run again.

These run the real ``ccarchive`` command in its own session so a SIGKILL to the process group
takes down the parent and the worker at once, as an OOM killer or a node crash would.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from test_pipeline import Env, wait_for

from ccarchive.archive import TMP_PREFIX, open_archive

TESTS = Path(__file__).parent


def ccarchive(*args: str) -> list[str]:
    return [sys.executable, "-m", "ccarchive.cli.main", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(TESTS) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _statuses(db: Path) -> dict[int, int]:
    with sqlite3.connect(db) as c:
        return dict(c.execute("SELECT id, monitoring_status FROM job"))


def test_kill_parent_mid_large_job_then_rerun(tmp_path: Path):
    env = Env(tmp_path, n_small=4, large=[(64, 2 * 86400)])
    large = env.ids[-1]
    env.set_faults(slow={str(env.job_ids[large]): 0.1})
    args = ["archive", "--job-db", str(env.db_path), "--archive", str(tmp_path / "archive"),
            "--from", "0", "--to", str(2**40), "--no-progress", "--source", json.dumps(env.config().source)]
    proc = subprocess.Popen(ccarchive(*args), env=_env(), start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(env.marker.exists, timeout=120, what="large job in flight")
        worker_pid = int(env.marker.read_text())
        os.kill(proc.pid, signal.SIGKILL)  # the parent only; the orphaned worker must stop by itself
        proc.wait(30)
        try:
            gone, alive = psutil.wait_procs([psutil.Process(worker_pid)], timeout=60)
            assert not alive, "orphaned worker did not stop after its parent died"
        except psutil.NoSuchProcess:
            pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert _statuses(env.db_path)[large] == 1  # interrupted, still pending
    env.faults.unlink()
    rerun = subprocess.run(ccarchive(*args), env=_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    env.assert_complete()


@pytest.mark.slow
def test_demo_killed_with_sigkill_then_rerun_completes(tmp_path: Path):
    workdir = tmp_path / "demo"
    args = ccarchive("demo", "--workdir", str(workdir), "--jobs", "300", "--no-progress")
    proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = workdir / "job.db"
    try:
        wait_for(lambda: db.exists() and _statuses(db).get(1) is not None
                 and sum(1 for s in _statuses(db).values() if s == 3) >= 30, timeout=600,
                 what="30 demo jobs archived")
        os.killpg(proc.pid, signal.SIGKILL)  # parent and worker at once
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    st = _statuses(db)
    assert len(st) == 300 and 30 <= sum(1 for s in st.values() if s == 3) < 300
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=1800)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    st = _statuses(db)
    assert len(st) == 300 and set(st.values()) == {3}
    arch = open_archive(str(workdir / "archive"))
    assert len(list(arch.iter_job_keys())) == 300
    leftovers = [p for p in (workdir / "archive").rglob("*") if p.name.startswith(TMP_PREFIX)]
    assert leftovers == []
    for d in {p.parent for p in (workdir / "archive").rglob("data.json*")}:
        assert (d / "meta.json").exists(), d  # no data file without its meta.json
