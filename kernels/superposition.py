"""Layer superposition: batched, parallel kernels on complex amplitudes.

Amplitudes ``psi (..., S)`` hold one state over ``S`` basis states per entity: one layer ``(N, S)`` or
a stack ``(L, N, S)``. Entities lie along the second-to-last axis (index ``j``); earlier axes (layers)
are flattened. Kernels return new arrays and never modify their input; ``out=`` writes the result
into a given array instead (in place when it is ``psi`` itself; on error it may hold partial results).
Kernels that produce states (``normalize``, ``evolve``, ``observe``, ``superpose``, ``propagate``)
return them normalised. Statistics (``probabilities``, ``entropy``, ``coherence``) are those of the
states as given (the Born rule assumes them normalised).

Inputs are validated at the boundary (shapes, dtypes, unitarity, likelihoods); the finiteness and
non-zero norm of every entity are checked by the kernels' own pass over the amplitudes, and a bad
entity is a ValueError that names it. Inside, amplitudes are handled as interleaved float64
(re, im) pairs: one fused per-entity kernel serves every state update and statistic, one the
Born-rule collapse.
"""
import math

import numpy as np
from numba import njit, prange
from numba.extending import overload

from .config import FMA_JIT, INLINE_JIT, PARALLEL_JIT, block_bounds, block_count
from .prefetch import prefetch_rows
from .random import uniform_pair
from .simd import WIDTH, add, fma, lanes, mul, reciprocal_norm, splat, store, transpose_matrix
from .stream import STREAM_BYTES, copy_out, fence, store_to, stream_block_to
from .target import is_device_array, resolve as resolve_target
from .validation import as_real_array, check_finite, readonly

UNITARY_TOL = 1e-10
"""Largest ``|U^H U − I|`` entry accepted for a unitary."""

_ZERO, _NONFINITE = 1, 2
"""Per-entity flags of the kernels: a state of zero norm, a state with NaN or inf."""


CHUNK = 64
"""Entities per chunk: the kernels transpose a chunk of state rows into ``(component, entity)``
scratch (row ``2a`` the real part of state ``a``, row ``2a + 1`` its imaginary part), so that
their inner loops run over entities and vectorise whatever ``S``."""

BLOCK = 2
"""States taken together in the matrix-vector product (``product_pair``) and ``transform_lanes``;
states are zero-padded to a multiple."""


@njit(**INLINE_JIT)
def padded(S):
    """``S`` rounded up to a multiple of ``BLOCK``."""
    return -(-S // BLOCK) * BLOCK


@njit(**INLINE_JIT)
def _flag(q):
    """Flag of a squared norm ``q``: 0 when finite and > 0."""
    if not math.isfinite(q):
        return _NONFINITE
    return _ZERO if q == 0.0 else 0


def read_rows(src, j0, nb, X):
    """``X[c, e] = src[j0 + e, c]`` for the ``nb`` rows of ``src (n, 2S)`` from ``j0``, one at a time:
    the GPU's (``gpu.py`` registers it for CUDA). CPU kernels compile the overload below, which
    transposes ``WIDTH × WIDTH`` blocks in registers and, after each block of rows, prefetches the
    same rows of the next chunk (``j0 + nb`` on) into L2: the hints spread over the chunk's compute,
    which then overlaps the next chunk's reads (0.83 of the step's time at 10^6 entities, paired)."""
    for e in range(nb):
        for c in range(src.shape[1]):
            X[c, e] = src[j0 + e, c]


@overload(read_rows, target="cpu")
def _read_rows_cpu(src, j0, nb, X):
    def blocks(src, j0, nb, X):
        w = src.shape[1]
        whole = nb - nb % WIDTH
        for r in range(0, whole, WIDTH):
            transpose_matrix(src, (j0 + r) * w, w, X, r, X.shape[1], WIDTH, w)
            prefetch_rows(src, j0 + nb + r, j0 + nb + r + WIDTH)
        transpose_matrix(src, (j0 + whole) * w, w, X, whole, X.shape[1], nb - whole, w)
    return blocks


def write_rows(X, j0, nb, dst, B, streaming):
    """The inverse of ``read_rows``, ``dst[j0 + e, c] = X[c, e]``: the GPU's (registered like
    ``read_rows``). CPU kernels compile the overload below: blocks transposed in registers; with
    ``streaming``, into the scratch ``B`` (at least ``nb · dst.shape[1]`` elements), then to memory
    by non-temporal stores (``stream.py``; call ``stream.fence`` after the last)."""
    for e in range(nb):
        for c in range(dst.shape[1]):
            dst[j0 + e, c] = X[c, e]


@overload(write_rows, target="cpu")
def _write_rows_cpu(X, j0, nb, dst, B, streaming):
    def blocks(X, j0, nb, dst, B, streaming):
        w = dst.shape[1]
        if streaming:
            transpose_matrix(X, 0, X.shape[1], B, 0, w, w, nb)
            copy_out(B, 0, dst, j0 * w, nb * w)
        else:
            transpose_matrix(X, 0, X.shape[1], dst, j0 * w, w, w, nb)
    return blocks


@njit(**INLINE_JIT)
def product_pair(Ur, Ui, T, a, e, zero):
    """Rows ``2a .. 2a + 3`` of ``U t`` (the real and imaginary parts of output states ``a`` and
    ``a + 1``) for column ``e`` (``zero`` a float) or the columns ``e .. e + WIDTH − 1`` (``zero`` a
    vector) of the C-contiguous interleaved scratch ``T (2 Sp, n)``; ``U = Ur + i Ui`` is ``(Sp,
    Sp)``, ``Sp`` even. Each real and imaginary sum runs as two FMA chains (over even and odd input
    states) added at the end: eight independent chains."""
    Sp = Ur.shape[0]
    n = T.shape[1]
    r0 = i0 = r1 = i1 = q0 = p0 = q1 = p1 = zero
    for c in range(0, Sp, 2):
        t0, s0 = lanes(T, 2 * c * n + e, zero), lanes(T, (2 * c + 1) * n + e, zero)
        t1, s1 = lanes(T, (2 * c + 2) * n + e, zero), lanes(T, (2 * c + 3) * n + e, zero)
        r0 = fma(-Ui[a, c], s0, fma(Ur[a, c], t0, r0))
        i0 = fma(Ui[a, c], t0, fma(Ur[a, c], s0, i0))
        r1 = fma(-Ui[a + 1, c], s0, fma(Ur[a + 1, c], t0, r1))
        i1 = fma(Ui[a + 1, c], t0, fma(Ur[a + 1, c], s0, i1))
        q0 = fma(-Ui[a, c + 1], s1, fma(Ur[a, c + 1], t1, q0))
        p0 = fma(Ui[a, c + 1], t1, fma(Ur[a, c + 1], s1, p0))
        q1 = fma(-Ui[a + 1, c + 1], s1, fma(Ur[a + 1, c + 1], t1, q1))
        p1 = fma(Ui[a + 1, c + 1], t1, fma(Ur[a + 1, c + 1], s1, p1))
    return add(r0, q0), add(i0, p0), add(r1, q1), add(i1, p1)


@njit(**INLINE_JIT)
def transform_lanes(Ur, Ui, T, W, X, q, e, zero, product, observe):
    """Column ``e`` (``zero`` a float) or the columns ``e .. e + WIDTH − 1`` (``zero`` a vector) of
    the C-contiguous interleaved scratch ``X (2 Sp, n)`` ← ``x = w ⊙ U t`` normalised, with ``t``
    the same columns of ``T`` (X's shape, zero padding rows), ``U = Ur + i Ui`` ``(Sp, Sp)``
    (``product`` false: none) and ``w`` those of ``W (Sp, n)`` (``observe`` false: none);
    ``Sp`` even. ``q`` at the same columns ← ``|x|²`` before normalising: a column of zero or
    non-finite norm stays unnormalised (``reciprocal_norm``). ``T`` may be ``X``."""
    Sp = X.shape[0] // 2
    n = X.shape[1]
    s0 = s1 = zero
    for a in range(0, Sp, 2):
        if product:
            r0, i0, r1, i1 = product_pair(Ur, Ui, T, a, e, zero)
        else:
            r0, i0 = lanes(T, 2 * a * n + e, zero), lanes(T, (2 * a + 1) * n + e, zero)
            r1, i1 = lanes(T, (2 * a + 2) * n + e, zero), lanes(T, (2 * a + 3) * n + e, zero)
        if observe:
            w0, w1 = lanes(W, a * n + e, zero), lanes(W, (a + 1) * n + e, zero)
            r0, i0, r1, i1 = mul(r0, w0), mul(i0, w0), mul(r1, w1), mul(i1, w1)
        store(X, 2 * a * n + e, r0)
        store(X, (2 * a + 1) * n + e, i0)
        store(X, (2 * a + 2) * n + e, r1)
        store(X, (2 * a + 3) * n + e, i1)
        s0 = fma(i0, i0, fma(r0, r0, s0))
        s1 = fma(i1, i1, fma(r1, r1, s1))
    norm = add(s0, s1)
    store(q, e, norm)
    f = reciprocal_norm(norm)
    for c in range(2 * Sp):
        store(X, c * n + e, mul(lanes(X, c * n + e, zero), f))


def transform(Ur, Ui, T, W, X, q, nb, product, observe, dst):
    """``transform_lanes`` for the columns ``e < nb`` of ``X``, one entity at a time: the GPU's
    (``gpu.py`` registers it for CUDA, a thread per entity; ``dst`` is 0 there). CPU kernels compile
    the overload below, over vectors of ``WIDTH`` entities with the same arithmetic lane by lane; it
    also overwrites the scratch columns from ``nb`` to the end of the last vector (of ``X`` and
    ``q``). With ``dst`` (a byte address, not 0) it also writes the ``nb`` entities as rows of
    ``X.shape[0]`` float64 from ``dst`` on, each vector's as soon as it is computed, by
    non-temporal stores (``stream.py``): the writes overlap the compute. The rows must then be
    whole vectors and ``dst`` aligned to one (``direct_address``); call ``stream.fence`` after."""
    for e in range(nb):
        transform_lanes(Ur, Ui, T, W, X, q, e, 0.0, product, observe)


@overload(transform, target="cpu")
def _transform_cpu(Ur, Ui, T, W, X, q, nb, product, observe, dst):
    def vectors(Ur, Ui, T, W, X, q, nb, product, observe, dst):
        S2, n = X.shape
        whole = min(n - n % WIDTH, -(-nb // WIDTH) * WIDTH)   # lanes past nb: unused scratch
        for e in range(0, whole, WIDTH):
            transform_lanes(Ur, Ui, T, W, X, q, e, splat(0.0), product, observe)
            if dst != 0 and e + WIDTH <= nb:
                for c in range(0, S2, WIDTH):
                    stream_block_to(X, c * n + e, n, dst + 8 * (e * S2 + c), 8 * S2)
        for e in range(whole, nb):
            transform_lanes(Ur, Ui, T, W, X, q, e, 0.0, product, observe)
        if dst != 0:
            for e in range(nb - nb % WIDTH, nb):
                for c in range(S2):
                    store_to(dst + 8 * (e * S2 + c), X[c, e])
    return vectors


@njit(**INLINE_JIT)
def _row_address(address, g, n, j0, S2):
    """The byte address of row ``[g, j0]`` of a ``(G, n, S2)`` float64 output at ``address``, or 0
    when ``address`` is 0."""
    return 0 if address == 0 else address + 8 * ((g * n + j0) * S2)


def direct_address(out, streaming):
    """The data address of the output ``out (G, n, 2S)`` (float64 view) where ``transform`` may
    stream whole rows straight to it: with ``streaming``, rows of whole vectors and data aligned to
    a vector; else 0."""
    aligned = out.ctypes.data % (8 * WIDTH) == 0 and out.shape[-1] % WIDTH == 0
    return out.ctypes.data if streaming and out.size and aligned else 0


@njit(**INLINE_JIT)
def _flag_norms(q, nb, fl):
    """Raise ``fl[e]`` to the flag of the squared norm ``q[e]`` (``_flag``), ``e < nb``."""
    for e in range(nb):
        fl[e] = max(fl[e], _flag(q[e]))


_MANTISSA = np.int64(0x000FFFFFFFFFFFFF)
_EXPONENT_ONE = np.int64(0x3FF0000000000000)
_LN2_HI = 6.93147180369123816490e-01   # ln 2 = _LN2_HI + _LN2_LO, _LN2_HI with 32 trailing zero bits
_LN2_LO = 1.90821492927058770002e-10
_SQRT2 = np.sqrt(2.0)


@njit(**INLINE_JIT)
def _entropies(P, S, nb, M, E, h):
    """``h[e] = −Σ_{a<S} P[a, e] log P[a, e]`` (``0 log 0 = 0``) for ``0 <= P``, vectorised.

    ``log p = k ln 2 + log m`` with ``p = m 2^k``, ``m`` in ``[√½, √2)`` read from the bits, and
    ``log m = 2 atanh(s)``, ``s = (m − 1)/(m + 1)``, by its series to ``s^21`` (``|s| <= 0.172``):
    within a few ulp of ``np.log``, 2x faster than a libm call per value. Subnormal ``p`` (below
    2.2e-308) give a wrong log but a product ``p log p`` still below 1e-305. ``M``, ``E``: scratch.
    """
    bits = P.view(np.int64)
    mbits = M.view(np.int64)
    h[:nb] = 0.0
    for a in range(S):
        for e in range(nb):
            mbits[a, e] = (bits[a, e] & _MANTISSA) | _EXPONENT_ONE
            E[a, e] = np.float64((bits[a, e] >> 52) - 1023)
        for e in range(nb):
            m = M[a, e]
            k = E[a, e]
            big = m > _SQRT2
            m = m * 0.5 if big else m
            k = k + 1.0 if big else k
            s = (m - 1.0) / (m + 1.0)
            z = s * s
            series = 1.0 + z * (1 / 3 + z * (1 / 5 + z * (1 / 7 + z * (1 / 9 + z * (1 / 11 + z * (
                1 / 13 + z * (1 / 15 + z * (1 / 17 + z * (1 / 19 + z / 21)))))))))
            h[e] -= P[a, e] * ((k * _LN2_HI + 2.0 * s * series) + k * _LN2_LO)


@njit(**INLINE_JIT)
def _statistics(X, S, nb, t, j0, probs, entropy, coherence, P, q, l1, fl, M, E, B, streaming):
    """Rows ``[t, j0 + e]`` of the non-empty outputs from the columns ``e < nb`` of ``X``:
    ``|x|²``, its Shannon entropy and the l1 coherence ``(Σ|x_a|)² − Σ|x_a|²``; flags ``fl``.
    ``P``, ``q``, ``l1``, ``M``, ``E``, ``B``: scratch; ``streaming``: as ``write_rows``."""
    q[:nb] = 0.0
    for a in range(S):
        for e in range(nb):
            p = X[2 * a, e] * X[2 * a, e] + X[2 * a + 1, e] * X[2 * a + 1, e]
            P[a, e] = p
            q[e] += p
    _flag_norms(q, nb, fl)
    if coherence.shape[0] > 0:
        l1[:nb] = 0.0
        for a in range(S):
            for e in range(nb):
                l1[e] += math.sqrt(P[a, e])
        for e in range(nb):
            coherence[t, j0 + e] = l1[e] * l1[e] - q[e]
    if probs.shape[0] > 0:
        write_rows(P, j0, nb, probs[t], B, streaming)
    if entropy.shape[0] > 0:
        _entropies(P, S, nb, M, E, q)   # q is free now
        for e in range(nb):
            entropy[t, j0 + e] = q[e]


@njit(**FMA_JIT)
def fused_kernel(psi, Ur, Ui, u_of, lik, lik_of, renorm, mix, states, mixed, probs, entropy,
                 coherence, streaming, direct, n_blocks, flags, counts):
    """One pass per entity ``j`` over the states ``psi[g, j]`` (``psi (G, n, 2S)``, interleaved):

    1. transform each ``x_g``: ``x ← U[u_of[g]] x`` if ``u_of[g] >= 0``, then
       ``x ← sqrt(lik[lik_of[g], j]) ⊙ x`` if ``lik_of[g] >= 0`` (row 0 when ``lik`` has one row),
       then normalise if transformed or ``renorm``; written to ``states (G, n, 2S)`` unless empty;
    2. mix, if ``mix (R, G)`` is not empty: ``y_r = normalise(Σ_g mix[r, g] x_g)`` into
       ``mixed (R, n, 2S)``;
    3. statistics of the ``y_r`` (else of the ``x_g``) into ``probs (T, n, S)``, ``entropy (T, n)``,
       ``coherence (T, n)``, each skipped when empty.

    With ``streaming``, ``states``, ``mixed`` and ``probs`` are written by non-temporal stores
    (``stream.py``). ``direct``: the data addresses of ``states`` and ``mixed`` where ``transform``
    may stream their rows as it computes them (``direct_address``), else 0.

    ``Ur``/``Ui (K, Sp, Sp)``, ``K >= 1``: real and imaginary parts of the unitaries, zero-padded to
    ``Sp = padded(S)``. An entity whose state (or mixture) is zero or not finite gets ``flags[j]``
    set (``_ZERO``/``_NONFINITE``); ``counts[b]`` counts the flagged entities of block ``b``.
    """
    G, n, S2 = psi.shape
    S = S2 // 2
    Sp2 = 2 * padded(S)
    for b in prange(n_blocks):
        lo, hi = block_bounds(b, n_blocks, n)
        X = np.zeros((G, Sp2, CHUNK))   # the chunk's states (padding rows stay 0)
        T = np.zeros((Sp2, CHUNK))      # input of a product with U
        Y = np.zeros((Sp2, CHUNK))      # a mixture (padding rows stay 0)
        W = np.ones((Sp2 // 2, CHUNK))  # sqrt(likelihood) (padding rows stay 1)
        P = np.empty((S, CHUNK))        # probabilities
        M = np.empty((S, CHUNK))        # scratch of the entropy
        E = np.empty((S, CHUNK))
        q = np.empty(CHUNK)
        l1 = np.empty(CHUNK)
        fl = np.empty(CHUNK, np.int64)
        B = np.empty(CHUNK * S2)        # rows written by streaming
        bad = 0
        for j0 in range(lo, hi, CHUNK):
            bad += fused_chunk(psi, Ur, Ui, u_of, lik, lik_of, renorm, mix, states, mixed, probs,
                               entropy, coherence, streaming, direct, flags, j0,
                               min(CHUNK, hi - j0), X, T, Y, W, P, M, E, q, l1, fl, B)
        if streaming:
            fence()
        counts[b] = bad


@njit(**INLINE_JIT)
def fused_chunk(psi, Ur, Ui, u_of, lik, lik_of, renorm, mix, states, mixed, probs, entropy,
                coherence, streaming, direct, flags, j0, nb, X, T, Y, W, P, M, E, q, l1, fl, B):
    """``fused_kernel`` on the entities ``[j0, j0 + nb)``; returns how many it flagged. Scratch:
    ``X (G, 2 Sp, chunk)``, ``T`` and ``Y (2 Sp, chunk)`` with zero padding rows (``Sp =
    padded(S)``), ``W (Sp, chunk)`` with padding rows of ones, ``P``, ``M``, ``E (S, chunk)``, ``q``,
    ``l1``, ``fl (chunk,)``, ``B (2S chunk,)`` (only with ``streaming``)."""
    G = psi.shape[0]
    S2 = psi.shape[2]
    S = S2 // 2
    R = mix.shape[0]
    one_lik_row = lik.shape[1] == 1
    stats = probs.shape[0] + entropy.shape[0] + coherence.shape[0] > 0
    for e in range(nb):
        fl[e] = 0
    w_row = -1
    for g in range(G):
        x = X[g]
        k = u_of[g]
        m = lik_of[g]
        if m >= 0 and m != w_row:
            if one_lik_row:
                for a in range(S):
                    W[a, :nb] = math.sqrt(lik[m, 0, a])
            else:
                read_rows(lik[m], j0, nb, W)
                for a in range(S):
                    for e in range(nb):
                        W[a, e] = math.sqrt(W[a, e])
            w_row = m
        to = 0   # where transform streams the new rows itself (0: write_rows below)
        if renorm or k >= 0 or m >= 0:
            to = _row_address(direct[0], g, psi.shape[1], j0, S2)
            read_rows(psi[g], j0, nb, T)
            transform(Ur[max(k, 0)], Ui[max(k, 0)], T, W, x, q, nb, k >= 0, m >= 0, to)
            _flag_norms(q, nb, fl)
        else:
            read_rows(psi[g], j0, nb, x)
        if states.shape[0] > 0 and to == 0:
            write_rows(x, j0, nb, states[g], B, streaming)
    for r in range(R):
        for c in range(S2):
            for e in range(nb):
                Y[c, e] = 0.0
        for g in range(G):
            coef = mix[r, g]
            if coef != 0.0:
                for c in range(S2):
                    for e in range(nb):
                        Y[c, e] += coef * X[g, c, e]
        to = _row_address(direct[1], r, psi.shape[1], j0, S2)
        transform(Ur[0], Ui[0], Y, W, Y, q, nb, False, False, to)
        _flag_norms(q, nb, fl)
        if to == 0:
            write_rows(Y, j0, nb, mixed[r], B, streaming)
        if stats:
            _statistics(Y, S, nb, r, j0, probs, entropy, coherence, P, q, l1, fl, M, E, B,
                        streaming)
    if R == 0 and stats:
        for g in range(G):
            _statistics(X[g], S, nb, g, j0, probs, entropy, coherence, P, q, l1, fl, M, E, B,
                        streaming)
    bad = 0
    for e in range(nb):
        if fl[e]:
            flags[j0 + e] = fl[e]
            bad += 1
    return bad


@njit(**INLINE_JIT)
def _probabilities(src, j0, nb, X, P, total):
    """``P[a, e] = |state a of row j0 + e|²`` of the interleaved ``src (n, 2S)`` and their sums
    ``total[e]`` (in state order), for ``e < nb``; rounded the same way on every target (``fma``),
    so that outcomes agree to the entity between the CPU and the GPU. The rows go through the
    scratch ``X (2S, chunk)`` (``read_rows``: on the CPU, transposed in registers and the next
    chunk prefetched), so that the sums run over vectors of entities."""
    read_rows(src, j0, nb, X)
    for e in range(nb):
        total[e] = 0.0
    for a in range(src.shape[1] // 2):
        for e in range(nb):
            p = fma(X[2 * a, e], X[2 * a, e], X[2 * a + 1, e] * X[2 * a + 1, e])
            P[a, e] = p
            total[e] += p


@njit(**INLINE_JIT)
def _born(P, total, S, nb, u, acc, below, last, out):
    """Born-rule outcomes of the chunk's probabilities ``P (S, chunk)`` (sums ``total``) for the
    uniforms ``u``: ``out[e]`` = the first ``a`` with ``Σ_{b<=a} P[b, e] > u[e] total[e]`` (the last
    state of non-zero probability if rounding leaves none), ``−_ZERO`` / ``−_NONFINITE`` for a
    zero / non-finite state. Vectorised over the chunk; ``u`` is overwritten; the rest is scratch."""
    for e in range(nb):
        u[e] *= total[e]   # the target
        acc[e] = 0.0
        below[e] = 0       # states whose cumulative probability is <= target: the outcome
        last[e] = 0
    for a in range(S):
        for e in range(nb):
            acc[e] += P[a, e]   # same sums in the same order as total: acc ends equal to total
            below[e] += acc[e] <= u[e]
            last[e] = a if P[a, e] > 0.0 else last[e]
    for e in range(nb):
        f = _flag(total[e])
        out[e] = -f if f else min(below[e], last[e])


@njit(**INLINE_JIT)
def _draws(seed, step, stream, index, offset, j0, nb, u, v):
    """First (``u``) and second (``v``) uniforms of the keys of entities ``j0 + e``, ``e < nb``:
    ``(seed, index[j] (or offset + j when index is empty), step, stream)``. Vectorises."""
    if index.shape[0] > 0:
        for e in range(nb):
            u[e], v[e] = uniform_pair(seed, np.uint64(index[j0 + e]), step, stream)
    else:
        for e in range(nb):
            u[e], v[e] = uniform_pair(seed, offset + np.uint64(j0 + e), step, stream)


@njit(**PARALLEL_JIT)
def collapse_kernel(psi, streams, index, offset, seed, step, n_blocks, out, counts):
    """``out[g, j]`` = Born-rule outcome of ``psi[g, j]`` (``psi (G, n, 2S)``) drawn from the first
    uniform of the key of entity ``j`` (see ``_draws``) in stream ``streams[g]``; negative for a
    zero or non-finite state, counted per block in ``counts``."""
    G, n, S2 = psi.shape
    S = S2 // 2
    for b in prange(n_blocks):
        lo, hi = block_bounds(b, n_blocks, n)
        X = np.empty((S2, CHUNK))
        P = np.empty((S, CHUNK))
        u = np.empty(CHUNK)
        v = np.empty(CHUNK)
        total = np.empty(CHUNK)
        acc = np.empty(CHUNK)
        below = np.empty(CHUNK, np.int64)
        last = np.empty(CHUNK, np.int64)
        outcome = np.empty(CHUNK, np.int64)
        bad = 0
        for g in range(G):
            stream = np.uint64(streams[g])
            rows = psi[g]
            for j0 in range(lo, hi, CHUNK):
                nb = min(CHUNK, hi - j0)
                _draws(seed, step, stream, index, offset, j0, nb, u, v)
                _probabilities(rows, j0, nb, X, P, total)
                _born(P, total, S, nb, u, acc, below, last, outcome)
                for e in range(nb):
                    out[g, j0 + e] = outcome[e]
                    bad += outcome[e] < 0
        counts[b] = bad


@njit(**PARALLEL_JIT)
def correlate_kernel(streams, index, offset, seed, step, pairs, strengths, out):
    """For each pair ``(f, s)``: ``out[g, s] = out[g, f]`` when the second uniform of ``s``'s key is
    below ``strengths[p]`` (``s`` keeps its own Born outcome otherwise). Pairs must be disjoint."""
    for p in prange(pairs.shape[0]):
        correlate_pair(streams, index, offset, seed, step, pairs, strengths, out, p)


@njit(**INLINE_JIT)
def correlate_pair(streams, index, offset, seed, step, pairs, strengths, out, p):
    """Pair ``p`` of ``correlate_kernel``, in every layer."""
    f = pairs[p, 0]
    s = pairs[p, 1]
    key = np.uint64(index[s]) if index.shape[0] > 0 else offset + np.uint64(s)
    for g in range(out.shape[0]):
        _, v = uniform_pair(seed, key, step, np.uint64(streams[g]))
        if v < strengths[p]:
            out[g, s] = out[g, f]


# ---------------------------------------------------------------------------------------------
# Prepared paths: arrays already validated (used by the wrappers below and by anant_fast.layers)
# ---------------------------------------------------------------------------------------------

def _floats(a):
    """Interleaved float64 view ``(G, n, 2S)`` of C-contiguous complex amplitudes ``(G, n, S)``."""
    return a.view(np.float64).reshape(a.shape[:-1] + (2 * a.shape[-1],))


def entity_list(labels):
    """``[a, b, ...] (k in total)``: the first ten of ``labels``, for error messages."""
    shown = ", ".join(str(x) for x in labels[:10].tolist())
    return f"[{shown}{', ...' if len(labels) > 10 else ''}] ({len(labels)} in total)"


def _raise_flagged(flags, name, what, labels):
    """ValueError naming the flagged entities (by ``labels[j]``, or ``j`` when None): non-finite
    ones first, else ``what`` (a zero norm)."""
    bad = np.flatnonzero(flags)
    nonfinite = bad[np.asarray(flags)[bad] == _NONFINITE]
    named = (lambda idx: idx) if labels is None else (lambda idx: np.asarray(labels)[idx])
    if nonfinite.size:
        raise ValueError(f"{name} contains NaN or inf at entities {entity_list(named(nonfinite))}")
    raise ValueError(f"{what} at entities {entity_list(named(bad))}")


_EMPTY_R3 = np.empty((0, 0, 0))
_EMPTY_R2 = np.empty((0, 0))
_NONE = np.empty(0, np.int64)


def fused_update(psi, U=None, u_of=None, lik=None, lik_of=None, renorm=False, mix=None, states=None,
                 mixed=None, probs=None, entropy=None, coherence=None, name="psi",
                 what="the state has zero norm", labels=None, target="cpu"):
    """Run ``fused_kernel`` on prepared arrays (C-contiguous, right dtypes; see its docstring).

    ``psi``, ``states``, ``mixed``: complex128 ``(G, n, S)``, ``(G, n, S)``, ``(R, n, S)``; ``U``
    complex ``(K, S, S)`` with ``u_of (G,)``; ``lik`` float ``(J, 1 or n, S)`` with ``lik_of (G,)``;
    ``mix (R, G)``. Omitted arrays are skipped. Raises a ValueError naming flagged entities (by
    ``labels[j]`` when given), ``name`` for NaN/inf, ``what`` for a zero norm. ``target="cuda"``
    (resolved) runs ``kernels.gpu.fused_update``: ``psi`` and the outputs may then be GPU arrays.
    """
    on_device = target == "cuda" and is_device_array(psi)
    if not on_device:
        psi = np.ascontiguousarray(psi)
        if not all(a is None or a.flags.c_contiguous for a in (states, mixed, probs, entropy, coherence)):
            raise ValueError("fused_update writes only into C-contiguous outputs")
    G, n, S = psi.shape
    Ur = np.zeros((1 if U is None else max(len(U), 1), padded(S), padded(S)))   # never empty
    Ui = np.zeros_like(Ur)
    if U is None:
        u_of = np.full(G, -1, np.int64)
    else:
        Ur[:len(U), :S, :S] = U.real
        Ui[:len(U), :S, :S] = U.imag
    if lik is None:
        lik, lik_of = _EMPTY_R3, np.full(G, -1, np.int64)
    flags = np.zeros(n, np.uint8)
    if target == "cuda":
        from . import gpu
        empty = (_EMPTY_R3, _EMPTY_R3, _EMPTY_R3, _EMPTY_R2, _EMPTY_R2)
        outputs = [e if o is None else o for o, e in zip((states, mixed, probs, entropy, coherence), empty)]
        if gpu.fused_update(psi, Ur, Ui, u_of, lik, lik_of, renorm,
                            _EMPTY_R2 if mix is None else mix, outputs, flags):
            _raise_flagged(flags, name, what, labels)
        return
    n_blocks = block_count(n)
    counts = np.zeros(n_blocks, np.int64)
    written = sum(a.nbytes for a in (states, mixed, probs) if a is not None)
    streaming = written >= STREAM_BYTES
    states = _EMPTY_R3 if states is None else _floats(states)
    mixed = _EMPTY_R3 if mixed is None else _floats(mixed)
    fused_kernel(readonly(_floats(psi)), readonly(Ur), readonly(Ui), readonly(u_of),
                 readonly(lik), readonly(lik_of), renorm,
                 readonly(_EMPTY_R2 if mix is None else mix), states, mixed,
                 _EMPTY_R3 if probs is None else probs,
                 _EMPTY_R2 if entropy is None else entropy,
                 _EMPTY_R2 if coherence is None else coherence, streaming,
                 (direct_address(states, streaming), direct_address(mixed, streaming)),
                 n_blocks, flags, counts)
    if counts.any():
        _raise_flagged(flags, name, what, labels)


def collapse_outcomes(psi, seed, step, streams, index=None, offset=0, pairs=None, strengths=None,
                      out=None, name="psi", labels=None, target="cpu"):
    """Born-rule outcomes ``(G, n)`` of prepared ``psi (G, n, S)``; entity ``j`` of layer ``g`` is
    keyed by ``(seed, index[j] (or offset + j), step, streams[g])``. ``pairs (P, 2)`` (rows, disjoint)
    with ``strengths (P,)`` correlate each second with its first (``correlate_kernel``).
    ``target="cuda"`` (resolved) draws the same outcomes on the GPU (``kernels.gpu``)."""
    def fail(outcomes):
        flags = np.where(outcomes < 0, -outcomes, 0).max(axis=0)
        _raise_flagged(flags, name, f"{name} has zero norm", labels)

    G, n, _ = psi.shape
    if target == "cuda":
        from . import gpu
        out = out if out is not None else (gpu.cuda.device_array((G, n), np.int64)
                                           if is_device_array(psi) else np.empty((G, n), np.int64))
        return gpu.collapse_outcomes(psi, seed, step, streams, index, offset, pairs, strengths, out, fail)
    psi = np.ascontiguousarray(psi)
    index = _NONE if index is None else index
    out = np.empty((G, n), np.int64) if out is None else out
    seed, step, offset = np.uint64(seed), np.uint64(step), np.uint64(offset)
    n_blocks = block_count(n)
    counts = np.zeros(n_blocks, np.int64)
    collapse_kernel(readonly(_floats(psi)), readonly(streams), readonly(index), offset, seed,
                    step, n_blocks, out, counts)
    if counts.any():
        fail(out)
    correlate_outcomes(out, seed, step, streams, index, offset, pairs, strengths)
    return out


def correlate_outcomes(out, seed, step, streams, index=None, offset=0, pairs=None, strengths=None):
    """Correlate the outcomes ``out (G, n)`` of entangled pairs in place (``correlate_kernel``; keys
    as in ``collapse_outcomes``)."""
    if pairs is not None and len(pairs):
        correlate_kernel(readonly(streams), readonly(_NONE if index is None else index),
                         np.uint64(offset), np.uint64(seed), np.uint64(step), readonly(pairs),
                         readonly(strengths), out)


# ---------------------------------------------------------------------------------------------
# Boundary validation
# ---------------------------------------------------------------------------------------------

def as_amplitudes(psi, name="psi", ndims=None, shapes="(..., S)", target="cpu"):
    """``psi`` as C-contiguous complex128 of shape ``shapes`` (``ndims`` axes when given), ``S >= 1``;
    real and integer input converts. A GPU array (``target="cuda"`` only) must be complex128."""
    if is_device_array(psi):
        if target != "cuda":
            raise TypeError(f"{name} is a GPU array: pass target='cuda'")
        from . import gpu
        arr = gpu.as_amplitudes(psi, name)
        if ndims is not None and arr.ndim not in ndims:
            raise ValueError(f"{name} must have shape {shapes}, got {tuple(arr.shape)}")
        return arr
    arr = np.asarray(psi)
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"{name} must be a numeric array of amplitudes, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.complex128)
    if arr.ndim == 0 or (ndims is not None and arr.ndim not in ndims) or arr.shape[-1] == 0:
        raise ValueError(f"{name} must have shape {shapes} with S >= 1, got {arr.shape}")
    return arr


def _stacked(a):
    """``(G, n, S)`` view of ``a (..., S)``: entities along the second-to-last axis."""
    shape = tuple(a.shape)  # a plain tuple also for GPU arrays
    n = shape[-2] if len(shape) >= 2 else 1
    return a.reshape((int(np.prod(shape[:-2])), n, shape[-1]))


def as_unitary(U, S, name="U"):
    """``U`` as a complex128 ``(S, S)`` unitary (``|U^H U − I| <= UNITARY_TOL`` entry-wise)."""
    arr = np.asarray(U)
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"{name} must be a numeric matrix, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.complex128)
    if arr.shape != (S, S):
        raise ValueError(f"{name} must have shape ({S}, {S}), got {arr.shape}")
    check_finite(arr, name)
    err = np.abs(arr.conj().T @ arr - np.eye(S)).max()
    if not err <= UNITARY_TOL:
        raise ValueError(f"{name} is not unitary: max |U^H U - I| = {err:.3g} > {UNITARY_TOL:g}")
    return arr


def as_likelihood(likelihood, n, S, name="likelihood"):
    """A finite, non-negative float64 likelihood of shape ``(n, S)`` or ``(S,)``."""
    arr = as_real_array(likelihood, name)
    if arr.shape not in ((n, S), (S,)):
        raise ValueError(f"{name} must have shape ({n}, {S}) or ({S},), got {arr.shape}")
    check_finite(arr, name)
    if arr.size and arr.min() < 0:
        where = np.unravel_index(int(np.argmin(arr)), arr.shape)
        raise ValueError(f"{name} must be >= 0 (negative at index {tuple(int(i) for i in where)})")
    return arr


def as_fraction(value, name):
    """``value`` as a float in ``[0, 1]``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def as_counter(value, name, bits):
    """``value`` as an integer in ``[0, 2**bits)`` (a key of the random generator)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if not 0 <= int(value) < 2 ** bits:
        raise ValueError(f"{name} must be in [0, 2**{bits}), got {value}")
    return int(value)


def as_pairs(pairs, n, name="pairs"):
    """Disjoint pairs of entity indices ``(P, 2)`` in ``[0, n)`` as int64: no entity in two pairs."""
    arr = np.asarray(pairs)
    if arr.size == 0:
        arr = arr.reshape(0, 2)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer entity indices, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must have shape (P, 2), got {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"{name} holds entity indices outside [0, {n})")
    members, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"{name}: entities {entity_list(members[counts > 1])} are in more than "
                         f"one pair (or paired with themselves)")
    return arr


def as_output(out, shape, dtype, inputs, name="out", in_place_ok=None):
    """A writable C-contiguous ``out`` of ``shape`` and ``dtype`` (new when None) that overlaps no
    input, except ``in_place_ok`` exactly; a GPU array when the inputs are."""
    if inputs and is_device_array(inputs[0]):
        from . import gpu
        return gpu.as_output(out, shape, dtype, name, inputs, in_place_ok)
    return _as_host_output(out, shape, dtype, inputs, name, in_place_ok)


def aligned_empty(shape, dtype=np.complex128):
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary: the kernels
    stream whole rows of states straight into such an output (NumPy aligns only to 16 bytes)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    buffer = np.empty(size + 64, np.uint8)
    start = -buffer.ctypes.data % 64
    return buffer[start:start + size].view(dtype).reshape(shape)


def _as_host_output(out, shape, dtype, inputs, name, in_place_ok):
    if out is None:
        return aligned_empty(shape, dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"{name} must be a {np.dtype(dtype)} array of shape {tuple(shape)}, "
                         f"got {out.dtype} {out.shape}")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"{name} must be C-contiguous and writeable")
    same = in_place_ok is not None and out.__array_interface__["data"][0] == \
        in_place_ok.__array_interface__["data"][0] and out.shape == in_place_ok.shape
    if not same and any(np.may_share_memory(out, a) for a in inputs):
        raise ValueError(f"{name} overlaps an input (only an exact in-place output is allowed)")
    return out


# ---------------------------------------------------------------------------------------------
# Public kernels
# ---------------------------------------------------------------------------------------------

def normalize(psi, out=None, target="cpu"):
    """Every entity's state of ``psi (..., S)`` scaled to unit norm; same shape, complex128.

    Every kernel of this module takes ``target``: ``"cpu"``, ``"cuda"`` or ``"auto"``
    (``kernels.target``); on ``"cuda"``, ``psi`` may be a GPU array (complex128, C-contiguous), and
    then the result (and ``out``) are GPU arrays too."""
    target = resolve_target(target)
    a = as_amplitudes(psi, target=target)
    out = as_output(out, tuple(a.shape), np.complex128, [a], in_place_ok=a)
    fused_update(_stacked(a), renorm=True, states=_stacked(out), what="psi has zero norm",
                 target=target)
    return _like(psi, out)


def _like(psi, out):
    """``out`` as the kind of array ``psi`` is (CuPy for CuPy; see ``kernels.gpu.like``)."""
    if is_device_array(out):
        from . import gpu
        return gpu.like(psi, out)
    return out


def _one_statistic(psi, out, kind, target):
    target = resolve_target(target)
    a = as_amplitudes(psi, target=target)
    shape = tuple(a.shape) if kind == "probs" else tuple(a.shape)[:-1]
    out = as_output(out, shape, np.float64, [a])
    s = _stacked(a)
    view = out.reshape(tuple(s.shape) if kind == "probs" else tuple(s.shape)[:2])
    fused_update(s, **{kind: view}, what="psi has zero norm", target=target)
    return _like(psi, out)


def probabilities(psi, out=None, target="cpu"):
    """Born-rule probabilities ``|psi|²`` of ``psi (..., S)``: float64, same shape."""
    return _one_statistic(psi, out, "probs", target)


def entropy(psi, out=None, target="cpu"):
    """Shannon entropy ``−Σ_a p_a log p_a`` (nats) of ``p = |psi|²``: float64 ``psi.shape[:-1]``."""
    return _one_statistic(psi, out, "entropy", target)


def coherence(psi, out=None, target="cpu"):
    """l1-norm of coherence ``Σ_{a≠b} |psi_a||psi_b|``: float64 ``psi.shape[:-1]``
    (0 for a basis state, ``S − 1`` for the uniform superposition)."""
    return _one_statistic(psi, out, "coherence", target)


def evolve(psi, U, out=None, target="cpu"):
    """``U psi`` for every entity of ``psi (..., S)``, renormalised; ``U (S, S)`` must be unitary."""
    target = resolve_target(target)
    a = as_amplitudes(psi, target=target)
    Uc = as_unitary(U, tuple(a.shape)[-1])
    out = as_output(out, tuple(a.shape), np.complex128, [a], in_place_ok=a)
    s = _stacked(a)
    fused_update(s, U=Uc[None], u_of=np.zeros(s.shape[0], np.int64), states=_stacked(out),
                 what="psi has zero norm", target=target)
    return _like(psi, out)


def observe(psi, likelihood, out=None, target="cpu"):
    """Bayesian update: ``sqrt(likelihood) ⊙ psi``, renormalised, so that probabilities become
    ``p · likelihood / Σ p · likelihood``. ``psi (..., N, S)``; ``likelihood (N, S)`` (per entity) or
    ``(S,)`` (every entity), finite and >= 0 (a NumPy array, also for GPU ``psi``). An entity left
    with zero probability everywhere (its likelihood is 0 wherever its amplitude is not) is a
    ValueError naming it."""
    target = resolve_target(target)
    a = as_amplitudes(psi, target=target)
    s = _stacked(a)
    lik = as_likelihood(likelihood, s.shape[1], s.shape[2])
    out = as_output(out, tuple(a.shape), np.complex128, [a, lik], in_place_ok=a)
    fused_update(s, lik=lik.reshape((1,) + (lik.shape if lik.ndim == 2 else (1, -1))), lik_of=np.zeros(s.shape[0], np.int64),
                 states=_stacked(out), target=target,
                 what="observe leaves zero probability (likelihood 0 wherever the amplitude is not)")
    return _like(psi, out)


def _layers(psi_layers, target):
    return as_amplitudes(psi_layers, "psi_layers", ndims=(2, 3), shapes="(L, N, S) or (L, S)",
                         target=target)


def _mix(psi, a, M, out, out_shape, what, target, in_place=False):
    """``fused_update`` mixing the layers of ``a (L, N, S)`` or ``(L, S)`` by ``M (R, L)``."""
    shape = tuple(a.shape)
    s = a if len(shape) == 3 else a.reshape((shape[0], 1, shape[1]))
    out = as_output(out, out_shape, np.complex128, [a], in_place_ok=a if in_place else None)
    fused_update(s, mix=M, mixed=out.reshape((M.shape[0],) + tuple(s.shape)[1:]), name="psi_layers",
                 what=what, target=target)
    return _like(psi, out)


def as_weights(weights, L, name="weights"):
    """Layer weights ``(L,)`` as float64: finite, >= 0, not all 0."""
    w = as_real_array(weights, name)
    if w.shape != (L,):
        raise ValueError(f"{name} must have shape ({L},) (one per layer), got {w.shape}")
    check_finite(w, name)
    if (w < 0).any() or not w.sum() > 0:
        raise ValueError(f"{name} must be >= 0 and not all 0")
    return w


def superpose(psi_layers, weights, out=None, target="cpu"):
    """Weighted superposition across layers, ``normalise(Σ_l w_l psi_l)``: ``psi_layers (L, N, S)``
    (or ``(L, S)``) to ``(N, S)`` (or ``(S,)``). ``weights (L,)`` finite, >= 0, not all 0. An entity
    whose layers cancel out is a ValueError."""
    target = resolve_target(target)
    a = _layers(psi_layers, target)
    w = as_weights(weights, a.shape[0])
    return _mix(psi_layers, a, w[None], out, tuple(a.shape)[1:],
                "superpose: the weighted layers cancel out (zero norm)", target)


def check_parents(parent, L, name="parent"):
    """``parent (L,)`` as int64: ``parent[l]`` the index of layer ``l``'s parent or −1; a forest."""
    arr = np.asarray(parent)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be integer layer indices, got dtype {arr.dtype}")
    if arr.shape != (L,):
        raise ValueError(f"{name} must have shape ({L},), got {arr.shape}")
    arr = arr.astype(np.int64)
    if ((arr < -1) | (arr >= L)).any():
        raise ValueError(f"{name} entries must be -1 (no parent) or a layer index in [0, {L})")
    for start in range(L):
        seen, l = 0, start
        while l >= 0:
            l = arr[l]
            seen += 1
            if seen > L:
                raise ValueError(f"{name} has a cycle through layer {start}")
    return arr


def propagation_matrix(parent, alpha, direction):
    """Mixing matrix ``(L, L)`` of ``propagate``: row ``l`` gives new layer ``l`` from the old ones."""
    L = parent.shape[0]
    M = np.eye(L)
    if direction == "down":
        for l in np.flatnonzero(parent >= 0):
            M[l, l] = 1.0 - alpha
            M[l, parent[l]] += alpha
    elif direction == "up":
        for p in np.unique(parent[parent >= 0]):
            children = np.flatnonzero(parent == p)
            M[p, p] = 1.0 - alpha
            M[p, children] += alpha / children.size
    else:
        raise ValueError(f"direction must be 'up' or 'down', got {direction!r}")
    return M


def propagate(psi_layers, parent, alpha, direction, out=None, target="cpu"):
    """One propagation step along the layer hierarchy, every layer from the old states at once.

    ``"down"``: each layer with a parent becomes ``normalise((1 − α) psi_l + α psi_parent)``;
    ``"up"``: each layer with children becomes ``normalise((1 − α) psi_p + α mean_children psi_c)``;
    other layers are renormalised. ``psi_layers (L, N, S)`` or ``(L, S)``; ``parent (L,)``:
    parent index or −1; ``alpha`` in ``[0, 1]``. ``out`` may be ``psi_layers`` itself.
    """
    target = resolve_target(target)
    a = _layers(psi_layers, target)
    M = propagation_matrix(check_parents(parent, a.shape[0]), as_fraction(alpha, "alpha"), direction)
    return _mix(psi_layers, a, M, out, tuple(a.shape),
                "propagate: the mixed layers cancel out (zero norm)", target, in_place=True)


def collapse(psi, seed, step=0, offset=0, out=None, target="cpu"):
    """One Born-rule outcome per entity of ``psi (..., N, S)``: int64 ``psi.shape[:-1]``.

    Entity ``j`` (along the second-to-last axis) of layer ``g`` (the flat index of the earlier axes)
    draws from the counter-based generator keyed by ``(seed, offset + j, step, g)``
    (``kernels.random``): its outcome does not depend on the batch it is in, the thread count, the
    order or the target. ``seed < 2**64``, ``step < 2**32``, ``offset >= 0``. ``basis(outcomes, S)``
    gives the collapsed amplitudes. ``target``: ``"cpu"``, ``"cuda"`` or ``"auto"``
    (``kernels.target``); on ``"cuda"`` ``psi`` may be a GPU array (complex128, C-contiguous), and
    the outcomes (and ``out``) are then GPU arrays too.
    """
    return _collapse(psi, None, None, seed, step, offset, out, target)


def collapse_entangled(psi, pairs, strength, seed, step=0, offset=0, out=None, target="cpu"):
    """``collapse`` with entangled pairs ``(P, 2)`` of entity indices (along the entity axis): the
    first of a pair collapses by the Born rule; the second takes the same outcome with probability
    ``strength`` (drawn from its own key), otherwise keeps its own Born outcome. An entity may be
    in one pair only. Agreement probability: ``strength + (1 − strength) Σ_a p_a q_a``."""
    return _collapse(psi, pairs, strength, seed, step, offset, out, target)


def _collapse(psi, pairs, strength, seed, step, offset, out, target):
    target = resolve_target(target)
    a = as_amplitudes(psi, target=target)
    s = _stacked(a)
    seed = as_counter(seed, "seed", 64)
    step = as_counter(step, "step", 32)
    offset = as_counter(offset, "offset", 64)
    if offset + s.shape[1] > 2 ** 64:
        raise ValueError("offset + number of entities must be <= 2**64")
    strengths = None
    if pairs is not None:
        pairs = as_pairs(pairs, s.shape[1])
        strengths = np.full(len(pairs), as_fraction(strength, "strength"))
    out = as_output(out, tuple(a.shape)[:-1], np.int64, [a])
    collapse_outcomes(s, seed, step, np.arange(s.shape[0], dtype=np.int64), offset=offset,
                      pairs=pairs, strengths=strengths, out=out.reshape(tuple(s.shape)[:2]),
                      target=target)
    return _like(psi, out)


def basis(outcomes, S):
    """Basis-state amplitudes ``(..., S)`` (complex128 one-hot) of integer ``outcomes (...)`` in
    ``[0, S)``."""
    idx = np.asarray(outcomes)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"outcomes must be integers, got dtype {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= S):
        raise ValueError(f"outcomes must be in [0, {S})")
    out = np.zeros(idx.shape + (S,), np.complex128)
    np.put_along_axis(out, idx[..., None].astype(np.intp), 1.0, axis=-1)
    return out
