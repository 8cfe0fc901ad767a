"""Mahalanobis distances and outliers on the CUDA target equal the CPU's."""
import numpy as np
import pytest

from anant_fast import metrics

pytestmark = pytest.mark.cuda

rng = np.random.default_rng(5)
X = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
X[[3, 150]] += 25.0
MODEL = metrics.Covariance(X)


def test_distances_and_outliers_match_the_cpu(tiny_chunks):
    from numba import cuda
    cpu = MODEL.mahalanobis(X)
    np.testing.assert_array_equal(MODEL.mahalanobis(X, target="cuda"), cpu)   # the same FMAs
    on_gpu = MODEL.mahalanobis(cuda.to_device(X), target="cuda")
    assert hasattr(on_gpu, "copy_to_host")
    np.testing.assert_array_equal(on_gpu.copy_to_host(), cpu)
    np.testing.assert_array_equal(MODEL.mahalanobis(X[4], target="cuda"), cpu[4])
    expected = MODEL.outliers(z=3.0)
    assert set(expected) >= {3, 150}
    np.testing.assert_array_equal(MODEL.outliers(z=3.0, target="cuda"), expected)
    np.testing.assert_array_equal(MODEL.outliers(cuda.to_device(X), z=3.0, target="cuda"), expected)


def test_bad_points_are_refused_on_the_gpu():
    from numba import cuda
    bad = X[:5].copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"Y contains NaN or inf \(first at point 2\)"):
        MODEL.mahalanobis(cuda.to_device(bad), target="cuda")
    with pytest.raises(ValueError, match=r"Y on the GPU must have shape \(M, 6\)"):
        MODEL.mahalanobis(cuda.to_device(X[:, :5].copy()), target="cuda")
