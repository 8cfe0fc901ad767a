"""Global covariance (the Mahalanobis metric): blocked weighted moments and Mahalanobis distances.

Moments are computed per fixed-size block of rows and merged exactly (Chan et al.): the result does
not depend on the thread count or on how the blocks are split into shards. Their d x d work per row
is BLAS on cache-resident sub-blocks, about twice as fast as the loops it replaced. The distances
stay hand-written loops: a BLAS product's rounding of a row depends on the rows it is batched with,
and a row's distance must not depend on the batch it is in.
"""
import math

import numpy as np
from numba import njit, prange

from .config import FMA_JIT, INLINE_JIT, JIT, PARALLEL_JIT, block_bounds
from .linalg import blas_rows
from .validation import readonly

ROWS_PER_BLOCK = 2048

ROWS_PER_PASS = 256
"""Rows of a block that the distance kernel takes at a time: their centred, transposed copy
(``d x 256`` doubles, 32 KiB at d = 16; 36 KiB of scratch in all) stays in the L1 data cache of
recent x86 cores (48 KiB here) across the sweeps over it (measured at 10^6 x 16: about 10% faster
than sweeping the whole block)."""


@njit(**JIT)
def _centered_transpose(X, lo, hi, mu, Dt):
    """``Dt[i, r] = X[lo + r, i] − mu[i]``: a block of rows, centred and transposed so that the
    per-block products below run over contiguous rows (SIMD)."""
    for r in range(hi - lo):
        for i in range(X.shape[1]):
            Dt[i, r] = X[lo + r, i] - mu[i]


@njit(**PARALLEL_JIT)
def _block_moments(X, w, first, n_blocks, weight, mean, comoment):
    """Per block ``b = first + k`` (``k < len(weight)``) of the ``n_blocks`` row blocks of ``X``: total
    weight, weighted mean and co-moment ``Σ w (x − mean_b)(x − mean_b)ᵀ`` into row ``k`` of the
    outputs, from sums shifted by the block's first row (the shift keeps the cancellation in
    ``S2 − S1 S1ᵀ / W`` to the block's own spread). ``S1 = wᵀD`` is summed while the rows are
    shifted; ``S2 = (w·D)ᵀD`` is BLAS products over sub-blocks of the shifted rows ``D``, summed in
    order: the blocks are fixed by ``n_blocks``, so every split of the work gives the same bits.
    ``w`` of length 0: unit weights."""
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
        P = np.empty((d, d))
        W = 0.0
        for a in range(lo, hi, step):
            n = min(hi, a + step) - a
            for r in range(n):
                wr = 1.0 if unweighted else w[a + r]
                W += wr
                for i in range(d):
                    v = X[a + r, i] - shift[i]
                    D[r, i] = v
                    S1[i] += wr * v
                if not unweighted:
                    for i in range(d):
                        WD[r, i] = wr * D[r, i]
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
    """The metric ``G = (C + eps·I)⁻¹`` (symmetrised) and ``Lᵀ`` of its Cholesky factor ``G = L Lᵀ``."""
    G = np.linalg.inv(covariance + eps * np.eye(len(covariance)))
    G = 0.5 * (G + G.T)
    return G, np.ascontiguousarray(np.linalg.cholesky(G).T)


@njit(**FMA_JIT)
def mahalanobis_kernel(Y, mean, upper, n_blocks, out):
    """``out[m] = |upper (Y[m] − mean)|`` with ``upper = Lᵀ`` from the Cholesky factorisation of the
    metric ``G = L Lᵀ``: the Mahalanobis distance ``sqrt((y − μ)ᵀ G (y − μ))``."""
    M, d = Y.shape
    for b in prange(n_blocks):
        lo, hi = block_bounds(b, n_blocks, M)
        Dt, acc, row = np.empty((d, ROWS_PER_PASS)), np.empty(ROWS_PER_PASS), np.empty(ROWS_PER_PASS)
        for a in range(lo, hi, ROWS_PER_PASS):
            mahalanobis_rows(Y, mean, upper, a, min(hi, a + ROWS_PER_PASS), Dt, acc, row, out)


@njit(**INLINE_JIT)
def mahalanobis_rows(Y, mean, upper, lo, hi, Dt, acc, row, out):
    """``mahalanobis_kernel`` on the rows ``[lo, hi)``; scratch ``Dt (d, >= hi − lo)``, ``acc`` and
    ``row (>= hi − lo,)``."""
    d = Y.shape[1]
    _centered_transpose(Y, lo, hi, mean, Dt)
    for r in range(hi - lo):
        acc[r] = 0.0
    # row = component i of upper (y − μ), four terms per sweep over the rows (a quarter of the loads
    # and stores of row that one term per sweep costs), the last (d − i) % 4 terms one at a time
    for i in range(d):
        for r in range(hi - lo):
            row[r] = 0.0
        for j in range(i, d - 3, 4):
            u0, u1, u2, u3 = upper[i, j], upper[i, j + 1], upper[i, j + 2], upper[i, j + 3]
            t0, t1, t2, t3 = Dt[j], Dt[j + 1], Dt[j + 2], Dt[j + 3]
            for r in range(hi - lo):
                row[r] += u0 * t0[r] + u1 * t1[r] + u2 * t2[r] + u3 * t3[r]
        for j in range(d - (d - i) % 4, d):
            u = upper[i, j]
            for r in range(hi - lo):
                row[r] += u * Dt[j, r]
        for r in range(hi - lo):
            acc[r] += row[r] * row[r]
    for r in range(hi - lo):
        out[lo + r] = math.sqrt(acc[r])


def mahalanobis(Y, mean, upper):
    """Mahalanobis distances ``(M,)`` of prepared ``Y (M, d)`` (see ``mahalanobis_kernel``)."""
    out = np.empty(len(Y))
    mahalanobis_kernel(readonly(Y), readonly(mean), readonly(upper), moment_blocks(len(Y)), out)
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
