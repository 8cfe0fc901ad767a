"""Metric models: a Riemannian metric on R^d (a chart), and its geometry as methods.

Every model evaluates at query points ``Q (M, dim)``; one point ``(dim,)`` gives results without the
leading axis. Index layout (DESIGN.md): ``g[m, i, j]``, ``dg[m, k, i, j] = ∂_k g_ij``,
``d2g[m, k, l, i, j] = ∂_k ∂_l g_ij``, ``Γ[m, k, i, j] = Γ^k_ij``, ``R[m, a, b, c, e] = R^a_bce``.
Sign convention: the round sphere of radius r has sectional curvature +1/r².

A model object only carries parameters (a typed record); the compiled generic kernels of
``anant_fast.kernels`` carry the algorithms and are specialised per model family.
"""
from functools import partial

import numpy as np
from numba.core import types
from numba.core.dispatcher import Dispatcher

from .geodesics import DataInterpolation, GeodesicInfo, GeodesicMethods
from .kernels import batch
from .kernels import metric as km
from .kernels.target import is_device_array, resolve as resolve_target
from .kernels.covariance import mahalanobis, mahalanobis_factor, weighted_covariance, zscore_outliers
from .kernels.grid import build_grid, cutoff_radius
from .plan import Plan, require
from .kernels.validation import (as_batch, as_plane, as_points, as_real_array, check_dim,
                                 check_finite, check_positive, check_spd)

__all__ = ["GeodesicInfo", "MetricModel", "Euclidean", "Sphere", "Hyperbolic", "Covariance", "LocalDiagonal",
           "LocalCovariance", "Custom"]


class MetricModel(GeodesicMethods):
    """Base class: geometry of a metric model at query points. Subclasses set ``dim`` and ``_params``.

    Curvature methods are defined here; geodesics (``exp``, ``geodesic``, ``log``, ``distance``,
    ``parallel_transport``) come from ``GeodesicMethods``."""

    dim: int
    _params: tuple

    def __repr__(self):
        return f"{type(self).__name__}(dim={self.dim})"

    # --- validation hooks ---
    def _check_chart(self, Q):
        """Raise a ValueError if a point of ``Q (M, dim)`` lies outside the model's chart."""

    def _points(self, Q):
        Q, single = as_points(Q, self.dim)
        self._check_chart(Q)
        return Q, single

    def _pointwise(self, quantity, Q, U=None, V=None, order=2, target="cpu"):
        """The plan of a point-wise quantity (``kernels.batch``) at ``Q``. ``target``: ``"cpu"``,
        or for the quantities of ``batch.GPU_QUANTITIES`` ``"cuda"`` or ``"auto"`` (``kernels.target``)."""
        where = resolve_target(target)
        targets = _ANYWHERE if quantity in batch.GPU_QUANTITIES else ("cpu",)
        require(where, targets)  # before any validation pass on the GPU
        if where == "cuda" and is_device_array(Q):
            named = (("Q", Q),) + (() if U is None else (("U", U), ("V", V)))
            (Q, U, V), single = self._device_rows(named) + [None] * (3 - len(named)), False
        else:
            Q, single = self._points(Q)
            if U is not None:
                U, V = as_plane(U, V, len(Q), self.dim, single, names=("U", "V"))
        return Plan(_evaluate, self._params, (Q, U, V), {"quantity": quantity, "order": order},
                    partial(_unwrap, quantity, single), owner=self, targets=targets).on(where)

    def _device_rows(self, named):
        """GPU arrays ``(name, a)``, each ``(M, dim)`` float64 with the same ``M``, validated on the
        GPU (finite; the first also inside the chart); returns numba.cuda views."""
        from .kernels import gpu
        checked = []
        for name, a in named:
            if not is_device_array(a):
                raise TypeError(f"{name} must be a GPU array like {named[0][0]}, got {type(a).__name__}")
            a = gpu.as_device(a, name)
            rows = checked[0].shape[0] if checked else a.shape[0]
            if a.ndim != 2 or a.shape[1] != self.dim or a.shape[0] != rows:
                want = f"({rows if checked else 'M'}, {self.dim})"
                raise ValueError(f"{name} on the GPU must have shape {want}, got {tuple(a.shape)}")
            chart = self._params if not checked else km.EuclideanParams(km.static_dim(0))
            gpu.check_points(chart, a, name, repr(self))
            checked.append(a)
        return checked

    _PLANNED = {"christoffel": batch.CHRISTOFFEL, "riemann": batch.RIEMANN, "ricci": batch.RICCI,
                "scalar_curvature": batch.SCALAR, "sectional_curvature": batch.SECTIONAL}

    def plan(self, method, *args, **kwargs):
        """The call ``self.method(*args, **kwargs)`` validated and prepared, not run: a ``Plan``
        (``plan(...).run()`` is the method's result; the Ray layer runs it sharded). ``method``:
        ``christoffel``, ``riemann``, ``ricci``, ``scalar_curvature``, ``sectional_curvature``,
        ``derivatives``, ``exp``, ``geodesic``, ``parallel_transport``, ``log``, ``distance``, and
        ``mahalanobis`` for ``Covariance``."""
        if method in self._PLANNED:
            return self._pointwise(self._PLANNED[method], *args, **kwargs)
        build = getattr(self, f"_plan_{method}", None)
        if build is None:
            names = sorted([*self._PLANNED, *(m[6:] for m in dir(self) if m.startswith("_plan_"))])
            raise ValueError(f"{type(self).__name__} has no point-wise method {method!r}; one of {names}")
        return build(*args, **kwargs)

    def _plan_derivatives(self, Q, order=2):
        if order not in (0, 1, 2):
            raise ValueError(f"order must be 0, 1 or 2, got {order!r}")
        return self._pointwise(batch.METRIC, Q, order=order)

    # --- metric ---
    def derivatives(self, Q, order=2):
        """``(g, dg, d2g)`` at ``Q``: ``(M, d, d)``, ``(M, d, d, d)``, ``(M, d, d, d, d)``; ``order`` < 2
        returns only the first ``order + 1`` of them."""
        return self._plan_derivatives(Q, order).run()

    def metric(self, Q):
        """Metric tensor ``g``: ``(M, d, d)``."""
        return self.derivatives(Q, order=0)[0]

    def condition_number(self, Q):
        """Condition number ``λ_max / λ_min`` of ``g`` at each point: ``(M,)``."""
        eig = np.linalg.eigvalsh(self.metric(Q))
        return eig[..., -1] / eig[..., 0]

    # --- connection and curvature (fused: model -> answer) ---
    def christoffel(self, Q, target="cpu"):
        """Christoffel symbols ``Γ[m, k, i, j] = Γ^k_ij``: ``(M, d, d, d)``. ``target``: ``"cpu"``,
        ``"cuda"`` or ``"auto"`` (NumPy or GPU arrays in, the same kind out; ``kernels.target``)."""
        return self.plan('christoffel', Q, target=target).run()

    def riemann(self, Q):
        """Riemann tensor ``R[m, a, b, c, e] = R^a_bce``: ``(M, d, d, d, d)``."""
        return self.plan('riemann', Q).run()

    def ricci(self, Q, target="cpu"):
        """Ricci tensor ``Ric[m, b, e] = R^a_bae``: ``(M, d, d)``. ``target``: as ``christoffel``."""
        return self.plan('ricci', Q, target=target).run()

    def scalar_curvature(self, Q, target="cpu"):
        """Scalar curvature ``g^{be} Ric_be``: ``(M,)``. Never forms the Riemann tensor. ``target``:
        as ``christoffel``."""
        return self.plan('scalar_curvature', Q, target=target).run()

    def sectional_curvature(self, Q, U, V, target="cpu"):
        """Sectional curvature of the planes spanned by ``U``, ``V`` (each ``(M, d)``): ``(M,)``.
        ``target``: as ``christoffel``."""
        return self.plan("sectional_curvature", Q, U, V, target=target).run()

    def gaussian_curvature(self, Q, target="cpu"):
        """Gaussian curvature of a 2-dimensional model (half the scalar curvature): ``(M,)``."""
        if self.dim != 2:
            raise ValueError(f"gaussian_curvature needs a 2-dimensional model, this one has dim={self.dim}")
        return 0.5 * self.scalar_curvature(Q, target=target)


_ANYWHERE = ("cpu", "cuda")


def _evaluate(params, Q, U, V, quantity, order, target="cpu"):
    """``Plan.compute`` of the point-wise quantities: ``kernels.batch.evaluate`` (``kernels.gpu.evaluate``
    for ``target="cuda"``) as a tuple."""
    if target == "cuda":
        from .kernels import gpu
        return (gpu.evaluate(params, Q, quantity, U, V),)
    out = batch.evaluate(params, Q, quantity, U, V, order)
    return out if quantity == batch.METRIC else (out,)


def _unwrap(quantity, single, outputs):
    """``Plan.finish`` of the point-wise quantities: drop the point axis of a single point."""
    if quantity != batch.METRIC:
        (outputs,) = outputs
    return outputs if not single else (outputs[0] if quantity != batch.METRIC
                                       else tuple(a[0] for a in outputs))


class Euclidean(MetricModel):
    """Flat space: ``g = I``."""

    def __init__(self, dim):
        self.dim = check_dim(dim)
        self._params = km.EuclideanParams(km.static_dim(self.dim))


class Sphere(MetricModel):
    """Round sphere of ``radius`` in the stereographic chart: ``g = 4r⁴ / (r² + |x|²)² · I``.

    Sectional curvature 1/r², Ricci (dim−1)/r² · g, scalar dim(dim−1)/r². The chart covers R^dim.
    """

    def __init__(self, dim, radius=1.0):
        self.dim = check_dim(dim)
        self.radius = check_positive(radius, "radius")
        self._params = km.SphereParams(km.static_dim(self.dim), self.radius)

    def __repr__(self):
        return f"Sphere(dim={self.dim}, radius={self.radius})"


class Hyperbolic(MetricModel):
    """Hyperbolic space of curvature −1.

    ``model="halfspace"``: ``g = I / x_dim²`` on ``x_dim > 0`` (last coordinate);
    ``model="ball"``: Poincaré ball, ``g = 4I / (1 − |x|²)²`` on ``|x| < 1``.
    """

    def __init__(self, dim, model="halfspace"):
        self.dim = check_dim(dim)
        if model not in ("halfspace", "ball"):
            raise ValueError(f"model must be 'halfspace' or 'ball', got {model!r}")
        self.model = model
        self._params = (km.HalfSpaceParams if model == "halfspace" else km.BallParams)(km.static_dim(self.dim))

    def __repr__(self):
        return f"Hyperbolic(dim={self.dim}, model={self.model!r})"

    def _check_chart(self, Q):
        if self.model == "halfspace":
            bad = ~(Q[:, -1] > 0)
            what = "the half-space model needs x[dim-1] > 0"
        else:
            bad = ~(np.einsum("mi,mi->m", Q, Q) < 1.0)
            what = "the ball model needs |x| < 1"
        if bad.any():
            raise ValueError(f"Q point {int(np.argmax(bad))} lies outside the chart: {what}")


def _as_data(X, name="X", check=True):
    X = as_real_array(X, name)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} must have shape (N, d) with N, d >= 1, got {X.shape}")
    if check:
        check_finite(X, name)
    return X


class Covariance(DataInterpolation, MetricModel):
    """The Mahalanobis metric of data: constant ``g = (C + eps·I)⁻¹`` with ``C`` the weighted covariance.

    ``X (N, d)`` data, ``weights (N,)`` non-negative (default: all 1), ``C = Σ w (x − μ)(x − μ)ᵀ / Σ w``
    (population normalisation). Attributes ``mean``, ``covariance``, ``G`` (the metric).
    """

    def __init__(self, X, weights=None, eps=1e-9):
        X = _as_data(X, check=False)  # the moments pass below doubles as the finiteness check
        self.dim = X.shape[1]
        self.eps = check_positive(eps, "eps")
        if weights is None:
            w = np.empty(0)
        else:
            w = as_batch(weights, "weights", (), len(X))
            if (w < 0).any() or not w.sum() > 0:
                raise ValueError("weights must be non-negative with a positive sum")
        try:
            self.mean, self.covariance = weighted_covariance(X, w)
        except ValueError:
            check_finite(X, "X")  # NaN or inf in X: say where
            raise
        self.G, self._upper = mahalanobis_factor(self.covariance, self.eps)
        self._factor = (self.mean, self._upper)
        self._X = X
        self._params = km.ConstantParams(self.G)

    def __repr__(self):
        return f"Covariance(dim={self.dim}, n={len(self._X)})"

    def mahalanobis(self, Y, target="cpu"):
        """Mahalanobis distances ``sqrt((y − μ)ᵀ G (y − μ))`` of ``Y (M, d)``: ``(M,)``. One fused pass.
        ``target``: ``"cpu"``, ``"cuda"`` or ``"auto"`` (NumPy or GPU ``Y``, the same kind out)."""
        return self._plan_mahalanobis(Y, target).run()

    def _plan_mahalanobis(self, Y, target="cpu"):
        where = resolve_target(target)
        if where == "cuda" and is_device_array(Y):
            (Y,), single = self._device_rows((("Y", Y),)), False
        else:
            Y, single = as_points(Y, self.dim, "Y")
        return Plan(_mahalanobis, self._factor, (Y,), {}, partial(_unwrap, batch.SCALAR, single),
                    owner=self, targets=_ANYWHERE).on(where)

    def outliers(self, Y=None, z=3.0, target="cpu"):
        """Indices of the rows of ``Y`` (default: the fitted data) whose Mahalanobis distance ``m`` has
        ``|m − mean(m)| / std(m) > z`` (Anant's ``detect_property_outliers``). ``target``: where the
        distances are computed (as ``mahalanobis``); the z-scores are taken on the host."""
        z = check_positive(z, "z")
        if Y is None:
            where = resolve_target(target)
            (m,) = _mahalanobis(self._factor, self._X, **({"target": where} if where == "cuda" else {}))
        else:
            m = self.mahalanobis(Y, target=target)
        if is_device_array(m):
            m = m.copy_to_host() if hasattr(m, "copy_to_host") else m.get()
        return zscore_outliers(np.atleast_1d(m), z)


def _mahalanobis(factor, Y, target="cpu"):
    """``Plan.compute`` of ``Covariance.mahalanobis``; ``factor = (mean, upper)``."""
    if target == "cuda":
        from .kernels import gpu
        return (gpu.mahalanobis(Y, *factor),)
    return (mahalanobis(Y, *factor),)


class _LocalModel(DataInterpolation, MetricModel):
    """Shared construction of the kernel-weighted local metrics: data, width, grid of references."""

    _record = None

    def __init__(self, X, sigma, rho=1e-3, tol=1e-9):
        X = _as_data(X)
        self.dim = X.shape[1]
        self.sigma = check_positive(sigma, "sigma")
        self.rho = check_positive(rho, "rho")
        self.tol = check_positive(tol, "tol")
        if self.tol >= 1:
            raise ValueError(f"tol must be < 1, got {tol!r}")
        self.cutoff = cutoff_radius(self.sigma, self.dim, self.tol)
        points, cell_start, axes, origin, inv_width, shape = build_grid(X, self.cutoff)
        self.n_references = len(X)
        self._params = self._record(points, cell_start, axes, origin, inv_width, shape,
                                    self.cutoff, self.sigma, self.rho)

    def __repr__(self):
        return f"{type(self).__name__}(dim={self.dim}, n={self.n_references}, sigma={self.sigma}, rho={self.rho})"


class LocalDiagonal(_LocalModel):
    """Locally adaptive diagonal metric (Arvanitidis, Hansen & Hauberg 2016).

    ``g(x) = diag(Σ_n w_n(x)(X_n − x)² + ρ)⁻¹``, ``w_n(x) = exp(−|X_n − x|² / (2σ²))``. Only references
    within ``cutoff`` (from ``sigma`` and the tolerance ``tol``) contribute; far from all data
    ``g = I/ρ``. Derivatives are analytic.
    """

    _record = km.LocalDiagonalParams


class LocalCovariance(_LocalModel):
    """Local covariance metric ``g(x) = (C(x) + ρI)⁻¹``, ``C(x) = Σ w_n (X_n − x)(X_n − x)ᵀ / Σ w_n``.

    Gaussian weights of width ``sigma`` as in ``LocalDiagonal``, neighbours within ``cutoff`` only;
    far from all data (no reference within the cutoff) ``C = 0`` and ``g = I/ρ``.
    """

    _record = km.LocalCovarianceParams


class Custom(MetricModel):
    """A user's metric: ``g_fn(x, out)`` is a Numba ``@njit`` function writing ``g(x)`` into ``out (dim, dim)``.

    Derivatives by 4th-order central differences of width ``step``. ``g_fn`` must return a symmetric
    positive-definite matrix at every query point (checked at each call). Compiled once per process.
    """

    def __init__(self, g_fn, dim, step=1e-3):
        self.dim = check_dim(dim)
        self.step = check_positive(step, "step")
        if not isinstance(g_fn, Dispatcher):
            raise TypeError("g_fn must be a Numba @njit function g_fn(x, out), "
                            f"got {type(g_fn).__name__}")
        signature = (types.float64[::1], types.float64[:, ::1])
        try:
            g_fn.compile(signature)
        except Exception as exc:
            raise TypeError(f"g_fn does not compile as g_fn(x (dim,) float64, out (dim, dim) float64): "
                            f"{exc}") from None
        self.g_fn = g_fn
        self._params = km.CustomParams(g_fn, self.step)

    def _check_chart(self, Q):
        (g,) = batch.evaluate(self._params, Q, batch.METRIC, order=0)
        if not np.isfinite(g).all():
            bad = int(np.argmax(~np.isfinite(g).all(axis=(1, 2))))
            raise ValueError(f"g_fn returned NaN or inf at Q point {bad}")
        check_spd(g, "the metric returned by g_fn")
