"""Element-wise aggregation of member series into coarser-scope series (e.g. cores -> node).

Why a kernel: it is the metric store's ``Read`` (cc-backend pkg/metricstore) redone over arrays, and
byte compatibility needs its exact arithmetic:
* the sum starts from zero and adds the members in member order, so NaN propagates (NaN + x = NaN)
  and a -0.0 member alone becomes +0.0, as in Go's zero-initialised ``data[i] += x``;
* "avg" multiplies that sum by ``1.0 / k`` for k > 1 members (not ``sum / k``; the two differ in
  the last bit), and leaves a single member unscaled;
* a member beyond its own length counts as NaN, so a group is NaN from its shortest member's end
  up to its longest member's end.

Each group's row is accumulated member by member with contiguous, vectorised adds; groups are spread
over threads. The work is one read of every member and one write of the output: memory bound.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["aggregate", "aggregate_serial", "SUM", "AVG"]

#: inputs smaller than this many samples go to the serial build (see reduce.SERIAL_BELOW;
#: aggregation streams at ~0.1 ns per sample)
SERIAL_BELOW = 1 << 19
#: ``mode`` values
SUM = 0
AVG = 1

_SIGS = [
    "Tuple((float64[:, ::1], int64[::1]))(float64[:, ::1], int64[::1], int64[::1], int64, int64)",
    "Tuple((float64[:, ::1], int64[::1]))(float32[:, ::1], int64[::1], int64[::1], int64, int64)",
]


@njit(inline="always")
def _aggregate(data, lengths, groups, n_groups, mode):
    """The kernel body; ``prange`` runs in parallel only in the parallel build."""
    n, width = data.shape
    if lengths.size != n or groups.size != n:
        raise ValueError("lengths and groups must have one entry per row of data")
    if mode != SUM and mode != AVG:
        raise ValueError("mode must be 0 (sum) or 1 (avg)")
    if n_groups < 0:
        raise ValueError("n_groups must be >= 0")
    members = np.zeros(n_groups, np.int64)
    out_lengths = np.zeros(n_groups, np.int64)
    shortest = np.full(n_groups, width, np.int64)
    for i in range(n):
        g = groups[i]
        if g < 0 or g >= n_groups:
            raise ValueError("groups[i] must be within [0, n_groups)")
        if lengths[i] < 0 or lengths[i] > width:
            raise ValueError("lengths[i] must be within [0, data.shape[1]]")
        members[g] += 1
        out_lengths[g] = max(out_lengths[g], lengths[i])
        shortest[g] = min(shortest[g], lengths[i])
    # members of each group in member order (a stable counting sort)
    offsets = np.zeros(n_groups + 1, np.int64)
    for g in range(n_groups):
        offsets[g + 1] = offsets[g] + members[g]
    order = np.empty(n, np.int64)
    filled = offsets[:-1].copy()
    for i in range(n):
        order[filled[groups[i]]] = i
        filled[groups[i]] += 1
    width_out = out_lengths.max() if n_groups > 0 else 0
    out = np.empty((n_groups, width_out), np.float64)
    for g in prange(n_groups):
        target = out[g]
        k = members[g]
        valid = shortest[g] if k > 0 else 0
        target[:valid] = 0.0
        for m in range(offsets[g], offsets[g + 1]):
            source = data[order[m], :valid]
            for t in range(valid):
                target[t] += source[t]
        if mode == AVG and k > 1:
            scale = 1.0 / k
            for t in range(valid):
                target[t] *= scale
        target[valid:] = np.nan
    return out, out_lengths


@njit(_SIGS, cache=True, nogil=True)
def aggregate_serial(data, lengths, groups, n_groups, mode):
    """``aggregate`` on the calling thread only."""
    return _aggregate(data, lengths, groups, n_groups, mode)


@njit(_SIGS, parallel=True, cache=True, nogil=True)
def aggregate(data, lengths, groups, n_groups, mode):
    """Sum (mode 0) or average (mode 1) the rows of ``data`` into ``n_groups`` output rows.

    Row i (``data[i, :lengths[i]]``) belongs to output row ``groups[i]``. Returns ``(out,
    out_lengths)``: ``out_lengths[g]`` is the longest member's length (0 for an empty group), ``out``
    has ``max(out_lengths)`` columns and is NaN wherever any member has no sample. Groups run in
    parallel; inputs below ``SERIAL_BELOW`` samples run serially.
    """
    if data.size < SERIAL_BELOW:
        return aggregate_serial(data, lengths, groups, n_groups, mode)
    return _aggregate(data, lengths, groups, n_groups, mode)
