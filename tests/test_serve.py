"""``ccarchive serve`` end to end: the service as a subprocess on loopback, a real nats-server, real
SQLite files, tokens signed by the tests.  Plus unit tests of the stop payload, line protocol and
JWT checks.

Readiness and completion are bounded polls (``/healthz``, the job DB, ``/metrics``), never sleeps.
One service (with NATS) serves the module's request tests; the SIGTERM tests start their own.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from nats_fixture import NatsServer, free_port, stop_event_line

from ccarchive.archive import open_archive
from ccarchive.demo import embedded_cluster
from ccarchive.jobdb import JobDB
from ccarchive.service import auth as auth_module
from ccarchive.service.auth import Authenticator, AuthError, api_role_ok
from ccarchive.service.nats import LineProtocolError, parse_line_protocol
from ccarchive.service.stopjob import StopJobError, parse_stop_request
from ccarchive.sources.synthetic import synthetic_job

TESTS = Path(__file__).parent
KEY = Ed25519PrivateKey.generate()
PUBLIC_KEY = base64.b64encode(KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
START = int(time.time()) // 3600 * 3600 - 2 * 86400
READY_TIMEOUT = 300.0  # first start compiles the numba kernels into the on-disk cache


def token(roles=("api",), key=KEY, **claims) -> str:
    return jwt.encode({"sub": "slurm-adapter", "roles": list(roles), "iat": int(time.time()), **claims},
                      key, algorithm="EdDSA")


API = token()


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)  # polling interval of a bounded wait, not synchronisation


class Service:
    """A job DB, an archive, a config.json and ``ccarchive serve`` as a subprocess."""

    def __init__(self, root: Path, *, nats: NatsServer | None = None, shutdown_timeout: str = "120s",
                 extra: dict | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.cluster = embedded_cluster("fritz")
        open_archive(str(root / "archive"), create=True).store_cluster(self.cluster)
        self.db_path = root / "job.db"
        self.db = JobDB.create(self.db_path)
        self.port = free_port()
        self.next_job_id = 1000
        cca = {"listen": f"127.0.0.1:{self.port}", "sources": {"*": {"kind": "synthetic"}},
               "grace-period": "1h", "reconcile-interval": "1h", "shutdown-timeout": shutdown_timeout,
               "log-level": "info", "retry": {"max-attempts": 2, "backoff": "0.1s"}, **(extra or {})}
        doc: dict = {"main": {"db": str(self.db_path)}, "archive": {"kind": "file", "path": str(root / "archive")},
                     "ccarchive": cca}
        if nats is not None:
            doc["nats"] = {"address": nats.url}
            doc["main"]["api-subjects"] = {"subject-job-event": "cc.job.event"}
        self.config = root / "config.json"
        self.config.write_text(json.dumps(doc))
        self.log = root / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    # -- process ------------------------------------------------------------------------------
    def start(self) -> Service:
        env = {**os.environ, "JWT_PUBLIC_KEY": PUBLIC_KEY,
               "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ccarchive.cli.serve_cmd", "--config", str(self.config)], stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True, cwd=self.root)
        wait_for(self._healthy, READY_TIMEOUT, "/healthz 200")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"ccarchive serve exited with {self.proc.returncode}:\n{self.log_text()[-3000:]}")
        try:
            return self.request("GET", "/healthz", timeout=2)[0] == 200
        except OSError:
            return False

    def terminate(self, timeout: float) -> tuple[int, float]:
        """SIGTERM; (exit code, seconds until exit)."""
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=timeout)
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    # -- HTTP ---------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: bytes | dict | None = None, tok: str | None = None,
                headers: dict | None = None, conn: http.client.HTTPConnection | None = None,
                timeout: float = 60) -> tuple[int, bytes]:
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        hdrs = dict(headers or {})
        if tok is not None:
            hdrs["Authorization"] = f"Bearer {tok}"
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            if own:
                conn.close()

    def metrics(self) -> dict[str, float]:
        status, text = self.request("GET", "/metrics")
        assert status == 200
        out = {}
        for line in text.decode().splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    # -- jobs ---------------------------------------------------------------------------------------
    def running_jobs(self, n: int, duration: int = 300) -> list[tuple[int, int, int]]:
        """Insert ``n`` running 1-node jobs; returns (db id, jobId, startTime) each."""
        jobs = []
        for _ in range(n):
            j = synthetic_job(self.cluster, "main", self.next_job_id, START + self.next_job_id, 1, duration)
            j.job_state, j.duration = "running", 0
            jobs.append(j)
            self.next_job_id += 1
        ids = self.db.insert_jobs(jobs)
        return [(i, j.job_id, j.start_time) for i, j in zip(ids, jobs, strict=True)]

    def rows(self, table: str = "job") -> list[tuple]:
        with sqlite3.connect(self.db_path) as c:
            return c.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()

    def status(self, db_id: int) -> tuple[str, int, int]:
        with sqlite3.connect(self.db_path) as c:
            return c.execute("SELECT job_state, duration, monitoring_status FROM job WHERE id = ?", (db_id,)).fetchone()

    def archived(self, db_id: int) -> bool:
        return self.status(db_id)[2] == 3

    def archive_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in (self.root / "archive").rglob("*") if p.is_file())


def stop_payload(job_id: int, start: int, stop: int | None = None, **kw) -> dict:
    return {"jobId": job_id, "cluster": "fritz", "startTime": start, "jobState": "completed",
            "stopTime": stop if stop is not None else start + 300, **kw}


def metric(m: dict[str, float], name: str) -> float:
    return m.get(name, 0.0)


def delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return metric(after, name) - metric(before, name)


@pytest.fixture(scope="module")
def nats_server(tmp_path_factory):
    server = NatsServer(tmp_path_factory.mktemp("nats")).start()
    try:
        yield server
    finally:
        rc = server.stop()
    assert rc == 0  # SIGINT: a clean exit


@pytest.fixture(scope="module")
def svc(tmp_path_factory, nats_server):
    s = Service(tmp_path_factory.mktemp("serve"), nats=nats_server)
    try:
        yield s.start()
        rc, _ = s.terminate(timeout=120)
        assert rc == 0, s.log_text()[-3000:]
    finally:
        s.kill()


# ---- unit tests: payload, line protocol, JWT --------------------------------------------------------


def test_stop_payload_is_decoded_strictly_like_go():
    r = parse_stop_request(b'{"jobId": 7, "cluster": "fritz", "startTime": 1, "jobState": "failed", "stopTime": 9}')
    assert (r.job_id, r.cluster, r.start_time, r.state, r.stop_time) == (7, "fritz", 1, "failed", 9)
    r = parse_stop_request('{"JOBID": 7, "cluster": null, "stopTime": 9}')  # Go matches keys case-insensitively
    assert (r.job_id, r.cluster, r.state) == (7, None, "")
    for body, message in [(b"{", "malformed JSON"), (b'{"jobId": 1, "foo": 2}', 'unknown field "foo"'),
                          (b'{"cluster": "fritz"}', "the field 'jobId' is required"),
                          (b'{"jobId": "1"}', "StopJobAPIRequest.jobId of type int64"),
                          (b'{"jobId": 1.5}', "of type int64"), (b'{"jobId": NaN}', "invalid JSON number"),
                          (b"[1]", "cannot unmarshal array into Go value"), (b"\xff", "not UTF-8")]:
        with pytest.raises(StopJobError, match=re.escape(message)) as exc:
            parse_stop_request(body)
        assert exc.value.status == 400


def test_line_protocol_events():
    line = stop_event_line(123, "fritz", 1000, 2000)
    (ev,) = parse_line_protocol(line)
    assert ev.measurement == "job" and ev.tags == {"function": "stop_job"}
    assert json.loads(ev.event) == {"jobId": 123, "cluster": "fritz", "startTime": 1000, "jobState": "completed",
                                    "stopTime": 2000}
    many = parse_line_protocol(b'job,function=start_job event="{}",x=1i 1\n# comment\n\n'
                               b'nodestate event="a b, c=d"\nwe\\ ird,t\\,a=v\\=1 other="x"')
    assert [(e.measurement, e.tags, e.event) for e in many] == [
        ("job", {"function": "start_job"}, "{}"), ("nodestate", {}, "a b, c=d"), ("we ird", {"t,a": "v=1"}, None)]
    for bad in (b"job", b"job,function event=\"x\"", b"job event=\"x\" notatime"):
        with pytest.raises(LineProtocolError):
            parse_line_protocol(bad)


def test_jwt_checks_like_cc_backend():
    auth = Authenticator(PUBLIC_KEY)
    ok = auth.authenticate({"Authorization": f"Bearer {API}"}, "127.0.0.1", require_api=True)
    assert ok is not None and ok.name == "slurm-adapter" and ok.roles == ("api",)
    assert auth.authenticate({"X-Auth-Token": token(("admin", "api"))}, "h", require_api=True) is not None
    other = Ed25519PrivateKey.generate()
    cases = [({}, 401, "missing token"), ({"X-Auth-Token": "abc"}, 401, "invalid token"),
             ({"X-Auth-Token": token(key=other)}, 401, "Signature verification failed"),
             ({"X-Auth-Token": token(exp=int(time.time()) - 10)}, 401, "expired"),
             ({"X-Auth-Token": jwt.encode({"roles": ["api"]}, "k" * 32, algorithm="HS256")}, 401, "only Ed25519"),
             ({"X-Auth-Token": token(("user", "api"))}, 403, "missing role: api"),
             ({"X-Auth-Token": token(("user",))}, 403, "missing role: api")]
    for headers, status, message in cases:
        with pytest.raises(AuthError, match=message) as exc:
            auth.authenticate(headers, "127.0.0.1", require_api=True)
        assert exc.value.status == status
    assert api_role_ok(["api"]) and api_role_ok(["admin", "api"]) and not api_role_ok(["user", "api"])
    limited = Authenticator(PUBLIC_KEY, allowed_ips=["10.0.0.1"])
    with pytest.raises(AuthError, match="unknown ip: 127.0.0.1"):
        limited.authenticate({"X-Auth-Token": API}, "127.0.0.1", require_api=True)
    assert limited.authenticate({"X-Auth-Token": API, "X-Real-Ip": "10.0.0.1"}, "127.0.0.1", require_api=True)


def test_a_verified_token_is_remembered_and_its_times_still_checked_each_time():
    now = [time.time()]
    auth = Authenticator(PUBLIC_KEY, clock=lambda: now[0])
    timed = token(exp=int(now[0]) + 3600, nbf=int(now[0]) - 60)
    user = auth.authenticate({"X-Auth-Token": timed}, "127.0.0.1", require_api=True)
    assert user is not None and len(auth._verified) == 1
    assert auth.authenticate({"X-Auth-Token": timed}, "127.0.0.1", require_api=True) == user  # remembered
    now[0] += 7200  # past exp: refused with the message of a token that was expired from the start
    with pytest.raises(AuthError, match="^invalid token: token has expired$") as exc:
        auth.authenticate({"X-Auth-Token": timed}, "127.0.0.1", require_api=True)
    assert exc.value.status == 401
    now[0] -= 7200 + 120  # before nbf
    with pytest.raises(AuthError, match="not yet valid"):
        auth.authenticate({"X-Auth-Token": timed}, "127.0.0.1", require_api=True)
    user_only = token(("user",))  # a remembered token still needs the role, every time
    for _ in range(2):
        with pytest.raises(AuthError, match="missing role: api") as exc:
            auth.authenticate({"X-Auth-Token": user_only}, "127.0.0.1", require_api=True)
        assert exc.value.status == 403
    bad = token(key=Ed25519PrivateKey.generate())  # a failed check is not remembered
    for _ in range(2):
        with pytest.raises(AuthError, match="Signature verification failed"):
            auth.authenticate({"X-Auth-Token": bad}, "127.0.0.1", require_api=True)
    assert bad not in auth._verified
    for i in range(auth_module.VERIFIED_TOKENS + 5):  # bounded
        auth.authenticate({"X-Auth-Token": token(jti=str(i))}, "127.0.0.1", require_api=True)
    assert len(auth._verified) <= auth_module.VERIFIED_TOKENS


# ---- end to end --------------------------------------------------------------------------------------


def test_stop_job_archives_job_and_updates_db(svc: Service):
    ((db_id, job_id, start),) = svc.running_jobs(1)
    before = svc.metrics()
    status, body = svc.request("POST", "/api/jobs/stop_job/", stop_payload(job_id, start), tok=API)
    assert status == 200, body
    job = json.loads(body)
    assert (job["id"], job["jobId"], job["jobState"], job["duration"], job["monitoringStatus"]) == (
        db_id, job_id, "completed", 300, 1)
    assert body.endswith(b"}\n") and list(job)[:2] == ["cluster", "subCluster"]  # Go's encoding of schema.Job
    wait_for(lambda: svc.archived(db_id), 120, "job archived")
    assert svc.status(db_id) == ("completed", 300, 3)
    meta = json.loads((svc.root / "archive" / "fritz" / "1" / f"{job_id % 1000:03d}" / str(start) / "meta.json")
                      .read_text())
    assert meta["monitoringStatus"] == 3 and meta["jobState"] == "completed" and meta["duration"] == 300
    after = wait_for(lambda: (m := svc.metrics())["ccarchive_jobs_archived_total"] >= before[
        "ccarchive_jobs_archived_total"] + 1 and m, 30, "archived counter")
    assert delta(before, after, "ccarchive_jobs_archived_total") == 1
    assert delta(before, after, 'ccarchive_stop_events_total{result="200",via="rest"}') == 1
    assert delta(before, after, 'ccarchive_triggers_total{result="queued",via="rest"}') == 1
    assert delta(before, after, "ccarchive_stop_to_archive_lag_seconds_count") == 1
    assert after["ccarchive_archive_bytes_written_total"] > before["ccarchive_archive_bytes_written_total"]
    assert any(k.startswith("ccarchive_archive_phase_seconds_count{") for k in after)
    assert after["ccarchive_worker_resident_memory_bytes"] > 10e6 and after["ccarchive_worker_up"] == 1
    assert after["ccarchive_queue_depth"] == 0 and after["ccarchive_in_flight"] == 0


def test_stop_of_cached_job_moves_it_from_job_cache(svc: Service):
    ((db_id, job_id, start),) = svc.running_jobs(1)
    cols = ("job_id, cluster, subcluster, start_time, hpc_user, project, cluster_partition, array_job_id, "
            "num_nodes, num_hwthreads, num_acc, shared, monitoring_status, smt, job_state, duration, walltime, "
            "footprint, energy, energy_footprint, resources, meta_data")
    with sqlite3.connect(svc.db_path) as c:  # what cc-backend's start_job leaves until its commit worker runs
        c.execute(f"INSERT INTO job_cache ({cols}) SELECT {cols} FROM job WHERE id = ?", (db_id,))
        c.execute("DELETE FROM job WHERE id = ?", (db_id,))
    status, body = svc.request("PUT", "/api/jobs/stop_job/", stop_payload(job_id, start, jobState="timeout"),
                               headers={"X-Auth-Token": API})
    assert status == 200, body
    new_id = json.loads(body)["id"]  # a job-table id (SQLite may reuse the freed one)
    assert svc.rows("job_cache") == [] and [r[1] for r in svc.rows() if r[0] == new_id] == [job_id]
    wait_for(lambda: svc.archived(new_id), 120, "cached job archived")
    assert svc.status(new_id) == ("timeout", 300, 3)


def test_nats_stop_event_archives_job_and_start_events_are_ignored(svc: Service, nats_server: NatsServer):
    wait_for(lambda: json.loads(svc.request("GET", "/healthz")[1]).get("nats") == "connected", 30, "NATS subscribed")
    (a, b) = svc.running_jobs(2)
    before = svc.metrics()
    rows = svc.rows()
    nats_server.publish("cc.job.event", b'job,function=start_job event="{\\"jobId\\":1}" 1\n'
                                        b'nodestate event="{}" 1')
    nats_server.publish("cc.job.event", stop_event_line(a[1], "fritz", a[2], a[2] + 300, "cancelled") + b"\n"
                        + stop_event_line(b[1], "fritz", b[2], b[2] + 300))
    wait_for(lambda: svc.archived(a[0]) and svc.archived(b[0]), 120, "NATS-stopped jobs archived")
    assert svc.status(a[0]) == ("cancelled", 300, 3) and svc.status(b[0]) == ("completed", 300, 3)
    m = svc.metrics()
    assert delta(before, m, 'ccarchive_nats_lines_total{kind="stop_job"}') == 2
    assert delta(before, m, 'ccarchive_nats_lines_total{kind="start_job"}') == 1
    assert delta(before, m, 'ccarchive_stop_events_total{result="200",via="nats"}') == 2
    assert m["ccarchive_nats_connected"] == 1 and m["ccarchive_nats_connection_failures_total"] == 0
    assert [r for r in svc.rows() if r[0] not in (a[0], b[0])] == [r for r in rows if r[0] not in (a[0], b[0])]
    # a stop event for an already stopped job changes nothing (cc-backend logs it)
    nats_server.publish("cc.job.event", stop_event_line(a[1], "fritz", a[2], a[2] + 999))
    wait_for(lambda: metric(svc.metrics(), 'ccarchive_stop_events_total{result="422",via="nats"}') >= 1, 30, "422")
    assert svc.status(a[0]) == ("cancelled", 300, 3)


def test_bad_requests_get_clear_errors_and_change_nothing(svc: Service):
    ((run_id, run_job, run_start),) = svc.running_jobs(1)
    ((done_id, done_job, done_start),) = svc.running_jobs(1)
    assert svc.request("POST", "/api/jobs/stop_job/", stop_payload(done_job, done_start), tok=API)[0] == 200
    wait_for(lambda: svc.archived(done_id), 120, "job archived")
    other = Ed25519PrivateKey.generate()
    cases = [
        ("POST", "/api/jobs/stop_job/", b'{"jobId": 1,', API, 400, "malformed JSON"),
        ("POST", "/api/jobs/stop_job/", b"[" * 100_000 + b"]" * 100_000, API, 400, "JSON nested too deeply"),
        ("POST", "/api/jobs/stop_job/", json.dumps(stop_payload(run_job, run_start, jobState="\ud800")).encode(),
         API, 400, "unpaired UTF-16 surrogate"),
        ("POST", "/api/jobs/stop_job/", json.dumps({**stop_payload(run_job, run_start), "\udc00": 1}).encode(),
         API, 400, "unknown field"),
        ("POST", "/api/jobs/stop_job/", {**stop_payload(run_job, run_start), "nodes": 1}, API, 400,
         'unknown field "nodes"'),
        ("POST", "/api/jobs/stop_job/", {"cluster": "fritz"}, API, 400, "the field 'jobId' is required"),
        ("POST", "/api/jobs/stop_job/", stop_payload(999999, run_start), API, 404, "finding job failed"),
        ("POST", "/api/jobs/stop_job/", stop_payload(done_job, done_start), API, 422, "job has already been stopped"),
        ("POST", "/api/jobs/stop_job/", stop_payload(run_job, run_start, stop=run_start - 1), API, 400,
         "must be larger/equal than startTime"),
        ("POST", "/api/jobs/stop_job/", stop_payload(run_job, run_start, jobState="finished"), API, 400,
         "invalid requested job state"),
        ("POST", "/api/jobs/stop_job/", stop_payload(run_job, run_start), None, 401, "missing token"),
        ("POST", "/api/jobs/stop_job/", stop_payload(run_job, run_start), token(key=other), 401,
         "Signature verification failed"),
        ("POST", "/api/jobs/stop_job/", stop_payload(run_job, run_start), token(exp=int(time.time()) - 5), 401,
         "expired"),
        ("POST", "/api/jobs/stop_job/", stop_payload(run_job, run_start), token(("user",)), 403,
         "missing role: api"),
        ("GET", "/api/jobs/stop_job/", None, API, 405, "not allowed"),
        ("POST", f"/api/ccarchive/archive/{run_id}", None, API, 409, "still running"),
        ("POST", f"/api/ccarchive/archive/{done_id}", None, API, 409, "already archived"),
        ("POST", "/api/ccarchive/archive/999999", None, API, 404, "no job with id 999999"),
        ("POST", f"/api/ccarchive/archive/{done_id}", None, token(("user",)), 403, "missing role: api"),
        ("GET", "/api/ccarchive/failed", None, None, 401, "missing token"),
        ("GET", "/nope", None, API, 404, "no such endpoint"),
    ]
    rows, cache, files = svc.rows(), svc.rows("job_cache"), svc.archive_files()
    negative_length = {"Content-Length": "-1"}
    cases.append(("POST", "/api/jobs/stop_job/", None, API, 400, "invalid Content-Length '-1'"))
    for method, path, body, tok, status, message in cases:
        headers = negative_length if message.startswith("invalid Content-Length") else None
        got, raw = svc.request(method, path, body, tok=tok, headers=headers)
        err = json.loads(raw)
        assert (got, err["status"]) == (status, http.client.responses[status]), (path, body, raw)
        assert message in err["error"], (message, err)
    assert (svc.rows(), svc.rows("job_cache"), svc.archive_files()) == (rows, cache, files)
    m = svc.metrics()
    assert metric(m, 'ccarchive_http_requests_total{code="400",endpoint="stop_job"}') >= 4
    assert metric(m, 'ccarchive_http_requests_total{code="401",endpoint="stop_job"}') >= 3


def test_admin_api_lists_failed_and_rearchives(svc: Service):
    ((db_id, job_id, start),) = svc.running_jobs(1)
    assert svc.request("POST", "/api/jobs/stop_job/", stop_payload(job_id, start), tok=API)[0] == 200
    wait_for(lambda: svc.archived(db_id), 120, "job archived")
    with sqlite3.connect(svc.db_path) as c:  # as if archiving had failed
        c.execute("UPDATE job SET monitoring_status = 2 WHERE id = ?", (db_id,))
    status, body = svc.request("GET", "/api/ccarchive/failed", tok=token(("admin",)))
    assert status == 200 and db_id in [j["id"] for j in json.loads(body)["jobs"]]
    status, body = svc.request("GET", "/api/ccarchive/failed?since=1970-01-02T00:00:00Z", tok=token(("admin",)))
    assert status == 200 and db_id in [j["id"] for j in json.loads(body)["jobs"]]  # ISO 8601 as well as seconds
    status, body = svc.request("POST", f"/api/ccarchive/archive/{db_id}", tok=API)
    assert status == 202 and json.loads(body)["result"] == "queued", body
    wait_for(lambda: svc.archived(db_id), 120, "job archived again")
    status, body = svc.request("POST", f"/api/ccarchive/archive/{db_id}?force=true", tok=API)
    assert status == 202, body
    status, body = svc.request("GET", "/api/ccarchive/status", tok=API)
    assert status == 200 and json.loads(body)["archiver"]["state"] == "running"
    assert "in_flight_db_id" in json.loads(body)["archiver"]  # a DB id, not the in_flight count of /metrics


@pytest.mark.timeout(1800)
def test_burst_of_1000_stop_requests_each_archived_exactly_once(svc: Service):
    jobs = svc.running_jobs(1000)
    before = svc.metrics()
    latencies: list[float] = []
    failures: list[tuple[int, bytes]] = []
    lock = threading.Lock()

    def client(part: list[tuple[int, int, int]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=300)  # keep-alive connection
        for _, job_id, start in part:
            t0 = time.monotonic()
            status, body = svc.request("POST", "/api/jobs/stop_job/", stop_payload(job_id, start), tok=API, conn=conn)
            with lock:
                latencies.append(time.monotonic() - t0)
                if status != 200:
                    failures.append((status, body))
        conn.close()

    writer_s: list[float] = []
    clients_done = threading.Event()

    def cc_backend_like_writer() -> None:
        """Another process writing the job DB (like cc-backend's start_job) about 20 times a second:
        it must never wait long, i.e. no stop handler holds a transaction while the queue is full."""
        while not clients_done.wait(0.05):  # pacing of a load generator, not synchronisation
            t0 = time.monotonic()
            with sqlite3.connect(svc.db_path, timeout=30) as c:
                c.execute("BEGIN IMMEDIATE")
                c.execute("UPDATE job SET walltime = walltime WHERE id = 1")
            writer_s.append(time.monotonic() - t0)

    t0 = time.monotonic()
    writer = threading.Thread(target=cc_backend_like_writer)
    writer.start()
    threads = [threading.Thread(target=client, args=(jobs[k::16],)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(900)
    burst_s = time.monotonic() - t0
    clients_done.set()
    writer.join(60)
    assert failures == [] and len(latencies) == 1000
    ids = [j[0] for j in jobs]

    def done() -> bool:
        with sqlite3.connect(svc.db_path) as c:
            n = c.execute(f"SELECT count(*) FROM job WHERE monitoring_status = 3 AND id IN "
                          f"({','.join(map(str, ids))})").fetchone()[0]
        return n == 1000

    wait_for(done, 900, "1000 jobs archived")
    total_s = time.monotonic() - t0
    after = wait_for(lambda: (m := svc.metrics())["ccarchive_pending_jobs"] == 0 and m, 60, "idle pipeline")
    assert delta(before, after, "ccarchive_jobs_archived_total") == 1000
    assert delta(before, after, 'ccarchive_triggers_total{result="queued",via="rest"}') == 1000
    from ccarchive.statestore import StateStore

    state = StateStore(svc.root / "ccarchive-state.db")
    assert {state.get(i).attempts for i in ids} == {1}  # each job went through the worker once
    assert max(writer_s) < 5.0, "the stop handler held the job DB while waiting for the queue"
    latencies.sort()
    print(f"\nburst: 1000 stop requests from 16 clients answered in {burst_s:.1f} s "
          f"(median {latencies[500] * 1000:.0f} ms, "
          f"p99 {latencies[990] * 1000:.0f} ms, max {latencies[-1]:.2f} s), all archived after {total_s:.1f} s; "
          f"concurrent DB writer max wait {max(writer_s) * 1000:.0f} ms")


@pytest.fixture
def own_service(tmp_path: Path):
    services: list[Service] = []

    def make(**kw) -> Service:
        services.append(Service(tmp_path / f"svc{len(services)}", **kw))
        return services[-1]

    yield make
    for s in services:
        s.kill()


def test_sigterm_drains_the_queue_and_exits_0(own_service):
    svc = own_service(shutdown_timeout="120s").start()
    jobs = svc.running_jobs(150)

    def client(part: list[tuple[int, int, int]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=300)
        for _, job_id, start in part:
            assert svc.request("POST", "/api/jobs/stop_job/", stop_payload(job_id, start), tok=API, conn=conn)[0] == 200
        conn.close()

    threads = [threading.Thread(target=client, args=(jobs[k::4],)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    m = wait_for(lambda: (m := svc.metrics())['ccarchive_triggers_total{result="queued",via="rest"}'] == 150 and m,
                 60, "150 jobs queued")
    assert m["ccarchive_pending_jobs"] > 0  # there is something to drain
    rc, seconds = svc.terminate(timeout=150)
    assert rc == 0, svc.log_text()[-3000:]
    assert seconds < 120
    assert all(svc.archived(db_id) for db_id, _, _ in jobs)
    assert "every queued job was archived" in svc.log_text()


def test_sigterm_timeout_exits_1_and_the_job_is_archived_after_restart(own_service, tmp_path: Path):
    faults, marker = tmp_path / "faults.json", tmp_path / "started"
    source = {"kind": "python", "class": "faulty_source:FaultySource", "faults_file": str(faults)}
    svc = own_service(shutdown_timeout="1s", extra={"sources": {"*": source}, "grace-period": 0}).start()
    ((db_id, job_id, start),) = svc.running_jobs(1)
    faults.write_text(json.dumps({"slow": {str(job_id): 5.0}, "started_marker": str(marker)}))
    assert svc.request("POST", "/api/jobs/stop_job/", stop_payload(job_id, start), tok=API)[0] == 200
    wait_for(marker.exists, 60, "slow job in flight")
    rc, seconds = svc.terminate(timeout=60)
    assert rc == 1 and seconds < 30, (rc, seconds)
    assert "shutdown timeout after 1 s: 1 jobs not archived" in svc.log_text()
    assert svc.status(db_id) == ("completed", 300, 1)  # stopped, still pending: not lost, not failed
    faults.unlink()
    svc.start()  # the reconciler's first pass finds the pending job
    wait_for(lambda: svc.archived(db_id), 120, "pending job archived after restart")
    rc, _ = svc.terminate(timeout=120)
    assert rc == 0


def test_parquet_output_from_config(own_service):
    """``formats: ["json", "parquet"]``: every archived job also lands in the Parquet dataset (flushed
    when the queue is idle), with the same data as its JSON entry."""
    svc = own_service(extra={"formats": ["json", "parquet"], "parquet-url": "jobs-ds"}).start()
    jobs = svc.running_jobs(5)
    for _, job_id, start in jobs:
        assert svc.request("POST", "/api/jobs/stop_job/", stop_payload(job_id, start), tok=API)[0] == 200
    wait_for(lambda: all(svc.archived(db_id) for db_id, _, _ in jobs), 120, "5 jobs archived")
    dataset = open_archive(f"parquet+{svc.root / 'jobs-ds'}")
    wait_for(lambda: len(list(dataset.iter_job_keys())) == 5, 60, "5 jobs in the Parquet dataset")
    archive = open_archive(str(svc.root / "archive"))
    for _, job_id, start in jobs:
        key = ("fritz", job_id, start)
        assert dataset.load_data_bytes(key) == archive.load_data_bytes(key)
        assert dataset.load_meta_bytes(key) == archive.load_meta_bytes(key)
    rc, _ = svc.terminate(timeout=60)
    assert rc == 0, svc.log_text()[-3000:]


# ---- hardening: full disk, connection storms, a full queue --------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    """A 16 MB tmpfs, mostly filled by the test (real ENOSPC from the kernel); skipped where mounting is not allowed."""
    mount = tmp_path / "svc0" / "archive"  # the archive of the first service own_service makes
    mount.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def test_full_disk_pauses_archiving_and_every_job_archives_when_space_returns(small_tmpfs: Path, own_service):
    """The archive fills up mid-burst: no job fails, no temporary file stays, /healthz and a metric
    say "storage full", and when space returns every job is archived without a manual retry."""
    svc = own_service(extra={"retry": {"max-attempts": 2, "backoff": "0.1s", "storage-full-backoff-max": "1s"}})
    assert svc.root / "archive" == small_tmpfs
    svc.start()
    filler = small_tmpfs / "filler"
    with open(filler, "wb") as f:  # leave about 600 kB: room for some jobs, not for 300
        free = os.statvfs(small_tmpfs).f_bavail * os.statvfs(small_tmpfs).f_frsize
        f.write(b"\0" * max(0, free - 600_000))
    jobs = svc.running_jobs(300)
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=60)
    for _, job_id, start in jobs:
        assert svc.request("POST", "/api/jobs/stop_job/", stop_payload(job_id, start), tok=API, conn=conn)[0] == 200
    conn.close()

    def paused() -> dict | None:
        with sqlite3.connect(svc.db_path) as c:
            failed = c.execute("SELECT count(*) FROM job WHERE monitoring_status = 2").fetchone()[0]
        assert not failed, f"{failed} jobs failed instead of pausing:\n{svc.log_text()[-3000:]}"
        status, body = svc.request("GET", "/healthz")
        doc = json.loads(body)
        return doc if status == 503 and doc["status"] == "storage-full" else None

    health = wait_for(paused, 300, "/healthz 503 storage-full")
    assert "No space left on device" in health["storageFull"]["error"], health
    m = svc.metrics()
    assert m["ccarchive_storage_full"] == 1 and m["ccarchive_storage_full_pauses_total"] >= 1
    archived_while_full = sum(svc.archived(i) for i, _, _ in jobs)
    assert 0 < archived_while_full < 300
    assert all(svc.status(i)[2] != 2 for i, _, _ in jobs), "a job failed on a full disk"
    assert not [p for p in small_tmpfs.rglob("*") if p.name.startswith(".") or "partial" in p.name]
    assert svc.log_text().count("archiving paused") == 1

    filler.unlink()
    t0 = time.monotonic()
    wait_for(lambda: all(svc.archived(i) for i, _, _ in jobs), 300, "all 300 jobs archived once space returned")
    recovery_s = time.monotonic() - t0
    assert wait_for(lambda: svc.request("GET", "/healthz")[0] == 200, 60, "/healthz 200 again")
    m = svc.metrics()
    assert m["ccarchive_storage_full"] == 0
    assert not [k for k in m if k.startswith("ccarchive_jobs_failed_total")], m  # no failure of any reason
    assert m["ccarchive_jobs_archived_total"] == 300
    assert not [p for p in small_tmpfs.rglob("*") if p.name.startswith(".") or "partial" in p.name]
    assert "archiving resumed" in svc.log_text()
    print(f"\nfull disk: {archived_while_full} of 300 jobs fitted, the rest archived {recovery_s:.1f} s after "
          f"space returned, 0 failed")


def test_listen_backlog_takes_256_simultaneous_connections(svc: Service):
    """256 clients connecting at the same instant all get an answer at once (a backlog of 5 drops
    SYNs: the kernel's retransmission makes those clients wait 1 s, 3 s, 7 s ...)."""
    listening = subprocess.run(["ss", "-Hltn", f"sport = :{svc.port}"], capture_output=True, text=True, timeout=30)
    if listening.returncode == 0 and listening.stdout.strip():
        assert int(listening.stdout.split()[2]) >= 512, listening.stdout  # Send-Q of a listener: its backlog
    barrier = threading.Barrier(256)
    results: list[tuple[int, float] | BaseException] = []
    lock = threading.Lock()

    def client() -> None:
        barrier.wait(timeout=60)
        t0 = time.monotonic()
        try:
            status = svc.request("GET", "/healthz", timeout=30)[0]
            out: tuple[int, float] | BaseException = (status, time.monotonic() - t0)
        except OSError as e:
            out = e
        with lock:
            results.append(out)

    threads = [threading.Thread(target=client) for _ in range(256)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert errors == [] and len(results) == 256
    assert {r[0] for r in results if not isinstance(r, BaseException)} == {200}
    slowest = max(r[1] for r in results if not isinstance(r, BaseException))
    print(f"\n256 simultaneous connections: all answered, slowest {slowest * 1000:.0f} ms")
    assert slowest < 0.9, "a connection waited for a SYN retransmission: the listen backlog overflowed"


def test_stop_answers_do_not_wait_for_a_full_queue(own_service, tmp_path: Path):
    """With the worker stuck on a slow job and 128 jobs queued, more stops on one keep-alive
    connection are answered at once; the jobs are archived later, each once."""
    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps({"slow_all": 2.0}))  # every metric fetch takes 2 s: a job takes ~20 s
    source = {"kind": "python", "class": "faulty_source:FaultySource", "faults_file": str(faults)}
    svc = own_service(extra={"sources": {"*": source}, "grace-period": 0}).start()
    jobs = svc.running_jobs(200)
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=60)
    latencies = []
    for _, job_id, start in jobs:
        t0 = time.monotonic()
        assert svc.request("POST", "/api/jobs/stop_job/", stop_payload(job_id, start), tok=API, conn=conn)[0] == 200
        latencies.append(time.monotonic() - t0)
    conn.close()
    m = svc.metrics()
    assert m["ccarchive_backlog_jobs"] >= 60 and m["ccarchive_pending_jobs"] == 200, m
    assert m['ccarchive_triggers_total{result="queued",via="rest"}'] == 200
    latencies.sort()
    print(f"\n200 stops behind a full queue on one connection: median {latencies[100] * 1000:.1f} ms, "
          f"max {latencies[-1] * 1000:.1f} ms")
    assert latencies[-1] < 5.0, "a stop answer waited for a queue slot (a job takes ~20 s here)"
    faults.write_text("{}")
    wait_for(lambda: all(svc.archived(i) for i, _, _ in jobs), 300, "200 jobs archived")
    after = svc.metrics()
    assert after["ccarchive_jobs_archived_total"] == 200 and after["ccarchive_backlog_jobs"] == 0
