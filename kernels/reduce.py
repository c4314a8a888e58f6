"""Per-series statistics (count, min, mean, max) and the rounding that cc-backend applies to them.

Why the kernel looks the way it does: the archive must be byte-compatible with cc-backend, whose mean
is a float64 sum taken strictly left to right. Reassociating it (pairwise, SIMD lanes along the
row) changes the last bit of about one mean in 400, and that bit can flip the 2-decimal rounding. So
each row's sum is one dependent chain of additions, and speed comes from running the chains of 8
rows side by side in the 8 lanes of one vector, never from splitting a row.

LLVM cannot derive that layout from plain numba loops (it will not SLP-vectorise across rows), so
the inner loop is written as LLVM IR in ``_accumulate_block``: per step it loads an 8-row x 8-column
tile, transposes it with 24 shuffles, and then updates 4 vector accumulators column by column, lane
r belonging to row r:

* sum   += x where x is not NaN (adding 0.0 instead of a NaN leaves the sum unchanged bit for bit:
  the sum starts at +0.0 and never becomes -0.0);
* count += 1 where x is not NaN;
* min / max over integer "order keys" (the IEEE total order as int64), which gives Go's math.Min /
  math.Max result for signed zeros (-0 < +0) independent of sample order, and needs no NaN branch
  beyond the mask.

Measured on the 2-core AMD EPYC development VM (Zen 5, AVX-512), float64, 1 % NaN:

=====================================  ==========  ==========  ========================
variant                                1 thread    2 threads   note
=====================================  ==========  ==========  ========================
8 interleaved scalar rows              15 GB/s     30 GB/s     compute bound, 2.2 cycles/sample
2 passes: vector scan + scalar sums    21 GB/s     42 GB/s     0.65 + 0.53 cycles/sample
transposed 8x8 tile (this file)        27 GB/s     42 GB/s     0.59 cycles/sample, waits on DRAM
 + software prefetch 1 KiB ahead       38 GB/s     71-74 GB/s  read bandwidth: 39 / 77 GB/s
=====================================  ==========  ==========  ========================

Blocks are 8 rows, whatever the vector width of the machine: LLVM splits the 8-lane vectors into
two AVX2 or four SSE/NEON registers where AVX-512 is missing, and the results are identical.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = [
    "block_statistics",
    "block_statistics_serial",
    "F32_MAX",
    "F32_OVERFLOW",
    "outside_float32",
    "series_stats",
    "series_stats_serial",
    "mask_outside_float32",
    "mask_outside_float32_serial",
    "round2",
    "round2_scalar",
]

#: rows per block = vector lanes of the accumulators; the tile transpose below is written for 8
BLOCK_ROWS = 8
#: prefetch distance in samples per row. Without prefetching the 8 row streams of a block ran at
#: 27 GB/s on one thread; 64 -> 36, 128 -> 38, 192 -> 38, 512 -> 36, 1024 -> 34 GB/s.
PREFETCH_SAMPLES = 128

#: inputs smaller than this many samples go to the serial build of a kernel. A parallel region costs
#: ~2 us when the other core idles, but on a busy machine its p99 was 38 ms for an 8 x 60 input
#: (waiting for the worker thread to be scheduled) against 0.8 us serially; 2 MiB of float64 takes
#: ~50 us on one thread, which is where a second thread starts to pay. (numba.set_num_threads inside
#: a kernel would do the same but makes it uncacheable, so each kernel is compiled twice instead.)
SERIAL_BELOW = 1 << 18

_I64_MAX = 0x7FFFFFFFFFFFFFFF
_I64_MIN = -0x8000000000000000
_ABS_MASK = 0x7FFFFFFFFFFFFFFF

#: The largest finite float32, 3.4028234663852886e38 (FLT_MAX; Go's math.MaxFloat32).
F32_MAX = float(np.finfo(np.float32).max)
#: The smallest magnitude whose conversion to float32 overflows: FLT_MAX plus half an ulp of FLT_MAX,
#: 2**128 - 2**103 = 3.4028235677973366e38. The conversion (Go's ``float32(x)``, numpy's cast) rounds to
#: nearest even, so anything below it becomes at most FLT_MAX (3.4028235e38 is inside), and from it on
#: the result is +-Inf (the tie at exactly this value goes to the even neighbour 2**128, which is Inf).
F32_OVERFLOW = 2.0**128 - 2.0**103


# ---------------------------------------------------------------------------------------------------
# the vector core, as LLVM IR
# ---------------------------------------------------------------------------------------------------


def _shuffle(builder, a, b, mask):
    i32 = ir.IntType(32)
    return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, len(mask)), mask))


def _transpose8(builder, rows):
    """Transpose 8 vectors <8 x double>: returns ``cols`` with ``cols[j][r] == rows[r][j]``.

    Three rounds of two-input shuffles (unpack pairs, then 2-blocks, then 4-blocks), 24 in total.
    """
    pairs = []  # pairs[p] = (even columns, odd columns) of rows 2p, 2p+1, interleaved by row
    for p in range(0, 8, 2):
        pairs.append(
            (
                _shuffle(builder, rows[p], rows[p + 1], [0, 8, 2, 10, 4, 12, 6, 14]),
                _shuffle(builder, rows[p], rows[p + 1], [1, 9, 3, 11, 5, 13, 7, 15]),
            )
        )
    quads = {}  # quads[(half, parity, h)]: rows 4*half..4*half+3 of columns parity + 2h and + 4
    for half in (0, 1):
        for parity in (0, 1):
            a, b = pairs[2 * half][parity], pairs[2 * half + 1][parity]
            quads[half, parity, 0] = _shuffle(builder, a, b, [0, 1, 8, 9, 4, 5, 12, 13])
            quads[half, parity, 1] = _shuffle(builder, a, b, [2, 3, 10, 11, 6, 7, 14, 15])
    cols = [None] * 8
    for parity in (0, 1):
        for h in (0, 1):
            a, b = quads[0, parity, h], quads[1, parity, h]
            col = parity + 2 * h
            cols[col] = _shuffle(builder, a, b, [0, 1, 2, 3, 8, 9, 10, 11])
            cols[col + 4] = _shuffle(builder, a, b, [4, 5, 6, 7, 12, 13, 14, 15])
    return cols


@intrinsic
def _accumulate_block(typingctx, data, first, lens, stop, fstate, istate):
    """Fold columns [0, stop) of rows first..first+7 into the block state; stop % 8 == 0.

    ``lens`` (int64[8]) masks lane r beyond row r's length (a length of 0 masks a row absent from
    the last block; its loads are redirected to the last row). ``fstate`` (float64[8]) holds the
    sums; ``istate`` (int64[24]) the counts, min keys and max keys, 8 each. Both are read at entry
    and written back at exit.
    """
    if not (isinstance(data, types.Array) and data.ndim == 2 and data.dtype in (types.float32, types.float64)):
        return None

    def codegen(context, builder, signature, args):
        data_ty, _, lens_ty, _, fstate_ty, istate_ty = signature.args
        ary = context.make_array(data_ty)(context, builder, args[0])
        first_, stop_ = args[1], args[3]
        lens_ary = context.make_array(lens_ty)(context, builder, args[2])
        fst = context.make_array(fstate_ty)(context, builder, args[4])
        ist = context.make_array(istate_ty)(context, builder, args[5])

        i32, i64, f64 = ir.IntType(32), ir.IntType(64), ir.DoubleType()
        src = context.get_value_type(data_ty.dtype)
        v8f, v8i, v8src = ir.VectorType(f64, 8), ir.VectorType(i64, 8), ir.VectorType(src, 8)

        def splat(vty, value):
            return ir.Constant(vty, [value] * 8)

        def load_vec(ptr, offset, vty, align):
            p = builder.gep(ptr, [offset])
            return builder.load(builder.bitcast(p, vty.as_pointer()), align=align)

        def store_vec(ptr, offset, value):
            p = builder.gep(ptr, [ir.Constant(i64, offset)])
            builder.store(value, builder.bitcast(p, value.type.as_pointer()), align=8)

        shape = cgutils.unpack_tuple(builder, ary.shape, 2)
        strides = cgutils.unpack_tuple(builder, ary.strides, 2)
        last_row = builder.sub(shape[0], ir.Constant(i64, 1))
        row_ptrs = []
        for r in range(8):
            row = builder.add(first_, ir.Constant(i64, r))
            row = builder.select(builder.icmp_signed(">", row, last_row), last_row, row)
            row_ptrs.append(
                cgutils.get_item_pointer2(context, builder, ary.data, shape, strides, "C", [row, ir.Constant(i64, 0)])
            )
        lens_vec = load_vec(lens_ary.data, ir.Constant(i64, 0), v8i, 8)

        acc_sum = cgutils.alloca_once_value(builder, load_vec(fst.data, ir.Constant(i64, 0), v8f, 8))
        acc_cnt = cgutils.alloca_once_value(builder, load_vec(ist.data, ir.Constant(i64, 0), v8i, 8))
        acc_lo = cgutils.alloca_once_value(builder, load_vec(ist.data, ir.Constant(i64, 8), v8i, 8))
        acc_hi = cgutils.alloca_once_value(builder, load_vec(ist.data, ir.Constant(i64, 16), v8i, 8))

        prefetch_ty = ir.FunctionType(ir.VoidType(), [src.as_pointer(), i32, i32, i32])
        prefetch = cgutils.get_or_insert_function(builder.module, prefetch_ty, "llvm.prefetch.p0")
        align = context.get_abi_alignment(src)

        with cgutils.for_range_slice(builder, ir.Constant(i64, 0), stop_, ir.Constant(i64, 8)) as (col, _):
            tile = []
            for r in range(8):
                v = load_vec(row_ptrs[r], col, v8src, align)
                tile.append(builder.fpext(v, v8f) if src != f64 else v)
                ahead = builder.gep(row_ptrs[r], [builder.add(col, ir.Constant(i64, PREFETCH_SAMPLES))])
                # read, locality 3 (L1), data cache; prefetching past the array end cannot fault
                builder.call(prefetch, [ahead, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
            total = builder.load(acc_sum)
            count = builder.load(acc_cnt)
            lo = builder.load(acc_lo)
            hi = builder.load(acc_hi)
            col_vec = builder.insert_element(ir.Constant(v8i, ir.Undefined), col, ir.Constant(i32, 0))
            col_vec = _shuffle(builder, col_vec, col_vec, [0] * 8)
            for j, x in enumerate(_transpose8(builder, tile)):
                inside = builder.icmp_signed("<", builder.add(col_vec, splat(v8i, j)), lens_vec)
                ok = builder.and_(builder.fcmp_ordered("ord", x, x), inside)
                total = builder.fadd(total, builder.select(ok, x, splat(v8f, 0.0)))
                count = builder.add(count, builder.zext(ok, v8i))
                bits = builder.bitcast(x, v8i)
                key = builder.xor(bits, builder.and_(builder.ashr(bits, splat(v8i, 63)), splat(v8i, _ABS_MASK)))
                key_lo = builder.select(ok, key, splat(v8i, _I64_MAX))
                key_hi = builder.select(ok, key, splat(v8i, _I64_MIN))
                lo = builder.select(builder.icmp_signed("<", key_lo, lo), key_lo, lo)
                hi = builder.select(builder.icmp_signed(">", key_hi, hi), key_hi, hi)
            builder.store(total, acc_sum)
            builder.store(count, acc_cnt)
            builder.store(lo, acc_lo)
            builder.store(hi, acc_hi)

        store_vec(fst.data, 0, builder.load(acc_sum))
        store_vec(ist.data, 0, builder.load(acc_cnt))
        store_vec(ist.data, 8, builder.load(acc_lo))
        store_vec(ist.data, 16, builder.load(acc_hi))
        return context.get_dummy_value()

    return types.void(data, first, lens, stop, fstate, istate), codegen


@njit(inline="always")
def _order_key(x):
    """int64 whose signed order is the IEEE total order of the float64 ``x`` (-0 < +0)."""
    bits = np.float64(x).view(np.int64)
    return bits ^ ((bits >> 63) & _ABS_MASK)


@njit(inline="always")
def _key_value(key):
    """Inverse of ``_order_key``."""
    return np.int64(key ^ ((key >> 63) & _ABS_MASK)).view(np.float64)


# ---------------------------------------------------------------------------------------------------
# series_stats
# ---------------------------------------------------------------------------------------------------

_STATS_SIGS = [
    "Tuple((int64[::1], float64[::1], float64[::1], float64[::1]))(float64[:, ::1], int64[::1])",
    "Tuple((int64[::1], float64[::1], float64[::1], float64[::1]))(float32[:, ::1], int64[::1])",
]


@njit(inline="always")
def _check_lengths(lengths, n, width):
    if lengths.size != n:
        raise ValueError("lengths must have one entry per row of data")
    for i in range(n):
        if lengths[i] < 0 or lengths[i] > width:
            raise ValueError("lengths[i] must be within [0, data.shape[1]]")


@njit(inline="always")
def _series_stats(data, lengths):
    """The kernel body; ``prange`` runs in parallel only in the parallel build."""
    n, width = data.shape
    _check_lengths(lengths, n, width)
    count = np.empty(n, np.int64)
    vmin = np.empty(n, np.float64)
    mean = np.empty(n, np.float64)
    vmax = np.empty(n, np.float64)
    for block in prange((n + BLOCK_ROWS - 1) // BLOCK_ROWS):
        first = block * BLOCK_ROWS
        rows = min(BLOCK_ROWS, n - first)
        lens = np.zeros(BLOCK_ROWS, np.int64)
        lens[:rows] = lengths[first : first + rows]
        vector_stop = lens.max() // 8 * 8
        sums = np.zeros(BLOCK_ROWS, np.float64)
        state = np.empty(3 * BLOCK_ROWS, np.int64)  # counts, min keys, max keys
        state[:BLOCK_ROWS] = 0
        state[BLOCK_ROWS : 2 * BLOCK_ROWS] = _I64_MAX
        state[2 * BLOCK_ROWS :] = _I64_MIN
        _accumulate_block(data, first, lens, vector_stop, sums, state)
        for r in range(rows):
            total = sums[r]
            cnt = state[r]
            lo = state[BLOCK_ROWS + r]
            hi = state[2 * BLOCK_ROWS + r]
            row = data[first + r]
            for k in range(vector_stop, lens[r]):  # fewer than 8 samples
                x = np.float64(row[k])
                if x == x:
                    total += x
                    cnt += 1
                    key = _order_key(x)
                    lo = min(lo, key)
                    hi = max(hi, key)
            i = first + r
            count[i] = cnt
            if cnt == 0:
                vmin[i] = np.nan
                mean[i] = np.nan
                vmax[i] = np.nan
            else:
                vmin[i] = _key_value(lo)
                mean[i] = total / cnt
                vmax[i] = _key_value(hi)
    return count, vmin, mean, vmax


@njit(_STATS_SIGS, cache=True, nogil=True)
def series_stats_serial(data, lengths):
    """``series_stats`` on the calling thread only."""
    return _series_stats(data, lengths)


@njit(_STATS_SIGS, parallel=True, cache=True, nogil=True)
def series_stats(data, lengths):
    """Count, min, mean, max of the non-NaN samples of each row ``data[i, :lengths[i]]``.

    The mean's sum is the float64 sum left to right, bitwise equal to a sequential loop. Min and
    max follow Go's math.Min/math.Max (-0 < +0). Rows without a non-NaN sample give NaN for all three.
    Blocks of 8 rows run in parallel; inputs below ``SERIAL_BELOW`` samples run serially.
    """
    if data.size < SERIAL_BELOW:
        return series_stats_serial(data, lengths)
    return _series_stats(data, lengths)


# ---------------------------------------------------------------------------------------------------
# mask_outside_float32
# ---------------------------------------------------------------------------------------------------


@njit(inline="always")
def outside_float32(x):
    """True when ``float32(x)`` is +-Inf (|x| >= ``F32_OVERFLOW``, infinities included); False for NaN.

    The one definition of "does not fit float32" that the statistics masking and the data.json
    encoder share, so a sample is either kept by both or dropped by both."""
    return abs(np.float64(x)) >= F32_OVERFLOW


_MASK_SIGS = ["int64(float64[::1])", "int64(float64[:, ::1])", "int64(float32[::1])", "int64(float32[:, ::1])"]
#: samples per parallel task; large enough that thread hand-off (~10 us) is amortised
_MASK_GRAIN = 1 << 16


@njit(inline="always")
def _mask_outside_float32(data):
    flat = data.reshape(data.size)
    replaced = 0
    for task in prange((flat.size + _MASK_GRAIN - 1) // _MASK_GRAIN):
        part = flat[task * _MASK_GRAIN : min((task + 1) * _MASK_GRAIN, flat.size)]
        hits = 0
        for k in range(part.size):
            # a conditional (masked) store: writing every sample back would double the traffic
            if outside_float32(part[k]):
                part[k] = np.nan
                hits += 1
        replaced += hits
    return replaced


@njit(_MASK_SIGS, cache=True, nogil=True)
def mask_outside_float32_serial(data):
    """``mask_outside_float32`` on the calling thread only."""
    return _mask_outside_float32(data)


@njit(_MASK_SIGS, parallel=True, cache=True, nogil=True)
def mask_outside_float32(data):
    """Replace samples whose float32 conversion overflows to +-Inf (``outside_float32``) by NaN, in
    place; return how many. Samples above FLT_MAX that still round to it are kept."""
    if data.size < 2 * SERIAL_BELOW:  # one compare per sample: half the cost of series_stats
        return mask_outside_float32_serial(data)
    return _mask_outside_float32(data)


# ---------------------------------------------------------------------------------------------------
# round2
# ---------------------------------------------------------------------------------------------------


@njit("float64(float64)", cache=True, nogil=True)
def round2_scalar(x):
    """Go's ``math.Round(x*100)/100``: x*100 in float64, round half away from zero, divide by 100."""
    y = x * 100.0
    t = np.trunc(y)  # keeps the sign of zero, as Go's math.Round does
    # y - t is exact (the fractional part of y); NaN and inf fail the test and pass through
    if abs(y - t) >= 0.5:
        t += np.copysign(1.0, y)
    return t / 100.0


@njit("float64[::1](float64[::1])", cache=True, nogil=True)
def round2(x):
    """``round2_scalar`` of every element, as a new array."""
    out = np.empty(x.size, np.float64)
    for k in range(x.size):
        out[k] = round2_scalar(x[k])
    return out


# ---------------------------------------------------------------------------------------------------
# block_statistics: the three steps above for one (metric, scope) block in one call
# ---------------------------------------------------------------------------------------------------

_BLOCK_SIGS = ["Tuple((int64, float64[:, ::1]))(float64[:, ::1], int64[::1])"]


@njit(inline="always")
def _block_statistics(data, lengths):
    """The kernel body; ``prange`` runs in parallel only in the parallel build."""
    masked = _mask_outside_float32(data)
    count, vmin, mean, vmax = _series_stats(data, lengths)
    stats = np.zeros((count.size, 3), np.float64)
    for i in range(count.size):
        if count[i] > 0:
            stats[i, 0] = round2_scalar(vmin[i])
            stats[i, 1] = round2_scalar(mean[i])
            stats[i, 2] = round2_scalar(vmax[i])
    return masked, stats


@njit(_BLOCK_SIGS, cache=True, nogil=True)
def block_statistics_serial(data, lengths):
    """``block_statistics`` on the calling thread only."""
    return _block_statistics(data, lengths)


@njit(_BLOCK_SIGS, parallel=True, cache=True, nogil=True)
def block_statistics(data, lengths):
    """``mask_outside_float32(data)``, then per row (min, mean, max) of ``series_stats``, each
    ``round2``-ed, and all three 0.0 for a row without samples: returns (masked, stats[n, 3]).

    One call instead of seven per block: a small job has ~30 blocks of a few thousand samples,
    where numpy's per-call overhead costs more than the arithmetic.  Inputs below
    ``SERIAL_BELOW`` samples run serially.
    """
    if data.size < SERIAL_BELOW:
        return block_statistics_serial(data, lengths)
    return _block_statistics(data, lengths)
