"""Graceful degradation: without Ray the library and every kernel work; the Ray layer says which
extra to install."""
import subprocess
import sys

BLOCK_RAY = "import sys; sys.modules['ray'] = None\n"


def _run(code):
    return subprocess.run([sys.executable, "-c", BLOCK_RAY + code], capture_output=True, text=True)


def test_the_library_works_without_ray():
    done = _run("import anant_fast, numpy as np\n"
                "print(anant_fast.metrics.Euclidean(2).scalar_curvature(np.zeros((1, 2)))[0])")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0.0"


def test_the_ray_layer_names_the_extra_to_install():
    done = _run("import anant_fast.distributed")
    assert done.returncode != 0
    assert "ImportError: anant_fast.distributed needs Ray: pip install 'anant-fast[ray]'" in done.stderr
