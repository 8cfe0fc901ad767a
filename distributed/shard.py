"""The sharding engine: a ``Plan`` run as Ray tasks over contiguous ranges of its points.

Inputs go into the object store once (``ray.put``) and reach every task by reference; a task slices
its range out of zero-copy read-only views, runs the plan's compute function (the very kernel call
of the in-process method) and returns only its slice of the outputs. The plan's shared parameters
(a fitted model) are put once per owner and reused by later jobs until the owner is dropped.
"""
import asyncio
import time
import warnings
import weakref

import numba
import numpy as np
import ray
from ray.exceptions import RayError, RayTaskError

from ..kernels.target import TARGETS, TargetFallbackWarning, caller_stacklevel
from .cluster import ensure_connected

MAX_RETRIES = 3
"""Retries of a task whose worker or node died (the kernels are idempotent)."""


class ShardError(RuntimeError):
    """A task of a sharded job failed: ``shard`` (its number), ``rows`` (``(lo, hi)``) and ``cause``
    (the original exception, whose type and message the text repeats)."""

    def __init__(self, shard, n_shards, rows, cause):
        if isinstance(cause, RayTaskError) and cause.cause is not None:
            cause = cause.cause
        self.shard, self.n_shards, self.rows, self.cause = shard, n_shards, rows, cause
        super().__init__(f"shard {shard} of {n_shards} (points {rows[0]}:{rows[1]}) failed: "
                         f"{type(cause).__name__}: {cause}")

    def __reduce__(self):
        return type(self), (self.shard, self.n_shards, self.rows, self.cause)


def shard_bounds(n, shards):
    """``shards`` contiguous ``[lo, hi)`` ranges covering ``0..n`` as evenly as possible (at most one
    per point, at least one)."""
    shards = max(1, min(int(shards), n))
    edges = [(k * n) // shards for k in range(shards + 1)]
    return list(zip(edges[:-1], edges[1:]))


def check_shards(shards):
    """``shards`` as a positive int, or None (one shard per CPU of the cluster)."""
    if shards is None:
        return None
    if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or shards < 1:
        raise ValueError(f"shards must be a positive integer or None, got {shards!r}")
    return int(shards)


def check_cpus(cpus_per_task):
    """``cpus_per_task`` as a positive number (CPUs Ray reserves for each task)."""
    if isinstance(cpus_per_task, bool) or not isinstance(cpus_per_task, (int, float, np.number)) \
            or not cpus_per_task > 0:
        raise ValueError(f"cpus_per_task must be a positive number, got {cpus_per_task!r}")
    return cpus_per_task


def default_shards(cpus_per_task=1, gpus_per_task=0):
    """As many shards as tasks of ``cpus_per_task`` CPUs (and ``gpus_per_task`` GPUs) fit in the
    cluster at once."""
    resources = ray.cluster_resources()
    fit = resources.get("CPU", 1) // cpus_per_task
    if gpus_per_task:
        fit = min(fit, resources.get("GPU", 0) // gpus_per_task)
    return max(1, int(fit))


def cluster_target(target, plan):
    """Where the tasks of ``plan`` run, ``"cpu"`` or ``"cuda"`` (one GPU per task), judged by the
    cluster's resources rather than this process's: ``"cuda"`` needs GPUs in the cluster and a plan
    with a CUDA kernel; ``"auto"`` takes them when both are there and says so when not."""
    if not isinstance(target, str) or target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(map(repr, TARGETS))}, got {target!r}")
    if target == "cpu":
        return "cpu"
    if target == "cuda":
        plan.on("cuda")  # a ValueError when the computation has no CUDA kernel
    elif "cuda" not in plan.targets:
        return "cpu"
    if ray.cluster_resources().get("GPU", 0) >= 1:
        return "cuda"
    reason = "the Ray cluster has no GPUs (start its nodes with --num-gpus)"
    if target == "cuda":
        raise RuntimeError(f"target='cuda' cannot run: {reason}")
    warnings.warn(f"target='auto' runs on the CPU: {reason}", TargetFallbackWarning,
                  stacklevel=caller_stacklevel())
    return "cpu"


# ---------------------------------------------------------------------------------------------
# Objects shared by reference
# ---------------------------------------------------------------------------------------------

_shared = {}           # (id(owner), id(obj)) -> ObjectRef
_shared_session = None  # the Ray session (driver's job and node) those references belong to


def shared_ref(obj, owner=None):
    """An object-store reference to ``obj``: put once per ``owner`` and reused until the owner is
    garbage-collected (then the object leaves the store); put anew every call without an owner."""
    global _shared_session
    context = ray.get_runtime_context()
    session = (context.get_job_id(), context.get_node_id())
    if session != _shared_session:  # a new Ray session: old references are void
        _shared.clear()
        _shared_session = session
    if owner is None:
        return ray.put(obj)
    key = (id(owner), id(obj))
    ref = _shared.get(key)
    if ref is None:
        ref = _shared[key] = ray.put(obj)
        weakref.finalize(owner, _shared.pop, key, None)
    return ref


def shared_count():
    """How many owners' objects the store holds for this process (a probe for tests)."""
    return len(_shared)


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------

def _in_task(fn, lo, hi, *args):
    """Runs in a Ray worker: Numba's thread count set to the CPUs the task was given, then
    ``fn(lo, hi, *args)``."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    numba.set_num_threads(max(1, min(int(cpus), numba.config.NUMBA_NUM_THREADS)))
    return fn(lo, hi, *args)


_remote = None


def launch(fn, bounds, *args, cpus_per_task=1, num_gpus=0):
    """One task ``fn(lo, hi, *args)`` per range of ``bounds``; ``fn`` a module-level function.
    ObjectRefs among ``args`` arrive in the task as their values (arrays: read-only views)."""
    global _remote
    if _remote is None:
        _remote = ray.remote(_in_task)
    task = _remote.options(num_cpus=cpus_per_task, num_gpus=num_gpus, max_retries=MAX_RETRIES,
                           retry_exceptions=False)
    return [task.remote(fn, lo, hi, *args) for lo, hi in bounds]


def take(a, axis, lo, hi):
    """``a[lo:hi]`` along ``axis`` (a view)."""
    return a[(slice(None),) * axis + (slice(lo, hi),)]


def _plan_shard(lo, hi, compute, shared, axes, options, offset, *rows):
    """Runs in a task: the plan's compute function on the rows ``lo:hi``."""
    rows = tuple(row if axis is None else take(row, axis, lo, hi) for row, axis in zip(rows, axes))
    if offset is not None:
        options = dict(options, **{offset: lo})
    out = compute(shared, *rows, **options)
    return tuple(out)


def start(plan, *, shards=None, cpus_per_task=1, name="job", shared=None, row_refs=None):
    """Start ``plan`` sharded: a ``Job``. ``shared`` overrides the plan's shared object (an
    ObjectRef from an earlier stage, say); ``row_refs`` gives object references already holding the
    plan's rows (None entries are put here). A plan for ``"cuda"`` asks one GPU per task."""
    ensure_connected()
    n = plan.n_points
    gpus = 1 if plan.options.get("target") == "cuda" else 0
    bounds = shard_bounds(n, shards or default_shards(cpus_per_task, gpus))
    axes = plan.split_axes()
    row_refs = row_refs or (None,) * len(plan.rows)
    rows = [ref if ref is not None or row is None else ray.put(row)
            for row, ref in zip(plan.rows, row_refs)]
    shared = shared_ref(plan.shared, plan.owner) if shared is None else shared
    refs = launch(_plan_shard, bounds, plan.compute, shared, axes, plan.options, plan.offset, *rows,
                  cpus_per_task=cpus_per_task, num_gpus=gpus)
    out_axes = plan.out_axes
    return Job(refs, bounds, lambda parts: plan.finish(_join(parts, out_axes)), name)


def _join(parts, out_axes):
    """The shards' output tuples joined into one tuple of arrays (the only copy of the outputs)."""
    n_out = len(parts[0])
    axes = out_axes if out_axes is not None else (0,) * n_out
    return tuple(np.concatenate([p[i] for p in parts], axis=axes[i]) for i in range(n_out))


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------

class Job:
    """A sharded computation in flight: ``result(timeout)``, ``await job``, ``done()``,
    ``progress`` (fraction of shards finished), ``cancel()``.

    Retries of lost tasks are Ray's; a task that raised makes ``result`` raise a ``ShardError``
    naming the shard and the original error.
    """

    def __init__(self, refs, bounds, finish, name="job"):
        self._refs, self._bounds, self._finish, self.name = refs, bounds, finish, name
        self._value, self._has_value, self.cancelled = None, False, False

    def __repr__(self):
        state = "cancelled" if self.cancelled else f"{self.progress:.0%} done"
        return f"Job({self.name!r}, {len(self._bounds)} shards, {state})"

    @property
    def shards(self):
        """The ``(lo, hi)`` point range of every shard."""
        return list(self._bounds)

    def _ready(self):
        if self._has_value:
            return len(self._bounds)
        ready, _ = ray.wait(self._refs, num_returns=len(self._refs), timeout=0, fetch_local=False)
        return len(ready)

    @property
    def progress(self):
        """Fraction of shards finished, in [0, 1]."""
        return self._ready() / len(self._bounds)

    def done(self):
        """Whether every shard has finished (successfully or not)."""
        return self._ready() == len(self._bounds)

    def cancel(self):
        """Cancel the shards not finished yet (their workers are stopped: compiled kernels cannot be
        interrupted otherwise); ``result`` then raises a ``ShardError``."""
        self.cancelled = True
        for ref in self._refs:
            ray.cancel(ref, force=True)

    def result(self, timeout=None, progress=True):
        """Wait for the shards (at most ``timeout`` seconds: ``TimeoutError``), join their outputs
        and return the result; ``progress`` shows a progress bar for jobs longer than a second.
        Interrupted (Ctrl-C), the job is cancelled."""
        if not self._has_value:
            try:
                self._wait(timeout, progress)
            except KeyboardInterrupt:
                self.cancel()
                raise
            self._set(self._gather(lambda k, ref: ray.get(ref)))
        return self._value

    def _wait(self, timeout, progress):
        deadline = None if timeout is None else time.monotonic() + timeout
        pending, total = list(self._refs), len(self._refs)
        with _progress_bar(total, self.name, progress) as bar:
            while pending:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready, pending = ray.wait(pending, num_returns=1, timeout=wait, fetch_local=False)
                bar.update(len(ready))
                if pending and deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"{self.name}: {len(pending)} of {total} shards not finished "
                                       f"after {timeout:g} s")

    def _gather(self, get):
        parts = []
        for k, ref in enumerate(self._refs):
            try:
                parts.append(get(k, ref))
            except RayError as exc:
                raise ShardError(k, len(self._refs), self._bounds[k], exc) from exc
        return parts

    def _set(self, parts):
        self._value, self._has_value = self._finish(parts), True
        self._refs = []  # the joined result is all that is kept: the store may free the slices

    def __await__(self):
        return self._async_result().__await__()

    async def _async_result(self):
        if not self._has_value:
            await asyncio.gather(*self._refs, return_exceptions=True)
            self._set(self._gather(lambda k, ref: ray.get(ref)))
        return self._value


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n):
        pass


def _progress_bar(total, name, enabled):
    """A tqdm bar that appears only after a second (short jobs stay quiet); none if disabled."""
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=name, unit="shard", delay=1.0, leave=False)
