"""Metrics estimated from data: against the untruncated NumPy reference, finite differences, limits."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import naive
from anant_fast import metrics

rng = np.random.default_rng(7)


def _surface_cloud(n, dim=3, noise=0.05):
    """Points near a curved 2-D surface in R^dim."""
    uv = rng.uniform(-1, 1, size=(n, 2))
    X = np.zeros((n, dim))
    X[:, :2] = uv
    X[:, 2 % dim] += 0.5 * np.sin(2 * uv[:, 0]) * np.cos(uv[:, 1])
    return X + noise * rng.normal(size=X.shape)


LOCAL = [(metrics.LocalDiagonal, naive.local_diagonal), (metrics.LocalCovariance, naive.local_covariance)]


def _rel(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


@pytest.mark.parametrize("cls, reference", LOCAL)
@pytest.mark.parametrize("dim", [2, 3, 4])
def test_truncated_local_metric_matches_full_sum(cls, reference, dim):
    X = _surface_cloud(400, dim)
    sigma = 0.15
    model = cls(X, sigma, rho=1e-3)
    Q = X[rng.choice(len(X), 12, replace=False)] + 0.01
    got = model.derivatives(Q)
    want = reference(X, sigma, 1e-3, Q)
    for a, b in zip(got, want):
        assert _rel(a, b) < 1e-9
    G, DG, D2G = want
    assert _rel(model.scalar_curvature(Q), naive.scalar_curvature(G, DG, D2G)) < 1e-9
    assert _rel(model.ricci(Q), naive.ricci(G, DG, D2G)) < 1e-9
    assert _rel(model.riemann(Q), naive.riemann(G, DG, D2G)) < 1e-9
    assert _rel(model.christoffel(Q), naive.christoffel(G, DG)) < 1e-9
    U, V = rng.normal(size=(2, len(Q), dim))
    assert _rel(model.sectional_curvature(Q, U, V), naive.sectional_curvature(G, DG, D2G, U, V)) < 1e-9


@pytest.mark.parametrize("cls", [metrics.LocalDiagonal, metrics.LocalCovariance])
@pytest.mark.parametrize("dim", [2, 3])
def test_derivatives_match_finite_differences(cls, dim):
    X = _surface_cloud(300, dim)
    model = cls(X, 0.3, rho=1e-2)
    Q = X[:6] + 0.02
    g, dg, d2g = model.derivatives(Q)
    h = 1e-5
    for k in range(dim):
        e = np.zeros(dim)
        e[k] = h
        gp, dgp, _ = model.derivatives(Q + e)
        gm, dgm, _ = model.derivatives(Q - e)
        assert _rel((gp - gm) / (2 * h), dg[:, k]) < 1e-6
        assert _rel((dgp - dgm) / (2 * h), d2g[:, k]) < 1e-6


@pytest.mark.parametrize("cls", [metrics.LocalDiagonal, metrics.LocalCovariance])
def test_far_from_data_metric_is_identity_over_rho(cls):
    X = _surface_cloud(100)
    model = cls(X, 0.1, rho=0.25)
    Q = np.array([[50.0, 0.0, 0.0], [0.0, -1e6, 3.0]])
    g, dg, d2g = model.derivatives(Q)
    np.testing.assert_array_equal(g, np.broadcast_to(np.eye(3) / 0.25, g.shape))
    assert not dg.any() and not d2g.any()
    np.testing.assert_array_equal(model.scalar_curvature(Q), 0.0)


def test_grid_handles_widely_spread_data():
    """References spread over a huge range relative to the cutoff: the grid caps its cell count."""
    X = np.concatenate([_surface_cloud(200), _surface_cloud(200) + 1e4])
    model = metrics.LocalCovariance(X, 0.05)
    Q = X[::50] + 0.001
    want = naive.local_covariance(X, 0.05, 1e-3, Q)[0]
    assert _rel(model.metric(Q), want) < 1e-9


def test_covariance_model_matches_numpy():
    X = rng.normal(size=(5000, 4)) @ rng.normal(size=(4, 4)) + 3.0
    w = rng.uniform(0, 2, size=len(X))
    for weights in (None, w):
        model = metrics.Covariance(X, weights=weights, eps=1e-9)
        np.testing.assert_allclose(model.G, naive.covariance_metric(X, weights, 1e-9), rtol=1e-9)
        np.testing.assert_allclose(model.covariance, np.cov(X.T, aweights=weights, bias=True), rtol=1e-10)
    Q = rng.normal(size=(7, 4))
    g, dg, d2g = model.derivatives(Q)
    np.testing.assert_array_equal(g, np.broadcast_to(model.G, g.shape))
    assert not dg.any() and not d2g.any()
    assert not model.scalar_curvature(Q).any()


@pytest.mark.parametrize("d", [1, 3, 7, 8, 9, 16, 17, 33])
def test_covariance_of_any_dimension_matches_numpy(d):
    """The moment kernel's register tiles and padding, for dimensions around the vector widths and
    row counts around its passes and blocks, with and without (some zero) weights."""
    X = rng.normal(size=(4500, d)) @ rng.normal(size=(d, d)) + 5.0
    w = rng.uniform(0, 2, size=len(X))
    w[::7] = 0.0
    for weights in (None, w):
        model = metrics.Covariance(X, weights=weights)
        np.testing.assert_allclose(model.covariance, np.cov(X.T, aweights=weights, bias=True).reshape(d, d),
                                   rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(model.mean, np.average(X, axis=0, weights=weights), rtol=1e-12)


def test_covariance_helpers_take_any_real_layout():
    """The kernel helpers copy what their SIMD kernels cannot read (float32, strided) to float64."""
    from anant_fast.kernels.covariance import block_moments, mahalanobis, weighted_covariance

    X = rng.normal(size=(300, 10))
    mean, C = weighted_covariance(X, np.empty(0))
    upper = np.ascontiguousarray(np.linalg.cholesky(np.linalg.inv(C)).T)
    np.testing.assert_array_equal(mahalanobis(np.asfortranarray(X), mean, upper),
                                  mahalanobis(X, mean, upper))
    np.testing.assert_array_equal(block_moments(X[:, ::2], np.empty(0))[2],
                                  block_moments(X[:, ::2].copy(), np.empty(0))[2])
    X32 = X.astype(np.float32)
    np.testing.assert_array_equal(mahalanobis(X32, mean, upper),
                                  mahalanobis(X32.astype(np.float64), mean, upper))


def test_mahalanobis_and_outliers():
    X = rng.normal(size=(20000, 6))
    planted = np.array([5, 777, 12345])
    X[planted] += 12.0
    model = metrics.Covariance(X)
    m = model.mahalanobis(X)
    np.testing.assert_allclose(m, naive.mahalanobis(X, model.mean, model.G), rtol=1e-12)
    found = model.outliers()
    np.testing.assert_array_equal(found, naive.outliers(m, 3.0))
    assert set(planted) <= set(found)
    assert model.mahalanobis(X[5]) == pytest.approx(m[5], rel=1e-14)
    np.testing.assert_array_equal(model.outliers(X[:100], z=50.0), [])


@pytest.mark.parametrize("N, d", [(1, 1), (31, 3), (300, 17), (700, 33)])
def test_mahalanobis_of_any_size_and_layout(N, d):
    from anant_fast.kernels.covariance import mahalanobis_row

    X = rng.normal(size=(N + 60, d)) @ rng.normal(size=(d, d)) + 100.0
    model = metrics.Covariance(X)
    Y = np.asfortranarray(X[:N])   # partial tiles, several passes, d past a tile's width; made C
    m = model.mahalanobis(Y)
    np.testing.assert_allclose(m, naive.mahalanobis(Y, model.mean, model.G), rtol=1e-9)
    C = np.ascontiguousarray(Y)
    one_row = [mahalanobis_row(C, model.mean, model._upper, k) for k in range(N)]  # the GPU's
    np.testing.assert_array_equal(m, one_row)


@given(st.lists(st.floats(-1e6, 1e6) | st.just(float("nan")), max_size=60),
       st.floats(0.1, 4.0))
def test_zscore_outliers_is_the_numpy_rule(values, z):
    from anant_fast.kernels.covariance import zscore_outliers

    m = np.array(values, dtype=float)
    expected = np.flatnonzero(np.abs(m - m.mean()) > z * m.std()) if m.size and m.std() != 0 else []
    np.testing.assert_array_equal(zscore_outliers(m, z), expected)


@pytest.mark.parametrize("n", [1, 7, 8, 9, 127, 128, 129, 1000, 8193, 100_003, 1_000_003])
def test_zscore_sums_are_numpys_bit_for_bit(n):
    from anant_fast.kernels.covariance import _pairwise_sum, _pairwise_sum_halves, zscore_outliers

    m = rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 6, n)
    mean = _pairwise_sum(m, 0, n, 0.0, False) / n
    assert mean == m.mean() == _pairwise_sum_halves(m, 0.0, False) / n
    assert np.sqrt(_pairwise_sum(m, 0, n, mean, True) / n) == m.std()
    assert np.sqrt(_pairwise_sum_halves(m, mean, True) / n) == m.std()
    if n > 5:   # a span inside the array
        assert _pairwise_sum(m, 3, n - 5, 0.0, False) == m[3:n - 2].sum()
    for z in (0.01, 0.5, 3.0):
        with np.errstate(invalid="ignore"):   # n = 1: std 0, NumPy's rule divides 0 by 0
            expected = naive.outliers(m, z)
        np.testing.assert_array_equal(zscore_outliers(m, z), expected)


def test_covariance_does_not_depend_on_thread_count_or_batches():
    import numba

    X = rng.normal(size=(30000, 5))
    numba.set_num_threads(1)
    try:
        serial = metrics.Covariance(X).G
        m_serial = metrics.Covariance(X).mahalanobis(X)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(metrics.Covariance(X).G, serial)
    np.testing.assert_array_equal(metrics.Covariance(X).mahalanobis(X), m_serial)
    Y = rng.normal(size=(5000, 16))
    model = metrics.Covariance(Y)
    cuts = [0, 1, 3, 8, 13, 130, 2049, 5000]   # a row's distance never depends on the rows beside it
    batches = [model.mahalanobis(Y[a:b]) for a, b in zip(cuts, cuts[1:])]
    np.testing.assert_array_equal(np.concatenate(batches), model.mahalanobis(Y))


def test_condition_number():
    np.testing.assert_allclose(metrics.Sphere(3).condition_number(rng.normal(size=(4, 3))), 1.0, rtol=1e-12)
    X = rng.normal(size=(2000, 3)) * [1.0, 2.0, 5.0]
    model = metrics.Covariance(X)
    eig = np.linalg.eigvalsh(model.G)
    np.testing.assert_allclose(model.condition_number(X[:3]), eig[-1] / eig[0], rtol=1e-10)
    assert model.condition_number(X[0]) == pytest.approx(eig[-1] / eig[0], rel=1e-10)
    local = metrics.LocalDiagonal(X, 0.5, rho=0.1)
    g = local.metric(X[:5])
    np.testing.assert_allclose(local.condition_number(X[:5]),
                               g.diagonal(axis1=1, axis2=2).max(1) / g.diagonal(axis1=1, axis2=2).min(1), rtol=1e-12)
