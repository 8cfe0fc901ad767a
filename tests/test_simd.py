"""Explicit SIMD vectors: each lane is IEEE arithmetic, bitwise its scalar twin."""
import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from anant_fast.kernels import simd
from anant_fast.kernels.simd import WIDTH, add, fma, lanes, load, splat, sqrt, store

rng = np.random.default_rng(7)


@njit(cache=False)
def _fma_lanes(a, b, c, out):
    for i in range(0, a.size - WIDTH + 1, WIDTH):
        store(out, i, fma(load(a, i), load(b, i), load(c, i)))


@njit(cache=False)
def _sqrt_lanes(a, out):
    for i in range(0, a.size - WIDTH + 1, WIDTH):
        store(out, i, sqrt(load(a, i)))


@njit(cache=False)
def _splat_at(x, out, i):
    store(out, i, splat(x))


def test_load_and_store_move_lanes_at_any_offset_and_from_read_only_arrays():
    a = np.arange(11.0)
    a.flags.writeable = False
    out = np.full(11, -1.0)
    _sqrt_lanes(a[3:], out[1:])   # offsets that are not vector-aligned
    expected = np.full(11, -1.0)
    expected[1:9] = np.sqrt(a[3:11])
    np.testing.assert_array_equal(out, expected)


def test_fma_rounds_once():
    a, b, c = 1.0 + 2.0 ** -30, 1.0 - 2.0 ** -30, -1.0
    assert a * b + c == 0.0   # the product rounds to 1 first
    out = np.empty(WIDTH)
    _fma_lanes(np.full(WIDTH, a), np.full(WIDTH, b), np.full(WIDTH, c), out)
    np.testing.assert_array_equal(out, -(2.0 ** -60))


def test_fma_and_sqrt_match_the_scalar_results_lane_by_lane():
    a, b, c = rng.normal(size=(3, 64))
    out = np.empty(64)
    _fma_lanes(a, b, c, out)
    np.testing.assert_allclose(out, a * b + c, rtol=1e-15, atol=1e-15)
    x = np.concatenate([rng.uniform(0, 1e6, 60), [0.0, -0.0, np.inf, -1.0]])
    _sqrt_lanes(x, out)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(out, np.sqrt(x))   # IEEE: correctly rounded, NaN below 0


@pytest.mark.parametrize("x", [2.5, 3, np.float32(0.5)])
def test_splat_fills_every_lane(x):
    out = np.zeros(WIDTH + 2)
    _splat_at(x, out, 1)
    np.testing.assert_array_equal(out, [0.0] + [float(x)] * WIDTH + [0.0])


def test_vectors_need_contiguous_writable_float64_arrays():
    out = np.empty(8)
    for bad in (np.ones((4, 2), order="F"), np.ones(8, np.float32), np.ones(16)[::2]):
        with pytest.raises(TypingError):
            _sqrt_lanes(bad, out)
    read_only = np.empty(8)
    read_only.flags.writeable = False
    with pytest.raises(TypingError):
        _sqrt_lanes(np.ones(8), read_only)


def test_width_follows_the_compile_target(monkeypatch):
    assert WIDTH in (4, 8)
    monkeypatch.setattr(simd.config, "CPU_FEATURES", "+avx2,+fma,+avx512f")
    assert simd._lanes() == 8
    monkeypatch.setattr(simd.config, "CPU_FEATURES", "+avx2,+fma,-avx512f")
    assert simd._lanes() == 4
    monkeypatch.setattr(simd.config, "CPU_FEATURES", None)
    monkeypatch.setattr(simd.config, "CPU_NAME", "generic")
    assert simd._lanes() == 4


@njit(cache=False)
def _axpy_at(a, x, y, out, i, zero):
    """out = a x + y + y at flat element i: one element (``zero`` a float) or a vector of them."""
    store(out, i, add(fma(a, lanes(x, i, zero), lanes(y, i, zero)), lanes(y, i, zero)))


@njit(cache=False)
def _axpy(a, x, y, out, vectors):
    for i in range(0, x.size, WIDTH if vectors else 1):
        if vectors:
            _axpy_at(a, x, y, out, i, splat(0.0))
        else:
            _axpy_at(a, x, y, out, i, 0.0)


def test_scalar_and_vector_forms_of_one_body_give_the_same_bits():
    x, y = rng.normal(size=(2, 3, 4 * WIDTH))   # 2-D C arrays: flat indexing
    vector, scalar = np.empty_like(x), np.empty_like(x)
    _axpy(1.0 / 3.0, x, y, vector, True)
    _axpy(1.0 / 3.0, x, y, scalar, False)
    np.testing.assert_array_equal(vector, scalar)
    np.testing.assert_allclose(scalar, x / 3.0 + 2 * y, rtol=1e-15, atol=1e-15)
