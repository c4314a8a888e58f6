"""The real cc-metric-store (ClusterCockpit's own server, release v0.1.1) on loopback, for the tests
and ``bench/``.

Why the real binary: it is what the archiver talks to in production, so correctness and speed are
judged against it (``tests/ccms_server.py`` stays for faults the real server cannot produce).  The
binary is ``$CCARCHIVE_CCMS_BINARY``, by default the one in the test-server directory next to the
repository (:data:`DEFAULT_BINARY`).  Under ``CI=true`` a missing binary fails the tests that need
it; elsewhere they are skipped with a one-line reason.

Facts of the server this module is built around (observed on the binary):

* config: ``metrics`` (frequency, aggregation ``"sum" | "avg" | null``), ``http-api.address``,
  ``retention-in-memory`` and ``jwt-public-key`` (base64 of the raw 32-byte Ed25519 key); requests
  carry ``Authorization: Bearer <JWT signed with EdDSA>``, anything else gets HTTP 401;
* there is no health endpoint: the server is ready when ``GET /api/query`` answers (any status);
* writes are line protocol, ``POST /api/write?cluster=C``, one sample a line with timestamps in
  **seconds** (other units are silently stored at the receive time), each series written forward
  in time (a sample before the series' current 512-sample buffer is refused with HTTP 400 and the
  rest of the body dropped); a missing sample is a line not written;
* the store keeps at most ``retention-in-memory`` of data before *now*, so fixtures write data
  relative to the current time;
* SIGTERM stops it (it writes checkpoints of what arrived since its own start into its directory).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import time
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from procs import stop_process

BINARY_ENV = "CCARCHIVE_CCMS_BINARY"
DEFAULT_BINARY = Path(__file__).resolve().parent.parent.parent / "shared" / "servers" / "cc-metric-store" / \
    "cc-metric-store"
READY_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0
WRITE_TIMEOUT = 120.0


def binary() -> Path | None:
    """The server binary, or None when it is not there."""
    path = Path(os.environ.get(BINARY_ENV) or DEFAULT_BINARY)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def missing_reason() -> str:
    return (f"cc-metric-store binary not found at {os.environ.get(BINARY_ENV) or DEFAULT_BINARY} "
            f"(set {BINARY_ENV})")


def require_binary() -> Path:
    """The binary; a missing one fails under CI=true and skips the calling test elsewhere."""
    import pytest

    path = binary()
    if path is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(missing_reason() + "; CI must run the real-server tests")
        pytest.skip(missing_reason())
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metrics_of(*clusters: Any) -> dict[str, tuple[int, str | None]]:
    """The store's metric list for clusters: name -> (frequency, aggregation), as cc-backend's
    cluster.json gives them (the first cluster wins where names repeat)."""
    out: dict[str, tuple[int, str | None]] = {}
    for cluster in clusters:
        for m in cluster.metric_config:
            out.setdefault(m.name, (int(m.timestep), m.aggregation if m.aggregation in ("sum", "avg") else None))
    return out


def now_minute() -> int:
    """The current time rounded down to a whole minute (the store's grid at 60 s)."""
    return int(time.time()) // 60 * 60


class RealCCMS:
    """One ``cc-metric-store`` process with a fresh store in ``workdir``.

    ``url`` and ``token`` are what a source needs; :meth:`write` / :meth:`write_series` fill the
    store; :meth:`query` and :meth:`request` talk to it directly for behaviour tests.
    """

    def __init__(self, workdir: Path, metrics: dict[str, tuple[int, str | None]], *,
                 retention: str = "240h", path: Path | None = None) -> None:
        self.binary = path or binary()
        if self.binary is None:
            raise RuntimeError(missing_reason())
        self.workdir = Path(workdir)
        self.metrics = dict(metrics)
        self.retention = retention
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "cc-metric-store.log"
        self.token, self.public_key = _key_pair()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- process

    def start(self) -> RealCCMS:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(5):
            self.port = free_port()
            config = self.workdir / "config.json"
            config.write_text(json.dumps(self._config()))
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen([str(self.binary), "-config", str(config)], cwd=self.workdir,
                                             stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                             start_new_session=True)
            if self._wait_ready():
                return self
            self.stop()
            if attempt == 4:
                raise RuntimeError(f"cc-metric-store did not start; log: {self.log_path.read_text()[-2000:]}")
        raise AssertionError("unreachable")

    def _config(self) -> dict[str, Any]:
        return {
            "metrics": {name: {"frequency": f, "aggregation": agg} for name, (f, agg) in self.metrics.items()},
            "checkpoints": {"interval": "100h", "directory": str(self.workdir / "checkpoints"), "restore": "1h"},
            "archive": {"interval": "500h", "directory": str(self.workdir / "archive")},
            "http-api": {"address": f"127.0.0.1:{self.port}", "https-cert-file": None, "https-key-file": None},
            "retention-in-memory": self.retention,
            "nats": None,
            "jwt-public-key": self.public_key,
        }

    def _wait_ready(self) -> bool:
        """Bounded poll: ready when ``GET /api/query`` answers with any HTTP status."""
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False  # e.g. the port was taken meanwhile: the caller retries with another
            try:
                self.request("GET", "/api/query", b"", timeout=1.0, token=None)
                return True
            except OSError:
                time.sleep(0.01)  # polling interval of a bounded readiness check
        return False

    def stop(self) -> int | None:
        """SIGTERM to the server's PID, SIGKILL after a bound; returns the exit code."""
        proc, self.proc = self.proc, None
        return None if proc is None else stop_process(proc, signal.SIGTERM, STOP_TIMEOUT)

    def __enter__(self) -> RealCCMS:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- HTTP

    def request(self, method: str, path: str, body: bytes = b"", *, token: str | None = "",
                timeout: float = WRITE_TIMEOUT) -> tuple[int, dict[str, str], bytes]:
        """One request; ``token=""`` sends the fixture's token, ``None`` none.  Returns (status,
        headers with lower-case names, body)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Content-Type": "application/json"}
            if token is not None:
                headers["Authorization"] = f"Bearer {token or self.token}"
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def write(self, lines: bytes | str | Iterable[bytes], cluster: str) -> None:
        """POST line protocol; anything but HTTP 200 raises (with the server's text)."""
        body = lines.encode() if isinstance(lines, str) else lines if isinstance(lines, bytes) else b"".join(lines)
        status, _, text = self.request("POST", f"/api/write?cluster={cluster}", body)
        if status != 200:
            raise RuntimeError(f"cc-metric-store refused a write: HTTP {status}: {text[:300]!r}")

    def write_series(self, cluster: str, metric: str, host: str, times: Any, values: Any, *,
                     type_: str = "node", type_id: str | int | None = None, decimals: int = 2) -> None:
        self.write(line_protocol(metric, host, times, values, type_=type_, type_id=type_id, decimals=decimals),
                   cluster)

    def query(self, body: dict[str, Any]) -> dict[str, Any]:
        """``GET /api/query?version=v2`` with the fixture's token; the decoded answer."""
        status, _, text = self.request("GET", "/api/query?version=v2", json.dumps(body).encode())
        if status != 200:
            raise RuntimeError(f"cc-metric-store query failed: HTTP {status}: {text[:300]!r}")
        answer: dict[str, Any] = json.loads(text)
        return answer


def _key_pair() -> tuple[str, str]:
    """A fresh Ed25519 key: (a JWT signed with it, the public key as the server's config wants it)."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    private = Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    token = jwt.encode({"sub": "ccarchive-tests", "roles": ["api"]}, private, algorithm="EdDSA")
    return token, base64.b64encode(raw).decode()


def line_protocol(metric: str, host: str, times: Any, values: Any, *, type_: str = "node",
                  type_id: str | int | None = None, decimals: int = 2) -> bytes:
    """The samples of one series as line protocol, built with numpy (millions of lines a second):
    fixed-width values with ``decimals`` digits (leading zeros, which the server accepts), one line
    per finite value; NaN values are not written (a gap)."""
    if decimals < 1:
        raise ValueError("decimals must be >= 1")
    tags = f"{metric},hostname={host},type={type_}" + ("" if type_id is None else f",type-id={type_id}")
    prefix = np.frombuffer(f"{tags} value=".encode(), dtype=np.uint8)
    v = np.asarray(values, dtype=np.float64)
    t = np.asarray(times, dtype=np.int64)
    keep = ~np.isnan(v)
    v, t = v[keep], t[keep]
    if not len(v):
        return b""
    if (t < 10**9).any() or (t >= 10**10).any():
        raise ValueError("timestamps must be Unix seconds (10 digits)")
    scaled = np.rint(np.abs(v) * 10**decimals).astype(np.int64)
    digits = max(len(str(int(scaled.max()))), decimals + 1)  # digits of the scaled value
    p = len(prefix)
    width = p + 1 + digits + 1 + 1 + 10 + 1  # prefix, sign, digits and the dot, space, time, newline
    out = np.empty((len(v), width), dtype=np.uint8)
    out[:, :p] = prefix
    out[:, p] = np.where(v < 0, ord("-"), ord("0"))
    col = p + digits + 1  # the last digit
    for k in range(digits):
        if k == decimals:
            out[:, col] = ord(".")
            col -= 1
        out[:, col] = ord("0") + scaled % 10
        scaled //= 10
        col -= 1
    tcol = p + digits + 2
    out[:, tcol] = ord(" ")
    for k in range(10):
        out[:, tcol + 10 - k] = ord("0") + t % 10
        t = t // 10
    out[:, -1] = ord("\n")
    return out.tobytes()


def fill_job(server: RealCCMS, cluster: Any, jobs: list[Any], *, seed: int = 0, gap_rate: float = 0.001,
             late: int = 0, core_scope_max_nodes: int = 8, threads: int = 2) -> int:
    """Random 2-decimal data for every native series the jobs' scope plans need, host by host on
    ``threads`` writers (for benchmarks: nothing is kept).  Gaps (single missing samples) are
    inside the series.  With ``late``, per job the first host's first native id of every metric
    starts that many samples late (a store aggregate is then cut to it), and so does the second
    host's last id of the first metric that has ids (store-side aggregation answers an error).
    Returns the number of samples written."""
    from concurrent.futures import ThreadPoolExecutor

    from ccarchive.loading import native_requests
    from ccarchive.scopes import plan_job

    work = []
    for job in jobs:
        by_metric: dict[str, list[Any]] = {}
        for p in plan_job(job, cluster, core_scope_max_nodes=core_scope_max_nodes):
            by_metric.setdefault(p.metric.name, []).append(p)
        misaligned = next((name for name, plans in by_metric.items() if plans[0].native_scope != "node"), None)
        for name, plans in by_metric.items():
            metric = plans[0].metric
            n = job.duration // metric.timestep + 1
            times = job.start_time + metric.timestep * np.arange(n)
            for k, req in enumerate(native_requests(plans)):
                delays = {0: late} if k == 0 else {-1: late} if k == 1 and name == misaligned else {}
                work.append((name, metric.scope, req, times, delays))

    def one(item: tuple[str, str, Any, Any, dict[int, int]]) -> int:
        name, scope, req, times, delays = item
        rng = np.random.default_rng([seed, zlib.crc32(f"{name}/{req.hostname}".encode())])
        ids = req.ids if req.ids is not None else (None,)
        values = np.round(rng.uniform(0.0, 100.0, (len(ids), len(times))), 2)
        values[:, 1:-1][rng.random((len(ids), len(times) - 2)) < gap_rate] = np.nan
        for row, delay in delays.items():
            values[row, :delay] = np.nan
        body = b"".join(line_protocol(name, req.hostname, times, v, type_=scope, type_id=i)
                        for i, v in zip(ids, values, strict=True))
        server.write(body, cluster.name)
        return int(np.count_nonzero(~np.isnan(values)))

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(one, work))


def running(workdir: Path, metrics: dict[str, tuple[int, str | None]], **kw: Any) -> Iterator[RealCCMS]:
    """Start a server for a fixture (skip or fail as :func:`require_binary` says), yield it, stop it."""
    server = RealCCMS(workdir, metrics, path=require_binary(), **kw).start()
    try:
        yield server
    finally:
        server.stop()
