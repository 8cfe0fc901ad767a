"""Small dense linear algebra for per-point matrices (d x d, d small), written out by hand.

``np.linalg`` inside a kernel defeats the on-disk cache and is slow on tiny matrices; these helpers
allocate nothing and work on caller-owned buffers.
"""
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
        d = np.sqrt(s)
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

