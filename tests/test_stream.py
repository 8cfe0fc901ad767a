"""Non-temporal stores: the same values as ordinary ones, at every offset and alignment."""
import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from anant_fast.kernels.simd import WIDTH, splat
from anant_fast.kernels.stream import copy_out, fence, stream


@njit(cache=False)
def _copy_out(src, s, dst, d, n):
    copy_out(src, s, dst, d, n)
    fence()


@pytest.mark.parametrize("n", [0, 1, WIDTH - 1, WIDTH, 3 * WIDTH + 5, 200])
@pytest.mark.parametrize("s, d", [(0, 0), (3, 0), (0, 5), (7, 9)])
def test_copy_out_copies_exactly_the_span(n, s, d):
    rng = np.random.default_rng(n + 10 * s + d)
    src = rng.normal(size=n + s + 3)
    dst = rng.normal(size=n + d + 2 * WIDTH)
    expected = dst.copy()
    expected[d:d + n] = src[s:s + n]
    _copy_out(src, s, dst, d, n)
    np.testing.assert_array_equal(dst, expected)


def test_copy_out_into_data_without_8_byte_alignment_uses_ordinary_stores():
    raw = np.zeros(8 * 40 + 1, np.uint8)
    dst = raw[1:].view(np.float64)   # no element is aligned: a streamed vector would fault
    src = np.arange(40.0)
    _copy_out(src, 0, dst, 0, 40)
    np.testing.assert_array_equal(dst, src)


@njit(cache=False)
def _stream_float(a):
    stream(a, 0, 1.0)


@njit(cache=False)
def _stream_read_only(a):
    stream(a, 0, splat(1.0))


def test_stream_takes_only_vectors_into_writable_float64_arrays():
    with pytest.raises(TypingError):
        _stream_float(np.zeros(WIDTH))
    read_only = np.zeros(WIDTH)
    read_only.flags.writeable = False
    with pytest.raises(TypingError):
        _stream_read_only(read_only)
