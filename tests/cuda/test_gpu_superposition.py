"""Superposition kernels on the CUDA target: the same outcomes as the CPU, entity for entity."""
import numpy as np
import pytest

from anant_fast.kernels import superposition as sp

pytestmark = pytest.mark.cuda

rng = np.random.default_rng(11)
PSI = rng.normal(size=(3, 40, 5)) + 1j * rng.normal(size=(3, 40, 5))
PAIRS = np.array([[0, 1], [7, 3], [12, 30], [39, 38]])


def _device(a):
    from numba import cuda
    return cuda.to_device(a)


@pytest.mark.parametrize("seed, step, offset", [(0, 0, 0), (2 ** 64 - 1, 2 ** 32 - 1, 2 ** 40)])
def test_collapse_outcomes_are_those_of_the_cpu(seed, step, offset):
    cpu = sp.collapse(PSI, seed, step, offset)
    np.testing.assert_array_equal(sp.collapse(PSI, seed, step, offset, target="cuda"), cpu)
    on_gpu = sp.collapse(_device(PSI), seed, step, offset, target="cuda")
    assert hasattr(on_gpu, "copy_to_host")
    np.testing.assert_array_equal(on_gpu.copy_to_host(), cpu)


def test_entangled_collapse_is_that_of_the_cpu():
    cpu = sp.collapse_entangled(PSI, PAIRS, 0.6, seed=9, step=1)
    np.testing.assert_array_equal(sp.collapse_entangled(PSI, PAIRS, 0.6, 9, 1, target="cuda"), cpu)
    out = _device(np.zeros(PSI.shape[:-1], np.int64))
    got = sp.collapse_entangled(_device(PSI), PAIRS, 0.6, 9, 1, out=out, target="cuda")
    assert got is out
    np.testing.assert_array_equal(out.copy_to_host(), cpu)


def test_one_layer_and_chunked_launches(tiny_chunks):
    cpu = sp.collapse(PSI[1], seed=4, offset=3)
    np.testing.assert_array_equal(sp.collapse(PSI[1], seed=4, offset=3, target="cuda"), cpu)
    np.testing.assert_array_equal(sp.collapse_entangled(PSI, PAIRS, 1.0, 4, target="cuda"),
                                  sp.collapse_entangled(PSI, PAIRS, 1.0, 4))


def test_bad_states_are_named_as_on_the_cpu():
    bad = PSI.copy()
    bad[0, 5] = 0.0
    bad[2, 17, 3] = np.inf
    for psi in (bad, _device(bad)):
        with pytest.raises(ValueError, match=r"psi contains NaN or inf at entities \[17\]"):
            sp.collapse(psi, 1, target="cuda")
    bad[2, 17, 3] = 1.0
    with pytest.raises(ValueError, match=r"psi has zero norm at entities \[5\]"):
        sp.collapse(_device(bad), 1, target="cuda")


def test_bad_gpu_arguments_are_refused():
    with pytest.raises(TypeError, match="complex128"):
        sp.collapse(_device(PSI.real.copy()), 1, target="cuda")
    with pytest.raises(TypeError, match="out must be a GPU array"):
        sp.collapse(_device(PSI), 1, out=np.zeros((3, 40), np.int64), target="cuda")
    with pytest.raises(ValueError, match=r"out must be a C-contiguous int64 GPU array of shape \(3, 40\)"):
        sp.collapse(_device(PSI), 1, out=_device(np.zeros((3, 41), np.int64)), target="cuda")
    with pytest.raises(ValueError, match="an entity may be in one pair only|pair"):
        sp.collapse_entangled(_device(PSI), [[0, 1], [1, 2]], 0.5, 1, target="cuda")


U = np.linalg.qr(rng.normal(size=(5, 5)) + 1j * rng.normal(size=(5, 5)))[0]
LIK = rng.random((40, 5))
UPDATES = {
    "normalize": (sp.normalize, ()),
    "probabilities": (sp.probabilities, ()),
    "entropy": (sp.entropy, ()),
    "coherence": (sp.coherence, ()),
    "evolve": (sp.evolve, (U,)),
    "observe": (sp.observe, (LIK,)),
    "observe_every_entity": (sp.observe, (LIK[0],)),
    "superpose": (sp.superpose, (np.array([0.2, 0.0, 1.5]),)),
    "propagate_down": (sp.propagate, (np.array([-1, 0, 1]), 0.3, "down")),
    "propagate_up": (sp.propagate, (np.array([-1, 0, 0]), 0.6, "up")),
}


@pytest.mark.parametrize("name", UPDATES)
def test_updates_match_the_cpu(name):
    fn, args = UPDATES[name]
    cpu = fn(PSI, *args)
    tol = 1e-12 * np.abs(cpu).max()
    np.testing.assert_allclose(fn(PSI, *args, target="cuda"), cpu, rtol=1e-12, atol=tol)
    on_gpu = fn(_device(PSI), *args, target="cuda")
    assert hasattr(on_gpu, "copy_to_host")
    np.testing.assert_allclose(on_gpu.copy_to_host(), cpu, rtol=1e-12, atol=tol)


def test_updates_in_chunks_and_in_place(tiny_chunks):
    np.testing.assert_allclose(sp.observe(PSI, LIK, target="cuda"), sp.observe(PSI, LIK), rtol=1e-12)
    np.testing.assert_allclose(sp.entropy(PSI[0], target="cuda"), sp.entropy(PSI[0]), rtol=1e-12)
    d = _device(PSI)
    assert sp.evolve(d, U, out=d, target="cuda") is d
    np.testing.assert_allclose(d.copy_to_host(), sp.evolve(PSI, U), rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="out overlaps an input"):
        sp.superpose(d, [1.0, 1.0, 1.0], out=d[0], target="cuda")


def test_update_errors_name_the_entities():
    bad = PSI.copy()
    bad[1, 6] = np.nan
    with pytest.raises(ValueError, match=r"psi contains NaN or inf at entities \[6\]"):
        sp.normalize(_device(bad), target="cuda")
    lik = LIK.copy()
    lik[13] = 0.0
    with pytest.raises(ValueError, match=r"observe leaves zero probability .* at entities \[13\]"):
        sp.observe(PSI, lik, target="cuda")
    with pytest.raises(TypeError, match="psi is a GPU array: pass target='cuda'"):
        sp.normalize(_device(PSI))


def _stack():
    from anant_fast import LayerStack
    stack = LayerStack([f"e{i}" for i in range(25)], 4, ["raw", ("logic", "logical", 1, 2.0, "raw"),
                                                         ("meaning", "semantic", 1, 0.5, "raw")])
    same = np.random.default_rng(5)  # the same stack every call
    psi = same.normal(size=stack.shape) + 1j * same.normal(size=stack.shape)
    stack.set_state(stack.entities, psi / np.linalg.norm(psi, axis=-1, keepdims=True))
    stack.add_context("c", "user", same.uniform(0.1, 1.0, (25, 4)), layers=["logic"])
    stack.entangle(["e1", "e4"], ["e2", "e9"], strength=0.8)
    return stack


def test_a_layer_stack_steps_and_collapses_on_the_gpu(tiny_chunks):
    cpu, gpu = _stack(), _stack()
    Us = np.stack([np.linalg.qr(rng.normal(size=(4, 4)) + 1j * rng.normal(size=(4, 4)))[0]
                   for _ in range(3)])
    for got, want in zip(gpu.step(U=Us, observe="c", target="cuda"), cpu.step(U=Us, observe="c")):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gpu.amplitudes(), cpu.amplitudes(), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(gpu.collapse(7, entities=["e2", "e5"], target="cuda"),
                                  cpu.collapse(7, entities=["e2", "e5"]))
    np.testing.assert_array_equal(gpu.collapse(8, step=1, target="cuda"), cpu.collapse(8, step=1))
    np.testing.assert_array_equal(gpu.amplitudes(), cpu.amplitudes())


def test_empty_stacks_on_the_gpu():
    empty = np.zeros((0, 3, 2), np.complex128)
    assert sp.collapse(empty, 1, target="cuda").shape == (0, 3)
    assert sp.normalize(empty, target="cuda").shape == (0, 3, 2)
    assert sp.collapse(_device(empty), 1, target="cuda").shape == (0, 3)
