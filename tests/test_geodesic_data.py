"""Geodesics of the data models and of a user's metric; the cache of the geodesic kernels.

Models compiled here: LocalCovariance(2), LocalDiagonal(3) (shared with the benches), Covariance,
Custom(2) (never cached; ``test_kernels`` checks that it leaves no cache files).
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numba import njit

from anant_fast import metrics


def rng(seed):
    return np.random.default_rng(seed)


def curved_data(n, d, seed):
    """A noisy arc (d = 2) or a noisy ribbon (d = 3): data with a strongly varying local metric."""
    t = rng(seed).uniform(0, np.pi, n)
    X = np.stack([np.cos(t), np.sin(t)] + [rng(seed + 1).uniform(-0.5, 0.5, n)] * (d - 2), axis=1)
    return X + 0.05 * rng(seed + 2).normal(size=X.shape)


LOCAL_COV = metrics.LocalCovariance(curved_data(400, 2, 0), sigma=0.2)
LOCAL_DIAG = metrics.LocalDiagonal(curved_data(400, 3, 3), sigma=0.3)


def segment_length(model, X, Y, nodes=64):
    """Length in the metric of the straight segments X -> Y (Gauss–Legendre, 64 nodes)."""
    t, w = np.polynomial.legendre.leggauss(nodes)
    t, w = 0.5 * (t + 1), 0.5 * w
    D = Y - X
    P = (X[:, None] + t[None, :, None] * D[:, None]).reshape(-1, X.shape[1])
    G = model.metric(P).reshape(len(X), nodes, X.shape[1], X.shape[1])
    return np.einsum("q,mq->m", w, np.sqrt(np.einsum("mi,mqij,mj->mq", D, G, D)))


def neighbour_pairs(model, radius, count, seed):
    """``count`` pairs of reference points closer than ``radius`` (coordinates)."""
    data = model._params.points
    i, j = rng(seed).integers(0, len(data), (2, 20 * count))
    near = np.flatnonzero(np.linalg.norm(data[i] - data[j], axis=1) < radius)[:count]
    return data[i[near]], data[j[near]]


def test_local_covariance_geodesics_are_never_longer_than_the_segment():
    X, Y = neighbour_pairs(LOCAL_COV, 0.5, 40, 5)
    D, info = LOCAL_COV.distance(X, Y, return_info=True)
    assert info.converged.mean() > 0.9  # pairs that fail are reported (NaN), never wrong
    ok = info.converged
    assert np.isnan(D[~ok]).all()
    assert (D[ok] <= segment_length(LOCAL_COV, X[ok], Y[ok]) * (1 + 1e-9) + 1e-12).all()
    np.testing.assert_allclose(LOCAL_COV.exp(X[ok], LOCAL_COV.log(X[ok], Y[ok])), Y[ok], atol=1e-7)


def test_local_diagonal_interpolation_moves_along_the_geodesic():
    data = LOCAL_DIAG._params.points
    a, b = data[:6], data[100:106]
    t = np.linspace(0, 1, 5)
    path = LOCAL_DIAG.interpolate(a, b, t)
    assert path.shape == (6, 5, 3)
    np.testing.assert_allclose(path[:, 0], a, atol=1e-12)
    np.testing.assert_allclose(path[:, -1], b, atol=1e-7)
    mid = LOCAL_DIAG.interpolate(a, b, 0.5)
    np.testing.assert_allclose(mid, path[:, 2], atol=1e-9)
    # the midpoint halves the distance
    whole = LOCAL_DIAG.distance(a, b)
    np.testing.assert_allclose(LOCAL_DIAG.distance(a, mid), whole / 2, rtol=1e-6)
    np.testing.assert_allclose(LOCAL_DIAG.distance(mid, b), whole / 2, rtol=1e-6)
    assert LOCAL_DIAG.interpolate(a[0], b[0], 0.25).shape == (3,)


def test_covariance_geodesics_are_straight_lines_and_distance_is_mahalanobis():
    X = rng(7).normal(size=(500, 3)) @ rng(8).normal(size=(3, 3))
    model = metrics.Covariance(X)
    a, b = X[:10], X[10:20]
    np.testing.assert_allclose(model.interpolate(a, b, 0.3), a + 0.3 * (b - a), atol=1e-9)
    D = b - a
    np.testing.assert_allclose(model.distance(a, b), np.sqrt(np.einsum("mi,ij,mj->m", D, model.G, D)),
                               rtol=1e-9)


@pytest.mark.parametrize("t", [1.5, -0.1, [0.5, 0.2], [[0.5]], np.nan])
def test_interpolate_rejects_times_outside_the_segment(t):
    with pytest.raises(ValueError, match="t must"):
        LOCAL_DIAG.interpolate(np.zeros(3), np.ones(3), t)


GEODESIC_PROBE = textwrap.dedent("""
    import numpy as np
    from anant_fast import metrics
    from anant_fast.kernels.geodesic import follow_kernel, log_kernel
    model = metrics.LocalDiagonal(np.random.default_rng(0).normal(size=(100, 3)), 0.5)
    X = np.zeros((3, 3))
    model.exp(X, np.ones((3, 3)) * 0.1)
    model.distance(X, np.ones((3, 3)) * 0.1)
    stats = [k.stats for k in (follow_kernel, log_kernel)]
    print(sum(len(s.cache_misses) for s in stats), sum(len(s.cache_hits) for s in stats))
""")


def test_second_process_loads_the_geodesic_kernels_from_the_cache():
    for attempt in range(2):
        done = subprocess.run([sys.executable, "-c", GEODESIC_PROBE], env=dict(os.environ),
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "2"], done.stdout


@njit
def paraboloid(x, out):
    """The graph of f = (x0² + x1²) / 2: g = I + ∇f ∇fᵀ."""
    out[0, 0] = 1.0 + x[0] * x[0]
    out[0, 1] = out[1, 0] = x[0] * x[1]
    out[1, 1] = 1.0 + x[1] * x[1]


def test_custom_metric_geodesics_match_the_embedded_surface():
    """Geodesics of the graph metric are those of the surface z = f(x) in R³, whose equation is
    ẍ = −(vᵀ ∇²f v) ∇f / (1 + |∇f|²): integrated here with NumPy RK4 and compared."""
    x, v = np.array([[0.3, -0.2], [0.0, 0.5]]), np.array([[0.5, 0.4], [-0.3, 0.2]])
    got = metrics.Custom(paraboloid, 2).exp(x, v, steps=400)

    def accel(x, v):
        return -np.sum(v * v, axis=1, keepdims=True) * x / (1 + np.sum(x * x, axis=1, keepdims=True))

    h = 1 / 2000
    for _ in range(2000):
        k1x, k1v = v, accel(x, v)
        k2x, k2v = v + h / 2 * k1v, accel(x + h / 2 * k1x, v + h / 2 * k1v)
        k3x, k3v = v + h / 2 * k2v, accel(x + h / 2 * k2x, v + h / 2 * k2v)
        k4x, k4v = v + h * k3v, accel(x + h * k3x, v + h * k3v)
        x, v = x + h / 6 * (k1x + 2 * k2x + 2 * k3x + k4x), v + h / 6 * (k1v + 2 * k2v + 2 * k3v + k4v)
    np.testing.assert_allclose(got, x, atol=1e-8)  # 4th-order differences of g: errors ~1e-10
