"""CUDA kernels, run where CUDA kernels can run: under the simulator (the README's test command runs
this folder a second time with ``NUMBA_ENABLE_CUDASIM=1``) or on a GPU. Elsewhere these tests skip."""
import pytest

from anant_fast.kernels.target import cuda_unavailable, simulated

REASON = cuda_unavailable()


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("cuda") and REASON is not None:
            item.add_marker(pytest.mark.skip(reason=f"{REASON}; run with NUMBA_ENABLE_CUDASIM=1"))


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Launch at most three points at a time: the chunking path of host inputs."""
    from anant_fast.kernels import gpu
    monkeypatch.setattr(gpu, "CHUNK_POINTS", 3)


def is_simulated():
    return simulated()
