"""Global covariance (the Mahalanobis metric): blocked weighted moments and Mahalanobis distances.

Moments are computed per fixed-size block of rows and merged exactly (Chan et al.): the result does
not depend on the thread count or on how the blocks are split into shards. Their d x d work per row
and the distances are hand-written register tiles (``simd``). The moment tiles beat the BLAS
products they replaced at every dimension measured (0.6-0.85 of the time at d = 3 to 64, under
half at d = 128, where BLAS on small sub-blocks is slow); the distances cannot be BLAS at all: a
BLAS product's rounding of a row depends on the rows it is batched with, and a row's distance must
not depend on the batch it is in.
"""
import math

import numpy as np
from numba import njit, prange

from .config import INLINE_JIT, JIT, PARALLEL_JIT, block_bounds
from .prefetch import elements_per_line, prefetch_l2, prefetch_span
from .simd import WIDTH, add, fma, lanes, load, mul, splat, sqrt, store, transpose_matrix
from .validation import readonly

ROWS_PER_BLOCK = 2048

ROWS_PER_PASS = 256
"""Rows of a block that the distance kernel takes at a time: their centred, transposed copy
(``d x 256`` doubles, 32 KiB at d = 16) stays in the L1 data cache of recent x86 cores (48 KiB
here) across the sweeps over it."""

STRIDE = ROWS_PER_PASS + WIDTH
"""Row stride of the transposed copies of a pass: one vector more than the pass, so that a column
of them does not fall into one or two sets of the L1 cache (a power-of-two stride does)."""

GRAM_ROWS = 8
"""Rows of the co-moment per register tile (``_gram_tile``; a vector of columns): eight FMA chains."""

GRAM_STRIDE = max(GRAM_ROWS, WIDTH)
"""The row stride of the moment kernel's scratch is a multiple: tiles never leave it."""

TILE = 8 * WIDTH
"""Rows per register tile of the distance kernel: eight vectors, so eight independent FMA chains
(two FMA units with a latency of four cycles need eight in flight)."""


@njit(**INLINE_JIT)
def _centered_transpose(X, lo, n, mu, Dt):
    """``Dt[i·STRIDE + r] = X[lo + r, i] − mu[i]`` for ``r < n``, zero up to the next
    multiple of ``TILE``: a pass of rows, transposed (``WIDTH × WIDTH`` blocks in registers) and
    centred, so that the tiles below load components of consecutive rows as vectors."""
    d = X.shape[1]
    transpose_matrix(X, lo * d, d, Dt, 0, STRIDE, n, d)
    for i in range(d):
        m = mu[i]
        row = i * STRIDE
        for r in range(n):
            Dt[row + r] -= m
        for r in range(n, -(-n // TILE) * TILE):
            Dt[row + r] = 0.0


@njit(**PARALLEL_JIT)
def _block_moments(X, w, first, n_blocks, weight, mean, comoment):
    """Per block ``b = first + k`` (``k < len(weight)``) of the ``n_blocks`` row blocks of ``X``: total
    weight, weighted mean and co-moment ``Σ w (x − mean_b)(x − mean_b)ᵀ`` into row ``k`` of the
    outputs, from sums shifted by the block's first row (the shift keeps the cancellation in
    ``S2 − S1 S1ᵀ / W`` to the block's own spread). ``S1 = wᵀD`` is summed while a pass of rows is
    shifted into ``D``; ``S2 = (w·D)ᵀD`` by register tiles over the pass (``_gram_tile``), in row
    order: the blocks are fixed by ``n_blocks``, so every split of the work gives the same bits.
    ``w`` of length 0: unit weights."""
    N, d = X.shape
    dp = -(-d // GRAM_STRIDE) * GRAM_STRIDE     # padded row stride of the scratch
    unweighted = w.shape[0] == 0
    for k in prange(weight.shape[0]):
        lo, hi = block_bounds(first + k, n_blocks, N)
        shift = X[lo]
        S1 = mean[k]
        D = np.zeros(ROWS_PER_PASS * dp)                     # shifted rows, zero-padded
        WD = D if unweighted else np.zeros(ROWS_PER_PASS * dp)  # weighted shifted rows
        S = np.zeros(dp * dp)                                # S2, padded; tiles j >= i only
        s1 = np.zeros(dp)                                    # S1, padded
        neg = -shift
        W = 0.0
        for a in range(lo, hi, ROWS_PER_PASS):
            n = min(hi, a + ROWS_PER_PASS) - a
            for r in range(n):
                wr = 1.0 if unweighted else w[a + r]
                W += wr
                _shift_row(X, (a + r) * d, neg, wr, D, WD, r * dp, unweighted)
            _column_sums(WD, n, dp, s1)
            ahead, end = (a + ROWS_PER_PASS) * d, min(a + 2 * ROWS_PER_PASS, N) * d
            for i0 in range(0, d, GRAM_ROWS):
                for c0 in range(i0 - i0 % WIDTH, d, WIDTH):
                    _gram_tile(WD, D, n, dp, i0, c0, S, X, ahead, end)
                    ahead += n * elements_per_line(X)
        weight[k] = W
        inv_w = 1.0 / W if W > 0.0 else 0.0
        S2 = comoment[k]
        for i in range(d):
            for j in range(i, d):
                S2[i, j] = S2[j, i] = S[i * dp + j] - s1[i] * s1[j] * inv_w
        for i in range(d):
            S1[i] = shift[i] + s1[i] * inv_w


@njit(**INLINE_JIT)
def _shift_row(X, x0, neg, wr, D, WD, t, unweighted):
    """One row: ``v = X.flat[x0 + i] + neg[i]`` (``x − shift``) into ``D.flat[t + i]`` and ``wr v``
    into ``WD`` (when weighted), for ``i < d``: vectors, then the rest one by one."""
    d = neg.shape[0]
    whole = d - d % WIDTH
    for i in range(0, whole, WIDTH):
        _shift_lanes(X, x0, neg, wr, D, WD, t, i, unweighted, splat(0.0))
    for i in range(whole, d):
        _shift_lanes(X, x0, neg, wr, D, WD, t, i, unweighted, 0.0)


@njit(**INLINE_JIT)
def _shift_lanes(X, x0, neg, wr, D, WD, t, i, unweighted, zero):
    """``_shift_row`` at element ``i`` (``zero`` a float) or the vector from it (``zero`` a vector)."""
    v = add(lanes(X, x0 + i, zero), lanes(neg, i, zero))
    store(D, t + i, v)
    if not unweighted:
        store(WD, t + i, mul(wr, v))


@njit(**INLINE_JIT)
def _column_sums(WD, n, dp, s1):
    """``s1 += Σ_{r<n} WD[r]`` over the rows (stride ``dp``, a multiple of ``WIDTH``) of a pass: even
    and odd rows in two vector sums, added at the end."""
    for c in range(0, dp, WIDTH):
        even, odd = load(s1, c), splat(0.0)
        for r in range(0, n - 1, 2):
            even = add(even, load(WD, r * dp + c))
            odd = add(odd, load(WD, (r + 1) * dp + c))
        if n % 2:
            even = add(even, load(WD, (n - 1) * dp + c))
        store(s1, c, add(even, odd))


@njit(**INLINE_JIT)
def _gram_tile(WD, D, n, dp, i0, c0, S, X, ahead, end):
    """``S[i, c] += Σ_{r<n} WD[r, i] D[r, c]`` for the ``GRAM_ROWS`` rows ``i`` from ``i0`` and the
    ``WIDTH`` columns ``c`` from ``c0`` (row-major scratch of row stride ``dp``, flat): eight vectors
    of partial sums in registers, one row of ``D`` at a time (a vector times eight broadcast entries
    of ``WD``). Meanwhile one cache line of ``X`` a row, from flat element ``ahead`` on (clipped to
    ``end``: the next pass), is prefetched into L2, so that memory streams while the core computes
    (paired, five runs: 0.76-0.84 of the time at 10^6 x 16)."""
    line = elements_per_line(X)
    z = splat(0.0)
    a0, a1, a2, a3, a4, a5, a6, a7 = z, z, z, z, z, z, z, z
    for r in range(n):
        if ahead + r * line < end:
            prefetch_l2(X, ahead + r * line)
        u = load(D, r * dp + c0)
        q = r * dp + i0
        a0, a1 = fma(lanes(WD, q, 0.0), u, a0), fma(lanes(WD, q + 1, 0.0), u, a1)
        a2, a3 = fma(lanes(WD, q + 2, 0.0), u, a2), fma(lanes(WD, q + 3, 0.0), u, a3)
        a4, a5 = fma(lanes(WD, q + 4, 0.0), u, a4), fma(lanes(WD, q + 5, 0.0), u, a5)
        a6, a7 = fma(lanes(WD, q + 6, 0.0), u, a6), fma(lanes(WD, q + 7, 0.0), u, a7)
    for i, a in enumerate((a0, a1, a2, a3, a4, a5, a6, a7)):
        t = (i0 + i) * dp + c0
        store(S, t, add(load(S, t), a))


def moment_blocks(N):
    """Number of row blocks of ``N`` rows: the fixed granularity of the moments, whatever the
    thread or shard count (which keeps every split of the work bitwise identical)."""
    return max(1, -(-N // ROWS_PER_BLOCK))


def block_moments(X, w, first=0, last=None):
    """Moments of the row blocks ``[first, last)`` (default: all) of ``X (N, d)`` with weights ``w``
    (``(N,)``, or empty for unit weights): ``(weight (B,), means (B, d), comoments (B, d, d))``.
    ``X`` is taken as C-contiguous float64 (copied if it is not)."""
    X = np.ascontiguousarray(X, dtype=np.float64)
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


@njit(**PARALLEL_JIT)
def mahalanobis_kernel(Y, mean, upper, n_blocks, out):
    """``out[m] = |upper (Y[m] − mean)|`` with ``upper = Lᵀ`` from the Cholesky factorisation of the
    metric ``G = L Lᵀ``: the Mahalanobis distance ``sqrt((y − μ)ᵀ G (y − μ))``. Each row's arithmetic is
    ``mahalanobis_row``'s (in a vector lane), whatever the block, pass or tile it falls in."""
    M, d = Y.shape
    for b in prange(n_blocks):
        lo, hi = block_bounds(b, n_blocks, M)
        Dt = np.empty(d * STRIDE)
        tail = np.empty(TILE)
        for a in range(lo, hi, ROWS_PER_PASS):
            n = min(hi, a + ROWS_PER_PASS) - a
            _centered_transpose(Y, a, n, mean, Dt)
            for r in range(0, n, TILE):
                whole = n - r >= TILE
                _distance_tile(Y, upper, Dt, r, (a + ROWS_PER_PASS + r) * d, out if whole else tail,
                               a + r if whole else 0)
                if not whole:
                    out[a + r:a + n] = tail[:n - r]


@njit(**INLINE_JIT)
def _distance_tile(Y, upper, Dt, r, ahead, out, at):
    """Distances of the ``TILE`` rows from column ``r`` of ``Dt`` into ``out[at:at + TILE]``: for each
    component ``i`` of ``upper (y − μ)``, eight vectors of partial sums over ``j >= i``, then their
    squares summed. Meanwhile the ``TILE`` rows from flat element ``ahead`` of ``Y`` on (the next
    pass's) are prefetched, ``TILE`` elements per component, so that memory streams while the core
    computes."""
    d = Y.shape[1]
    z = splat(0.0)
    a0, a1, a2, a3, a4, a5, a6, a7 = z, z, z, z, z, z, z, z
    for i in range(d):
        prefetch_span(Y, ahead + i * TILE, ahead + (i + 1) * TILE)
        s0, s1, s2, s3, s4, s5, s6, s7 = z, z, z, z, z, z, z, z
        for j in range(i, d):
            u = splat(upper[i, j])
            p = j * STRIDE + r
            s0 = fma(u, load(Dt, p), s0)
            s1 = fma(u, load(Dt, p + WIDTH), s1)
            s2 = fma(u, load(Dt, p + 2 * WIDTH), s2)
            s3 = fma(u, load(Dt, p + 3 * WIDTH), s3)
            s4 = fma(u, load(Dt, p + 4 * WIDTH), s4)
            s5 = fma(u, load(Dt, p + 5 * WIDTH), s5)
            s6 = fma(u, load(Dt, p + 6 * WIDTH), s6)
            s7 = fma(u, load(Dt, p + 7 * WIDTH), s7)
        a0, a1, a2, a3 = fma(s0, s0, a0), fma(s1, s1, a1), fma(s2, s2, a2), fma(s3, s3, a3)
        a4, a5, a6, a7 = fma(s4, s4, a4), fma(s5, s5, a5), fma(s6, s6, a6), fma(s7, s7, a7)
    store(out, at, sqrt(a0))
    store(out, at + WIDTH, sqrt(a1))
    store(out, at + 2 * WIDTH, sqrt(a2))
    store(out, at + 3 * WIDTH, sqrt(a3))
    store(out, at + 4 * WIDTH, sqrt(a4))
    store(out, at + 5 * WIDTH, sqrt(a5))
    store(out, at + 6 * WIDTH, sqrt(a6))
    store(out, at + 7 * WIDTH, sqrt(a7))


@njit(**INLINE_JIT)
def mahalanobis_row(Y, mean, upper, m):
    """The distance of row ``m`` alone, bit for bit ``mahalanobis_kernel``'s (its lanes' fused
    multiply-adds in their order): the GPU's kernel, a thread per row."""
    d = Y.shape[1]
    total = 0.0
    for i in range(d):
        s = 0.0
        for j in range(i, d):
            s = fma(upper[i, j], Y[m, j] - mean[j], s)
        total = fma(s, s, total)
    return math.sqrt(total)


def mahalanobis(Y, mean, upper):
    """Mahalanobis distances ``(M,)`` of prepared ``Y (M, d)`` (see ``mahalanobis_kernel``; taken as
    C-contiguous float64, copied if it is not)."""
    out = np.empty(len(Y))
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    mahalanobis_kernel(readonly(Y), readonly(mean), readonly(upper), moment_blocks(len(Y)), out)
    return out


def zscore_outliers(m, z):
    """Indices where ``|m − mean(m)| / std(m) > z`` (Anant's ``detect_property_outliers``); none
    when every ``m`` is equal (or there is none). Bit for bit ``np.abs(m − m.mean()) > z * m.std()``
    for a 1-D float64 ``m``: NumPy's own pairwise sums (its reduction order as of NumPy 2.4; a test
    pins it bit for bit), compiled, without its temporaries."""
    m = readonly(np.ascontiguousarray(m, dtype=np.float64))
    n = m.size
    if n == 0:
        return np.empty(0, dtype=np.int64)
    mean = _pairwise_sum_halves(m, 0.0, False) / n
    std = math.sqrt(_pairwise_sum_halves(m, mean, True) / n)
    if std == 0:
        return np.empty(0, dtype=np.int64)
    return _beyond(m, mean, z * std)


PAIRWISE_BLOCK = 128
"""NumPy's pairwise sum adds blocks of at most this many terms in eight running sums."""


@njit(**INLINE_JIT)
def _pairwise_block(a, lo, n, centre, squares):
    """NumPy's sum of a block (``n <= PAIRWISE_BLOCK`` terms from ``lo``): in order below 8 terms,
    else eight running sums, combined in a fixed tree, then the remaining terms."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += _term(a[i], centre, squares)
        return res
    r0, r1 = _term(a[lo], centre, squares), _term(a[lo + 1], centre, squares)
    r2, r3 = _term(a[lo + 2], centre, squares), _term(a[lo + 3], centre, squares)
    r4, r5 = _term(a[lo + 4], centre, squares), _term(a[lo + 5], centre, squares)
    r6, r7 = _term(a[lo + 6], centre, squares), _term(a[lo + 7], centre, squares)
    for i in range(lo + 8, lo + n - n % 8, 8):
        r0 += _term(a[i], centre, squares)
        r1 += _term(a[i + 1], centre, squares)
        r2 += _term(a[i + 2], centre, squares)
        r3 += _term(a[i + 3], centre, squares)
        r4 += _term(a[i + 4], centre, squares)
        r5 += _term(a[i + 5], centre, squares)
        r6 += _term(a[i + 6], centre, squares)
        r7 += _term(a[i + 7], centre, squares)
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(lo + n - n % 8, lo + n):
        res += _term(a[i], centre, squares)
    return res


@njit(**INLINE_JIT)
def _left_half(n):
    """Terms in the first half of NumPy's split of ``n``: half, rounded down to a multiple of 8."""
    half = n // 2
    return half - half % 8


@njit(**JIT)
def _pairwise_sum(a, lo, n, centre, squares):
    """NumPy's pairwise sum (``np.add.reduce`` of a contiguous float64 array, same rounding) of
    ``a[lo:lo + n]``, or of ``(a[lo:lo + n] − centre)²`` when ``squares`` (``np.var``'s sum): halves
    summed recursively down to blocks (``_pairwise_block``). The recursion runs on an explicit stack
    of spans (a recursive function called in a parallel region breaks Numba's on-disk cache)."""
    if n <= PAIRWISE_BLOCK:
        return _pairwise_block(a, lo, n, centre, squares)
    start, size = np.empty(64, np.int64), np.empty(64, np.int64)   # spans of depth < 64
    left, split = np.empty(64), np.zeros(64, np.bool_)            # left half's sum, and whether done
    start[0], size[0], top = lo, n, 1
    while True:
        f = top - 1
        if size[f] > PAIRWISE_BLOCK:     # descend into the left half
            split[f] = False
            start[top], size[top] = start[f], _left_half(size[f])
            top += 1
            continue
        v = _pairwise_block(a, start[f], size[f], centre, squares)
        top -= 1
        while top > 0:                   # hand v to the spans waiting for it
            p = top - 1
            if not split[p]:             # v is p's left half: now its right half
                left[p], split[p] = v, True
                half = _left_half(size[p])
                start[top], size[top] = start[p] + half, size[p] - half
                top += 1
                break
            v = left[p] + v
            top -= 1
        if top == 0:
            return v


@njit(**PARALLEL_JIT)
def _pairwise_sum_halves(a, centre, squares):
    """``_pairwise_sum`` of all of ``a``, its two top halves summed by two threads (NumPy's split, so
    the same bits)."""
    n = a.shape[0]
    if n <= PAIRWISE_BLOCK:
        return _pairwise_sum(a, 0, n, centre, squares)
    half = _left_half(n)
    parts = np.empty(2)
    for k in prange(2):
        parts[k] = _pairwise_sum(a, k * half, n - half if k else half, centre, squares)
    return parts[0] + parts[1]


@njit(**INLINE_JIT)
def _term(x, centre, squares):
    """``x``, or ``(x − centre)²`` rounded as NumPy's ``(x − centre) * (x − centre)``."""
    if squares:
        d = x - centre
        return d * d
    return x


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
