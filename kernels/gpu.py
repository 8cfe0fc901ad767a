"""CUDA kernels: the CPU kernels' point algorithms and model evaluators, compiled as device functions.

Each CUDA kernel is a thin driver, one thread per point (or entity), around the very functions the
CPU kernels call per point: ``metric_at`` (dispatched on the model record's type, registered for the
``"cuda"`` target by ``metric.register_target``), ``spd_inverse``, ``christoffel_point``,
``scalar_point``, ... A thread copies its inputs into local arrays, runs the shared algorithms on
them and copies its result out. Under the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) the same
drivers run as Python and call the shared algorithms compiled for the CPU, with host arrays.

Drivers are made per dimension (local arrays need sizes known when compiling) by cached factories:
CUDA kernels are compiled once per process and per argument types, not cached on disk.

Inputs may be NumPy arrays or GPU arrays (numba.cuda device arrays, or anything with
``__cuda_array_interface__``, e.g. CuPy); results come back as the same kind. NumPy inputs are
processed in chunks of at most ``chunk_points`` points, sized to the device's free memory.
This module imports only when a CUDA target is used (``target.resolve``).
"""
import functools
import math
from collections import OrderedDict

import numpy as np
from numba import float64

from . import batch
from . import metric as km
from .connection import christoffel_point
from .curvature import ricci_point, scalar_point, sectional_point
from .linalg import spd_inverse
from .target import cuda_module, is_device_array, simulated

cuda = cuda_module()
if not simulated():
    km.register_target("cuda")

THREADS = 16 if simulated() else 128
"""Threads per block (the simulator runs each thread as a Python thread: keep its blocks small)."""

CHUNK_POINTS = None
"""Upper bound on the points of one launch for NumPy inputs (None: sized to free device memory)."""

_MEMORY_FRACTION = 0.25


def chunk_points(bytes_per_point):
    """Points per launch for host inputs: ``CHUNK_POINTS`` when set, else what fits in a quarter of
    the device's free memory."""
    if CHUNK_POINTS is not None:
        return max(1, int(CHUNK_POINTS))
    if simulated():
        return 1 << 20
    free, _ = cuda.current_context().get_memory_info()
    return max(1, int(free * _MEMORY_FRACTION) // bytes_per_point)


def blocks(n):
    """Blocks of ``THREADS`` threads covering ``n`` threads."""
    return max(1, (n + THREADS - 1) // THREADS)


def as_device(a, name):
    """A numba.cuda view of the GPU array ``a`` (zero copy); float64 and C-contiguous required, since
    converting would copy on the device behind the caller's back."""
    d = a if hasattr(a, "copy_to_host") else cuda.as_cuda_array(a)  # numba's own (or simulated)
    if d.dtype != np.float64:
        raise TypeError(f"{name} must be float64 on the GPU, got {d.dtype}")
    if not d.is_c_contiguous():
        raise ValueError(f"{name} must be C-contiguous on the GPU")
    return d


def like(reference, out):
    """``out`` (a numba.cuda device array) as the kind of GPU array ``reference`` is: CuPy for CuPy."""
    if type(reference).__module__.split(".")[0] == "cupy":
        import cupy
        return cupy.asarray(out)
    return out


_RECORDS = OrderedDict()
_RECORDS_KEPT = 8


def device_record(record):
    """``record`` with its arrays on the device, copied once per record (the last few are kept).
    Under the simulator the record itself: its drivers hand host arrays to CPU-compiled code."""
    if simulated():
        return record
    key = id(record)
    hit = _RECORDS.get(key)
    if hit is not None and hit[0] is record:
        _RECORDS.move_to_end(key)
        return hit[1]
    moved = type(record)(*(cuda.to_device(f) if isinstance(f, np.ndarray) else f for f in record))
    _RECORDS[key] = (record, moved)
    while len(_RECORDS) > _RECORDS_KEPT:
        _RECORDS.popitem(last=False)
    return moved


# --- point-wise geometry (the GPU twin of batch.pointwise_kernel) -------------------------------

@functools.lru_cache(maxsize=None)
def _pointwise_kernel(quantity, n):
    order = 1 if quantity == batch.CHRISTOFFEL else 2
    n3 = n ** 3
    size = km.workspace_size(n)

    def kernel(model, Q, U, V, out):
        m = cuda.grid(1)
        if m >= Q.shape[0]:
            return
        x = cuda.local.array(n, float64)
        u = cuda.local.array(n, float64)
        v = cuda.local.array(n, float64)
        g = cuda.local.array((n, n), float64)
        ginv = cuda.local.array((n, n), float64)
        chol = cuda.local.array((n, n), float64)
        ric = cuda.local.array((n, n), float64)
        dg = cuda.local.array((n, n, n), float64)
        P = cuda.local.array((n, n, n), float64)
        Y = cuda.local.array((n, n, n), float64)
        d2g = cuda.local.array((n, n, n, n), float64)
        gamma_flat = cuda.local.array(n3, float64)
        gamma = gamma_flat.reshape((n, n, n))
        work = km.workspace_views(cuda.local.array(size, float64), n)
        for i in range(n):
            x[i] = Q[m, i]
        km.metric_at(model, x, order, g, dg, d2g, work)
        if not spd_inverse(g, ginv, chol):
            for i in range(out.shape[1]):
                out[m, i] = np.nan
            return
        christoffel_point(ginv, dg, gamma)
        if quantity == batch.CHRISTOFFEL:
            for i in range(n3):
                out[m, i] = gamma_flat[i]
        elif quantity == batch.RICCI:
            ricci_point(ginv, dg, d2g, gamma, P, u, ric)
            for i in range(n):
                for j in range(n):
                    out[m, i * n + j] = ric[i, j]
        elif quantity == batch.SCALAR:
            out[m, 0] = scalar_point(ginv, dg, d2g, gamma, P, Y)
        else:
            for i in range(n):
                u[i] = U[m, i]
                v[i] = V[m, i]
            out[m, 0] = sectional_point(g, dg, d2g, gamma, u, v, P[0, 0], P[0, 1])
    return cuda.jit(kernel)


def evaluate(record, Q, quantity, U=None, V=None):
    """``batch.evaluate`` on the GPU for the quantities of ``batch.GPU_QUANTITIES``: ``Q (M, n)`` (``U``, ``V``
    for ``SECTIONAL``) prepared on the host, or GPU arrays; the result ``(M,) + (n,) * rank`` comes
    back as the kind of ``Q``. A point whose metric is not positive definite gets NaN."""
    if quantity not in batch.GPU_QUANTITIES:
        raise ValueError(f"quantity {quantity} has no CUDA kernel")
    M, n = Q.shape
    rank = batch._TENSOR_RANK[quantity]
    width = n ** rank
    kernel = _pointwise_kernel(quantity, n)
    model = device_record(record)
    shape = (M,) + (n,) * rank
    if is_device_array(Q):
        Qd = as_device(Q, "Q")
        Ud, Vd = (Qd, Qd) if U is None else (as_device(U, "U"), as_device(V, "V"))
        out = cuda.device_array((M, width))
        if M:
            kernel[blocks(M), THREADS](model, Qd, Ud, Vd, out)
        return like(Q, out.reshape(shape))
    out = np.empty((M, width))
    step = chunk_points(8 * (3 * n + width))
    for lo in range(0, M, step):
        hi = min(M, lo + step)
        Qd = cuda.to_device(Q[lo:hi])
        Ud, Vd = (Qd, Qd) if U is None else (cuda.to_device(U[lo:hi]), cuda.to_device(V[lo:hi]))
        od = cuda.device_array((hi - lo, width))
        kernel[blocks(hi - lo), THREADS](model, Qd, Ud, Vd, od)
        od.copy_to_host(out[lo:hi])
    return out.reshape(shape)


# --- validation of GPU inputs, on the GPU --------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _check_kernel(n):
    def kernel(model, Q, first):
        m = cuda.grid(1)
        if m >= Q.shape[0]:
            return
        x = cuda.local.array(n, float64)
        finite = True
        for i in range(n):
            x[i] = Q[m, i]
            finite = finite and math.isfinite(x[i])
        if not finite:
            cuda.atomic.min(first, 0, m)
        elif not km.in_chart(model, x):
            cuda.atomic.min(first, 1, m)
    return cuda.jit(kernel)


def check_points(record, Q, name, chart):
    """Refuse GPU points ``Q (M, n)`` holding NaN or inf, or lying outside the chart of ``record``
    (``chart`` names it in the message), with a ValueError naming the first such point; one pass on
    the device, before any other launch."""
    M, n = Q.shape
    first = cuda.to_device(np.array([M, M], np.int64))
    if M:
        _check_kernel(n)[blocks(M), THREADS](device_record(record), Q, first)
    bad_value, outside = (int(i) for i in first.copy_to_host())
    if bad_value < M:
        raise ValueError(f"{name} contains NaN or inf (first at point {bad_value})")
    if outside < M:
        raise ValueError(f"{name}[{outside}] lies outside the chart of {chart}")
