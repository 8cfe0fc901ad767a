"""LayerStack: the API over the superposition kernels — updates keep norms, agree with the kernels
and NumPy, collapse is split-invariant, errors leave the stack unchanged, save/load is exact."""
import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import naive
from anant_fast import ContextType, LayerStack, LayerType
from anant_fast.kernels import superposition as sp
from anant_fast.layers import Layer

S = 4
STATES = ["calm", "busy", "alert", "down"]
LAYERS = [
    Layer("raw", LayerType.PHYSICAL, 0, 1.0),
    Layer("logic", LayerType.LOGICAL, 1, 2.0, parent="raw"),
    Layer("meaning", "semantic", 1, 0.5, parent="raw"),
    ("concept", "CONCEPTUAL", 2, 1.0, "logic"),
]
TOL = 1e-12


def unitary(seed, n=S):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n)))
    return q


def make(n=30, seed=0, ids=None):
    stack = LayerStack(ids if ids is not None else [f"e{i}" for i in range(n)], STATES, LAYERS)
    rng = np.random.default_rng(seed)
    psi = rng.normal(size=stack.shape) + 1j * rng.normal(size=stack.shape)
    stack.set_state(stack.entities, psi / np.linalg.norm(psi, axis=-1, keepdims=True))
    return stack


def snapshot(stack):
    ids, strengths = stack.pairs
    return (stack.amplitudes(), {k: (c.type, c.likelihood.copy(), c.layers)
                                 for k, c in stack.contexts.items()}, ids, strengths)


def assert_same(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1].keys() == b[1].keys()
    for k in a[1]:
        assert a[1][k][0] == b[1][k][0] and a[1][k][2] == b[1][k][2]
        np.testing.assert_array_equal(a[1][k][1], b[1][k][1])
    np.testing.assert_array_equal(a[2], b[2])
    np.testing.assert_array_equal(a[3], b[3])


def test_construction_and_metadata():
    stack = LayerStack(5, 3, ["a", {"name": "b", "parent": "a", "level": 1}])
    assert stack.shape == (2, 5, 3)
    np.testing.assert_array_equal(stack.entities, np.arange(5))
    np.testing.assert_array_equal(stack.states, np.arange(3))
    assert stack.layers[1] == Layer("b", LayerType.PHYSICAL, 1, 1.0, "a")
    np.testing.assert_allclose(stack.probabilities(), 1 / 3, rtol=0, atol=TOL)
    np.testing.assert_allclose(stack.entropy(), np.log(3), rtol=0, atol=TOL)
    np.testing.assert_allclose(stack.coherence(), 2, rtol=0, atol=TOL)
    assert [t.value for t in LayerType] == ["physical", "logical", "conceptual", "temporal",
                                           "spatial", "semantic", "context", "quantum"]
    assert [t.value for t in ContextType] == ["temporal", "spatial", "social", "domain", "user",
                                             "environmental", "situational"]
    assert "LayerStack(5 entities" in repr(stack)


@pytest.mark.parametrize("args, kind, message", [
    ((["a", "a"], 2, ["x"]), ValueError, r"entities must be unique; repeated: \[a\]"),
    ((["a", 1], 2, ["x"]), TypeError, "all integers or all strings"),
    ((3, 0, ["x"]), ValueError, "at least one state"),
    ((3, 2, []), ValueError, "at least one layer"),
    ((3, 2, ["x", "x"]), ValueError, "layer names must be unique"),
    ((3, 2, [Layer("x", parent="y")]), ValueError, "unknown parent 'y'"),
    ((3, 2, [Layer("x", parent="y"), Layer("y", parent="x")]), ValueError, "cycle"),
    ((3, 2, [("x", "weird")]), ValueError, "LayerType"),
    ((3, 2, [{"name": "x", "weight": -1}]), ValueError, "weight"),
    ((3, 2, [{"name": "x", "weight": 0}]), ValueError, "not all 0"),
    ((3, 2, [{"name": "x", "level": 1.5}]), TypeError, "level must be an integer"),
    ((3, 2, [3]), TypeError, "a layer is a Layer"),
])
def test_bad_construction(args, kind, message):
    with pytest.raises(kind, match=message):
        LayerStack(*args)


def test_set_state_and_read_back():
    stack = make()
    stack.set_state(["e3", "e1"], probabilities={"busy": 1.0, "down": 3.0}, layers="logic")
    p = stack.probabilities(["e1", "e3"], layers=["logic"])
    np.testing.assert_allclose(p, [[[0, 0.25, 0, 0.75]] * 2], rtol=0, atol=TOL)
    amps = np.arange(1, 9).reshape(2, S) * 1j
    stack.set_state(["e7", "e8"], amps, layers=["raw"])
    np.testing.assert_allclose(stack.amplitudes(["e7", "e8"], "raw")[0], naive.sp_normalize(amps),
                               rtol=0, atol=TOL)
    names, prob = stack.dominant_state(["e3"], ["logic"])
    assert names.tolist() == [["down"]] and prob[0, 0] == pytest.approx(0.75)


@given(st.lists(st.sampled_from(["evolve", "observe", "up", "down", "collapse", "step", "set"]),
                min_size=1, max_size=8), st.integers(0, 10 ** 6))
def test_norms_stay_one_under_every_update(ops, seed):
    stack = make(n=25, seed=seed % 7)
    stack.add_context("ctx", "situational", np.random.default_rng(seed).uniform(0.05, 1, (25, S)),
                      layers=["raw", "concept"])
    rng = np.random.default_rng(seed)
    for i, op in enumerate(ops):
        some = list(rng.choice(stack.entities, size=5, replace=False))
        if op == "evolve":
            stack.evolve(unitary(seed + i), layers=["logic", "raw"], entities=some)
        elif op == "observe":
            stack.observe("ctx")
        elif op == "up":
            stack.propagate_up(rng.uniform())
        elif op == "down":
            stack.propagate_down(rng.uniform(), entities=some)
        elif op == "collapse":
            stack.collapse(seed, entities=some, step=i)
        elif op == "step":
            stack.step(U={"meaning": unitary(i)}, observe="ctx")
        else:
            stack.set_state(some, np.ones(S))
        np.testing.assert_allclose(np.linalg.norm(stack.amplitudes(), axis=-1), 1.0,
                                   rtol=0, atol=TOL)


def test_evolve_and_adjoint_restore_the_stack():
    stack = make()
    before = stack.amplitudes()
    U = unitary(3)
    stack.evolve(U, layers=["logic"], entities=["e2", "e5"])
    after = stack.amplitudes()
    np.testing.assert_allclose(after[1, [2, 5]], naive.sp_evolve(before[1, [2, 5]], U), rtol=0, atol=TOL)
    mask = np.ones(after.shape[:2], bool)
    mask[1, [2, 5]] = False
    np.testing.assert_array_equal(after[mask], before[mask])   # untouched: bit for bit
    stack.evolve(U.conj().T, layers=["logic"], entities=["e2", "e5"])
    np.testing.assert_allclose(stack.amplitudes(), before, rtol=0, atol=TOL)
    per_layer = np.stack([unitary(i) for i in range(4)])
    stack.evolve(per_layer)
    np.testing.assert_allclose(stack.amplitudes(), np.stack(
        [naive.sp_evolve(before[l], per_layer[l]) for l in range(4)]), rtol=0, atol=TOL)


def test_observe_contexts_apply_to_their_layers():
    stack = make()
    before = stack.amplitudes()
    lik = np.random.default_rng(1).uniform(0.1, 1, (30, S))
    stack.add_context("weather", ContextType.ENVIRONMENTAL, lik, layers=["meaning"])
    stack.observe("weather")
    after = stack.amplitudes()
    np.testing.assert_allclose(after[2], naive.sp_observe(before[2], lik), rtol=0, atol=TOL)
    np.testing.assert_array_equal(np.delete(after, 2, axis=0), np.delete(before, 2, axis=0))
    stack.observe("weather", entities=["e4"], layers=["raw"])
    np.testing.assert_allclose(stack.amplitudes("e4", "raw")[0, 0],
                               naive.sp_observe(before[0, 4], lik[4]), rtol=0, atol=TOL)
    uniform = stack.amplitudes()
    stack.observe(np.full(S, 0.2))
    np.testing.assert_allclose(stack.amplitudes(), uniform, rtol=0, atol=1e-15)
    stack.observe({"calm": 1.0, "busy": 0.5, "alert": 0.5, "down": 0.5}, entities=["e0", "e1"],
                  layers="logic")
    assert stack.contexts["weather"].layers == ("meaning",)
    assert not stack.contexts["weather"].likelihood.flags.writeable


def test_superpose_query_and_propagate_agree_with_the_kernels():
    stack = make()
    psi = stack.amplitudes()
    w = [layer.weight for layer in stack.layers]
    np.testing.assert_allclose(stack.superpose(), sp.superpose(psi, w), rtol=0, atol=TOL)
    q = stack.query_across_layers(["e9", "e1"], layers=["raw", "concept"], weights=[1, 3])
    assert q["layers"] == ["raw", "concept"]
    np.testing.assert_allclose(q["probabilities"], naive.sp_probabilities(psi[[0, 3]][:, [9, 1]]),
                               rtol=0, atol=TOL)
    np.testing.assert_allclose(q["superposition"], naive.sp_probabilities(
        naive.sp_superpose(psi[[0, 3]][:, [9, 1]], [1, 3])), rtol=0, atol=TOL)
    parent = np.array([-1, 0, 0, 1])
    stack.propagate_up(0.4)
    np.testing.assert_allclose(stack.amplitudes(), naive.sp_propagate(psi, parent, 0.4, "up"),
                               rtol=0, atol=TOL)
    up = stack.amplitudes()
    stack.propagate_down(0.7, entities=["e3"])
    np.testing.assert_allclose(stack.amplitudes("e3")[:, 0],
                               naive.sp_propagate(up[:, 3], parent, 0.7, "down"), rtol=0, atol=TOL)


def test_step_is_the_fused_composition():
    stack = make()
    psi = stack.amplitudes()
    lik = np.random.default_rng(2).uniform(0.1, 1, (30, S))
    stack.add_context("c", "user", lik, layers=["logic", "concept"])
    Us = np.stack([unitary(10 + l) for l in range(4)])
    sup, H = stack.step(U=Us, observe="c")
    expected = np.stack([naive.sp_evolve(psi[l], Us[l]) for l in range(4)])
    expected[[1, 3]] = naive.sp_observe(expected[[1, 3]], lik)
    np.testing.assert_allclose(stack.amplitudes(), expected, rtol=0, atol=TOL)
    mix = naive.sp_superpose(expected, [layer.weight for layer in stack.layers])
    np.testing.assert_allclose(sup, mix, rtol=0, atol=TOL)
    np.testing.assert_allclose(H, naive.sp_entropy(mix), rtol=0, atol=TOL)
    buffers = (np.empty((30, S), complex), np.empty(30))
    again = stack.step(U=Us, observe="c", out=buffers)
    assert again[0] is buffers[0] and again[1] is buffers[1]
    with pytest.raises(ValueError, match=r"out\[1\] must be a float64 array of shape \(30,\)"):
        stack.step(out=(buffers[0], np.empty(29)))


def test_collapse_is_invariant_to_how_the_stack_is_split():
    stack = make(n=200)
    whole = stack.amplitudes()
    out_all = stack.collapse(42, step=3)
    collapsed = stack.amplitudes()
    np.testing.assert_array_equal(collapsed, sp.basis(out_all, S))
    for parts in ([slice(0, 50), slice(50, 200)], [slice(150, 200), slice(0, 7), slice(7, 150)]):
        other = make(n=200)
        assert np.array_equal(other.amplitudes(), whole)
        for part in parts:
            got = other.collapse(42, entities=other.entities[part], step=3)
            np.testing.assert_array_equal(got, out_all[:, part])
        np.testing.assert_array_equal(other.amplitudes(), collapsed)
    other = make(n=200)
    got = other.collapse(42, entities=other.entities[::-1][:60], layers=["concept", "raw"], step=3)
    np.testing.assert_array_equal(got, out_all[[3, 0]][:, ::-1][:, :60])
    try:
        numba.set_num_threads(1)
        serial = make(n=200).collapse(42, step=3)
    finally:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
    np.testing.assert_array_equal(serial, out_all)


def test_entangled_pairs_collapse_together():
    stack = make(n=40)
    stack.entangle(["e0", "e5", "e7"], ["e1", "e30", "e2"], strength=[1.0, 1.0, 0.0])
    ids, strengths = stack.pairs
    assert ids.tolist() == [["e0", "e1"], ["e5", "e30"], ["e7", "e2"]]
    reference = make(n=40)
    reference.entangle(["e0", "e5", "e7"], ["e1", "e30", "e2"], strength=[1.0, 1.0, 0.0])
    out = reference.collapse(9)
    np.testing.assert_array_equal(out[:, 1], out[:, 0])
    np.testing.assert_array_equal(out[:, 30], out[:, 5])
    plain = make(n=40).collapse(9)
    np.testing.assert_array_equal(out[:, 2], plain[:, 2])   # strength 0: its own outcome
    only_second = stack.collapse(9, entities=["e30", "e1"])   # firsts are drawn, not collapsed
    np.testing.assert_array_equal(only_second, out[:, [30, 1]])
    np.testing.assert_array_equal(stack.amplitudes(["e0", "e5"]), make(n=40).amplitudes(["e0", "e5"]))


def test_errors_leave_the_stack_unchanged():
    stack = make()
    stack.add_context("c", "domain", np.ones(S), layers=["raw"])
    stack.entangle(["e0"], ["e1"], 0.5)
    bad_lik = np.ones((30, S))
    bad_lik[[4, 17]] = 0.0
    stack.set_state(["e5"], np.array([1, 0, 0, 0]), layers=["meaning"])
    basis_lik = np.ones(S)
    basis_lik[0] = 0.0
    cases = [
        (lambda: stack.evolve(np.ones((S, S))), ValueError, "not unitary"),
        (lambda: stack.evolve(unitary(0), layers=["nope"]), ValueError, r"unknown layers: \[nope\]"),
        (lambda: stack.evolve(unitary(0), entities=["e1", "zz"]), ValueError, r"unknown entities: \[zz\]"),
        (lambda: stack.evolve(unitary(0), entities=["e1", "e1"]), ValueError, "must not repeat"),
        (lambda: stack.evolve(np.stack([unitary(0)] * 3)), ValueError, "one per layer"),
        (lambda: stack.evolve({"raw": unitary(0), "logic": np.eye(S) * 2}), ValueError,
         r"U\['logic'\] is not unitary"),
        (lambda: stack.observe([1, -1, 1, 1]), ValueError, "likelihood must be >= 0"),
        (lambda: stack.observe(np.ones((3, S))), ValueError, r"likelihood must have shape \(30, 4\)"),
        (lambda: stack.observe(bad_lik), ValueError, r"observe leaves zero probability .*\[e4, e17\]"),
        (lambda: stack.observe(basis_lik, entities=["e6", "e5"]), ValueError,
         r"zero probability .*\[e5\] \(1 in total\)"),
        (lambda: stack.observe("unknown"), ValueError, "unknown context"),
        (lambda: stack.observe({"sunny": 1.0}), ValueError, r"unknown states: \[sunny\]"),
        (lambda: stack.add_context("c", "user", np.ones(S)), ValueError, "exists already"),
        (lambda: stack.add_context("d", "weird", np.ones(S)), ValueError, "ContextType"),
        (lambda: stack.add_context("d", "user", np.ones(S), layers=["x"]), ValueError, "unknown layers"),
        (lambda: stack.entangle(["e2"], ["e1"]), ValueError, r"entities \[e1\] \(1 in total\) would be in more than one pair"),
        (lambda: stack.entangle(["e2", "e3"], ["e4"]), ValueError, "same length"),
        (lambda: stack.entangle(["e2"], ["e4"], 1.5), ValueError, r"strength must be in \[0, 1\]"),
        (lambda: stack.collapse(-1), ValueError, "seed"),
        (lambda: stack.set_state(["e1"], np.zeros(S)), ValueError, r"amplitudes have zero norm at entities \[e1\]"),
        (lambda: stack.set_state(["e1"], np.ones(S + 1)), ValueError, "must broadcast"),
        (lambda: stack.set_state(["e1"], probabilities=[-1, 1, 1, 1]), ValueError, ">= 0"),
        (lambda: stack.set_state(["e1"]), ValueError, "exactly one"),
        (lambda: stack.propagate_up(2.0), ValueError, "alpha"),
        (lambda: stack.superpose(weights=[1, 1]), ValueError, r"weights must have shape \(4,\)"),
        (lambda: stack.step(U=np.eye(S) * 1j * 1.1), ValueError, "not unitary"),
        (lambda: stack.step(U=unitary(1), observe=bad_lik), ValueError, "zero probability"),
        (lambda: stack.remove_context("zzz"), ValueError, "unknown context"),
    ]
    for call, kind, message in cases:
        before = snapshot(stack)
        with pytest.raises(kind, match=message):
            call()
        assert_same(snapshot(stack), before)


def test_save_and_load_round_trip_exactly(tmp_path):
    stack = make(n=12)
    stack.add_context("w", "temporal", np.random.default_rng(0).uniform(0, 1, (12, S)) + 0.1,
                      layers=["logic", "raw"])
    stack.add_context("u", "user", {"calm": 0.3, "down": 1.0})
    stack.entangle(["e3", "e9"], ["e4", "e0"], [0.25, 1.0])
    stack.step(U=unitary(5), observe="w")
    stack.save(tmp_path / "stack.npz")
    back = LayerStack.load(tmp_path / "stack.npz")
    assert_same(snapshot(back), snapshot(stack))
    assert back.layers == stack.layers
    np.testing.assert_array_equal(back.entities, stack.entities)
    np.testing.assert_array_equal(back.states, stack.states)
    assert back.summary() == stack.summary()
    np.testing.assert_array_equal(back.collapse(3), stack.collapse(3))
    numeric = LayerStack(4, 2, ["only"])
    numeric.save(tmp_path / "numeric.npz")
    again = LayerStack.load(tmp_path / "numeric.npz")
    np.testing.assert_array_equal(again.entities, np.arange(4))
    assert again.layers == numeric.layers
    np.savez(tmp_path / "other.npz", x=np.ones(3))
    with pytest.raises(ValueError, match="not a saved LayerStack"):
        LayerStack.load(tmp_path / "other.npz")


def test_summary_counts_and_means():
    stack = LayerStack(["a", "b"], 3, LAYERS)
    stack.add_context("c", "social", np.ones(3))
    s = stack.summary()
    assert (s["entities"], s["states"], s["layers"], s["contexts"]) == (2, 3, 4, 1)
    assert s["layers_by_level"] == {0: ["raw"], 1: ["logic", "meaning"], 2: ["concept"]}
    assert s["layer_types"]["semantic"] == 1 and s["context_types"]["social"] == 1
    assert s["mean_entropy"]["raw"] == pytest.approx(np.log(3))
    assert s["mean_coherence"]["concept"] == pytest.approx(2.0)


def test_integer_ids_and_empty_selections():
    stack = LayerStack(np.array([10, 3, 7]), 2, ["x"])
    stack.set_state([7], [0, 1])
    assert stack.dominant_state([7, 10])[0].tolist() == [[1, 0]]
    assert stack.probabilities([]).shape == (1, 0, 2)
    stack.evolve(unitary(0, 2), entities=[])
    with pytest.raises(ValueError, match=r"unknown entities: \[4\]"):
        stack.probabilities([4])
    with pytest.raises(ValueError, match="unknown entities"):
        stack.probabilities(["10"])
