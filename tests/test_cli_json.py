"""Machine-readable output: every command's ``--json`` parses, ``status --check`` speaks the
monitoring-plugin exit codes, progress is plain lines in a log, logs are logfmt / JSON with RFC 3339
times, ``--version`` and ``/metrics`` name the build.

Commands run as ``python -m ccarchive`` subprocesses (stdout and stderr are pipes, as under cron or
systemd), against a copy of cc-backend's fixture archive and a job DB of two small synthetic jobs.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ARCHIVE

EMMY_KEY = "emmy/1403244/1608923076"
EMMY_START = 1608923076
RUN_TIMEOUT = 300


def ccarchive(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ccarchive", *args], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT, stdin=subprocess.DEVNULL, cwd=cwd)


def one_json(run: subprocess.CompletedProcess[str]) -> dict:
    """stdout is exactly one JSON document."""
    return json.loads(run.stdout)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("json") / "archive"
    shutil.copytree(ARCHIVE, dst)
    return dst


# -- ls / show / verify / convert ----------------------------------------------------------------

def test_ls_json_lines_keep_epoch_and_iso_and_the_table_shows_utc(archive: Path):
    run = ccarchive("ls", str(archive), "--json")
    assert run.returncode == 0, run.stderr
    (job,) = [json.loads(line) for line in run.stdout.splitlines()]
    assert (job["jobId"], job["startTime"], job["startTimeISO"]) == (1403244, EMMY_START, "2020-12-25T19:04:36Z")
    table = ccarchive("ls", str(archive))
    assert "2020-12-25T19:04:36Z" in table.stdout and str(EMMY_START) not in table.stdout


@pytest.mark.parametrize(("flags", "listed"), [
    (["--since", "2020-12-25T19:04:36Z"], True),  # since <= start
    (["--until", "2020-12-25T19:04:36Z"], False),  # start < until
    (["--since", "2020-12-25T20:04:36+01:00", "--until", str(EMMY_START + 1)], True),  # an offset; seconds
    (["--user", "emmyUser6", "--state", "completed"], True),
    (["--user", "someone-else"], False),
    (["--state", "failed"], False),
])
def test_ls_filters(archive: Path, flags: list[str], listed: bool, capsys: pytest.CaptureFixture[str]):
    """In-process (the command's own parser and code; no subprocess per filter)."""
    from ccarchive.cli import archive_cmds
    from ccarchive.cli.main import build_parser

    args = build_parser().parse_args(["ls", str(archive), "--json", *flags])
    assert archive_cmds.run("ls", args) == 0
    assert [json.loads(x)["jobId"] for x in capsys.readouterr().out.splitlines()] == ([1403244] if listed else [])


def test_ls_unknown_state_is_one_line(archive: Path):
    run = ccarchive("ls", str(archive), "--state", "finished")
    assert run.returncode == 1 and run.stderr.splitlines() == [
        "ccarchive ls: error: unknown job state 'finished' (one of: boot_fail, cancelled, completed, deadline, "
        "failed, node_fail, out_of_memory, pending, preempted, running, suspended, timeout)"]


def test_show_json_has_meta_as_stored_and_series_shapes(archive: Path):
    doc = one_json(ccarchive("show", str(archive), EMMY_KEY, "--json", "--series"))
    stored = json.loads((archive / "emmy/1403/244/1608923076/meta.json").read_text())
    assert doc["path"] == "emmy/1403/244/1608923076" and doc["meta"] == stored
    clock = next(r for r in doc["data"] if (r["metric"], r["scope"]) == ("clock", "node"))
    assert (clock["series"], clock["samples"], clock["timestep"]) == (32, 1441, 60)
    first = clock["seriesStatistics"][0]
    assert first["hostname"] == "e0102" and first["min"] <= first["avg"] <= first["max"]
    summary = one_json(ccarchive("show", str(archive), EMMY_KEY, "--summary", "--json"))
    assert summary["num_nodes"] == 32


def test_verify_json_counts_and_findings(archive: Path, tmp_path: Path):
    run = ccarchive("verify", str(archive), "--json")
    doc = one_json(run)
    assert run.returncode == 0 and (doc["jobs"], doc["clusters"], doc["errors"], doc["ok"]) == (1, 3, [], True)
    assert all(isinstance(w, str) for w in doc["warnings"])
    broken = tmp_path / "broken"
    shutil.copytree(archive, broken)
    (broken / "emmy/1403/244/1608923076/data.json.gz").write_bytes(b"\x1f\x8bnot deflate")
    run = ccarchive("verify", str(broken), "--json")
    doc = one_json(run)
    assert run.returncode == 1 and not doc["ok"] and len(doc["errors"]) == 1
    assert run.stderr.splitlines() == [f"error: {doc['errors'][0]}"]


def test_convert_json(archive: Path, tmp_path: Path):
    run = ccarchive("convert", str(archive), f"sqlite:///{tmp_path}/copy.db", "--json")
    doc = one_json(run)
    assert run.returncode == 0, run.stderr
    assert (doc["total"], doc["copied"], doc["skipped"], doc["failed"], doc["ok"]) == (1, 1, 0, 0, True)
    again = one_json(ccarchive("convert", str(archive), f"sqlite:///{tmp_path}/copy.db", "--json"))
    assert (again["copied"], again["skipped"]) == (0, 1)


# -- archive / status ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def job_db(tmp_path_factory: pytest.TempPathFactory, demo_clusters) -> Path:
    """Two small stopped jobs (1 node, 10 min), the second stopped two days ago; an empty archive."""
    from ccarchive.archive import open_archive
    from ccarchive.jobdb import JobDB
    from ccarchive.sources.synthetic import synthetic_job

    root = tmp_path_factory.mktemp("jobdb")
    now = int(time.time())
    fritz = demo_clusters["fritz"]
    jobs = [synthetic_job(fritz, "main", 1001 + i, now - (3 - i) * 86400, 1, 600, seed=i) for i in range(2)]
    db = JobDB.create(root / "job.db")
    db.insert_jobs(jobs)
    db.close()
    arch = open_archive(str(root / "archive"), create=True)
    arch.store_cluster(fritz)
    return root / "job.db"


def test_status_check_archive_json_and_status_json(job_db: Path):
    """Before archiving: lag beyond the thresholds; ``archive --json``; afterwards OK, then a failure."""
    db = str(job_db)
    status = one_json(ccarchive("status", "--job-db", db, "--json"))
    assert (status["pending"], status["failed"], status["monitoring_status"]["1"]) == (2, 0, 2)
    assert status["oldest_pending"]["job_id"] == 1001 and 3 * 86400 - 600 <= status["lag_s"] < 3 * 86400
    assert status["oldest_pending"]["stop_time_iso"].endswith("Z")

    crit = ccarchive("status", "--job-db", db, "--check")
    assert crit.returncode == 2, crit.stdout + crit.stderr
    assert re.fullmatch(r"CCARCHIVE CRITICAL - 0 failed, oldest pending (\d+) h( \d+ min)? \| failed=0;1;;0 "
                        r"pending=2;;;0 lag_s=\d+;3600;21600;0\n", crit.stdout), crit.stdout
    warn = ccarchive("status", "--job-db", db, "--check", "--warn-lag", "1d", "--crit-lag", "5d")
    assert warn.returncode == 1 and warn.stdout.startswith("CCARCHIVE WARNING - ")
    both = one_json(ccarchive("status", "--job-db", db, "--check", "--json", "--warn-lag", "4d", "--crit-lag", "5d"))
    assert both["check"]["code"] == 0 and both["check"]["line"].startswith("CCARCHIVE OK - ") and both["pending"] == 2

    run = ccarchive("archive", "--job-db", db, "--archive", str(job_db.parent / "archive"), "--source", "synthetic",
                    "--from", "2020-01-01", "--to", "2100-01-01T00:00:00+00:00", "--json")
    assert run.returncode == 0, run.stderr
    summary = one_json(run)
    assert (summary["archived"], summary["failed"], summary["left_pending"]) == (2, 0, 0)
    assert summary["bytes_written"] > 0 and set(summary["phases_s"]) >= {"load", "write"}
    # stderr is a pipe: progress as plain lines, never a bar's carriage returns
    assert "\r" not in run.stderr and "archiving: 2/2 jobs (100 %)" in run.stderr

    ok = ccarchive("status", "--job-db", db, "--check")
    assert ok.returncode == 0 and ok.stdout.startswith("CCARCHIVE OK - 0 failed, none pending | "), ok.stdout
    with sqlite3.connect(db) as c:
        c.execute("UPDATE job SET monitoring_status = 2 WHERE job_id = 1001")
    assert ccarchive("status", "--job-db", db, "--check").returncode == 1
    crit = ccarchive("status", "--job-db", db, "--check", "--crit-failed", "1")
    assert crit.returncode == 2 and crit.stdout.startswith("CCARCHIVE CRITICAL - 1 failed")
    assert ccarchive("status", "--job-db", db, "--check", "--warn-failed", "0").returncode == 0  # 0: off
    assert one_json(ccarchive("status", "--job-db", db, "--json"))["failed"] == 1


def test_status_check_unknown_when_the_job_db_cannot_be_read(tmp_path: Path):
    run = ccarchive("status", "--job-db", str(tmp_path / "missing.db"), "--check")
    assert run.returncode == 3
    assert run.stdout.startswith("CCARCHIVE UNKNOWN - ") and "missing.db" in run.stdout
    assert len(run.stderr.splitlines()) == 1 and run.stderr.startswith("ccarchive status: error: ")


def test_retry_json_with_nothing_to_retry(job_db: Path, tmp_path: Path):
    """A fresh job DB without failures: the JSON summary of nothing, exit 0."""
    from ccarchive.jobdb import JobDB

    JobDB.create(tmp_path / "empty.db").close()
    run = ccarchive("retry", "--job-db", str(tmp_path / "empty.db"), "--archive", str(job_db.parent / "archive"),
                    "--source", "synthetic", "--json")
    assert run.returncode == 0, run.stderr
    assert (one_json(run)["archived"], one_json(run)["failed"]) == (0, 0)


def test_demo_json(tmp_path: Path):
    run = ccarchive("demo", "--workdir", str(tmp_path / "demo"), "--jobs", "2", "--json")
    assert run.returncode == 0, run.stderr
    doc = one_json(run)
    assert (doc["jobs_in_db"], doc["archived"], doc["archived_now"], doc["failed"]) == (2, 2, 2, 0)


# -- help, version ---------------------------------------------------------------------------------

def _help(command: str) -> str:
    from ccarchive.cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return sub.choices[command].format_help()  # type: ignore[union-attr]


def test_each_command_help_lists_only_its_own_options():
    status = _help("status")
    assert "--check" in status and "--json" in status
    assert not {"--archive", "--source", "--no-progress"} & set(re.findall(r"--[\w-]+", status))
    assert {"--archive", "--source", "--no-progress", "--json"} <= set(re.findall(r"--[\w-]+", _help("archive")))
    for command in ("ls", "show", "verify", "convert", "demo", "archive", "retry"):
        assert "--json" in _help(command), command


def test_version_names_commit_python_and_numba():
    from importlib import metadata

    from ccarchive import __version__
    from ccarchive.buildinfo import build_info

    for flag in ("-V", "--version"):
        run = ccarchive(flag)
        assert run.returncode == 0, run.stderr
        first, second = run.stdout.splitlines()
        assert first.startswith(f"ccarchive {__version__}")
        assert second == f"Python {'.'.join(map(str, sys.version_info[:3]))}, numba {metadata.version('numba')}"
    info = build_info()
    if "commit" in info:  # run from a git checkout
        assert f"(commit {info['commit'][:12]})" in first


def test_git_commit_of_a_branch_a_packed_ref_and_a_detached_head(tmp_path: Path):
    from ccarchive.buildinfo import git_commit

    a, b = "a" * 40, "0123456789abcdef" * 2 + "01234567"
    git = tmp_path / ".git"
    (git / "refs/heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    assert git_commit(tmp_path) is None  # a branch without commits
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{b} refs/heads/main\n")
    assert git_commit(tmp_path) == b
    (git / "refs/heads/main").write_text(a + "\n")
    assert git_commit(tmp_path) == a
    (git / "HEAD").write_text(b + "\n")
    assert git_commit(tmp_path) == b
    assert git_commit(tmp_path / "nowhere") is None


# -- progress, logs, metrics ---------------------------------------------------------------------

def test_line_progress_every_tenth_or_interval_and_once_at_the_end():
    from ccarchive.logs import LineProgress

    now = [0.0]
    out = io.StringIO()
    bar = LineProgress(25, "archiving", file=out, every=10.0, clock=lambda: now[0])
    for _ in range(7):
        bar.update()
    now[0] = 12.0
    bar.update()  # 8: no tenth boundary (a tenth is 3 jobs), but 10 s since the last line
    bar.close()
    bar.close()
    assert out.getvalue().splitlines() == [
        "archiving: 3/25 jobs (12 %), 0.0 s",
        "archiving: 6/25 jobs (24 %), 0.0 s",
        "archiving: 8/25 jobs (32 %), 12 s",
    ]


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere():
    from tqdm import tqdm

    from ccarchive.logs import LineProgress, progress

    assert isinstance(progress(5, "x", file=io.StringIO()), LineProgress)
    main, side = os.openpty()
    with os.fdopen(side, "w") as tty:
        bar = progress(5, "x", file=tty)
        assert isinstance(bar, tqdm) and not bar.disable
        bar.close()
    os.close(main)
    off = progress(5, "x", enabled=False, file=io.StringIO())
    assert isinstance(off, tqdm) and off.disable


def _record(msg: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("ccarchive.service", logging.INFO, __file__, 1, msg, (), None)
    rec.created, rec.msecs = 1796506231.123456, 123.456
    rec.__dict__.update(extra)
    return rec


def test_plain_logs_are_logfmt_with_rfc3339_times():
    from ccarchive.logs import PlainFormatter

    line = PlainFormatter().format(_record("archived job", db_id=7, job_id=398764, cluster="fritz"))
    assert line == ('ts=2026-12-05T21:30:31.123Z level=info logger=ccarchive.service msg="archived job" '
                    'db_id=7 job_id=398764 cluster=fritz')
    odd = PlainFormatter().format(_record('a "quoted"\nline=x', cluster=""))
    assert odd.endswith(r'msg="a \"quoted\"\nline=x" cluster=""') and "\n" not in odd
    try:
        raise ValueError("boom")
    except ValueError:
        rec = _record("failed")
        rec.exc_info = sys.exc_info()
    with_exc = PlainFormatter().format(rec)
    assert "\n" not in with_exc and 'exc="Traceback (most recent call last):\\n' in with_exc


def test_json_logs_carry_the_same_rfc3339_ts():
    from ccarchive.logs import JsonFormatter

    doc = json.loads(JsonFormatter().format(_record("archived job", db_id=7)))
    assert doc == {"ts": "2026-12-05T21:30:31.123Z", "level": "info", "logger": "ccarchive.service",
                   "msg": "archived job", "db_id": 7}


def test_metrics_have_build_info_and_process_metrics():
    pytest.importorskip("prometheus_client")
    from ccarchive.buildinfo import build_info
    from ccarchive.service.metrics import ServiceMetrics

    text = ServiceMetrics().render().decode()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    info = build_info()
    labels = (f'commit="{info.get("commit", "")}",numba="{info["numba"]}",python="{info["python"]}",'
              f'version="{info["version"]}"')
    assert float(values[f"ccarchive_build_info{{{labels}}}"]) == 1.0
    assert float(values["process_cpu_seconds_total"]) > 0
    assert float(values["process_resident_memory_bytes"]) > 1e6
    assert float(values["ccarchive_in_flight"]) == 0.0
