"""The Ray layer on one embedded local Ray (loopback, 2 CPUs, shared by this module): sharded results
are bitwise identical to the in-process kernels for every shard count; inputs reach tasks as
object-store views; errors, jobs and the model cache behave."""
import asyncio
import gc
import os
import sys
import time

import numba
import numpy as np
import pytest

ray = pytest.importorskip("ray")

from anant_fast import LayerStack, metrics  # noqa: E402
from anant_fast import distributed as dist  # noqa: E402
from anant_fast.distributed import shard  # noqa: E402

SHARDS = (1, 2, 3, 7, 16)
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    dist.connect(num_cpus=2, include_dashboard=False)
    yield
    dist.shutdown()


def same(a, b):
    """Bitwise equality (NaN in the same places counts as equal)."""
    if isinstance(a, tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


@pytest.fixture(scope="module")
def cloud():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 2))
    return X, metrics.LocalCovariance(X, 0.6)


def test_status_reports_the_embedded_cluster():
    s = dist.status()
    assert s["nodes"] == 1 and s["cpus"] == 2
    assert s["object_store"]["total"] > 0 and 0 <= s["object_store"]["used"] <= s["object_store"]["total"]
    assert s["address"].startswith("127.0.0.1:")


def test_connect_reuses_the_running_ray():
    before = ray.get_runtime_context().get_job_id()
    dist.connect()
    assert ray.get_runtime_context().get_job_id() == before


def test_shard_bounds_cover_every_point_once():
    for n, k in [(10, 3), (5, 16), (1, 1), (1000, 7)]:
        bounds = dist.shard_bounds(n, k)
        assert bounds[0][0] == 0 and bounds[-1][1] == n and len(bounds) == min(n, k)
        assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
        assert all(hi > lo for lo, hi in bounds)


@pytest.mark.parametrize("shards", SHARDS)
def test_curvature_is_bitwise_identical_for_every_shard_count(cloud, shards):
    X, model = cloud
    Q = X[:37]
    assert same(dist.scalar_curvature(model, Q, shards=shards), model.scalar_curvature(Q))
    assert same(dist.ricci(model, Q, shards=shards), model.ricci(Q))
    sphere = metrics.Sphere(3, radius=2.0)
    P = np.random.default_rng(shards).normal(size=(23, 3))
    U, V = np.eye(3)[[0] * 23], np.eye(3)[[1] * 23]
    assert same(dist.christoffel(sphere, P, shards=shards), sphere.christoffel(P))
    assert same(dist.riemann(sphere, P, shards=shards), sphere.riemann(P))
    assert same(dist.sectional_curvature(sphere, P, U, V, shards=shards),
                sphere.sectional_curvature(P, U, V))


@pytest.mark.parametrize("shards", SHARDS)
def test_geodesics_are_bitwise_identical_for_every_shard_count(shards):
    sphere = metrics.Sphere(2)
    rng = np.random.default_rng(5)
    X, V = rng.normal(size=(20, 2)), rng.normal(size=(20, 2))
    assert same(dist.exp(sphere, X, V, steps=20, shards=shards), sphere.exp(X, V, steps=20))
    Y = sphere.exp(X, 0.5 * V, steps=50)
    assert same(dist.log(sphere, X, Y, shards=shards), sphere.log(X, Y))
    got, info = dist.distance(sphere, X, Y, return_info=True, shards=shards)
    want, want_info = sphere.distance(X, Y, return_info=True)
    assert same(got, want) and same(tuple(info), tuple(want_info))


@pytest.mark.parametrize("shards", SHARDS)
def test_mahalanobis_outliers_merge_moments_exactly(shards):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(9000, 4)) @ rng.normal(size=(4, 4))
    X[[5, 600, 8000]] *= 8
    got = dist.mahalanobis_outliers(X, z=3.0, shards=shards)
    fitted = metrics.Covariance(X)
    assert same(got.distances, fitted.mahalanobis(X))
    assert same(got.indices, fitted.outliers(z=3.0))
    assert {5, 600, 8000} <= set(got.indices.tolist())


def _stack(N=50):
    stack = LayerStack(N, ["a", "b", "c"], ["base", ("top", "CONCEPTUAL", 1, 2.0, "base")])
    rng = np.random.default_rng(11)
    stack.set_state(np.arange(N), probabilities=rng.uniform(0.1, 1, size=(N, 3)))
    stack.add_context("ctx", "TEMPORAL", rng.uniform(0.2, 1, size=(N, 3)))
    stack.entangle([0, 10, 20], [45, 1, 33], 0.8)
    return stack


@pytest.mark.parametrize("shards", SHARDS)
def test_superposition_step_and_collapse_match_in_process(shards):
    U = np.linalg.qr(np.random.default_rng(2).normal(size=(3, 3)) + 0j)[0]
    here, there = _stack(), _stack()
    want = here.step(U=U, observe="ctx")
    got = dist.superposition_step(there, U=U, observe="ctx", shards=shards)
    assert same(got, tuple(np.array(a) for a in want))
    assert same(there.amplitudes(), here.amplitudes())
    assert same(dist.collapse(there, seed=42, shards=shards), here.collapse(seed=42))
    assert same(there.amplitudes(), here.amplitudes())


@numba.njit
def _norms(Q, scale):
    return np.sqrt((Q * Q).sum(axis=1)) * scale[0]


def _two_outputs(Q):
    return Q.sum(axis=1), Q[:, :1] * 2


def test_map_points_runs_a_users_kernel():
    Q = np.random.default_rng(1).normal(size=(101, 3))
    assert same(dist.map_points(_norms, Q, np.array([2.0]), shards=7), _norms(Q, np.array([2.0])))
    assert same(dist.map_points(_two_outputs, Q, shards=3), _two_outputs(Q))


def _inspect(lo, hi, whole, refs):
    """Task: is the argument ``whole`` the object-store buffer itself (a second ``ray.get`` of the
    same reference maps the same memory), read-only and not owning its data?"""
    again = ray.get(refs[0])
    return np.shares_memory(whole, again), whole.flags.writeable, whole.flags.owndata


def _rows_probe(Q, model):
    params = [a for a in model._params if isinstance(a, np.ndarray)]
    flags = [not Q.flags.writeable, not Q.flags.owndata]
    flags += [not a.flags.writeable and not a.flags.owndata for a in params]
    return np.array([all(flags)] * len(Q))


def test_tasks_read_inputs_as_object_store_views(cloud):
    X, model = cloud
    ref = ray.put(X)
    (probe,) = ray.get(shard.launch(_inspect, [(0, 1)], ref, [ref]))
    assert probe == (True, False, False)
    # the engine's own path: row slices and the model's arrays, read-only views, never copies
    assert dist.map_points(_rows_probe, X, model, shards=4).all()


def _threads(Q):
    return np.full(len(Q), numba.get_num_threads())


def test_numba_threads_follow_the_task_cpus():
    Q = np.zeros((4, 1))
    assert (dist.map_points(_threads, Q, shards=2) == 1).all()
    assert (dist.map_points(_threads, Q, shards=1, cpus_per_task=2) == 2).all()


def test_bad_input_is_rejected_before_any_task(cloud, monkeypatch):
    X, model = cloud
    monkeypatch.setattr(shard, "launch", lambda *a, **k: pytest.fail("a task was launched"))
    Q = X[:5].copy()
    Q[2, 1] = np.nan
    with pytest.raises(ValueError, match="Q contains NaN"):
        dist.scalar_curvature(model, Q)
    with pytest.raises(ValueError, match="shards must be a positive integer"):
        dist.scalar_curvature(model, X[:5], shards=0)
    with pytest.raises(TypeError, match="model must be"):
        dist.scalar_curvature(X, X)
    with pytest.raises(ValueError, match="X must have shape"):
        dist.mahalanobis_outliers(np.zeros(5))
    with pytest.raises(ValueError, match="outside the chart"):
        dist.exp(metrics.Hyperbolic(2), [[0.0, -1.0]], [[1.0, 0.0]])


def _fails_in_shard_two(Q):
    if Q[0, 0] >= 20:
        raise ValueError(f"bad row {int(Q[0, 0])}")
    return Q[:, 0]


def test_an_error_in_a_task_names_the_shard_and_the_original_message():
    Q = np.arange(40.0)[:, None]
    with pytest.raises(dist.ShardError, match=r"shard 2 of 4 \(points 20:30\) failed: ValueError: bad row 20"):
        dist.map_points(_fails_in_shard_two, Q, shards=4)


def _slow(Q, seconds):
    time.sleep(seconds)
    return Q[:, 0]


def test_jobs_run_together_and_can_be_awaited(cloud):
    X, model = cloud
    jobs = [dist.submit(dist.scalar_curvature, model, X[k::3]) for k in range(3)]
    for k, job in enumerate(jobs):
        assert same(job.result(timeout=120), model.scalar_curvature(X[k::3]))
        assert job.done() and job.progress == 1.0

    async def both():
        return await asyncio.gather(dist.submit(dist.mahalanobis_outliers, X),
                                    dist.submit(dist.map_points, _norms, X, np.array([1.0])))

    outliers, norms = asyncio.run(both())
    assert same(outliers.distances, metrics.Covariance(X).mahalanobis(X))
    assert same(norms, _norms(X, np.array([1.0])))


def test_a_job_times_out_and_cancels():
    job = dist.submit(dist.map_points, _slow, np.zeros((2, 1)), 30.0, shards=2)
    assert not job.done()
    with pytest.raises(TimeoutError, match="not finished"):
        job.result(timeout=0.2)
    job.cancel()
    with pytest.raises(dist.ShardError):
        job.result(timeout=60)


def test_a_fitted_model_is_put_once_and_dropped_with_it():
    X = np.random.default_rng(4).normal(size=(300, 2))
    model = metrics.LocalCovariance(X, 0.5)
    before = shard.shared_count()
    dist.scalar_curvature(model, X[:10])
    ref = shard.shared_ref(model._params, model)
    dist.ricci(model, X[:10])
    assert shard.shared_count() == before + 1 and shard.shared_ref(model._params, model) == ref
    del model
    gc.collect()
    assert shard.shared_count() == before


def test_submit_refuses_what_is_not_an_operation():
    with pytest.raises(TypeError, match="submit needs an operation"):
        dist.submit(os.getcwd)
    with pytest.raises(TypeError, match="progress is an argument of Job.result"):
        dist.submit(dist.map_points, _threads, np.zeros((2, 1)), progress=False)


def _wrong_length(Q):
    return Q[:1, 0]


def test_map_points_refuses_outputs_without_one_row_per_point():
    with pytest.raises(dist.ShardError, match=r"_wrong_length must return arrays with one row per row"):
        dist.map_points(_wrong_length, np.zeros((6, 1)), shards=2)


def test_shard_errors_survive_pickling():
    import pickle
    err = dist.ShardError(1, 3, (4, 8), ValueError("bad"))
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) == "shard 1 of 3 (points 4:8) failed: ValueError: bad"
    assert again.rows == (4, 8) and isinstance(again.cause, ValueError)


def test_a_step_replaced_meanwhile_is_not_committed():
    stack = _stack()
    job = dist.submit(dist.superposition_step, stack, shards=2)
    stack.step()
    with pytest.raises(RuntimeError, match="replaced while this update ran"):
        job.result(timeout=120)


def test_options_are_checked():
    with pytest.raises(ValueError, match="cpus_per_task must be a positive number"):
        dist.map_points(_threads, np.zeros((2, 1)), cpus_per_task=0)
    with pytest.raises(RuntimeError, match="already runs Ray"):
        dist.connect("127.0.0.1:9")


def test_a_covariance_overflow_is_the_same_error_sharded_and_in_process():
    X = np.random.default_rng(9).normal(size=(100, 3)) * 1e200
    with pytest.raises(ValueError, match="X is too large in magnitude"):
        metrics.Covariance(X)
    with pytest.raises(dist.ShardError, match="ValueError: X is too large in magnitude"):
        dist.mahalanobis_outliers(X)


def test_cuda_target_needs_gpus_in_the_cluster(cloud):
    X, model = cloud
    with pytest.raises(RuntimeError, match="target='cuda' cannot run: the Ray cluster has no GPUs"):
        dist.scalar_curvature(model, X[:5], target="cuda")
    with pytest.raises(ValueError, match="no 'cuda' kernel"):
        dist.riemann(model, X[:5], target="cuda")
    with pytest.raises(ValueError, match="no 'cuda' kernel"):
        dist.exp(metrics.Sphere(2), X[:5], X[:5], target="cuda")  # adaptive steps: CPU only
    with pytest.raises(ValueError, match="target must be one of"):
        dist.ricci(model, X[:5], target="gpu")


def test_auto_target_falls_back_to_the_cpu_tasks(cloud):
    from anant_fast.kernels.target import TargetFallbackWarning
    X, model = cloud
    with pytest.warns(TargetFallbackWarning, match="the Ray cluster has no GPUs") as caught:
        out = dist.ricci(model, X[:30], target="auto", shards=3, progress=False)
    assert caught[0].filename == __file__
    assert same(out, model.ricci(X[:30]))
