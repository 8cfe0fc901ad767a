"""The CUDA kernels compile for a real GPU (to PTX, for compute capability 8.0) where NVIDIA's
compiler libraries are installed (``anant-fast[cuda]``), even on a machine without a GPU: the
simulator runs the kernels as Python and cannot catch what the CUDA compiler refuses. Where NVIDIA's
PTX assembler is installed too (``ptxas``, from the same extra), the PTX is assembled to machine code
for compute capabilities 8.0 and 9.0, without register spills."""
import functools
import pathlib
import re
import subprocess

import numpy as np
import pytest
from numba import njit

from anant_fast import metrics
from anant_fast.kernels import batch
from anant_fast.kernels import metric as km
from anant_fast.kernels.target import simulated

CC = (8, 0)


def _compiler():
    """True when a trivial kernel compiles to PTX here (numba-cuda, NVVM and NVRTC all present)."""
    if simulated():
        return False
    try:
        from numba import cuda, types
        cuda.compile_ptx(_trivial, (types.float64[:],), cc=CC)
        return True
    except Exception:  # numba-cuda or one of NVIDIA's compiler libraries missing
        return False


def _trivial(a):
    a[0] = 1.0


pytestmark = pytest.mark.skipif(not _compiler(), reason="needs numba-cuda with NVIDIA's compiler "
                                "libraries (anant-fast[cuda]), not the simulator")


ARCHS = ("sm_80", "sm_90")


def _ptxas():
    """The PTX assembler that ``nvidia-cuda-nvcc-cu12`` installs beside the NVVM that wrote the PTX
    (an older one on PATH could refuse its PTX version), or None."""
    try:
        import nvidia.cuda_nvcc
    except ImportError:
        return None
    found = [pathlib.Path(root) / "bin" / "ptxas" for root in nvidia.cuda_nvcc.__path__]
    return next((str(p) for p in found if p.exists()), None)


@functools.lru_cache(maxsize=None)
def _reshape_helpers():
    """PTX functions of numba-cuda's ``reshape_funcs.cu`` (compiled by NVRTC, no driver needed),
    without the module header: numba-cuda links them into every kernel that reshapes an array."""
    from cuda.bindings import nvrtc
    import numba.cuda.dispatcher
    source = (pathlib.Path(numba.cuda.dispatcher.__file__).parent / "reshape_funcs.cu").read_bytes()
    _, program = nvrtc.nvrtcCreateProgram(source, b"reshape_funcs.cu", 0, [], [])
    try:
        options = [b"--gpu-architecture=compute_80", b"-rdc=true"]
        (status,) = nvrtc.nvrtcCompileProgram(program, len(options), options)
        assert status == nvrtc.nvrtcResult.NVRTC_SUCCESS, status
        _, size = nvrtc.nvrtcGetPTXSize(program)
        ptx = b" " * size
        nvrtc.nvrtcGetPTX(program, ptx)
    finally:
        nvrtc.nvrtcDestroyProgram(program)
    lines = ptx.rstrip(b"\0 ").decode().splitlines()
    return "\n".join(line for line in lines if not re.match(r"\s*\.(version|target|address_size)\b", line))


def assert_assembles(ptx, tmp_path):
    """``ptx`` holds a kernel and, where ``ptxas`` is installed, assembles for every arch in
    ``ARCHS`` without register spills (numba-cuda's reshape helpers linked in first, as its linker
    does for a kernel that calls them)."""
    from numba.cuda.dispatcher import reshape_funcs
    assert ".entry" in ptx
    ptxas = _ptxas()
    if ptxas is None:
        return
    helpers = "|".join(reshape_funcs)
    if re.search(rf"\b({helpers})\b", ptx):
        ptx = re.sub(rf"\.extern \.func[^;]*?\b({helpers})\b[^;]*;", "", ptx, flags=re.S)
        ptx = re.sub(r"(\.address_size \d+\n)", lambda m: m.group(1) + _reshape_helpers() + "\n", ptx, count=1)
    source = tmp_path / "kernel.ptx"
    source.write_text(ptx)
    for arch in ARCHS:
        done = subprocess.run([ptxas, f"-arch={arch}", "-v", str(source), "-o", str(tmp_path / "kernel.cubin")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        spills = [int(n) for n in re.findall(r"(\d+) bytes spill (?:stores|loads)", done.stderr)]
        assert spills and not any(spills), done.stderr[-2000:]


@pytest.fixture
def compile_ptx(monkeypatch):
    """``numba.cuda.compile_ptx`` of a kernel with the model record and 2-d float64 arrays as
    arguments. Device functions (the shared algorithms) are compiled for the current device's compute
    capability; without a device, pretend one of ``CC``."""
    from numba import cuda, types, typeof
    import numba.cuda.dispatcher as dispatcher

    class Device:
        compute_capability = CC
    if not cuda.is_available():
        monkeypatch.setattr(dispatcher, "get_current_device", lambda: Device())

    def compile(kernel, record, *arrays):
        """PTX of ``kernel(record, *arrays)``; ``arrays``: (dtype, ndim) of the array arguments."""
        fields = [types.Array(typeof(f).dtype, f.ndim, "C") if isinstance(f, np.ndarray) else typeof(f)
                  for f in record]
        args = [types.Array(typeof(dtype(0)), ndim, "C") for dtype, ndim in arrays]
        ptx, _ = cuda.compile_ptx(kernel.py_func, (types.NamedTuple(fields, type(record)), *args), cc=CC)
        return ptx
    return compile


@njit
def _conformal(x, out):
    out[0, 0] = out[1, 1] = 1.0 + x[0] * x[0]
    out[0, 1] = out[1, 0] = 0.0


@pytest.mark.parametrize("model", [metrics.Hyperbolic(3),
                                   metrics.LocalCovariance(np.random.default_rng(0).normal(size=(50, 2)), 1.0),
                                   metrics.Custom(_conformal, 2)],
                         ids=repr)
def test_curvature_kernels_compile_for_the_gpu(model, compile_ptx, tmp_path):
    from anant_fast.kernels import gpu
    record = model._params
    if isinstance(record, km.CustomParams):  # the GPU takes it without the function (see custom_record)
        record = km.custom_record(record)
    for quantity in (batch.SCALAR, batch.SECTIONAL):
        kernel = gpu._pointwise_kernel(quantity, model.dim)
        assert_assembles(compile_ptx(kernel, record, *[(np.float64, 2)] * 4), tmp_path)
    assert_assembles(compile_ptx(gpu._check_kernel(model.dim), record, (np.float64, 2), (np.int64, 1)),
                     tmp_path)


def _array(dtype, ndim):
    from numba import types, typeof
    return types.Array(typeof(dtype(0)), ndim, "C")


def test_collapse_kernels_compile_for_the_gpu(compile_ptx, tmp_path):
    from numba import cuda, types
    from anant_fast.kernels import gpu
    ints, u64 = _array(np.int64, 1), types.uint64
    arrays = types.Tuple([_array(np.float64, 3), ints, ints, _array(np.int64, 2)])
    ptx, _ = cuda.compile_ptx(gpu._collapse_kernel(8).py_func, (arrays, u64, u64, u64, ints), cc=CC)
    assert "fma.rn.f64" in ptx  # the probabilities are fused explicitly, as on the CPU
    assert_assembles(ptx, tmp_path)
    arrays = types.Tuple([ints, ints, _array(np.int64, 2), _array(np.float64, 1), _array(np.int64, 2)])
    ptx, _ = cuda.compile_ptx(gpu._correlate_kernel().py_func, (arrays, u64, u64, u64), cc=CC)
    assert_assembles(ptx, tmp_path)


def test_fused_update_kernel_compiles_for_the_gpu(compile_ptx, tmp_path):
    from numba import cuda, types
    from anant_fast.kernels import gpu
    f3, f2, i1 = _array(np.float64, 3), _array(np.float64, 2), _array(np.int64, 1)
    arrays = types.Tuple([f3, f3, f3, i1, f3, i1, f2, f3, f3, f3, f2, f2, _array(np.uint8, 1)])
    ptx, _ = cuda.compile_ptx(gpu._fused_kernel(4, 8).py_func, (arrays, types.boolean, i1), cc=CC)
    assert_assembles(ptx, tmp_path)


def test_mahalanobis_kernel_compiles_for_the_gpu(compile_ptx, tmp_path):
    from numba import cuda, types
    from anant_fast.kernels import gpu
    f1, f2 = _array(np.float64, 1), _array(np.float64, 2)
    ptx, _ = cuda.compile_ptx(gpu._mahalanobis_kernel().py_func, (types.Tuple([f2, f1, f2, f1]),), cc=CC)
    assert_assembles(ptx, tmp_path)


@pytest.mark.parametrize("model", [metrics.Sphere(2),
                                   metrics.LocalDiagonal(np.random.default_rng(1).normal(size=(50, 2)), 1.0)],
                         ids=repr)
def test_geodesic_kernel_compiles_for_the_gpu(model, compile_ptx, tmp_path):
    from numba import cuda, types, typeof
    from anant_fast.kernels import gpu
    f1, f2, f3, i1 = (_array(np.float64, 1), _array(np.float64, 2), _array(np.float64, 3),
                      _array(np.int64, 1))
    record = types.NamedTuple([types.Array(typeof(f).dtype, f.ndim, "C") if isinstance(f, np.ndarray)
                               else typeof(f) for f in model._params], type(model._params))
    arrays = types.Tuple([f2, f2, f2, f1, f3, i1, i1, f1])
    ptx, _ = cuda.compile_ptx(gpu._follow_kernel(2).py_func, (record, arrays, types.int64, types.int64,
                              types.float64, types.float64, types.int64), cc=CC)
    assert_assembles(ptx, tmp_path)
