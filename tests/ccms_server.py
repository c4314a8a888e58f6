"""A cc-metric-store stand-in for fault injection: the query API, in-process.

Why it stays next to the real server (tests/ccms_real.py, which judges correctness): the real
server cannot be made to fail on demand.  This one answers like cc-metric-store v0.1.1 where the
client depends on it, and can break in every way a client must survive:

* ``GET /api/query?version=v2`` (also ``/api/query/``) with a JSON body, ``Authorization:
  Bearer <JWT>`` checked as EdDSA against a public key (or a static token), else HTTP 401 with a
  text/plain body;
* ``aggreg: true`` or no ``type``: one entry per query (sum/avg of the selected buffers, or of
  all children of the host for a node query of a finer metric; members are read over the first
  member's range, so a later-starting first member cuts the answer and a later-starting other
  member is the error "data from lower granularities does not align"); ``aggreg: false``: one
  entry per type-id, in order;
* a missing host, metric or id: with ``missing = "error-entry"`` (v0.1.1, the default) an entry
  ``{"error": "metric or host not found"}`` in its slot; with ``missing = "omit"`` (v1.5) no entry;
  a metric the store does not know gives ``"unkown metric: X"``;
* ``from`` snaps to the first write, ``to`` is exclusive; ``with-padding`` is preset to true, so
  data is front-padded with ``null`` to ``from`` while ``from`` keeps the first real sample;
* ``data`` and ``avg``/``min``/``max`` with 3 decimals (``null`` for NaN), field order ``error,
  data, from, to, resolution, avg, min, max``; ``data`` omitted when empty; answers are sent with
  chunked transfer encoding.

Faults for error-path tests: ``server.fault = "status-500" | "bad-json" | "wrong-count" |
"non-numeric" | "slow"`` (slow waits ``slow_s`` before answering), ``server.fail_requests = n``
(the next n requests get HTTP 500), ``server.read_errors`` = {(host, metric)} for per-entry
errors, and ``server.gate = n``: each request waits (bounded) until n requests are in flight, to
observe the client's concurrency without timing.  Every request is recorded in
``server.requests``; the metrics in flight together are in ``server.together``.
"""

from __future__ import annotations

import json
import math
import threading
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NOT_FOUND = "metric or host not found"
GATE_TIMEOUT = 10.0


@dataclass
class Buffer:
    """One series as the store keeps it: samples at ``first + k * freq`` (NaN = not written)."""

    first: int
    freq: int
    values: list[float]

    @property
    def start(self) -> int:  # Go: newBuffer sets start = ts - freq/2
        return self.first - self.freq // 2

    def read(self, frm: int, to: int) -> tuple[list[float], int, int]:
        """Go ``buffer.read`` for a single buffer without successors."""
        if frm < self.first:
            frm = self.first
        out: list[float] = []
        t = frm
        while t < to:
            idx = (t - self.start) // self.freq
            if idx >= len(self.values):
                break
            out.append(math.nan if t < self.start else self.values[idx])
            t += self.freq
        return out, frm, t


@dataclass
class Store:
    """cluster -> host -> selector ("" for the host level, else e.g. "hwthread3") -> metric -> Buffer."""

    metrics: dict[str, tuple[int, str]] = field(default_factory=dict)  # name -> (frequency, aggregation)
    data: dict[str, dict[str, dict[str, dict[str, Buffer]]]] = field(default_factory=dict)

    def write(self, cluster: str, host: str, metric: str, first: int, values: list[float],
              type_: str | None = None, type_id: str | None = None) -> None:
        freq = self.metrics[metric][0]
        sel = "" if type_ is None else f"{type_}{type_id}"
        levels = self.data.setdefault(cluster, {}).setdefault(host, {}).setdefault(sel, {})
        levels[metric] = Buffer(first, freq, [float(v) for v in values])

    def read(self, cluster: str, host: str, sels: list[str] | None, metric: str, frm: int,
             to: int) -> tuple[list[float], int, int, int] | None:
        """Go ``MemoryStore.Read`` for one selector; None = no host or metric."""
        if metric not in self.metrics:
            raise KeyError(f"unkown metric: {metric}")
        freq, aggregation = self.metrics[metric]
        node = self.data.get(cluster, {}).get(host)
        if node is None:
            return None
        if sels is None:  # the host level itself, or all children aggregated
            bufs = [node[""][metric]] if metric in node.get("", {}) else \
                [lv[metric] for s, lv in sorted(node.items()) if s and metric in lv]
        else:
            bufs = [node[s][metric] for s in sels if metric in node.get(s, {})]
        if not bufs:
            return None
        acc: list[float] | None = None
        rfrom, rto = frm, to
        for b in bufs:  # later members are read over the first one's range, as the Go store does
            d, cf, ct = b.read(rfrom, rto)
            if acc is None:
                acc, rfrom, rto = d, cf, ct
                continue
            if cf != rfrom or len(d) != len(acc):
                raise ValueError("data from lower granularities does not align")
            acc = [a + x for a, x in zip(acc, d, strict=True)]
        assert acc is not None
        if len(bufs) > 1 and aggregation == "avg":
            acc = [a * (1.0 / len(bufs)) for a in acc]
        elif len(bufs) > 1 and aggregation != "sum":
            raise ValueError("invalid aggregation")
        return acc, rfrom, rto, freq


def _f(x: float, digits: int) -> str:
    return "null" if math.isnan(x) else f"{x:.{digits}f}"


def encode_entry(error: str | None, data: list[float], frm: int, to: int, res: int,
                 stats: tuple[float, float, float]) -> str:
    parts = []
    if error is not None:
        parts.append('"error":' + json.dumps(error))
    if data:
        parts.append('"data":[' + ",".join(_f(x, 3) for x in data) + "]")
    parts.append(f'"from":{frm},"to":{to},"resolution":{res}')
    parts.append(f'"avg":{_f(stats[0], 3)},"min":{_f(stats[1], 3)},"max":{_f(stats[2], 3)}')
    return "{" + ",".join(parts) + "}"


def _stats(data: list[float]) -> tuple[float, float, float]:
    xs = [x for x in data if not math.isnan(x)]
    if not xs:
        return (math.nan, math.nan, math.nan)
    return (sum(xs) / len(xs), min(xs), max(xs))


class CCMSServer:
    """The test server on a free loopback port; ``with CCMSServer(...) as s: s.url``."""

    def __init__(self, store: Store | None = None, *, public_key: Any = None, token: str | None = None) -> None:
        self.store = store or Store()
        self.public_key = public_key
        self.token = token
        self.fault: str | None = None
        self.missing = "error-entry"  # or "omit"
        self.fail_requests = 0  # answer this many more requests with HTTP 500
        self.gate = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.together: list[set[str]] = []  # metrics of the requests in flight when the gate opened
        self._flying: list[dict[str, Any]] = []
        self._gate = threading.Condition()
        self.slow_s = 5.0
        self.read_errors: set[tuple[str, str]] = set()
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread: threading.Thread | None = None

    def start(self) -> CCMSServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="ccms-test-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # releases a "slow" answer at once
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> CCMSServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- protocol

    def authorized(self, header: str | None) -> str | None:
        """None if the request may pass, else the error text."""
        if self.public_key is None and self.token is None:
            return None
        if not header or not header.startswith("Bearer "):
            return "missing bearer token"
        token = header[len("Bearer "):]
        if self.token is not None:
            return None if token == self.token else "wrong token"
        import jwt

        try:
            jwt.decode(token, self.public_key, algorithms=["EdDSA"])
        except jwt.PyJWTError as e:
            return f"invalid JWT: {e}"
        return None

    def answer(self, req: dict[str, Any]) -> str:
        cluster = req.get("cluster", "")
        frm, to = int(req.get("from", 0)), int(req.get("to", 0))
        with_padding = req.get("with-padding", True)  # preset before decoding, as the Go server does
        with_stats, with_data = req.get("with-stats", True), req.get("with-data", True)
        results = []
        for q in req.get("queries") or []:
            metric, host, type_ = q["metric"], q["host"], q.get("type")
            ids = q.get("type-ids") or []
            if q.get("aggreg") or type_ is None:
                sels: list[list[str] | None] = [None if type_ is None else [f"{type_}{i}" for i in ids]]
            else:
                sels = [[f"{type_}{i}"] for i in ids]
            entries = []
            for sel in sels:
                if (host, metric) in self.read_errors:
                    entries.append(encode_entry("injected read error", [], 0, 0, 0, (0.0, 0.0, 0.0)))
                    continue
                try:
                    got = self.store.read(cluster, host, sel, metric, frm, to)
                except (KeyError, ValueError) as e:
                    entries.append(encode_entry(str(e.args[0]), [], 0, 0, 0, (0.0, 0.0, 0.0)))
                    continue
                if got is None:
                    if self.missing == "error-entry":  # v0.1.1
                        entries.append(encode_entry(NOT_FOUND, [], 0, 0, 0, (0.0, 0.0, 0.0)))
                    continue  # v1.5: left out
                data, dfrom, dto, freq = got
                stats = _stats(data) if with_stats else (0.0, 0.0, 0.0)
                if with_padding and dfrom // freq > frm // freq:
                    data = [math.nan] * (dfrom // freq - frm // freq) + data
                entries.append(encode_entry(None, data if with_data else [], dfrom, dto, freq, stats))
            results.append("[" + ",".join(entries) + "]")
        if self.fault == "wrong-count" and results:
            results.pop()
        text = '{"results":[' + ",".join(results) + "]}"
        if self.fault == "non-numeric":
            text = text.replace('"data":[', '"data":["x",', 1)
        return text

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: str, content_type: str = "application/json") -> None:
                raw = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _send_chunked(self, body: str) -> None:
                raw = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(raw), 4096):
                    piece = raw[i:i + 4096]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")

            def _error(self, status: int, msg: str) -> None:
                self._send(status, json.dumps({"status": self.responses[status][0], "error": msg}) + "\n")

            def do_POST(self) -> None:
                self._error(405, "method not allowed")

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                if url.path not in ("/api/query", "/api/query/"):
                    self._error(404, "not found")
                    return
                try:
                    body = json.loads(raw or b"{}")
                except ValueError as e:
                    self._error(400, str(e))
                    return
                with server._lock:
                    server.requests.append({"path": url.path, "params": urllib.parse.parse_qs(url.query),
                                            "headers": dict(self.headers), "body": body})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                    failing = server.fail_requests > 0
                    server.fail_requests -= 1 if failing else 0
                    server._flying.append(body)
                if server.gate:
                    server.wait_for_gate()
                try:
                    self._respond(body, failing)
                finally:
                    with server._lock:
                        server.in_flight -= 1
                        server._flying.remove(body)

            def _respond(self, body: dict[str, Any], failing: bool) -> None:
                denied = server.authorized(self.headers.get("Authorization"))
                if denied:
                    self._send(401, denied + "\n", "text/plain; charset=utf-8")
                    return
                if failing or server.fault == "status-500":
                    self._error(500, "injected internal error")
                    return
                if server.fault == "slow" and server._stop.wait(server.slow_s):
                    return
                if server.fault == "bad-json":
                    self._send(200, '{"results": [[{"data": [1.0, 2.')
                    return
                self._send_chunked(server.answer(body))

        return Handler

    def wait_for_gate(self) -> None:
        """Hold requests until ``gate`` of them are in flight (at most GATE_TIMEOUT), note which
        metrics they asked for, and open the gate for good."""
        with self._gate:
            with self._lock:
                full = self.gate and self.in_flight >= self.gate
                if full:
                    self.together.append({q["metric"] for b in self._flying for q in b.get("queries") or []})
                    self.gate = 0
            if full:
                self._gate.notify_all()
            elif self.gate:
                self._gate.wait(GATE_TIMEOUT)


# ---- reference data shared by the source tests (ccms, Prometheus): what goes into a store and
# ---- what the archive must then hold, computed independently of ccarchive.loading.

Truth = dict[str, dict[tuple[str, "str | None"], Any]]  # metric -> (host, native id) -> float64 array


def make_truth(job: Any, cluster: Any, *, seed: int = 0, gap_rate: float = 0.02, core_scope_max_nodes: int = 8,
               metrics: Any = None) -> Truth:
    """Random 2-decimal native series (NaN gaps of 1-12 samples) for every native series the
    job's scope plan needs, on the job grid ``start + k * timestep``."""
    import numpy as np

    from ccarchive.loading import native_requests
    from ccarchive.scopes import plan_job

    rng = np.random.default_rng(seed)
    by_metric: dict[str, list[Any]] = {}
    for p in plan_job(job, cluster, core_scope_max_nodes=core_scope_max_nodes):
        if metrics is None or p.metric.name in metrics:
            by_metric.setdefault(p.metric.name, []).append(p)
    truth: Truth = {}
    for name, plans in by_metric.items():
        step = plans[0].metric.timestep
        n = job.duration // step + 1
        scale = float(rng.choice([1.0, 10.0, 100.0, 1000.0]))
        for req in native_requests(plans):
            for i in req.ids if req.ids is not None else (None,):
                v = np.round(rng.uniform(0.0, scale, n), 2)
                for s in np.flatnonzero(rng.random(n) < gap_rate):
                    v[s:s + int(rng.integers(1, 13))] = np.nan
                truth.setdefault(name, {})[(req.hostname, i)] = v
    return truth


def expected_data(job: Any, cluster: Any, truth: Truth, *, core_scope_max_nodes: int = 8) -> dict[tuple[str, str], Any]:
    """(metric, scope) -> {(host, id): series}: planned series as element-wise sum/avg of the
    members present in ``truth`` (NaN propagates), all-NaN native series counted as absent."""
    import numpy as np

    from ccarchive.scopes import plan_job

    out: dict[tuple[str, str], Any] = {}
    for plan in plan_job(job, cluster, core_scope_max_nodes=core_scope_max_nodes):
        native = truth.get(plan.metric.name, {})
        for ps in plan.series:
            keys = [(ps.hostname, None)] if ps.members is None else [(ps.hostname, m) for m in ps.members]
            rows = [native[k] for k in keys if k in native and not np.isnan(native[k]).all()]
            if not rows:
                continue
            agg = np.sum(rows, axis=0)
            if plan.metric.aggregation == "avg":
                agg = agg / len(rows)
            out.setdefault((plan.metric.name, plan.scope), {})[(ps.hostname, ps.id)] = agg
    return out


def assert_archived(archive: Any, job: Any, expected: dict[tuple[str, str], Any], *, atol: float = 0.0051) -> None:
    """The archived data and per-series statistics equal ``expected`` at archive precision
    (float32, 2 decimals; ``atol=0.0101`` where the store rounded an aggregate to 3 decimals before
    the archive rounds it to 2); no (metric, scope) more or less."""
    import numpy as np

    data = archive.load_data(job)
    got = {(m, s) for m, scopes in data.items() for s in scopes}
    assert got == set(expected), (sorted(got ^ set(expected)))
    for (metric, scope), series in expected.items():
        block = data[metric][scope]
        rows = {(h, i): n for n, (h, i) in enumerate(zip(block.hostnames, block.ids, strict=True))}
        assert set(rows) == set(series), (metric, scope, sorted(set(rows) ^ set(series)))
        for key, want in series.items():
            n = rows[key]
            have = block.series(n)
            assert len(have) == len(want), (metric, scope, key, len(have), len(want))
            ok = np.isclose(have, want, rtol=1e-6, atol=atol) | (np.isnan(have) & np.isnan(want))
            assert ok.all(), (metric, scope, key, np.flatnonzero(~ok)[:5], have[~ok][:5], want[~ok][:5])
            finite = want[~np.isnan(want)]
            stats = (finite.min(), finite.mean(), finite.max()) if finite.size else (0.0, 0.0, 0.0)
            assert np.allclose(block.statistics[n], stats, rtol=1e-6, atol=atol + 0.006), (metric, scope, key)


def run_pipeline(root: Any, cluster: Any, jobs: list[Any], source: dict[str, Any], *,
                 max_attempts: int = 3, timeout: float = 180.0) -> tuple[Any, Any, list[int], list[Any]]:
    """Archive ``jobs`` through the real pipeline (job DB, spawned worker, ``file://`` archive);
    returns (job DB, archive, db ids, result messages)."""
    from ccarchive.archive import open_archive
    from ccarchive.jobdb import JobDB
    from ccarchive.pipeline import Archiver, RetryPolicy, trigger_all
    from ccarchive.worker import WorkerConfig

    arch = open_archive(f"file://{root}/archive", create=True)
    arch.store_cluster(cluster)
    db = JobDB.create(root / "job.db")
    ids = db.insert_jobs(jobs)
    messages: list[Any] = []
    cfg = WorkerConfig(job_db=str(root / "job.db"), archive_url=f"file://{root}/archive",
                       state_db=str(root / "state.db"), source=source)
    a = Archiver(cfg, retry=RetryPolicy(max_attempts=max_attempts, base_s=0.05, cap_s=0.2),
                 on_result=messages.append)
    a.start()
    try:
        trigger_all(a, ids)
        assert a.wait_idle(timeout), "pipeline did not finish in time"
    finally:
        a.shutdown(30)
    return db, arch, ids, messages
