"""Validation at the Python boundary: convert what is lossless, refuse the rest with a clear error.

Compiled kernels trust their inputs; everything they receive passes through here first.
"""
import numpy as np


def readonly(a):
    """A read-only view of the input ``a``. Kernels see every input read-only, so a caller's
    read-only array (a Ray object-store view, a frozen likelihood) runs the same compiled kernel
    as a writable one, and a kernel can never write into its inputs."""
    view = a.view()
    view.flags.writeable = False
    return view


def frozen(record):
    """The model record ``record`` with every array field a read-only view (see ``readonly``)."""
    return type(record)(*(readonly(f) if isinstance(f, np.ndarray) else f for f in record))


def as_real_array(a, name):
    """``a`` as a C-contiguous float64 array (bool, int and float inputs convert; others are a TypeError)."""
    arr = np.asarray(a)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def check_finite(a, name):
    """Raise a ValueError naming ``name`` and the first bad index if ``a`` holds NaN or inf."""
    if np.isfinite(np.add.reduce(a, axis=None)):  # one cheap pass: NaN and inf propagate into the sum
        return
    bad = ~np.isfinite(a)
    if bad.any():
        where = np.unravel_index(int(np.argmax(bad)), a.shape)
        raise ValueError(f"{name} contains NaN or inf (first at index {tuple(int(i) for i in where)})")


def as_points(Q, dim, name="Q"):
    """Points ``(M, dim)`` (or one point ``(dim,)``) as float64; returns ``(points_2d, was_single)``."""
    a = as_real_array(Q, name)
    single = a.ndim == 1
    if single:
        a = a[None, :]
    if a.ndim != 2 or a.shape[1] != dim:
        raise ValueError(f"{name} must have shape (M, {dim}) or ({dim},), got {np.shape(Q)}")
    if a.shape[0] == 0:
        raise ValueError(f"{name} is empty: it must hold at least one point")
    check_finite(a, name)
    return a, single


def as_batch(a, name, tail, n_points=None):
    """A finite float64 batch of shape ``(M,) + tail``; ``M`` must equal ``n_points`` when given."""
    arr = as_real_array(a, name)
    expected = ("M",) + tuple(tail)
    if arr.ndim != len(expected) or arr.shape[1:] != tuple(tail) or arr.shape[0] == 0:
        raise ValueError(f"{name} must have shape {expected} with M >= 1, got {arr.shape}")
    if n_points is not None and arr.shape[0] != n_points:
        raise ValueError(f"{name} has {arr.shape[0]} points, expected {n_points}")
    check_finite(arr, name)
    return arr


def check_spd(g, name):
    """Raise a ValueError if any matrix of ``g (M, d, d)`` is not symmetric positive definite."""
    scale = np.abs(g).max(axis=(1, 2))
    asym = np.abs(g - np.swapaxes(g, 1, 2)).max(axis=(1, 2)) > 1e-10 * scale
    if asym.any():
        raise ValueError(f"{name} is not symmetric at point {int(np.argmax(asym))}")
    try:
        np.linalg.cholesky(g)
    except np.linalg.LinAlgError:
        eig_min = np.linalg.eigvalsh(g)[:, 0]
        bad = int(np.argmax(~(eig_min > 0)))
        raise ValueError(f"{name} is not positive definite at point {bad} "
                         f"(smallest eigenvalue {eig_min[bad]:.3g})") from None


def check_positive(value, name):
    """``value`` as a float that must be finite and > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}") from None
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return v


def check_dim(dim, name="dim", minimum=1):
    """``dim`` as an int >= ``minimum``."""
    if isinstance(dim, (bool, np.bool_)) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(dim).__name__}")
    if dim < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {dim}")
    return int(dim)


def as_plane(u, v, n_points, dim, single, names=("u", "v")):
    """Tangent vectors ``u``, ``v`` of shape ``(M, dim)`` (``(dim,)`` when ``single``) spanning a plane
    at every point: finite and linearly independent (a chart-independent property)."""
    vectors = []
    for name, a in zip(names, (u, v)):
        arr = as_real_array(a, name)
        if single and arr.ndim == 1:
            arr = arr[None]
        vectors.append(as_batch(arr, name, (dim,), n_points))
    U, V = vectors
    uu = np.einsum("mi,mi->m", U, U)
    vv = np.einsum("mi,mi->m", V, V)
    uv = np.einsum("mi,mi->m", U, V)
    flat = ~(uu * vv - uv * uv > 1e-24 * uu * vv) | (uu == 0) | (vv == 0)
    if flat.any():
        raise ValueError(f"{names[0]} and {names[1]} do not span a plane at point "
                         f"{int(np.argmax(flat))} (zero or parallel vectors)")
    return U, V
