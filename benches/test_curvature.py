"""Fused scalar curvature of the closed-form models vs the plain NumPy reference.

Kernel: ``metrics.Sphere(d).scalar_curvature(Q)`` / ``metrics.Hyperbolic(d).scalar_curvature(Q)``
(half-space chart) at ``M`` points. Reference: ``naive.sphere(Q)`` / ``naive.hyperbolic_halfspace(Q)``
then ``naive.scalar_curvature(g, dg, d2g)`` on the first ``M_REF`` of the same points (it
materialises ``(M, d, d, d, d)`` arrays, hence fewer points). Compare per-point throughput.
"""
import functools

import numpy as np
import pytest

import naive
from _bench import REFERENCE, record, size
from anant_fast import metrics

M = size(1_000_000, 1_000)
"""Query points of the kernel bench."""
M_REF = size(20_000, 200)
"""Query points of the NumPy reference bench (a prefix of the kernel's points)."""
DIMS = (2, 3, 4)
TARGET_POINTS_PER_S = {2: 15e6, 3: 4e6, 4: 1.5e6}

MODELS = {
    # name: (model factory, NumPy (g, dg, d2g) function, exact scalar curvature in dim d)
    "sphere": (metrics.Sphere, naive.sphere, lambda d: d * (d - 1.0)),
    "hyperbolic": (lambda d: metrics.Hyperbolic(d, model="halfspace"), naive.hyperbolic_halfspace,
                   lambda d: -d * (d - 1.0)),
}
CASES = [pytest.param(name, d, id=f"{name}-d{d}") for name in MODELS for d in DIMS]


@functools.lru_cache(maxsize=None)
def points(d):
    """``(M, d)`` points in [-1, 1]^(d-1) x [0.1, 1.1]: inside the half-space chart too."""
    rng = np.random.default_rng(1000 + d)
    Q = rng.uniform(-1.0, 1.0, (M, d))
    Q[:, -1] = rng.uniform(0.1, 1.1, M)
    return Q


def _group(name, d):
    return f"curvature-{name}-d{d}"


@pytest.mark.parametrize("name, d", CASES)
def test_reference(benchmark, name, d):
    _, reference, exact = MODELS[name]
    Q = np.ascontiguousarray(points(d)[:M_REF])
    benchmark.group = _group(name, d)
    S = benchmark(lambda: naive.scalar_curvature(*reference(Q)))
    np.testing.assert_allclose(S, exact(d), rtol=1e-8)
    rate = record(benchmark, M_REF, dim=d, impl="numpy")
    if rate:
        REFERENCE[benchmark.group] = rate


@pytest.mark.parametrize("name, d", CASES)
def test_kernel(benchmark, name, d):
    factory, _, exact = MODELS[name]
    Q = points(d)
    model = factory(d)
    model.scalar_curvature(Q[:4])  # warm: compile (or load from the cache) outside the timing
    benchmark.group = _group(name, d)
    S = benchmark(model.scalar_curvature, Q)
    np.testing.assert_allclose(S, exact(d), rtol=1e-8)
    rate = record(benchmark, M, dim=d, impl="anant_fast",
                  target_points_per_s=TARGET_POINTS_PER_S[d])
    if rate:
        benchmark.extra_info["fraction_of_target"] = rate / TARGET_POINTS_PER_S[d]
        ref = REFERENCE.get(benchmark.group)
        if ref:
            benchmark.extra_info["speedup_vs_numpy_per_point"] = rate / ref
