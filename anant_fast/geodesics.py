"""Geodesic methods of the metric models: ``exp``, ``geodesic``, ``log``, ``distance``,
``parallel_transport``, and ``interpolate`` for the data models.

Pairs are batched: ``X (M, d)`` with ``V``, ``Y`` or ``W (M, d)``; one side may be a single point
``(d,)`` broadcast against the other. A pair that fails (the curve left the chart, the integrator hit
its step limit, the logarithm did not converge) is a NaN row in the plain result, with a
``RuntimeWarning`` saying how many; ``return_info=True`` returns a ``GeodesicInfo`` as well.
"""
import warnings
from functools import partial
from typing import NamedTuple

import numpy as np

from .kernels import geodesic as kg
from .kernels.target import is_device_array, resolve as resolve_target
from .kernels.validation import as_points, check_dim, check_positive
from .plan import Plan


class GeodesicInfo(NamedTuple):
    """Per-pair report of a geodesic computation (arrays of shape ``(M,)``).

    ``converged``: the pair succeeded. ``left_chart``: its curve reached the border of the chart (or a
    singularity) and was stopped there. ``status``: ``kernels.geodesic`` code (``OK``, ``LEFT_CHART``,
    ``MAX_STEPS``, ``NOT_CONVERGED``). ``residual``: for ``log``/``distance`` the end-point miss
    ``|exp(x, v) − y|`` in the metric at ``y``; for ``exp``/``geodesic`` the relative drift of the speed
    ``g(v, v)``; for ``parallel_transport`` that of ``g(W, W)`` and ``g(v, W)`` (exact geodesics and
    transport conserve them). ``iterations``: Newton iterations (``log``) or integration steps.
    ``fallback``: ``log`` needed the curve-energy minimisation to find a start for the shooting.
    """
    converged: np.ndarray
    left_chart: np.ndarray
    status: np.ndarray
    residual: np.ndarray
    iterations: np.ndarray
    fallback: np.ndarray


_REASONS = {kg.LEFT_CHART: "left the chart", kg.MAX_STEPS: "hit the step limit",
            kg.NOT_CONVERGED: "did not converge"}


def _tolerances(rtol, atol, max_steps):
    return dict(rtol=check_positive(rtol, "rtol"), atol=check_positive(atol, "atol"),
                max_steps=check_dim(max_steps, "max_steps"))


def _report(what, status, counts, residual, return_info, fallback=None):
    """Warn about failed pairs; the info tuple when asked for (``fallback`` only from ``log``)."""
    failed = status != kg.OK
    if fallback is None:
        fallback = np.zeros(len(status), dtype=bool)
    if failed.any():
        parts = ", ".join(f"{int((status == code).sum())} {reason}" for code, reason in _REASONS.items()
                          if (status == code).any())
        warnings.warn(f"{what}: {int(failed.sum())} of {len(status)} pairs failed ({parts}); their rows "
                      f"are NaN. Pass return_info=True for per-pair details.", RuntimeWarning, stacklevel=5)  # _report, finish, Plan.run, the method, its caller
    if return_info:
        return GeodesicInfo(~failed, status == kg.LEFT_CHART, status, residual, counts, fallback)
    return None


def _finish_follow(what, return_info, sampled, single, outputs):
    """``Plan.finish`` of ``exp``, ``geodesic``, ``parallel_transport``."""
    out, status, counts, residual = outputs
    info = _report(what, status, counts, residual, return_info)
    return _result(out if sampled else out[:, 0], info, single)


def _finish_log(what, return_info, single, outputs):
    """``Plan.finish`` of ``log`` and ``distance``."""
    V, status, counts, residual, length, fallback = outputs
    info = _report(what, status, counts, residual, return_info, fallback)
    return _result(V if what == "log" else length, info, single)


def _result(value, info, single):
    if single:
        value = value[0]
        if info is not None:
            info = GeodesicInfo(*(a[0] for a in info))
    return value if info is None else (value, info)


class GeodesicMethods:
    """Mixin of ``MetricModel``: geodesics of the model (needs ``dim``, ``_params`` and ``_points``)."""

    def _pairs(self, A, B, names):
        """Two batches of points/vectors ``(M, d)``, one of them possibly ``(d,)`` and broadcast."""
        (A, single_a), (B, single_b) = (as_points(a, self.dim, name) for a, name in zip((A, B), names))
        if len(A) != len(B):
            if min(len(A), len(B)) != 1:
                raise ValueError(f"{names[0]} and {names[1]} have {len(A)} and {len(B)} rows: they must "
                                 "match, or one of them must be a single row")
            M = max(len(A), len(B))
            A, B = (np.ascontiguousarray(np.broadcast_to(a, (M, self.dim))) for a in (A, B))
        return A, B, single_a and single_b

    def exp(self, X, V, t=1.0, *, steps=None, rtol=1e-10, atol=1e-12, max_steps=20_000,
            return_info=False, target="cpu"):
        """End points ``γ(t)`` of the geodesics with ``γ(0) = X``, ``γ'(0) = V``: ``(M, d)``.

        ``X (M, d)`` start points (inside the chart), ``V (M, d)`` velocities. Integrates
        ``ẍ^k = −Γ^k_ij ẋ^i ẋ^j`` with Dormand–Prince 5(4) to ``rtol``/``atol``, or with ``steps`` fixed
        RK4 steps. ``t`` may be any real number (``γ_V(t) = γ_{tV}(1)``). ``target``: ``"cpu"``,
        ``"cuda"`` or ``"auto"`` (``kernels.target``); the GPU integrates with fixed RK4 ``steps`` only,
        and takes NumPy or GPU ``X``, ``V`` (GPU points give GPU end points).
        """
        return self._plan_exp(X, V, t, steps=steps, rtol=rtol, atol=atol, max_steps=max_steps,
                              return_info=return_info, target=target).run()

    def _plan_exp(self, X, V, t=1.0, *, steps=None, rtol=1e-10, atol=1e-12, max_steps=20_000,
                  return_info=False, target="cpu"):
        t = float(t)
        if not np.isfinite(t):
            raise ValueError(f"t must be finite, got {t!r}")
        return self._follow(kg.EXP, X, V, None, (1.0,), t, steps, rtol, atol, max_steps, return_info,
                            "exp", target=target)

    def geodesic(self, X, V, n=50, *, steps=None, rtol=1e-10, atol=1e-12, max_steps=20_000,
                 return_info=False, target="cpu"):
        """The geodesics from ``X`` with velocities ``V`` sampled at ``n`` equally spaced times from 0
        to 1: ``(M, n, d)``. With ``steps``, each of the ``n − 1`` intervals gets its share of the
        RK4 steps (at least one). ``target``: as ``exp``."""
        return self._plan_geodesic(X, V, n, steps=steps, rtol=rtol, atol=atol, max_steps=max_steps,
                                   return_info=return_info, target=target).run()

    def _plan_geodesic(self, X, V, n=50, *, steps=None, rtol=1e-10, atol=1e-12, max_steps=20_000,
                       return_info=False, target="cpu"):
        n = check_dim(n, "n", minimum=2)
        return self._follow(kg.EXP, X, V, None, np.linspace(0.0, 1.0, n), 1.0, steps, rtol, atol,
                            max_steps, return_info, "geodesic", sampled=True, target=target)

    def parallel_transport(self, X, V, W, *, steps=None, rtol=1e-10, atol=1e-12, max_steps=20_000,
                           return_info=False):
        """Parallel transport of the tangent vectors ``W (M, d)`` at ``X`` along the geodesics with
        velocities ``V`` from ``t = 0`` to ``1``: ``(M, d)`` at the end points ``exp(X, V)``
        (``Ẇ^k = −Γ^k_ij ẋ^i W^j``, integrated alongside the geodesic)."""
        return self._plan_parallel_transport(X, V, W, steps=steps, rtol=rtol, atol=atol,
                                             max_steps=max_steps, return_info=return_info).run()

    def _plan_parallel_transport(self, X, V, W, *, steps=None, rtol=1e-10, atol=1e-12,
                                 max_steps=20_000, return_info=False):
        return self._follow(kg.TRANSPORT, X, V, W, (1.0,), 1.0, steps, rtol, atol, max_steps,
                            return_info, "parallel_transport")

    def _follow(self, op, X, V, W, times, t, steps, rtol, atol, max_steps, return_info, what,
                sampled=False, target="cpu"):
        """The plan of ``kernels.geodesic.follow`` on validated pairs."""
        steps = 0 if steps is None else check_dim(steps, "steps")  # 0: adaptive
        options = _tolerances(rtol, atol, max_steps)
        finish = partial(_finish_follow, what, return_info, sampled)
        if resolve_target(target) == "cuda":
            if steps == 0:
                raise ValueError("target='cuda' integrates with fixed RK4 steps: pass steps= "
                                 "(steps per unit time)")
            options["target"] = "cuda"
            if is_device_array(X):
                if t != 1.0:
                    raise ValueError("GPU velocities are not scaled by t: pass t=1.0 and scale V")
                named = (("X", X), ("V", V)) + (() if W is None else (("W", W),))
                X, V, W = self._device_rows(named) + [None] * (3 - len(named))
                options.update(op=op, times=np.asarray(times, dtype=np.float64), steps=steps)
                return Plan(kg.follow, self._params, (X, V, W), options, partial(finish, False),
                            owner=self)
        X, V, single = self._pairs(X, V, ("X", "V"))
        if W is not None:
            X, W, single_w = self._pairs(X, W, ("X", "W"))
            if len(V) != len(X):
                V = np.ascontiguousarray(np.broadcast_to(V, X.shape))
            single = single and single_w
        self._check_chart(X)
        options.update(op=op, times=np.asarray(times, dtype=np.float64), steps=steps)
        return Plan(kg.follow, self._params, (X, V * t if t != 1.0 else V, W), options,
                    partial(finish, single), owner=self, targets=("cpu", "cuda") if steps else ("cpu",))

    def log(self, X, Y, *, rtol=1e-10, atol=1e-12, tol=1e-10, max_iter=50, max_steps=20_000,
            return_info=False):
        """Initial velocities ``V (M, d)`` of the geodesics from ``X`` that reach ``Y`` at ``t = 1``.

        Shooting: damped Newton on ``exp(X, V) − Y``, its Jacobian from the variational equations
        integrated alongside; when that fails, a discrete curve-energy minimisation gives a new start.
        A pair counts as converged when the end point misses ``Y`` by at most ``tol·max(1, |Y − X|)``,
        both measured in the metric at ``Y``. Near cut points (e.g. antipodes) the answer is one of
        several geodesics, not necessarily the shortest.
        """
        return self._plan_log(X, Y, rtol=rtol, atol=atol, tol=tol, max_iter=max_iter,
                              max_steps=max_steps, return_info=return_info).run()

    def _plan_log(self, X, Y, *, rtol=1e-10, atol=1e-12, tol=1e-10, max_iter=50, max_steps=20_000,
                  return_info=False, what="log"):
        """The plan of ``kernels.geodesic.log`` on validated pairs (``what``: log or distance)."""
        options = _tolerances(rtol, atol, max_steps)
        X, Y, single = self._pairs(X, Y, ("X", "Y"))
        self._check_chart(X)
        self._check_chart(Y)
        options.update(tol=check_positive(tol, "tol"), max_iter=check_dim(max_iter, "max_iter"))
        return Plan(kg.log, self._params, (X, Y), options,
                    partial(_finish_log, what, return_info, single), owner=self)

    def distance(self, X, Y, *, rtol=1e-10, atol=1e-12, tol=1e-10, max_iter=50, max_steps=20_000,
                 return_info=False):
        """Geodesic distances ``|log(X, Y)|_g(X)``: ``(M,)`` (options as in ``log``)."""
        return self._plan_distance(X, Y, rtol=rtol, atol=atol, tol=tol, max_iter=max_iter,
                                   max_steps=max_steps, return_info=return_info).run()

    def _plan_distance(self, X, Y, **options):
        return self._plan_log(X, Y, **options, what="distance")


class DataInterpolation:
    """Mixin of the data models: movement between data points along geodesics."""

    def interpolate(self, a, b, t=0.5, **options):
        """Points at fractions ``t`` of the way from ``a`` to ``b`` along the geodesic between them
        (the successor of Anant's ``geodesic_interpolation``).

        ``a``, ``b``: ``(M, d)`` or ``(d,)``; ``t``: a number in [0, 1] -> ``(M, d)``, or an array of
        ``T`` increasing numbers in [0, 1] -> ``(M, T, d)`` (leading axis dropped for single points).
        ``options`` go to ``log`` (``rtol``, ``atol``, ``tol``, ...); failed pairs are NaN rows.
        """
        times = np.asarray(t, dtype=np.float64)
        if times.ndim > 1 or times.size == 0 or not np.isfinite(times).all():
            raise ValueError(f"t must be a finite number or a 1-D array of them, got {t!r}")
        if (times < 0).any() or (times > 1).any() or (np.diff(np.atleast_1d(times)) < 0).any():
            raise ValueError("t must lie in [0, 1] (and increase, when an array)")
        A, B, single = self._pairs(a, b, ("a", "b"))
        V = self.log(A, B, **options)
        ok = np.isfinite(V).all(axis=1)
        out = np.full((len(A), times.size, self.dim), np.nan)
        if ok.any():
            rtol, atol = options.get("rtol", 1e-10), options.get("atol", 1e-12)
            out[ok] = self._follow(kg.EXP, A[ok], V[ok], None, np.atleast_1d(times), 1.0, None, rtol,
                                   atol, options.get("max_steps", 20_000), False, "interpolate",
                                   sampled=True).run()
        if times.ndim == 0:
            out = out[:, 0]
        return out[0] if single else out
