"""Metric models as typed parameter records, evaluated point-wise by static dispatch.

A model is a small ``NamedTuple`` of arrays and numbers, one record type per model family. The
generic kernels (connection, curvature, geodesics) call

    metric_at(model, x, order, g, dg, d2g, work)

which writes ``g (d, d)`` and, for ``order >= 1``, ``dg[k, i, j] = ∂_k g_ij`` and, for
``order >= 2``, ``d2g[k, l, i, j] = ∂_k ∂_l g_ij`` at the point ``x (d,)`` into caller-owned buffers
(``work`` is the scratch tuple of ``workspace(d)``). The implementation is chosen by the record's
type at compile time through ``numba.extending.overload``: one generic kernel, specialised per
model family, and cached on disk per family (a factory closure would be recompiled in every process).

Kernels that also accept tabulated metrics read points through ``load_metric(source, Q, m, ...)``:
a ``Tabulated`` record copies the m-th slice of given ``(g, dg, d2g)`` arrays; any model evaluates
itself at ``Q[m]``.
"""
import functools
import math
from typing import NamedTuple

import numpy as np
from numba import njit, types
from numba.extending import overload

from .config import INLINE_JIT, JIT, uncached
from .grid import neighbour_cell
from .linalg import spd_inverse
from .validation import as_batch, as_real_array, check_finite, check_spd, frozen

_OVERLOAD_JIT = dict(JIT, cache=False)
"""Options of the overload implementations below. They are compiled into the cached kernels that call
them, so caching them on their own adds nothing; and an implementation specialised on a ``Custom``
record (whose type changes in every process) would leave a new cache file behind on every run."""


# Closed-form records carry ``static_dim``, an empty array with one axis per dimension: its number
# of axes is part of the record's type, so kernels are compiled per dimension with loop bounds the
# compiler knows and unrolls (for d = 2 a loop nest costs ~30x less). Above MAX_STATIC_DIM it has no
# axes and the dimension is read at run time. Make it with ``static_dim(d)``.

class EuclideanParams(NamedTuple):
    static_dim: np.ndarray


class SphereParams(NamedTuple):
    """Round sphere of ``radius`` in the stereographic chart."""
    static_dim: np.ndarray
    radius: float


class HalfSpaceParams(NamedTuple):
    """Hyperbolic upper half-space, ``g = I / x_last²``."""
    static_dim: np.ndarray


class BallParams(NamedTuple):
    """Hyperbolic Poincaré ball, ``g = 4 I / (1 - |x|²)²``."""
    static_dim: np.ndarray


MAX_STATIC_DIM = 8


def static_dim(dim):
    """The ``static_dim`` field of a closed-form record of dimension ``dim``."""
    return np.empty((0,) * dim if dim <= MAX_STATIC_DIM else ())


class ConstantParams(NamedTuple):
    """A constant metric ``G (d, d)`` (the Mahalanobis metric of a covariance model)."""
    G: np.ndarray


_LOCAL_FIELDS = [("points", np.ndarray), ("cell_start", np.ndarray), ("axes", np.ndarray),
                 ("origin", np.ndarray), ("inv_width", float), ("shape", np.ndarray),
                 ("cutoff", float), ("sigma", float), ("rho", float)]
LocalDiagonalParams = NamedTuple("LocalDiagonalParams", _LOCAL_FIELDS)
LocalDiagonalParams.__doc__ = "g(x) = diag(Σ_n w_n(x)(X_n - x)² + ρ)⁻¹ over the references of a cell grid."
LocalCovarianceParams = NamedTuple("LocalCovarianceParams", _LOCAL_FIELDS)
LocalCovarianceParams.__doc__ = "g(x) = (C(x) + ρI)⁻¹, C the w-weighted local covariance, over a cell grid."


class CustomParams(NamedTuple):
    """A user's compiled ``g_fn(x, out)``; derivatives by 4th-order central differences of width ``step``."""
    g_fn: object
    step: float


class TabulatedParams(NamedTuple):
    """Metric and derivatives given as arrays ``g (M,d,d)``, ``dg (M,d,d,d)``, ``d2g (M,d,d,d,d)``."""
    g: np.ndarray
    dg: np.ndarray
    d2g: np.ndarray


@njit(**INLINE_JIT)
def workspace_size(d):
    """Length of the flat buffer behind ``workspace(d)``."""
    return 2 * d + 3 * d * d + 2 * d ** 3 + d ** 4


@njit(**INLINE_JIT)
def workspace_views(flat, d):
    """``metric_at``'s scratch in dimension ``d``, carved from ``flat`` (``workspace_size(d)`` long):
    vectors ``(d,)`` x2, matrices ``(d, d)`` x3, rank-3 ``(d, d, d)`` x2, rank-4 ``(d, d, d, d)``."""
    a, b = 2 * d, 2 * d + d * d
    c, e = b + d * d, b + 2 * d * d
    f, h = e + d ** 3, e + 2 * d ** 3
    return (flat[:d], flat[d:a], flat[a:b].reshape((d, d)), flat[b:c].reshape((d, d)),
            flat[c:e].reshape((d, d)), flat[e:f].reshape((d, d, d)), flat[f:h].reshape((d, d, d)),
            flat[h:h + d ** 4].reshape((d, d, d, d)))


@njit(**INLINE_JIT)
def workspace(d):
    """One thread's scratch for ``metric_at`` in dimension ``d`` (see ``workspace_views``), allocated
    once per block of points (carving views per point would cost a reshape, ~100 ns, per point)."""
    return workspace_views(np.empty(workspace_size(d)), d)


def point_dim(source, Q):
    """Dimension of the points: a compile-time constant for records with ``static_dim``, else
    ``Q.shape[1]``."""
    return Q.shape[1]


def metric_at(model, x, order, g, dg, d2g, work):
    """Write the metric of ``model`` at ``x`` (and derivatives up to ``order``).

    Compiled code dispatches on the record's type at compile time; called from Python (as the CUDA
    simulator does) the same implementation runs through ``EVALUATORS``."""
    EVALUATORS[type(model)](model, x, order, g, dg, d2g, work)


def load_metric(source, Q, m, order, g, dg, d2g, work):
    """Metric of point ``m``: ``source`` evaluated at ``Q[m]``, or the m-th slice of a ``Tabulated``."""
    _choose_load(source)(source, Q, m, order, g, dg, d2g, work)


def in_chart(model, x):
    """True if ``x`` lies inside the chart of ``model`` (the half-space needs ``x_last > 0``, the ball
    ``|x| < 1``, the sphere's stereographic chart ``|x| < 1e8 r``: beyond, its pole is closer than
    the chart can resolve; other charts cover R^d)."""
    return CHARTS.get(type(model), _anywhere)(model, x)


EVALUATORS = {}
"""Record type -> ``metric_at`` implementation (plain Python functions, compiled where called)."""
_INLINED = {}
"""Record type -> ``"always"`` (closed forms, inlined into CPU kernels) or ``"never"``."""
CHARTS = {}
"""Record type -> ``in_chart`` implementation, for charts that do not cover all of R^d."""


def _record(typ):
    """The record class of a Numba named-tuple type (or of a Python record), else None."""
    if isinstance(typ, types.BaseNamedTuple):
        return typ.instance_class
    return type(typ) if isinstance(typ, tuple) else None


def _choose_metric(inline, model, *args):
    record = _record(model)
    if record in EVALUATORS and inline in (None, _INLINED[record]):
        return EVALUATORS[record]


def _choose_chart(model, x):
    if _record(model) is not None:
        return CHARTS.get(_record(model), _anywhere)


def _choose_load(source, *args):
    record = _record(source)
    if record is TabulatedParams:
        return _load_tabulated
    if record is not None:
        return _load_model


def _choose_dim(source, Q):
    if isinstance(source, types.BaseNamedTuple) and "static_dim" in source.fields:
        d = source.types[source.fields.index("static_dim")].ndim
        if d > 0:
            return lambda source, Q: d
    if isinstance(source, types.BaseNamedTuple):
        return point_dim


def _typing(stub, choose):
    """``overload``'s typing function for ``stub``: its signature, answered by ``choose(*types)``."""
    @functools.wraps(stub)
    def typing(*args):
        return choose(*args)
    return typing


def register_target(target="cpu"):
    """Register the compiled implementations of ``metric_at``, ``load_metric``, ``in_chart`` and
    ``point_dim`` for a Numba ``target``. On the CPU the closed forms are inlined into the kernels (a
    call costs more than their arithmetic) and the data models' evaluators stay calls (compile time);
    on ``"cuda"`` everything is a device-function call (NVVM inlines on its own)."""
    cpu = target == "cpu"
    for inline in ("always", "never") if cpu else (None,):
        overload(metric_at, jit_options=_OVERLOAD_JIT, inline=inline or "never", target=target)(
            _typing(metric_at, functools.partial(_choose_metric, inline)))
    for stub, choose in ((load_metric, _choose_load), (in_chart, _choose_chart),
                         (point_dim, _choose_dim)):
        overload(stub, jit_options=_OVERLOAD_JIT, inline="always" if cpu else "never",
                 target=target)(_typing(stub, choose))


def _evaluator(record, inline="always"):
    """Register the decorated function as ``metric_at``'s implementation for models of ``record``
    (``inline``: see ``register_target``)."""
    def register(impl):
        EVALUATORS[record] = impl
        _INLINED[record] = inline
        return impl
    return register


def _chart(record):
    """Register the decorated function as ``in_chart``'s implementation for models of ``record``."""
    def register(impl):
        CHARTS[record] = impl
        return impl
    return register


def _anywhere(model, x):
    return True


def _load_tabulated(source, Q, m, order, g, dg, d2g, work):
    n = g.shape[0]
    for i in range(n):
        for j in range(n):
            g[i, j] = source.g[m, i, j]
    if order >= 1:
        for k in range(n):
            for i in range(n):
                for j in range(n):
                    dg[k, i, j] = source.dg[m, k, i, j]
    if order >= 2:
        for k in range(n):
            for l in range(n):
                for i in range(n):
                    for j in range(n):
                        d2g[k, l, i, j] = source.d2g[m, k, l, i, j]


def _load_model(source, Q, m, order, g, dg, d2g, work):
    metric_at(source, Q[m], order, g, dg, d2g, work)


@_chart(HalfSpaceParams)
def _in_half_space(model, x):
    return x[x.shape[0] - 1] > 0.0


@_chart(BallParams)
def _in_ball(model, x):
    return _squared_norm(x) < 1.0


@_chart(SphereParams)
def _in_sphere_chart(model, x):  # within ~2e-8 r of the pole the chart has no precision left
    return _squared_norm(x) < 1e16 * model.radius * model.radius


# --- closed forms ------------------------------------------------------------------------------

@njit(**INLINE_JIT)
def _fill_conformal(lam, dlam_coef, d2lam_diag, d2lam_coef, x, order, g, dg, d2g):
    """``g = λ² I`` with ``∂_k λ = dlam_coef·x_k`` and ``∂_k∂_l λ = d2lam_diag·δ_kl + d2lam_coef·x_k x_l``
    (every radial conformal factor λ(|x|²) has this form)."""
    n = g.shape[0]
    for i in range(n):
        for j in range(n):
            g[i, j] = lam * lam if i == j else 0.0
    for k in range(n if order >= 1 else 0):
        v = 2.0 * lam * dlam_coef * x[k]
        for i in range(n):
            for j in range(n):
                dg[k, i, j] = v if i == j else 0.0
        for l in range(n if order >= 2 else 0):
            d2lam = d2lam_coef * x[k] * x[l] + (d2lam_diag if k == l else 0.0)
            v = 2.0 * (dlam_coef * x[k] * dlam_coef * x[l] + lam * d2lam)
            for i in range(n):
                for j in range(n):
                    d2g[k, l, i, j] = v if i == j else 0.0


@njit(**INLINE_JIT)
def _squared_norm(x):
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i] * x[i]
    return s


@_evaluator(EuclideanParams)
def _euclidean(model, x, order, g, dg, d2g, work):
    _fill_conformal(1.0, 0.0, 0.0, 0.0, x, order, g, dg, d2g)


@_evaluator(SphereParams)
def _sphere(model, x, order, g, dg, d2g, work):
    # λ = 2r²/(r² + s), s = |x|²: λ' = -2r²/(r²+s)², λ'' = 4r²/(r²+s)³; ∂_k λ = 2λ' x_k, ∂_kl λ = 2λ'δ + 4λ'' x x
    r2 = model.radius * model.radius
    q = 1.0 / (r2 + _squared_norm(x))
    d1 = -2.0 * r2 * q * q
    d2 = 4.0 * r2 * q * q * q
    _fill_conformal(2.0 * r2 * q, 2.0 * d1, 2.0 * d1, 4.0 * d2, x, order, g, dg, d2g)


@_evaluator(BallParams)
def _ball(model, x, order, g, dg, d2g, work):
    # λ = 2/(1 - s): λ' = 2/(1-s)², λ'' = 4/(1-s)³
    q = 1.0 / (1.0 - _squared_norm(x))
    d1 = 2.0 * q * q
    d2 = 4.0 * q * q * q
    _fill_conformal(2.0 * q, 2.0 * d1, 2.0 * d1, 4.0 * d2, x, order, g, dg, d2g)


@_evaluator(HalfSpaceParams)
def _half_space(model, x, order, g, dg, d2g, work):
    # g = y⁻² I, y = x_last: ∂_y g_ii = -2 y⁻³, ∂_y² g_ii = 6 y⁻⁴
    n = g.shape[0]
    inv_y = 1.0 / x[n - 1]
    for i in range(n):
        for j in range(n):
            g[i, j] = inv_y * inv_y if i == j else 0.0
            for k in range(n if order >= 1 else 0):
                dg[k, i, j] = -2.0 * inv_y ** 3 if i == j and k == n - 1 else 0.0
                for l in range(n if order >= 2 else 0):
                    d2g[k, l, i, j] = 6.0 * inv_y ** 4 if i == j and k == l == n - 1 else 0.0


@_evaluator(ConstantParams)
def _constant(model, x, order, g, dg, d2g, work):
    n = g.shape[0]
    for i in range(n):
        for j in range(n):
            g[i, j] = model.G[i, j]
            for k in range(n if order >= 1 else 0):
                dg[k, i, j] = 0.0
                for l in range(n if order >= 2 else 0):
                    d2g[k, l, i, j] = 0.0


# --- metrics from data: Gaussian-weighted local moments over the cell grid ---------------------

@njit(**JIT)
def _local_moments(p, x, order, diagonal, m1, m2, m3, m4, D):
    """Weighted moments of ``D_n = X_n - x`` over references within the cutoff; returns ``m0 = Σ w_n``.

    ``m1[i] = Σ w D_i``, ``m2[i,j] = Σ w D_i D_j``, and as ``order`` asks ``m3[k,i,j] = Σ w D_k D_i D_j``,
    ``m4[k,l,i,j] = Σ w D_k D_l D_i D_j`` (with ``diagonal`` only the entries ``j == i`` of m3, m4).
    """
    n = x.shape[0]
    inv_s2 = 1.0 / (p.sigma * p.sigma)
    cut2 = p.cutoff * p.cutoff
    m0 = 0.0
    m1[...] = 0.0
    m2[...] = 0.0
    if order >= 1:
        m3[...] = 0.0
    if order >= 2:
        m4[...] = 0.0
    for t in range(3 ** p.axes.shape[0]):
        c = neighbour_cell(t, x, p.axes, p.origin, p.inv_width, p.shape)
        if c < 0:
            continue
        for r in range(p.cell_start[c], p.cell_start[c + 1]):
            r2 = 0.0
            for i in range(n):
                D[i] = p.points[r, i] - x[i]
                r2 += D[i] * D[i]
            if r2 > cut2:
                continue
            w = math.exp(-0.5 * r2 * inv_s2)
            m0 += w
            for i in range(n):
                wi = w * D[i]
                m1[i] += wi
                for j in range(i, n):
                    wij = wi * D[j]
                    m2[i, j] += wij
                    if order >= 1 and (j == i or not diagonal):
                        for k in range(n):
                            wijk = wij * D[k]
                            m3[k, i, j] += wijk
                            if order >= 2:
                                for l in range(k, n):
                                    m4[k, l, i, j] += wijk * D[l]
    # mirror the symmetric halves that were skipped
    for i in range(n):
        for j in range(i + 1, n):
            m2[j, i] = m2[i, j]
            if order >= 1 and not diagonal:
                for k in range(n):
                    m3[k, j, i] = m3[k, i, j]
    if order >= 2:
        for k in range(n):
            for l in range(k + 1, n):
                for i in range(n):
                    for j in range(i, n):
                        if j == i or not diagonal:
                            m4[l, k, i, j] = m4[k, l, i, j]
        if not diagonal:
            for k in range(n):
                for l in range(n):
                    for i in range(n):
                        for j in range(i + 1, n):
                            m4[k, l, j, i] = m4[k, l, i, j]
    return m0


@_evaluator(LocalDiagonalParams, inline="never")
def _local_diagonal(model, x, order, g, dg, d2g, work):
    # h_i = Σ w D_i² + ρ, g = diag(1/h); ∂w = w D/σ², ∂D_i = -e_i (see DESIGN.md, Metric models)
    n = x.shape[0]
    D, m1, m2, dh, chol, m3, A, m4 = work
    m0 = _local_moments(model, x, order, True, m1, m2, m3, m4, D)
    inv_s2 = 1.0 / (model.sigma * model.sigma)
    g[...] = 0.0
    for i in range(n):
        g[i, i] = 1.0 / (m2[i, i] + model.rho)
    if order >= 1:
        dg[...] = 0.0
        for k in range(n):
            for i in range(n):
                dh[k, i] = m3[k, i, i] * inv_s2 - (2.0 * m1[i] if k == i else 0.0)
                dg[k, i, i] = -dh[k, i] * g[i, i] * g[i, i]
    if order >= 2:
        d2g[...] = 0.0
        for k in range(n):
            for l in range(n):
                for i in range(n):
                    d2h = m4[k, l, i, i] * inv_s2 * inv_s2
                    if k == l:
                        d2h -= m2[i, i] * inv_s2
                    if l == i:
                        d2h -= 2.0 * m2[k, i] * inv_s2
                    if k == i:
                        d2h -= 2.0 * m2[l, i] * inv_s2
                    if k == i and l == i:
                        d2h += 2.0 * m0
                    gi = g[i, i]
                    d2g[k, l, i, i] = -d2h * gi * gi + 2.0 * dh[k, i] * dh[l, i] * gi * gi * gi


@_evaluator(LocalCovarianceParams, inline="never")
def _local_covariance(model, x, order, g, dg, d2g, work):
    # C = S2/W with W = Σw, S2 = Σ w D Dᵀ; M = C + ρI; g = M⁻¹, ∂g = -g ∂M g,
    # ∂_k∂_l g = -(A_k ∂_l g + A_l ∂_k g + g ∂_k∂_l M g) with A_k = g ∂_k M.
    n = x.shape[0]
    D, m1, C, tmp, chol, dC, A, d2C = work
    W = _local_moments(model, x, order, False, m1, C, dC, d2C, D)
    inv_s2 = 1.0 / (model.sigma * model.sigma)
    if W > 0.0:
        # moments -> ∂²C, ∂C, C in place (m4 -> ∂²C, m3 -> ∂C, m2 -> C), from S2 = C W:
        # ∂W_k = m1_k/σ², ∂²W_kl = m2_kl/σ⁴ - δ_kl W/σ², ∂S2_kij = m3_kij/σ² - δ_ik m1_j - δ_jk m1_i,
        # ∂²S2_klij = m4_klij/σ⁴ - (δ_kl m2_ij + δ_il m2_kj + δ_jl m2_ki + δ_ik m2_lj + δ_jk m2_li)/σ²
        #             + W (δ_ik δ_jl + δ_jk δ_il)
        # ∂C = (∂S2 - C ∂W)/W,  ∂²C_kl = (∂²S2_kl - ∂C_k ∂W_l - ∂C_l ∂W_k - C ∂²W_kl)/W
        inv_w = 1.0 / W
        if order >= 2:
            for k in range(n):
                for l in range(n):
                    d2W = C[k, l] * inv_s2 * inv_s2 - (W * inv_s2 if k == l else 0.0)
                    for i in range(n):
                        for j in range(n):
                            v = d2C[k, l, i, j] * inv_s2 * inv_s2
                            if k == l:
                                v -= C[i, j] * inv_s2
                            if i == l:
                                v -= C[k, j] * inv_s2
                            if j == l:
                                v -= C[k, i] * inv_s2
                            if i == k:
                                v -= C[l, j] * inv_s2
                            if j == k:
                                v -= C[l, i] * inv_s2
                            if i == k and j == l:
                                v += W
                            if j == k and i == l:
                                v += W
                            d2C[k, l, i, j] = v - d2W * C[i, j] * inv_w
        if order >= 1:
            for k in range(n):
                for i in range(n):
                    for j in range(n):
                        v = dC[k, i, j] * inv_s2
                        if i == k:
                            v -= m1[j]
                        if j == k:
                            v -= m1[i]
                        dC[k, i, j] = (v - C[i, j] * inv_w * m1[k] * inv_s2) * inv_w
        if order >= 2:
            for k in range(n):
                for l in range(n):
                    for i in range(n):
                        for j in range(n):
                            d2C[k, l, i, j] = (d2C[k, l, i, j] - dC[k, i, j] * m1[l] * inv_s2
                                               - dC[l, i, j] * m1[k] * inv_s2) * inv_w
        for i in range(n):
            for j in range(n):
                C[i, j] *= inv_w
    else:  # no reference within the cutoff: zero local covariance, g = I/ρ
        C[...] = 0.0
        if order >= 1:
            dC[...] = 0.0
        if order >= 2:
            d2C[...] = 0.0
    for i in range(n):
        C[i, i] += model.rho
    spd_inverse(C, g, chol)
    if order >= 1:
        for k in range(n):
            _matmul(g, dC[k], A[k])
            _matmul(A[k], g, dg[k])
            for i in range(n):
                for j in range(n):
                    dg[k, i, j] = -dg[k, i, j]
    if order >= 2:
        for k in range(n):
            for l in range(k, n):
                _matmul(g, d2C[k, l], tmp)
                _matmul(tmp, g, chol)
                for i in range(n):
                    for j in range(n):
                        s = chol[i, j]
                        for q in range(n):
                            s += A[k, i, q] * dg[l, q, j] + A[l, i, q] * dg[k, q, j]
                        d2g[k, l, i, j] = -s
                        d2g[l, k, i, j] = -s


@njit(**INLINE_JIT)
def _matmul(a, b, out):
    n = a.shape[0]
    for i in range(n):
        for j in range(n):
            s = 0.0
            for q in range(n):
                s += a[i, q] * b[q, j]
            out[i, j] = s


# --- a user's metric: derivatives by 4th-order central differences ------------------------------

_STENCIL_OFFSETS = np.array([-2.0, -1.0, 1.0, 2.0])
_FIRST = np.array([1.0, -8.0, 8.0, -1.0]) / 12.0            # f' ≈ Σ c f(x + o h) / h
_SECOND = np.array([-1.0, 16.0, 16.0, -1.0]) / 12.0          # f'' ≈ (Σ c f(x + o h) - 30/12 f(x)) / h²


@_evaluator(CustomParams, inline="never")
def _custom(model, x, order, g, dg, d2g, work):
    _custom_stencil(model.g_fn, model.step, x, order, g, dg, d2g, work)


def custom_record(record):
    """The ``CustomParams`` record as a GPU takes it. A compiled function inside a kernel argument
    can be called on the CPU but not on a GPU; there the function moves from the record into the
    evaluator of a record type of its own (one per function), which calls it as a global."""
    return _custom_record_type(record.g_fn)(record.step)


@functools.lru_cache(maxsize=None)
def _custom_record_type(g_fn):
    record = NamedTuple("CustomFunctionParams", [("step", float)])

    def evaluate(model, x, order, g, dg, d2g, work):
        _custom_stencil(g_fn, model.step, x, order, g, dg, d2g, work)
    _evaluator(record, inline="never")(evaluate)
    return record


@njit(**dict(INLINE_JIT, cache=False))  # its argument types include the user's function
def _custom_stencil(g_fn, h, x, order, g, dg, d2g, work):
    n = x.shape[0]
    xs = work[0]
    gs = work[2]
    g_fn(x, g)
    if order >= 1:
        dg[...] = 0.0
    if order >= 2:
        d2g[...] = 0.0
    if order < 1:
        return
    for k in range(n):
        xs[k] = x[k]
    for k in range(n):
        for a in range(4):
            xs[k] = x[k] + _STENCIL_OFFSETS[a] * h
            g_fn(xs, gs)
            for i in range(n):
                for j in range(n):
                    dg[k, i, j] += _FIRST[a] * gs[i, j] / h
                    if order >= 2:
                        d2g[k, k, i, j] += _SECOND[a] * gs[i, j] / (h * h)
            if order >= 2:
                for l in range(k + 1, n):
                    for b in range(4):
                        xs[l] = x[l] + _STENCIL_OFFSETS[b] * h
                        g_fn(xs, gs)
                        c = _FIRST[a] * _FIRST[b] / (h * h)
                        for i in range(n):
                            for j in range(n):
                                d2g[k, l, i, j] += c * gs[i, j]
                                d2g[l, k, i, j] += c * gs[i, j]
                    xs[l] = x[l]
        xs[k] = x[k]
        if order >= 2:
            for i in range(n):
                for j in range(n):
                    d2g[k, k, i, j] -= 2.5 * g[i, j] / (h * h)


def run(kernel, source, *args):
    """Call ``kernel(source, *args)`` with the record's arrays read-only (``validation.frozen``); a
    ``Custom`` model runs the kernel's uncached twin (``config.uncached``), since a user's function
    has a new type in every process."""
    if isinstance(source, CustomParams):
        kernel = uncached(kernel)
    return kernel(frozen(source), *args)


def tabulated_source(g, dg=None, d2g=None):
    """Validate metric arrays and wrap them as a source: returns ``(source, Q, single)``.

    ``g (M, d, d)``, ``dg (M, d, d, d)``, ``d2g (M, d, d, d, d)``, or the same without the leading
    axis for one point (then ``single`` is True). ``g`` must be symmetric positive definite and every
    array finite. Derivatives not given become zero-size stand-ins (kernels that need them are not
    called without them). ``Q`` is an all-zero ``(M, d)`` stand-in for the query points.
    """
    g = as_real_array(g, "g")
    single = g.ndim == 2
    if single:
        g = g[None]
    if g.ndim != 3 or g.shape[1] != g.shape[2] or g.shape[0] == 0 or g.shape[1] == 0:
        raise ValueError(f"g must have shape (M, d, d) or (d, d) with M, d >= 1, got {g.shape}")
    M, n, _ = g.shape
    check_finite(g, "g")
    check_spd(g, "g")
    arrays = []
    for name, a, rank in (("dg", dg, 3), ("d2g", d2g, 4)):
        if a is None:
            arrays.append(np.zeros((0,) + (n,) * rank))
            continue
        a = as_real_array(a, name)
        a = a[None] if single else a
        arrays.append(as_batch(a, name, (n,) * rank, M))
    return TabulatedParams(g, arrays[0], arrays[1]), np.zeros((M, n)), single


register_target("cpu")
