"""Geodesics of any metric model: exponential map, parallel transport, logarithm map.

A geodesic solves ``ẍ^k = −Γ^k_ij ẋ^i ẋ^j``. The state of one curve is a small 2-D array whose rows
are ``x``, ``v = ẋ`` and, by operation, the transported vector ``W`` (``Ẇ = −Γ(v, W)``) or the
variational columns ``δx_j, δv_j`` (``δẋ = δv``, ``δv̇ = −∂_cΓ(v, v) δx^c − 2 Γ(v, δv)``, started at
``δx = 0, δv = e_j``) whose end values ``δx_j(1)`` are the columns of ``∂ exp(x, v) / ∂v``.

``Γ(v, w)^k = g^{kl} b_l(v, w)`` with ``b_l = ½ (∂_i g_jl + ∂_j g_il − ∂_l g_ij) v^i w^j`` is applied
through a Cholesky solve, never forming Γ (d³ per point instead of d⁴).

Integrators: Dormand–Prince 5(4) with error control on ``x, v`` (and ``W``), or fixed-step RK4.
``log`` shoots: damped Newton on ``exp(x, v) − y`` with the Jacobian from the variational rows; if that
fails, a discrete curve-energy minimisation (coarse to fine) gives a new start for the shooting.
Every pair gets a status; a curve that leaves the chart (or whose metric stops being positive
definite) stops there and is reported, never continued outside.
"""
import math

import numpy as np
from numba import carray, njit, prange, types
from numba.extending import intrinsic

from .config import INLINE_JIT, JIT, NESTED_JIT, PARALLEL_JIT, block_bounds, block_count
from .connection import point_buffers
from .linalg import cholesky, cholesky_solve, solve
from .metric import in_chart, metric_at, point_dim, workspace_size, workspace_views
from .metric import run as run_kernel
from .validation import readonly

EXP, TRANSPORT = range(2)
"""Operations of ``follow_kernel``."""

OK, LEFT_CHART, MAX_STEPS, NOT_CONVERGED = range(4)
"""Per-pair status codes. ``LEFT_CHART``: the curve reached the chart's border (or the metric stopped
being positive definite, or the step size collapsed at a singularity); ``MAX_STEPS``: the adaptive
integrator hit its step limit; ``NOT_CONVERGED``: the logarithm found no velocity within tolerance."""

_GEODESIC, _WITH_TRANSPORT, _VARIATIONAL = range(3)  # right-hand sides

# Dormand–Prince 5(4) (Hairer, Nørsett & Wanner, Solving ODEs I, table 5.2): row s holds the
# coefficients of stage s on stages 0..s-1. FSAL: its last stage point is the 5th-order solution.
_DOPRI = np.array([
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [1 / 5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [3 / 40, 9 / 40, 0.0, 0.0, 0.0, 0.0, 0.0],
    [44 / 45, -56 / 15, 32 / 9, 0.0, 0.0, 0.0, 0.0],
    [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0.0, 0.0, 0.0],
    [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0.0, 0.0],
    [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0],
])
_DOPRI_ERROR = np.array([71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40])
"""Fifth- minus fourth-order weights: the local error estimate is ``h Σ_s E_s K_s``."""

_SAFETY, _MIN_FACTOR, _MAX_FACTOR = 0.9, 0.2, 10.0
_MIN_STEP = 1e-13
"""A step below this fraction of the interval means the solution runs into a singularity."""

RELAX_LEVELS = 5
"""Levels of the curve-energy minimisation: 2, 4, ..., 2**RELAX_LEVELS segments."""
RELAX_SWEEPS = 100
"""Gauss–Seidel sweeps over the nodes per level."""


@njit(**INLINE_JIT)
def _connection(dg, low, v, w, b, out):
    """``out = Γ(v, w)``, i.e. ``out^k = Γ^k_ij v^i w^j``, via the Cholesky factor ``low`` of g."""
    n = v.shape[0]
    for l in range(n):
        s = 0.0
        for i in range(n):
            for j in range(n):
                s += (dg[i, j, l] + dg[j, i, l] - dg[l, i, j]) * v[i] * w[j]
        b[l] = 0.5 * s
    cholesky_solve(low, b, out)


@njit(**INLINE_JIT)
def _solve_column(low, b, col, M, c):
    """``M[:, c] = g⁻¹ b`` through the Cholesky factor ``low`` (``col`` is scratch)."""
    cholesky_solve(low, b, col)
    for k in range(M.shape[0]):
        M[k, c] = col[k]


@njit(**JIT)
def _variational(dg, d2g, low, S, K, s, v, b, col, A, B):
    """Rows ``2..`` of ``K[s]`` for the variational state ``S``: ``δẋ_j = δv_j``,
    ``δv̇_j = −∂_cΓ(v, v) δx_j^c − 2 Γ(v, δv_j)``; ``K[s, 1]`` must already hold ``−Γ(v, v)``."""
    n = low.shape[0]
    # A[:, c] = ∂_c Γ(v, v) = g⁻¹ (∂_c b(v, v) − ∂_c g Γ(v, v)), with Γ(v, v) = −K[s, 1]
    for c in range(n):
        for l in range(n):
            t = 0.0
            for i in range(n):
                for j in range(n):
                    t += (d2g[c, i, j, l] - 0.5 * d2g[c, l, i, j]) * v[i] * v[j]
            for q in range(n):
                t += dg[c, l, q] * K[s, 1, q]
            b[l] = t
        _solve_column(low, b, col, A, c)
    # B[:, j] = Γ(v, e_j)
    for j in range(n):
        for l in range(n):
            t = 0.0
            for i in range(n):
                t += (dg[i, j, l] + dg[j, i, l] - dg[l, i, j]) * v[i]
            b[l] = 0.5 * t
        _solve_column(low, b, col, B, j)
    for j in range(n):
        for k in range(n):
            t = 0.0
            for c in range(n):
                t -= A[k, c] * S[2 + j, c] + 2.0 * B[k, c] * S[2 + n + j, c]
            K[s, 2 + j, k] = S[2 + n + j, k]
            K[s, 2 + n + j, k] = t


@njit(**NESTED_JIT)
def _rhs(model, rhs, S, K, s, g, dg, d2g, low, work, x, v, w, b, c, A, B):
    """``K[s] = dS/dt`` for the state ``S (rows, n)``; False if ``S`` is not finite, ``x`` is outside
    the chart or the metric there is not positive definite. ``x, v, w, b, c (n,)`` and ``A, B (n, n)``
    are scratch. (Rows are copied into vectors rather than viewed: a view made in the step loop
    costs an atomic reference count.) Called, not inlined: one copy of the model's evaluator per
    kernel instead of one per integrator cuts the compile time of ``follow_kernel`` by a third
    (30 s to 18 s for ``Sphere(2)``) for a few per cent of run time."""
    n = g.shape[0]
    total = 0.0
    for i in range(n):
        x[i] = S[0, i]
        v[i] = S[1, i]
        total += x[i] + v[i]
    if not math.isfinite(total) or not in_chart(model, x):
        return False
    metric_at(model, x, 2 if rhs == _VARIATIONAL else 1, g, dg, d2g, work)
    if not cholesky(g, low):
        return False
    _connection(dg, low, v, v, b, c)
    for k in range(n):
        K[s, 0, k] = v[k]
        K[s, 1, k] = -c[k]
    if rhs == _WITH_TRANSPORT:
        for i in range(n):
            w[i] = S[2, i]
        _connection(dg, low, v, w, b, c)
        for k in range(n):
            K[s, 2, k] = -c[k]
    elif rhs == _VARIATIONAL:
        _variational(dg, d2g, low, S, K, s, v, b, c, A, B)
    return True


@njit(**INLINE_JIT)
def _stage_point(y, h, K, tableau, s, out):
    """``out = y + h Σ_{q<s} tableau[s, q] K[q]`` (``tableau`` a constant Butcher matrix)."""
    for r in range(y.shape[0]):
        for k in range(y.shape[1]):
            t = 0.0
            for q in range(s):
                t += tableau[s, q] * K[q, r, k]
            out[r, k] = y[r, k] + h * t


@njit(**INLINE_JIT)
def _rk4(model, rhs, y, t_span, steps, y_stage, K, g, dg, d2g, low, work, x, v, w, b, c, A, B):
    """``steps`` classical RK4 steps over ``t_span``, in place; returns ``(status, steps)``.
    (Stage points written out: RK4's tableau has one term per stage.)"""
    h = t_span / steps
    for _ in range(steps):
        for s in range(4):
            a = 0.0 if s == 0 else (h if s == 3 else 0.5 * h)
            for r in range(y.shape[0]):
                for k in range(y.shape[1]):
                    y_stage[r, k] = y[r, k] + (a * K[s - 1, r, k] if s > 0 else 0.0)
            if not _rhs(model, rhs, y_stage, K, s, g, dg, d2g, low, work, x, v, w, b, c, A, B):
                return LEFT_CHART, 0
        for r in range(y.shape[0]):
            for k in range(y.shape[1]):
                y[r, k] += h / 6.0 * (K[0, r, k] + 2.0 * (K[1, r, k] + K[2, r, k]) + K[3, r, k])
    return OK, steps


@njit(**INLINE_JIT)
def _error_norm(y, y_new, h, K, controlled, rtol, atol):
    """RMS over the ``controlled`` rows of the local error scaled by ``atol + rtol·max(|y|, |y_new|)``."""
    n = y.shape[1]
    total = 0.0
    for r in range(controlled):
        for k in range(n):
            e = 0.0
            for q in range(7):
                e += _DOPRI_ERROR[q] * K[q, r, k]
            scale = atol + rtol * max(abs(y[r, k]), abs(y_new[r, k]))
            total += (h * e / scale) ** 2
    return math.sqrt(total / (controlled * n))


@njit(**INLINE_JIT)
def _first_step(y, K, t_span, controlled, rtol, atol):
    """A first step size from the sizes of ``y`` and ``y' = K[0]`` (the first part of Hairer's guess)."""
    d0 = 0.0
    d1 = 0.0
    for r in range(controlled):
        for k in range(y.shape[1]):
            scale = atol + rtol * abs(y[r, k])
            d0 += (y[r, k] / scale) ** 2
            d1 += (K[0, r, k] / scale) ** 2
    h = 0.01 * math.sqrt(d0 / d1) if d0 > 1e-10 and d1 > 1e-10 else 1e-6 * t_span
    return min(h, t_span)


@njit(**INLINE_JIT)
def _dopri5(model, rhs, y, t_span, controlled, rtol, atol, h, max_steps,
            y_stage, K, g, dg, d2g, low, work, x, v, w, b, c, A, B):
    """Dormand–Prince 5(4) over ``t_span > 0``, in place, with error control on the first
    ``controlled`` rows, starting with the step ``h`` (0: choose one).
    Returns ``(status, accepted steps, proposed next step)``."""
    t = 0.0
    accepted = 0
    have_first = False  # K[0] already holds f(y) (FSAL)
    step = h
    last = False
    for _ in range(max_steps):
        ok = True
        for s in range(7):
            if s > 0 or not have_first:
                _stage_point(y, step, K, _DOPRI, s, y_stage)
                if not _rhs(model, rhs, y_stage, K, s, g, dg, d2g, low, work, x, v, w, b, c, A, B):
                    ok = False
                    break
            if s == 0:
                have_first = True
                if h <= 0.0:
                    h = _first_step(y, K, t_span, controlled, rtol, atol)
                last = t + h >= t_span
                step = t_span - t if last else h
        if not have_first:  # y itself is outside the chart
            return LEFT_CHART, accepted, h
        factor = 0.25
        if ok:
            err = _error_norm(y, y_stage, step, K, controlled, rtol, atol)
            ok = err <= 1.0
            if err == 0.0:
                factor = _MAX_FACTOR
            elif err == err:  # not NaN
                factor = min(_MAX_FACTOR, max(_MIN_FACTOR, _SAFETY * err ** -0.2))
        if ok:  # accept the 5th-order solution, the last stage's point; its derivative is K[6] (FSAL)
            for r in range(y.shape[0]):
                for k in range(y.shape[1]):
                    y[r, k] = y_stage[r, k]
                    K[0, r, k] = K[6, r, k]
            t += step
            accepted += 1
            if last:
                return OK, accepted, h
            h = step * factor
        else:
            h = step * min(factor, 1.0)
            if h < _MIN_STEP * t_span:
                return LEFT_CHART, accepted, h
    return MAX_STEPS, accepted, h


@njit(**INLINE_JIT)
def _quadratic(g, u, w):
    """``g(u, w) = uᵀ g w``."""
    s = 0.0
    for i in range(g.shape[0]):
        for j in range(g.shape[0]):
            s += u[i] * g[i, j] * w[j]
    return s


@njit(**NESTED_JIT)
def _metric_of(model, x, g, dg, d2g, work):
    """The metric at ``x`` into ``g`` (a call: used a few times per curve, not per step)."""
    metric_at(model, x, 0, g, dg, d2g, work)


@njit(**INLINE_JIT)
def _scratch_size(n, rows):
    """Length of one block's flat scratch buffer (see ``_carve``)."""
    return 6 * n * n + n ** 3 + n ** 4 + workspace_size(n) + 9 * rows * n + 8 * n


@intrinsic
def _pointer(typingctx, address):
    """The integer ``address`` as a ``float64*`` (for ``numba.carray``)."""
    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.float64)))
    return types.CPointer(types.float64)(types.uintp), codegen


@njit(**INLINE_JIT)
def _view(flat, offset, shape):
    """A C-contiguous view of ``flat[offset:]`` with ``shape``, without a reference count.

    Made with ``numba.carray``, its shape and strides are compile-time constants when ``shape`` is,
    and it owns no memory: the scratch views of the step loops below then cost no atomic reference
    counting (which Numba cannot prune across their branches, and which cost more than the
    arithmetic of a closed-form metric). The caller must keep ``flat`` alive while a view is used.
    """
    return carray(_pointer(flat.ctypes.data + 8 * offset), shape)


@njit(**INLINE_JIT)
def _carve(flat, n, rows):
    """One block's scratch as views of ``flat`` (``_scratch_size(n, rows)`` long): the metric
    buffers ``g, dg, d2g, low, work``; the state ``y`` and a stage point ``(rows, n)``; stage
    derivatives ``K (7, rows, n)``; vectors ``x, v, w, b, c, r, dv, u_best (n,)``; matrices
    ``A, B, J, g1 (n, n)``. For the closed-form models ``n`` is a compile-time constant, so the
    loops over these views unroll."""
    o = workspace_size(n)
    work = workspace_views(_view(flat, 0, (o,)), n)
    metric = _view(flat, o, (2, n, n))
    dg = _view(flat, o + 2 * n * n, (n, n, n))
    o += 2 * n * n + n ** 3
    d2g = _view(flat, o, (n, n, n, n))
    o += n ** 4
    states = _view(flat, o, (9, rows, n))  # y, y_stage, K[0..6]
    o += 9 * rows * n
    vec = _view(flat, o, (8, n))
    mat = _view(flat, o + 8 * n, (4, n, n))
    g, low, y, y_stage, K = metric[0], metric[1], states[0], states[1], states[2:]
    x, v, w, b, c, r, dv, u_best = vec[0], vec[1], vec[2], vec[3], vec[4], vec[5], vec[6], vec[7]
    A, B, J, g1 = mat[0], mat[1], mat[2], mat[3]
    return g, dg, d2g, low, work, y, y_stage, K, x, v, w, b, c, r, dv, u_best, A, B, J, g1


@njit(**NESTED_JIT)
def _follow_block(model, op, X, V, W, times, steps, rtol, atol, max_steps, lo, hi,
                  out, status, counts, residual, flat):
    """``EXP`` / ``TRANSPORT`` for the pairs ``lo..hi-1`` (see ``follow_kernel``)."""
    n = point_dim(model, X)
    g, dg, d2g, low, work, y, y_stage, K, x, v, w, b, c, _, _, _, A, B, _, _ = _carve(flat, n, 3)
    follow_pairs(model, op, X, V, W, times, steps, rtol, atol, max_steps, lo, hi, out, status,
                 counts, residual, (g, dg, d2g, low, work, y, y_stage, K, x, v, w, b, c, A, B))


@njit(**INLINE_JIT)
def follow_pairs(model, op, X, V, W, times, steps, rtol, atol, max_steps, lo, hi, out, status,
                 counts, residual, scratch):
    """``_follow_block`` on its ``scratch``: metric buffers ``g, dg, d2g, low, work``, states ``y``
    and ``y_stage (3, n)``, stage derivatives ``K (7, 3, n)`` (rows an operation never writes must be
    0), vectors ``x, v, w, b, c (n,)``, matrices ``A, B (n, n)``. Inlined: the CPU kernel keeps its
    scratch shapes compile-time constants; the CUDA kernel passes local arrays. (A tuple: a call
    with more than 30 arguments compiles to ``f(*args)``, which Numba cannot inline.)"""
    g, dg, d2g, low, work, y, y_stage, K, x, v, w, b, c, A, B = scratch
    n = g.shape[0]
    transport = op == TRANSPORT
    rhs = _WITH_TRANSPORT if transport else _GEODESIC
    controlled = 3 if transport else 2
    for m in range(lo, hi):
        for k in range(n):
            y[0, k] = X[m, k]
            y[1, k] = V[m, k]
            y[2, k] = W[m, k] if transport else 0.0
        vv0, ww0, vw0 = _invariants(model, y, g, dg, d2g, work)
        t, h, total, st = 0.0, 0.0, 0, OK
        for s in range(times.shape[0]):
            span = times[s] - t
            if span > 0.0:
                if steps > 0:
                    st, taken = _rk4(model, rhs, y, span, max(1, int(round(steps * span))), y_stage,
                                     K, g, dg, d2g, low, work, x, v, w, b, c, A, B)
                else:
                    st, taken, h = _dopri5(model, rhs, y, span, controlled, rtol, atol, h,
                                           max_steps - total, y_stage, K, g, dg, d2g, low, work,
                                           x, v, w, b, c, A, B)
                total += taken
                if st != OK:
                    break
                t = times[s]
            for k in range(n if op == EXP else 0):
                out[m, s, k] = y[0, k]
        status[m] = st
        counts[m] = total
        if st != OK:
            residual[m] = np.nan
            for s in range(out.shape[1]):
                for k in range(n):
                    out[m, s, k] = np.nan
            continue
        # drift of the conserved quantities between the ends: a check of the integration
        vv1, ww1, vw1 = _invariants(model, y, g, dg, d2g, work)
        if transport:
            for k in range(n):
                out[m, 0, k] = y[2, k]
            drift = abs(ww1 - ww0) / ww0 if ww0 > 0.0 else 0.0
            if vv0 > 0.0 and ww0 > 0.0:
                drift = max(drift, abs(vw1 - vw0) / math.sqrt(vv0 * ww0))
        else:
            drift = abs(vv1 - vv0) / vv0 if vv0 > 0.0 else 0.0
        residual[m] = drift


@njit(**NESTED_JIT)
def _invariants(model, y, g, dg, d2g, work):
    """``g(v, v), g(W, W), g(v, W)`` for the state ``y`` (rows ``x, v, W``), the metric at ``x``."""
    metric_at(model, y[0], 0, g, dg, d2g, work)
    return _quadratic(g, y[1], y[1]), _quadratic(g, y[2], y[2]), _quadratic(g, y[1], y[2])


@njit(**INLINE_JIT)
def _shoot(model, x0, y1, u, rtol, atol, max_steps, tol, max_iter,
           g, dg, d2g, low, work, y, y_stage, K, x, v, w, b, c, r, dv, u_best, A, B, J, g1):
    """Damped Newton on ``exp(x0, u) = y1`` from the guess in ``u`` (overwritten by the best velocity).

    The residual is ``|exp(x0, u) − y1|`` in the metric at ``y1``; success when it is at most
    ``tol · max(1, |y1 − x0|)`` (same norm). A step is halved while the residual does not decrease.
    Returns ``(status, iterations, residual)``.
    """
    n = x0.shape[0]
    _metric_of(model, y1, g1, dg, d2g, work)
    for k in range(n):
        r[k] = x0[k] - y1[k]
        dv[k] = u[k]           # the first Newton direction: the guess itself, from u = 0
        u_best[k] = 0.0
    best = math.sqrt(_quadratic(g1, r, r))
    goal = tol * max(1.0, best)
    if best <= goal:
        for k in range(n):
            u[k] = 0.0
        return OK, 0, best
    lam = 1.0
    h = 0.0
    for it in range(1, max_iter + 1):
        for k in range(n):
            u[k] = u_best[k] + lam * dv[k]
            y[0, k] = x0[k]
            y[1, k] = u[k]
            for j in range(n):
                y[2 + j, k] = 0.0
                y[2 + n + j, k] = 1.0 if j == k else 0.0
        st, _, h = _dopri5(model, _VARIATIONAL, y, 1.0, 2, rtol, atol, h, max_steps,
                           y_stage, K, g, dg, d2g, low, work, x, v, w, b, c, A, B)
        res = np.inf
        if st == OK:
            for k in range(n):
                r[k] = y[0, k] - y1[k]
            res = math.sqrt(_quadratic(g1, r, r))
        if res < best:
            best = res
            for k in range(n):
                u_best[k] = u[k]
            if res <= goal:
                return OK, it, best
            for k in range(n):
                r[k] = -r[k]
                for j in range(n):
                    J[k, j] = y[2 + j, k]
            if not solve(J, r, dv, A):
                break
            lam = 1.0
        else:
            h = 0.0
            lam *= 0.5
            if lam < 1e-4:
                break
    for k in range(n):
        u[k] = u_best[k]
    return NOT_CONVERGED, max_iter, best


@njit(**NESTED_JIT)
def _node_step(model, curve, k, scale, g, dg, d2g, low, work, vecs, H):
    """One Newton-like update of node ``k`` of the discrete curve energy
    ``E = Σ_j scale · Δ_jᵀ g(m_j) Δ_j`` (``Δ_j = x_{j+1} − x_j``, ``m_j`` the midpoint, ``scale``
    the number of segments): ``x_k −= H⁻¹ ∂E/∂x_k`` with ``H = 2 scale (g(m_{k−1}) + g(m_k))``."""
    n = g.shape[0]
    grad, delta, mid, step = vecs[0], vecs[1], vecs[2], vecs[3]
    grad[:] = 0.0
    H[:, :] = 0.0
    for j in range(k - 1, k + 1):
        sign = 1.0 if j == k - 1 else -1.0  # ∂Δ_j/∂x_k
        for i in range(n):
            delta[i] = curve[j + 1, i] - curve[j, i]
            mid[i] = 0.5 * (curve[j + 1, i] + curve[j, i])
        if not in_chart(model, mid):
            return
        metric_at(model, mid, 1, g, dg, d2g, work)
        for c in range(n):
            s = 0.0
            for i in range(n):
                s += 2.0 * sign * g[c, i] * delta[i]
                for q in range(n):
                    s += 0.5 * dg[c, i, q] * delta[i] * delta[q]
                H[c, i] += 2.0 * scale * g[c, i]
            grad[c] += scale * s
    if not cholesky(H, low):
        return
    cholesky_solve(low, grad, step)
    total = 0.0
    for i in range(n):
        mid[i] = curve[k, i] - step[i]
        total += mid[i]
    if math.isfinite(total) and in_chart(model, mid):
        for i in range(n):
            curve[k, i] = mid[i]


@njit(**NESTED_JIT)
def _relax(model, x0, y1, v):
    """Minimise the discrete energy of a curve from ``x0`` to ``y1`` (2, 4, ... segments, each level
    started from the previous one, Gauss–Seidel over the nodes); write the initial velocity of the
    result (one-sided second-order difference) into ``v`` and return the curve's nodes."""
    n = x0.shape[0]
    g, _, dg, d2g, _, low, work = point_buffers(n)
    vecs = np.empty((4, n))
    H = np.empty((n, n))
    curve = np.empty((2 ** RELAX_LEVELS + 1, n))
    for i in range(n):
        curve[0, i] = x0[i]
        curve[1, i] = 0.5 * (x0[i] + y1[i])
        curve[2, i] = y1[i]
    segments = 2
    for level in range(RELAX_LEVELS):
        if level > 0:  # refine: old node i -> 2i, midpoints between
            for i in range(segments, -1, -1):
                for c in range(n):
                    curve[2 * i, c] = curve[i, c]
            for i in range(segments):
                for c in range(n):
                    curve[2 * i + 1, c] = 0.5 * (curve[2 * i, c] + curve[2 * i + 2, c])
            segments *= 2
        for _ in range(RELAX_SWEEPS):
            for k in range(1, segments):
                _node_step(model, curve, k, float(segments), g, dg, d2g, low, work, vecs, H)
    for i in range(n):
        v[i] = 0.5 * segments * (-3.0 * curve[0, i] + 4.0 * curve[1, i] - curve[2, i])
    return curve


@njit(**NESTED_JIT)
def _log_block(model, X, Y, rtol, atol, max_steps, tol, max_iter, lo, hi,
               out, status, counts, residual, length, fallback, flat):
    """``LOG`` for the pairs ``lo..hi-1`` (see ``log_kernel``)."""
    n = point_dim(model, X)
    g, dg, d2g, low, work, y, y_stage, K, x, v, w, b, c, r, dv, u_best, A, B, J, g1 = _carve(flat, n, 2 + 2 * n)
    for m in range(lo, hi):
        u = out[m]
        chord = _chord_length(model, X[m], Y[m], g, dg, d2g, work, x, v)
        total = 0
        found = False
        curve = y  # the relaxed curve, once there is one
        for attempt in range(2):
            if attempt == 0:  # the chord's direction, with the chord's length as speed
                for k in range(n):
                    u[k] = Y[m, k] - X[m, k]
                _metric_of(model, X[m], g, dg, d2g, work)
                speed = math.sqrt(_quadratic(g, u, u))
                if math.isfinite(chord) and speed > 0.0:
                    for k in range(n):
                        u[k] *= chord / speed
            else:  # shooting from the chord failed: start from a minimal-energy curve
                curve = _relax(model, X[m], Y[m], u)
            # continuation (fallback only): shoot to the curve's nodes at 1/4 and 1/2 of the way, each
            # solution, rescaled, starting the next, then to Y itself
            stages = 1 if attempt == 0 else 3
            frac = 1.0 if attempt == 0 else 0.25
            for k in range(n):
                u[k] *= frac
            for stage in range(stages):
                target = Y[m] if stage == stages - 1 else curve[int(frac * (curve.shape[0] - 1))]
                st, it, res = _shoot(model, X[m], target, u, rtol, atol, max_steps, tol, max_iter,
                                     g, dg, d2g, low, work, y, y_stage, K, x, v, w, b, c, r, dv,
                                     u_best, A, B, J, g1)
                total += it
                if st != OK:
                    break
                for k in range(n):
                    u[k] *= 2.0  # the sub-curve to twice the fraction: twice the velocity
                frac *= 2.0
            if st == OK:
                for k in range(n):
                    u[k] *= 0.5
            fallback[m] = attempt == 1
            if st == OK:
                _metric_of(model, X[m], g, dg, d2g, work)
                length[m] = math.sqrt(_quadratic(g, u, u))
                # a geodesic longer than the straight segment is not the shortest one
                found = length[m] <= chord * (1.0 + _CHORD_SLACK)
                if found:
                    break
        status[m] = OK if found else NOT_CONVERGED
        counts[m] = total
        residual[m] = res
        if not found:
            length[m] = np.nan
            for k in range(n):
                u[k] = np.nan


_GAUSS_NODES, _GAUSS_WEIGHTS = np.polynomial.legendre.leggauss(8)
_GAUSS_NODES, _GAUSS_WEIGHTS = 0.5 * (_GAUSS_NODES + 1.0), 0.5 * _GAUSS_WEIGHTS
"""8-point Gauss–Legendre rule on [0, 1]."""
_CHORD_PANELS = 4
_CHORD_SLACK = 1e-4
"""The chord length is integrated over ``_CHORD_PANELS`` panels of the 8-point rule, and compared
with a relative slack: it only has to catch geodesics that wind the long way round."""


@njit(**NESTED_JIT)
def _chord_length(model, x0, y1, g, dg, d2g, work, p, d):
    """Length in the metric of the straight segment from ``x0`` to ``y1`` (Gauss–Legendre), an upper
    bound of their distance; infinite when the segment leaves the chart. ``p``, ``d`` are scratch."""
    n = x0.shape[0]
    for k in range(n):
        d[k] = y1[k] - x0[k]
    total = 0.0
    for panel in range(_CHORD_PANELS):
        for q in range(_GAUSS_NODES.shape[0]):
            t = (panel + _GAUSS_NODES[q]) / _CHORD_PANELS
            for k in range(n):
                p[k] = x0[k] + t * d[k]
            if not in_chart(model, p):
                return np.inf
            metric_at(model, p, 0, g, dg, d2g, work)
            total += _GAUSS_WEIGHTS[q] * math.sqrt(max(_quadratic(g, d, d), 0.0))
    return total / _CHORD_PANELS


@njit(**PARALLEL_JIT)
def follow_kernel(model, op, X, V, W, times, steps, rtol, atol, max_steps, n_blocks,
                  out, status, counts, residual):
    """``EXP`` or ``TRANSPORT`` for every pair ``m`` (prepared, validated inputs; ``W`` may be empty
    for ``EXP``).

    ``EXP``: ``out[m] (T, n)`` = points at ``times`` (increasing, in [0, 1]) of the geodesic from
    ``X[m]`` with velocity ``V[m]``; ``residual`` the relative drift of ``g(v, v)`` between the ends.
    ``TRANSPORT``: ``out[m, 0]`` = ``W[m]`` transported to ``t = 1``; ``residual`` the drift of
    ``g(W, W)`` and ``g(v, W)``. ``steps > 0`` selects fixed-step RK4 (``steps`` per unit time), else
    Dormand–Prince to ``rtol``/``atol``; ``counts`` the steps taken. ``status[m]``: ``OK``,
    ``LEFT_CHART`` or ``MAX_STEPS``; a failed pair's ``out[m]`` is NaN.
    """
    n = point_dim(model, X)
    for blk in prange(n_blocks):
        lo, hi = block_bounds(blk, n_blocks, X.shape[0])
        flat = np.zeros(_scratch_size(n, 3))  # zeros: rows an operation never writes stay 0
        _follow_block(model, op, X, V, W, times, steps, rtol, atol, max_steps, lo, hi,
                      out, status, counts, residual, flat)


@njit(**PARALLEL_JIT)
def log_kernel(model, X, Y, rtol, atol, max_steps, tol, max_iter, n_blocks,
               out, status, counts, residual, length, fallback):
    """``LOG`` for every pair ``m``: ``out[m] (n,)`` = the velocity ``v`` with ``exp(X[m], v) = Y[m]``,
    ``length[m] = |v|_g(X[m])``, ``counts`` the Newton iterations, ``residual`` the end-point miss
    (metric at ``Y[m]``), ``fallback[m]`` whether the energy minimisation was needed; ``status[m]``
    ``OK`` or ``NOT_CONVERGED`` (then ``out[m]`` and ``length[m]`` are NaN). A geodesic longer than
    the straight segment between the points (measured in the metric) is not the shortest one and
    does not count as converged: the fallback is tried, then the pair is reported."""
    n = point_dim(model, X)
    for blk in prange(n_blocks):
        lo, hi = block_bounds(blk, n_blocks, X.shape[0])
        flat = np.zeros(_scratch_size(n, 2 + 2 * n))
        _log_block(model, X, Y, rtol, atol, max_steps, tol, max_iter, lo, hi,
                   out, status, counts, residual, length, fallback, flat)


BLOCKS_PER_THREAD = 16
"""Pairs differ in cost (adaptive steps, Newton iterations): more, smaller blocks balance threads."""


def _blocks(M):
    return min(M, block_count(M) * BLOCKS_PER_THREAD // 4)


def follow(model, X, V, W=None, op=EXP, times=(1.0,), steps=0, rtol=1e-10, atol=1e-12,
           max_steps=20_000, target="cpu"):
    """Run ``follow_kernel`` on prepared float64 arrays ``X, V (M, n)`` (and ``W`` for ``TRANSPORT``).

    Returns ``(out, status, counts, residual)``, ``out`` of shape ``(M, len(times), n)`` for ``EXP``
    and ``(M, 1, n)`` for ``TRANSPORT``. ``target="cuda"`` (resolved; ``steps > 0`` only) runs
    ``kernels.gpu.follow``.
    """
    if target == "cuda":
        from . import gpu
        return gpu.follow(model, X, V, W, op, times, steps)
    M, n = X.shape
    times = np.ascontiguousarray(times, dtype=np.float64)
    out = np.empty((M, len(times) if op == EXP else 1, n))
    status = np.empty(M, dtype=np.int64)
    counts = np.zeros(M, dtype=np.int64)
    residual = np.zeros(M)
    run_kernel(follow_kernel, model, op, readonly(X), readonly(V),
               readonly(np.empty((0, n)) if W is None else W), readonly(times),
               int(steps), float(rtol), float(atol), int(max_steps), _blocks(M), out, status, counts,
               residual)
    return out, status, counts, residual


def log(model, X, Y, rtol=1e-10, atol=1e-12, max_steps=20_000, tol=1e-10, max_iter=50):
    """Run ``log_kernel`` on prepared float64 arrays ``X, Y (M, n)``.

    Returns ``(V, status, counts, residual, length, fallback)`` with ``V (M, n)``.
    """
    M, n = X.shape
    out = np.empty((M, n))
    status = np.empty(M, dtype=np.int64)
    counts = np.zeros(M, dtype=np.int64)
    residual = np.zeros(M)
    length = np.zeros(M)
    fallback = np.zeros(M, dtype=np.bool_)
    run_kernel(log_kernel, model, readonly(X), readonly(Y), float(rtol), float(atol), int(max_steps),
               float(tol), int(max_iter), _blocks(M), out, status, counts, residual, length, fallback)
    return out, status, counts, residual, length, fallback
