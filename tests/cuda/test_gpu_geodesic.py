"""Geodesics with fixed RK4 steps on the CUDA target equal the CPU's."""
import numpy as np
import pytest

from anant_fast import metrics

pytestmark = pytest.mark.cuda

rng = np.random.default_rng(21)
X = np.column_stack([rng.normal(size=9) * 0.5, rng.uniform(0.5, 1.5, size=9)])
V = rng.normal(size=(9, 2)) * 0.4


@pytest.mark.parametrize("model", [metrics.Hyperbolic(2), metrics.LocalDiagonal(rng.normal(size=(40, 2)), 0.8)],
                         ids=repr)
def test_exp_and_geodesic_match_the_cpu(model):
    from numba import cuda
    cpu = model.exp(X, V, steps=16)
    np.testing.assert_allclose(model.exp(X, V, steps=16, target="cuda"), cpu, rtol=1e-12, atol=1e-14)
    on_gpu = model.exp(cuda.to_device(X), cuda.to_device(V), steps=16, target="cuda")
    assert hasattr(on_gpu, "copy_to_host")
    np.testing.assert_allclose(on_gpu.copy_to_host(), cpu, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(model.geodesic(X[:3], V[:3], n=4, steps=16, target="cuda"),
                               model.geodesic(X[:3], V[:3], n=4, steps=16), rtol=1e-12, atol=1e-14)


def test_exp_on_the_gpu_follows_the_closed_form(tiny_chunks):
    # the half-plane geodesic from (0, 1) with unit velocity (1, 0) reaches (tanh 1, 1/cosh 1)
    model = metrics.Hyperbolic(2)
    end, info = model.exp([0.0, 1.0], [1.0, 0.0], steps=64, target="cuda", return_info=True)
    np.testing.assert_allclose(end, [np.tanh(1.0), 1.0 / np.cosh(1.0)], rtol=1e-8)
    assert info.converged and info.iterations == 64
    out = model.exp(X, V, t=2.0, steps=16, target="cuda")
    np.testing.assert_allclose(out, model.exp(X, V, t=2.0, steps=16), rtol=1e-12, atol=1e-14)


def test_failed_pairs_and_bad_input():
    from numba import cuda
    model = metrics.Hyperbolic(2)
    with pytest.warns(RuntimeWarning, match="1 of 2 pairs failed"):
        out = model.exp([[0.0, 1.0], [0.0, 1.0]], [[1.0, 0.0], [0.0, -30.0]], steps=8, target="cuda")
    assert np.isfinite(out[0]).all() and np.isnan(out[1]).all()
    with pytest.raises(ValueError, match="fixed RK4 steps"):
        model.exp(X, V, target="cuda")
    with pytest.raises(ValueError, match=r"X\[0\] lies outside the chart"):
        model.exp(cuda.to_device(-X), cuda.to_device(V), steps=4, target="cuda")
