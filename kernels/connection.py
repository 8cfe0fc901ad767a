"""Levi-Civita connection: Christoffel symbols and their derivatives, point-wise and batched.

``gamma[k, i, j] = Γ^k_ij = ½ g^{kl}(∂_i g_jl + ∂_j g_il − ∂_l g_ij)`` (second kind).
The point functions work on caller-owned buffers; ``point_buffers`` makes one thread's set.
"""
import numpy as np
from numba import njit

from .config import INLINE_JIT, JIT
from .metric import workspace


@njit(**INLINE_JIT)
def point_buffers(n):
    """One thread's per-point buffers: ``(g, ginv, dg, d2g, gamma, chol, work)``."""
    return (np.empty((n, n)), np.empty((n, n)), np.empty((n, n, n)), np.empty((n, n, n, n)),
            np.empty((n, n, n)), np.empty((n, n)), workspace(n))


@njit(**INLINE_JIT)
def christoffel_point(ginv, dg, gamma):
    """``gamma[k, i, j] = Γ^k_ij`` from ``ginv (d, d)`` and ``dg (d, d, d)``."""
    n = ginv.shape[0]
    for i in range(n):
        for j in range(i, n):
            for k in range(n):
                s = 0.0
                for l in range(n):
                    s += ginv[k, l] * (dg[i, j, l] + dg[j, i, l] - dg[l, i, j])
                gamma[k, i, j] = 0.5 * s
                gamma[k, j, i] = 0.5 * s


@njit(**JIT)
def christoffel_derivative_point(ginv, dg, d2g, gamma, dgamma):
    """``dgamma[c, a, e, b] = ∂_c Γ^a_eb = g^{al}(∂_c Γ_{l,eb} − ∂_c g_lq Γ^q_eb)``."""
    n = ginv.shape[0]
    for c in range(n):
        for e in range(n):
            for b in range(e, n):
                for a in range(n):
                    s = 0.0
                    for l in range(n):
                        t = 0.5 * (d2g[c, e, b, l] + d2g[c, b, e, l] - d2g[c, l, e, b])
                        for q in range(n):
                            t -= dg[c, l, q] * gamma[q, e, b]
                        s += ginv[a, l] * t
                    dgamma[c, a, e, b] = s
                    dgamma[c, a, b, e] = s
