"""Kernel mechanics: shapes, read-only inputs, thread-count independence, the on-disk cache."""
import os
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

from anant_fast import kernels, metrics

rng = np.random.default_rng(3)


def test_single_point_gives_results_without_point_axis():
    model = metrics.Sphere(3)
    x = np.array([0.1, 0.2, -0.3])
    assert model.metric(x).shape == (3, 3)
    assert model.christoffel(x).shape == (3, 3, 3)
    assert model.riemann(x).shape == (3, 3, 3, 3)
    assert model.ricci(x).shape == (3, 3)
    assert np.ndim(model.scalar_curvature(x)) == 0
    assert np.ndim(model.sectional_curvature(x, [1, 0, 0], [0, 1, 0])) == 0
    g, dg, d2g = model.derivatives(x)
    assert (g.shape, dg.shape, d2g.shape) == ((3, 3), (3, 3, 3), (3, 3, 3, 3))
    assert kernels.scalar_curvature(g, dg, d2g) == pytest.approx(6.0, rel=1e-12)
    np.testing.assert_array_equal(model.riemann(x), model.riemann(x[None])[0])


def test_integer_and_list_input_converts():
    model = metrics.Sphere(2)
    np.testing.assert_array_equal(model.scalar_curvature([[0, 1], [2, 3]]), model.scalar_curvature(
        np.array([[0.0, 1.0], [2.0, 3.0]])))


def test_read_only_inputs_are_accepted_and_untouched():
    X = rng.normal(size=(200, 3))
    X.setflags(write=False)
    model = metrics.LocalCovariance(X, 0.5)
    Q = X[:10].copy()
    Q.setflags(write=False)
    before = Q.copy()
    s = model.scalar_curvature(Q)
    g, dg, d2g = model.derivatives(Q)
    for a in (g, dg, d2g):
        a.setflags(write=False)
    np.testing.assert_array_equal(kernels.scalar_curvature(g, dg, d2g), s)
    np.testing.assert_array_equal(Q, before)
    cov = metrics.Covariance(X)
    assert cov.mahalanobis(Q).shape == (10,)


def test_parallel_result_equals_serial_result():
    X = rng.normal(size=(300, 3))
    Q = rng.normal(size=(257, 3))
    U, V = rng.normal(size=(2, 257, 3))
    models = [metrics.Sphere(3, 1.5), metrics.LocalDiagonal(X, 0.4), metrics.LocalCovariance(X, 0.4)]
    methods = [("metric", ()), ("christoffel", ()), ("riemann", ()), ("ricci", ()),
               ("scalar_curvature", ()), ("sectional_curvature", (U, V))]
    results = {}
    for threads in (1, numba.config.NUMBA_NUM_THREADS):
        numba.set_num_threads(threads)
        try:
            results[threads] = [getattr(m, name)(Q, *args) for m in models for name, args in methods]
        finally:
            numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    for serial, parallel in zip(*results.values()):
        np.testing.assert_array_equal(serial, parallel)


CACHE_PROBE = textwrap.dedent("""
    import numpy as np
    from anant_fast import metrics
    from anant_fast.kernels.batch import pointwise_kernel
    from anant_fast.kernels.covariance import _block_moments, mahalanobis_kernel
    X = np.random.default_rng(0).normal(size=(100, 3))
    Q = X[:5]
    for model in (metrics.Euclidean(3), metrics.Sphere(3), metrics.Hyperbolic(3),
                  metrics.Hyperbolic(3, "ball"), metrics.Covariance(X), metrics.LocalDiagonal(X, 0.5),
                  metrics.LocalCovariance(X, 0.5)):
        model.scalar_curvature(Q * 0.1 + [0, 0, 0.5])
    metrics.Covariance(X).outliers()
    stats = [k.stats for k in (pointwise_kernel, _block_moments, mahalanobis_kernel)]
    print(sum(len(s.cache_misses) for s in stats), sum(len(s.cache_hits) for s in stats))
""")


def test_second_process_loads_every_kernel_from_the_cache():
    env = dict(os.environ)
    first = subprocess.run([sys.executable, "-c", CACHE_PROBE], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    second = subprocess.run([sys.executable, "-c", CACHE_PROBE], env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    misses, hits = map(int, second.stdout.split())
    assert misses == 0 and hits == 9, second.stdout


CUSTOM_PROBE = textwrap.dedent("""
    import numpy as np
    from numba import njit
    from anant_fast import metrics

    @njit
    def flat(x, out):
        out[:, :] = 0.0
        for i in range(out.shape[0]):
            out[i, i] = 1.0 + x[0] * x[0]

    model = metrics.Custom(flat, 2)
    print(model.scalar_curvature(np.ones((3, 2)))[0])
""")


def test_custom_models_leave_no_cache_files_behind(tmp_path):
    """A user's function has a new type in every process: nothing specialised on it may be cached.
    (A private cache folder keeps parallel test workers out of the count.)"""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = []
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", CUSTOM_PROBE], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        runs.append(sorted(p.name for p in tmp_path.rglob("*.nb[ic]")))
    assert runs[0] and runs[1] == runs[0]
