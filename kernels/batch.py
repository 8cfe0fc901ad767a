"""Batched point-wise geometry: one parallel kernel evaluates any point-wise quantity of any metric source.

One driver serves every quantity (metric and derivatives, Christoffel, Riemann, Ricci, scalar,
sectional): per model family it is compiled once, and cached, instead of once per quantity, which
keeps first-call compile time down. Each row of the ``(M, K)`` output holds one point's result.
The public array functions (``christoffel(g, dg)``, ...) run the same driver on a ``Tabulated`` source.
"""
import numpy as np
from numba import njit, prange

from .config import JIT, PARALLEL_JIT, block_bounds, block_count
from .connection import christoffel_derivative_point, christoffel_point, point_buffers
from .curvature import ricci_point, riemann_point, scalar_point, sectional_point
from .linalg import spd_inverse
from .metric import load_metric, point_dim, run, tabulated_source
from .validation import as_plane, readonly

METRIC, CHRISTOFFEL, RIEMANN, RICCI, SCALAR, SECTIONAL = range(6)
_TENSOR_RANK = {CHRISTOFFEL: 3, RIEMANN: 4, RICCI: 2, SCALAR: 0, SECTIONAL: 0}
GPU_QUANTITIES = (CHRISTOFFEL, RICCI, SCALAR, SECTIONAL)
"""The quantities ``kernels.gpu.evaluate`` computes on a CUDA target."""


@njit(**PARALLEL_JIT)
def pointwise_kernel(source, Q, U, V, quantity, order, n_blocks, out):
    """Write ``quantity`` at every point ``m`` of ``Q (M, d)`` into the row ``out[m]``.

    The metric is evaluated to ``order`` (1 suffices for ``CHRISTOFFEL``, curvature needs 2).
    ``METRIC`` writes ``g``, then ``dg`` and ``d2g`` up to ``order``, flattened and concatenated;
    ``SECTIONAL`` uses the planes ``U[m], V[m]`` (unused otherwise, may be empty). A point whose
    metric is not positive definite gets a NaN row.
    """
    M = Q.shape[0]
    n = point_dim(source, Q)
    for blk in prange(n_blocks):
        buffers = point_buffers(n)
        g, ginv, dg, d2g, gamma, chol, work = buffers
        dgamma = np.empty((n, n, n, n))
        R = np.empty((n, n, n, n))
        P = np.empty((n, n, n))
        Y = np.empty((n, n, n))
        ric = np.empty((n, n))
        v1 = np.empty(n)
        v2 = np.empty(n)
        # flat views, made once per block (a reshape per point costs ~100 ns)
        g_flat, dg_flat, d2g_flat = g.reshape(n * n), dg.reshape(n ** 3), d2g.reshape(n ** 4)
        gamma_flat, R_flat, ric_flat = gamma.reshape(n ** 3), R.reshape(n ** 4), ric.reshape(n * n)
        lo, hi = block_bounds(blk, n_blocks, M)
        for m in range(lo, hi):
            row = out[m]
            load_metric(source, Q, m, order, g, dg, d2g, work)
            if quantity == METRIC:
                _write(row, 0, g_flat)
                if order >= 1:
                    _write(row, n * n, dg_flat)
                if order >= 2:
                    _write(row, n * n + n ** 3, d2g_flat)
                continue
            if not spd_inverse(g, ginv, chol):
                row[:] = np.nan
                continue
            christoffel_point(ginv, dg, gamma)
            if quantity == CHRISTOFFEL:
                _write(row, 0, gamma_flat)
            elif quantity == RIEMANN:
                christoffel_derivative_point(ginv, dg, d2g, gamma, dgamma)
                riemann_point(dgamma, gamma, R)
                _write(row, 0, R_flat)
            elif quantity == RICCI:
                ricci_point(ginv, dg, d2g, gamma, P, v1, ric)
                _write(row, 0, ric_flat)
            elif quantity == SCALAR:
                row[0] = scalar_point(ginv, dg, d2g, gamma, P, Y)
            else:
                row[0] = sectional_point(g, dg, d2g, gamma, U[m], V[m], v1, v2)


@njit(**JIT)
def _write(row, offset, flat):
    for i in range(flat.size):
        row[offset + i] = flat[i]


def evaluate(source, Q, quantity, U=None, V=None, order=2):
    """Run the driver on prepared ``Q (M, d)``; returns the result shaped ``(M,) + (d,) * rank``
    (for ``METRIC`` a tuple ``(g, dg, d2g)`` up to ``order``)."""
    M, n = Q.shape
    empty = readonly(np.empty((0, n)))
    if quantity == METRIC:
        width = sum(n ** r for r in (2, 3, 4)[:order + 1])
    else:
        width = n ** _TENSOR_RANK[quantity]
        order = 1 if quantity == CHRISTOFFEL else 2
    out = np.empty((M, max(width, 1)))
    run(pointwise_kernel, source, readonly(Q), empty if U is None else readonly(U),
        empty if V is None else readonly(V),
        quantity, order, block_count(M), out)
    if quantity != METRIC:
        return out.reshape((M,) + (n,) * _TENSOR_RANK[quantity])
    parts, start = [], 0
    for r in (2, 3, 4)[:order + 1]:
        parts.append(np.ascontiguousarray(out[:, start:start + n ** r]).reshape((M,) + (n,) * r))
        start += n ** r
    return tuple(parts)


def _on_arrays(quantity, g, dg, d2g=None, u=None, v=None):
    source, Q, single = tabulated_source(g, dg, d2g)
    U = V = None
    if quantity == SECTIONAL:
        U, V = as_plane(u, v, *Q.shape, single)
    out = evaluate(source, Q, quantity, U, V)
    return out[0] if single else out


def christoffel(g, dg):
    """Christoffel symbols ``Γ^k_ij`` from ``g (M, d, d)`` and ``dg (M, d, d, d)``: ``(M, d, d, d)``.

    One point without the leading axis gives ``(d, d, d)``; likewise for every array function.
    """
    return _on_arrays(CHRISTOFFEL, g, dg)


def riemann(g, dg, d2g):
    """Riemann tensor ``R[m, a, b, c, e] = R^a_bce``: ``(M, d, d, d, d)`` from ``g``, ``dg``, ``d2g``."""
    return _on_arrays(RIEMANN, g, dg, d2g)


def ricci(g, dg, d2g):
    """Ricci tensor ``Ric_be = R^a_bae``: ``(M, d, d)``."""
    return _on_arrays(RICCI, g, dg, d2g)


def scalar_curvature(g, dg, d2g):
    """Scalar curvature ``g^{be} Ric_be``: ``(M,)``; never forms the Riemann tensor."""
    return _on_arrays(SCALAR, g, dg, d2g)


def sectional_curvature(g, dg, d2g, u, v):
    """Sectional curvature of the planes spanned by ``u``, ``v`` (each ``(M, d)``): ``(M,)``."""
    return _on_arrays(SECTIONAL, g, dg, d2g, u, v)
