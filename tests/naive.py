"""Plain NumPy reference implementations that the fast kernels are tested against.

Everything here is float64, vectorised over points, and written to be read
rather than to be fast.

Conventions
-----------
Points are ``(M, d)``. A metric field at M points is ``g[m, i, j]``, its first
derivatives ``dg[m, k, i, j] = d_k g_ij`` and its second derivatives
``d2g[m, k, l, i, j] = d_k d_l g_ij``.

* Christoffel symbols ``gamma[m, k, i, j] = G^k_ij
  = 1/2 g^kl (d_i g_jl + d_j g_il - d_l g_ij)``.
* Riemann tensor ``R[m, a, b, c, e] = R^a_bce`` with
  ``R(d_c, d_e) d_b = R^a_bce d_a``, i.e.
  ``R^a_bce = d_c G^a_eb - d_e G^a_cb + G^a_cp G^p_eb - G^a_ep G^p_cb``.
* Ricci ``Ric_be = R^a_bae``, scalar curvature ``S = g^be Ric_be``.
* Sectional curvature ``K(u, v) = R(u, v, v, u) / (g(u,u) g(v,v) - g(u,v)^2)``
  with ``R(u, v, v, u) = g_da u^d R^a_bce v^b u^c v^e``; the round sphere of
  radius r has ``K = +1/r^2``.
"""

import numpy as np

_MAX_BYTES = 200e6  # memory budget for one chunk of points


# ---------------------------------------------------------------------------
# Curvature from (g, dg, d2g)
# ---------------------------------------------------------------------------

def _christoffel_first_kind(dg):
    """G_lij = 1/2 (d_i g_jl + d_j g_il - d_l g_ij), shape (M, d, d, d) indexed [m, l, i, j]."""
    return 0.5 * (np.einsum("mijl->mlij", dg)
                  + np.einsum("mjil->mlij", dg)
                  - dg)


def christoffel(g, dg):
    """Christoffel symbols of the second kind G^k_ij.

    g (M, d, d), dg (M, d, d, d) -> gamma (M, d, d, d) indexed [m, k, i, j].
    """
    g = np.asarray(g, dtype=np.float64)
    dg = np.asarray(dg, dtype=np.float64)
    return np.einsum("mkl,mlij->mkij", np.linalg.inv(g), _christoffel_first_kind(dg))


def _christoffel_derivative(g, dg, d2g):
    """d_c G^k_ij from g, dg, d2g; shape (M, d, d, d, d) indexed [m, c, k, i, j].

    Uses d_c g^kl = -g^kp (d_c g_pq) g^ql and
    d_c G_lij = 1/2 (d_c d_i g_jl + d_c d_j g_il - d_c d_l g_ij).
    """
    ginv = np.linalg.inv(g)
    dginv = -np.einsum("mkp,mcpq,mql->mckl", ginv, dg, ginv)
    d_first = 0.5 * (np.einsum("mcijl->mclij", d2g)
                     + np.einsum("mcjil->mclij", d2g)
                     - d2g)
    return (np.einsum("mckl,mlij->mckij", dginv, _christoffel_first_kind(dg))
            + np.einsum("mkl,mclij->mckij", ginv, d_first))


def riemann(g, dg, d2g):
    """Riemann tensor R^a_bce.

    g (M, d, d), dg (M, d, d, d), d2g (M, d, d, d, d) -> R (M, d, d, d, d)
    indexed [m, a, b, c, e].
    """
    g = np.asarray(g, dtype=np.float64)
    dg = np.asarray(dg, dtype=np.float64)
    d2g = np.asarray(d2g, dtype=np.float64)
    gam = christoffel(g, dg)                      # [m, k, i, j] = G^k_ij
    dgam = _christoffel_derivative(g, dg, d2g)    # [m, c, k, i, j] = d_c G^k_ij
    return (np.einsum("mcaeb->mabce", dgam)       # d_c G^a_eb
            - np.einsum("meacb->mabce", dgam)     # d_e G^a_cb
            + np.einsum("macp,mpeb->mabce", gam, gam)
            - np.einsum("maep,mpcb->mabce", gam, gam))


def ricci(g, dg, d2g):
    """Ricci tensor Ric_be = R^a_bae; -> (M, d, d)."""
    return np.einsum("mabae->mbe", riemann(g, dg, d2g))


def scalar_curvature(g, dg, d2g):
    """Scalar curvature g^be Ric_be; -> (M,)."""
    g = np.asarray(g, dtype=np.float64)
    return np.einsum("mbe,mbe->m", np.linalg.inv(g), ricci(g, dg, d2g))


def sectional_curvature(g, dg, d2g, u, v):
    """Sectional curvature of the plane spanned by u, v (each (M, d)); -> (M,)."""
    g = np.asarray(g, dtype=np.float64)
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    R = riemann(g, dg, d2g)
    Ruvv = np.einsum("mabce,mb,mc,me->ma", R, v, u, v)   # (R(u, v) v)^a
    numerator = np.einsum("mda,md,ma->m", g, u, Ruvv)
    guu = np.einsum("mij,mi,mj->m", g, u, u)
    gvv = np.einsum("mij,mi,mj->m", g, v, v)
    guv = np.einsum("mij,mi,mj->m", g, u, v)
    return numerator / (guu * gvv - guv ** 2)


# ---------------------------------------------------------------------------
# Closed-form metrics, each returning (g, dg, d2g) at Q (M, d)
# ---------------------------------------------------------------------------

def _conformal(phi, dphi, d2phi):
    """g = phi I from phi (M,), dphi (M, d), d2phi (M, d, d) -> (g, dg, d2g)."""
    eye = np.eye(dphi.shape[1])
    return (phi[:, None, None] * eye,
            dphi[:, :, None, None] * eye,
            d2phi[:, :, :, None, None] * eye)


def euclidean(Q):
    """Flat metric g = I at Q (M, d) -> (g, dg, d2g), all derivatives zero."""
    M, d = np.shape(Q)
    return _conformal(np.ones(M), np.zeros((M, d)), np.zeros((M, d, d)))


def sphere(Q, radius=1.0):
    """Round sphere of the given radius in the stereographic chart.

    g = 4 r^4 / (r^2 + |x|^2)^2 I at Q (M, d) -> (g, dg, d2g).
    """
    Q = np.asarray(Q, dtype=np.float64)
    r4 = radius ** 4
    s = radius ** 2 + np.sum(Q ** 2, axis=1)
    phi = 4.0 * r4 / s ** 2
    dphi = -16.0 * r4 * Q / s[:, None] ** 3
    d2phi = (-16.0 * r4 * np.eye(Q.shape[1]) / s[:, None, None] ** 3
             + 96.0 * r4 * np.einsum("mk,ml->mkl", Q, Q) / s[:, None, None] ** 4)
    return _conformal(phi, dphi, d2phi)


def hyperbolic_halfspace(Q):
    """Upper half-space model g = I / x_last^2 at Q (M, d), Q[:, -1] > 0 -> (g, dg, d2g)."""
    Q = np.asarray(Q, dtype=np.float64)
    M, d = Q.shape
    t = Q[:, -1]
    dphi = np.zeros((M, d))
    dphi[:, -1] = -2.0 / t ** 3
    d2phi = np.zeros((M, d, d))
    d2phi[:, -1, -1] = 6.0 / t ** 4
    return _conformal(1.0 / t ** 2, dphi, d2phi)


def hyperbolic_ball(Q):
    """Poincare ball model g = 4 I / (1 - |x|^2)^2 at Q (M, d), |x| < 1 -> (g, dg, d2g)."""
    Q = np.asarray(Q, dtype=np.float64)
    t = 1.0 - np.sum(Q ** 2, axis=1)
    phi = 4.0 / t ** 2
    dphi = 16.0 * Q / t[:, None] ** 3
    d2phi = (16.0 * np.eye(Q.shape[1]) / t[:, None, None] ** 3
             + 96.0 * np.einsum("mk,ml->mkl", Q, Q) / t[:, None, None] ** 4)
    return _conformal(phi, dphi, d2phi)


# ---------------------------------------------------------------------------
# Global data metric
# ---------------------------------------------------------------------------

def covariance_metric(X, weights=None, eps=1e-9):
    """Inverse of (weighted population covariance + eps I) of X (N, d) -> G (d, d).

    Covariance = sum_n w_n (x_n - mu)(x_n - mu)^T / sum_n w_n, mu the weighted
    mean; weights None means all ones.
    """
    X = np.asarray(X, dtype=np.float64)
    w = np.ones(len(X)) if weights is None else np.asarray(weights, dtype=np.float64)
    mu = w @ X / w.sum()
    D = X - mu
    C = np.einsum("n,ni,nj->ij", w, D, D) / w.sum()
    return np.linalg.inv(C + eps * np.eye(X.shape[1]))


def mahalanobis(Y, mean, G):
    """sqrt((y - mean)^T G (y - mean)) for Y (M, d), mean (d,), G (d, d) -> (M,)."""
    D = np.asarray(Y, dtype=np.float64) - np.asarray(mean, dtype=np.float64)
    q = np.einsum("mi,ij,mj->m", D, np.asarray(G, dtype=np.float64), D)
    return np.sqrt(np.maximum(q, 0.0))  # clip rounding below zero


def outliers(m, z=3.0):
    """Indices where |m - mean(m)| / std(m) > z (std with ddof=0)."""
    m = np.asarray(m, dtype=np.float64)
    return np.flatnonzero(np.abs(m - m.mean()) / m.std() > z)


# ---------------------------------------------------------------------------
# Local data metrics, each returning (g, dg, d2g) at Q (M, d)
# ---------------------------------------------------------------------------
#
# With D_n = X_n - x and w_n = exp(-|D_n|^2 / (2 sigma^2)), s = 1 / sigma^2:
#   d_k w_n     = s w_n D_nk
#   d_k d_l w_n = w_n (s^2 D_nk D_nl - s delta_kl)
#   d_k D_ni    = -delta_ik
# Everything below is expressed through the weighted moments
#   W = sum w,  m1_k = sum w D_k,  m2_ij = sum w D_i D_j,
#   m3_kij = sum w D_k D_i D_j,  m4_klij = sum w D_k D_l D_i D_j.

def _by_chunks(fn, X, Q, *args):
    """Apply fn(X, Q_chunk, *args) -> tuple of arrays over chunks of Q and concatenate."""
    X = np.asarray(X, dtype=np.float64)
    Q = np.asarray(Q, dtype=np.float64)
    rows = max(1, int(_MAX_BYTES // (8 * len(X) * Q.shape[1] ** 4)))
    parts = [fn(X, Q[start:start + rows], *args) for start in range(0, len(Q), rows)]
    return tuple(np.concatenate(arrays) for arrays in zip(*parts))


def _weighted_scatter(X, Q, sigma, stabilise):
    """W, S = sum_n w_n D_n D_n^T and their derivatives at Q (M, d).

    Returns W (M,), dW (M, d), d2W (M, d, d), S (M, d, d), dS (M, d, d, d),
    d2S (M, d, d, d, d) with derivative indices first, as for dg and d2g.
    With stabilise=True every w_n at a point is multiplied by the same factor
    exp(min_n |D_n|^2 / (2 sigma^2)) to avoid underflow; all six outputs are
    scaled by that factor, which cancels exactly in the ratio S / W and in
    each of its derivatives.
    """
    d = X.shape[1]
    eye = np.eye(d)
    s = 1.0 / sigma ** 2
    D = X[None, :, :] - Q[:, None, :]                        # (M, N, d)
    sq = np.sum(D ** 2, axis=2)                              # (M, N)
    if stabilise:
        sq = sq - sq.min(axis=1, keepdims=True)
    w = np.exp(-0.5 * s * sq)
    DD = np.einsum("mni,mnj->mnij", D, D)
    W = w.sum(axis=1)
    m1 = np.einsum("mn,mnk->mk", w, D)
    m2 = np.einsum("mn,mnij->mij", w, DD)
    m3 = np.einsum("mn,mnk,mnij->mkij", w, D, DD, optimize=True)
    m4 = np.einsum("mn,mnkl,mnij->mklij", w, DD, DD, optimize=True)

    dW = s * m1
    d2W = s ** 2 * m2 - s * W[:, None, None] * eye
    # d_k S_ij = s m3_kij - delta_ik m1_j - delta_jk m1_i
    dS = (s * m3
          - np.einsum("ik,mj->mkij", eye, m1)
          - np.einsum("jk,mi->mkij", eye, m1))
    # d_k d_l S_ij = s^2 m4_klij - s delta_kl m2_ij
    #              - s (delta_il m2_kj + delta_jl m2_ki + delta_ik m2_lj + delta_jk m2_li)
    #              + W (delta_il delta_jk + delta_ik delta_jl)
    d2S = (s ** 2 * m4
           - s * np.einsum("kl,mij->mklij", eye, m2)
           - s * (np.einsum("il,mkj->mklij", eye, m2)
                  + np.einsum("jl,mki->mklij", eye, m2)
                  + np.einsum("ik,mlj->mklij", eye, m2)
                  + np.einsum("jk,mli->mklij", eye, m2))
           + np.einsum("m,il,jk->mklij", W, eye, eye)
           + np.einsum("m,ik,jl->mklij", W, eye, eye))
    return W, dW, d2W, m2, dS, d2S


def _inverse_with_derivatives(A, dA, d2A):
    """g = A^-1 with dg = -g dA g and
    d_k d_l g = g dA_k g dA_l g + g dA_l g dA_k g - g d2A_kl g.

    A (M, d, d), dA (M, d, d, d), d2A (M, d, d, d, d) -> (g, dg, d2g).
    """
    g = np.linalg.inv(A)
    gdA = np.einsum("mip,mkpj->mkij", g, dA)                 # g dA_k
    dg = -np.einsum("mkip,mpj->mkij", gdA, g)
    term = np.einsum("mkip,mlpq,mqj->mklij", gdA, gdA, g, optimize=True)
    d2g = (term + np.einsum("mklij->mlkij", term)
           - np.einsum("mip,mklpq,mqj->mklij", g, d2A, g, optimize=True))
    return g, dg, d2g


def _local_diagonal(X, Q, sigma, rho):
    _, _, _, S, dS, d2S = _weighted_scatter(X, Q, sigma, stabilise=False)
    eye = np.eye(X.shape[1])
    h = np.einsum("mii->mi", S) + rho
    dh = np.einsum("mkii->mki", dS)
    d2h = np.einsum("mklii->mkli", d2S)
    return _inverse_with_derivatives(h[:, :, None] * eye,
                                     dh[:, :, :, None] * eye,
                                     d2h[:, :, :, :, None] * eye)


def local_diagonal(X, sigma, rho, Q):
    """Diagonal kernel metric from references X (N, d) at Q (M, d) -> (g, dg, d2g).

    g(x) = diag(h(x))^-1 with h_i(x) = sum_n w_n(x) (X_ni - x_i)^2 + rho and
    w_n(x) = exp(-|X_n - x|^2 / (2 sigma^2)) (not normalised).
    """
    return _by_chunks(_local_diagonal, X, Q, sigma, rho)


def _local_covariance(X, Q, sigma, rho):
    W, dW, d2W, S, dS, d2S = _weighted_scatter(X, Q, sigma, stabilise=True)
    d = X.shape[1]
    # C = S / W by the quotient rule; Wi<r> is 1/W shaped to broadcast on rank-r arrays.
    Wi3 = (1.0 / W)[:, None, None]
    Wi4 = Wi3[..., None]
    Wi5 = Wi4[..., None]
    C = S * Wi3
    dC = dS * Wi4 - np.einsum("mij,mk->mkij", S, dW) * Wi4 ** 2
    d2C = (d2S * Wi5
           - (np.einsum("mkij,ml->mklij", dS, dW)
              + np.einsum("mlij,mk->mklij", dS, dW)
              + np.einsum("mij,mkl->mklij", S, d2W)) * Wi5 ** 2
           + 2.0 * np.einsum("mij,mk,ml->mklij", S, dW, dW) * Wi5 ** 3)
    return _inverse_with_derivatives(C + rho * np.eye(d), dC, d2C)


def local_covariance(X, sigma, rho, Q):
    """Local covariance metric from references X (N, d) at Q (M, d) -> (g, dg, d2g).

    g(x) = (C(x) + rho I)^-1 with
    C(x) = sum_n w_n(x) (X_n - x)(X_n - x)^T / sum_n w_n(x) and
    w_n(x) = exp(-|X_n - x|^2 / (2 sigma^2)).
    """
    return _by_chunks(_local_covariance, X, Q, sigma, rho)


# ---------------------------------------------------------------------------
# Layer superposition (kernels/superposition.py, anant_fast/layers.py)
# ---------------------------------------------------------------------------
# Amplitudes psi (..., S), complex; one state per entity over S basis states.

def sp_normalize(psi):
    """psi / |psi| per entity."""
    return psi / np.linalg.norm(psi, axis=-1, keepdims=True)


def sp_probabilities(psi):
    return np.abs(psi) ** 2


def sp_entropy(psi):
    """-sum p log p of p = |psi|^2, with 0 log 0 = 0."""
    p = sp_probabilities(psi)
    logp = np.log(np.where(p > 0, p, 1.0))
    return -(p * logp).sum(axis=-1)


def sp_coherence(psi):
    """l1 coherence sum_{a != b} |psi_a| |psi_b|, as an explicit double sum."""
    m = np.abs(psi)
    outer = m[..., :, None] * m[..., None, :]
    return outer.sum(axis=(-1, -2)) - np.einsum("...aa->...", outer)


def sp_evolve(psi, U):
    return sp_normalize(np.einsum("ab,...b->...a", U, psi))


def sp_observe(psi, likelihood):
    """Bayes: probabilities p * likelihood, renormalised; phases kept."""
    return sp_normalize(psi * np.sqrt(likelihood))


def sp_superpose(psi_layers, weights):
    return sp_normalize(np.tensordot(np.asarray(weights, float), psi_layers, axes=1))


def sp_propagate(psi_layers, parent, alpha, direction):
    """One simultaneous propagation step along parent links (see kernels.superposition.propagate)."""
    new = psi_layers.copy()
    for l, p in enumerate(parent):
        if direction == "down" and p >= 0:
            new[l] = (1 - alpha) * psi_layers[l] + alpha * psi_layers[p]
        if direction == "up":
            children = [c for c, q in enumerate(parent) if q == l]
            if children:
                new[l] = (1 - alpha) * psi_layers[l] + alpha * psi_layers[children].mean(axis=0)
    return sp_normalize(new)


_M32 = 0xFFFFFFFF


def philox4x32(counter, key, rounds=10):
    """Philox-4x32 on Python ints: counter (4 words), key (2 words) -> 4 words (Random123)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + 0x9E3779B9) & _M32, (k1 + 0xBB67AE85) & _M32
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & _M32, (p0 >> 32) ^ c3 ^ k1, p0 & _M32
    return c0, c1, c2, c3


def uniform_pair(seed, index, step, stream):
    """The two uniforms of key (seed, index, step, stream): 53 bits each from two words."""
    r = philox4x32((index & _M32, index >> 32, step, stream), (seed & _M32, seed >> 32))
    return (((r[0] << 32) | r[1]) >> 11) * 2.0 ** -53, (((r[2] << 32) | r[3]) >> 11) * 2.0 ** -53


def born(psi_row, u):
    """Inverse CDF: first a with cumsum(p)[a] > u * sum(p)."""
    cum = np.cumsum(psi_row.real ** 2 + psi_row.imag ** 2)
    return int(np.searchsorted(cum, u * cum[-1], side="right"))


def collapse_outcomes(psi, seed, step=0, offset=0):
    """Outcomes (G, n) of psi (G, n, S), entity j of layer g keyed (seed, offset + j, step, g)."""
    G, n, _ = psi.shape
    return np.array([[born(psi[g, j], uniform_pair(seed, offset + j, step, g)[0]) for j in range(n)]
                     for g in range(G)])


class AnantEntity:
    """Anant's object-per-entity quantum state: a dict state -> probability, np.random collapse."""

    def __init__(self, states):
        self.states = {s: 1.0 / len(states) for s in states}
        self.collapsed = None

    def normalize(self):
        total = sum(self.states.values())
        self.states = {k: v / total for k, v in self.states.items()}

    def observe(self, likelihood):
        self.states = {k: v * likelihood[k] for k, v in self.states.items()}
        self.normalize()

    def entropy(self):
        return -sum(p * np.log(p) for p in self.states.values() if p > 0)

    def collapse(self, rng):
        names = list(self.states)
        self.collapsed = names[rng.choice(len(names), p=list(self.states.values()))]
        return self.collapsed


def anant_style_step(entities, layer_weights, likelihoods, rng):
    """One update in Anant's style: per entity and layer, observe, normalise, then superpose the
    layers' probabilities by weight, take the entropy and collapse. entities[i][l] is an AnantEntity."""
    out = []
    total = sum(layer_weights)
    for per_layer, lik in zip(entities, likelihoods):
        mixed = {}
        for state, w in zip(per_layer, layer_weights):
            state.observe(lik)
            for k, v in state.states.items():
                mixed[k] = mixed.get(k, 0.0) + w * v / total
        summary = AnantEntity(list(mixed))
        summary.states = mixed
        out.append((summary.entropy(), summary.collapse(rng)))
    return out


# ---------------------------------------------------------------------------
# Geodesics (kernels/geodesic.py)
# ---------------------------------------------------------------------------

def geodesic_acceleration(metric_fn, X, V):
    """-Gamma^k_ij v^i v^j at X (M, d) for velocities V (M, d); metric_fn(X) -> (g, dg, ...)."""
    g, dg = metric_fn(X)[:2]
    return -np.einsum("mkij,mi,mj->mk", christoffel(g, dg), V, V)


def geodesic_rk4(metric_fn, X, V, steps):
    """End points at t = 1 of the geodesics from X with velocities V: classical RK4, vectorised over
    the points, `steps` steps (the plain NumPy reference of the exp kernel)."""
    x, v = np.array(X, dtype=np.float64), np.array(V, dtype=np.float64)
    h = 1.0 / steps
    for _ in range(steps):
        k1x, k1v = v, geodesic_acceleration(metric_fn, x, v)
        k2x, k2v = v + 0.5 * h * k1v, geodesic_acceleration(metric_fn, x + 0.5 * h * k1x, v + 0.5 * h * k1v)
        k3x, k3v = v + 0.5 * h * k2v, geodesic_acceleration(metric_fn, x + 0.5 * h * k2x, v + 0.5 * h * k2v)
        k4x, k4v = v + h * k3v, geodesic_acceleration(metric_fn, x + h * k3x, v + h * k3v)
        x = x + h / 6.0 * (k1x + 2.0 * k2x + 2.0 * k3x + k4x)
        v = v + h / 6.0 * (k1v + 2.0 * k2v + 2.0 * k3v + k4v)
    return x
