"""Plain numpy / Python twins of the numba kernels: the definitions the tests hold the kernels to.

Each function has the same signature and result as its kernel and is written to be obviously
correct, not fast: sequential sums are Python loops over floats (``np.sum`` and ``np.nansum`` are
pairwise and round differently), orders that must be deterministic for signed zeros use an explicit
total-order key, and Go's rounding is done in exact decimal arithmetic. bench/ also uses them as the
"straightforward" baseline where numpy has no direct equivalent.
"""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Context, Decimal

import numpy as np

__all__ = [
    "block_statistics",
    "series_stats",
    "mask_outside_float32",
    "round2",
    "round2_scalar",
    "statistics_series",
    "aggregate",
    "sequential_sum",
    "total_order",
]

MIN_VALUES = 3
#: enough digits to quantize any finite float64 (at most 309 integer digits) exactly
_EXACT = Context(prec=400)


def sequential_sum(values: np.ndarray) -> float:
    """float64 sum strictly left to right, starting from +0.0 (what Go's ``sum += x`` loop does)."""
    total = 0.0
    for x in np.asarray(values, dtype=np.float64).tolist():
        total += x
    return total


def total_order(x: float) -> tuple[float, float]:
    """Sort key for non-NaN floats: numeric order, with -0.0 before +0.0 (IEEE totalOrder)."""
    return (x, math.copysign(1.0, x))


def _go_min(values: list[float]) -> float:
    """Go's math.Min folded over ``values`` (non-NaN): the smallest, -0 if it is a zero and any -0."""
    return min(values, key=total_order)


def _go_max(values: list[float]) -> float:
    """Go's math.Max folded over ``values`` (non-NaN): the largest, +0 if it is a zero and any +0."""
    return max(values, key=total_order)


def series_stats(data: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reference for ``reduce.series_stats``: (count, vmin, mean, vmax) per row."""
    n = data.shape[0]
    count = np.zeros(n, np.int64)
    vmin = np.full(n, np.nan)
    mean = np.full(n, np.nan)
    vmax = np.full(n, np.nan)
    for i in range(n):
        row = np.asarray(data[i, : lengths[i]], dtype=np.float64)
        values = row[~np.isnan(row)]
        count[i] = values.size
        if values.size:
            as_list = values.tolist()
            vmin[i] = _go_min(as_list)
            mean[i] = sequential_sum(values) / values.size
            vmax[i] = _go_max(as_list)
    return count, vmin, mean, vmax


def mask_outside_float32(data: np.ndarray) -> int:
    """Reference for ``reduce.mask_outside_float32``: in place, returns the number replaced.

    Outside means what Go's ``float32(x)`` does: the round-to-nearest-even cast overflows to +-Inf
    (NaN stays NaN and is not counted)."""
    flat = data.reshape(-1)
    with np.errstate(over="ignore"):
        outside = np.isinf(flat.astype(np.float32))
    flat[outside] = np.nan
    return int(outside.sum())


def round2_scalar(x: float) -> float:
    """Go's ``math.Round(x*100)/100`` with the product rounded half away from zero exactly."""
    y = float(x) * 100.0
    if not math.isfinite(y):
        return y / 100.0
    rounded = float(Decimal(y).quantize(Decimal(1), rounding=ROUND_HALF_UP, context=_EXACT))  # half away from 0
    return math.copysign(rounded, y) / 100.0  # math.Round keeps the sign of a zero result


def round2(x: np.ndarray) -> np.ndarray:
    """Reference for ``reduce.round2``."""
    return np.array([round2_scalar(v) for v in np.asarray(x, dtype=np.float64).tolist()], dtype=np.float64)


def block_statistics(data: np.ndarray, lengths: np.ndarray) -> tuple[int, np.ndarray]:
    """Reference for ``reduce.block_statistics``: mask in place, then rounded (min, mean, max) per
    row, all three 0.0 for a row without samples."""
    masked = mask_outside_float32(data)
    count, vmin, mean, vmax = series_stats(data, lengths)
    stats = np.stack([round2(vmin), round2(mean), round2(vmax)], axis=1).reshape(len(count), 3)
    stats[count == 0] = 0.0
    return masked, stats


def statistics_series(
    data: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Reference for ``timestep.statistics_series``: (vmin, median, vmax, mean) per time step."""
    n = data.shape[0]
    longest = int(lengths.max()) if n else 0
    shortest = int(lengths.min()) if n else 0
    out = [np.full(longest, np.nan) for _ in range(4)]
    vmin, median, vmax, mean = out
    for t in range(shortest):
        column = np.asarray(data[:, t], dtype=np.float64)
        values = column[~np.isnan(column)]
        c = values.size
        if c < MIN_VALUES:
            continue
        ordered = sorted(values.tolist(), key=total_order)
        vmin[t] = ordered[0]
        vmax[t] = ordered[-1]
        if c % 2:
            median[t] = ordered[c // 2]
        else:
            median[t] = (ordered[c // 2 - 1] + ordered[c // 2]) / 2.0
        mean[t] = sequential_sum(values) / c
    return vmin, median, vmax, mean


def aggregate(
    data: np.ndarray, lengths: np.ndarray, groups: np.ndarray, n_groups: int, mode: int
) -> tuple[np.ndarray, np.ndarray]:
    """Reference for ``aggregate.aggregate``: metric-store style sum (0) / avg (1) of member rows."""
    out_lengths = np.zeros(n_groups, np.int64)
    for g in range(n_groups):
        members = np.flatnonzero(groups == g)
        if members.size:
            out_lengths[g] = lengths[members].max()
    width_out = int(out_lengths.max()) if n_groups else 0
    out = np.full((n_groups, width_out), np.nan)
    for g in range(n_groups):
        members = np.flatnonzero(groups == g)  # ascending: member order
        if not members.size:
            continue
        valid = int(lengths[members].min())
        acc = np.zeros(valid)  # Go's zero-initialised buffer, then data[i] += x per member
        with np.errstate(invalid="ignore"):  # inf + -inf = NaN is intended
            for i in members:
                acc = acc + np.asarray(data[i, :valid], dtype=np.float64)
        if mode == 1 and members.size > 1:
            acc = acc * (1.0 / members.size)
        out[g, :valid] = acc
    return out, out_lengths
