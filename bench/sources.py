"""Loading a large job from a real Prometheus: 64 nodes x 7 days at 60 s (spec §8's node-scope job).

The data set (``quick``: 5 metrics, else 20 node-scope metrics, random 2-decimal values with a few
gaps) is back-filled into the Debian ``prometheus`` server with promtool, one OpenMetrics file per
2-h block (tests/prom_fixture.py).  The figure is the load phase of archiving
(``ccarchive.loading.load_job_data``: HTTP, parsing, placing samples on the job grid) with the
default bounded concurrency; the baseline is the same source parsing answers with ``json.loads``
and per-sample conversion instead of the compact-output fast path.  Back-fill and the end-to-end
``archive_job`` time are reported for context.  Without prometheus/promtool the group is skipped.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

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
    """Bench rows for the 64-node x 7-day Prometheus load."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
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
    root = Path(tempfile.mkdtemp(prefix="ccarchive-bench-prom-"))
    rows: list[dict[str, Any]] = []
    try:
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
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


if __name__ == "__main__":
    for r in run("--quick" in sys.argv):
        print(r)
