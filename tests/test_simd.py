"""Explicit SIMD vectors: each lane is IEEE arithmetic, bitwise its scalar twin."""
import os
import subprocess
import sys

import llvmlite.binding as llvm
import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from anant_fast.kernels import simd
from anant_fast.kernels.simd import (WIDTH, add, fma, lanes, load, mul, reciprocal_norm, splat, sqrt,
                                     store, transpose, transpose_matrix)

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


@njit(cache=False)
def _fma_scalars(a, b, c, out):
    for i in range(a.size):
        store(out, i, fma(a[i], b[i], c[i]))


def test_fma_and_sqrt_match_the_scalar_results_lane_by_lane():
    a, b, c = rng.normal(size=(3, 64)) * 10.0 ** rng.uniform(-8, 8, (3, 64))
    out, scalar = np.empty(64), np.empty(64)
    _fma_lanes(a, b, c, out)
    _fma_scalars(a, b, c, scalar)
    np.testing.assert_array_equal(out, scalar)
    np.testing.assert_allclose(out, a * b + c, rtol=1e-12, atol=1e-300)
    x = np.concatenate([rng.uniform(0, 1e6, 60), [0.0, -0.0, np.inf, -1.0]])
    _sqrt_lanes(x, out)
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(out, np.sqrt(x))   # IEEE: correctly rounded, NaN below 0


@njit(cache=False)
def _reciprocal_norms(q, out, scalar):
    for i in range(0, q.size - WIDTH + 1, WIDTH):
        store(out, i, reciprocal_norm(load(q, i)))
    for i in range(q.size):
        scalar[i] = reciprocal_norm(q[i])


def test_reciprocal_norm_is_one_over_the_root_of_a_good_norm_else_one():
    q = np.concatenate([10.0 ** rng.uniform(-300, 300, 56),
                        [0.0, -0.0, np.inf, np.nan, -1.0, 5e-324, 1.7e308, 4.0]])
    out, scalar = np.empty(64), np.empty(64)
    _reciprocal_norms(q, out, scalar)
    np.testing.assert_array_equal(out, scalar)
    good = (q > 0) & (q < np.inf)
    np.testing.assert_array_equal(out[good], 1.0 / np.sqrt(q[good]))   # correctly rounded, twice
    np.testing.assert_array_equal(out[~good], 1.0)
    assert good.sum() == 59


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
    """out = a x + y + y at flat element i, then times a: one element (``zero`` a float) or a vector
    of them."""
    store(out, i, mul(add(fma(a, lanes(x, i, zero), lanes(y, i, zero)), lanes(y, i, zero)), a))


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
    np.testing.assert_allclose(scalar, (x / 3.0 + 2 * y) / 3.0, rtol=1e-15, atol=1e-15)



@njit(cache=False)
def _transpose(src, i, si, dst, j, sj):
    transpose(src, i, si, dst, j, sj)


@njit(cache=False)
def _transpose_matrix(src, i, si, dst, j, sj, rows, cols):
    transpose_matrix(src, i, si, dst, j, sj, rows, cols)


def _transposed(src, i, si, dst, j, sj, rows, cols):
    """``dst`` with the block written as the transpose kernels document it (NumPy)."""
    out = dst.copy()
    for r in range(rows):
        for c in range(cols):
            out.flat[j + c * sj + r] = src.flat[i + r * si + c]
    return out


@pytest.mark.parametrize("i, si, j, sj", [(0, WIDTH, 0, WIDTH), (3, 2 * WIDTH + 1, 5, WIDTH + 3),
                                          (1, 3 * WIDTH, 0, 2 * WIDTH)])
def test_transpose_moves_a_block_in_registers(i, si, j, sj):
    src = rng.normal(size=(i + WIDTH * si + WIDTH))
    dst = rng.normal(size=(j + WIDTH * sj + WIDTH))
    expected = _transposed(src, i, si, dst, j, sj, WIDTH, WIDTH)
    _transpose(src, i, si, dst, j, sj)
    np.testing.assert_array_equal(dst, expected)


@pytest.mark.parametrize("rows, cols", [(0, 5), (1, 1), (WIDTH, WIDTH), (13, 2 * WIDTH),
                                        (2 * WIDTH, 6), (3 * WIDTH + 5, WIDTH + 1)])
def test_transpose_matrix_of_any_shape_and_offsets(rows, cols):
    si, sj, i, j = cols + 2, rows + 3, 4, 1
    src = rng.normal(size=i + rows * si + 2).reshape(1, -1)   # 2-D: indexed flat
    dst = rng.normal(size=j + cols * sj + 2)
    expected = _transposed(src, i, si, dst, j, sj, rows, cols)
    _transpose_matrix(src, i, si, dst, j, sj, rows, cols)
    np.testing.assert_array_equal(dst, expected)


_WIDTH_4 = """
import sys
import numpy as np
from anant_fast import metrics
from anant_fast.kernels import simd, superposition as sp
rng = np.random.default_rng(3)
X = rng.normal(size=(300, 7)) @ rng.normal(size=(7, 7))
psi = rng.normal(size=(2, 200, 6)) + 1j * rng.normal(size=(2, 200, 6))
U = np.linalg.qr(rng.normal(size=(6, 6)) + 1j * rng.normal(size=(6, 6)))[0]
np.savez(sys.argv[1], width=simd.WIDTH, m=metrics.Covariance(X).mahalanobis(X), e=sp.evolve(psi, U))
"""


@pytest.mark.skipif(not {"avx2", "fma"} <= {k for k, v in llvm.get_host_cpu_features().items() if v},
                    reason="needs an x86 core with AVX2 and FMA")
def test_results_do_not_depend_on_the_vector_width(tmp_path):
    """A cluster may mix AVX-512 and AVX2 nodes: distances and the unitary product come out the
    same bits at 4 lanes (a process compiling for an AVX2 core) as at this machine's width."""
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("NUMBA_CPU_FEATURES", None)
    subprocess.run([sys.executable, "-c", _WIDTH_4, str(tmp_path / "w4.npz")], env=env, check=True)
    narrow = np.load(tmp_path / "w4.npz")
    assert narrow["width"] == 4
    here = {}
    exec(_WIDTH_4.replace("np.savez(sys.argv[1], ", "here.update("), {"here": here})
    np.testing.assert_array_equal(here["m"], narrow["m"])
    np.testing.assert_array_equal(here["e"], narrow["e"])


def test_transpose_needs_a_writable_destination():
    read_only = np.zeros(WIDTH * WIDTH)
    read_only.flags.writeable = False
    with pytest.raises(TypingError):
        _transpose(np.ones(WIDTH * WIDTH), 0, WIDTH, read_only, 0, WIDTH)
