"""A real Prometheus (Debian ``prometheus`` 2.42) with back-filled data, for tests and ``bench/``.

Why this shape (test-servers.md §2, §5): data is written as OpenMetrics text, **one file per 2-h
block** (promtool re-reads a single big file once per block: 23x slower), and back-filled with
``promtool tsdb create-blocks-from openmetrics`` in parallel runs **before** the server starts
(blocks added to a running server appear only after a minute).  Each series is written in time
order with second timestamps, because promtool silently drops out-of-order samples and accepts
milliseconds as seconds; :meth:`PromServer.sample_count` lets a test check nothing was dropped.
The server gets its own data dir, a free loopback port (retried if taken), an empty scrape
config, 100 y retention, no background compaction, and is stopped by PID.  No lookback flag is
set: the source under test has to cope with the default 5-min lookback filling.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
MISSING_REASON = "needs prometheus and promtool (Debian package prometheus: scripts/system-deps as root)"


def require_prometheus() -> None:
    """Skip the calling test without prometheus/promtool, but fail under CI=true: CI installs them
    and must run the Prometheus tests."""
    import pytest

    if PROMETHEUS is not None and PROMTOOL is not None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(MISSING_REASON + "; CI must run the Prometheus tests")
    pytest.skip(MISSING_REASON)
BLOCK_S = 7200


@dataclass
class PromSeries:
    """One series to back-fill: samples at ``times`` (seconds, increasing); NaN values are not written."""

    name: str
    labels: dict[str, str]
    times: np.ndarray
    values: np.ndarray

    def prefix(self) -> str:
        inner = ",".join(f'{k}="{v}"' for k, v in self.labels.items())
        return f"{self.name}{{{inner}}} "


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _block_text(series: list[PromSeries], spans: list[tuple[int, int]]) -> tuple[str, int]:
    parts: list[str] = []
    n = 0
    family = None
    for s, (a, b) in zip(series, spans, strict=True):
        if a == b:
            continue
        if s.name != family:
            parts.append(f"# TYPE {s.name} gauge\n")
            family = s.name
        v, t = s.values[a:b], s.times[a:b]
        keep = ~np.isnan(v)
        prefix = s.prefix()
        t = t[keep]
        whole = bool(np.all(t == np.floor(t)))
        ts = t.astype(np.int64).tolist() if whole else [f"{x:.3f}" for x in t.tolist()]
        parts.append("".join([f"{prefix}{x!r} {y}\n" for x, y in zip(v[keep].tolist(), ts, strict=True)]))
        n += int(keep.sum())
    parts.append("# EOF\n")
    return "".join(parts), n


def backfill(series: Iterable[PromSeries], data_dir: Path, work_dir: Path, *, jobs: int = 2) -> int:
    """Write one OpenMetrics file per 2-h block and run promtool on each (``jobs`` in parallel)
    while the next block is being written; returns the number of samples written."""
    if PROMTOOL is None:
        raise RuntimeError("promtool is not installed (scripts/system-deps)")
    items = sorted(series, key=lambda s: s.name)  # families contiguous
    data_dir.mkdir(parents=True, exist_ok=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    lo = min(int(s.times[0]) for s in items if len(s.times)) // BLOCK_S
    hi = max(int(s.times[-1]) for s in items if len(s.times)) // BLOCK_S
    total = 0

    def run(path: Path) -> None:
        r = subprocess.run([PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", "-q", str(path), str(data_dir)],
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"promtool failed on {path.name}: {r.stderr.strip()[-500:]}")
        path.unlink()

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = []
        for block in range(lo, hi + 1):
            t0, t1 = block * BLOCK_S, (block + 1) * BLOCK_S
            spans = [(int(np.searchsorted(s.times, t0, "left")), int(np.searchsorted(s.times, t1, "left")))
                     for s in items]
            text, n = _block_text(items, spans)
            if n == 0:
                continue
            path = work_dir / f"block-{block}.om"
            path.write_text(text)
            total += n
            futures.append(pool.submit(run, path))
        for f in futures:
            f.result()
    return total


class PromServer:
    """``prometheus`` on a free loopback port over ``data_dir``; a context manager."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        if PROMETHEUS is None:
            raise RuntimeError("prometheus is not installed (scripts/system-deps)")
        self.data_dir, self.log_path = data_dir, log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 30.0) -> PromServer:
        config = self.data_dir.parent / "prometheus.yml"
        config.write_text("scrape_configs: []\n")
        for _attempt in range(3):
            port = free_port()
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(
                    [PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={self.data_dir}",
                     f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=100y",
                     "--storage.tsdb.max-block-duration=2h", "--log.level=warn"],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            self.url = f"http://127.0.0.1:{port}"
            if self._wait_ready(timeout):
                return self
            if "address already in use" not in self.log_path.read_text(errors="replace"):
                break
        self.stop()
        raise RuntimeError(f"prometheus did not become ready; log: {self.log_path.read_text()[-2000:]}")

    def _wait_ready(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return True
            except OSError:
                pass
            time.sleep(0.02)  # readiness poll interval, bounded by the deadline
        return False

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> PromServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def query(self, promql: str, at: float) -> Any:
        params = urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{params}", timeout=30) as r:
            return json.loads(r.read())["data"]["result"]

    def sample_count(self, start: int, end: int) -> int:
        """Stored samples of all series in ``[start, end]`` (to check promtool dropped none);
        one query per metric name (count_over_time drops names, so series of different metrics
        with the same labels would collide in one query)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/label/__name__/values", timeout=30) as r:
            names = json.loads(r.read())["data"]
        total = 0
        for name in names:
            res = self.query(f"sum(count_over_time({name}[{end - start + 1}s]))", end)
            total += int(float(res[0]["value"][1])) if res else 0
        return total


def small_node_cluster(num_metrics: int, num_nodes: int = 64, name: str = "promtest") -> Any:
    """A cluster of ``num_nodes`` 2-core nodes with ``num_metrics`` node-scope metrics
    ``m00 ...`` at 60 s (the 64-node x 7-day load test and its bench)."""
    from ccarchive.cluster import load_cluster

    metrics = [{"name": f"m{k:02d}", "unit": {"base": "B/s" if k % 2 else ""}, "scope": "node",
                "aggregation": "sum" if k % 2 else "avg", "timestep": 60, "peak": 1000, "normal": 500,
                "caution": 100, "alert": 10} for k in range(num_metrics)]
    value = {"unit": {"base": "F/s", "prefix": "G"}, "value": 100}
    return load_cluster({
        "name": name, "metricConfig": metrics,
        "subClusters": [{"name": "main", "nodes": f"p[0001-{num_nodes:04d}]", "processorType": "test",
                         "socketsPerNode": 1, "coresPerSocket": 2, "threadsPerCore": 1,
                         "flopRateScalar": value, "flopRateSimd": value, "memoryBandwidth": value,
                         "topology": {"node": [0, 1], "socket": [[0, 1]], "memoryDomain": [[0, 1]],
                                      "core": [[0], [1]]}}]})


def node_series(job: Any, metrics: list[str], *, seed: int = 0,
                gap_rate: float = 0.0) -> Iterator[tuple[str, str, np.ndarray]]:
    """(metric, host, values) of random 2-decimal series on the job grid (60 s)."""
    rng = np.random.default_rng(seed)
    n = job.duration // 60 + 1
    for m in metrics:
        for host in job.hostnames:
            v = np.round(rng.uniform(0.0, 1000.0, n), 2)
            if gap_rate > 0:
                v[rng.random(n) < gap_rate] = np.nan
            yield m, host, v
