"""Layer superposition: one fused update step and Born-rule collapse vs NumPy, against memory bandwidth.

* step: ``LayerStack.step`` on L = 4 layers, N = 1,000,000 entities, S = 8 states: evolve every
  layer by its own unitary, observe a per-entity likelihood context in every layer, renormalise,
  superpose the layers by weight, entropy of the superposition; reference: the same in vectorised
  NumPy (einsum, ``naive.sp_*``).
* collapse: ``kernels.superposition.collapse`` of N = 10,000,000 entities, S = 8, into a fresh output
  and into a reused ``out=`` (as the step's bench reuses its outputs); reference: vectorised NumPy
  inverse CDF (cumsum + comparison, NumPy's generator), by chunks of 10^6 rows.
* bandwidth: ``np.copyto`` of 512 MB (bytes read + written per second), measured in the same run;
  each kernel reports ``ratio_over_streaming``: its median over the time to stream the bytes it
  must touch at that bandwidth (goal <= 2), and ``speedup_vs_numpy`` (goal >= 5). Also measured:
  a read of the same 512 MB by every thread (``parallel_read``); ``ratio_over_read`` is the median
  over the time to read that many bytes: the closer yardstick for the read-only collapse (reads
  stream slower than a copy's reads and writes together on this machine).
* Anant's object-per-entity style (``naive.anant_style_step``: a dict per entity and layer,
  observe, weighted mixture, entropy, ``np.random.choice`` collapse) at N = 10,000, timed once.
"""
import functools

import numpy as np

import naive
from _bench import REFERENCE, parallel_read, record, size
from anant_fast import LayerStack
from anant_fast.kernels import superposition as sp

L, S = 4, 8
N_STEP = size(1_000_000, 2_000)
N_COLLAPSE = size(10_000_000, 2_000)
N_ANANT = size(10_000, 200)
COPY_DOUBLES = size(64 * 2 ** 20, 2 ** 16)
WEIGHTS = [1.0, 2.0, 0.5, 1.5]
GOAL_SPEEDUP, GOAL_RATIO = 5.0, 2.0
STEP, COLLAPSE = "superposition-step", "superposition-collapse"


def random_states(rng, shape):
    psi = rng.normal(size=shape) + 1j * rng.normal(size=shape)
    psi /= np.linalg.norm(psi, axis=-1, keepdims=True)
    return psi


@functools.lru_cache(maxsize=None)
def step_data():
    rng = np.random.default_rng(4)
    psi = random_states(rng, (L, N_STEP, S))
    Us = np.stack([np.linalg.qr(rng.normal(size=(S, S)) + 1j * rng.normal(size=(S, S)))[0]
                   for _ in range(L)])
    lik = rng.uniform(0.05, 1.0, (N_STEP, S))
    return psi, Us, lik


def make_stack():
    psi, Us, lik = step_data()
    stack = LayerStack(N_STEP, S, [dict(name=f"layer{l}", weight=w) for l, w in enumerate(WEIGHTS)])
    stack.set_state(stack.entities, psi)
    stack.add_context("evidence", "situational", lik)
    return stack


def numpy_step(psi, Us, lik):
    """The step in vectorised NumPy: new layers, their superposition and its entropy."""
    layers = naive.sp_observe(np.einsum("lab,lnb->lna", Us, psi), lik)
    mixed = naive.sp_superpose(layers, WEIGHTS)
    return layers, mixed, naive.sp_entropy(mixed)


def step_bytes():
    return 2 * L * N_STEP * S * 16 + N_STEP * S * 8 + N_STEP * S * 16 + N_STEP * 8


@functools.lru_cache(maxsize=None)
def collapse_data():
    return random_states(np.random.default_rng(5), (N_COLLAPSE, S))


def numpy_collapse(psi, rng, chunk=1_000_000):
    out = np.empty(psi.shape[0], np.int64)
    for lo in range(0, psi.shape[0], chunk):
        p = np.abs(psi[lo:lo + chunk]) ** 2
        cum = np.cumsum(p, axis=1)
        u = rng.random(cum.shape[0])[:, None] * cum[:, -1:]
        out[lo:lo + chunk] = np.minimum((cum <= u).sum(axis=1), psi.shape[1] - 1)
    return out


def report(benchmark, group, n, bytes_touched, **info):
    rate = record(benchmark, n, unit="entities", bytes=bytes_touched, **info)
    if rate:
        t = benchmark.stats.stats.median
        bandwidth = REFERENCE.get("bandwidth")
        reference = REFERENCE.get(group)
        if bandwidth:
            benchmark.extra_info["streaming_s"] = bytes_touched / bandwidth
            benchmark.extra_info["ratio_over_streaming"] = t / (bytes_touched / bandwidth)
        if REFERENCE.get("read_bandwidth"):
            benchmark.extra_info["ratio_over_read"] = t / (bytes_touched / REFERENCE["read_bandwidth"])
        if reference:
            benchmark.extra_info["speedup_vs_numpy"] = reference / t
    return rate


def test_memory_bandwidth(benchmark):
    src = np.full(COPY_DOUBLES, 1.0)
    dst = np.zeros_like(src)
    benchmark.group = "superposition-bandwidth"
    benchmark(np.copyto, dst, src)
    rate = record(benchmark, 2 * src.nbytes, unit="bytes", impl="np.copyto (read + write)")
    if rate:
        REFERENCE["bandwidth"] = rate


def test_read_bandwidth(benchmark):
    src = np.full(COPY_DOUBLES, 1.0)
    parallel_read(src[:8])  # compiled (or loaded) before timing
    benchmark.group = "superposition-bandwidth"
    assert benchmark(parallel_read, src) == src.size
    rate = record(benchmark, src.nbytes, unit="bytes", impl="parallel_read (every thread)")
    if rate:
        REFERENCE["read_bandwidth"] = rate


def test_step_numpy(benchmark):
    psi, Us, lik = step_data()
    benchmark.group = STEP
    benchmark.pedantic(numpy_step, args=(psi, Us, lik), rounds=3, iterations=1)
    if record(benchmark, N_STEP, unit="entities", impl="numpy", layers=L, states=S):
        REFERENCE[STEP] = benchmark.stats.stats.median


def test_step(benchmark):
    stack = make_stack()
    psi, Us, lik = step_data()
    layers, mixed, H = numpy_step(psi, Us, lik)
    sup, entropy = stack.step(U=Us, observe="evidence")   # checked once, then warm
    np.testing.assert_allclose(stack.amplitudes(), layers, rtol=0, atol=1e-12)
    np.testing.assert_allclose(sup, mixed, rtol=0, atol=1e-12)
    np.testing.assert_allclose(entropy, H, rtol=0, atol=1e-12)
    benchmark.group = STEP
    out = (sp.aligned_empty((N_STEP, S)), np.empty(N_STEP))   # reused, as in a simulation loop
    benchmark(stack.step, U=Us, observe="evidence", out=out)
    report(benchmark, STEP, N_STEP, step_bytes(), impl="LayerStack.step", layers=L, states=S,
           goal_speedup=GOAL_SPEEDUP, goal_ratio=GOAL_RATIO)


def test_collapse_numpy(benchmark):
    psi = collapse_data()
    benchmark.group = COLLAPSE
    rng = np.random.default_rng(0)
    out = benchmark.pedantic(numpy_collapse, args=(psi, rng), rounds=3, iterations=1)
    assert out.min() >= 0 and out.max() < S
    if record(benchmark, N_COLLAPSE, unit="entities", impl="numpy", states=S):
        REFERENCE[COLLAPSE] = benchmark.stats.stats.median


def test_collapse(benchmark):
    psi = collapse_data()
    out = sp.collapse(psi[:1000], seed=1)
    np.testing.assert_array_equal(out, naive.collapse_outcomes(psi[None, :1000], 1)[0])
    benchmark.group = COLLAPSE
    out = benchmark(sp.collapse, psi, 1)
    counts = np.bincount(out, minlength=S)
    expected = (np.abs(psi) ** 2).sum(axis=0)
    assert np.abs(counts - expected).max() < 6 * np.sqrt(expected.max())
    report(benchmark, COLLAPSE, N_COLLAPSE, psi.nbytes + out.nbytes, impl="kernels.collapse",
           states=S, goal_speedup=GOAL_SPEEDUP, goal_ratio=GOAL_RATIO)


def test_collapse_into(benchmark):
    """``collapse`` writing into a reused ``out=``, as a simulation loop would: the same bytes
    streamed, without the page faults of a fresh 80 MB output on every call."""
    psi = collapse_data()
    out = np.empty(len(psi), np.int64)
    benchmark.group = COLLAPSE
    benchmark(sp.collapse, psi, 1, out=out)
    np.testing.assert_array_equal(out[:1000], sp.collapse(psi[:1000], seed=1))
    report(benchmark, COLLAPSE, N_COLLAPSE, psi.nbytes + out.nbytes, impl="kernels.collapse(out=)",
           states=S, goal_speedup=GOAL_SPEEDUP, goal_ratio=GOAL_RATIO)


def test_anant_style(benchmark):
    rng = np.random.default_rng(6)
    names = [f"s{a}" for a in range(S)]
    entities = [[naive.AnantEntity(names) for _ in range(L)] for _ in range(N_ANANT)]
    likelihoods = [dict(zip(names, row)) for row in rng.uniform(0.05, 1.0, (N_ANANT, S))]
    benchmark.group = "superposition-anant-style"
    out = benchmark.pedantic(naive.anant_style_step, args=(entities, WEIGHTS, likelihoods, rng),
                             rounds=1, iterations=1)
    assert len(out) == N_ANANT
    record(benchmark, N_ANANT, unit="entities", impl="object per entity (Anant)", layers=L, states=S)
