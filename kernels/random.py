"""Counter-based random numbers: Philox-4x32-10 (Salmon et al., SC'11; Random123's ``philox4x32``).

A draw is a pure function of its key, with no generator state: the same key gives the same numbers
whatever the batch, thread count or order the work runs in, which makes sharded runs reproducible.
The key here is ``(seed, index, step, stream)``: Philox's 64-bit key is ``seed``; its 128-bit
counter is ``(index mod 2^32, index >> 32, step, stream)`` with ``index < 2^64`` (a global entity
index), ``step < 2^32`` and ``stream < 2^32`` (a layer). One evaluation gives two uniforms.

Written as plain wrapping integer arithmetic on uint64 holding 32-bit words (each product of two
32-bit words fits in 64 bits), so the same code compiles as a CUDA device function.
"""
import numpy as np
from numba import njit

from .config import INLINE_JIT

_M32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_SHIFT11 = np.uint64(11)
_MUL0 = np.uint64(0xD2511F53)
_MUL1 = np.uint64(0xCD9E8D57)
_WEYL0 = np.uint64(0x9E3779B9)
_WEYL1 = np.uint64(0xBB67AE85)
_TO_UNIT = 2.0 ** -53
ROUNDS = 10


@njit(**INLINE_JIT)
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox-4x32 with ``ROUNDS`` rounds of the counter ``(c0..c3)`` under the key ``(k0, k1)``.

    Every argument and result is a uint64 holding a 32-bit word.
    """
    for r in range(ROUNDS):
        if r > 0:
            k0 = (k0 + _WEYL0) & _M32
            k1 = (k1 + _WEYL1) & _M32
        p0 = _MUL0 * c0
        p1 = _MUL1 * c2
        c0, c1, c2, c3 = ((p1 >> _SHIFT32) ^ c1 ^ k0, p1 & _M32,
                          (p0 >> _SHIFT32) ^ c3 ^ k1, p0 & _M32)
    return c0, c1, c2, c3


@njit(**INLINE_JIT)
def uniform_pair(seed, index, step, stream):
    """Two independent uniform doubles in ``[0, 1)`` (53 random bits each) for the key
    ``(seed, index, step, stream)`` (all non-negative integers, see the module docstring)."""
    s = np.uint64(seed)
    i = np.uint64(index)
    r0, r1, r2, r3 = philox4x32(i & _M32, i >> _SHIFT32, np.uint64(step) & _M32,
                                np.uint64(stream) & _M32, s & _M32, s >> _SHIFT32)
    u0 = np.float64(((r0 << _SHIFT32) | r1) >> _SHIFT11) * _TO_UNIT
    u1 = np.float64(((r2 << _SHIFT32) | r3) >> _SHIFT11) * _TO_UNIT
    return u0, u1
