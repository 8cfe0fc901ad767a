"""Sharded kernels: the in-process methods' plans run as Ray tasks, results bit for bit the same.

Each operation validates on the driver (bad input never reaches a task), puts its inputs in the
object store once, runs one task per contiguous shard (default: one per CPU of the cluster) and joins
the slices. ``submit(op, ...)`` starts any of them without waiting and returns a ``Job``.
"""
import functools
from typing import NamedTuple

import numpy as np
import ray

from ..kernels import covariance as kc
from ..kernels.validation import check_positive
from ..layers import LayerStack
from ..metrics import MetricModel, _as_data, _mahalanobis
from ..plan import Plan
from . import shard
from .cluster import ensure_connected


def _operation(start):
    """The blocking operation ``op(...) = start(...).result(progress=progress)``; ``op.start`` stays
    available for ``submit``."""
    @functools.wraps(start)
    def op(*args, progress=True, **kwargs):
        return start(*args, **kwargs).result(progress=progress)
    op.start = start
    return op


def submit(op, *args, **kwargs):
    """Start the sharded operation ``op`` (e.g. ``distributed.scalar_curvature``) and return its
    ``Job`` at once: many jobs can be in flight together."""
    start = getattr(op, "start", None)
    if start is None:
        raise TypeError(f"submit needs an operation of anant_fast.distributed, got {op!r}")
    if "progress" in kwargs:
        raise TypeError("progress is an argument of Job.result(), not of submit")
    return start(*args, **kwargs)


def _sharded(method, kind, what, doc, name=None):
    """The sharded form (called ``name``, default ``method``) of the method ``method`` of ``kind``
    objects (named ``what`` in errors): ``obj.plan(method, ...)`` started as a Job."""
    name = name or method

    def start(obj, *args, shards=None, cpus_per_task=1, target="cpu", **kwargs):
        if not isinstance(obj, kind):
            raise TypeError(f"{what} must be an anant_fast.{kind.__name__}, got {type(obj).__name__}")
        shards = shard.check_shards(shards)
        cpus_per_task = shard.check_cpus(cpus_per_task)
        plan = obj.plan(method, *args, **kwargs)
        ensure_connected()
        plan = plan.on(shard.cluster_target(target, plan))
        return shard.start(plan, shards=shards, cpus_per_task=cpus_per_task, name=name)
    start.__name__ = start.__qualname__ = name
    start.__doc__ = doc
    return _operation(start)


def _model_method(method):
    return _sharded(method, MetricModel, "model", doc=(
        f"``model.{method}(...)`` sharded over the points: same arguments, same result. ``shards``: "
        "number of tasks (default one per CPU of the cluster, or per GPU); ``cpus_per_task``: CPUs "
        "(and Numba threads) per task; ``target``: ``\"cuda\"`` runs each task on one GPU of the "
        "cluster (the methods with a CUDA kernel), ``\"auto\"`` when the cluster has GPUs; "
        "``progress``: progress bar."))


christoffel = _model_method("christoffel")
riemann = _model_method("riemann")
ricci = _model_method("ricci")
scalar_curvature = _model_method("scalar_curvature")
sectional_curvature = _model_method("sectional_curvature")
exp = _model_method("exp")
geodesic = _model_method("geodesic")
parallel_transport = _model_method("parallel_transport")
log = _model_method("log")
distance = _model_method("distance")
mahalanobis = _model_method("mahalanobis")


# ---------------------------------------------------------------------------------------------
# Mahalanobis outliers: moments per shard, merged exactly, then distances per shard
# ---------------------------------------------------------------------------------------------

class Outliers(NamedTuple):
    """``distances (N,)``: Mahalanobis distance of every row; ``indices``: rows whose distance has a
    z-score above ``z`` (as ``Covariance(X).outliers(z=z)``)."""
    distances: np.ndarray
    indices: np.ndarray


def _moments(first, last, X):
    """Task: the moments of the row blocks ``[first, last)`` of ``X`` (unit weights)."""
    return kc.block_moments(X, np.empty(0), first, last)


def _factor(eps, *moments):
    """Task: the blocks' moments merged in block order, and the Mahalanobis factor ``(mean, upper)``."""
    weight, means, comoments = (np.concatenate(part) for part in zip(*moments))
    mean, covariance = kc.merge_moments(weight, means, comoments)
    return mean, kc.mahalanobis_factor(covariance, eps)[1]


_factor_task = None


@_operation
def mahalanobis_outliers(X, z=3.0, *, eps=1e-9, shards=None, cpus_per_task=1):
    """Mahalanobis distances of the rows of ``X (N, d)`` to the data's own mean and covariance, and
    the outliers by z-score; the same numbers as ``Covariance(X, eps=eps)`` with ``.mahalanobis(X)``
    and ``.outliers(z=z)``. Per-shard sufficient statistics (weight, mean, co-moment of fixed blocks of
    rows) are merged exactly (Chan et al.) in one task, then each shard computes its distances."""
    X = _as_data(X)
    z = check_positive(z, "z")
    eps = check_positive(eps, "eps")
    shards = shard.check_shards(shards)
    cpus_per_task = shard.check_cpus(cpus_per_task)
    ensure_connected()
    n_blocks = kc.moment_blocks(len(X))
    blocks = shard.shard_bounds(n_blocks, shards or shard.default_shards(cpus_per_task))
    X_ref = ray.put(X)
    moments = shard.launch(_moments, blocks, X_ref, cpus_per_task=cpus_per_task)
    global _factor_task
    if _factor_task is None:
        _factor_task = ray.remote(_factor).options(max_retries=shard.MAX_RETRIES)
    factor = _factor_task.remote(eps, *moments)
    plan = Plan(_mahalanobis, None, (X,), {},
                lambda outputs: Outliers(outputs[0], kc.zscore_outliers(outputs[0], z)))
    return shard.start(plan, shards=len(blocks), cpus_per_task=cpus_per_task,
                       name="mahalanobis_outliers", shared=factor, row_refs=(X_ref,))


# ---------------------------------------------------------------------------------------------
# Layer superposition
# ---------------------------------------------------------------------------------------------

superposition_step = _sharded("step", LayerStack, "stack", name="superposition_step", doc="""``stack.step(U, observe, weights)`` sharded over the
entities: the stack's new states and the returned ``(superposition (N, S), entropy (N,))`` are
identical to the in-process step. Do not change the stack while the job runs.""")
collapse = _sharded("collapse", LayerStack, "stack", doc="""``stack.collapse(seed, layers=None, step=0)`` of every entity,
sharded over the entities: outcomes identical to the in-process collapse (counter-based draws keyed by
entity), entangled pairs correlated after the shards, the stack updated. Returns the outcomes.""")


# ---------------------------------------------------------------------------------------------
# A user's kernel
# ---------------------------------------------------------------------------------------------

def _apply(shared, Q):
    """``Plan.compute`` of ``map_points``: a flag (did ``fn`` return a tuple), then its outputs."""
    fn, args = shared
    out = fn(Q, *args)
    is_tuple = isinstance(out, tuple)
    for a in out if is_tuple else (out,):
        if np.ndim(a) == 0 or len(a) != len(Q):
            raise ValueError(f"{getattr(fn, '__name__', 'fn')} must return arrays with one row per row "
                             f"of its Q ({len(Q)}), got shape {np.shape(a)}")
    return (np.array([is_tuple]), *(out if is_tuple else (out,)))


def _unpack(outputs):
    """``Plan.finish`` of ``map_points``: an array, or a tuple where ``fn`` returned one."""
    flags, *outputs = outputs
    return tuple(outputs) if flags.any() else outputs[0]


@_operation
def map_points(fn, Q, *shared, shards=None, cpus_per_task=1):
    """``fn(Q[lo:hi], *shared)`` on contiguous shards of ``Q`` (any array, rows on the first axis),
    outputs joined along their first axis. ``fn`` returns an array or a tuple of arrays with one row
    per row of its ``Q``; it must be a picklable function (module-level, or a Numba ``@njit``
    function). ``shared`` objects (arrays, a model) are put in the object store once."""
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    Q = np.asarray(Q)
    if Q.ndim == 0 or len(Q) == 0:
        raise ValueError(f"Q must have at least one row, got shape {Q.shape}")
    shards = shard.check_shards(shards)
    cpus_per_task = shard.check_cpus(cpus_per_task)
    plan = Plan(_apply, (fn, shared), (Q,), {}, _unpack)
    return shard.start(plan, shards=shards, cpus_per_task=cpus_per_task,
                       name=getattr(fn, "__name__", "map_points"))
