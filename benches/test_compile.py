"""First-call latency of a fresh process: with compilation (cold cache) and from the on-disk cache.

Each round runs ``python -c CHILD`` in a new process with ``NUMBA_CACHE_DIR`` pointing at a cache
folder: a new, empty one (cold: the first ``scalar_curvature`` call compiles every kernel it needs)
or one a previous child has filled (warm: the kernels load from disk). The child times, with
``time.perf_counter``, the import of ``anant_fast`` and the first ``Sphere(2).scalar_curvature`` call
on 10 points and reports both; those go into ``extra_info`` (``first_call_s``, ``import_s``). The
benchmark's own timing is the wall time of the whole child process (interpreter start included).
Skipped in smoke mode.
"""
import json
import os
import subprocess
import sys
import tempfile

import pytest

from _bench import SMOKE

pytestmark = pytest.mark.skipif(SMOKE, reason="compile-time bench is skipped in smoke mode")

CHILD = """
import json, time
t0 = time.perf_counter()
import numpy as np
from anant_fast import metrics
t1 = time.perf_counter()
model = metrics.Sphere(2)
Q = np.random.default_rng(0).uniform(-1.0, 1.0, (10, 2))
t2 = time.perf_counter()
S = model.scalar_curvature(Q)
t3 = time.perf_counter()
assert abs(S - 2.0).max() < 1e-9
print(json.dumps({"import_s": t1 - t0, "first_call_s": t3 - t2}))
"""

WARM_ROUNDS = 3


def run_child(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir))
    proc = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                          timeout=900, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _record(benchmark, results, cache):
    benchmark.extra_info["cache"] = cache
    benchmark.extra_info["first_call_s"] = [r["first_call_s"] for r in results]
    benchmark.extra_info["import_s"] = [r["import_s"] for r in results]
    from _bench import ROWS, median_s
    ROWS.append((benchmark.group, benchmark.name, median_s(benchmark), benchmark.extra_info))


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """A cache folder that the cold bench fills and the warm bench then reuses."""
    return tmp_path_factory.mktemp("numba-cache")


def test_first_call_cold(benchmark, shared_cache):
    benchmark.group = "compile"
    results = []

    def setup():
        # The first (only) round fills the shared folder; any further round gets a new empty one.
        target = shared_cache if not any(shared_cache.iterdir()) else tempfile.mkdtemp(
            dir=shared_cache.parent)
        return (target,), {}

    benchmark.pedantic(lambda d: results.append(run_child(d)), setup=setup, rounds=1, iterations=1)
    _record(benchmark, results, "cold (new NUMBA_CACHE_DIR)")


def test_first_call_warm(benchmark, shared_cache):
    benchmark.group = "compile"
    if not any(shared_cache.iterdir()):
        run_child(shared_cache)  # the cold bench did not run: fill the cache, untimed
    results = []
    benchmark.pedantic(lambda: results.append(run_child(shared_cache)), rounds=WARM_ROUNDS,
                       iterations=1)
    _record(benchmark, results, "warm (same NUMBA_CACHE_DIR again)")
