"""Global covariance (the Mahalanobis metric): blocked weighted moments and Mahalanobis distances.

Moments are computed per fixed-size block of rows and merged exactly (Chan et al.): the result does not
depend on the thread count. The d x d work per row (co-moments, the factor product) is BLAS on
cache-resident sub-blocks of rows, about twice as fast as the hand-written loops it replaced.
"""
import math

import numpy as np
from numba import njit, prange

from .config import FMA_JIT, INLINE_JIT, JIT, block_bounds
from .linalg import blas_rows, matmul_into
from .validation import readonly

ROWS_PER_BLOCK = 2048


@njit(**INLINE_JIT)
def centre_rows(X, lo, hi, centre, D):
    """``D[r, i] = X[lo + r, i] − centre[i]`` for the rows ``[lo, hi)``."""
    for r in range(hi - lo):
        for i in range(X.shape[1]):
            D[r, i] = X[lo + r, i] - centre[i]


@njit(**FMA_JIT)
def _block_moments(X, w, first, n_blocks, weight, mean, comoment):
    """Per block ``b = first + k`` (``k < len(weight)``) of the ``n_blocks`` row blocks of ``X``: total
    weight, weighted mean and co-moment ``Σ w (x − mean_b)(x − mean_b)ᵀ`` into row ``k`` of the
    outputs, from sums shifted by the block's first row (the shift keeps the cancellation in
    ``S2 − S1 S1ᵀ / W`` to the block's own spread). ``S2 = (w·D)ᵀ D`` is a BLAS product over
    sub-blocks of rows, summed in order. ``w`` of length 0: unit weights."""
    N, d = X.shape
    unweighted = w.shape[0] == 0
    step = blas_rows(d * d, ROWS_PER_BLOCK)
    for k in prange(weight.shape[0]):
        lo, hi = block_bounds(first + k, n_blocks, N)
        shift = X[lo]
        S1 = mean[k]
        S1[:] = 0.0
        S2 = comoment[k]
        S2[:, :] = 0.0
        D = np.empty((step, d))                          # shifted rows
        WD = D if unweighted else np.empty((step, d))  # weighted shifted rows
        ones = np.ones(step if unweighted else 0)
        s1, P = np.empty(d), np.empty((d, d))
        W = 0.0
        for a in range(lo, hi, step):
            n = min(hi, a + step) - a
            centre_rows(X, a, a + n, shift, D)
            wa = ones[:n] if unweighted else w[a:a + n]
            if not unweighted:
                for r in range(n):
                    for i in range(d):
                        WD[r, i] = wa[r] * D[r, i]
            W += wa.sum()
            np.dot(wa, D[:n], s1)
            S1 += s1
            np.dot(WD[:n].T, D[:n], P)
            S2 += P
        weight[k] = W
        inv_w = 1.0 / W if W > 0.0 else 0.0
        for i in range(d):
            for j in range(d):
                S2[i, j] -= S1[i] * S1[j] * inv_w
        for i in range(d):
            S1[i] = shift[i] + S1[i] * inv_w


def moment_blocks(N):
    """Number of row blocks of ``N`` rows: the fixed granularity of the moments, whatever the
    thread or shard count (which keeps every split of the work bitwise identical)."""
    return max(1, -(-N // ROWS_PER_BLOCK))


def block_moments(X, w, first=0, last=None):
    """Moments of the row blocks ``[first, last)`` (default: all) of ``X (N, d)`` with weights ``w``
    (``(N,)``, or empty for unit weights): ``(weight (B,), means (B, d), comoments (B, d, d))``."""
    N, d = X.shape
    n_blocks = moment_blocks(N)
    last = n_blocks if last is None else last
    weight = np.empty(last - first)
    means = np.empty((last - first, d))
    comoments = np.empty((last - first, d, d))
    _block_moments(readonly(X), readonly(w), first, n_blocks, weight, means, comoments)
    return weight, means, comoments


def merge_moments(weight, means, comoments):
    """Merge block moments exactly (Chan et al.), in block order: weighted mean ``(d,)`` and
    covariance ``Σ w (x − μ)(x − μ)ᵀ / Σ w`` ``(d, d)``. A ValueError if they are not finite (data
    too large in magnitude, or not finite themselves)."""
    total = weight.sum()
    mean = weight @ means / total
    spread = means - mean
    C = comoments.sum(axis=0) + np.einsum("b,bi,bj->ij", weight, spread, spread)
    C = 0.5 * (C + C.T) / total
    if not (np.isfinite(mean).all() and np.isfinite(C).all()):
        raise ValueError("X is too large in magnitude: its covariance overflows float64")
    return mean, C


def weighted_covariance(X, w):
    """Weighted mean ``(d,)`` and covariance ``(d, d)`` of ``X (N, d)``; ``w (N,)`` non-negative
    weights with positive sum, or an empty array for unit weights."""
    return merge_moments(*block_moments(X, w))


def mahalanobis_factor(covariance, eps):
    """The metric ``G = (C + eps·I)⁻¹`` (symmetrised) and its Cholesky factor ``L`` (``G = L Lᵀ``)."""
    G = np.linalg.inv(covariance + eps * np.eye(len(covariance)))
    G = 0.5 * (G + G.T)
    return G, np.linalg.cholesky(G)


@njit(**FMA_JIT)
def mahalanobis_kernel(Y, mean, lower, n_blocks, out):
    """``out[m] = |(Y[m] − mean) L|`` with ``L`` = ``lower``, the Cholesky factor of the metric
    ``G = L Lᵀ``: the Mahalanobis distance ``sqrt((y − μ)ᵀ G (y − μ))``."""
    M, d = Y.shape
    step = blas_rows(d * d, ROWS_PER_BLOCK)
    for b in prange(n_blocks):
        lo, hi = block_bounds(b, n_blocks, M)
        D, P = np.empty((step, d)), np.empty((step, d))
        for a in range(lo, hi, step):
            n = min(hi, a + step) - a
            mahalanobis_rows(Y, mean, lower, a, a + n, D[:n], P[:n], out)


@njit(**INLINE_JIT)
def mahalanobis_rows(Y, mean, lower, lo, hi, D, P, out):
    """``mahalanobis_kernel`` on the rows ``[lo, hi)``; scratch ``D`` and ``P`` ``(hi − lo, d)``.
    The product ``P = D L`` is BLAS on the CPU and loops in device code (``linalg.matmul_into``)."""
    centre_rows(Y, lo, hi, mean, D)
    matmul_into(D, lower, P)
    for r in range(hi - lo):
        s = 0.0
        for i in range(Y.shape[1]):
            s += P[r, i] * P[r, i]
        out[lo + r] = math.sqrt(s)


def mahalanobis(Y, mean, lower):
    """Mahalanobis distances ``(M,)`` of prepared ``Y (M, d)`` (see ``mahalanobis_kernel``)."""
    out = np.empty(len(Y))
    mahalanobis_kernel(readonly(Y), readonly(mean), readonly(lower), moment_blocks(len(Y)), out)
    return out


def zscore_outliers(m, z):
    """Indices where ``|m − mean(m)| / std(m) > z`` (Anant's ``detect_property_outliers``); none
    when every ``m`` is equal (or there is none). The arithmetic of ``np.abs(m − m.mean()) >
    z * m.std()``, in one compiled pass instead of three NumPy temporaries."""
    std = m.std() if m.size else 0.0
    if std == 0:
        return np.empty(0, dtype=np.int64)
    return _beyond(readonly(m), m.mean(), z * std)


@njit(**JIT)
def _beyond(values, centre, limit):
    """Indices ``i``, in order, where ``|values[i] − centre| > limit``."""
    out = np.empty(values.shape[0], np.int64)
    k = 0
    for i in range(values.shape[0]):
        if abs(values[i] - centre) > limit:
            out[k] = i
            k += 1
    return out[:k].copy()
