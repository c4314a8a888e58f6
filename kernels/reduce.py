"""Per-series statistics (count, min, mean, max) and the rounding that cc-backend applies to them.

Why this shape: the archive must be byte-compatible with cc-backend, whose mean is a float64 sum
accumulated strictly left to right. Any reassociation (pairwise, SIMD lanes) changes the last bit of
about one mean in 400, and that bit can flip the 2-decimal rounding. One row's sum is therefore a
single dependent chain; speed comes from running 8 rows' chains side by side, never from splitting one.

The kernel works on blocks of 8 rows and chunks of columns, in two passes per chunk:

1. a vectorised pass over each row chunk: NaN test, non-NaN count, min and max, and a copy of the
   chunk with NaN replaced by 0.0 into a small buffer. Min/max are reduced over integer "order keys"
   (the IEEE total order as int64) because LLVM vectorises integer min/max without fastmath, while a
   float `x < lo` reduction stays scalar. The total order also gives Go's `math.Min`/`math.Max`
   semantics for signed zeros for free (min prefers -0, max prefers +0), independent of sample order.
2. a scalar pass adding the 8 buffered rows column by column: 8 independent add chains, one add per
   sample, loads straight from L1/L2. Adding 0.0 for a NaN leaves a sum unchanged bit for bit (the
   sum starts at +0.0 and never becomes -0.0), so pass 2 needs no branch.

While pass 2 runs (pure arithmetic), it prefetches the next chunk, so memory keeps streaming.
Measured on the 2-core AMD EPYC development VM (8192 x 10080 float64, 1 % NaN, 2 threads), see
bench/kernels.py for the current figures; the history of the design choices is in the comments.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

__all__ = ["series_stats", "mask_outside_float32", "round2", "round2_scalar"]

#: rows whose sums run side by side in pass 2. 8 chains keep both FP add pipes busy (add latency
#: ~2 cycles); 4 rows measured 10-15 % slower, 16 rows no faster and twice the buffer.
BLOCK_ROWS = 8
#: columns per chunk: the NaN-free buffer (8 x 2048 x 8 B = 128 KiB) plus the prefetched next chunk
#: stay in the 1 MiB L2. 512 and 8192 measured within noise of 2048 with prefetching on.
CHUNK_COLS = 2048

_F32_MAX = float(np.finfo(np.float32).max)
_I64_MAX = np.int64(0x7FFFFFFFFFFFFFFF)
_I64_MIN = np.int64(-0x7FFFFFFFFFFFFFFF - 1)
_ABS64 = np.int64(0x7FFFFFFFFFFFFFFF)
_INF64 = np.int64(0x7FF0000000000000)
_ABS32 = np.int64(0x7FFFFFFF)
_INF32 = np.int64(0x7F800000)


# ---------------------------------------------------------------------------------------------------
# low-level helpers
# ---------------------------------------------------------------------------------------------------


@intrinsic
def prefetch(typingctx, arr, index):
    """Hint the CPU to load ``arr[index]`` (1-D array) into cache; no effect on results.

    numba exposes no prefetch, so this emits ``llvm.prefetch`` (read, locality 2). Without it the
    vectorised pass waits on DRAM: 8192 x 10080 float64 ran at 14 GB/s on one thread, with it 24 GB/s.
    """
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.gep(ary.data, [args[1]])
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, index), codegen


@intrinsic
def _opaque_one(typingctx):
    """1.0 that the optimiser cannot see as a constant (volatile stack round trip).

    ``fma(x, 1.0, s)`` rounds exactly like ``s + x`` (x * 1.0 is exact), but LLVM folds it back
    into an add when it knows the 1.0. Hiding the constant keeps the fma, which runs on the FMA
    pipes while plain adds run on the FADD pipes: more sum chains per cycle.
    """

    def codegen(context, builder, signature, args):
        f64 = ir.DoubleType()
        slot = cgutils.alloca_once(builder, f64)
        builder.store(ir.Constant(f64, 1.0), slot).volatile = True
        value = builder.load(slot)
        value.volatile = True
        return value

    return types.float64(), codegen


@intrinsic
def _fma(typingctx, x, y, z):
    """x * y + z with a single rounding (llvm.fma)."""
    if not all(isinstance(t, types.Float) for t in (x, y, z)):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return types.float64(types.float64, types.float64, types.float64), codegen


def _bits(a):  # pragma: no cover - replaced by the overload
    """Integer view of a float array with the same item size."""
    raise NotImplementedError


def _masks(a):  # pragma: no cover - replaced by the overload
    """(abs mask, +inf bits) of the float type of ``a``, as int64."""
    raise NotImplementedError


def _key_to_float(key, a):  # pragma: no cover - replaced by the overload
    """The float64 value of an order key produced from the float type of ``a``."""
    raise NotImplementedError


@overload(_bits)
def _bits_impl(a):
    if a.dtype == types.float64:
        return lambda a: a.view(np.int64)
    if a.dtype == types.float32:
        return lambda a: a.view(np.int32)
    return None


@overload(_masks)
def _masks_impl(a):
    if a.dtype == types.float64:
        return lambda a: (_ABS64, _INF64)
    if a.dtype == types.float32:
        return lambda a: (_ABS32, _INF32)
    return None


@overload(_key_to_float)
def _key_to_float_impl(key, a):
    if a.dtype == types.float64:
        return lambda key, a: np.float64(np.int64(key ^ ((key >> 63) & _ABS64)).view(np.float64))
    if a.dtype == types.float32:
        return lambda key, a: np.float64(np.int32(key ^ ((key >> 63) & _ABS32)).view(np.float32))
    return None


@njit(inline="always")
def _order_key(b, abs_mask):
    """Map float bits (sign-extended to int64) to an int64 whose order is IEEE totalOrder."""
    return b ^ ((b >> 63) & abs_mask)


@njit(inline="always")
def _scan(values, bits, clean, lo, hi, count, abs_mask, inf_bits):
    """Vectorised pass over one row chunk: count, min/max keys, NaN->0.0 copy into ``clean``."""
    for k in range(values.size):
        b = np.int64(bits[k])
        missing = (b & abs_mask) > inf_bits
        key = _order_key(b, abs_mask)
        lo = min(lo, _I64_MAX if missing else key)
        hi = max(hi, _I64_MIN if missing else key)
        count += not missing
        clean[k] = 0.0 if missing else np.float64(values[k])
    return lo, hi, count


# ---------------------------------------------------------------------------------------------------
# series_stats
# ---------------------------------------------------------------------------------------------------

_STATS_SIGS = [
    "Tuple((int64[::1], float64[::1], float64[::1], float64[::1]))(float64[:, ::1], int64[::1])",
    "Tuple((int64[::1], float64[::1], float64[::1], float64[::1]))(float32[:, ::1], int64[::1])",
]


@njit(_STATS_SIGS, parallel=True, cache=True)
def series_stats(data, lengths):
    """Count, min, mean, max of the non-NaN samples of each row ``data[i, :lengths[i]]``.

    The mean's sum is the float64 sum left to right, bitwise equal to a sequential loop. Min and
    max follow Go's math.Min/math.Max (-0 < +0). Rows without a non-NaN sample give NaN for all three.
    """
    n, width = data.shape
    if lengths.size != n:
        raise ValueError("lengths must have one entry per row of data")
    for i in range(n):
        if lengths[i] < 0 or lengths[i] > width:
            raise ValueError("lengths[i] must be within [0, data.shape[1]]")
    count = np.zeros(n, np.int64)
    vmin = np.empty(n, np.float64)
    mean = np.empty(n, np.float64)
    vmax = np.empty(n, np.float64)
    bits = _bits(data)
    flat = data.reshape(n * width)
    abs_mask, inf_bits = _masks(data)
    n_blocks = (n + BLOCK_ROWS - 1) // BLOCK_ROWS
    for block in prange(n_blocks):
        first = block * BLOCK_ROWS
        rows = min(BLOCK_ROWS, n - first)
        longest = 0
        for r in range(rows):
            longest = max(longest, lengths[first + r])
        clean = np.empty((BLOCK_ROWS, CHUNK_COLS), np.float64)
        clean[rows:] = 0.0  # missing rows of the last block add zeros to unused sums
        lo = np.full(BLOCK_ROWS, _I64_MAX)
        hi = np.full(BLOCK_ROWS, _I64_MIN)
        cnt = np.zeros(BLOCK_ROWS, np.int64)
        s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
        for start in range(0, longest, CHUNK_COLS):
            m = min(CHUNK_COLS, longest - start)
            for r in range(rows):
                # the part of the chunk inside this row's length; the rest of the buffer adds 0.0
                stop = min(max(lengths[first + r], start), start + m)
                lo[r], hi[r], cnt[r] = _scan(
                    data[first + r, start:stop], bits[first + r, start:stop],
                    clean[r, : stop - start], lo[r], hi[r], cnt[r], abs_mask, inf_bits,
                )
                clean[r, stop - start : m] = 0.0
            # next chunk to prefetch: same rows further right, else the next block's first columns
            if start + CHUNK_COLS < longest:
                next_row, next_col = first, start + CHUNK_COLS
            else:
                next_row, next_col = first + BLOCK_ROWS, 0
            next_rows = max(0, min(BLOCK_ROWS, n - next_row))
            last_col = width - 1 - next_col
            c0, c1, c2, c3 = clean[0], clean[1], clean[2], clean[3]
            c4, c5, c6, c7 = clean[4], clean[5], clean[6], clean[7]
            one = _opaque_one()
            for kk in range(0, m, 8):
                # 8 columns x 8 rows of sums per step; meanwhile one cache line of each row of the
                # next chunk is requested
                for r in range(next_rows):
                    prefetch(flat, (next_row + r) * width + next_col + min(kk, last_col))
                for k in range(kk, min(kk + 8, m)):
                    s0 += c0[k]
                    s1 += c1[k]
                    s2 += c2[k]
                    s3 += c3[k]
                    s4 = _fma(c4[k], one, s4)
                    s5 = _fma(c5[k], one, s5)
                    s6 = _fma(c6[k], one, s6)
                    s7 = _fma(c7[k], one, s7)
        sums = (s0, s1, s2, s3, s4, s5, s6, s7)
        for r in range(rows):
            i = first + r
            count[i] = cnt[r]
            if cnt[r] == 0:
                vmin[i] = np.nan
                mean[i] = np.nan
                vmax[i] = np.nan
            else:
                vmin[i] = _key_to_float(lo[r], data)
                mean[i] = sums[r] / cnt[r]
                vmax[i] = _key_to_float(hi[r], data)
    return count, vmin, mean, vmax


# ---------------------------------------------------------------------------------------------------
# mask_outside_float32
# ---------------------------------------------------------------------------------------------------

_MASK_SIGS = ["int64(float64[::1])", "int64(float64[:, ::1])", "int64(float32[::1])", "int64(float32[:, ::1])"]
#: elements per parallel task; large enough that thread start-up (~10 us) is amortised
_MASK_GRAIN = 1 << 16


@njit(_MASK_SIGS, parallel=True, cache=True)
def mask_outside_float32(data):
    """Replace samples with |x| > float32 max (including +-inf) by NaN, in place; return how many."""
    flat = data.reshape(data.size)
    n_tasks = (flat.size + _MASK_GRAIN - 1) // _MASK_GRAIN
    replaced = 0
    for task in prange(n_tasks):
        part = flat[task * _MASK_GRAIN : min((task + 1) * _MASK_GRAIN, flat.size)]
        hits = 0
        for k in range(part.size):
            # conditional store: samples are almost never out of range, and writing every element
            # back would double the memory traffic
            if abs(np.float64(part[k])) > _F32_MAX:
                part[k] = np.nan
                hits += 1
        replaced += hits
    return replaced


# ---------------------------------------------------------------------------------------------------
# round2
# ---------------------------------------------------------------------------------------------------


@njit("float64(float64)", cache=True, inline="always")
def round2_scalar(x):
    """Go's ``math.Round(x*100)/100``: x*100 in float64, round half away from zero, divide by 100."""
    y = x * 100.0
    t = np.trunc(y)  # keeps the sign of zero, as Go's math.Round does
    # y - t is exact (the fraction of y); NaN and inf fail the test and pass through unchanged
    if abs(y - t) >= 0.5:
        t += np.copysign(1.0, y)
    return t / 100.0


@njit("float64[::1](float64[::1])", cache=True)
def round2(x):
    """``round2_scalar`` applied to every element, into a new array."""
    out = np.empty(x.size, np.float64)
    for k in range(x.size):
        out[k] = round2_scalar(x[k])
    return out
