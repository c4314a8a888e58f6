"""statisticsSeries: min, median, max and mean across series at every time step.

Why a kernel: for a core-scope metric of an 8-node job there are 576 series of 1440 samples, and the
median needs a selection per time step; numpy's nanmedian over axis 0 copies and partitions the
whole matrix several times. Here each thread takes a block of time steps, gathers the non-NaN
values of the block into a small buffer (rows read contiguously), and selects the median in place.

ccarchive rules (docs/format.md; deliberately different from cc-backend where that one is wrong):
* only non-NaN values count, also in the median (cc-backend counts NaN as 0 there);
* fewer than 3 values at a step, or a step beyond the shortest series: NaN for all four;
* the mean sums in series order; an even count's median is the mean of the two middle values;
* min, max and the median order values by the IEEE total order, so -0 < +0: min and max equal Go's
  math.Min/math.Max, and the median does not depend on the input order.

Values are handled as int64 order keys (see reduce.py): integer compares in the selection, and the
min/max reductions vectorise.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["statistics_series", "statistics_series_serial", "MIN_VALUES"]

#: fewer non-NaN values than this at a time step give NaN (cc-backend's rule)
MIN_VALUES = 3
#: the gather buffer holds about this many int64 keys per thread (256 KiB, within L2)
_BUFFER_KEYS = 32768
#: inputs smaller than this many samples go to the serial build (see reduce.SERIAL_BELOW; this
#: kernel spends ~3.3 ns per sample, so 16 Ki samples take ~50 us)
SERIAL_BELOW = 1 << 14
#: selections this small are finished by counting ranks: 270 ns for a step of 72 cores against
#: 430 ns with an insertion sort of up to 32 keys, whose data-dependent branches mispredict
_SMALL = 16

_ABS_MASK = 0x7FFFFFFFFFFFFFFF


# The same two helpers as in reduce.py, kept here on purpose: numba's on-disk cache (cache=True)
# checks only the source file of the cached function, so a kernel inlining a helper from another
# module would keep stale machine code after that module changed.
@njit(inline="always")
def _order_key(x):
    bits = np.float64(x).view(np.int64)
    return bits ^ ((bits >> 63) & _ABS_MASK)


@njit(inline="always")
def _key_value(key):
    return np.int64(key ^ ((key >> 63) & _ABS_MASK)).view(np.float64)


@njit(cache=True, nogil=True)
def _select(values, k, scratch_a, scratch_b):
    """The k-th smallest of ``values`` (int64 keys), which is left unchanged as a multiset.

    Each round counts the keys below and up to a median-of-3 pivot (vectorised), then copies only
    the side holding k into a scratch buffer with branchless stores. Keys equal to the pivot end the
    search at once, so the many identical samples of idle cores are cheap. Measured on 1440 x 576
    random keys: 2.1 us per selection, against 11 us for an in-place Hoare quickselect (branch
    mispredictions) and 3 us for a branchless in-place Lomuto (store-to-load chains through the
    swaps). At most ``_SMALL`` keys left, the one with k keys below it is found by counting, for each
    key in turn, the keys below and up to it (no branch on the data but the final one). After 64
    rounds (adversarial input) the rest is sorted instead.
    """
    source = values
    size = values.size
    rounds = 0
    while size > _SMALL:
        if rounds == 64:
            rest = source[:size].copy()
            rest.sort()
            return rest[k]
        target = scratch_a if rounds % 2 == 0 else scratch_b
        rounds += 1
        x = source[0]
        y = source[size >> 1]
        z = source[size - 1]
        pivot = max(min(x, y), min(max(x, y), z))
        below = 0
        up_to = 0
        for i in range(size):
            v = source[i]
            below += v < pivot
            up_to += v <= pivot
        kept = 0
        if k < below:
            for i in range(size):
                v = source[i]
                target[kept] = v
                kept += v < pivot
        elif k < up_to:
            return pivot
        else:
            for i in range(size):
                v = source[i]
                target[kept] = v
                kept += v > pivot
            k -= up_to
        source = target
        size = kept
    for i in range(size):  # the last few keys: the one whose rank range holds k
        x = source[i]
        below = 0
        up_to = 0
        for m in range(size):
            v = source[m]
            below += v < x
            up_to += v <= x
        if below <= k < up_to:
            return x
    raise ValueError("k must be within [0, values.size)")


@njit(inline="always")
def _largest_below(values, bound):
    """The largest key below ``bound`` (at least one must exist)."""
    best = np.int64(-0x7FFFFFFFFFFFFFFF - 1)
    for i in range(values.size):
        v = values[i]
        if v < bound and v > best:
            best = v
    return best


_SIGS = [
    "UniTuple(float64[::1], 4)(float64[:, ::1], int64[::1])",
    "UniTuple(float64[::1], 4)(float32[:, ::1], int64[::1])",
]


@njit(inline="always")
def _statistics_series(data, lengths):
    """The kernel body; ``prange`` runs in parallel only in the parallel build."""
    n, width = data.shape
    if lengths.size != n:
        raise ValueError("lengths must have one entry per row of data")
    for i in range(n):
        if lengths[i] < 0 or lengths[i] > width:
            raise ValueError("lengths[i] must be within [0, data.shape[1]]")
    longest = lengths.max() if n > 0 else 0
    shortest = lengths.min() if n > 0 else 0
    vmin = np.full(longest, np.nan)
    median = np.full(longest, np.nan)
    vmax = np.full(longest, np.nan)
    mean = np.full(longest, np.nan)
    steps = max(1, min(256, _BUFFER_KEYS // max(n, 1)))
    for block in prange((shortest + steps - 1) // steps):
        t0 = block * steps
        t1 = min(t0 + steps, shortest)
        keys = np.empty((steps, n), np.int64)
        counts = np.zeros(steps, np.int64)
        sums = np.zeros(steps, np.float64)
        scratch_a = np.empty(n, np.int64)
        scratch_b = np.empty(n, np.int64)
        for i in range(n):  # series order: the sums are sequential per time step
            row = data[i, t0:t1]
            for j in range(t1 - t0):
                x = np.float64(row[j])
                if x == x:
                    keys[j, counts[j]] = _order_key(x)
                    counts[j] += 1
                    sums[j] += x
        for j in range(t1 - t0):
            c = counts[j]
            if c < MIN_VALUES:
                continue
            values = keys[j, :c]
            t = t0 + j
            lo = values[0]  # one loop for both: numba's array.min() / max() cost ~30 ns each here
            hi = values[0]
            for i in range(1, c):
                lo = min(lo, values[i])
                hi = max(hi, values[i])
            vmin[t] = _key_value(lo)
            vmax[t] = _key_value(hi)
            mean[t] = sums[j] / c
            half = c // 2
            upper = _select(values, half, scratch_a, scratch_b)
            if c % 2 == 1:
                median[t] = _key_value(upper)
            else:
                # the (half-1)-th key: a copy of `upper` if fewer than `half` keys lie below it
                below = 0
                for i in range(c):
                    below += values[i] < upper
                lower = upper if below < half else _largest_below(values, upper)
                median[t] = (_key_value(lower) + _key_value(upper)) / 2.0
    return vmin, median, vmax, mean


@njit(_SIGS, cache=True, nogil=True)
def statistics_series_serial(data, lengths):
    """``statistics_series`` on the calling thread only."""
    return _statistics_series(data, lengths)


@njit(_SIGS, parallel=True, cache=True, nogil=True)
def statistics_series(data, lengths):
    """Per time step (vmin, median, vmax, mean) over the non-NaN values of ``data[:, t]``.

    Series i is ``data[i, :lengths[i]]``. The outputs have length ``max(lengths)`` (0 without
    series); steps with fewer than 3 values and steps beyond the shortest series are NaN. Blocks
    of time steps run in parallel; inputs below ``SERIAL_BELOW`` samples run serially.
    """
    if data.size < SERIAL_BELOW:
        return statistics_series_serial(data, lengths)
    return _statistics_series(data, lengths)
