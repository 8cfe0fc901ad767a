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
from numba.extending import overload

from . import batch
from . import metric as km
from .connection import christoffel_point
from .curvature import ricci_point, scalar_point, sectional_point
from .geodesic import EXP
from .linalg import spd_inverse
from .superposition import read_rows, transform, write_rows
from .target import cuda_module, is_device_array, simulated

cuda = cuda_module()
if not simulated():
    km.register_target("cuda")
    overload(transform, target="cuda")(lambda Ur, Ui, T, W, X, q, nb, product, observe, dst: transform)
    overload(read_rows, target="cuda")(lambda src, j0, nb, X: read_rows)
    overload(write_rows, target="cuda")(lambda X, j0, nb, dst, B, streaming: write_rows)

THREADS = 16 if simulated() else 128
"""Threads per block (the simulator runs each thread as a Python thread: keep its blocks small)."""

MAX_GRID_Y = 65535
"""CUDA's limit on the blocks along a grid's y axis."""

MAX_DIM = 8
"""Largest dimension of the geometry kernels on the GPU: a thread's scratch grows as d⁴ doubles
(about 100 KiB at d = 8) in the little local memory a GPU thread has."""


def check_dim(n):
    """Refuse a dimension the GPU geometry kernels do not take (see ``MAX_DIM``)."""
    if n > MAX_DIM:
        raise ValueError(f"target='cuda' computes geometry up to dimension {MAX_DIM} (a GPU thread's "
                         f"scratch grows as d^4), got {n}: use target='cpu'")

CHUNK_POINTS = None
"""Upper bound on the points of one launch for NumPy inputs (None: sized to free device memory)."""

_MEMORY_FRACTION = 0.25


def chunk_points(bytes_per_point):
    """Points per launch for host inputs: ``CHUNK_POINTS`` when set, else what fits in a quarter of
    the device's free memory."""
    if CHUNK_POINTS is not None:
        return max(1, int(CHUNK_POINTS))
    free = 0
    if not simulated():
        try:
            free, _ = cuda.current_context().get_memory_info()
        except NotImplementedError:  # an external memory manager that does not report it
            pass
    return max(1, int(free * _MEMORY_FRACTION) // max(1, bytes_per_point)) if free else 1 << 20


def blocks(n):
    """Blocks of ``THREADS`` threads covering ``n`` threads."""
    return max(1, (n + THREADS - 1) // THREADS)


def device_view(a):
    """A numba.cuda view of the GPU array ``a``, zero copy (numba's own arrays, and the simulator's,
    as they are)."""
    return a if hasattr(a, "copy_to_host") else cuda.as_cuda_array(a)


def as_device(a, name):
    """A numba.cuda view of the GPU array ``a`` (zero copy); float64 and C-contiguous required, since
    converting would copy on the device behind the caller's back."""
    d = device_view(a)
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
    if isinstance(record, km.CustomParams):
        return km.custom_record(record)  # no arrays to move
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
    check_dim(n)
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


# --- superposition: Born-rule collapse (the GPU twin of superposition.collapse_kernel) ------------

def pack(*arrays):
    """Array arguments of a kernel that calls the shared (``@njit``) algorithms on them, as one tuple.
    The simulator passes a tuple through untouched, so it gets the host arrays behind its stand-ins
    (CPU-compiled code cannot take the stand-ins); a GPU gets the device arrays."""
    if simulated():
        return tuple(getattr(a, "_ary", a) for a in arrays)
    return arrays


@functools.lru_cache(maxsize=None)
def _collapse_kernel(S):
    from .superposition import _born, _draws, _probabilities
    S2 = 2 * S   # local array sizes must be constants of the closure

    def kernel(arrays, offset, seed, step, bad):
        psi, streams, index, out = arrays
        j = cuda.grid(1)
        g = cuda.blockIdx.y
        if j >= psi.shape[1]:
            return
        X = cuda.local.array((S2, 1), float64)
        P = cuda.local.array((S, 1), float64)
        total = cuda.local.array(1, float64)
        u = cuda.local.array(1, float64)
        v = cuda.local.array(1, float64)
        acc = cuda.local.array(1, float64)
        below = cuda.local.array(1, np.int64)
        last = cuda.local.array(1, np.int64)
        outcome = cuda.local.array(1, np.int64)
        _draws(seed, step, np.uint64(streams[g]), index, offset, j, 1, u, v)
        _probabilities(psi[g], j, 1, X, P, total)
        _born(P, total, S, 1, u, acc, below, last, outcome)
        out[g, j] = outcome[0]
        if outcome[0] < 0:
            cuda.atomic.add(bad, 0, 1)
    return cuda.jit(kernel)


@functools.lru_cache(maxsize=None)
def _correlate_kernel():
    from .superposition import correlate_pair

    def kernel(arrays, offset, seed, step):
        streams, index, pairs, strengths, out = arrays
        p = cuda.grid(1)
        if p < pairs.shape[0]:
            correlate_pair(streams, index, offset, seed, step, pairs, strengths, out, p)
    return cuda.jit(kernel)


def _floats(d):
    """Interleaved float64 view ``(G, n, 2S)`` of complex128 device amplitudes ``(G, n, S)``."""
    G, n, S = d.shape
    return d.view(np.float64).reshape((G, n, 2 * S))


def _launch_collapse(psi, streams, index, offset, seed, step, out):
    """Outcomes of device ``psi (G, n, S)`` into device ``out (G, n)``; the count of bad entities."""
    G, n, S = psi.shape
    bad = cuda.to_device(np.zeros(1, np.int64))
    kernel = _collapse_kernel(S)
    for g in range(0, G if n else 0, MAX_GRID_Y):  # layers along the grid's y axis, at most 65535
        h = min(G, g + MAX_GRID_Y)
        kernel[(blocks(n), h - g), THREADS](pack(_floats(psi[g:h]), streams[g:h], index, out[g:h]),
                                            np.uint64(offset), np.uint64(seed), np.uint64(step), bad)
    return int(bad.copy_to_host()[0])


def collapse_outcomes(psi, seed, step, streams, index, offset, pairs, strengths, out, fail):
    """``superposition.collapse_outcomes`` on the GPU: ``psi (G, n, S)`` complex128 on the host (sent
    in chunks of entities) or the device; ``out (G, n)`` int64 of the same kind. ``index`` (or None)
    and ``pairs``/``strengths`` (or None) are host arrays. ``fail(out_on_host)`` raises for entities of
    zero or non-finite norm (negative outcomes). The draws are those of the CPU kernel, bit for bit."""
    G, n, S = psi.shape
    if G == 0 or n == 0:
        return out
    seed, step, offset = int(seed), int(step), int(offset)
    streams_d = cuda.to_device(np.ascontiguousarray(streams, np.int64))
    no_index = cuda.to_device(np.empty(0, np.int64))
    if is_device_array(psi):
        index_d = no_index if index is None else cuda.to_device(index)
        if _launch_collapse(psi, streams_d, index_d, offset, seed, step, out):
            fail(out.copy_to_host())
        if pairs is not None and len(pairs):
            _correlate_kernel()[blocks(len(pairs)), THREADS](
                pack(streams_d, index_d, cuda.to_device(pairs), cuda.to_device(strengths), out),
                np.uint64(offset), np.uint64(seed), np.uint64(step))
        return out
    from .superposition import correlate_outcomes
    bad = 0
    width = chunk_points(G * (16 * S + 8))
    for lo in range(0, n, width):
        hi = min(n, lo + width)
        part = cuda.to_device(np.ascontiguousarray(psi[:, lo:hi]))
        part_out = cuda.device_array((G, hi - lo), np.int64)
        keys = (no_index, offset + lo) if index is None else (cuda.to_device(index[lo:hi]), offset)
        bad += _launch_collapse(part, streams_d, keys[0], keys[1], seed, step, part_out)
        out[:, lo:hi] = part_out.copy_to_host()
    if bad:
        fail(out)
    correlate_outcomes(out, seed, step, streams, index, offset, pairs, strengths)
    return out


def as_amplitudes(psi, name="psi"):
    """GPU amplitudes ``(..., S)``: complex128, C-contiguous, ``S >= 1`` (a numba.cuda view)."""
    d = device_view(psi)
    if d.dtype != np.complex128:
        raise TypeError(f"{name} must be complex128 on the GPU, got {d.dtype}")
    if d.ndim == 0 or tuple(d.shape)[-1] == 0:
        raise ValueError(f"{name} must have shape (..., S) with S >= 1, got {d.shape}")
    if not d.is_c_contiguous():
        raise ValueError(f"{name} must be C-contiguous on the GPU")
    return d


def as_output(out, shape, dtype, name="out", inputs=(), in_place_ok=None):
    """A GPU output of ``shape`` and ``dtype``: new when ``out`` is None, else ``out`` checked; it may
    overlap no GPU array of ``inputs`` except ``in_place_ok``, exactly."""
    if out is None:
        return cuda.device_array(shape, dtype)
    if not is_device_array(out):
        raise TypeError(f"{name} must be a GPU array like the input, got {type(out).__name__}")
    d = device_view(out)
    if tuple(d.shape) != tuple(shape) or d.dtype != dtype or not d.is_c_contiguous():
        raise ValueError(f"{name} must be a C-contiguous {np.dtype(dtype)} GPU array of shape "
                         f"{tuple(shape)}, got {d.dtype} {tuple(d.shape)}")
    lo, hi = _span(d)
    for a in inputs:
        if is_device_array(a):
            a_lo, a_hi = _span(device_view(a))
            exact = a is in_place_ok and (a_lo, a_hi) == (lo, hi)
            if lo < a_hi and a_lo < hi and not exact:
                raise ValueError(f"{name} overlaps an input (only an exact in-place output is allowed)")
    return d


def _span(d):
    """``[start, end)`` device addresses of the C-contiguous GPU array ``d``."""
    if simulated():
        start = d._ary.__array_interface__["data"][0]
    else:
        start = d.__cuda_array_interface__["data"][0]
    return start, start + d.size * d.dtype.itemsize


# --- superposition: the fused per-entity update (the GPU twin of superposition.fused_kernel) ------

@functools.lru_cache(maxsize=None)
def _fused_kernel(G, S):
    from .superposition import fused_chunk, padded
    Sp, Sp2 = padded(S), 2 * padded(S)  # local array sizes must be constants of the closure

    def kernel(arrays, renorm, bad):
        psi, Ur, Ui, u_of, lik, lik_of, mix, states, mixed, probs, entropy, coherence, flags = arrays
        j = cuda.grid(1)
        if j >= psi.shape[1]:
            return
        X = cuda.local.array((G, Sp2, 1), float64)
        T = cuda.local.array((Sp2, 1), float64)
        Y = cuda.local.array((Sp2, 1), float64)
        W = cuda.local.array((Sp, 1), float64)
        for c in range(Sp2):   # padding rows: zero states, unit weights
            T[c, 0] = Y[c, 0] = 0.0
            W[c // 2, 0] = 1.0
            for g in range(G):
                X[g, c, 0] = 0.0
        P = cuda.local.array((S, 1), float64)
        M = cuda.local.array((S, 1), float64)
        E = cuda.local.array((S, 1), float64)
        q = cuda.local.array(1, float64)
        l1 = cuda.local.array(1, float64)
        fl = cuda.local.array(1, np.int64)
        if fused_chunk(psi, Ur, Ui, u_of, lik, lik_of, renorm, mix, states, mixed, probs, entropy,
                       coherence, False, (0, 0), flags, j, 1, X, T, Y, W, P, M, E, q, l1, fl, q):
            cuda.atomic.add(bad, 0, 1)
    return cuda.jit(kernel)


def fused_update(psi, Ur, Ui, u_of, lik, lik_of, renorm, mix, outputs, flags):
    """``superposition.fused_kernel`` on the GPU. ``psi (G, n, S)`` complex128 and the ``outputs``
    ``(states, mixed, probs, entropy, coherence)`` (entity axis 1; zero-size when unused) are all
    host or all device arrays; host ones are sent in chunks of entities. The small operands (``Ur``,
    ``Ui``, ``u_of``, ``lik_of``, ``mix``) and ``lik`` are host arrays (``lik`` may be a GPU array
    when ``psi`` is). Raises ``flags (n,)`` (host) to the entities' flags; returns non-zero when it
    flagged any. Without mixing, the layers run one launch each: a
    thread's scratch holds every layer it updates together, and GPU threads have little memory."""
    G, n, S = psi.shape
    if G == 0 or n == 0:
        return 0
    if mix.shape[0] == 0 and G > 1:
        return sum(fused_update(psi[g:g + 1], Ur, Ui, u_of[g:g + 1], lik, lik_of[g:g + 1], renorm,
                                mix, [o[g:g + 1] if o.size else o for o in outputs], flags)
                   for g in range(G))
    small = [cuda.to_device(np.ascontiguousarray(a)) for a in (Ur, Ui, u_of, lik_of, mix)]
    kernel = _fused_kernel(G, S)
    per_entity_lik = lik.shape[1] == n and n > 1
    complex_out = (True, True, False, False, False)

    def launch(psi_d, lik_d, outs, flags_d, count):
        bad = cuda.to_device(np.zeros(1, np.int64))
        if count:
            outs = [_floats(o) if c and o.size else o for o, c in zip(outs, complex_out)]
            Ur_d, Ui_d, u_of_d, lik_of_d, mix_d = small
            kernel[blocks(count), THREADS](
                pack(_floats(psi_d), Ur_d, Ui_d, u_of_d, lik_d, lik_of_d, mix_d, *outs, flags_d),
                bool(renorm), bad)
        return int(bad.copy_to_host()[0])

    if is_device_array(psi):
        flags_d = cuda.to_device(flags)
        outs = [o if is_device_array(o) else cuda.to_device(o) for o in outputs]  # o: unused, empty
        bad = launch(psi, cuda.to_device(lik), outs, flags_d, n)
        if bad:
            np.maximum(flags, flags_d.copy_to_host(), out=flags)
        return bad
    bad = 0
    lik_all = None if per_entity_lik else cuda.to_device(lik)
    bytes_per_entity = 16 * S * (G + sum(o.shape[0] for o in outputs[:3])) + 16 * len(outputs)
    width = chunk_points(bytes_per_entity + (8 * S * lik.shape[0] if per_entity_lik else 0))
    for lo in range(0, n, width):
        hi = min(n, lo + width)
        part = cuda.to_device(np.ascontiguousarray(psi[:, lo:hi]))
        lik_d = cuda.to_device(np.ascontiguousarray(lik[:, lo:hi])) if per_entity_lik else lik_all
        outs = [cuda.device_array((o.shape[0], hi - lo) + o.shape[2:], o.dtype) if o.size
                else cuda.to_device(o) for o in outputs]
        flags_d = cuda.to_device(np.zeros(hi - lo, flags.dtype))
        found = launch(part, lik_d, outs, flags_d, hi - lo)
        for o, d in zip(outputs, outs):
            if o.size:
                o[:, lo:hi] = d.copy_to_host()
        if found:
            np.maximum(flags[lo:hi], flags_d.copy_to_host(), out=flags[lo:hi])
            bad += found
    return bad


# --- Mahalanobis distances (the GPU twin of covariance.mahalanobis_kernel) -------------------------

@functools.lru_cache(maxsize=None)
def _mahalanobis_kernel():
    from .covariance import mahalanobis_row

    def kernel(arrays):
        Y, mean, upper, out = arrays
        m = cuda.grid(1)
        if m < Y.shape[0]:
            out[m] = mahalanobis_row(Y, mean, upper, m)
    return cuda.jit(kernel)


def mahalanobis(Y, mean, upper):
    """``covariance.mahalanobis`` on the GPU: distances ``(M,)`` of ``Y (M, d)`` (NumPy, sent in
    chunks of rows, or a GPU array: then the distances stay on the GPU)."""
    M, d = Y.shape
    kernel = _mahalanobis_kernel()
    mean_d, upper_d = cuda.to_device(mean), cuda.to_device(upper)
    if is_device_array(Y):
        out = cuda.device_array(M)
        if M:
            kernel[blocks(M), THREADS](pack(as_device(Y, "Y"), mean_d, upper_d, out))
        return like(Y, out)
    out = np.empty(M)
    step = chunk_points(8 * (d + 1))
    for lo in range(0, M, step):
        hi = min(M, lo + step)
        part = cuda.device_array(hi - lo)
        kernel[blocks(hi - lo), THREADS](pack(cuda.to_device(Y[lo:hi]), mean_d, upper_d, part))
        part.copy_to_host(out[lo:hi])
    return out


# --- geodesics: fixed-step RK4 (the GPU twin of geodesic.follow_kernel) -------------------------

@functools.lru_cache(maxsize=None)
def _follow_kernel(n):
    from .geodesic import follow_pairs
    size = km.workspace_size(n)

    def kernel(model, arrays, op, steps, rtol, atol, max_steps):
        X, V, W, times, out, status, counts, residual = arrays
        m = cuda.grid(1)
        if m >= X.shape[0]:
            return
        g = cuda.local.array((n, n), float64)
        low = cuda.local.array((n, n), float64)
        A = cuda.local.array((n, n), float64)
        B = cuda.local.array((n, n), float64)
        dg = cuda.local.array((n, n, n), float64)
        d2g = cuda.local.array((n, n, n, n), float64)
        y = cuda.local.array((3, n), float64)
        y_stage = cuda.local.array((3, n), float64)
        K = cuda.local.array((7, 3, n), float64)
        for r in range(3):
            for k in range(n):
                y_stage[r, k] = 0.0
                for s in range(7):
                    K[s, r, k] = 0.0
        x = cuda.local.array(n, float64)
        v = cuda.local.array(n, float64)
        w = cuda.local.array(n, float64)
        b = cuda.local.array(n, float64)
        c = cuda.local.array(n, float64)
        work = km.workspace_views(cuda.local.array(size, float64), n)
        follow_pairs(model, op, X, V, W, times, steps, rtol, atol, max_steps, m, m + 1, out, status,
                     counts, residual, (g, dg, d2g, low, work, y, y_stage, K, x, v, w, b, c, A, B))
    return cuda.jit(kernel)


def follow(record, X, V, W, op, times, steps):
    """``geodesic.follow`` on the GPU with ``steps > 0`` fixed RK4 steps per unit time, on NumPy
    pairs (sent in chunks) or GPU pairs. Returns ``(out, status, counts, residual)``: ``out`` the kind
    of ``X``, the per-pair reports always NumPy (the caller warns about failed pairs)."""
    M, n = X.shape
    check_dim(n)
    T = len(times)
    kernel = _follow_kernel(n)
    model = device_record(record)
    times_d = cuda.to_device(np.ascontiguousarray(times, np.float64))
    reports = (np.empty(M, np.int64), np.zeros(M, np.int64), np.zeros(M))

    def launch(Xd, Vd, Wd, out_d, lo, hi):
        rep = [cuda.to_device(r[lo:hi]) for r in reports]
        kernel[blocks(hi - lo), THREADS](model, pack(Xd, Vd, Wd, times_d, out_d, *rep), op,
                                         int(steps), 1e-10, 1e-12, 1)
        for r, d in zip(reports, rep):
            d.copy_to_host(r[lo:hi])

    width = T if op == EXP else 1
    if is_device_array(X):
        out = cuda.device_array((M, width, n))
        if M:
            Wd = as_device(W, "W") if W is not None else cuda.device_array((0, n))
            launch(as_device(X, "X"), as_device(V, "V"), Wd, out, 0, M)
        return (like(X, out), *reports)
    out = np.empty((M, width, n))
    step = chunk_points(8 * (3 * n + width * n + 3))
    for lo in range(0, M, step):
        hi = min(M, lo + step)
        Wd = cuda.to_device(W[lo:hi]) if W is not None else cuda.device_array((0, n))
        part = cuda.device_array((hi - lo, width, n))
        launch(cuda.to_device(X[lo:hi]), cuda.to_device(V[lo:hi]), Wd, part, lo, hi)
        part.copy_to_host(out[lo:hi])
    return (out, *reports)
