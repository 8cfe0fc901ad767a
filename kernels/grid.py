"""A cell grid over reference points, for fixed-radius neighbour sums inside compiled kernels.

The grid spans at most three coordinate axes (those of widest spread). Cells are at least the
cutoff wide, so every reference within the cutoff of a query lies in the 3**k cells around the
query's cell (k = number of grid axes); in more than three dimensions the projection onto the grid
axes only makes the candidate set larger, never drops a neighbour. Built once per model in NumPy;
queried in compiled code without materialising neighbour lists.
"""
import math

import numpy as np
from numba import njit

from .config import INLINE_JIT

MAX_GRID_AXES = 3


def cutoff_radius(sigma, dim, tol=1e-9):
    """Radius beyond which a Gaussian weight ``exp(-r²/2σ²)``, times the ``r⁴`` growth of the
    moments it multiplies and the ``r^(dim-1)`` growth of the shell, is below ``tol``."""
    r = math.sqrt(2.0 * math.log(1.0 / tol))
    while math.exp(-0.5 * r * r) * r ** (dim + 3) > tol:
        r += 0.05
    return r * sigma


def build_grid(X, cutoff, max_cells=None):
    """Sort reference points ``X (N, d)`` into cells of width >= ``cutoff``.

    Returns ``(points, cell_start, axes, origin, inv_width, shape)``: the points sorted by cell
    (N, d), offsets such that cell ``c`` holds ``points[cell_start[c]:cell_start[c+1]]``, the grid's
    axes (k,), its lower corner (k,), 1 / cell width, and cells per axis (k,).
    """
    n, d = X.shape
    k = min(d, MAX_GRID_AXES)
    spread = X.max(axis=0) - X.min(axis=0)
    axes = np.sort(np.argsort(-spread, kind="stable")[:k]).astype(np.int64)
    lo = X[:, axes].min(axis=0)
    span = spread[axes]
    if max_cells is None:
        max_cells = max(64, 4 * n)
    width = float(cutoff)
    while True:
        shape = np.floor(span / width).astype(np.int64) + 1
        if np.prod(shape.astype(np.float64)) <= max_cells:
            break
        width *= 1.25
    cell = np.minimum(np.floor((X[:, axes] - lo) / width).astype(np.int64), shape - 1)
    flat = np.ravel_multi_index(cell.T, shape)
    order = np.argsort(flat, kind="stable")
    counts = np.bincount(flat, minlength=int(np.prod(shape)))
    cell_start = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=cell_start[1:])
    return (np.ascontiguousarray(X[order]), cell_start, axes, np.ascontiguousarray(lo),
            1.0 / width, shape)


@njit(**INLINE_JIT)
def neighbour_cell(t, x, axes, origin, inv_width, shape):
    """Flat index of the ``t``-th of the 3**k cells around ``x`` (k = len(axes)); -1 if off the grid."""
    flat = 0
    for j in range(axes.shape[0]):
        offset = t % 3 - 1
        t //= 3
        f = (x[axes[j]] - origin[j]) * inv_width
        if not (f > -2.0 and f < shape[j] + 1.0):  # off the grid, or NaN: never converted to int
            return -1
        c = int(math.floor(f)) + offset
        if c < 0 or c >= shape[j]:
            return -1
        flat = flat * shape[j] + c
    return flat
