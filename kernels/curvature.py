"""Curvature of the Levi-Civita connection: Riemann, Ricci, scalar and sectional, point-wise and batched.

Conventions (DESIGN.md): ``R[a, b, c, e] = R^a_bce`` with ``R(∂_c, ∂_e)∂_b = R^a_bce ∂_a``, so
``R^a_bce = ∂_c Γ^a_eb − ∂_e Γ^a_cb + Γ^a_cp Γ^p_eb − Γ^a_ep Γ^p_cb``; ``Ric_be = R^a_bae``;
``S = g^{be} Ric_be``; ``K(u, v) = R(u, v, v, u) / (g(u,u) g(v,v) − g(u,v)²)``. The round sphere of
radius r has K = +1/r². Ricci, scalar and sectional curvature are contracted early: they never form
∂Γ or Riemann (both d⁴ per point), only the contractions they need.
"""
from numba import njit

from .config import INLINE_JIT, JIT



@njit(**INLINE_JIT)
def _dgamma_lower(d2g, c, l, e, b):
    """``∂_c Γ_{l,eb}`` (first kind) from second derivatives of the metric."""
    return 0.5 * (d2g[c, e, b, l] + d2g[c, b, e, l] - d2g[c, l, e, b])


@njit(**JIT)
def riemann_point(dgamma, gamma, R):
    """``R[a, b, c, e] = R^a_bce`` from ``dgamma[c, a, e, b] = ∂_c Γ^a_eb`` and Γ."""
    n = gamma.shape[0]
    for a in range(n):
        for b in range(n):
            for c in range(n):
                R[a, b, c, c] = 0.0
                for e in range(c + 1, n):
                    s = dgamma[c, a, e, b] - dgamma[e, a, c, b]
                    for p in range(n):
                        s += gamma[a, c, p] * gamma[p, e, b] - gamma[a, e, p] * gamma[p, c, b]
                    R[a, b, c, e] = s
                    R[a, b, e, c] = -s


@njit(**JIT)
def ricci_point(ginv, dg, d2g, gamma, P, w, ric):
    """``ric[b, e] = Ric_be`` without forming ∂Γ; ``P (d, d, d)`` and ``w (d,)`` are scratch.

    ``Ric_be = ∂_a Γ^a_eb − ∂_e Γ^a_ab + Γ^a_ap Γ^p_eb − Γ^a_ep Γ^p_ab`` with
    ``∂_a Γ^a_eb = g^{al} ∂_a Γ_{l,eb} − u_q Γ^q_eb``, ``u_q = g^{al} ∂_a g_lq``, and
    ``∂_e Γ^a_ab = g^{al} ∂_e Γ_{l,ab} − P[e, a, q] Γ^q_ab``, ``P[e] = g⁻¹ ∂_e g``.
    """
    n = ginv.shape[0]
    for e in range(n):
        for a in range(n):
            for q in range(n):
                s = 0.0
                for l in range(n):
                    s += ginv[a, l] * dg[e, l, q]
                P[e, a, q] = s
    for q in range(n):  # w_q = Γ^a_aq − u_q
        s = 0.0
        for a in range(n):
            s += gamma[a, a, q] - P[a, a, q]
        w[q] = s
    for e in range(n):
        for b in range(e, n):
            s = 0.0
            for a in range(n):
                for l in range(n):
                    s += ginv[a, l] * (_dgamma_lower(d2g, a, l, e, b) - _dgamma_lower(d2g, e, l, a, b))
                for q in range(n):
                    s += P[e, a, q] * gamma[q, a, b] - gamma[a, e, q] * gamma[q, a, b]
            for q in range(n):
                s += w[q] * gamma[q, e, b]
            ric[b, e] = s
            ric[e, b] = s


@njit(**INLINE_JIT)
def scalar_point(ginv, dg, d2g, gamma, P, Y):
    """Scalar curvature ``S = g^{be} Ric_be``, contracted before anything d⁴ is formed per pair of
    indices; ``P`` and ``Y (d, d, d)`` are scratch. With the terms of ``ricci_point``:

    ``S = g^{be} g^{al} (∂_a∂_e g_bl − ∂_a∂_l g_eb) + (P[e,a,q] − Γ^a_eq) Y[q,a,e] + w_q g^{be} Γ^q_eb``,
    ``Y[q,a,e] = Γ^q_ab g^{be}``.
    """
    n = ginv.shape[0]
    s = 0.0
    for a in range(n):
        for l in range(n):
            t = 0.0
            for b in range(n):
                for e in range(n):
                    t += ginv[b, e] * (d2g[a, e, b, l] - d2g[a, l, e, b])
            s += ginv[a, l] * t
    for e in range(n):
        for a in range(n):
            for q in range(n):
                p = 0.0
                y = 0.0
                for l in range(n):
                    p += ginv[a, l] * dg[e, l, q]
                    y += gamma[q, a, l] * ginv[l, e]
                P[e, a, q] = p
                Y[q, a, e] = y
    for q in range(n):
        wq = 0.0
        for a in range(n):
            wq += gamma[a, a, q] - P[a, a, q]
        s += wq * trace(ginv, gamma[q])
        for a in range(n):
            for e in range(n):
                s += (P[e, a, q] - gamma[a, e, q]) * Y[q, a, e]
    return s


@njit(**INLINE_JIT)
def trace(ginv, t):
    """``g^{be} t_be``."""
    n = ginv.shape[0]
    s = 0.0
    for b in range(n):
        for e in range(n):
            s += ginv[b, e] * t[b, e]
    return s


@njit(**JIT)
def sectional_point(g, dg, d2g, gamma, u, v, gvv, guv):
    """Sectional curvature of the plane of ``u``, ``v`` (d,) without forming R; ``gvv``, ``guv`` scratch.

    ``g(R(u,v)v, u)`` with ``R(u,v)v = (∂_uΓ)(v,v) − (∂_vΓ)(u,v) + Γ(u, Γ(v,v)) − Γ(v, Γ(u,v))``; the
    ``g^{al}`` inside ∂Γ cancels against the lowering by g.
    """
    n = g.shape[0]
    for a in range(n):
        s_vv = 0.0
        s_uv = 0.0
        for e in range(n):
            for b in range(n):
                s_vv += gamma[a, e, b] * v[e] * v[b]
                s_uv += gamma[a, e, b] * u[e] * v[b]
        gvv[a] = s_vv
        guv[a] = s_uv
    num = 0.0
    for l in range(n):
        t = 0.0
        for c in range(n):
            for e in range(n):
                for b in range(n):
                    t += _dgamma_lower(d2g, c, l, e, b) * (u[c] * v[e] - v[c] * u[e]) * v[b]
            for q in range(n):
                t -= dg[c, l, q] * (u[c] * gvv[q] - v[c] * guv[q])
        num += u[l] * t
    for a in range(n):
        ua = 0.0  # (g u)_a
        for d in range(n):
            ua += g[a, d] * u[d]
        t = 0.0
        for c in range(n):
            for p in range(n):
                t += gamma[a, c, p] * (u[c] * gvv[p] - v[c] * guv[p])
        num += ua * t
    guu = 0.0
    gv = 0.0
    gu_v = 0.0
    for i in range(n):
        for j in range(n):
            guu += g[i, j] * u[i] * u[j]
            gv += g[i, j] * v[i] * v[j]
            gu_v += g[i, j] * u[i] * v[j]
    return num / (guu * gv - gu_v * gu_v)
