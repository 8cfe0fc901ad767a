"""Geodesics of the closed-form models against their closed forms and identities.

Models compiled here (each ~1 min the first time): Euclidean(3), Sphere(2) (shared with the
benches), Hyperbolic(2, halfspace), Hyperbolic(3, ball).
"""
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

from anant_fast import metrics
from anant_fast.kernels import geodesic as kg

R = 1.5
SPHERE = metrics.Sphere(2, radius=R)
EUCLID = metrics.Euclidean(3)
HALF = metrics.Hyperbolic(2)
BALL = metrics.Hyperbolic(3, model="ball")


def rng(seed):
    return np.random.default_rng(seed)


def embed(x, r=R):
    """Inverse stereographic projection: chart point (M, d) -> point of the sphere in R^(d+1)."""
    s = np.sum(x * x, axis=-1, keepdims=True)
    return np.concatenate([2 * r * r * x / (r * r + s), r * (s - r * r) / (r * r + s)], axis=-1)


def embed_velocity(x, v, r=R, h=1e-6):
    return (embed(x + h * v, r) - embed(x - h * v, r)) / (2 * h)


def norm_g(model, X, V):
    return np.sqrt(np.einsum("mi,mij,mj->m", V, model.metric(X), V))


def ball_points(d, M, radius, seed):
    u = rng(seed).normal(size=(M, d))
    return u / np.linalg.norm(u, axis=1, keepdims=True) * radius * rng(seed + 1).uniform(0, 1, (M, 1))


# --- Euclidean: straight lines, exactly ---------------------------------------------------------

def test_euclidean_geodesics_are_straight_lines():
    X, V, W = (rng(s).normal(size=(20, 3)) for s in (0, 1, 2))
    np.testing.assert_allclose(EUCLID.exp(X, V), X + V, rtol=0, atol=1e-12)
    np.testing.assert_allclose(EUCLID.exp(X, V, steps=7), X + V, rtol=0, atol=1e-12)
    np.testing.assert_allclose(EUCLID.exp(X, V, t=-2.5), X - 2.5 * V, rtol=0, atol=1e-12)
    t = np.linspace(0, 1, 5)
    np.testing.assert_allclose(EUCLID.geodesic(X, V, 5), X[:, None] + t[None, :, None] * V[:, None],
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(EUCLID.log(X, X + V), V, rtol=0, atol=1e-12)
    np.testing.assert_allclose(EUCLID.distance(X, X + V), np.linalg.norm(V, axis=1), rtol=1e-12)
    np.testing.assert_allclose(EUCLID.parallel_transport(X, V, W), W, rtol=0, atol=1e-12)


# --- Sphere: great circles, r·angle, conserved speed --------------------------------------------

def test_sphere_geodesics_are_great_circles():
    X = ball_points(2, 40, R, 3)
    V = rng(4).normal(size=(40, 2))
    Y = SPHERE.exp(X, V, rtol=1e-11)
    p, dp, q = embed(X), embed_velocity(X, V), embed(Y)
    # q must lie in span{p, dp} (the plane of the great circle through p with tangent dp)
    basis = np.stack([p, dp], axis=2)                                    # (M, 3, 2)
    coef = np.linalg.solve(np.einsum("mki,mkj->mij", basis, basis),
                           np.einsum("mki,mk->mi", basis, q)[..., None])[..., 0]
    proj = np.einsum("mij,mj->mi", basis, coef)
    np.testing.assert_allclose(q, proj, rtol=0, atol=1e-8)
    # and the arc length is the speed: the angle swept is |V|_g / r
    angle = np.arccos(np.clip(np.einsum("mi,mi->m", p, q) / R ** 2, -1, 1))
    speed = norm_g(SPHERE, X, V)
    inside = speed < np.pi * R  # beyond half a turn the angle folds back
    np.testing.assert_allclose(angle[inside], speed[inside] / R, rtol=0, atol=1e-8)


def test_sphere_distance_is_r_times_angle_and_symmetric():
    X, Y = ball_points(2, 60, R, 5), ball_points(2, 60, R, 7)
    D, info = SPHERE.distance(X, Y, return_info=True)
    assert info.converged.all() and (info.residual < 1e-8).all()
    angle = np.arccos(np.clip(np.einsum("mi,mi->m", embed(X), embed(Y)) / R ** 2, -1, 1))
    np.testing.assert_allclose(D, R * angle, rtol=0, atol=1e-8)
    np.testing.assert_allclose(SPHERE.distance(Y, X), D, rtol=0, atol=1e-8)


def test_sphere_speed_is_conserved_along_the_curve():
    X = ball_points(2, 10, R, 8)
    V = rng(9).normal(size=(10, 2))
    n = 401
    curve, info = SPHERE.geodesic(X, V, n, rtol=1e-11, atol=1e-13, return_info=True)
    assert (info.residual < 1e-9).all()  # the kernel's own end-to-end check
    # independent check: central differences of the sampled curve
    h = 1.0 / (n - 1)
    vel = (curve[:, 2:] - curve[:, :-2]) / (2 * h)
    mid = curve[:, 1:-1].reshape(-1, 2)
    speed = norm_g(SPHERE, mid, vel.reshape(-1, 2)).reshape(10, n - 2)
    np.testing.assert_allclose(speed, norm_g(SPHERE, X, V)[:, None] * np.ones((1, n - 2)), rtol=1e-4)


def test_fixed_step_rk4_agrees_with_adaptive():
    X = ball_points(2, 30, R, 10)
    V = rng(11).normal(size=(30, 2))
    V *= 0.5 * np.pi * R / norm_g(SPHERE, X, V)[:, None]  # a quarter turn
    np.testing.assert_allclose(SPHERE.exp(X, V, steps=400), SPHERE.exp(X, V), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(SPHERE.exp(X, V, t=0.3), SPHERE.exp(X, 0.3 * V), rtol=0, atol=1e-12)


def test_exp_and_log_invert_each_other_inside_the_injectivity_radius():
    X = ball_points(2, 50, R, 12)
    V = rng(13).normal(size=(50, 2))
    V *= (0.5 * np.pi * R * rng(14).uniform(0, 1, (50, 1))) / norm_g(SPHERE, X, V)[:, None]
    Y = SPHERE.exp(X, V)
    np.testing.assert_allclose(SPHERE.log(X, Y), V, rtol=1e-7, atol=1e-8)
    Z = ball_points(2, 50, R, 15)
    np.testing.assert_allclose(SPHERE.exp(X, SPHERE.log(X, Z)), Z, rtol=0, atol=1e-8)


def test_parallel_transport_preserves_inner_products():
    X = ball_points(2, 30, R, 16)
    V, W = rng(17).normal(size=(30, 2)), rng(18).normal(size=(30, 2))
    W1, info = SPHERE.parallel_transport(X, V, W, return_info=True)
    V1 = SPHERE.parallel_transport(X, V, V)  # the velocity is parallel along its geodesic
    Y = SPHERE.exp(X, V)
    G0, G1 = SPHERE.metric(X), SPHERE.metric(Y)
    for a0, b0, a1, b1 in ((W, W, W1, W1), (V, W, V1, W1), (V, V, V1, V1)):
        np.testing.assert_allclose(np.einsum("mi,mij,mj->m", a1, G1, b1),
                                   np.einsum("mi,mij,mj->m", a0, G0, b0), rtol=1e-8, atol=1e-9)
    assert (info.residual < 1e-8).all()


# --- hyperbolic space: closed-form distances ----------------------------------------------------

def half_space_points(M, seed):
    P = rng(seed).uniform(-2, 2, (M, 2))
    P[:, -1] = rng(seed + 1).uniform(0.1, 3, M)
    return P


def test_half_space_distance_closed_form():
    X, Y = half_space_points(80, 20), half_space_points(80, 22)
    D = HALF.distance(X, Y)
    ref = np.arccosh(1 + np.sum((X - Y) ** 2, axis=1) / (2 * X[:, -1] * Y[:, -1]))
    np.testing.assert_allclose(D, ref, rtol=1e-9, atol=1e-8)


def test_ball_distance_closed_form():
    X, Y = ball_points(3, 80, 0.95, 24), ball_points(3, 80, 0.95, 26)
    D = BALL.distance(X, Y)
    sx, sy = np.sum(X * X, axis=1), np.sum(Y * Y, axis=1)
    ref = np.arccosh(1 + 2 * np.sum((X - Y) ** 2, axis=1) / ((1 - sx) * (1 - sy)))
    np.testing.assert_allclose(D, ref, rtol=1e-9, atol=1e-8)


@given(st.lists(st.floats(-3, 3), min_size=2, max_size=2), st.floats(0.2, 4),
       st.lists(st.floats(-3, 3), min_size=2, max_size=2), st.floats(0.2, 4))
def test_half_space_log_exp_round_trip(xa, ya, xb, yb):
    x, y = np.array([xa[0], ya]), np.array([xb[0], yb])
    v = HALF.log(x, y)
    np.testing.assert_allclose(HALF.exp(x, v), y, rtol=1e-8, atol=1e-8 * max(1.0, abs(y).max()))
    d = np.arccosh(1 + np.sum((x - y) ** 2) / (2 * ya * yb))
    assert abs(HALF.distance(y, x) - d) <= 1e-8 * max(1.0, d)


# --- failures are reported, never returned as numbers ------------------------------------------

def test_geodesic_through_the_chart_pole_is_a_nan_row_with_a_warning():
    X = np.zeros((3, 2))
    V = np.array([[0.1, 0], [3.0 * np.pi / R, 0], [0, 0.2]])  # |V|_g = 2r|V|: 1.5 turns
    with pytest.warns(RuntimeWarning, match=r"exp: 1 of 3 pairs failed \(1 left the chart\)") as caught:
        Y, info = SPHERE.exp(X, V, return_info=True)
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert np.isnan(Y[1]).all() and np.isfinite(Y[[0, 2]]).all()
    assert info.left_chart.tolist() == [False, True, False]
    assert info.status[1] == kg.LEFT_CHART and not info.converged[1]
    with pytest.warns(RuntimeWarning):
        assert np.isnan(SPHERE.exp(X, V, steps=50)[1]).all()


def test_log_that_does_not_converge_is_reported():
    X, Y = half_space_points(4, 30), half_space_points(4, 32)
    Y[2] = [40.0, 0.01]  # far away: one Newton step cannot reach it
    with pytest.warns(RuntimeWarning, match="did not converge"):
        V, info = HALF.log(X, Y, max_iter=1, return_info=True)
    assert np.isnan(V[2]).all() and not info.converged[2] and info.status[2] == kg.NOT_CONVERGED
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(HALF.distance(X, Y)).all()  # default iterations: converges


def test_far_pairs_converge_through_the_fallback_or_are_reported():
    X, Y = np.array([[2.0, 0.0625], [0.0, 0.05]]), np.array([[-3.0, 0.0625], [3.0, 0.01]])
    with pytest.warns(RuntimeWarning, match="1 of 2 pairs failed"):
        D, info = HALF.distance(X, Y, return_info=True)
    assert info.fallback[0] and info.converged[0]  # shooting alone fails; continuation succeeds
    np.testing.assert_allclose(D[0], np.arccosh(1 + 25 / (2 * 0.0625 ** 2)), rtol=1e-9)
    assert np.isnan(D[1]) and not info.converged[1]  # distance 9.8 across a 1:5 height ratio


def test_single_points_and_broadcasting():
    x, v = np.array([0.1, 0.2]), np.array([0.3, -0.1])
    y = SPHERE.exp(x, v)
    assert y.shape == (2,)
    np.testing.assert_allclose(SPHERE.exp(np.tile(x, (4, 1)), v), np.tile(y, (4, 1)), atol=1e-14)
    assert SPHERE.distance(x, y).shape == ()
    assert SPHERE.geodesic(x, v, 3).shape == (3, 2)
    assert SPHERE.distance(x, np.stack([y, y])).shape == (2,)


@pytest.mark.parametrize("call, match", [
    (lambda: SPHERE.exp(np.zeros((2, 2)), np.zeros((3, 2))), "must match"),
    (lambda: SPHERE.exp(np.zeros((2, 3)), np.zeros((2, 3))), r"shape \(M, 2\)"),
    (lambda: SPHERE.exp([[0, np.nan]], [[0, 0]]), "NaN"),
    (lambda: SPHERE.exp([[0, 0]], [[0, 0]], t=np.inf), "t must be finite"),
    (lambda: SPHERE.exp([[0, 0]], [[0, 0]], steps=0), "steps must be >= 1"),
    (lambda: SPHERE.log([[0, 0]], [[0, 0]], tol=-1), "tol must be finite and > 0"),
    (lambda: SPHERE.geodesic([[0, 0]], [[0, 0]], 1), "n must be >= 2"),
    (lambda: HALF.exp([[0.0, -1.0]], [[1.0, 0.0]]), "outside the chart"),
    (lambda: HALF.distance([[0.0, 1.0]], [[0.0, 0.0]]), "outside the chart"),
])
def test_bad_input_is_rejected_before_integration(call, match):
    with pytest.raises(ValueError, match=match):
        call()
