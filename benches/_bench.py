"""Shared helpers of the benchmark suite: sizes, smoke mode, throughput bookkeeping.

Imported by ``conftest.py`` and the bench modules (pytest puts ``benches/`` on ``sys.path``).
"""
import os

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
