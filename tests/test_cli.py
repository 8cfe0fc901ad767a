"""The main job: ``anant-fast demo`` finds the planted outliers; ``anant-fast analyze`` reads .npy,
.csv and .parquet, and its result files hold exactly (bit for bit) the in-process computation,
whether sharded over the embedded Ray, over a two-node cluster joined by address, or run with
``--no-ray``; every bad input is a one-line error; output files appear completely or not at all."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from anant_fast import analysis, metrics
from anant_fast.cli import demo, main, sample_sphere_cloud

SIGMA = 0.4
STORE = 100 * 2**20   # object store of each Ray node (bytes): the tests' arrays are tiny
RESULT_COLUMNS = ("scalar_curvature", "mahalanobis", "mahalanobis_z", "curvature_z",
                  "mahalanobis_outlier", "curvature_outlier")


@pytest.fixture(scope="module")
def ray_session():
    """One embedded local Ray for the tests of this module that run Ray in this process."""
    pytest.importorskip("ray")
    from anant_fast import distributed as dist
    dist.connect(num_cpus=2, include_dashboard=False, object_store_memory=STORE)
    yield dist
    dist.shutdown()


@pytest.fixture(scope="module")
def cloud():
    """300 noisy points on the unit sphere, 5 of them planted far off it: ``X (300, 3)``."""
    return sample_sphere_cloud(300, seed=1)[0]


@pytest.fixture
def npy(tmp_path, cloud):
    path = tmp_path / "points.npy"
    np.save(path, cloud)
    return path


def subprocess_env():
    """This process's environment (as it is now: Ray's token settings included), Ray on loopback."""
    return {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


def reference(X, sigma, z=3.0, model=metrics.LocalCovariance):
    """The in-process computation: ``(curvature (N,), distances (N,), outlier indices)``."""
    cov = metrics.Covariance(X)
    return model(X, sigma).scalar_curvature(X), cov.mahalanobis(X), cov.outliers(z=z)


def load(path):
    """A result file (``.parquet`` or ``.npz``) as ``{column: array}``."""
    if path.suffix == ".npz":
        with np.load(path) as f:
            return {name: f[name] for name in f.files}
    import pyarrow.parquet as pq
    table = pq.read_table(path)
    return {name: table.column(name).to_numpy() for name in table.column_names}


def check_results(path, X, names, curvature, distances, outliers, z=3.0):
    """The file at ``path`` holds exactly the coordinates and these results; returns its summary."""
    got = load(path)
    assert list(got) == [*names, *RESULT_COLUMNS]
    for j, name in enumerate(names):
        np.testing.assert_array_equal(got[name], X[:, j])
    np.testing.assert_array_equal(got["scalar_curvature"], curvature)
    np.testing.assert_array_equal(got["mahalanobis"], distances)
    np.testing.assert_array_equal(got["mahalanobis_z"], analysis.zscores(distances))
    np.testing.assert_array_equal(got["curvature_z"], analysis.zscores(curvature))
    np.testing.assert_array_equal(np.flatnonzero(got["mahalanobis_outlier"]), outliers)
    curvature_outliers = np.flatnonzero(np.abs(curvature - curvature.mean()) > z * curvature.std())
    np.testing.assert_array_equal(np.flatnonzero(got["curvature_outlier"]), curvature_outliers)
    summary = json.loads(path.with_suffix(".json").read_text())
    assert summary["counts"]["points"] == len(X) and summary["columns"] == list(names)
    assert summary["mahalanobis_outliers"] == outliers.tolist()
    assert summary["curvature_outliers"] == curvature_outliers.tolist()
    assert summary["counts"]["mahalanobis_outliers"] == len(outliers)
    return summary


def run_ok(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out


# --- the demo ---------------------------------------------------------------------------------

def test_demo_finds_planted_outliers(ray_session):
    buf = io.StringIO()
    result = demo(n=2000, sigma=0.15, out=buf, progress=False)
    text = buf.getvalue()
    assert set(result["planted"]) <= set(result["outliers"])
    assert np.isfinite(result["scalar_curvature"]).all()
    assert result["execution"]["mode"] == "ray"
    assert "planted found: 5/5" in text and "scalar curvature" in text


def test_console_entry_point_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--n", "3"])
    assert exc.value.code == 2
    assert "--n must be at least 10" in capsys.readouterr().err


def test_module_runs_as_a_command():
    """The README's main job, as a fresh process: embedded Ray started and stopped by the CLI."""
    done = subprocess.run([sys.executable, "-m", "anant_fast", "demo", "--n", "500", "--sigma", "0.2",
                           "--no-progress"],
                          capture_output=True, text=True, timeout=600, env=subprocess_env(), check=False)
    assert done.returncode == 0, done.stderr
    assert "planted found" in done.stdout and "execution: Ray" in done.stdout


# --- analyze: results equal the in-process computation ----------------------------------------

def test_analyze_npy_to_parquet_over_ray(ray_session, npy, cloud, tmp_path, capsys):
    out = tmp_path / "results.parquet"
    text = run_ok(["analyze", str(npy), "--out", str(out), "--sigma", str(SIGMA), "--shards", "3",
                   "--no-progress"], capsys)
    summary = check_results(out, cloud, ["x0", "x1", "x2"], *reference(cloud, SIGMA))
    assert summary["execution"]["mode"] == "ray" and summary["execution"]["shards"] == 3
    assert summary["metric"] == "local-covariance" and summary["sigma"] == SIGMA
    assert summary["sigma_source"] == "given" and summary["rho"] == 1e-3
    assert {"scalar curvature", "Mahalanobis outliers"} <= set(summary["timings_s"])
    assert "wrote" in text and str(out) in text


def test_analyze_csv_columns_to_npz_with_automatic_sigma(ray_session, cloud, tmp_path, capsys):
    path = tmp_path / "points.csv"
    rows = [f"p{i},{x:.17g},label,{y:.17g},{z:.17g}" for i, (x, y, z) in enumerate(cloud)]
    path.write_text("id, a ,name,b,c\n" + "\n".join(rows) + "\n")
    out = tmp_path / "results.npz"
    run_ok(["analyze", str(path), "--out", str(out), "--columns", "c,a", "--no-progress"], capsys)
    X = np.ascontiguousarray(cloud[:, [2, 0]])
    sigma = analysis.auto_sigma(X)
    summary = check_results(out, X, ["c", "a"], *reference(X, sigma))
    assert summary["sigma"] == sigma and summary["sigma_source"].startswith("automatic")


def test_analyze_parquet_with_each_metric(ray_session, cloud, tmp_path, capsys):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq
    X = cloud.copy()
    X[:, 1] = np.round(10 * X[:, 1])   # an integer column
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1].astype(np.int64), "tag": ["t"] * len(X),
                             "c": X[:, 2]}), tmp_path / "points.parquet")
    out = tmp_path / "diag.parquet"
    run_ok(["analyze", str(tmp_path / "points.parquet"), "--out", str(out), "--metric", "local-diagonal",
            "--sigma", "0.5", "--z", "2.5", "--no-progress"], capsys)
    check_results(out, X, ["a", "b", "c"], *reference(X, 0.5, z=2.5, model=metrics.LocalDiagonal), z=2.5)
    out = tmp_path / "cov.npz"
    run_ok(["analyze", str(tmp_path / "points.parquet"), "--out", str(out), "--metric", "covariance",
            "--no-progress"], capsys)
    curvature = metrics.Covariance(X).scalar_curvature(X)
    summary = check_results(out, X, ["a", "b", "c"], curvature, *reference(X, 1.0)[1:])
    assert summary["sigma"] is None and summary["metric"] == "covariance"


def test_no_ray_gives_the_same_file(ray_session, npy, tmp_path, capsys):
    alone, sharded = tmp_path / "alone.npz", tmp_path / "sharded.npz"
    run_ok(["analyze", str(npy), "--out", str(alone), "--sigma", str(SIGMA), "--no-ray"], capsys)
    run_ok(["analyze", str(npy), "--out", str(sharded), "--sigma", str(SIGMA), "--no-progress"], capsys)
    a, b = load(alone), load(sharded)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert json.loads(alone.with_suffix(".json").read_text())["execution"] == {"mode": "in-process"}
    assert json.loads(sharded.with_suffix(".json").read_text())["execution"]["mode"] == "ray"


def test_without_ray_it_runs_in_process_with_a_note(npy, cloud, tmp_path, monkeypatch, capsys):
    for name in ("ray", "anant_fast.distributed"):
        monkeypatch.setitem(sys.modules, name, None)   # import fails as if Ray were not installed
    out = tmp_path / "results.parquet"
    code = main(["analyze", str(npy), "--out", str(out), "--sigma", str(SIGMA)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Ray is not installed" in err and "pip install 'anant-fast[ray]'" in err
    summary = check_results(out, cloud, ["x0", "x1", "x2"], *reference(cloud, SIGMA))
    assert summary["execution"] == {"mode": "in-process"}


# --- pure helpers ------------------------------------------------------------------------------

def test_automatic_sigma_is_positive_and_finite(cloud):
    sigma = analysis.auto_sigma(cloud)
    assert np.isfinite(sigma) and sigma > 0
    doubled = np.concatenate([cloud, cloud])   # every point has a duplicate but distinct neighbours
    assert analysis.auto_sigma(doubled) == sigma
    with pytest.raises(analysis.AnalysisError, match="--sigma"):
        analysis.auto_sigma(np.ones((5, 3)))


def test_default_columns_are_the_numeric_ones(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("name,x,y,flag\nalpha,1,2.5,yes\nbeta,3,-4e-1,no\ngamma,,7,no\n")
    with pytest.raises(analysis.AnalysisError, match="data row 2.*'x'"):   # the empty cell
        analysis.read_points(path)
    path.write_text("name,x,y,flag\nalpha,1,2.5,yes\nbeta,3,-4e-1,no\n")
    X, names = analysis.read_points(path)
    assert names == ["x", "y"]
    np.testing.assert_array_equal(X, [[1.0, 2.5], [3.0, -0.4]])
    X, names = analysis.read_points(path, "1,y")    # positions and names
    assert names == ["x", "y"]


# --- errors ------------------------------------------------------------------------------------

def _write(name, text):
    def make(folder):
        path = folder / name
        path.write_bytes(text) if isinstance(text, bytes) else path.write_text(text)
        return path
    return make


def _npy(name, array):
    def make(folder):
        np.save(folder / name, array)
        return folder / name
    return make


GOOD_CSV = "a,b\n0,1\n1,0\n2,2\n"
ERRORS = {
    "missing file": (lambda folder: folder / "absent.csv", [], "no such file"),
    "unknown input suffix": (_write("points.txt", GOOD_CSV), [], "unknown input format '.txt'"),
    "unknown output suffix": (_write("points.csv", GOOD_CSV), ["--out", "{dir}/out.csv"],
                              "unknown output format '.csv'"),
    "missing output folder": (_write("points.csv", GOOD_CSV), ["--out", "{dir}/no/out.npz"],
                              "does not exist"),
    "not an npy file": (_write("points.npy", b"not numpy at all"), [], "not a readable .npy"),
    "not a parquet file": (_write("points.parquet", b"PAR1 broken"), [], "not a readable Parquet"),
    "missing column": (_write("points.csv", GOOD_CSV), ["--columns", "a,zz"], "no column 'zz'"),
    "non-numeric column": (_write("points.csv", "a,b\n0,x\n1,y\n2,z\n"), ["--columns", "a,b"],
                           "column 'b' is not numeric (data row 0: 'x')"),
    "no numeric column": (_write("points.csv", "a,b\nx,y\nz,w\n"), [], "no numeric columns"),
    "non-numeric npy": (_npy("points.npy", np.array([["a", "b"], ["c", "d"]])), [], "non-numeric"),
    "NaN": (_write("points.csv", "a,b\n0,1\n1,nan\n2,2\n"), [], "NaN, inf or a missing value at data row 1"),
    "inf in npy": (_npy("points.npy", np.array([[0.0, 1.0], [np.inf, 0.0]])), [], "data row 1"),
    "one point": (_write("points.csv", "a,b\n0,1\n"), [], "at least 2 points, got 1"),
    "empty csv": (_write("points.csv", ""), [], "empty"),
    "ragged csv": (_write("points.csv", "a,b\n0,1\n1\n"), [], "line 3 has 1 fields"),
    "column named like a result": (_write("points.csv", "a,mahalanobis\n0,1\n1,0\n2,2\n"), [],
                                   "clash with result columns: ['mahalanobis']"),
    "sigma with covariance": (_write("points.csv", GOOD_CSV), ["--metric", "covariance", "--sigma", "1"],
                              "local metrics only"),
    "address without ray": (_write("points.csv", GOOD_CSV), ["--no-ray", "--address", "127.0.0.1:1"],
                            "drop --no-ray"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_errors_are_one_line_and_write_nothing(case, tmp_path, capsys):
    make, extra, message = ERRORS[case]
    folder = tmp_path / "in"
    folder.mkdir()
    path = make(folder)
    extra = [arg.format(dir=tmp_path) for arg in extra]
    argv = ["analyze", str(path), *extra]
    argv += [] if "--out" in extra else ["--out", str(tmp_path / "out.parquet")]
    argv += [] if "--no-ray" in extra else ["--no-ray"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("anant-fast: error: ") and err.count("\n") == 1, err
    assert message in err
    assert list(tmp_path.iterdir()) == [folder]    # no output, no temporary file


def test_a_failed_write_leaves_no_partial_output(npy, tmp_path, monkeypatch, capsys):
    out = tmp_path / "results.parquet"
    out.write_bytes(b"old results")

    def broken(path, obj):
        path.write_text('{"half": ')
        raise OSError("disk full")
    monkeypatch.setattr("anant_fast.cli.write_json", broken)
    code = main(["analyze", str(npy), "--out", str(out), "--sigma", str(SIGMA), "--no-ray"])
    assert code == 1 and "disk full" in capsys.readouterr().err
    assert out.read_bytes() == b"old results"     # the old file is untouched, no new one half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.npy", "results.parquet"]


# --- plot ---------------------------------------------------------------------------------------

def test_plot_writes_a_png(npy, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "results.npz", tmp_path / "curvature.png"
    run_ok(["analyze", str(npy), "--out", str(out), "--sigma", str(SIGMA), "--plot", str(png),
            "--no-ray"], capsys)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_names_the_extra(npy, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code = main(["analyze", str(npy), "--out", str(tmp_path / "r.npz"), "--plot", str(tmp_path / "p.png"),
                 "--no-ray"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1
    assert "pip install 'anant-fast[plot]'" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.npy"]


# --- a cluster joined by address ----------------------------------------------------------------

def test_cli_on_a_two_node_cluster_writes_the_embedded_result(ray_session, npy, tmp_path, capsys):
    from ray.cluster_utils import Cluster
    embedded = tmp_path / "embedded.parquet"
    run_ok(["analyze", str(npy), "--out", str(embedded), "--sigma", str(SIGMA), "--shards", "3",
            "--no-progress"], capsys)
    joined = tmp_path / "cluster.parquet"
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "include_dashboard": False,
                                      "object_store_memory": STORE})
    address = cluster.address
    try:
        cluster.add_node(num_cpus=1, object_store_memory=STORE)
        done = subprocess.run([sys.executable, "-m", "anant_fast", "analyze", str(npy), "--out", str(joined),
                               "--sigma", str(SIGMA), "--shards", "3", "--no-progress",
                               "--address", address],
                              capture_output=True, text=True, timeout=300, env=subprocess_env(),
                              check=False)
    finally:
        cluster.shutdown()
    assert done.returncode == 0, done.stderr
    a, b = load(embedded), load(joined)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    summary = json.loads(joined.with_suffix(".json").read_text())
    assert summary["execution"]["nodes"] == 2 and summary["execution"]["address"] == address
