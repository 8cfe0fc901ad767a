"""The Ray distribution layer: the kernels sharded over a Ray cluster. Needs ``pip install 'anant-fast[ray]'``.

``connect()`` starts an embedded local Ray (or joins a cluster by address); every operation connects
on first use. Sharded operations take the same arguments as the in-process methods plus ``shards``
and give identical results: ``scalar_curvature(model, Q)``, ``christoffel``, ``riemann``, ``ricci``,
``sectional_curvature``, ``exp``, ``geodesic``, ``parallel_transport``, ``log``, ``distance``,
``mahalanobis``, ``mahalanobis_outliers(X, z)``, ``superposition_step(stack, ...)``,
``collapse(stack, seed)``, and ``map_points(fn, Q, *shared)`` for a user's own kernel.
``submit(op, *args)`` returns a ``Job`` without waiting. ``data`` holds Ray Data batch adapters.
"""
try:
    import ray  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("anant_fast.distributed needs Ray: pip install 'anant-fast[ray]'") from exc

from .cluster import connect, shutdown, status
from .ops import (Outliers, christoffel, collapse, distance, exp, geodesic, log, mahalanobis,
                  mahalanobis_outliers, map_points, parallel_transport, ricci, riemann,
                  scalar_curvature, sectional_curvature, submit, superposition_step)
from .shard import Job, ShardError, shard_bounds

__all__ = ["Job", "Outliers", "ShardError", "christoffel", "collapse", "connect", "distance", "exp",
           "geodesic", "log", "mahalanobis", "mahalanobis_outliers", "map_points",
           "parallel_transport", "ricci", "riemann", "scalar_curvature", "sectional_curvature",
           "shard_bounds", "shutdown", "status", "submit", "superposition_step"]
