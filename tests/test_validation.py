"""Bad input is refused at the boundary with an error that names the argument."""
import numpy as np
import pytest
from numba import njit

from anant_fast import kernels, metrics

X = np.random.default_rng(0).normal(size=(50, 3))


@pytest.mark.parametrize("make, match", [
    (lambda: metrics.Sphere(3, radius=0.0), "radius"),
    (lambda: metrics.Sphere(3, radius=-1.0), "radius"),
    (lambda: metrics.Sphere(3, radius=np.nan), "radius"),
    (lambda: metrics.Sphere(0), "dim"),
    (lambda: metrics.Hyperbolic(2, model="disk"), "model"),
    (lambda: metrics.LocalDiagonal(X, sigma=0.0), "sigma"),
    (lambda: metrics.LocalCovariance(X, sigma=-1.0), "sigma"),
    (lambda: metrics.LocalCovariance(X, sigma=0.5, rho=0.0), "rho"),
    (lambda: metrics.LocalCovariance(np.empty((0, 3)), sigma=0.5), "X"),
    (lambda: metrics.LocalCovariance(np.where(X > 1, np.nan, X), sigma=0.5), "X"),
    (lambda: metrics.Covariance(X[:, 0]), "X"),
    (lambda: metrics.Covariance(X, weights=-np.ones(50)), "weights"),
    (lambda: metrics.Covariance(X, weights=np.ones(49)), "weights"),
    (lambda: metrics.Custom(lambda x, out: None, 2), "g_fn"),
    (lambda: metrics.Custom(njit(lambda x: x), 2), "g_fn"),
])
def test_bad_parameters_fail_at_construction(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_wrong_types_are_type_errors():
    with pytest.raises(TypeError, match="dim"):
        metrics.Sphere(2.5)
    with pytest.raises(TypeError, match="radius"):
        metrics.Sphere(2, radius="big")
    with pytest.raises(TypeError, match="Q"):
        metrics.Sphere(2).metric(np.array([["a", "b"]]))


@pytest.mark.parametrize("Q, match", [
    (np.zeros((4, 2)), r"shape \(M, 3\)"),
    (np.zeros((0, 3)), "empty"),
    (np.zeros((2, 3, 1)), "shape"),
    (np.array([[0.0, np.nan, 1.0]]), "NaN"),
    (np.array([[0.0, np.inf, 1.0]]), "NaN or inf"),
])
def test_bad_points(Q, match):
    for method in ("metric", "scalar_curvature", "christoffel"):
        with pytest.raises(ValueError, match=match):
            getattr(metrics.Sphere(3), method)(Q)


def test_points_outside_the_chart():
    with pytest.raises(ValueError, match="x\\[dim-1\\] > 0"):
        metrics.Hyperbolic(2).scalar_curvature(np.array([[0.0, 1.0], [1.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\|x\| < 1"):
        metrics.Hyperbolic(2, "ball").scalar_curvature(np.array([[0.6, 0.8]]))


def test_degenerate_planes():
    model = metrics.Sphere(3)
    Q = np.zeros((2, 3))
    U = np.eye(3)[:2]
    with pytest.raises(ValueError, match="do not span a plane at point 1"):
        model.sectional_curvature(Q, U, np.array([[0.0, 1, 0], [0.0, 3, 0]]))
    with pytest.raises(ValueError, match="U"):
        model.sectional_curvature(Q, U[:1], U)


@njit
def _troublesome(x, out):
    """Symmetric positive definite for x[0] > 0 and |x[1]| < 5; indefinite for x[0] < 0;
    non-symmetric for x[1] >= 5; NaN for x[1] <= -5. (One function: each Custom compiles anew.)"""
    out[0, 0] = 1.0
    out[0, 1] = 0.5 if x[1] >= 5.0 else 0.0
    out[1, 0] = 0.0
    out[1, 1] = np.nan if x[1] <= -5.0 else x[0]


def test_custom_metric_must_be_spd_at_the_query_points():
    model = metrics.Custom(_troublesome, 2)
    assert np.isfinite(model.scalar_curvature(np.ones((2, 2)))).all()
    with pytest.raises(ValueError, match="not symmetric at point 1"):
        model.scalar_curvature(np.array([[1.0, 0.0], [1.0, 6.0]]))
    with pytest.raises(ValueError, match="not positive definite at point 1"):
        model.scalar_curvature(np.array([[1.0, 0.0], [-1.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN or inf at Q point 0"):
        model.metric(np.array([[1.0, -6.0]]))


def test_array_kernel_inputs():
    g = np.broadcast_to(np.eye(2), (3, 2, 2)).copy()
    dg = np.zeros((3, 2, 2, 2))
    d2g = np.zeros((3, 2, 2, 2, 2))
    with pytest.raises(ValueError, match="dg"):
        kernels.christoffel(g, dg[:2])
    with pytest.raises(ValueError, match="d2g"):
        kernels.riemann(g, dg, d2g[..., 0])
    bad = g.copy()
    bad[1, 1, 1] = -1.0
    with pytest.raises(ValueError, match="g is not positive definite at point 1"):
        kernels.scalar_curvature(bad, dg, d2g)
    bad = g.copy()
    bad[2, 0, 1] = 0.3
    with pytest.raises(ValueError, match="g is not symmetric at point 2"):
        kernels.ricci(bad, dg, d2g)
    with pytest.raises(ValueError, match="NaN"):
        kernels.christoffel(g, np.full_like(dg, np.nan))
    with pytest.raises(TypeError, match="g"):
        kernels.christoffel(g.astype(complex), dg)
