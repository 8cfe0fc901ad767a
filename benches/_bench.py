"""Shared helpers of the benchmark suite: sizes, smoke mode, throughput bookkeeping.

Imported by ``conftest.py`` and the bench modules (pytest puts ``benches/`` on ``sys.path``).
"""
import os

import numpy as np
from numba import njit, prange

from anant_fast.kernels.config import block_bounds, block_count
from anant_fast.kernels.simd import WIDTH, add, load, splat, store

SMOKE = os.environ.get("ANANT_BENCH_SMOKE", "").strip().lower() not in ("", "0", "false", "no")
"""``ANANT_BENCH_SMOKE=1``: every size shrinks so each bench runs once in seconds (CI)."""

# Throughputs of the NumPy references, keyed by bench group, so the kernel bench of the same group
# (which runs after its reference: definition order) can report its speed-up per point.
REFERENCE = {}

# (group, test, median seconds or None, extra_info) of every bench, printed by conftest at the end.
ROWS = []


def size(full, smoke):
    """``full`` normally, ``smoke`` under ``ANANT_BENCH_SMOKE=1``."""
    return smoke if SMOKE else full


def median_s(benchmark):
    """Median seconds of the finished ``benchmark`` call, or None when benchmarking is disabled."""
    stats = getattr(benchmark, "stats", None)
    if not stats:
        return None
    return stats.stats.median


def record(benchmark, n, unit="points", **info):
    """Put ``n``, the throughput ``n / median`` (``<unit>_per_s``) and ``info`` into extra_info.

    Returns the throughput (None when benchmarking is disabled).
    """
    t = median_s(benchmark)
    benchmark.extra_info[unit] = n
    rate = None
    if t:
        rate = n / t
        benchmark.extra_info[f"{unit}_per_s"] = rate
    benchmark.extra_info.update(info)
    ROWS.append((benchmark.group, benchmark.name, t, benchmark.extra_info))
    return rate


@njit(parallel=True, cache=True)
def _sum_blocks(a, n_blocks):
    total = 0.0
    for b in prange(n_blocks):
        lo, hi = block_bounds(b, n_blocks, a.shape[0])
        s0 = s1 = s2 = s3 = splat(0.0)   # four vector sums: the loads bound the loop, not add latency
        i = lo
        while i + 4 * WIDTH <= hi:
            s0, s1 = add(s0, load(a, i)), add(s1, load(a, i + WIDTH))
            s2, s3 = add(s2, load(a, i + 2 * WIDTH)), add(s3, load(a, i + 3 * WIDTH))
            i += 4 * WIDTH
        lanes = np.empty(WIDTH)
        store(lanes, 0, add(add(s0, s1), add(s2, s3)))
        total += lanes.sum() + a[i:hi].sum()
    return total


def parallel_read(a):
    """Sum of the float64 array ``a`` read once by every Numba thread (contiguous blocks, explicit
    vectors): the machine's read bandwidth, where NumPy's ``a.sum()`` uses one core. (A scalar
    loop measures the latency of its additions instead: 6 GB/s a core here, against 32 read.)"""
    flat = a.reshape(-1)
    return _sum_blocks(flat, block_count(flat.shape[0]))
