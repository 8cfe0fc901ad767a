"""Identities every metric must satisfy, on random data and points (hypothesis)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from anant_fast import kernels, metrics


def _cloud(seed, n, dim):
    r = np.random.default_rng(seed)
    A = r.normal(size=(dim, dim)) * 0.6 + np.eye(dim)
    return r.normal(size=(n, dim)) @ A, r


models = st.sampled_from(["diagonal", "covariance"])
seeds = st.integers(0, 2 ** 31)
dims = st.integers(2, 4)


def _fitted(kind, X, sigma=0.6):
    return (metrics.LocalDiagonal if kind == "diagonal" else metrics.LocalCovariance)(X, sigma, rho=1e-2)


@given(kind=models, seed=seeds, dim=dims)
def test_connection_and_curvature_symmetries(kind, seed, dim):
    X, r = _cloud(seed, 60, dim)
    Q = X[:5] + 0.05 * r.normal(size=(5, dim))
    model = _fitted(kind, X)
    gamma = model.christoffel(Q)
    np.testing.assert_allclose(gamma, np.swapaxes(gamma, 2, 3), rtol=0, atol=1e-12 * np.abs(gamma).max())
    g = model.metric(Q)
    R = np.einsum("mda,mabce->mdbce", g, model.riemann(Q))  # R_abce, all indices down
    scale = np.abs(R).max() + 1e-300
    tol = dict(rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(R, -np.swapaxes(R, 1, 2), **tol)                 # R_abce = −R_bace
    np.testing.assert_allclose(R, -np.swapaxes(R, 3, 4), **tol)                 # R_abce = −R_abec
    np.testing.assert_allclose(R, np.transpose(R, (0, 3, 4, 1, 2)), **tol)      # R_abce = R_ceab
    bianchi = R + np.transpose(R, (0, 1, 3, 4, 2)) + np.transpose(R, (0, 1, 4, 2, 3))
    np.testing.assert_allclose(bianchi, 0.0, **tol)                             # R_a[bce] = 0
    ric = model.ricci(Q)
    np.testing.assert_allclose(ric, np.swapaxes(ric, 1, 2), rtol=0, atol=1e-12 * np.abs(ric).max())
    np.testing.assert_allclose(ric, np.einsum("mabae->mbe", model.riemann(Q)), rtol=0, atol=1e-9 * np.abs(ric).max())


@given(seed=seeds, dim=dims, angle=st.floats(0, 2 * np.pi), shift=st.floats(-5, 5))
def test_local_covariance_curvature_is_invariant_under_rigid_motion(seed, dim, angle, shift):
    X, r = _cloud(seed, 60, dim)
    Q = X[:5] + 0.05 * r.normal(size=(5, dim))
    rotation, _ = np.linalg.qr(r.normal(size=(dim, dim)))
    plane = np.eye(dim)
    c, s = np.cos(angle), np.sin(angle)
    plane[:2, :2] = [[c, -s], [s, c]]
    rotation = rotation @ plane
    t = shift * np.ones(dim)
    before = metrics.LocalCovariance(X, 0.6, rho=1e-2).scalar_curvature(Q)
    after = metrics.LocalCovariance(X @ rotation.T + t, 0.6, rho=1e-2).scalar_curvature(Q @ rotation.T + t)
    np.testing.assert_allclose(after, before, rtol=1e-7, atol=1e-9 * np.abs(before).max())


@given(kind=models, seed=seeds, dim=dims, c=st.floats(0.1, 10.0))
def test_scaling_the_metric_by_c2_scales_scalar_curvature_by_inverse_c2(kind, seed, dim, c):
    X, r = _cloud(seed, 60, dim)
    Q = X[:5] + 0.05 * r.normal(size=(5, dim))
    g, dg, d2g = _fitted(kind, X).derivatives(Q)
    S = kernels.scalar_curvature(g, dg, d2g)
    S_scaled = kernels.scalar_curvature(c * c * g, c * c * dg, c * c * d2g)
    np.testing.assert_allclose(S_scaled, S / c ** 2, rtol=1e-10, atol=1e-12 * np.abs(S).max())


@given(seed=seeds, dim=dims)
def test_array_kernels_agree_with_fused_model_methods(seed, dim):
    X, r = _cloud(seed, 60, dim)
    Q = X[:4] + 0.05 * r.normal(size=(4, dim))
    model = metrics.LocalCovariance(X, 0.6, rho=1e-2)
    g, dg, d2g = model.derivatives(Q)
    U, V = r.normal(size=(2, 4, dim))
    np.testing.assert_array_equal(kernels.christoffel(g, dg), model.christoffel(Q))
    np.testing.assert_array_equal(kernels.riemann(g, dg, d2g), model.riemann(Q))
    np.testing.assert_array_equal(kernels.ricci(g, dg, d2g), model.ricci(Q))
    np.testing.assert_array_equal(kernels.scalar_curvature(g, dg, d2g), model.scalar_curvature(Q))
    np.testing.assert_array_equal(kernels.sectional_curvature(g, dg, d2g, U, V),
                                  model.sectional_curvature(Q, U, V))


@pytest.mark.parametrize("dim", [2, 3])
def test_sectional_curvature_in_2d_is_half_scalar(dim):
    X, r = _cloud(3, 80, dim)
    model = metrics.LocalCovariance(X, 0.6)
    Q = X[:6]
    if dim == 2:
        U, V = r.normal(size=(2, 6, 2))
        np.testing.assert_allclose(model.sectional_curvature(Q, U, V), 0.5 * model.scalar_curvature(Q),
                                   rtol=1e-10)
    # sectional curvature depends only on the plane, not on its basis
    U, V = r.normal(size=(2, 6, dim))
    a, b, c, d = 1.3, -0.4, 0.7, 2.0
    np.testing.assert_allclose(model.sectional_curvature(Q, a * U + b * V, c * U + d * V),
                               model.sectional_curvature(Q, U, V), rtol=1e-9)
