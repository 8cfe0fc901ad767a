"""Curvature of manifolds with known curvature, through the fused model methods."""
import numpy as np
import pytest
from numba import njit

from anant_fast import metrics

DIMS = [2, 3, 5]  # each dimension is a compiled specialisation: 2, 3 and one higher
rng = np.random.default_rng(12345)


def _points(dim, model=None, m=16):
    Q = rng.normal(size=(m, dim))
    if model == "halfspace":
        Q[:, -1] = rng.uniform(0.2, 3.0, size=m)
    elif model == "ball":
        Q *= rng.uniform(0.0, 0.9, size=(m, 1)) / np.linalg.norm(Q, axis=1, keepdims=True)
    return Q


def _plane(dim, m=16):
    return rng.normal(size=(m, dim)), rng.normal(size=(m, dim))


def _check_constant_curvature(model, Q, k):
    """Sectional ≡ k, Ricci = (n−1) k g, scalar n(n−1) k, Riemann R_abce = k (g_ac g_be − g_ae g_bc)."""
    n = model.dim
    U, V = _plane(n, len(Q))
    g = model.metric(Q)
    np.testing.assert_allclose(model.sectional_curvature(Q, U, V), k, rtol=1e-10)
    np.testing.assert_allclose(model.ricci(Q), (n - 1) * k * g, rtol=1e-10, atol=1e-10 * np.abs(g).max())
    np.testing.assert_allclose(model.scalar_curvature(Q), n * (n - 1) * k, rtol=1e-10)
    R = model.riemann(Q)
    lowered = np.einsum("mda,mabce->mdbce", g, R)
    expected = k * (np.einsum("mdc,mbe->mdbce", g, g) - np.einsum("mde,mbc->mdbce", g, g))
    np.testing.assert_allclose(lowered, expected, rtol=1e-10, atol=1e-10 * np.abs(expected).max())


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("radius", [0.7, 1.0, 2.5])
def test_sphere_constant_positive_curvature(dim, radius):
    _check_constant_curvature(metrics.Sphere(dim, radius), _points(dim) * radius, 1.0 / radius ** 2)


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("model", ["halfspace", "ball"])
def test_hyperbolic_constant_negative_curvature(dim, model):
    _check_constant_curvature(metrics.Hyperbolic(dim, model), _points(dim, model), -1.0)


@pytest.mark.parametrize("dim", [2, 3])
def test_euclidean_is_flat(dim):
    model = metrics.Euclidean(dim)
    Q = _points(dim)
    assert np.all(model.riemann(Q) == 0)
    assert np.all(model.christoffel(Q) == 0)
    assert np.all(model.scalar_curvature(Q) == 0)
    np.testing.assert_array_equal(model.metric(Q), np.broadcast_to(np.eye(dim), (len(Q), dim, dim)))


@pytest.mark.parametrize("dim", [2, 3])
def test_sphere_chart_is_pullback_of_embedded_sphere(dim):
    """The stereographic chart is an isometry onto the embedded sphere: check g against the pullback."""
    r = 1.7
    Q = _points(dim)
    # inverse stereographic map and its Jacobian by central differences
    def embed(x):
        s = (x ** 2).sum(-1, keepdims=True)
        return np.concatenate([2 * r ** 2 * x / (r ** 2 + s), r * (s - r ** 2) / (r ** 2 + s)], axis=-1)
    h = 1e-6
    J = np.stack([(embed(Q + h * e) - embed(Q - h * e)) / (2 * h) for e in np.eye(dim)], axis=-1)
    np.testing.assert_allclose(metrics.Sphere(dim, r).metric(Q), np.einsum("mai,maj->mij", J, J),
                               rtol=1e-8, atol=1e-8)


# --- a graph surface z = f(x, y) through Custom: K = (f_xx f_yy − f_xy²) / (1 + |∇f|²)² -------------

@njit
def _graph_metric(x, out):
    fx = 0.6 * np.cos(x[0]) * np.cos(x[1]) + 0.3 * x[1]
    fy = -0.6 * np.sin(x[0]) * np.sin(x[1]) + 0.3 * x[0]
    out[0, 0] = 1.0 + fx * fx
    out[0, 1] = fx * fy
    out[1, 0] = fx * fy
    out[1, 1] = 1.0 + fy * fy


def _graph_gaussian_curvature(Q):
    x, y = Q[:, 0], Q[:, 1]
    fx = 0.6 * np.cos(x) * np.cos(y) + 0.3 * y
    fy = -0.6 * np.sin(x) * np.sin(y) + 0.3 * x
    fxx = -0.6 * np.sin(x) * np.cos(y)
    fyy = -0.6 * np.sin(x) * np.cos(y)
    fxy = -0.6 * np.cos(x) * np.sin(y) + 0.3
    return (fxx * fyy - fxy ** 2) / (1 + fx ** 2 + fy ** 2) ** 2


def test_custom_graph_surface_gaussian_curvature():
    model = metrics.Custom(_graph_metric, 2)
    Q = rng.uniform(-2, 2, size=(32, 2))
    expected = _graph_gaussian_curvature(Q)
    np.testing.assert_allclose(model.gaussian_curvature(Q), expected, rtol=1e-6, atol=1e-6 * np.abs(expected).max())
    U, V = _plane(2, len(Q))
    np.testing.assert_allclose(model.sectional_curvature(Q, U, V), expected, rtol=1e-6,
                               atol=1e-6 * np.abs(expected).max())


@njit
def _sphere_metric_3d(x, out):
    lam = 4.0 / (1.0 + x[0] ** 2 + x[1] ** 2 + x[2] ** 2) ** 2
    for i in range(3):
        for j in range(3):
            out[i, j] = lam if i == j else 0.0


def test_custom_matches_analytic_sphere():
    Q = _points(3)
    custom, exact = metrics.Custom(_sphere_metric_3d, 3), metrics.Sphere(3)
    np.testing.assert_allclose(custom.scalar_curvature(Q), 6.0, rtol=1e-6)
    g, dg, d2g = custom.derivatives(Q)
    G, DG, D2G = exact.derivatives(Q)
    np.testing.assert_allclose(g, G, rtol=1e-14)
    np.testing.assert_allclose(dg, DG, atol=1e-8 * np.abs(DG).max())
    np.testing.assert_allclose(d2g, D2G, atol=1e-6 * np.abs(D2G).max())


def test_gaussian_curvature_needs_dim_2():
    assert metrics.Sphere(2, 2.0).gaussian_curvature(np.zeros(2)) == pytest.approx(0.25, rel=1e-12)
    with pytest.raises(ValueError, match="2-dimensional"):
        metrics.Sphere(3).gaussian_curvature(np.zeros(3))
