"""Point-wise geometry on the CUDA target equals the CPU kernels: every model family, every
quantity, NumPy and device arrays, chunked launches, and bad input refused before any launch."""
import numpy as np
import pytest
from numba import njit

from anant_fast import metrics

pytestmark = pytest.mark.cuda

rng = np.random.default_rng(7)
DATA2, DATA3 = rng.normal(size=(80, 2)), rng.normal(size=(80, 3))
MODELS = {
    "euclidean": (metrics.Euclidean(2), None),
    "sphere2": (metrics.Sphere(2, radius=0.7), None),
    "sphere3": (metrics.Sphere(3, radius=2.5), None),
    "halfspace3": (metrics.Hyperbolic(3), "halfspace"),
    "ball2": (metrics.Hyperbolic(2, model="ball"), "ball"),
    "covariance3": (metrics.Covariance(DATA3), None),
    "local_diagonal2": (metrics.LocalDiagonal(DATA2, sigma=0.8), None),
    "local_covariance3": (metrics.LocalCovariance(DATA3, sigma=0.9), None),
}
M = 21  # two blocks of simulated threads, the second one partly idle


def _points(model, chart, m=M):
    Q = rng.normal(size=(m, model.dim)) * 0.6
    if chart == "halfspace":
        Q[:, -1] = rng.uniform(0.2, 2.0, size=m)
    elif chart == "ball":
        Q *= 0.9 / (1.0 + np.linalg.norm(Q, axis=1, keepdims=True))
    return Q


def _same(gpu, cpu):
    scale = np.abs(cpu).max() if cpu.size else 1.0
    np.testing.assert_allclose(gpu, cpu, rtol=1e-12, atol=1e-12 * max(scale, 1e-300))


@pytest.mark.parametrize("name", MODELS)
def test_every_quantity_matches_the_cpu(name):
    model, chart = MODELS[name]
    Q = _points(model, chart)
    U, V = rng.normal(size=Q.shape), rng.normal(size=Q.shape)
    for method, args in (("christoffel", ()), ("ricci", ()), ("scalar_curvature", ()),
                         ("sectional_curvature", (U, V))):
        gpu = getattr(model, method)(Q, *args, target="cuda")
        cpu = getattr(model, method)(Q, *args)
        assert type(gpu) is np.ndarray and gpu.shape == cpu.shape, method
        _same(gpu, cpu)


def test_one_point_and_gaussian_curvature():
    model = metrics.Sphere(2, radius=0.5)
    x = np.array([0.3, -0.2])
    assert model.scalar_curvature(x, target="cuda").shape == ()
    _same(model.gaussian_curvature(x, target="cuda"), np.float64(4.0))
    _same(model.christoffel(x, target="cuda"), model.christoffel(x))


def test_device_arrays_in_device_arrays_out():
    from numba import cuda
    model, chart = MODELS["halfspace3"]
    Q = _points(model, chart)
    U, V = rng.normal(size=Q.shape), rng.normal(size=Q.shape)
    dQ, dU, dV = (cuda.to_device(a) for a in (Q, U, V))
    out = model.sectional_curvature(dQ, dU, dV, target="cuda")
    assert not isinstance(out, np.ndarray) and hasattr(out, "copy_to_host")
    _same(out.copy_to_host(), np.full(M, -1.0))
    ric = model.ricci(dQ, target="cuda")
    assert ric.shape == (M, 3, 3)
    _same(ric.copy_to_host(), model.ricci(Q))


@pytest.mark.parametrize("name", ["sphere3", "local_covariance3"])
def test_chunked_launches_give_the_same_result(name, tiny_chunks):
    model, chart = MODELS[name]
    Q = _points(model, chart, m=10)
    _same(model.christoffel(Q, target="cuda"), model.christoffel(Q))
    _same(model.scalar_curvature(Q, target="cuda"), model.scalar_curvature(Q))


@pytest.fixture
def no_launch(monkeypatch):
    """Fail the test if a curvature kernel is launched."""
    from anant_fast.kernels import gpu

    def refuse(*args):
        raise AssertionError("a kernel was launched")
    monkeypatch.setattr(gpu, "_pointwise_kernel", refuse)


def test_bad_host_input_is_refused_before_any_launch(no_launch):
    model = metrics.Hyperbolic(2)
    with pytest.raises(ValueError, match="Q contains NaN or inf"):
        model.scalar_curvature(np.array([[0.0, np.nan]]), target="cuda")
    with pytest.raises(ValueError, match="half-space"):
        model.scalar_curvature(np.array([[0.0, -1.0]]), target="cuda")
    with pytest.raises(ValueError, match="U"):
        model.sectional_curvature(np.ones((3, 2)), np.ones((2, 2)), np.ones((3, 2)), target="cuda")


def test_bad_device_input_is_refused_before_any_launch(no_launch):
    from numba import cuda
    model = metrics.Hyperbolic(2)
    Q = np.array([[0.0, 1.0], [0.5, 2.0], [0.1, 0.5]])
    bad = Q.copy()
    bad[2, 0] = np.inf
    with pytest.raises(ValueError, match=r"Q contains NaN or inf \(first at point 2\)"):
        model.scalar_curvature(cuda.to_device(bad), target="cuda")
    bad = Q.copy()
    bad[1, 1] = -0.5
    with pytest.raises(ValueError, match=r"Q\[1\] lies outside the chart of Hyperbolic"):
        model.ricci(cuda.to_device(bad), target="cuda")
    with pytest.raises(ValueError, match=r"shape \(M, 2\)"):
        model.ricci(cuda.to_device(np.ones((3, 3))), target="cuda")
    with pytest.raises(TypeError, match="float64"):
        model.ricci(cuda.to_device(Q.astype(np.float32)), target="cuda")
    with pytest.raises(TypeError, match="U must be a GPU array"):
        model.sectional_curvature(cuda.to_device(Q), Q, Q, target="cuda")
    with pytest.raises(ValueError, match=r"V on the GPU must have shape \(3, 2\)"):
        model.sectional_curvature(cuda.to_device(Q), cuda.to_device(Q), cuda.to_device(Q[:2]),
                                  target="cuda")


def test_auto_runs_on_the_gpu_when_there_is_one():
    model = metrics.Sphere(2)
    Q = _points(model, None, m=4)
    _same(model.scalar_curvature(Q, target="auto"), np.full(4, 2.0))


@njit
def _saddle_metric(x, out):
    """The graph of z = 0.3 (x² − y²): g = I + ∇z ∇zᵀ."""
    a, b = 0.6 * x[0], -0.6 * x[1]
    out[0, 0] = 1.0 + a * a
    out[0, 1] = out[1, 0] = a * b
    out[1, 1] = 1.0 + b * b


def test_a_custom_metric_runs_on_the_gpu():
    model = metrics.Custom(_saddle_metric, 2)
    Q = rng.normal(size=(12, 2)) * 0.5
    gpu, cpu = model.gaussian_curvature(Q, target="cuda"), model.gaussian_curvature(Q)
    # A GPU compiler contracts g_fn's ``1.0 + a * a`` into an FMA, so g may differ by an ulp from
    # the CPU's; second differences of width ``step`` amplify that by about 1/step² (measured on an
    # H200: 1.9e-9 relative at step 1e-3; the simulator gives the same bits).
    np.testing.assert_allclose(gpu, cpu, rtol=0,
                               atol=100 * np.finfo(float).eps / model.step**2 * np.abs(cpu).max())
    # K = (z_xx z_yy − z_xy²) / (1 + |∇z|²)² with z_xx = 0.6, z_yy = −0.6
    a, b = 0.6 * Q[:, 0], -0.6 * Q[:, 1]
    np.testing.assert_allclose(model.gaussian_curvature(Q, target="cuda"),
                               -0.36 / (1 + a * a + b * b) ** 2, rtol=1e-6)


def test_dimensions_above_the_gpu_limit_are_refused(no_launch):
    from anant_fast.kernels import gpu
    model = metrics.Euclidean(gpu.MAX_DIM + 1)
    with pytest.raises(ValueError, match="up to dimension 8"):
        model.scalar_curvature(np.zeros(gpu.MAX_DIM + 1), target="cuda")
