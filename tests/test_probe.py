"""``ccarchive serve --probe``: every dependency asked once, against real servers where they run here.

Real nats-server, Prometheus and cc-metric-store on loopback (each starts in well under a second);
"unreachable" is an unused port, "never answers" a listening socket nobody reads from.  The
probes run in-process through :func:`run_probes` and once through the CLI for the output format.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from ccms_real import RealCCMS, require_binary
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nats_fixture import NatsServer, free_port
from prom_fixture import PromServer, require_prometheus

from ccarchive.archive import open_archive
from ccarchive.config import load_config
from ccarchive.jobdb import JobDB
from ccarchive.service.probe import probe_archive, run_probes
from conftest import ARCHIVE

PUBLIC_KEY = base64.b64encode(
    Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
ENV = {"JWT_PUBLIC_KEY": PUBLIC_KEY}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory):
    """A real NATS, Prometheus (empty store) and cc-metric-store for the module."""
    require_prometheus()
    root = tmp_path_factory.mktemp("probe-servers")
    (root / "prom").mkdir()
    ccms = RealCCMS(root / "ccms", {"cpu_load": (60, None)}, path=require_binary())
    with NatsServer(root) as nats, PromServer(root / "prom" / "data", root / "prom.log") as prom, ccms:
        yield {"nats": nats, "prom": prom, "ccms": ccms}


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    db = tmp_path / "job.db"
    JobDB.create(db).close()
    archive = tmp_path / "archive"
    shutil.copytree(ARCHIVE, archive)
    return db, archive


def _config(tmp_path: Path, *, sources: dict, nats: str | None = None, hook: str | None = None,
            archive: dict | None = None) -> str:
    db, arch = _setup(tmp_path)
    doc: dict = {"main": {"db": str(db)}, "archive": archive or {"kind": "file", "path": str(arch)},
                 "ccarchive": {"sources": sources, "nats-subject": "cc.job.event" if nats else False}}
    if nats:
        doc["nats"] = {"address": nats, "username": "cc", "password": "natspw"}
    if hook:
        doc["ccarchive"]["hooks"] = {"command": hook}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return str(path)


def _ccms(servers: dict, token: str | None = None) -> dict:
    c = servers["ccms"]
    return {"kind": "cc-metric-store", "url": c.url, "token": c.token if token is None else token}


def test_everything_reachable_is_ok(tmp_path: Path, servers: dict):
    sources = {"*": _ccms(servers), "alex": {"kind": "prometheus", "url": servers["prom"].url},
               "emmy": {"kind": "replay", "archive": str(ARCHIVE)}, "fritz": {"kind": "synthetic"}}
    path = _config(tmp_path, sources=sources, nats=servers["nats"].url, hook=f"{sys.executable} -c pass")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    results = run_probes(load_config(path, env=ENV))
    assert [(r.what.split(" ")[0], r.ok) for r in results] == [
        ("job", True), ("archive", True), ("metric", True), ("metric", True), ("metric", True), ("metric", True),
        ("NATS", True), ("hook", True)], results
    details = {r.what: r.detail for r in results}
    assert details[f"metric source '*' (cc-metric-store {servers['ccms'].url})"] == "answered a query"
    assert details[f"metric source 'alex' (prometheus {servers['prom'].url})"].startswith("Prometheus 2.")
    assert details[f"archive {tmp_path / 'archive'}"] == "version 3, writable"
    assert details[f"job DB {tmp_path / 'job.db'}"] == "readable, schema 11, 0 jobs"
    assert details[f"hook command '{sys.executable} -c pass'"].endswith(f"-> {sys.executable}")
    # the write probe leaves nothing behind (the job DB may gain its WAL files)
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "job.db-" not in p.name)
    assert after == before

    run = subprocess.run([sys.executable, "-m", "ccarchive", "serve", "--config", path, "--probe"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, **ENV})
    assert run.returncode == 0 and run.stderr == "", run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 8 and all(line.startswith("ok: ") for line in lines), lines
    assert "natspw" not in run.stdout and servers["ccms"].token not in run.stdout


def test_each_failure_is_one_line_and_exit_1(tmp_path: Path, servers: dict):
    """Store unreachable, a token the store refuses, NATS down, hook command missing."""
    down = free_port()
    sources = {"*": {"kind": "cc-metric-store", "url": f"http://127.0.0.1:{down}", "token": "t"},
               "fritz": _ccms(servers, token="not-a-jwt")}
    path = _config(tmp_path, sources=sources, nats=f"nats://127.0.0.1:{free_port()}",
                   hook="/no/such/after-archive --verbose")
    run = subprocess.run([sys.executable, "-m", "ccarchive", "serve", "--config", path, "--check", "--probe"],
                         capture_output=True, text=True, timeout=60, env={**os.environ, **ENV})
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    errors = run.stderr.splitlines()
    assert len(errors) == 4, errors
    assert all(e.startswith("ccarchive serve: probe failed: ") for e in errors)
    assert f"metric source '*' (cc-metric-store http://127.0.0.1:{down})" in errors[0]
    assert "unreachable" in errors[0] and "Connection refused" in errors[0]
    assert "metric source 'fritz'" in errors[1] and "HTTP 401" in errors[1]
    assert errors[2].startswith("ccarchive serve: probe failed: NATS nats://127.0.0.1:")
    assert "cannot connect: ConnectionRefusedError" in errors[2]
    assert "'/no/such/after-archive' is not an executable on PATH" in errors[3]
    assert [line.split(":")[0] for line in run.stdout.splitlines()] == ["ok", "ok"]  # job DB and archive


def test_a_server_that_never_answers_is_bounded(tmp_path: Path):
    """Accepts the connection, never reads: the probe gives up after its bound, with a message."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        path = _config(tmp_path, sources={"*": {"kind": "prometheus", "url": url}})
        results = run_probes(load_config(path, env=ENV), timeout_s=1.0)
    source = next(r for r in results if r.what.startswith("metric source"))
    assert not source.ok and "did not answer within 1 s" in source.detail


def test_archive_and_job_db_failures(tmp_path: Path):
    arch = tmp_path / "v2"
    arch.mkdir()
    (arch / "version.txt").write_text("2\n")
    path = _config(tmp_path, sources={"*": {"kind": "synthetic"}}, archive={"kind": "file", "path": str(arch)})
    (tmp_path / "job.db").write_text("not a database")
    results = {r.what.split(" ")[0]: r for r in run_probes(load_config(path, env=ENV))}
    assert not results["archive"].ok and "unsupported job archive version '2'" in results["archive"].detail
    assert not results["job"].ok and "file is not a database" in results["job"].detail
    assert results["metric"].ok and results["metric"].detail == "generated data, nothing to probe"
    (arch / "version.txt").unlink()
    with pytest.raises(Exception, match="no version.txt"):
        probe_archive(str(arch))


def test_sqlite_archive_write_probe_changes_nothing(tmp_path: Path):
    url = f"sqlite://{tmp_path / 'archive.db'}"
    open_archive(url, create=True)
    before = (tmp_path / "archive.db").read_bytes()
    assert probe_archive(url) == "version 3, writable"
    import sqlite3

    with sqlite3.connect(tmp_path / "archive.db") as conn:
        keys = [k for (k,) in conn.execute("SELECT key FROM metadata")]
    assert keys == ["version"]
    assert len((tmp_path / "archive.db").read_bytes()) == len(before)
