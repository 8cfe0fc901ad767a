"""Numba options shared by every kernel, in one place (STUMPY's ``config`` habit).

``fastmath`` stays off: its ``nnan``/``ninf`` flags would break the NaN checks the kernels rely on.
Every kernel is cached on disk; per-model specialisation keeps the cache usable (see ``metric.py``).
"""
import hashlib
import pathlib
import warnings

import numba
from numba.core.errors import NumbaIRAssumptionWarning

warnings.filterwarnings("ignore", category=NumbaIRAssumptionWarning)
"""Numba's inliner emits these pedantic internal-consistency notes ("variable ... is not in scope")
for the closed-form evaluators inlined in the geodesic kernels; they are not about user code."""

JIT = {"cache": True, "fastmath": False, "error_model": "numpy"}
"""Options of every serial kernel and helper."""

INLINE_JIT = dict(JIT, inline="always")
"""Options of the small point-wise helpers called once or more per point. Inlining them at Numba-IR
level lets Numba drop the reference counting of their array arguments, which otherwise costs tens of
nanoseconds per call, more than the arithmetic of a small point."""

NESTED_JIT = dict(JIT, cache=False)
"""Options of the non-inlined helpers that take a model record. Their code is linked into, and
cached with, the kernels that call them; cached on their own they would add nothing, and for a
``Custom`` model (a new record type in every process) they would leave a new file on every run."""

PARALLEL_JIT = dict(JIT, parallel=True)
"""Options of the kernels that run ``prange`` over blocks of points."""

FMA_JIT = dict(PARALLEL_JIT, fastmath={"contract"})
"""``PARALLEL_JIT`` letting LLVM fuse ``a * b + c`` into one FMA instruction (one rounding instead of
two; no ``nnan``/``ninf``): for the mixing and renormalising loops of the superposition update,
5-15% faster here. Kernels whose results must match the GPU's bit for bit (the collapse, the
Mahalanobis distances, the unitary product) round through an explicit ``simd.fma`` instead."""

BLOCKS_PER_THREAD = 4
"""Blocks of points per Numba thread: enough to balance uneven per-point work."""


def block_count(n_points):
    """Number of contiguous point blocks for a parallel kernel (at least 1, at most ``n_points``)."""
    return int(max(1, min(n_points, numba.get_num_threads() * BLOCKS_PER_THREAD)))


@numba.njit(**JIT)
def block_bounds(block, n_blocks, n_points):
    """``[lo, hi)`` of point block ``block`` of ``n_blocks`` contiguous blocks over ``n_points``."""
    lo = (block * n_points) // n_blocks
    hi = ((block + 1) * n_points) // n_blocks
    return lo, hi


_UNCACHED = {}


def uncached(kernel):
    """The same kernel compiled without the on-disk cache.

    Used for models that carry a user's compiled function (``Custom``): its type differs in every
    process, so a cache entry could never be loaded again and would only pile up on disk.
    """
    twin = _UNCACHED.get(kernel)
    if twin is None:
        options = {k: v for k, v in kernel.targetoptions.items() if k != "nopython"}
        options["cache"] = False
        twin = _UNCACHED[kernel] = numba.njit(**options)(kernel.py_func)
    return twin


def _drop_stale_cache():
    """Delete this package's on-disk Numba cache when any kernel source changed.

    Numba checks only the stamp of the file defining a cached kernel, but our kernels inline code
    from sibling modules (the model evaluators, the point-wise algorithms): after an edit to one of
    those, a stale cache would be loaded silently. A digest of every kernel source guards the
    in-tree cache (``__pycache__`` next to the sources: editable installs and checkouts).
    """
    here = pathlib.Path(__file__).parent
    cache = here / "__pycache__"
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(here.glob("*.py")))).hexdigest()
    stamp = cache / "kernel-sources.sha256"
    try:
        if stamp.exists() and stamp.read_text() == digest:
            return
        for f in list(cache.glob("*.nbi")) + list(cache.glob("*.nbc")):
            f.unlink()
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:  # read-only install: its files all change together on upgrade
        pass


_drop_stale_cache()
