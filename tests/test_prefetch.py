"""Software prefetch hints: harmless for any range, invisible in results."""
import numpy as np
import pytest
from numba import njit

from anant_fast.kernels.prefetch import prefetch_rows


@njit(cache=False)
def _prefetch_then_sum(a, lo, hi):
    prefetch_rows(a, lo, hi)
    return a.sum()


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int8, np.complex128])
@pytest.mark.parametrize("lo, hi", [(0, 5), (2, 3), (4, 100), (50, 60), (3, 1)])
def test_prefetch_of_any_rows_leaves_the_array_alone(dtype, lo, hi):
    a = np.arange(5 * 7).reshape(5, 7).astype(dtype)
    before = a.copy()
    assert _prefetch_then_sum(a, lo, hi) == before.sum()
    np.testing.assert_array_equal(a, before)


def test_prefetch_rejects_arrays_it_cannot_address_flat():
    with pytest.raises(Exception, match="(?i)prefetch"):
        _prefetch_then_sum(np.ones((4, 6))[:, ::2], 0, 2)
