"""Geodesics: ``exp`` with fixed RK4 steps vs a vectorised NumPy RK4, and ``log`` throughput.

``exp``: ``metrics.Sphere(2).exp(X, V, steps=STEPS)`` at ``M`` start points and
``metrics.LocalDiagonal(data, SIGMA).exp(...)`` (``N`` references, dim 3) at ``M_LOCAL``; the reference
``naive.geodesic_rk4`` (acceleration ``−Γ(v, v)`` from ``g``, ``∂g`` by einsum, the same RK4) runs on
a prefix of the same points. For the sphere the reference is given ``g, ∂g`` in closed form; for the
local metric it uses ``naive.local_diagonal``, which sums over all references (no cutoff) and also
forms ``∂²g``. Compare points per second; goal: at least 20x.
``log``: pairs per second (shooting; Newton iterations reported).
"""
import functools

import numpy as np
import pytest

import naive
from _bench import REFERENCE, SMOKE, record, size
from anant_fast import metrics

STEPS = size(200, 20)
M = size(100_000, 200)
M_REF = size(2_000, 20)
N = size(20_000, 1_000)
M_LOCAL = size(1_000, 50)
M_LOCAL_REF = size(20, 5)
STEPS_LOCAL = size(50, 10)
SIGMA = 0.08 if SMOKE else 0.03  # as in test_data_metrics: ~1000 references within the cutoff
M_LOG = size(5_000, 20)
M_LOG_LOCAL = size(200, 5)
SPEEDUP_GOAL = 20.0


def sphere_first_order(Q):
    """``g = 4/(1 + |x|²)² I`` and ``∂g`` of the unit sphere's stereographic chart, in NumPy."""
    s = 1.0 + np.sum(Q * Q, axis=1)
    eye = np.eye(Q.shape[1])
    return (4.0 / s ** 2)[:, None, None] * eye, (-16.0 * Q / s[:, None] ** 3)[:, :, None, None] * eye


@functools.lru_cache(maxsize=None)
def sphere_data():
    rng = np.random.default_rng(7)
    return rng.uniform(-1, 1, (M, 2)), rng.uniform(-1, 1, (M, 2))


@functools.lru_cache(maxsize=None)
def local_data():
    rng = np.random.default_rng(2024)
    X = rng.uniform(0.0, 1.0, (N, 3))
    Q = rng.uniform(0.25, 0.75, (M_LOCAL, 3))
    V = rng.normal(size=(M_LOCAL, 3)) * 0.05
    return X, Q, V


@functools.lru_cache(maxsize=None)
def local_model():
    return metrics.LocalDiagonal(local_data()[0], SIGMA)


def test_exp_sphere_reference(benchmark):
    X, V = sphere_data()
    x, v = X[:M_REF], V[:M_REF]
    benchmark.group = "geodesic-exp-sphere-d2"
    out = benchmark.pedantic(naive.geodesic_rk4, (sphere_first_order, x, v, STEPS), rounds=1)
    np.testing.assert_allclose(out, metrics.Sphere(2).exp(x, v, steps=STEPS), atol=1e-10)
    rate = record(benchmark, M_REF, steps=STEPS, impl="numpy rk4")
    if rate:
        REFERENCE[benchmark.group] = rate


def test_exp_sphere_kernel(benchmark):
    X, V = sphere_data()
    model = metrics.Sphere(2)
    model.exp(X[:2], V[:2], steps=STEPS)  # warm: compile or load from the cache
    benchmark.group = "geodesic-exp-sphere-d2"
    out = benchmark(model.exp, X, V, steps=STEPS)
    assert np.isfinite(out).all()
    _speedup(benchmark, record(benchmark, M, steps=STEPS, impl="anant_fast rk4", goal=SPEEDUP_GOAL))


def test_exp_local_diagonal_reference(benchmark):
    X, Q, V = local_data()
    q, v = Q[:M_LOCAL_REF], V[:M_LOCAL_REF]
    benchmark.group = "geodesic-exp-local-diagonal-d3"
    out = benchmark.pedantic(naive.geodesic_rk4,
                             (lambda P: naive.local_diagonal(X, SIGMA, 1e-3, P), q, v, STEPS_LOCAL),
                             rounds=1)
    np.testing.assert_allclose(out, local_model().exp(q, v, steps=STEPS_LOCAL), rtol=1e-7, atol=1e-9)
    rate = record(benchmark, M_LOCAL_REF, steps=STEPS_LOCAL, n_references=N, impl="numpy rk4")
    if rate:
        REFERENCE[benchmark.group] = rate


def test_exp_local_diagonal_kernel(benchmark):
    _, Q, V = local_data()
    model = local_model()
    model.exp(Q[:2], V[:2], steps=STEPS_LOCAL)
    benchmark.group = "geodesic-exp-local-diagonal-d3"
    out = benchmark(model.exp, Q, V, steps=STEPS_LOCAL)
    assert np.isfinite(out).all()
    _speedup(benchmark, record(benchmark, M_LOCAL, steps=STEPS_LOCAL, n_references=N,
                               impl="anant_fast rk4", goal=SPEEDUP_GOAL))


def _speedup(benchmark, rate):
    ref = REFERENCE.get(benchmark.group)
    if rate and ref:
        benchmark.extra_info["speedup_vs_numpy_per_point"] = rate / ref


@pytest.mark.parametrize("name", ["sphere-d2", "local-diagonal-d3"])
def test_log(benchmark, name):
    if name == "sphere-d2":
        model, (X, V) = metrics.Sphere(2), sphere_data()
        X, V = X[:M_LOG], 0.5 * V[:M_LOG]
    else:
        model, (_, X, V) = local_model(), local_data()
        X, V = X[:M_LOG_LOCAL], V[:M_LOG_LOCAL]
    Y = model.exp(X, V)
    model.log(X[:2], Y[:2])
    benchmark.group = f"geodesic-log-{name}"
    U, info = benchmark(model.log, X, Y, return_info=True)
    assert info.converged.all()
    np.testing.assert_allclose(U, V, rtol=1e-6, atol=1e-8)
    record(benchmark, len(X), unit="pairs", impl="anant_fast log",
           mean_newton_iterations=float(info.iterations.mean()))
