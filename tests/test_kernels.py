"""Kernels against their plain-numpy references, on random and adversarial input.

Equality is bitwise (``_same``): the archive is byte-compatible with cc-backend, so "close" is a
failure. Hypothesis runs derandomized so the suite is deterministic.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ccarchive.kernels import aggregate as aggregate_module
from ccarchive.kernels import reduce, timestep
from ccarchive.kernels import reference as ref
from ccarchive.kernels.aggregate import AVG, SUM, aggregate, aggregate_serial
from ccarchive.kernels.reduce import (
    block_statistics,
    block_statistics_serial,
    mask_outside_float32,
    mask_outside_float32_serial,
    round2,
    round2_scalar,
    series_stats,
    series_stats_serial,
)
from ccarchive.kernels.timestep import statistics_series, statistics_series_serial

F32_MAX = float(np.finfo(np.float32).max)
#: 2**128 - 2**103: float32(x) overflows to Inf from here on (ties to even go to 2**128)
F32_OVERFLOW = 2.0**128 - 2.0**103
#: around the float32 range limit: 3.4028235e38 rounds to FLT_MAX (inside), 3.4028236e38 overflows
F32_EDGE = [
    3.4028235e38, 3.4028236e38, F32_OVERFLOW, float(np.nextafter(F32_OVERFLOW, 0.0)),
    float(np.nextafter(F32_OVERFLOW, math.inf)), float(np.nextafter(F32_MAX, math.inf)),
]
F32_EDGE += [-x for x in F32_EDGE]
#: values on 2-decimal rounding boundaries, float32 precision limits and range limits
SPECIAL = [
    0.125, 0.015, 2.675, 1.115, -12.345, 2.285, 16777217.0, 1e-7, -0.0, 0.0, 0.5, -0.5,
    1e300, -1e300, F32_MAX, math.inf, -math.inf, math.nan, 5e-324, *F32_EDGE,
]
with np.errstate(over="ignore"):  # 1e300 -> inf in float32
    SPECIAL32 = sorted({float(np.float32(v)) for v in SPECIAL if not math.isnan(v)}) + [math.nan]

HYPOTHESIS = settings(
    derandomize=True, deadline=None, max_examples=80, suppress_health_check=[HealthCheck.too_slow]
)


def _canonical_nan(a: np.ndarray) -> np.ndarray:
    """Every NaN as the one default NaN: which NaN survives ``NaN + NaN`` (sign, payload) depends on the
    operand order the compiler picks, and no archive output can show it (NaN is null or skipped)."""
    return np.where(np.isnan(a), np.array(np.nan, a.dtype), a) if a.dtype.kind == "f" else a


def _same(got, want) -> bool:
    """Bitwise equality of tuples of arrays (any NaN == any NaN, -0.0 != +0.0), dtypes included."""
    if len(got) != len(want):
        return False
    for a, b in zip(got, want, strict=True):
        a, b = _canonical_nan(np.asarray(a)), _canonical_nan(np.asarray(b))
        if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
            return False
    return True


def _bits(x: float) -> int:
    return int(np.float64(x).view(np.int64))


@st.composite
def series_arrays(draw, dtype=np.float64, max_rows: int = 20, max_width: int = 40):
    """(data, lengths): rows of special and arbitrary floats, NaN runs, lengths 0..width."""
    n = draw(st.integers(0, max_rows))
    width = draw(st.integers(0, max_width))
    if dtype == np.float32:
        elements = st.one_of(st.floats(width=32), st.sampled_from(SPECIAL32))
    else:
        elements = st.one_of(st.floats(), st.sampled_from(SPECIAL))
    data = draw(hnp.arrays(dtype, (n, width), elements=elements))
    for i in range(n):  # NaN runs
        if width and draw(st.booleans()):
            start = draw(st.integers(0, width - 1))
            data[i, start : start + draw(st.integers(1, width))] = np.nan
    lengths = draw(hnp.arrays(np.int64, n, elements=st.integers(0, width)))
    return data, lengths


def _adversarial(dtype, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fixed cases: zero series, empty and all-NaN rows, NaN runs, ragged lengths, special values."""
    rng = np.random.default_rng(seed)
    cases = [
        (np.zeros((0, 5), dtype), np.zeros(0, np.int64)),
        (np.zeros((3, 0), dtype), np.zeros(3, np.int64)),
        (np.full((9, 17), np.nan, dtype), np.full(9, 17, np.int64)),
    ]
    for n, width in [(1, 1), (8, 8), (11, 37), (40, 300), (17, 1000)]:
        data = (rng.standard_normal((n, width)) * 10.0 ** rng.integers(-3, 6, (n, 1))).astype(dtype)
        data[rng.random((n, width)) < 0.05] = np.nan
        for i in range(n):  # a NaN run per row
            start = rng.integers(0, width)
            data[i, start : start + rng.integers(1, 50)] = np.nan
        specials = np.array(SPECIAL32 if dtype == np.float32 else SPECIAL, dtype)
        mask = rng.random((n, width)) < 0.1
        data[mask] = rng.choice(specials, mask.sum())
        if n > 2:
            data[1] = np.nan  # all-NaN row
        lengths = rng.integers(0, width + 1, n).astype(np.int64)
        lengths[0] = width
        if n > 3:
            lengths[2] = 0  # empty row
        cases.append((data, lengths))
        cases.append((data, np.full(n, width, np.int64)))
        cases.append((data, np.minimum(np.arange(1, n + 1, dtype=np.int64), width)))  # lengths 1..N
    return cases


# ---------------------------------------------------------------------------------------------------
# series_stats
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_series_stats_adversarial(dtype):
    for data, lengths in _adversarial(dtype):
        assert _same(series_stats(data, lengths), ref.series_stats(data, lengths)), (data.shape, lengths)


@HYPOTHESIS
@given(series_arrays())
def test_series_stats_matches_reference(case):
    data, lengths = case
    assert _same(series_stats(data, lengths), ref.series_stats(data, lengths))


@HYPOTHESIS
@given(series_arrays(dtype=np.float32))
def test_series_stats_float32_matches_reference(case):
    data, lengths = case
    assert _same(series_stats(data, lengths), ref.series_stats(data, lengths))


def test_series_stats_mean_is_sequential_sum_bitwise():
    rng = np.random.default_rng(42)
    n, width = 2000, 257
    data = rng.standard_normal((n, width)) * 10.0 ** rng.uniform(-2, 7, (n, width))
    data[rng.random((n, width)) < 0.01] = np.nan
    lengths = rng.integers(width // 2, width + 1, n).astype(np.int64)
    count, _, mean, _ = series_stats(data, lengths)
    sequential = np.empty(n)
    pairwise_differs = lanes_differ = 0
    for i in range(n):
        values = data[i, : lengths[i]]
        values = values[~np.isnan(values)]
        s = 0.0
        for x in values.tolist():
            s += x
        sequential[i] = s / values.size
        pairwise_differs += np.sum(values) / values.size != sequential[i]  # numpy: pairwise
        lanes = np.zeros(8)  # an 8-lane SIMD-style split of the same row
        for k, x in enumerate(values.tolist()):
            lanes[k % 8] += x
        lanes_differ += ref.sequential_sum(lanes) / values.size != sequential[i]
    # the data must contain rows where the other summation orders give different means
    assert pairwise_differs > 20 and lanes_differ > 20
    assert np.array_equal(count, np.array([np.count_nonzero(~np.isnan(data[i, : lengths[i]])) for i in range(n)]))
    assert mean.tobytes() == sequential.tobytes()


def test_series_stats_signed_zeros_follow_go_min_max():
    data = np.array([[0.0, -0.0, 1.0], [-0.0, 0.0, -1.0], [-0.0, -0.0, -0.0], [0.0, np.nan, 0.0]])
    lengths = np.full(4, 3, np.int64)
    _, vmin, _, vmax = series_stats(data, lengths)
    # math.Min(x, -0) = -0 and math.Max(x, +0) = +0 whatever the order
    assert [math.copysign(1, v) for v in vmin] == [-1, -1, -1, 1]
    assert [math.copysign(1, v) for v in vmax] == [1, 1, -1, 1]
    assert vmin[0] == 0 and vmax[0] == 1 and vmin[1] == -1 and vmax[1] == 0


def test_series_stats_empty_and_all_nan_rows_are_nan():
    data = np.array([[np.nan, np.nan], [1.0, 2.0], [3.0, np.nan]])
    count, vmin, mean, vmax = series_stats(data, np.array([2, 0, 2], np.int64))
    assert count.tolist() == [0, 0, 1]
    assert np.isnan(vmin[:2]).all() and np.isnan(mean[:2]).all() and np.isnan(vmax[:2]).all()
    assert (vmin[2], mean[2], vmax[2]) == (3.0, 3.0, 3.0)


def test_series_stats_rejects_bad_lengths_and_layout():
    data = np.zeros((2, 4))
    with pytest.raises(ValueError):
        series_stats(data, np.array([5, 1], np.int64))
    with pytest.raises(ValueError):
        series_stats(data, np.array([-1, 1], np.int64))
    with pytest.raises(ValueError):
        series_stats(data, np.array([1], np.int64))
    with pytest.raises(TypeError):  # strided views must be copied by the caller
        series_stats(np.zeros((2, 8))[:, ::2], np.array([4, 4], np.int64))


# ---------------------------------------------------------------------------------------------------
# mask_outside_float32
# ---------------------------------------------------------------------------------------------------


#: (sample, outside float32?) at the range limit, both signs: outside iff float32(x) is +-Inf
BOUNDARY = [
    (F32_MAX, False), (float(np.nextafter(F32_MAX, math.inf)), False), (3.4028235e38, False),
    (float(np.nextafter(F32_OVERFLOW, 0.0)), False), (F32_OVERFLOW, True),
    (float(np.nextafter(F32_OVERFLOW, math.inf)), True), (3.4028236e38, True), (1e300, True),
    (math.inf, True), (1.0, False), (0.0, False),
]
BOUNDARY += [(-x, out) for x, out in BOUNDARY]


def test_float32_boundary_is_where_the_cast_overflows():
    assert reduce.F32_OVERFLOW == F32_OVERFLOW == F32_MAX + 2.0**103  # FLT_MAX + half an ulp
    with np.errstate(over="ignore"):
        for x, out in BOUNDARY:
            assert bool(np.isinf(np.float32(x))) is out, x


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_mask_outside_float32(dtype):
    row = [x for x, _ in BOUNDARY] + [math.nan, -0.0]
    with np.errstate(over="ignore"):
        data = np.tile(np.array(row, np.float64), (3, 1)).astype(dtype)
    original = data.copy()
    expected = data.copy()
    want = ref.mask_outside_float32(expected)
    got = mask_outside_float32(data)
    # float64: exactly the samples whose cast overflows; float32 input: only the infinities remain outside
    outside = np.array([out for _, out in BOUNDARY] + [False, False])
    if dtype == np.float32:
        outside = np.isinf(original[0])
    assert got == want == 3 * int(outside.sum()) > 0
    assert data.tobytes() == expected.tobytes()
    assert np.isnan(data[:, outside]).all()
    assert data[:, ~outside].tobytes() == original[:, ~outside].tobytes()  # kept samples keep their value
    flat = np.array([3.5e38, 1.0, -np.inf, 3.4028235e38])
    assert mask_outside_float32(flat) == 2 and np.isnan(flat[[0, 2]]).all()
    assert flat[[1, 3]].tolist() == [1.0, 3.4028235e38]


def test_statistics_see_the_kept_values_above_flt_max():
    """Masking then series_stats: 3.4028235e38 counts with its float64 value, 3.4028236e38 is missing."""
    row = [3.4028235e38, 3.4028236e38, -3.4028235e38, -3.4028236e38, 1.0, F32_OVERFLOW,
           float(np.nextafter(F32_OVERFLOW, 0.0)), math.inf, math.nan]
    data = np.array([row, [3.4028236e38, -math.inf, math.nan, 2.0, 0, 0, 0, 0, 0]])
    lengths = np.array([len(row), 4], np.int64)
    assert mask_outside_float32(data) == 6
    count, vmin, mean, vmax = series_stats(data, lengths)
    below = float(np.nextafter(F32_OVERFLOW, 0.0))
    assert count.tolist() == [4, 1]
    assert vmin[0] == -3.4028235e38 and vmax[0] == below
    assert mean[0] == ref.sequential_sum(np.array([3.4028235e38, -3.4028235e38, 1.0, below])) / 4
    assert (vmin[1], mean[1], vmax[1]) == (2.0, 2.0, 2.0)
    assert _same((count, vmin, mean, vmax), ref.series_stats(data, lengths))
    assert round2(vmax)[0] == round2_scalar(below) == ref.round2_scalar(below)


@HYPOTHESIS
@given(series_arrays(max_rows=5, max_width=300))
def test_mask_outside_float32_matches_reference(case):
    data, _ = case
    expected = data.copy()
    assert mask_outside_float32(data) == ref.mask_outside_float32(expected)
    assert data.tobytes() == expected.tobytes()


# ---------------------------------------------------------------------------------------------------
# block_statistics (mask + series_stats + round2 + zeros for empty rows, in one call)
# ---------------------------------------------------------------------------------------------------


def _block_statistics_same(data: np.ndarray, lengths: np.ndarray) -> None:
    want_data = data.copy()
    want = ref.block_statistics(want_data, lengths)
    got_data = data.copy()
    got = block_statistics(got_data, lengths)
    assert got[0] == want[0] and _same(got[1:], want[1:]), data.shape
    assert _canonical_nan(got_data).tobytes() == _canonical_nan(want_data).tobytes()  # masked in place alike


def test_block_statistics_adversarial():
    for data, lengths in _adversarial(np.float64, seed=5):
        _block_statistics_same(data, lengths)
    with np.errstate(over="ignore"):
        edge = np.array([F32_EDGE + [math.nan, -0.0], [math.nan] * (len(F32_EDGE) + 2)])
    _block_statistics_same(edge, np.array([edge.shape[1], 3], np.int64))  # masked samples, an all-NaN row


@HYPOTHESIS
@given(series_arrays(max_rows=12, max_width=60))
def test_block_statistics_matches_reference(case):
    _block_statistics_same(*case)


def test_block_statistics_parallel_build_matches_serial():
    data, lengths = _large(301, 1013, np.float64, seed=6)
    assert data.size >= reduce.SERIAL_BELOW
    with np.errstate(over="ignore"):
        data.reshape(-1)[::991] = 3.5e38
    _block_statistics_same(data, lengths)
    a, b = data.copy(), data.copy()
    got, serial = block_statistics(a, lengths), block_statistics_serial(b, lengths)
    assert got[0] == serial[0] > 0 and _same(got[1:], serial[1:]) and a.tobytes() == b.tobytes()


def test_block_statistics_rejects_bad_lengths():
    with pytest.raises(ValueError):
        block_statistics(np.zeros((2, 4)), np.array([5, 1], np.int64))
    with pytest.raises(ValueError):
        block_statistics(np.zeros((2, 4)), np.array([1], np.int64))


# ---------------------------------------------------------------------------------------------------
# round2
# ---------------------------------------------------------------------------------------------------


def _go_round2(x: float) -> float:
    """Independent of the reference: Go's math.Round on the float64 product, via floor/ceil."""
    y = x * 100.0
    r = math.floor(y + 0.5) if y >= 0 else math.ceil(y - 0.5)
    if abs(y - math.trunc(y)) < 0.5:  # y + 0.5 may round up in float64 (y = 0.49999999999999994)
        r = math.trunc(y)
    return math.copysign(float(r), y) / 100.0


@pytest.mark.parametrize(
    "x", [0.125, 0.015, 2.675, 1.115, -12.345, 2.285, 16777217.0, 1e-7, -0.0, -0.001, 0.0049999999999999994]
)
def test_round2_boundaries(x):
    assert _bits(round2_scalar(x)) == _bits(ref.round2_scalar(x)) == _bits(_go_round2(x))
    assert _bits(round2(np.array([x]))[0]) == _bits(round2_scalar(x))


def test_round2_examples():
    assert round2_scalar(0.125) == 0.13  # Python's round(0.125, 2) gives 0.12 (half to even)
    # 2.675 is 2.67499999999999982236431605997495353221893310546875 in binary, but the float64
    # product rounds: verify the product instead of assuming it, then Go's result follows from it
    product = 2.675 * 100
    assert product == 267.5
    assert round2_scalar(2.675) == 2.68 and round(2.675, 2) == 2.67
    assert 1.115 * 100 == 111.5 and round2_scalar(1.115) == 1.12
    assert -12.345 * 100 == -1234.5 and round2_scalar(-12.345) == -12.35
    assert 2.285 * 100 == 228.5 and round2_scalar(2.285) == 2.29
    assert round2_scalar(16777217.0) == 16777217.0
    assert round2_scalar(1e-7) == 0.0 and math.copysign(1, round2_scalar(1e-7)) == 1
    negative_zero = round2_scalar(-0.001)  # math.Round(-0.1) = -0, -0/100 = -0
    assert negative_zero == 0.0 and math.copysign(1, negative_zero) == -1
    assert math.copysign(1, round2_scalar(-0.0)) == -1
    assert round2_scalar(0.0049999999999999994) == 0.0  # 0.49999999999999994 + 0.5 rounds to 1.0
    assert math.isnan(round2_scalar(math.nan))
    assert round2_scalar(math.inf) == math.inf and round2_scalar(-math.inf) == -math.inf
    assert round2_scalar(1e300) == 1e300


@HYPOTHESIS
@given(hnp.arrays(np.float64, st.integers(0, 50), elements=st.one_of(st.floats(), st.sampled_from(SPECIAL))))
def test_round2_matches_reference(x):
    assert round2(x).tobytes() == ref.round2(x).tobytes()


# ---------------------------------------------------------------------------------------------------
# statistics_series
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_statistics_series_adversarial(dtype):
    for data, lengths in _adversarial(dtype, seed=1):
        assert _same(statistics_series(data, lengths), ref.statistics_series(data, lengths)), data.shape


@HYPOTHESIS
@given(series_arrays())
def test_statistics_series_matches_reference(case):
    data, lengths = case
    assert _same(statistics_series(data, lengths), ref.statistics_series(data, lengths))


@HYPOTHESIS
@given(series_arrays(dtype=np.float32, max_rows=12, max_width=12))
def test_statistics_series_float32_matches_reference(case):
    data, lengths = case
    assert _same(statistics_series(data, lengths), ref.statistics_series(data, lengths))


@HYPOTHESIS
@given(
    st.integers(3, 300).flatmap(
        lambda n: hnp.arrays(np.float64, (n, 1), elements=st.sampled_from([-2.0, -0.0, 0.0, 1.0, 1.0, 3.0, math.nan]))
    )
)
def test_statistics_series_median_with_many_ties(data):
    lengths = np.ones(data.shape[0], np.int64)
    assert _same(statistics_series(data, lengths), ref.statistics_series(data, lengths))


@pytest.mark.parametrize("n", [3, 4, 15, 16, 17, 31, 33, 72, 73, 104, 577])
def test_statistics_series_median_around_the_rank_finish(n):
    """Selections that end in the rank count at once, after one round, or after several; with ties."""
    rng = np.random.default_rng(n)
    data = np.round(rng.uniform(-50.0, 50.0, (n, 40)), rng.integers(0, 3))
    data[:, ::5] = rng.choice([-0.0, 0.0, 1.0], (n, 8))  # many equal keys, signed zeros
    data[rng.random((n, 40)) < 0.05] = np.nan
    lengths = np.full(n, 40, np.int64)
    assert _same(statistics_series(data, lengths), ref.statistics_series(data, lengths))


def test_statistics_series_median_skips_nan():
    # 5 series at one step: ccarchive takes the median of [2, 4, 6, 8] (cc-backend: of [0, 2, 4, 6, 8])
    data = np.array([[np.nan], [2.0], [4.0], [6.0], [8.0]])
    vmin, median, vmax, mean = statistics_series(data, np.ones(5, np.int64))
    assert (vmin[0], median[0], vmax[0], mean[0]) == (2.0, 5.0, 8.0, 5.0)


def test_statistics_series_rules():
    data = np.array(
        [
            [1.0, np.nan, 5.0, 7.0, 9.0],
            [2.0, np.nan, 6.0, 8.0, 9.0],
            [4.0, 3.0, np.nan, 1.0, 0.0],
            [3.0, 3.0, 7.0, 0.0, 0.0],
        ]
    )
    lengths = np.array([5, 5, 4, 5], np.int64)
    vmin, median, vmax, mean = statistics_series(data, lengths)
    assert len(vmin) == 5  # the longest series
    assert (vmin[0], median[0], vmax[0], mean[0]) == (1.0, 2.5, 4.0, 2.5)  # even count: mean of middle two
    assert np.isnan([vmin[1], median[1], vmax[1], mean[1]]).all()  # only 2 values
    assert (vmin[2], median[2], vmax[2]) == (5.0, 6.0, 7.0)
    assert np.isnan([vmin[4], median[4], vmax[4], mean[4]]).all()  # beyond the shortest series
    assert [len(a) for a in statistics_series(np.zeros((0, 3)), np.zeros(0, np.int64))] == [0, 0, 0, 0]


# ---------------------------------------------------------------------------------------------------
# aggregate
# ---------------------------------------------------------------------------------------------------


@st.composite
def grouped_arrays(draw):
    data, lengths = draw(series_arrays(max_rows=16, max_width=30))
    n_groups = draw(st.integers(1 if data.shape[0] else 0, 6))
    groups = draw(hnp.arrays(np.int64, data.shape[0], elements=st.integers(0, max(n_groups - 1, 0))))
    return data, lengths, groups, n_groups


@HYPOTHESIS
@given(grouped_arrays(), st.sampled_from([SUM, AVG]))
def test_aggregate_matches_reference(case, mode):
    data, lengths, groups, n_groups = case
    assert _same(aggregate(data, lengths, groups, n_groups, mode), ref.aggregate(data, lengths, groups, n_groups, mode))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("mode", [SUM, AVG])
def test_aggregate_adversarial(dtype, mode):
    rng = np.random.default_rng(7)
    for data, lengths in _adversarial(dtype, seed=2):
        n = data.shape[0]
        n_groups = max(1, n // 3) if n else 0
        groups = rng.integers(0, max(n_groups, 1), n).astype(np.int64)
        got = aggregate(data, lengths, groups, n_groups + 1, mode)  # the extra group stays empty
        assert _same(got, ref.aggregate(data, lengths, groups, n_groups + 1, mode)), data.shape
        assert got[1][-1] == 0 and np.isnan(got[0][-1]).all()


def test_aggregate_metric_store_arithmetic():
    # avg multiplies by 1/k (cc-backend's metric store) rather than dividing by k: find sums where
    # the two differ in the last bit and check the kernel takes the multiplication
    rng = np.random.default_rng(3)
    rows = rng.random((3, 4000)) * 100
    total = rows[0] + rows[1] + rows[2]
    differs = total * (1.0 / 3) != total / 3
    assert differs.sum() > 100
    out, out_lengths = aggregate(rows, np.full(3, 4000, np.int64), np.zeros(3, np.int64), 1, AVG)
    assert out[0].tobytes() == (total * (1.0 / 3)).tobytes() and out_lengths.tolist() == [4000]
    # NaN propagates, a member's end is NaN for the group, a single member is not scaled, and
    # -0.0 becomes +0.0 because the sum starts from zero
    data = np.array([[1.0, np.nan, 3.0, 4.0], [1.0, 2.0, 3.0, 9.0], [-0.0, 5.0, 7.0, 1.0]])
    out, out_lengths = aggregate(data, np.array([4, 3, 2], np.int64), np.array([0, 0, 1], np.int64), 3, AVG)
    assert out_lengths.tolist() == [4, 2, 0]
    assert out.shape == (3, 4)
    assert out[0, 0] == 1.0 and np.isnan(out[0, 1]) and out[0, 2] == 3.0 and np.isnan(out[0, 3])
    assert out[1, 0] == 0.0 and math.copysign(1, out[1, 0]) == 1 and out[1, 1] == 5.0
    assert np.isnan(out[1, 2:]).all() and np.isnan(out[2]).all()


def test_aggregate_rejects_bad_groups():
    data = np.zeros((2, 3))
    with pytest.raises(ValueError):
        aggregate(data, np.array([3, 3], np.int64), np.array([0, 2], np.int64), 2, SUM)
    with pytest.raises(ValueError):
        aggregate(data, np.array([3, 3], np.int64), np.array([0, 1], np.int64), 2, 5)


# ---------------------------------------------------------------------------------------------------
# parallel builds (the cases above are mostly below SERIAL_BELOW and take the serial path)
# ---------------------------------------------------------------------------------------------------


def _large(n: int, width: int, dtype=np.float64, seed: int = 9) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    data = (rng.standard_normal((n, width)) * 10.0 ** rng.integers(-2, 5, (n, 1))).astype(dtype)
    data[rng.random((n, width)) < 0.01] = np.nan
    for i in range(0, n, 7):
        start = rng.integers(0, width)
        data[i, start : start + rng.integers(1, 200)] = np.nan
    specials = np.array(SPECIAL32 if dtype == np.float32 else SPECIAL, dtype)
    mask = rng.random((n, width)) < 0.001
    data[mask] = rng.choice(specials, mask.sum())
    data[3] = np.nan
    lengths = np.full(n, width, np.int64)
    ragged = rng.random(n) < 0.2
    lengths[ragged] = rng.integers(0, width + 1, ragged.sum())
    lengths[5] = 0
    lengths[11] = width - 3
    return data, lengths


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_parallel_builds_match_serial_and_reference(dtype):
    data, lengths = _large(301, 1013, dtype)
    assert data.size >= reduce.SERIAL_BELOW
    got = series_stats(data, lengths)
    assert _same(got, series_stats_serial(data, lengths))
    assert _same(got, ref.series_stats(data, lengths))

    small = np.ascontiguousarray(data[:40, :500])
    assert small.size >= timestep.SERIAL_BELOW
    got = statistics_series(small, lengths[:40].clip(max=500))
    assert _same(got, statistics_series_serial(small, lengths[:40].clip(max=500)))
    assert _same(got, ref.statistics_series(small, lengths[:40].clip(max=500)))

    wide, wide_lengths = _large(600, 1000, dtype, seed=4)
    assert wide.size >= aggregate_module.SERIAL_BELOW
    groups = (np.arange(600) * 7 % 13).astype(np.int64)
    for mode in (SUM, AVG):
        got = aggregate(wide, wide_lengths, groups, 14, mode)
        assert _same(got, aggregate_serial(wide, wide_lengths, groups, 14, mode))
        assert _same(got, ref.aggregate(wide, wide_lengths, groups, 14, mode))

    assert wide.size >= 2 * reduce.SERIAL_BELOW
    with np.errstate(over="ignore"):
        wide.reshape(-1)[::997] = np.float64(3.5e38).astype(dtype)
    a, b, c = wide.copy(), wide.copy(), wide.copy()
    assert mask_outside_float32(a) == mask_outside_float32_serial(b) == ref.mask_outside_float32(c) > 0
    assert a.tobytes() == b.tobytes() == c.tobytes()
