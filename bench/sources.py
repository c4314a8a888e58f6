"""Loading jobs from real metric stores: Prometheus and cc-metric-store.

cc-metric-store (the real v0.1.1 server, started by the bench; data written with its line
protocol): a 16-node x 72-hwthread x 4-metric x 1-day job and a 64-node fritz job with every
fritz metric (7 days; quick: 6 h).  Each load (``ccarchive.loading.load_job_data``: requests,
parsing, placing samples on the grid, aggregation to the archived scopes) is compared with a
**raw fetch** of the same requests in the same run (the same bodies on the same number of
threads, answers read and dropped): the ratio says how close the client gets to the server's own
speed.  For the 64-node job the bytes moved with store-side aggregation are compared with
cc-backend's request set for the job (one request, the store aggregates every node series), and
the archived node values with those aggregated here from native series.  Without the server
binary these rows are skipped.

Prometheus: 64 nodes x 7 days at 60 s (the node-scope job of the budgets).  The data set (``quick``: 5
metrics, else 20 node-scope metrics, random 2-decimal values with a few gaps) is back-filled into
the Debian ``prometheus`` server with promtool, one OpenMetrics file per 2-h block
(tests/prom_fixture.py).  The figure is the load phase of archiving (``load_job_data``: HTTP,
parsing, placing samples on the job grid) with the default bounded concurrency; the baseline is
the same source parsing answers with ``json.loads`` and per-sample conversion instead of the
compact-output fast path.  Back-fill and the end-to-end ``archive_job`` time are reported for
context.  Without prometheus/promtool these rows are skipped.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.scratch import scratch

TESTS = Path(__file__).resolve().parent.parent / "tests"


def _row(case: str, impl: str, seconds: float, samples: int, note: str = "",
         base: float | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"group": "sources", "case": case, "impl": impl, "seconds": seconds,
                           "throughput": samples / seconds / 1e6 if seconds > 0 else math.nan,
                           "unit": "Msamples/s", "note": note}
    if base is not None:
        row["vs_baseline"] = base / seconds
    return row


def run(quick: bool) -> list[dict[str, Any]]:
    """Bench rows for the Prometheus and the cc-metric-store loads."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    return prometheus_rows(quick) + ccms_rows(quick)


def prometheus_rows(quick: bool) -> list[dict[str, Any]]:
    """The 64-node x 7-day Prometheus load."""
    from prom_fixture import PROMETHEUS, PROMTOOL, PromSeries, PromServer, backfill, node_series, small_node_cluster

    if PROMETHEUS is None or PROMTOOL is None:
        return [{"group": "sources", "case": "prometheus 64 nodes x 7 d", "impl": "-", "seconds": math.nan,
                 "throughput": math.nan, "unit": "Msamples/s", "note": "skipped: prometheus/promtool not installed"}]
    from ccarchive.core import archive_job
    from ccarchive.loading import load_job_data
    from ccarchive.sources import prometheus
    from ccarchive.sources.synthetic import synthetic_job

    n_metrics = 5 if quick else 20
    repeats = 1 if quick else 3
    cluster = small_node_cluster(n_metrics)
    start = int(time.time()) // 3600 * 3600 - 10 * 86400
    job = synthetic_job(cluster, "main", 64_000, start, 64, 7 * 86400)
    case = f"prometheus 64 nodes x {n_metrics} metrics x 7 d @60 s"
    rows: list[dict[str, Any]] = []
    with scratch("prom") as root:
        t0 = time.perf_counter()
        series = [PromSeries(m, {"instance": h}, job.start_time + 60.0 * np.arange(len(v)), v)
                  for m, h, v in node_series(job, [m.name for m in cluster.metric_config], gap_rate=0.001)]
        written = backfill(series, root / "data", root / "om")
        rows.append(_row(case, "back-fill: OpenMetrics per 2-h block + promtool x2", time.perf_counter() - t0,
                         written, "test set-up, not archiving"))
        with PromServer(root / "data", root / "prometheus.log") as server:
            spec = prometheus.PrometheusSource(server.url)

            def load() -> float:
                t = time.perf_counter()
                data, report = load_job_data(job, cluster, spec)
                assert not report.missing and len(data) == n_metrics
                return time.perf_counter() - t

            load()  # connections, server caches
            prometheus.FAST_PARSE = False
            try:
                base = min(load() for _ in range(repeats))
            finally:
                prometheus.FAST_PARSE = True
            fast = min(load() for _ in range(repeats))
            rows.append(_row(case, "load, json.loads parser (baseline)", base, written))
            rows.append(_row(case, f"load, fast matrix parser, {spec.max_concurrency} threads", fast, written,
                             f"{written / 1e6:.1f} M samples, {spec.max_points:,} points/request", base))
            t = time.perf_counter()
            result = archive_job(job, source=spec, archive=None, cluster=cluster)
            total = time.perf_counter() - t
            phases = ", ".join(f"{k} {v:.2f} s" for k, v in result.phases.items())
            rows.append(_row(case, "archive_job (load + statistics + encode)", total, written, phases))
    return rows


# -- cc-metric-store ---------------------------------------------------------------------------------

RATIO_BUDGET = 1.5
BYTES_BUDGET = 1.2


def ccms_rows(quick: bool) -> list[dict[str, Any]]:
    """The 16 x 72 x 4 x 1 d and the 64-node fritz job from the real cc-metric-store."""
    from ccms_real import RealCCMS, binary, metrics_of, missing_reason

    from ccarchive.demo import embedded_cluster

    if binary() is None:
        return [{"group": "sources", "case": "cc-metric-store", "impl": "-", "seconds": math.nan,
                 "throughput": math.nan, "unit": "Msamples/s", "note": f"skipped: {missing_reason()}"}]
    fritz = embedded_cluster("fritz")
    rows: list[dict[str, Any]] = []
    with scratch("ccms") as root, RealCCMS(root, metrics_of(fritz), retention="240h") as server:
        _warm_up(server, fritz)
        rows += _hwthread_job_rows(server, _only_metrics(fritz, ["cpu_user", "flops_any", "flops_dp", "ipc"]),
                                   quick)
        rows += _large_job_rows(server, fritz, 6 * 3600 if quick else 7 * 86400, quick)
    return rows


def _only_metrics(cluster: Any, names: list[str]) -> Any:
    """The cluster with only the named metrics (a 4-metric fritz)."""
    import json as _json

    from ccarchive.cluster import load_cluster

    raw = _json.loads((Path(__file__).resolve().parent.parent / "src" / "ccarchive" / "clusters" /
                       f"{cluster.name}.json").read_text())
    raw["metricConfig"] = [m for m in raw["metricConfig"] if m["name"] in names]
    return load_cluster(raw)


class _Recorder:
    """Wraps a source's HTTP client: every request (for the raw fetch) and the bytes answered."""

    def __init__(self, src: Any) -> None:
        self.requests: list[tuple[bytes, float]] = []
        self.bytes = 0
        self._send = src.client.request
        src.client.request = self._request

    def _request(self, method: str, path: str, **kw: Any) -> bytes:
        raw: bytes = self._send(method, path, **kw)
        self.requests.append((kw["body"], kw["timeout"]))
        self.bytes += len(raw)
        return raw

    def samples(self) -> int:
        return _samples_asked(body for body, _ in self.requests)


def _samples_asked(bodies: Any) -> int:
    """Samples asked for: one per native id (or aggregated query) and 60-s step."""
    import json as _json

    n = 0
    for body in bodies:
        b = _json.loads(body)
        steps = (b["to"] - 1 - b["from"]) // 60 + 1
        n += sum(1 if q.get("aggreg") else len(q.get("type-ids") or (0,)) for q in b["queries"]) * steps
    return n


def _raw_fetch(server: Any, requests: list[tuple[bytes, float]], threads: int) -> tuple[float, int]:
    """The same request bodies on ``threads`` threads, answers read and dropped: (seconds, bytes)."""
    from ccarchive.sources.http import HttpClient, run_bounded

    client = HttpClient(server.url, headers={"Authorization": f"Bearer {server.token}"}, pool_size=threads)
    try:
        def one(req: tuple[bytes, float]) -> int:
            return len(client.request("GET", "/api/query", params={"version": "v2"}, body=req[0], timeout=req[1]))

        run_bounded(one, requests[:threads], threads)  # open the connections
        t = time.perf_counter()
        got = sum(run_bounded(one, requests, threads))
        return time.perf_counter() - t, got
    finally:
        client.close()


def _timed_load(job: Any, cluster: Any, src: Any) -> tuple[float, Any]:
    from ccarchive.loading import load_job_data

    t = time.perf_counter()
    data, report = load_job_data(job, cluster, src)
    return time.perf_counter() - t, data


def _warm_up(server: Any, cluster: Any) -> None:
    """JIT caches and connections: one small job through both load paths."""
    from ccms_real import fill_job, now_minute

    from ccarchive.sources.ccms import CCMetricStoreSource
    from ccarchive.sources.synthetic import synthetic_job

    job = synthetic_job(cluster, "main", 1, now_minute() - 2 * 3600, 9, 600, first_node=900)
    fill_job(server, cluster, [job])
    for aggregate in (False, True):
        _timed_load(job, cluster, CCMetricStoreSource(server.url, server.token, store_aggregation=aggregate))


def _fill_row(case: str, server: Any, cluster: Any, job: Any, **kw: Any) -> dict[str, Any]:
    from ccms_real import fill_job

    t = time.perf_counter()
    written = fill_job(server, cluster, [job], **kw)
    return _row(case, "fill: line protocol, 2 writers", time.perf_counter() - t, written, "test set-up, not archiving")


def _load_rows(case: str, server: Any, job: Any, cluster: Any, repeats: int,
               store_aggregation: bool = False) -> tuple[list[dict[str, Any]], Any, _Recorder]:
    """Load and raw fetch of the same requests; rows with samples/s and the ratio."""
    from ccarchive.sources.ccms import CCMetricStoreSource

    src = CCMetricStoreSource(server.url, server.token, store_aggregation=store_aggregation)
    best, raw, data, rec = math.inf, math.inf, None, _Recorder(src)
    for _ in range(repeats):  # load and raw fetch in turns: both see the same (shared) machine
        rec.requests, rec.bytes = [], 0
        seconds, data = _timed_load(job, cluster, src)
        best = min(best, seconds)
        raw = min(raw, _raw_fetch(server, rec.requests, src.max_concurrency)[0])
    samples = rec.samples()
    ratio = best / raw
    what = "store-aggregated node series" if store_aggregation else "native series"
    rows = [
        _row(case, f"raw fetch: same {len(rec.requests)} requests, {src.max_concurrency} threads, bytes read",
             raw, samples, f"{rec.bytes / 1e6:.1f} MB"),
        _row(case, f"load, {what}, {src.max_concurrency} threads", best, samples,
             f"{samples / 1e6:.2f} M samples, {rec.bytes / 1e6:.1f} MB; {ratio:.2f}x the raw fetch"),
        {"group": "sources", "case": case, "impl": f"load / raw fetch ({what})", "seconds": best,
         "throughput": ratio, "unit": "x raw fetch", "budget": f"load <= {RATIO_BUDGET}x raw fetch",
         "pass": ratio <= RATIO_BUDGET, "note": f"raw {raw:.3f} s"},
    ]
    return rows, data, rec


def _hwthread_job_rows(server: Any, cluster: Any, quick: bool) -> list[dict[str, Any]]:
    from ccms_real import now_minute

    from ccarchive.sources.synthetic import synthetic_job

    job = synthetic_job(cluster, "main", 16072, now_minute() - 86400 - 3600, 16, 86400)
    case = "cc-metric-store 16 nodes x 72 hwthreads x 4 metrics x 1 d"
    rows = [_fill_row(case, server, cluster, job)]
    load, _, _ = _load_rows(case, server, job, cluster, 1 if quick else 5)
    return rows + load


def _cc_backend_request(job: Any, cluster: Any) -> bytes:
    """cc-backend's archiving request for a job above the core-scope limit: every metric at node
    scope, finer metrics aggregated by the store, one request with statistics."""
    import json as _json

    from ccarchive.scopes import plan_job

    queries: list[dict[str, Any]] = []
    for plan in plan_job(job, cluster):
        for s in plan.series:
            if s.members is None:
                queries.append({"metric": plan.metric.name, "host": s.hostname, "resolution": 0, "aggreg": False})
            else:
                queries.append({"type": plan.native_scope, "metric": plan.metric.name, "host": s.hostname,
                                "resolution": 0, "type-ids": list(s.members), "aggreg": True})
    return _json.dumps({"cluster": job.cluster, "queries": queries, "for-all-nodes": None, "from": job.start_time,
                        "to": job.start_time + job.duration, "with-stats": True, "with-data": True}).encode()


def _large_job_rows(server: Any, cluster: Any, duration: int, quick: bool) -> list[dict[str, Any]]:
    from ccms_real import now_minute

    from ccarchive.sources.synthetic import synthetic_job

    job = synthetic_job(cluster, "main", 64007, now_minute() - duration - 3600, 64, duration, first_node=100)
    span = f"{duration // 86400} d" if duration % 86400 == 0 else f"{duration // 3600} h"
    case = f"cc-metric-store 64 nodes x {span}, every fritz metric"
    rows = [_fill_row(case, server, cluster, job, late=3)]  # late members: cut answers, one error
    native_rows, native, _ = _load_rows(case, server, job, cluster, 1)
    agg_rows, aggregated, rec = _load_rows(case, server, job, cluster, 1 if quick else 2, store_aggregation=True)
    body = _cc_backend_request(job, cluster)
    cc_s, cc_bytes = _raw_fetch(server, [(body, 600.0)], 1)
    seconds = agg_rows[1]["seconds"]
    fallback = sum(1 for b, _ in rec.requests for q in _json_queries(b) if q.get("type") and not q["aggreg"])
    diff, off, values = _compare(native, aggregated)
    ratio = rec.bytes / cc_bytes
    return rows + native_rows + agg_rows[:2] + [
        _row(case, "cc-backend's request set: 1 request, store aggregates, raw fetch", cc_s, _samples_asked([body]),
             f"{cc_bytes / 1e6:.1f} MB"),
        {"group": "sources", "case": case, "impl": "bytes moved: store aggregation / cc-backend's request set",
         "seconds": seconds, "throughput": ratio, "unit": "x cc-backend",
         "budget": f"bytes moved <= {BYTES_BUDGET}x cc-backend's", "pass": ratio <= BYTES_BUDGET,
         "note": f"{rec.bytes / 1e6:.1f} MB vs {cc_bytes / 1e6:.1f} MB (native series: "
                 f"{native_rows[1]['note'].split(', ')[1].split(';')[0]}); {fallback} native fallback queries"},
        {"group": "sources", "case": case, "impl": "node values: store vs local aggregation",
         "seconds": seconds, "throughput": 100 * off / max(values, 1), "unit": "% differ at 2 dec.",
         "note": f"{off} of {values} values differ once rounded to 2 decimals, the archive's precision (the "
                 f"store rounds to 3 first); largest difference before that {diff:.4f}"},
    ]


def _compare(native: Any, aggregated: Any) -> tuple[float, int, int]:
    """Largest difference of the node series, values different at 2 decimals, values compared."""
    diff, off, values = 0.0, 0, 0
    for m, scopes in native.items():
        a, b = scopes["node"], aggregated[m]["node"]
        assert a.hostnames == b.hostnames, m
        both = ~np.isnan(a.data) & ~np.isnan(b.data)
        assert np.array_equal(np.isnan(a.data), np.isnan(b.data)), m  # the same gaps
        diff = max(diff, float(np.abs(a.data - b.data)[both].max(initial=0.0)))
        off += int(np.count_nonzero((np.round(a.data, 2) != np.round(b.data, 2)) & both))
        values += int(both.sum())
    return diff, off, values


def _json_queries(body: bytes) -> list[dict[str, Any]]:
    import json as _json

    queries: list[dict[str, Any]] = _json.loads(body)["queries"]
    return queries


if __name__ == "__main__":
    for r in run("--quick" in sys.argv):
        print(r)
