"""Layer-superposition kernels: identities, NumPy references (naive.py), the counter-based generator,
Born-rule statistics, batch/thread/order invariance of collapse, and boundary validation."""
import subprocess
import sys
import textwrap

import numba
from numba import njit
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

import naive
from anant_fast.kernels import random as crandom
from anant_fast.kernels import superposition as sp

TOL = 1e-12


def states(seed, shape):
    """Random normalised amplitudes of ``shape (..., S)``."""
    rng = np.random.default_rng(seed)
    psi = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    return psi / np.linalg.norm(psi, axis=-1, keepdims=True)


def unitary(seed, S):
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.normal(size=(S, S)) + 1j * rng.normal(size=(S, S)))
    return q * (np.diagonal(r) / np.abs(np.diagonal(r)))


shapes = st.tuples(st.integers(1, 3), st.integers(1, 40), st.integers(1, 9))
seeds = st.integers(0, 2 ** 32 - 1)


# ----------------------------------------------------------------------------- generator

KAT = [  # Random123 tests/kat_vectors, philox4x32 10: counter, key, result
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, expected", KAT)
def test_philox_known_answers(counter, key, expected):
    words = [np.uint64(w) for w in counter + key]
    assert tuple(int(w) for w in crandom.philox4x32(*words)) == expected
    assert naive.philox4x32(counter, key) == expected


@given(st.integers(0, 2 ** 64 - 1), st.integers(0, 2 ** 64 - 1), st.integers(0, 2 ** 32 - 1),
       st.integers(0, 2 ** 32 - 1))
def test_uniform_pair_is_the_documented_function_of_the_key(seed, index, step, stream):
    got = crandom.uniform_pair(np.uint64(seed), np.uint64(index), np.uint64(step), np.uint64(stream))
    assert got == naive.uniform_pair(seed, index, step, stream)
    assert all(0.0 <= u < 1.0 for u in got)


# ----------------------------------------------------------------------------- state kernels

@given(seeds, shapes)
def test_normalize_gives_unit_norms_and_matches_numpy(seed, shape):
    psi = states(seed, shape) * np.random.default_rng(seed).uniform(0.1, 10, shape[:-1] + (1,))
    out = sp.normalize(psi)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=0, atol=TOL)
    np.testing.assert_allclose(out, naive.sp_normalize(psi), rtol=0, atol=TOL)


@given(seeds, shapes)
def test_statistics_match_numpy(seed, shape):
    psi = states(seed, shape)
    np.testing.assert_allclose(sp.probabilities(psi), naive.sp_probabilities(psi), rtol=0, atol=TOL)
    np.testing.assert_allclose(sp.entropy(psi), naive.sp_entropy(psi), rtol=0, atol=TOL)
    np.testing.assert_allclose(sp.coherence(psi), naive.sp_coherence(psi), rtol=0, atol=1e-11)


@pytest.mark.parametrize("S", [1, 2, 5, 8, 13])
def test_basis_and_uniform_states(S):
    basis = sp.basis(np.arange(S), S)
    np.testing.assert_array_equal(sp.coherence(basis), 0.0)
    np.testing.assert_array_equal(sp.entropy(basis), 0.0)
    np.testing.assert_array_equal(sp.probabilities(basis), np.eye(S))
    uniform = np.full((3, S), 1 / np.sqrt(S), complex) * np.exp(1j * np.arange(S))
    np.testing.assert_allclose(sp.coherence(uniform), S - 1, rtol=0, atol=TOL)
    np.testing.assert_allclose(sp.entropy(uniform), np.log(S), rtol=0, atol=TOL)


@given(seeds, shapes)
def test_evolve_then_adjoint_is_identity(seed, shape):
    psi = states(seed, shape)
    U = unitary(seed + 1, shape[-1])
    forward = sp.evolve(psi, U)
    np.testing.assert_allclose(forward, naive.sp_evolve(psi, U), rtol=0, atol=TOL)
    np.testing.assert_allclose(np.linalg.norm(forward, axis=-1), 1.0, rtol=0, atol=TOL)
    np.testing.assert_allclose(sp.evolve(forward, U.conj().T), psi, rtol=0, atol=TOL)


@given(seeds, shapes, st.booleans())
def test_observe_is_a_bayesian_update(seed, shape, per_entity):
    psi = states(seed, shape)
    rng = np.random.default_rng(seed)
    lik_shape = shape[-2:] if per_entity else shape[-1:]
    lik = rng.uniform(0, 1, lik_shape) * (rng.uniform(size=lik_shape) > 0.3)
    lik[..., 0] += 0.5   # no entity left without probability
    out = sp.observe(psi, lik)
    np.testing.assert_allclose(out, naive.sp_observe(psi, lik), rtol=0, atol=TOL)
    p = naive.sp_probabilities(psi) * lik
    np.testing.assert_allclose(sp.probabilities(out), p / p.sum(-1, keepdims=True), rtol=0, atol=TOL)
    np.testing.assert_allclose(sp.observe(psi, np.full(lik_shape, 0.37)), psi, rtol=0, atol=1e-15)


def test_observe_names_entities_left_without_probability():
    psi = sp.basis(np.array([[0, 1, 2, 1]]), 3)
    lik = np.ones((4, 3))
    lik[1, 1] = lik[3] = 0.0
    with pytest.raises(ValueError, match=r"observe leaves zero probability .*entities \[1, 3\]"):
        sp.observe(psi, lik)


@given(seeds, st.integers(1, 4), st.integers(1, 30), st.integers(1, 7))
def test_superpose_matches_numpy(seed, L, N, S):
    psi = states(seed, (L, N, S))
    w = np.random.default_rng(seed).uniform(0.1, 2, L)
    out = sp.superpose(psi, w)
    np.testing.assert_allclose(out, naive.sp_superpose(psi, w), rtol=0, atol=TOL)
    np.testing.assert_allclose(sp.superpose(psi[:, 0], w), out[0], rtol=0, atol=TOL)


@given(seeds, st.integers(0, 4), st.sampled_from(["up", "down"]), st.floats(0, 1))
def test_propagate_matches_numpy(seed, n_children, direction, alpha):
    parent = np.array([-1] + [0] * n_children + [-1] + [n_children + 1] * 2)
    psi = states(seed, (parent.size, 12, 4))
    out = sp.propagate(psi, parent, alpha, direction)
    np.testing.assert_allclose(out, naive.sp_propagate(psi, parent, alpha, direction), rtol=0, atol=TOL)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, rtol=0, atol=TOL)
    np.testing.assert_allclose(sp.propagate(psi, parent, 0.0, direction), psi, rtol=0, atol=TOL)


def test_kernels_never_modify_their_input_unless_given_as_out():
    psi = states(0, (2, 50, 5))
    psi.setflags(write=False)
    before = psi.copy()
    U = unitary(1, 5)
    for result in (sp.normalize(psi), sp.evolve(psi, U), sp.observe(psi, np.ones(5)),
                   sp.superpose(psi, [1, 1]), sp.propagate(psi, [-1, 0], 0.5, "down"),
                   sp.probabilities(psi), sp.entropy(psi), sp.coherence(psi), sp.collapse(psi, 3)):
        assert result is not psi
    np.testing.assert_array_equal(psi, before)
    work = before.copy()
    assert sp.evolve(work, U, out=work) is work
    np.testing.assert_allclose(work, sp.evolve(before, U), rtol=0, atol=0)
    work = before.copy()
    assert sp.propagate(work, [-1, 0], 0.3, "up", out=work) is work
    np.testing.assert_array_equal(work, sp.propagate(before, [-1, 0], 0.3, "up"))
    probs = np.empty((2, 50, 5))
    assert sp.probabilities(before, out=probs) is probs


def test_real_and_integer_input_convert():
    np.testing.assert_allclose(sp.normalize([[3, 4]]), [[0.6, 0.8]], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(sp.probabilities(np.array([[0.6, 0.8]])), [[0.6 ** 2, 0.8 ** 2]])
    assert sp.collapse([[0, 0, 1]], 0).tolist() == [2]
    assert sp.entropy(np.array([1.0, 0.0])).shape == ()


# ----------------------------------------------------------------------------- collapse

def test_collapse_frequencies_follow_the_born_rule():
    rng = np.random.default_rng(5)
    p = rng.dirichlet(np.ones(6))
    p[2] = 0.0
    p /= p.sum()
    n = 200_000
    psi = np.broadcast_to(np.sqrt(p) * np.exp(1j * rng.uniform(0, 6, 6)), (n, 6)).copy()
    outcomes = sp.collapse(psi, seed=2024)
    counts = np.bincount(outcomes, minlength=6)
    assert counts[2] == 0
    keep = p > 0
    chi2 = ((counts[keep] - n * p[keep]) ** 2 / (n * p[keep])).sum()
    assert chi2 < stats.chi2.ppf(0.999, keep.sum() - 1)


def test_collapse_of_varied_entities_matches_expected_counts():
    psi = states(6, (100_000, 4))
    p = naive.sp_probabilities(psi)
    counts = np.bincount(sp.collapse(psi, seed=9), minlength=4)
    z = (counts - p.sum(0)) / np.sqrt((p * (1 - p)).sum(0))
    assert np.abs(z).max() < 4.5


@given(seeds, st.integers(0, 2 ** 64 - 1), st.integers(0, 2 ** 32 - 1), st.integers(0, 10 ** 12))
def test_collapse_is_the_documented_function_of_the_key(seed, key_seed, step, offset):
    psi = states(seed, (2, 7, 5))
    got = sp.collapse(psi, key_seed, step=step, offset=offset)
    np.testing.assert_array_equal(got, naive.collapse_outcomes(psi, key_seed, step, offset))


@njit(cache=False)
def _transform(Ur, Ui, T, W, X, q, nb, product, observe, dst=0):
    sp.transform(Ur, Ui, T, W, X, q, nb, product, observe, dst)


@pytest.mark.parametrize("product", [True, False])
@pytest.mark.parametrize("observe", [True, False])
def test_transform_rounds_alike_in_vectors_and_one_entity_at_a_time(product, observe):
    """The CPU's vectors of entities and the per-entity form (the GPU's, and the CPU's on scratch
    narrower than a vector) give the same bits; the result is ``w ⊙ U t`` normalised, ``q`` its
    squared norm before; a column of zero or non-finite norm is left as it is."""
    rng = np.random.default_rng(5)
    Ur, Ui = rng.normal(size=(2, 6, 6))
    T = rng.normal(size=(12, 64))
    T[:, 7] = 0.0
    T[3, 9] = np.nan
    W = rng.uniform(0.1, 1.0, (6, 64))
    vectors, q = np.zeros((12, 64)), np.zeros(64)
    _transform(Ur, Ui, T, W, vectors, q, 61, product, observe)
    for e in range(61):
        one, q1 = np.zeros((12, 1)), np.zeros(1)
        _transform(Ur, Ui, T[:, e:e + 1].copy(), W[:, e:e + 1].copy(), one, q1, 1, product, observe)
        np.testing.assert_array_equal(one[:, 0], vectors[:, e])
        np.testing.assert_array_equal(q1, q[e:e + 1])
    t = T[0::2, :61] + 1j * T[1::2, :61]
    x = ((Ur + 1j * Ui) @ t if product else t) * (W[:, :61] if observe else 1.0)
    norm2 = (np.abs(x) ** 2).sum(axis=0)
    got = vectors[0::2, :61] + 1j * vectors[1::2, :61]
    good = np.isfinite(norm2) & (norm2 > 0)
    assert not good[7] and not good[9]
    np.testing.assert_allclose(q[:61][good], norm2[good], rtol=1e-13)
    np.testing.assert_allclose(got[:, good], x[:, good] / np.sqrt(norm2[good]), rtol=1e-13, atol=1e-15)
    np.testing.assert_array_equal(got[:, 7], 0.0)
    assert q[7] == 0.0 and np.isnan(q[9])


@pytest.mark.parametrize("nb", [1, 7, 8, 61, 64])
def test_transform_streams_its_rows_as_it_computes_them(nb):
    """With a destination, ``transform`` also writes each entity's row there (whole vectors by
    non-temporal stores, the rest by ordinary ones): the rows of what it leaves in the scratch, and
    nothing after them."""
    rng = np.random.default_rng(nb)
    Ur, Ui = rng.normal(size=(2, 8, 8))
    T, W = rng.normal(size=(16, 64)), rng.uniform(0.1, 1.0, (8, 64))
    X, q = np.zeros((16, 64)), np.zeros(64)
    _transform(Ur, Ui, T, W, X, q, nb, True, True)
    rows = sp.aligned_empty((nb + 1, 16), np.float64)
    rows[:] = -7.0
    streamed, q2 = np.zeros((16, 64)), np.zeros(64)
    _transform(Ur, Ui, T, W, streamed, q2, nb, True, True, rows.ctypes.data)
    np.testing.assert_array_equal(streamed, X)
    np.testing.assert_array_equal(rows[:nb], X[:, :nb].T)
    np.testing.assert_array_equal(rows[nb], -7.0)


def test_aligned_empty_starts_on_a_vector_boundary():
    for shape, dtype in (((3, 5, 8), np.complex128), ((7,), np.float64), ((1, 1), np.complex128)):
        a = sp.aligned_empty(shape, dtype)
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
        assert a.ctypes.data % 64 == 0
    assert sp.aligned_empty((0, 4)).shape == (0, 4)


def test_state_updates_are_invariant_to_batches():
    """An entity's new state, mixture and entropy never depend on the entities beside it (the base of
    bitwise shard-invariant distributed steps)."""
    psi = states(12, (3, 1000, 6))
    U = unitary(3, 6)
    lik = np.random.default_rng(1).uniform(0.1, 1.0, (1000, 6))

    def update(p, likelihood):
        x = sp.observe(sp.evolve(p, U), likelihood)
        return x, sp.superpose(x, [0.2, 0.3, 0.5]), sp.entropy(x)

    whole = update(psi, lik)
    cuts = [0, 1, 130, 131, 517, 1000]
    parts = [update(psi[:, a:b], lik[a:b]) for a, b in zip(cuts, cuts[1:])]
    for k, axis in enumerate((1, 0, 1)):
        np.testing.assert_array_equal(np.concatenate([p[k] for p in parts], axis=axis), whole[k])


def test_collapse_is_invariant_to_batches_threads_and_order():
    psi = states(11, (3, 1000, 6))
    whole = sp.collapse(psi, 77, step=4)
    cuts = [0, 1, 130, 131, 517, 1000]
    batches = [sp.collapse(psi[:, a:b], 77, step=4, offset=a) for a, b in zip(cuts, cuts[1:])]
    np.testing.assert_array_equal(np.concatenate(batches, axis=1), whole)
    reversed_order = {a: sp.collapse(psi[:, a:b], 77, step=4, offset=a)
                      for a, b in reversed(list(zip(cuts, cuts[1:])))}
    np.testing.assert_array_equal(np.concatenate([reversed_order[a] for a in cuts[:-1]], axis=1),
                                  whole)
    perm = np.random.default_rng(0).permutation(1000)
    index_order = sp.collapse_outcomes(psi[:, perm], np.uint64(77), 4, np.arange(3), index=perm)
    np.testing.assert_array_equal(index_order, whole[:, perm])
    np.testing.assert_array_equal(sp.collapse(psi[0], 77, step=4), whole[0])   # one layer: stream 0
    try:
        numba.set_num_threads(1)
        serial = sp.collapse(psi, 77, step=4)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(serial, whole)
    assert not np.array_equal(sp.collapse(psi, 77, step=5), whole)
    assert not np.array_equal(sp.collapse(psi, 78, step=4), whole)


def test_collapsed_states_are_basis_states():
    psi = states(2, (40, 5))
    outcomes = sp.collapse(psi, 1)
    collapsed = sp.basis(outcomes, 5)
    np.testing.assert_array_equal(sp.collapse(collapsed, 123), outcomes)
    np.testing.assert_array_equal(sp.coherence(collapsed), 0.0)


@pytest.mark.parametrize("strength", [0.0, 0.35, 1.0])
def test_entangled_agreement_rate(strength):
    n_pairs = 40_000
    rng = np.random.default_rng(8)
    p = rng.dirichlet(np.ones(3))
    q = rng.dirichlet(np.ones(3))
    psi = np.empty((2 * n_pairs, 3), complex)
    psi[0::2] = np.sqrt(p)
    psi[1::2] = np.sqrt(q) * 1j
    pairs = np.arange(2 * n_pairs).reshape(-1, 2)
    out = sp.collapse_entangled(psi, pairs, strength, seed=31)
    agree = (out[0::2] == out[1::2]).mean()
    expected = strength + (1 - strength) * (p * q).sum()
    assert abs(agree - expected) <= 4.5 * np.sqrt(expected * (1 - expected) / n_pairs) + 1e-12
    np.testing.assert_array_equal(out[0::2], sp.collapse(psi, 31)[0::2])   # firsts: plain Born


def test_entangled_collapse_is_batch_invariant_and_keeps_unpaired_outcomes():
    psi = states(4, (2, 300, 4))
    pairs = np.array([[5, 200], [17, 3], [250, 40]])
    out = sp.collapse_entangled(psi, pairs, 0.6, seed=5, step=1)
    plain = sp.collapse(psi, 5, step=1)
    unpaired = np.setdiff1d(np.arange(300), pairs[:, 1])
    np.testing.assert_array_equal(out[:, unpaired], plain[:, unpaired])
    np.testing.assert_array_equal(sp.collapse_entangled(psi, pairs, 1.0, seed=5, step=1)[:, pairs[:, 1]],
                                  plain[:, pairs[:, 0]])
    try:
        numba.set_num_threads(1)
        np.testing.assert_array_equal(sp.collapse_entangled(psi, pairs, 0.6, seed=5, step=1), out)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)


# ----------------------------------------------------------------------------- validation

def test_bad_input_raises_clear_errors():
    psi = states(0, (4, 3))
    U = unitary(0, 3)
    cases = [
        (lambda: sp.evolve(psi, U * 1.01), ValueError, "U is not unitary"),
        (lambda: sp.evolve(psi, np.eye(4)), ValueError, r"U must have shape \(3, 3\)"),
        (lambda: sp.evolve(psi, [[np.nan] * 3] * 3), ValueError, "U contains NaN"),
        (lambda: sp.evolve(psi, "x"), TypeError, "U must be a numeric matrix"),
        (lambda: sp.observe(psi, [1, -0.1, 1]), ValueError, "likelihood must be >= 0"),
        (lambda: sp.observe(psi, [1, np.inf, 1]), ValueError, "likelihood contains NaN or inf"),
        (lambda: sp.observe(psi, np.ones((3, 3))), ValueError, r"likelihood must have shape \(4, 3\)"),
        (lambda: sp.normalize(np.array(["a"])), TypeError, "psi must be a numeric array"),
        (lambda: sp.normalize(np.zeros((2, 0))), ValueError, "S >= 1"),
        (lambda: sp.superpose(psi[0], [1, 1, 1]), ValueError, r"psi_layers must have shape \(L, N, S\)"),
        (lambda: sp.superpose(psi[None].repeat(2, 0), [1]), ValueError, r"weights must have shape \(2,\)"),
        (lambda: sp.superpose(psi[None].repeat(2, 0), [0, 0]), ValueError, "not all 0"),
        (lambda: sp.superpose(psi[None].repeat(2, 0), [1, -1]), ValueError, "weights must be >= 0"),
        (lambda: sp.propagate(psi[None].repeat(2, 0), [1, 0], 0.5, "up"), ValueError, "cycle"),
        (lambda: sp.propagate(psi[None].repeat(2, 0), [-1, 2], 0.5, "up"), ValueError, "layer index"),
        (lambda: sp.propagate(psi[None].repeat(2, 0), [-1, 0], 1.5, "up"), ValueError, r"alpha must be in \[0, 1\]"),
        (lambda: sp.propagate(psi[None].repeat(2, 0), [-1, 0], 0.5, "sideways"), ValueError, "direction"),
        (lambda: sp.collapse(psi, -1), ValueError, "seed"),
        (lambda: sp.collapse(psi, 1.5), TypeError, "seed must be an integer"),
        (lambda: sp.collapse(psi, 1, step=2 ** 32), ValueError, "step"),
        (lambda: sp.collapse_entangled(psi, [[0, 1], [1, 2]], 0.5, 1), ValueError, r"entities \[1\]"),
        (lambda: sp.collapse_entangled(psi, [[0, 0]], 0.5, 1), ValueError, "more than one pair"),
        (lambda: sp.collapse_entangled(psi, [[0, 4]], 0.5, 1), ValueError, r"outside \[0, 4\)"),
        (lambda: sp.collapse_entangled(psi, [[0, 1]], 2, 1), ValueError, "strength"),
        (lambda: sp.basis([0, 3], 3), ValueError, r"outcomes must be in \[0, 3\)"),
    ]
    for call, kind, message in cases:
        with pytest.raises(kind, match=message):
            call()


def test_bad_entities_are_named():
    psi = states(0, (2, 6, 3))
    psi[1, 4, 2] = np.nan
    for call in (sp.normalize, sp.probabilities, sp.entropy, lambda a: sp.collapse(a, 0),
                 lambda a: sp.evolve(a, np.eye(3))):
        with pytest.raises(ValueError, match=r"psi contains NaN or inf at entities \[4\]"):
            call(psi)
    psi = states(0, (6, 3))
    psi[[2, 5]] = 0
    with pytest.raises(ValueError, match=r"psi has zero norm at entities \[2, 5\] \(2 in total\)"):
        sp.normalize(psi)
    with pytest.raises(ValueError, match=r"zero norm at entities \[2, 5\]"):
        sp.collapse(psi, 0)
    with pytest.raises(ValueError, match="cancel out"):
        sp.superpose(np.stack([psi[:1], -psi[:1]]), [1, 1])


def test_out_is_validated():
    psi = states(0, (5, 3))
    with pytest.raises(ValueError, match="out must be a complex128 array of shape"):
        sp.normalize(psi, out=np.empty((5, 4), complex))
    with pytest.raises(ValueError, match="out must be a float64 array"):
        sp.probabilities(psi, out=np.empty((5, 3), complex))
    with pytest.raises(ValueError, match="C-contiguous"):
        sp.normalize(psi, out=np.empty((3, 5), complex).T)
    base = np.concatenate([psi, psi[:1]])
    with pytest.raises(ValueError, match="overlaps an input"):
        sp.normalize(base[:5], out=base[1:])
    with pytest.raises(TypeError, match="out must be a numpy array"):
        sp.entropy(psi, out=[0.0] * 5)
    with pytest.raises(ValueError, match="int64"):
        sp.collapse(psi, 0, out=np.empty(5, np.int32))


CACHE_PROBE = textwrap.dedent("""
    import numpy as np
    from anant_fast import LayerStack
    from anant_fast.kernels import superposition as sp
    psi = np.full((2, 5, 3), 3 ** -0.5, complex)
    psi.setflags(write=False)
    sp.normalize(psi); sp.probabilities(psi); sp.entropy(psi); sp.coherence(psi)
    sp.evolve(psi, np.eye(3)); sp.observe(psi, np.ones(3)); sp.superpose(psi, [1, 1])
    sp.propagate(psi, [-1, 0], 0.5, "up"); sp.collapse_entangled(psi, [[0, 1]], 0.5, 1)
    stack = LayerStack(["a", "b", "c"], 3, ["x", {"name": "y", "parent": "x"}])
    stack.add_context("c", "user", np.ones((3, 3)), layers=["y"])
    stack.entangle(["a"], ["b"])
    stack.step(U=np.eye(3), observe="c"); stack.observe("c", entities=["b"]); stack.propagate_down(0.3)
    stack.collapse(1, entities=["b"]); stack.collapse(2); stack.summary()
    stats = [k.stats for k in (sp.fused_kernel, sp.collapse_kernel, sp.correlate_kernel)]
    print(sum(len(s.cache_misses) for s in stats), sum(len(s.cache_hits) for s in stats))
""")


def test_second_process_loads_the_kernels_from_the_cache_with_one_signature_each():
    """Every caller (read-only inputs, stack selections) reuses one compiled kernel each."""
    for _ in range(2):
        run = subprocess.run([sys.executable, "-c", CACHE_PROBE], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
    misses, hits = map(int, run.stdout.split())
    assert misses == 0 and hits == 3, run.stdout


@njit(cache=False)
def _rows_both_ways(src, j0, nb, X, dst, B, streaming):
    sp.read_rows(src, j0, nb, X)
    sp.write_rows(X, j0, nb, dst, B, streaming)


@pytest.mark.parametrize("S2, nb", [(2, 1), (6, 13), (16, 64), (16, 61), (10, 40)])
def test_row_transposes_match_the_per_entity_forms(S2, nb):
    """The CPU's register-block transposes between entity rows and ``(component, entity)`` scratch
    write what the GPU's one-entity loops write, with and without streaming stores."""
    rng = np.random.default_rng(S2 + nb)
    src = rng.normal(size=(nb + 9, S2))
    j0 = 7
    for streaming in (False, True):
        X, dst = np.zeros((S2, 64)), np.zeros_like(src)
        _rows_both_ways(src, j0, nb, X, dst, np.empty(64 * S2), streaming)
        one_X, one_dst = np.zeros_like(X), np.zeros_like(src)
        sp.read_rows(src, j0, nb, one_X)        # the per-entity forms, as plain Python
        sp.write_rows(one_X, j0, nb, one_dst, None, False)
        np.testing.assert_array_equal(X, one_X)
        np.testing.assert_array_equal(dst, one_dst)
        np.testing.assert_array_equal(X[:, :nb], src[j0:j0 + nb].T)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("u_of, lik_of", [([0, 0, 0], [0, 0, 0]), ([0, -1, -1], [-1, -1, 0])])
def test_streaming_stores_change_no_result(monkeypatch, u_of, lik_of, aligned):
    """Large outputs are written by non-temporal stores, with layers updated or copied as they are:
    the same bits as ordinary stores. Into outputs aligned to 64 bytes (``aligned_empty``), the
    updated rows are streamed as they are computed (``direct_address``)."""
    psi = states(21, (3, 777, 8))
    U, lik = unitary(4, 8), np.random.default_rng(2).uniform(0.1, 1.0, (777, 8))
    empty = sp.aligned_empty if aligned else np.empty

    def run():
        states_out, mixed = empty(psi.shape, np.complex128), empty((1, 777, 8), np.complex128)
        probs, H = np.empty((1, 777, 8)), np.empty((1, 777))
        sp.fused_update(psi, U=U[None], u_of=np.array(u_of), lik=lik[None],
                        lik_of=np.array(lik_of), mix=np.array([[0.2, 0.3, 0.5]]),
                        states=states_out, mixed=mixed, probs=probs, entropy=H)
        return states_out, mixed, probs, H

    ordinary, evolved = run(), sp.evolve(psi, U)
    monkeypatch.setattr(sp, "STREAM_BYTES", 0)
    for a, b in zip(run(), ordinary):
        np.testing.assert_array_equal(a, b)
    in_place = empty(psi.shape, np.complex128)
    in_place[...] = psi
    sp.evolve(in_place, U, out=in_place)   # streamed over the rows it has just read
    np.testing.assert_array_equal(in_place, evolved)
    if aligned:
        assert sp.direct_address(in_place.view(np.float64), True) == in_place.ctypes.data
