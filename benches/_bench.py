"""Shared helpers of the benchmark suite: sizes, smoke mode, throughput bookkeeping.

Imported by ``conftest.py`` and the bench modules (pytest puts ``benches/`` on ``sys.path``).
"""
import os

from numba import njit, prange

from anant_fast.kernels.config import block_bounds, block_count

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


@njit(parallel=True, cache=True, fastmath={"reassoc"})  # reassoc: a vectorised (SIMD) sum
def _sum_blocks(a, n_blocks):
    total = 0.0
    for b in prange(n_blocks):
        lo, hi = block_bounds(b, n_blocks, a.shape[0])
        s = 0.0
        for i in range(lo, hi):
            s += a[i]
        total += s
    return total


def parallel_read(a):
    """Sum of the float64 array ``a`` read once by every Numba thread (contiguous blocks): the
    machine's read bandwidth, where NumPy's ``a.sum()`` uses one core."""
    flat = a.reshape(-1)
    return _sum_blocks(flat, block_count(flat.shape[0]))
