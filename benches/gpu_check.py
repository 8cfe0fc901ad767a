"""The CUDA kernels on a real GPU: correctness against the CPU kernels at full size, and speed beside them.

    python benches/gpu_check.py [--scale 1.0] [--json results.json]

Needs ``anant-fast[cuda]`` and an NVIDIA GPU; at full size it takes a few minutes (most of it the
CPU references). For each workload it checks the GPU result against the CPU kernels (the whole
result where a closed form exists, else a sample of points: curvature to 1e-9 relative, collapse
outcomes exactly) and prints a table: GPU points/s with the data already on the device, the ratio to
the CPU kernel on two threads (the development machine's two cores, measured here on a sample), and
for the memory-bound kernels the fraction of the device-to-device copy bandwidth, measured in the
same run. ``--scale`` shrinks every size (``--scale 1e-4`` under ``NUMBA_ENABLE_CUDASIM=1`` runs the
script's own logic without a GPU).
"""
import argparse
import json
import statistics
import sys
import time

import numba
import numpy as np
from numba import cuda  # numba-cuda's when installed (main() checks); kernels need it as a global

from scipy.spatial import cKDTree

from anant_fast import metrics
from anant_fast.kernels import superposition as sp
from anant_fast.kernels.random import uniform_pair
from anant_fast.kernels.target import cuda_unavailable

CPU_THREADS = 2
CPU_SAMPLE = 200_000
"""Most points of a CPU reference run (rates extrapolate: every kernel is linear in the points)."""
CPU_SECONDS = 1.0
"""Fewer points for slow CPU kernels: a sample that takes about this long."""


def timed(fn, repeat=3, gpu=True):
    """Median seconds of ``fn()`` over ``repeat`` runs after a warm-up run (compilation), the GPU
    synchronised after each when ``gpu``; and the last result."""
    sync = cuda.synchronize if gpu else (lambda: None)
    result = fn()
    sync()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def cpu_seconds(fn):
    """Median seconds of the CPU call ``fn()`` (see ``timed``)."""
    return timed(fn, gpu=False)[0]


def cpu_sample_size(fn, limit):
    """Points for a CPU reference of ``fn(k)`` (k points) taking about ``CPU_SECONDS``."""
    k = min(limit, 1000)
    fn(k)  # compile
    while k < min(limit, CPU_SAMPLE):
        start = time.perf_counter()
        fn(k)
        if time.perf_counter() - start > CPU_SECONDS / 4:
            break
        k = min(limit, CPU_SAMPLE, 4 * k)
    return k


def copy_bandwidth(nbytes):
    """Bytes/s of a device-to-device copy (read + write) of ``nbytes``."""
    a = cuda.device_array(nbytes // 8)
    b = cuda.device_array_like(a)
    seconds, _ = timed(lambda: b.copy_to_device(a))
    return 2 * a.nbytes / seconds


def random_device(shape, seed, complex_=False):
    """Uniform(−0.5, 0.5) data made on the device (host generation of 10 GB would dominate)."""
    n = int(np.prod(shape)) * (2 if complex_ else 1)
    flat = cuda.device_array(n)
    cuda.jit(_fill)[(n + 255) // 256, 256](flat, seed)
    out = flat.view(np.complex128) if complex_ else flat
    return out.reshape(shape)


def _fill(flat, seed):
    i = cuda.grid(1)
    if i < flat.shape[0]:
        u, _ = uniform_pair(seed, i, 0, 0)
        flat[i] = u - 0.5


def check(ok, what):
    if not ok:
        raise AssertionError(f"GPU result differs from the CPU: {what}")


def curvature_rows(scale, rng, _bandwidth, dims=(2, 3, 4)):
    M = max(1000, int(10_000_000 * scale))
    for dim in dims:
        X = rng.normal(size=(20_000, dim))
        spacing = np.median(cKDTree(X).query(X, k=2)[0][:, 1])  # a few dozen neighbours per point
        for model in (metrics.Sphere(dim), metrics.LocalCovariance(X, sigma=0.5 * spacing)):
            Q = rng.normal(size=(M, dim)) * (0.5 if isinstance(model, metrics.Sphere) else 1.0)
            Qd = cuda.to_device(Q)
            seconds, out = timed(lambda: model.scalar_curvature(Qd, target="cuda"))
            out = out.copy_to_host()
            k = cpu_sample_size(lambda k: model.scalar_curvature(Q[:k]), M)
            sample = rng.choice(M, size=k, replace=False)
            ref = model.scalar_curvature(Q[sample])
            if isinstance(model, metrics.Sphere):
                check(np.allclose(out, dim * (dim - 1), rtol=1e-9), f"{model!r} closed form")
            check(np.allclose(out[sample], ref, rtol=1e-9, atol=1e-9 * np.abs(ref).max()), repr(model))
            cpu = cpu_seconds(lambda: model.scalar_curvature(Q[sample]))
            yield dict(workload=f"scalar curvature {model!r}", n=M, gpu_points_per_s=M / seconds,
                       vs_cpu=(M / seconds) / (len(sample) / cpu))


def mahalanobis_rows(scale, rng, bandwidth):
    N, d = max(1000, int(10_000_000 * scale)), 16
    Yd = random_device((N, d), seed=7)
    Y = Yd.copy_to_host()
    model = metrics.Covariance(Y[:1_000_000])
    seconds, dist = timed(lambda: model.mahalanobis(Yd, target="cuda"))
    sample = rng.choice(N, size=min(N, CPU_SAMPLE), replace=False)
    check(np.allclose(dist.copy_to_host()[sample], model.mahalanobis(Y[sample]), rtol=1e-12), "mahalanobis")
    outliers_s, found = timed(lambda: model.outliers(Yd, z=3.0, target="cuda"), repeat=1)
    check(np.array_equal(found, model.outliers(Y, z=3.0)), "outlier indices")
    cpu = cpu_seconds(lambda: model.mahalanobis(Y[sample]))
    nbytes = 2 * Y.nbytes + 8 * N  # the validation pass on the device reads Y too
    yield dict(workload=f"Mahalanobis distances d={d}", n=N, gpu_points_per_s=N / seconds,
               vs_cpu=(N / seconds) / (len(sample) / cpu), bandwidth=nbytes / seconds / bandwidth)
    yield dict(workload=f"Mahalanobis outliers d={d} (z-scores on the host)", n=N,
               gpu_points_per_s=N / outliers_s, vs_cpu=None)


def superposition_rows(scale, rng, bandwidth):
    N, S, L = max(1000, int(10_000_000 * scale)), 8, 4
    psi = random_device((L, N, S), seed=11, complex_=True)
    U = np.stack([np.linalg.qr(rng.normal(size=(S, S)) + 1j * rng.normal(size=(S, S)))[0]
                  for _ in range(L)])
    lik = rng.random((1, N, S)) + 0.1
    lik_d = cuda.to_device(lik)  # on the device once, like the amplitudes
    w = np.array([[0.4, 0.3, 0.2, 0.1]])
    states = cuda.device_array((L, N, S), np.complex128)
    mixed = cuda.device_array((1, N, S), np.complex128)
    entropy = cuda.device_array((1, N))
    u_of, lik_of = np.arange(L), np.zeros(L, np.int64)

    def step():
        sp.fused_update(psi, U=U, u_of=u_of, lik=lik_d, lik_of=lik_of, mix=w, states=states,
                        mixed=mixed, entropy=entropy, target="cuda")
    seconds, _ = timed(step)
    k = min(N, CPU_SAMPLE)
    host = np.ascontiguousarray(psi.copy_to_host()[:, :k])
    ref_states, ref_mixed, ref_entropy = (np.empty((L, k, S), np.complex128),
                                          np.empty((1, k, S), np.complex128), np.empty((1, k)))

    def cpu_step():
        sp.fused_update(host, U=U, u_of=u_of, lik=lik[:, :k], lik_of=lik_of, mix=w, states=ref_states,
                        mixed=ref_mixed, entropy=ref_entropy)
    cpu = cpu_seconds(cpu_step)
    check(np.allclose(states.copy_to_host()[:, :k], ref_states, rtol=1e-12, atol=1e-13), "step states")
    check(np.allclose(entropy.copy_to_host()[:, :k], ref_entropy, rtol=1e-12, atol=1e-13), "step entropy")
    nbytes = 16 * S * N * (2 * L + 1) + 8 * S * N + 8 * N
    yield dict(workload=f"superposition step L={L} S={S}", n=N, gpu_points_per_s=N / seconds,
               vs_cpu=(N / seconds) / (k / cpu), bandwidth=nbytes / seconds / bandwidth)


def collapse_rows(scale, rng, bandwidth):
    N, S = max(1000, int(100_000_000 * scale)), 8
    psi = random_device((N, S), seed=13, complex_=True)
    out = cuda.device_array(N, np.int64)
    seconds, _ = timed(lambda: sp.collapse(psi, seed=5, step=1, out=out, target="cuda"))
    outcomes = out.copy_to_host()
    k = min(N, CPU_SAMPLE)
    for start in (0, N // 2, N - k):  # the outcome of entity j is keyed by its global index
        host = psi[start:start + k].copy_to_host()
        ref = sp.collapse(host, seed=5, step=1, offset=start)
        check(np.array_equal(outcomes[start:start + k], ref), f"collapse outcomes from entity {start}")
    cpu = cpu_seconds(lambda: sp.collapse(host, seed=5, step=1))
    nbytes = 16 * S * N + 8 * N
    yield dict(workload=f"collapse S={S}", n=N, gpu_points_per_s=N / seconds,
               vs_cpu=(N / seconds) / (k / cpu), bandwidth=nbytes / seconds / bandwidth)


PARTS = dict(curvature=curvature_rows, mahalanobis=mahalanobis_rows, superposition=superposition_rows,
             collapse=collapse_rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every size by this")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {','.join(PARTS)}")
    parser.add_argument("--dims", default="2,3,4", help="comma-separated dimensions of the curvature part")
    args = parser.parse_args(argv)
    reason = cuda_unavailable()
    if reason is not None:
        print(f"gpu_check: {reason}", file=sys.stderr)
        return 2
    numba.set_num_threads(min(CPU_THREADS, numba.config.NUMBA_NUM_THREADS))
    rng = np.random.default_rng(2026)
    bandwidth = copy_bandwidth(max(1 << 20, int((1 << 31) * min(1.0, args.scale))))
    name = getattr(cuda.get_current_device(), "name", "CUDA simulator")
    name = name.decode() if isinstance(name, bytes) else name
    print(f"device: {name}; device-to-device copy {bandwidth / 1e9:.0f} GB/s; CPU reference on "
          f"{numba.get_num_threads()} threads")
    print("\n| workload | N | GPU points/s | vs 2-thread CPU | of copy bandwidth |")
    print("|---|---:|---:|---:|---:|", flush=True)
    rows = []
    for part in (PARTS[p] for p in args.parts.split(",")):
        started = time.perf_counter()
        extra = dict(dims=[int(d) for d in args.dims.split(",")]) if part is curvature_rows else {}
        for r in part(args.scale, rng, bandwidth, **extra):  # row by row, so that a run cut short still reports what it measured
            ratio = "" if r.get("vs_cpu") is None else f"{r['vs_cpu']:.0f}x"
            bw = "" if r.get("bandwidth") is None else f"{100 * r['bandwidth']:.0f}%"
            print(f"| {r['workload']} | {r['n']:,} | {r['gpu_points_per_s']:.3g} | {ratio} | {bw} |", flush=True)
            rows.append(r)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump(dict(device=name, copy_bandwidth=bandwidth, rows=rows), f, indent=1)
        print(f"<!-- {part.__name__}: checked, {time.perf_counter() - started:.0f} s -->", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
