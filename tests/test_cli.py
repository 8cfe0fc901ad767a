"""The main job runs end to end and finds the planted outliers."""
import io
import subprocess
import sys

import numpy as np
import pytest

from anant_fast.cli import demo, main


def test_demo_finds_planted_outliers():
    buf = io.StringIO()
    result = demo(n=2000, sigma=0.15, out=buf)
    text = buf.getvalue()
    assert set(result["planted"]) <= set(result["outliers"])
    assert np.isfinite(result["scalar_curvature"]).all()
    assert "planted found: 5/5" in text and "scalar curvature" in text


def test_console_entry_point_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--n", "3"])
    assert exc.value.code == 2
    assert "--n must be at least 10" in capsys.readouterr().err


def test_module_runs_as_a_command():
    done = subprocess.run([sys.executable, "-m", "anant_fast", "demo", "--n", "500", "--sigma", "0.2"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "planted found" in done.stdout
