"""Global Mahalanobis metric: fit + distances + outliers in one call vs NumPy, and a memory read.

``m = metrics.Covariance(X); m.outliers()`` on ``X (N, D)``; reference: ``np.cov``, ``np.linalg.inv``,
einsum Mahalanobis (``naive.mahalanobis``) and the z-score rule (``naive.outliers``); floor:
``parallel_read(X)``, one read of ``X`` by every thread (NumPy's ``X.sum()`` uses one core).
Goal: fused <= 30 ms at full size. The fused bench reports its median over the read's median
(``ratio_fused_over_read``), measured in the same run.
"""
import functools

import numpy as np

import naive
from _bench import REFERENCE, parallel_read, record, size
from anant_fast import metrics

N = size(1_000_000, 20_000)
D = 16
Z = 3.0
EPS = 1e-9
GOAL_S = 0.030
GROUP = "covariance"


@functools.lru_cache(maxsize=None)
def data():
    rng = np.random.default_rng(16)
    A = rng.standard_normal((D, D)) / np.sqrt(D)
    return np.ascontiguousarray(rng.standard_normal((N, D)) @ A + rng.uniform(-5, 5, D))


def numpy_outliers(X):
    C = np.cov(X, rowvar=False, bias=True)
    G = np.linalg.inv(C + EPS * np.eye(X.shape[1]))
    return naive.outliers(naive.mahalanobis(X, X.mean(axis=0), G), Z)


def fused_outliers(X):
    return metrics.Covariance(X, eps=EPS).outliers(z=Z)


def test_memory_read(benchmark):
    X = data()
    parallel_read(X[:8])  # compiled (or loaded) before timing
    benchmark.group = GROUP
    benchmark(parallel_read, X)
    rate = record(benchmark, N, unit="rows", impl="parallel_read(X)", bytes=X.nbytes)
    if rate:
        benchmark.extra_info["bytes_per_s"] = rate * X.nbytes / N
        REFERENCE["covariance-read"] = benchmark.stats.stats.median


def test_reference(benchmark):
    X = data()
    benchmark.group = GROUP
    out = benchmark(numpy_outliers, X)
    assert out.ndim == 1
    rate = record(benchmark, N, unit="rows", impl="numpy", dim=D)
    if rate:
        REFERENCE["covariance-numpy"] = benchmark.stats.stats.median


def test_fused(benchmark):
    X = data()
    fused_outliers(X[:100])  # warm
    benchmark.group = GROUP
    out = benchmark(fused_outliers, X)
    np.testing.assert_array_equal(out, numpy_outliers(X))
    rate = record(benchmark, N, unit="rows", impl="anant_fast", dim=D, goal_s=GOAL_S,
                  n_outliers=int(out.size))
    if rate:
        t = benchmark.stats.stats.median
        read = REFERENCE.get("covariance-read")
        ref = REFERENCE.get("covariance-numpy")
        if read:
            benchmark.extra_info["ratio_fused_over_read"] = t / read
        if ref:
            benchmark.extra_info["speedup_vs_numpy"] = ref / t
