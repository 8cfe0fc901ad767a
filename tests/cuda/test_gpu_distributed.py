"""target='cuda' on the shard API: each task asks Ray for one GPU and runs the CUDA kernels there.
Ray is told this machine has two GPUs; under the simulator the tasks' CUDA kernels are simulated."""
import sys

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from anant_fast import LayerStack, metrics  # noqa: E402
from anant_fast import distributed as dist  # noqa: E402
from anant_fast.distributed import shard  # noqa: E402

pytestmark = pytest.mark.cuda
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module", autouse=True)
def ray_with_gpus():
    dist.connect(num_cpus=2, num_gpus=2, include_dashboard=False)
    yield
    dist.shutdown()


def test_sharded_gpu_tasks_give_the_in_process_result(monkeypatch):
    asked = []
    launch = shard.launch

    def recording(*args, **kwargs):
        asked.append(kwargs["num_gpus"])
        return launch(*args, **kwargs)
    monkeypatch.setattr(shard, "launch", recording)
    rng = np.random.default_rng(4)
    X = rng.normal(size=(100, 2))
    model = metrics.LocalCovariance(X, 0.7)
    Q = X[:24]
    out = dist.scalar_curvature(model, Q, target="cuda", shards=3, progress=False)
    np.testing.assert_allclose(out, model.scalar_curvature(Q), rtol=1e-12)
    cov = metrics.Covariance(X)
    np.testing.assert_allclose(dist.mahalanobis(cov, X, target="auto", progress=False),
                               cov.mahalanobis(X), rtol=1e-12)
    stack = LayerStack(30, 4, ["a", ("b", "logical", 1, 1.0, "a")])
    stack.set_state(stack.entities, np.full((2, 30, 4), 0.5 + 0j))
    expected = LayerStack(30, 4, ["a", ("b", "logical", 1, 1.0, "a")])
    expected.set_state(expected.entities, np.full((2, 30, 4), 0.5 + 0j))
    np.testing.assert_array_equal(dist.collapse(stack, 3, target="cuda", shards=2, progress=False),
                                  expected.collapse(3))
    assert asked == [1, 1, 1]
