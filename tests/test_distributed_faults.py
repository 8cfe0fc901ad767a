"""Fault tolerance on loopback: a worker killed mid-job and a node removed mid-job cost time, never
results (tasks are idempotent and retried)."""
import os
import signal
import sys
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from anant_fast import metrics  # noqa: E402
from anant_fast import distributed as dist  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import tests/

X = np.random.default_rng(8).normal(size=(240, 2))
MODEL = metrics.LocalCovariance(X, 0.6)


def _wait_for(predicate, seconds=120):
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _curvature_blocking_once(Q, model, folder):
    """Shard work; the first task to start writes its pid and blocks, to be killed by the test."""
    try:
        fd = os.open(os.path.join(folder, "victim.pid"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return model.scalar_curvature(Q)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    time.sleep(300)
    raise AssertionError("the victim was not killed")


def test_a_killed_worker_costs_time_not_results(tmp_path):
    dist.connect(num_cpus=2, include_dashboard=False)
    try:
        want = MODEL.scalar_curvature(X)
        job = dist.submit(dist.map_points, _curvature_blocking_once, X, MODEL, str(tmp_path), shards=4)
        pid_file = tmp_path / "victim.pid"
        _wait_for(lambda: pid_file.exists() and pid_file.read_text())
        os.kill(int(pid_file.read_text()), signal.SIGKILL)
        np.testing.assert_array_equal(job.result(timeout=300), want)
    finally:
        dist.shutdown()


def _curvature_logged(Q, model, folder):
    """Shard work that logs each start (node, pid) and takes a while, so a node can be removed."""
    name = f"{ray.get_runtime_context().get_node_id()}-{os.getpid()}-{Q[0, 0]!r}-{time.monotonic_ns()}"
    open(os.path.join(folder, name), "w").close()
    time.sleep(1.0)
    return model.scalar_curvature(Q)


def test_a_removed_node_costs_time_not_results(tmp_path):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        dist.connect(cluster.address)
        assert dist.status()["nodes"] == 3
        want = MODEL.scalar_curvature(X)
        job = dist.submit(dist.map_points, _curvature_logged, X, MODEL, str(tmp_path), shards=6)
        victim = workers[0].node_id
        _wait_for(lambda: any(p.name.startswith(victim) for p in tmp_path.iterdir()))
        cluster.remove_node(workers[0])
        np.testing.assert_array_equal(job.result(timeout=300), want)
        assert len(list(tmp_path.iterdir())) > 6   # a shard ran again on the surviving node
    finally:
        dist.shutdown()
        cluster.shutdown()


def test_an_unreachable_address_fails_fast_with_a_clear_error():
    assert not ray.is_initialized()
    with pytest.raises(ConnectionError, match="no Ray cluster answers at '127.0.0.1:9' within 2 s"):
        dist.connect("127.0.0.1:9", timeout=2)
    with pytest.raises(ValueError, match="address must be"):
        dist.connect("nowhere")


def test_a_model_is_put_again_in_a_new_ray_session():
    for _ in range(2):
        dist.connect(num_cpus=1, include_dashboard=False)
        try:
            np.testing.assert_array_equal(dist.scalar_curvature(MODEL, X[:20]), MODEL.scalar_curvature(X[:20]))
        finally:
            dist.shutdown()
