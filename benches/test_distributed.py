"""The Ray layer: scalar curvature of a ``LocalCovariance`` model sharded over the embedded local Ray
(2 CPUs, one Numba thread per task) against the in-process kernel on one thread and on every thread,
same data, same process. Goals: sharded ≥ 1.7x the single-threaded kernel and ≥ 0.85x the
multi-threaded one. Also the per-task overhead (a job of empty tasks) and the bytes a task copies:
its inputs are object-store views (0 bytes copied), its output slice is what it returns.
"""
import functools
import sys

import numba
import numpy as np
import pytest

from _bench import REFERENCE, record, size

ray = pytest.importorskip("ray")
from anant_fast import metrics  # noqa: E402
from anant_fast import distributed as dist  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import benches/

M = size(1_000_000, 2_000)
"""Query points (about 10 µs of work each on one thread: the work dominates the task overheads)."""
N = size(20_000, 2_000)
"""Reference points of the model (uniform in the unit square)."""
SIGMA = 0.003
TASKS = size(64, 8)
"""Empty tasks of the overhead bench."""
GROUP = "distributed-local-covariance-d2"


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    dist.connect(num_cpus=2, include_dashboard=False)
    yield
    dist.shutdown()


@functools.lru_cache(maxsize=None)
def data():
    rng = np.random.default_rng(7)
    X = rng.uniform(0, 1, (N, 2))
    model = metrics.LocalCovariance(X, SIGMA)
    model.scalar_curvature(X[:2])  # compile (or load) outside the timings
    return model, rng.uniform(0, 1, (M, 2))


def _in_process(benchmark, threads):
    model, Q = data()
    numba.set_num_threads(threads)
    try:
        benchmark.pedantic(model.scalar_curvature, (Q,), rounds=2, iterations=1)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    return record(benchmark, M, threads=threads)


@pytest.mark.benchmark(group=GROUP)
def test_in_process_one_thread(benchmark):
    REFERENCE[(GROUP, 1)] = _in_process(benchmark, 1)


@pytest.mark.benchmark(group=GROUP)
def test_in_process_all_threads(benchmark):
    REFERENCE[(GROUP, "all")] = _in_process(benchmark, numba.config.NUMBA_NUM_THREADS)


def _copied_bytes(Q, model):
    """Bytes of the task's inputs that are not object-store views (copies; 0 expected), on every
    row of the task's points."""
    arrays = [Q] + [a for a in model._params if isinstance(a, np.ndarray)]
    copied = sum(a.nbytes for a in arrays if a.flags.owndata or a.flags.writeable)
    return np.full(len(Q), copied)


@pytest.mark.benchmark(group=GROUP)
def test_sharded(benchmark):
    model, Q = data()
    shards = dist.shard.default_shards()
    dist.scalar_curvature(model, Q[:1000], progress=False)  # workers load the kernel once
    benchmark.pedantic(dist.scalar_curvature, (model, Q), {"progress": False}, rounds=2,
                       iterations=1)
    copied = dist.map_points(_copied_bytes, Q, model, shards=shards)
    rate = record(benchmark, M, shards=shards, input_bytes_copied_per_task=int(copied.max()),
                  output_bytes_per_task=M * 8 // shards)
    if rate and REFERENCE.get((GROUP, 1)):
        benchmark.extra_info["x_one_thread"] = rate / REFERENCE[(GROUP, 1)]
        benchmark.extra_info["x_all_threads"] = rate / REFERENCE[(GROUP, "all")]
        REFERENCE[(GROUP, "sharded")] = rate


def _nothing(Q):
    return Q[:, 0]


@pytest.mark.benchmark(group="distributed-overhead")
def test_task_overhead(benchmark):
    Q = np.zeros((TASKS, 1))
    dist.map_points(_nothing, Q, shards=TASKS, progress=False)
    benchmark.pedantic(dist.map_points, (_nothing, Q), {"shards": TASKS, "progress": False},
                       rounds=5, iterations=1)
    rate = record(benchmark, TASKS, unit="tasks")
    if rate:
        benchmark.extra_info["ms_per_task"] = 1e3 / rate
