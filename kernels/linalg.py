"""Small dense linear algebra for per-point matrices (d x d, d small), written out by hand.

``np.linalg`` inside a kernel defeats the on-disk cache and is slow on tiny matrices; these helpers
allocate nothing and work on caller-owned buffers.
"""
import math

import numpy as np
from numba import njit

from .config import INLINE_JIT, JIT


@njit(**INLINE_JIT)
def cholesky(a, low):
    """Lower Cholesky factor of the SPD matrix ``a`` (d, d) into ``low``; False if not positive definite."""
    n = a.shape[0]
    for j in range(n):
        s = a[j, j]
        for k in range(j):
            s -= low[j, k] * low[j, k]
        if not s > 0.0:  # also catches NaN
            return False
        d = math.sqrt(s)
        low[j, j] = d
        for i in range(j + 1, n):
            t = a[i, j]
            for k in range(j):
                t -= low[i, k] * low[j, k]
            low[i, j] = t / d
        for i in range(j):
            low[i, j] = 0.0
    return True


@njit(**INLINE_JIT)
def spd_inverse(a, out, work):
    """Inverse of the SPD matrix ``a`` (d, d) into ``out``; ``work`` is (d, d) scratch.

    Returns False (and leaves ``out`` undefined) when ``a`` is not positive definite.
    """
    n = a.shape[0]
    if not cholesky(a, work):
        return False
    # work <- L^-1 (lower triangular), in place, column by column
    for j in range(n):
        work[j, j] = 1.0 / work[j, j]
        for i in range(j + 1, n):
            s = 0.0
            for k in range(j, i):
                s -= work[i, k] * work[k, j]
            work[i, j] = s / work[i, i]
    # out <- L^-T L^-1
    for i in range(n):
        for j in range(i + 1):
            s = 0.0
            for k in range(i, n):
                s += work[k, i] * work[k, j]
            out[i, j] = s
            out[j, i] = s
    return True



@njit(**INLINE_JIT)
def cholesky_solve(low, b, out):
    """Solve ``L Lᵀ out = b`` given the lower Cholesky factor ``low`` (d, d); ``out`` may be ``b``."""
    n = low.shape[0]
    for i in range(n):
        s = b[i]
        for k in range(i):
            s -= low[i, k] * out[k]
        out[i] = s / low[i, i]
    for i in range(n - 1, -1, -1):
        s = out[i]
        for k in range(i + 1, n):
            s -= low[k, i] * out[k]
        out[i] = s / low[i, i]


@njit(**JIT)
def solve(a, b, out, work):
    """Solve the general system ``a out = b`` (d, d) by Gaussian elimination with partial pivoting.

    ``work`` is (d, d) scratch; ``a`` and ``b`` are left unchanged. Returns False when ``a`` is
    singular to working precision (a pivot below ``1e-14`` times the largest entry), or not finite.
    """
    n = a.shape[0]
    scale = 0.0
    for i in range(n):
        out[i] = b[i]
        for j in range(n):
            work[i, j] = a[i, j]
            scale = max(scale, abs(a[i, j]))
    if not scale > 0.0 or not np.isfinite(scale):
        return False
    for j in range(n):
        p = j
        for i in range(j + 1, n):
            if abs(work[i, j]) > abs(work[p, j]):
                p = i
        if not abs(work[p, j]) > 1e-14 * scale:
            return False
        if p != j:
            for k in range(n):
                work[j, k], work[p, k] = work[p, k], work[j, k]
            out[j], out[p] = out[p], out[j]
        for i in range(j + 1, n):
            f = work[i, j] / work[j, j]
            for k in range(j, n):
                work[i, k] -= f * work[j, k]
            out[i] -= f * out[j]
    for i in range(n - 1, -1, -1):
        s = out[i]
        for k in range(i + 1, n):
            s -= work[i, k] * out[k]
        out[i] = s / work[i, i]
    return True
