"""data.json encoding and gzip throughput, against their budgets (bench/__init__.py).

Encoding (budget: >= 300 MB/s of output on one core) is measured for the sample-array kernel alone
(``encode_rows``) and for the full streaming encoder (``iter_job_data``: keys, hostnames, series
statistics, statisticsSeries), beside what a plain Python implementation does: round every sample
through float32, format it, ``json.dumps`` the lists.  Throughput is MB/s of the Go-format output
text for every implementation, so ``vs_baseline`` is the ratio of times.

gzip (budget: size within 15 % of zlib level 6, fast, both cores) is measured on the encoded text
with ISA-L levels 1-3 on one thread, the default level on all cores, and zlib level 6.
"""

from __future__ import annotations

import json
import math
import os
import time
import zlib
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ccarchive.formats import compress
from ccarchive.formats.data import decode_job_data, iter_job_data
from ccarchive.kernels.encode import encode_rows, warm_up
from ccarchive.model import JobData, JobMetric, StatsSeries, Unit

#: Real data (cc-backend's emmy test job) for a gzip figure on measured, not synthetic, samples.
EMMY_DATA = (Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "cc-backend" / "archive" / "emmy"
             / "1403" / "244" / "1608923076" / "data.json.gz")


def _best(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Best wall time over ``repeats`` calls, and the last result."""
    best, out = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def synthetic_block(n_series: int, n_samples: int, seed: int = 0) -> JobMetric:
    """Realistic samples: per-series levels over a few magnitudes with a slow drift and noise,
    2 decimals, about 1 % NaN, series statistics filled in."""
    rng = np.random.default_rng(seed)
    scale = rng.choice([1.0, 100.0, 3000.0], size=(n_series, 1))
    level = rng.uniform(0.2, 1.0, (n_series, 1))
    drift = np.cumsum(rng.normal(0.0, 0.01, (n_series, n_samples)), axis=1)
    noise = rng.normal(0.0, 0.02, (n_series, n_samples))
    data = np.round(np.abs(level + drift + noise) * scale, 2)
    data[rng.random(data.shape) < 0.01] = np.nan
    lengths = np.full(n_series, n_samples, dtype=np.int64)
    stats = np.round(np.stack([np.nanmin(data, 1), np.nanmean(data, 1), np.nanmax(data, 1)], axis=1), 2)
    hosts = [f"f{(i // 72) + 101:04d}" for i in range(n_series)]
    ids: list[str | None] = [str(i % 72) for i in range(n_series)]
    block = JobMetric(Unit("F/s", "G"), 60, hosts, ids, data, lengths, stats)
    if n_series >= 8:
        block.statistics_series = StatsSeries(
            min=np.nanmin(data, 0), median=np.round(np.nanmedian(data, 0), 3), max=np.nanmax(data, 0),
            mean=np.nanmean(data, 0),
        )
    return block


def _baseline_value(x: float) -> float | None:
    return None if math.isnan(x) else float(format(x, ".2f"))


def baseline_rows(block: JobMetric) -> bytes:
    """What a plain Python encoder does for the sample arrays: float32 round trip, 2-decimal
    rounding by ``format``, then ``json.dumps`` of lists of Python floats."""
    rows = []
    f32 = block.data.astype(np.float32).astype(np.float64)
    for i in range(block.num_series):
        rows.append([_baseline_value(x) for x in f32[i, : block.lengths[i]].tolist()])
    return json.dumps(rows, separators=(",", ":")).encode()


def baseline_job_data(data: JobData) -> bytes:
    """A plain Python data.json encoder: dicts of lists, ``json.dumps``."""
    out: dict[str, Any] = {}
    for metric in sorted(data):
        out[metric] = {}
        for scope in sorted(data[metric]):
            b = data[metric][scope]
            f32 = b.data.astype(np.float32).astype(np.float64)
            stats = b.statistics if b.statistics is not None else np.zeros((b.num_series, 3))
            series = []
            for i in range(b.num_series):
                s: dict[str, Any] = {"hostname": b.hostnames[i]}
                if b.ids[i] is not None:
                    s["id"] = b.ids[i]
                lo, avg, hi = stats[i].tolist()
                s["statistics"] = {"min": lo, "avg": avg, "max": hi}
                s["data"] = [_baseline_value(x) for x in f32[i, : b.lengths[i]].tolist()]
                series.append(s)
            jm: dict[str, Any] = {}
            if b.statistics_series is not None:
                ss = b.statistics_series
                jm["statisticsSeries"] = {
                    k: None if v is None else [_baseline_value(x) for x in v.tolist()]
                    for k, v in (("mean", ss.mean), ("median", ss.median), ("min", ss.min), ("max", ss.max))
                }
            jm.update({"unit": {"base": b.unit.base, "prefix": b.unit.prefix}, "series": series,
                       "timestep": b.timestep})
            out[metric][scope] = jm
    return (json.dumps(out, separators=(",", ":")) + "\n").encode()


def _row(
    case: str, impl: str, seconds: float, nbytes: int, base_seconds: float, note: str = ""
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "group": "encode", "case": case, "impl": impl, "seconds": seconds,
        "throughput": nbytes / seconds / 1e6, "unit": "MB/s", "vs_baseline": base_seconds / seconds,
    }
    if note:
        row["note"] = note
    return row


def _encode_rows_case(name: str, block: JobMetric, repeats: int) -> tuple[list[dict[str, Any]], int]:
    t_fast, (buf, _off) = _best(lambda: encode_rows(block.data, block.lengths), repeats)
    t_base, _ = _best(lambda: baseline_rows(block), max(1, repeats // 3))
    n = len(buf)
    values = block.data.size
    return [
        _row(name, "json + format (baseline)", t_base, n, t_base, f"{values:,} values"),
        _row(name, "ccarchive encode_rows", t_fast, n, t_base, f"{n / values:.2f} bytes/value"),
    ], n


def _gzip_rows(case: str, text: bytes, repeats: int) -> list[dict[str, Any]]:
    def zlib6() -> bytes:
        c = zlib.compressobj(6, zlib.DEFLATED, 31)
        return c.compress(text) + c.flush()

    t_base, z6 = _best(zlib6, max(1, repeats // 2))
    ratio = f"ratio {len(text) / len(z6):.2f}:1"
    rows = [_row(case, "zlib level 6 (baseline)", t_base, len(text), t_base, ratio)]
    cores = os.cpu_count() or 1
    variants = [(f"zlib-ng level {lv}", lv, 1) for lv in (2, 3, 4)]
    lv = compress.DEFAULT_LEVEL
    variants.append((f"zlib-ng level {lv} (default), {cores} threads", lv, cores))
    for impl, level, threads in variants:
        t, z = _best(partial(compress.gzip_bytes, text, level, threads=threads), repeats)
        row = _row(case, impl, t, len(text), t_base, f"size {len(z) / len(z6):.3f} x zlib 6")
        if level == compress.DEFAULT_LEVEL and threads == cores:
            row["budget"], row["pass"] = "gzip default <= 1.15x zlib 6 size", len(z) / len(z6) <= 1.15
        rows.append(row)
    return rows


def run(quick: bool) -> list[dict[str, Any]]:
    """Bench rows for encoding and gzip of data.json (MB/s of JSON text)."""
    warm_up()
    repeats = 3 if quick else 7
    core_shape = (144, 1440) if quick else (576, 1440)
    node_shape = (16, 10080) if quick else (64, 10080)
    core = synthetic_block(*core_shape, seed=1)
    node = synthetic_block(*node_shape, seed=2)
    rows: list[dict[str, Any]] = []

    r, _ = _encode_rows_case(f"samples {core_shape[0]}x{core_shape[1]}", core, repeats)
    rows += r
    r, _ = _encode_rows_case(f"samples {node_shape[0]}x{node_shape[1]}", node, repeats)
    rows += r

    n_metrics = 2 if quick else 4
    job: JobData = {}
    for m in range(n_metrics):
        job[f"metric_{m:02d}"] = {"core": core, "node": node} if m % 2 == 0 else {"node": node}
    case = f"data.json, {n_metrics} metrics"
    t_fast, text = _best(lambda: b"".join(iter_job_data(job)), repeats)
    t_base, _ = _best(lambda: baseline_job_data(job), max(1, repeats // 3))
    rows.append(_row(case, "json dict encoder (baseline)", t_base, len(text), t_base,
                     "not Go-identical (7.9 vs 7.90)"))
    enc = _row(case, "ccarchive iter_job_data", t_fast, len(text), t_base, f"{len(text) / 1e6:.1f} MB")
    enc["budget"], enc["pass"] = "encode >= 300 MB/s one core", enc["throughput"] >= 300.0
    rows.append(enc)

    rows += _gzip_rows(f"gzip {case}", text, repeats)
    if EMMY_DATA.exists():
        emmy = b"".join(iter_job_data(decode_job_data(compress.gunzip_bytes(EMMY_DATA.read_bytes()))))
        rows += _gzip_rows("gzip emmy fixture re-encoded", emmy * (2 if quick else 8), repeats)
    return rows
