"""Choosing where kernels run, without a GPU: ``target=`` values, errors naming the cause, and the
``"auto"`` fallback to the CPU. The CUDA kernels themselves are tested in ``tests/cuda``."""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from anant_fast import metrics
from anant_fast.kernels import target

Q = np.array([[0.1, 0.2], [0.3, -0.4]])
NO_GPU = target.cuda_unavailable() is not None


def test_cpu_is_the_default_and_needs_nothing():
    assert target.resolve("cpu") == "cpu"
    model = metrics.Sphere(2)
    np.testing.assert_array_equal(model.scalar_curvature(Q, target="cpu"), model.scalar_curvature(Q))


@pytest.mark.parametrize("bad", ["gpu", "CUDA", None, 1])
def test_unknown_targets_are_refused(bad):
    with pytest.raises(ValueError, match="target must be one of 'cpu', 'cuda', 'auto'"):
        metrics.Sphere(2).scalar_curvature(Q, target=bad)


def test_every_point_wise_quantity_accepts_the_cpu_target():
    model = metrics.Sphere(2)
    np.testing.assert_array_equal(model.plan("riemann", Q, target="cpu").run(), model.riemann(Q))


@pytest.mark.skipif(not NO_GPU, reason="a CUDA device (or the simulator) is present")
def test_cuda_without_a_device_names_the_cause():
    with pytest.raises(RuntimeError, match="target='cuda' cannot run: no CUDA device"):
        metrics.Sphere(2).christoffel(Q, target="cuda")


@pytest.mark.skipif(not NO_GPU, reason="a CUDA device (or the simulator) is present")
def test_auto_falls_back_to_the_cpu_and_says_so(monkeypatch):
    monkeypatch.setattr(target, "_warned", set())
    model = metrics.Hyperbolic(2)
    P = Q + [0.0, 1.0]
    with pytest.warns(target.TargetFallbackWarning, match="target='auto' runs on the CPU") as caught:
        out = model.ricci(P, target="auto")
    assert caught[0].filename == __file__  # the warning points at the caller's line
    np.testing.assert_array_equal(out, model.ricci(P))
    with warnings.catch_warnings():  # said once per process
        warnings.simplefilter("error")
        model.sectional_curvature(P, P, P[::-1], target="auto")


def test_without_numba_cuda_the_error_names_the_extra():
    code = ("import sys; sys.modules['numba_cuda'] = None\n"
            "import numpy as np, warnings\n"
            "from anant_fast import metrics\n"
            "warnings.simplefilter('ignore')\n"
            "print(metrics.Sphere(2).scalar_curvature(np.zeros(2), target='auto'))\n"
            "metrics.Sphere(2).scalar_curvature(np.zeros(2), target='cuda')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "2.0"
    assert "ImportError: target='cuda' needs the numba-cuda package: pip install 'anant-fast[cuda]'" \
        in done.stderr


def test_a_numba_cuda_that_does_not_support_this_numpy_is_named():
    """numba-cuda 0.30.4 registers ``np.row_stack``, which numpy 2.5 removed: its first compilation
    failed there with an AttributeError deep inside (seen on a lent H200). Removing the function
    from this numpy reproduces it; ``cuda_unavailable`` names the versions instead, before any
    compilation, so ``"auto"`` runs on the CPU."""
    pytest.importorskip("numba_cuda")
    code = ("import numpy\n"
            "del numpy.row_stack\n"
            "from anant_fast.kernels import target\n"
            "print(target.cuda_unavailable())\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0"})
    assert done.returncode == 0, done.stderr
    assert "target='cuda' cannot compile: numba-cuda" in done.stdout
    assert "does not support numpy" in done.stdout and "row_stack" in done.stdout
