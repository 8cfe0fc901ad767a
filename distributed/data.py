"""Ray Data adapters: the kernels inside ``ray.data.Dataset.map_batches``.

``geometry_columns(ds, model, ["x", "y"], covariance=cov)`` adds a ``scalar_curvature`` column (and a
``mahalanobis`` column when a fitted ``Covariance`` is given) to every batch of ``ds``; the fitted
models are put in the object store once and each batch worker reads them by reference.
"""
import numpy as np
import ray

from .. import metrics
from .shard import shared_ref


class GeometryColumns:
    """A ``map_batches`` transform (use it with ``batch_format="numpy"``): the points are the columns
    ``columns`` of a batch (one float64 coordinate each, ``dim`` of them); adds ``scalar_curvature``
    (of ``model``) and, with a ``covariance``, ``mahalanobis``. ``model`` and ``covariance``: fitted
    models or object references to them."""

    def __init__(self, model, columns, covariance=None):
        self.model = ray.get(model) if isinstance(model, ray.ObjectRef) else model
        self.covariance = ray.get(covariance) if isinstance(covariance, ray.ObjectRef) else covariance
        self.columns = list(columns)

    def __call__(self, batch):
        Q = np.column_stack([np.asarray(batch[c], dtype=np.float64) for c in self.columns])
        out = dict(batch)
        if len(Q):
            out["scalar_curvature"] = self.model.scalar_curvature(Q)
            if self.covariance is not None:
                out["mahalanobis"] = self.covariance.mahalanobis(Q)
        else:
            out["scalar_curvature"] = np.empty(0)
            if self.covariance is not None:
                out["mahalanobis"] = np.empty(0)
        return out


def geometry_columns(ds, model, columns, covariance=None, *, concurrency=None, batch_size=4096):
    """``ds`` with the columns of ``GeometryColumns`` added (a lazy ``ray.data.Dataset``).

    ``columns`` must name ``model.dim`` columns of ``ds``; ``covariance`` a fitted
    ``metrics.Covariance`` of the same dimension (optional); ``concurrency`` the number of batch
    workers (actors, one CPU each; default 1).
    """
    if not isinstance(model, metrics.MetricModel):
        raise TypeError(f"model must be an anant_fast.metrics model, got {type(model).__name__}")
    columns = list(columns)
    if len(columns) != model.dim:
        raise ValueError(f"columns must name {model.dim} columns (the model's dim), got {columns}")
    missing = sorted(set(columns) - set(ds.columns()))
    if missing:
        raise ValueError(f"columns {missing} are not in the dataset (it has {ds.columns()})")
    if covariance is not None and not isinstance(covariance, metrics.Covariance):
        raise TypeError(f"covariance must be a metrics.Covariance, got {type(covariance).__name__}")
    if covariance is not None and covariance.dim != model.dim:
        raise ValueError(f"covariance has dim {covariance.dim}, the model {model.dim}")
    refs = {"model": shared_ref(model, model),
            "covariance": None if covariance is None else shared_ref(covariance, covariance)}
    return ds.map_batches(GeometryColumns, fn_constructor_kwargs=dict(refs, columns=columns),
                          batch_format="numpy", batch_size=batch_size,
                          concurrency=concurrency or 1)
