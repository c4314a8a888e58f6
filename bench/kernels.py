"""Statistics kernels against numpy, bottleneck and numbagg, and against the memory system.

Budgets for ``series_stats`` (count/min/mean/max per series): at least 60 % of the machine's
memory read bandwidth, at least 10x numpy's nan-functions, and faster than bottleneck and numbagg
computing the same four results. All implementations run on the same arrays in the same process;
throughput is GB/s of input (float64 samples), compiled code is warmed up before timing and the
best of several runs counts. ``statistics_series`` and ``aggregate`` are timed more briefly against
numpy and their reference implementations.

Shapes: 8 nodes x 72 cores for a day at 60 s (576 x 1440), 64 nodes for 7 days (64 x 10080) -- both
fit in the 32 MiB L3 of the development machine -- and a bandwidth-bound 8192 x 10080 (660 MB;
2048 x 10080 with --quick). About 1 % of the samples are NaN, in runs.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from bench import memory
from ccarchive.kernels import reference
from ccarchive.kernels.aggregate import AVG, aggregate
from ccarchive.kernels.reduce import series_stats
from ccarchive.kernels.timestep import statistics_series

try:  # bench-only extras (pyproject [bench]); their rows are skipped when missing
    import bottleneck as bn
except ImportError:  # pragma: no cover
    bn = None
try:
    import numbagg
except ImportError:  # pragma: no cover
    numbagg = None

#: the case whose share of memory bandwidth is judged against the 60 % budget
BANDWIDTH_CASE = "bandwidth-bound"


def make_series(n: int, width: int, nan_fraction: float = 0.01, seed: int = 0) -> np.ndarray:
    """Metric-like samples (level + noise, a few magnitudes) with NaN runs of 1-20 samples."""
    rng = np.random.default_rng(seed)
    scale = rng.choice([1.0, 100.0, 3000.0], size=(n, 1))
    data = rng.standard_normal((n, width))
    data *= 0.05
    data += rng.uniform(0.2, 1.0, (n, 1))
    data *= scale
    runs = int(nan_fraction * n * width / 10.5)
    rows = rng.integers(0, n, runs)
    starts = rng.integers(0, width, runs)
    stops = np.minimum(starts + rng.integers(1, 21, runs), width)
    for r, a, b in zip(rows.tolist(), starts.tolist(), stops.tolist(), strict=True):
        data[r, a:b] = np.nan
    return data


def _best(fn: Callable[[], Any], repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one untimed warm-up call."""
    fn()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _count(data: np.ndarray) -> np.ndarray:
    return np.count_nonzero(~np.isnan(data), axis=1)


def _stats_impls(data: np.ndarray, lengths: np.ndarray) -> list[tuple[str, Callable[[], Any], str]]:
    """(impl, call, note) computing count, min, mean and max per row, baseline first."""
    impls: list[tuple[str, Callable[[], Any], str]] = [
        (
            "numpy nan-functions",
            lambda: (_count(data), np.nanmin(data, axis=1), np.nanmean(data, axis=1), np.nanmax(data, axis=1)),
            "baseline, 1 thread",
        ),
        ("ccarchive series_stats", lambda: series_stats(data, lengths), f"{numba.get_num_threads()} threads"),
    ]
    if bn is not None:
        impls.append(
            (
                "bottleneck",
                lambda: (_count(data), bn.nanmin(data, axis=1), bn.nanmean(data, axis=1), bn.nanmax(data, axis=1)),
                "1 thread; count via numpy (bottleneck has none)",
            )
        )
        impls.append(
            (
                "bottleneck min/mean/max only",
                lambda: (bn.nanmin(data, axis=1), bn.nanmean(data, axis=1), bn.nanmax(data, axis=1)),
                "1 thread; without the count, for reference",
            )
        )
    if numbagg is not None:
        impls.append(
            (
                "numbagg",
                lambda: (
                    numbagg.nancount(data, axis=1),
                    numbagg.nanmin(data, axis=1),
                    numbagg.nanmean(data, axis=1),
                    numbagg.nanmax(data, axis=1),
                ),
                "parallel gufuncs",
            )
        )
    return impls


def _statistics_rows(case: str, kind: str, data: np.ndarray, repeats: int, bandwidth: float) -> list[dict]:
    lengths = np.full(data.shape[0], data.shape[1], np.int64)
    count, vmin, mean, vmax = series_stats(data, lengths)
    if not (np.array_equal(count, _count(data)) and np.allclose(mean, np.nanmean(data, axis=1))):
        raise AssertionError("series_stats disagrees with numpy")  # guards the bench, not a test
    rows = []
    base_seconds = math.nan
    for impl, call, note in _stats_impls(data, lengths):
        seconds = _best(call, repeats)
        if impl.startswith("numpy"):
            base_seconds = seconds
        gbs = data.nbytes / seconds / 1e9
        rows.append(
            {
                "group": "statistics",
                "case": case,
                "kind": kind,
                "impl": impl,
                "seconds": seconds,
                "throughput": gbs,
                "unit": "GB/s",
                "vs_baseline": base_seconds / seconds,
                "vs_bandwidth": gbs / bandwidth,
                "note": f"{note}; {data.size / seconds / 1e9:.2f} G samples/s",
            }
        )
    return rows


def _float32_row(case: str, data: np.ndarray, repeats: int, bandwidth: float) -> dict:
    """series_stats on a float32 copy: half the bytes per sample, same float64 arithmetic."""
    data32 = data.astype(np.float32)
    lengths = np.full(data.shape[0], data.shape[1], np.int64)
    seconds = _best(lambda: series_stats(data32, lengths), repeats)
    gbs = data32.nbytes / seconds / 1e9
    return {
        "group": "statistics",
        "case": case,
        "impl": "ccarchive series_stats, float32 input",
        "seconds": seconds,
        "throughput": gbs,
        "unit": "GB/s",
        "vs_bandwidth": gbs / bandwidth,
        "note": f"{data32.size / seconds / 1e9:.2f} G samples/s",
    }


def _timestep_rows(case: str, data: np.ndarray, repeats: int, with_reference: bool) -> list[dict]:
    lengths = np.full(data.shape[0], data.shape[1], np.int64)

    def numpy_baseline():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            return (
                np.nanmin(data, axis=0),
                np.nanmedian(data, axis=0),
                np.nanmax(data, axis=0),
                np.nanmean(data, axis=0),
            )

    impls = [
        ("numpy nanmin/nanmedian/nanmax/nanmean", numpy_baseline, 3, "baseline"),
        ("ccarchive statistics_series", lambda: statistics_series(data, lengths), repeats, ""),
    ]
    if with_reference:
        impls.append(("reference (Python sort per step)", lambda: reference.statistics_series(data, lengths), 1, ""))
    return _simple_rows("statisticsSeries", case, data.nbytes, impls)


def _aggregate_rows(case: str, data: np.ndarray, group_size: int, repeats: int) -> list[dict]:
    n = data.shape[0]
    lengths = np.full(n, data.shape[1], np.int64)
    groups = (np.arange(n) // group_size).astype(np.int64)
    n_groups = int(groups[-1]) + 1
    impls = [
        (
            "reference (numpy per member)",
            lambda: reference.aggregate(data, lengths, groups, n_groups, AVG),
            3,
            "baseline",
        ),
        ("ccarchive aggregate", lambda: aggregate(data, lengths, groups, n_groups, AVG), repeats, "avg"),
    ]
    return _simple_rows("aggregate", case, data.nbytes, impls)


def _simple_rows(group: str, case: str, nbytes: int, impls: list) -> list[dict]:
    rows = []
    base_seconds = math.nan
    for impl, call, repeats, note in impls:
        seconds = _best(call, repeats)
        if note == "baseline":
            base_seconds = seconds
        row = {
            "group": group,
            "case": case,
            "impl": impl,
            "seconds": seconds,
            "throughput": nbytes / seconds / 1e9,
            "unit": "GB/s",
            "vs_baseline": base_seconds / seconds,
        }
        if note:
            row["note"] = note
        rows.append(row)
    return rows


def run(quick: bool) -> list[dict]:
    """Bench rows for series_stats (with bandwidth share), statistics_series and aggregate."""
    repeats = 3 if quick else 7
    bandwidth = memory.bandwidth(quick)
    two = bandwidth[max(bandwidth)]
    big_rows = 2048 if quick else 8192
    cases = [
        ("576x1440 (8 nodes x 72 cores, 1 d @ 60 s)", "cache-resident", 576, 1440),
        ("64x10080 (64 nodes, 7 d @ 60 s)", "cache-resident", 64, 10080),
        (f"{big_rows}x10080 ({big_rows * 10080 * 8 / 1e6:.0f} MB)", BANDWIDTH_CASE, big_rows, 10080),
    ]
    rows: list[dict] = []
    for seed, (case, kind, n, width) in enumerate(cases):
        data = make_series(n, width, seed=seed)
        if kind == BANDWIDTH_CASE:
            # the VM's bandwidth drifts by up to 1.5x within minutes (other tenants); measure again
            # next to the kernel and judge against the higher figure
            two = max(two, memory.read_bandwidth(max(bandwidth), memory.QUICK_BYTES, 3))
        rows += _statistics_rows(case, kind, data, repeats if kind != BANDWIDTH_CASE else max(3, repeats // 2), two)
        if seed == 0:
            rows += _timestep_rows(case, data, repeats, with_reference=True)
            rows += _aggregate_rows(case + ", 72 cores -> node", data, 72, repeats)
        if kind == BANDWIDTH_CASE:
            rows.append(_float32_row(case, data, max(3, repeats // 2), two))
            rows += _aggregate_rows(case + ", 64 -> 1", data, 64, max(3, repeats // 2))
        del data
    return rows
