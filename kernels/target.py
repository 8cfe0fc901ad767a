"""Where a kernel runs: ``target="cpu"`` (the default), ``"cuda"`` or ``"auto"``.

``"cuda"`` needs the optional ``numba-cuda`` package (``pip install 'anant-fast[cuda]'``) and an
NVIDIA device, or the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, for tests); without them it is an
error that names the cause. ``"auto"`` takes the GPU when there is one and otherwise runs on the CPU,
saying so once per process with a ``TargetFallbackWarning``.
"""
import importlib.util
import logging
import os
import sys
import warnings

TARGETS = ("cpu", "cuda", "auto")

_log = logging.getLogger("anant_fast")
_warned = set()


class TargetFallbackWarning(UserWarning):
    """``target="auto"`` found no usable GPU and ran on the CPU."""


def cuda_module():
    """``numba.cuda`` from the ``numba-cuda`` package; an ImportError naming the extra otherwise."""
    try:
        import numba_cuda  # noqa: F401  (numba's own, deprecated numba.cuda is not enough)
    except ImportError as error:
        raise ImportError("target='cuda' needs the numba-cuda package: "
                          "pip install 'anant-fast[cuda]'") from error
    from numba import cuda
    if not simulated():
        try:   # the compiler's registries, loaded at the first compilation otherwise
            importlib.import_module("numba.cuda.cudaimpl")
        except AttributeError as error:   # e.g. numba-cuda 0.30.4 and numpy 2.5 (np.row_stack)
            import numpy
            raise ImportError(
                f"target='cuda' cannot compile: numba-cuda {numba_cuda.__version__} does not support "
                f"numpy {numpy.__version__} ({error}); install a numba-cuda that does, or an older "
                f"numpy") from error
    return cuda


def simulated():
    """True when Numba's CUDA simulator stands in for the GPU (``NUMBA_ENABLE_CUDASIM=1``)."""
    from numba.core import config
    return bool(config.ENABLE_CUDASIM)


_CANNOT_RUN = "target='cuda' cannot run: "


def cuda_unavailable():
    """Why CUDA kernels cannot run in this process (an ImportError or RuntimeError), or None."""
    try:
        cuda = cuda_module()
    except ImportError as error:
        return error
    if not cuda.is_available():
        return RuntimeError(_CANNOT_RUN + "no CUDA device (numba.cuda found no usable NVIDIA GPU "
                            "and driver; numba.cuda.detect() tells more)")
    return None


def resolve(target, name="target"):
    """``"cpu"`` or ``"cuda"``: where a call with ``target`` runs (see the module docstring)."""
    if not isinstance(target, str) or target not in TARGETS:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, TARGETS))}, got {target!r}")
    if target == "cpu":
        return "cpu"
    reason = cuda_unavailable()
    if reason is None:
        _log.info("%s=%r runs on the GPU", name, target)
        return "cuda"
    if target == "cuda":
        raise reason
    why = str(reason).removeprefix(_CANNOT_RUN)
    if why not in _warned:
        _warned.add(why)
        warnings.warn(f"{name}='auto' runs on the CPU: {why}", TargetFallbackWarning,
                      stacklevel=caller_stacklevel())
    _log.info("%s='auto' runs on the CPU: %s", name, why)
    return "cpu"


def is_device_array(a):
    """True for GPU arrays: numba.cuda device arrays and anything with ``__cuda_array_interface__``
    (and the simulator's stand-ins for device arrays)."""
    if hasattr(a, "__cuda_array_interface__"):
        return True
    if a is None or isinstance(a, (list, tuple)) or type(a).__module__.startswith("numpy"):
        return False
    if simulated():
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray
        return isinstance(a, FakeCUDAArray)
    return False


def caller_stacklevel():
    """``stacklevel`` for a warning about the caller's line: the first frame outside this package."""
    ours = tuple(os.path.join(os.path.abspath(path), "") for part in ("anant_fast", "anant_fast.kernels",
                                                                      "anant_fast.distributed")
                 for path in importlib.util.find_spec(part).submodule_search_locations)
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(ours):
        frame, level = frame.f_back, level + 1
    return level
