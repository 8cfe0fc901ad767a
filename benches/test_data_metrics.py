"""Scalar curvature of the data-driven local metrics vs the plain NumPy reference.

``metrics.LocalDiagonal(X, SIGMA)`` / ``metrics.LocalCovariance(X, SIGMA)`` fitted on ``N`` points
uniform in the unit cube (dim 3), scalar curvature at ``M`` query points from the same cube. The
reference ``naive.local_diagonal`` / ``naive.local_covariance`` + ``naive.scalar_curvature`` sums over
all ``N`` references per query (no cutoff) and is run on the first ``M_REF`` queries only.
Goal: the kernel at least 20x the reference in points per second.
"""
import functools

import numpy as np
import pytest
from scipy.spatial import cKDTree

import naive
from _bench import REFERENCE, SMOKE, record, size
from anant_fast import metrics

N = size(20_000, 1_000)
"""Reference (data) points."""
M = size(20_000, 1_000)
"""Query points of the kernel bench."""
M_REF = size(500, 20)
"""Query points of the NumPy reference bench (a prefix of the kernel's queries)."""
DIM = 3
SIGMA = 0.08 if SMOKE else 0.03
"""Kernel width: about a thousand references lie within the cutoff of a query at full size."""
RHO = 1e-3
SPEEDUP_GOAL = 20.0

MODELS = {
    "local_diagonal": (metrics.LocalDiagonal, naive.local_diagonal),
    "local_covariance": (metrics.LocalCovariance, naive.local_covariance),
}
NAMES = list(MODELS)


@functools.lru_cache(maxsize=None)
def data():
    rng = np.random.default_rng(2024)
    X = rng.uniform(0.0, 1.0, (N, DIM))
    Q = rng.uniform(0.0, 1.0, (M, DIM))
    return X, Q


@functools.lru_cache(maxsize=None)
def neighbours(cutoff):
    """Mean number of references within ``cutoff`` (and within 3 sigma) of the first queries."""
    X, Q = data()
    tree = cKDTree(X)
    q = Q[:500]
    return (float(tree.query_ball_point(q, cutoff, return_length=True).mean()),
            float(tree.query_ball_point(q, 3 * SIGMA, return_length=True).mean()))


def _group(name):
    return f"data-{name}"


@pytest.mark.parametrize("name", NAMES)
def test_fit(benchmark, name):
    cls, _ = MODELS[name]
    X, _ = data()
    cls(X[:50], SIGMA, rho=RHO)  # warm
    benchmark.group = _group(name)
    benchmark(cls, X, SIGMA, rho=RHO)
    record(benchmark, N, unit="references", impl="anant_fast fit")


@pytest.mark.parametrize("name", NAMES)
def test_reference(benchmark, name):
    _, reference = MODELS[name]
    X, Q = data()
    q = np.ascontiguousarray(Q[:M_REF])
    benchmark.group = _group(name)
    S = benchmark(lambda: naive.scalar_curvature(*reference(X, SIGMA, RHO, q)))
    assert np.isfinite(S).all()
    rate = record(benchmark, M_REF, n_references=N, sigma=SIGMA, impl="numpy")
    if rate:
        REFERENCE[benchmark.group] = rate


@pytest.mark.parametrize("name", NAMES)
def test_kernel(benchmark, name):
    cls, reference = MODELS[name]
    X, Q = data()
    model = cls(X, SIGMA, rho=RHO)
    model.scalar_curvature(Q[:4])  # warm: compile (or load from the cache) outside the timing
    benchmark.group = _group(name)
    S = benchmark(model.scalar_curvature, Q)
    # Same answer as the reference on a few queries (checked outside the timing).
    k = 8
    expected = naive.scalar_curvature(*reference(X, SIGMA, RHO, np.ascontiguousarray(Q[:k])))
    np.testing.assert_allclose(S[:k], expected, rtol=1e-6, atol=1e-8 * np.abs(expected).max())
    within_cutoff, within_3sigma = neighbours(model.cutoff)
    rate = record(benchmark, M, n_references=N, sigma=SIGMA, impl="anant_fast",
                  cutoff=model.cutoff, neighbours_within_cutoff=within_cutoff,
                  neighbours_within_3sigma=within_3sigma, speedup_goal=SPEEDUP_GOAL)
    ref = REFERENCE.get(benchmark.group)
    if rate and ref:
        benchmark.extra_info["speedup_vs_numpy_per_point"] = rate / ref
