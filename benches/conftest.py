"""Benchmark suite configuration.

* ``ANANT_BENCH_SMOKE=1`` (read here and in ``_bench.py``) shrinks every workload and skips the
  compile-time bench; CI runs ``ANANT_BENCH_SMOKE=1 pytest benches --benchmark-disable -q``.
* The plain NumPy references live in ``tests/naive.py``; that folder is put on ``sys.path``.
* At the end a compact table of medians, throughputs and ratios (the ``extra_info`` of each bench)
  is printed.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.join(os.path.dirname(_HERE), "tests"))

import _bench  # noqa: E402

SMOKE = _bench.SMOKE


def pytest_report_header(config):
    import numba

    mode = "SMOKE (reduced sizes)" if SMOKE else "full sizes"
    return f"anant_fast benches: {mode}; numba {numba.__version__}, {numba.get_num_threads()} threads"


def _fmt(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def pytest_terminal_summary(terminalreporter):
    if not _bench.ROWS:
        return
    tr = terminalreporter
    tr.write_sep("-", "anant_fast benchmark summary (median; extra_info)")
    for group, name, t, info in _bench.ROWS:
        median = "disabled" if t is None else f"{t * 1e3:.3f} ms"
        extras = ", ".join(f"{k}={_fmt(v)}" for k, v in info.items())
        tr.write_line(f"{group:<28} {name:<44} {median:>12}  {extras}")
