"""Software prefetch hints: harmless for any range, invisible in results."""
import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from anant_fast.kernels.prefetch import elements_per_line, prefetch_l2, prefetch_rows, prefetch_span


@njit(cache=False)
def _prefetch_then_sum(a, lo, hi):
    prefetch_rows(a, lo, hi)
    prefetch_span(a, lo * 3, hi * 3)
    return a.sum()


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int8, np.complex128])
@pytest.mark.parametrize("lo, hi", [(0, 5), (2, 3), (4, 100), (50, 60), (3, 1), (-3, 2)])
def test_prefetch_of_any_rows_leaves_the_array_alone(dtype, lo, hi):
    a = np.arange(5 * 7).reshape(5, 7).astype(dtype)
    before = a.copy()
    assert _prefetch_then_sum(a, lo, hi) == before.sum()
    np.testing.assert_array_equal(a, before)


@njit(cache=False)
def _hint_anywhere(a, offsets):
    for f in offsets:
        prefetch_l2(a, f)
    return a.sum()


def test_hints_outside_the_array_are_harmless():
    a = np.arange(12.0).reshape(3, 4)
    offsets = np.array([-(1 << 40), -1, 12, 1 << 20, 1 << 40], np.int64)
    assert _hint_anywhere(a, offsets) == 66.0
    np.testing.assert_array_equal(a, np.arange(12.0).reshape(3, 4))


def test_prefetch_rejects_arrays_it_cannot_address_flat():
    with pytest.raises(TypingError, match=r"prefetch_l2\(array\(float64, 2d, A\)"):
        _prefetch_then_sum(np.ones((4, 6))[:, ::2], 0, 2)


@pytest.mark.parametrize("dtype, per_line", [(np.float64, 8), (np.float32, 16), (np.int8, 64),
                                             (np.complex128, 4)])
def test_elements_per_line_is_the_same_compiled_and_in_python(dtype, per_line):
    a = np.zeros(3, dtype)
    assert elements_per_line(a) == per_line
    assert njit(cache=False)(lambda a: elements_per_line(a))(a) == per_line
