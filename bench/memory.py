"""Memory read bandwidth of this machine, the yardstick for the statistics budget.

The statistics kernels are judged as a fraction of what the memory system can deliver, so the bench
measures that ceiling itself instead of trusting a data sheet: a parallel integer sum over a float64
array far larger than the last-level cache, with 1 thread and with all threads.

The words are summed as int64, not float64: integer addition is associative, so LLVM vectorises the
loop and keeps several accumulators in flight without fastmath. The loop is then limited by loads
alone, which is what "read bandwidth" means here.
"""

from __future__ import annotations

import time

import numba
import numpy as np
from numba import njit, prange

#: bytes of the probe array; 1 GiB is 32x the 32 MiB L3 of the development machine
FULL_BYTES = 1 << 30
QUICK_BYTES = 1 << 28


@njit("int64(int64[::1])", parallel=True, cache=True)
def _read_all(words: np.ndarray) -> int:
    """Sum every 64-bit word (wrapping); the result only keeps the loop from being optimised away."""
    total = 0
    for i in prange(words.size):
        total += words[i]
    return total


def read_bandwidth(threads: int, nbytes: int = FULL_BYTES, repeats: int = 5) -> float:
    """Best-of-``repeats`` read bandwidth in GB/s (1e9 bytes/s) with ``threads`` numba threads."""
    words = np.empty(nbytes // 8, dtype=np.int64)
    words.fill(1)  # touch every page so the timing excludes page faults
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    try:
        _read_all(words[:1024])  # load the compiled function before timing
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            _read_all(words)
            best = min(best, time.perf_counter() - start)
    finally:
        numba.set_num_threads(previous)
    return words.nbytes / best / 1e9


_measured: dict[bool, dict[int, float]] = {}


def bandwidth(quick: bool) -> dict[int, float]:
    """{threads: GB/s} for 1 thread and all numba threads, measured once per process."""
    if quick not in _measured:
        nbytes = QUICK_BYTES if quick else FULL_BYTES
        repeats = 3 if quick else 5
        _measured[quick] = {
            threads: read_bandwidth(threads, nbytes, repeats)
            for threads in sorted({1, numba.config.NUMBA_NUM_THREADS})
        }
    return _measured[quick]


def run(quick: bool) -> list[dict]:
    """Bench rows: read bandwidth with one thread and with all numba threads."""
    nbytes = QUICK_BYTES if quick else FULL_BYTES
    rows = []
    for threads, gbs in bandwidth(quick).items():
        rows.append(
            {
                "group": "memory",
                "case": f"read {nbytes >> 20} MiB",
                "impl": f"{threads} thread" + ("s" if threads > 1 else ""),
                "seconds": nbytes / gbs / 1e9,
                "throughput": gbs,
                "unit": "GB/s",
                "threads": threads,
            }
        )
    return rows
