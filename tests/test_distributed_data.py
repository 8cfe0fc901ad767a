"""Ray Data: the geometry columns of a Dataset read from a local Parquet file equal the in-process
kernels, row for row."""
import numpy as np
import pytest

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")

from anant_fast import metrics  # noqa: E402
from anant_fast import distributed as dist  # noqa: E402
from anant_fast.distributed.data import geometry_columns  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    dist.connect(num_cpus=2, include_dashboard=False)
    yield
    dist.shutdown()


def test_map_batches_adds_curvature_and_mahalanobis_columns(tmp_path):
    rng = np.random.default_rng(21)
    X = rng.normal(size=(1500, 2))
    path = tmp_path / "points.parquet"
    pq.write_table(pa.table({"id": np.arange(len(X)), "x": X[:, 0], "y": X[:, 1],
                             "label": np.array(["a", "b", "c"])[np.arange(len(X)) % 3]}), path)
    model, cov = metrics.LocalCovariance(X, 0.5), metrics.Covariance(X)
    ds = ray.data.read_parquet(str(path))
    rows = geometry_columns(ds, model, ["x", "y"], covariance=cov, batch_size=256).to_pandas()
    rows = rows.sort_values("id")
    assert list(rows["id"]) == list(range(len(X)))
    np.testing.assert_array_equal(rows["scalar_curvature"].to_numpy(), model.scalar_curvature(X))
    np.testing.assert_array_equal(rows["mahalanobis"].to_numpy(), cov.mahalanobis(X))
    assert list(rows["label"][:3]) == ["a", "b", "c"]


def test_bad_columns_are_refused_before_running(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"x": np.zeros(3), "y": np.ones(3)}), path)
    ds = ray.data.read_parquet(str(path))
    model = metrics.Euclidean(2)
    with pytest.raises(ValueError, match=r"columns \['z'\] are not in the dataset"):
        geometry_columns(ds, model, ["x", "z"])
    with pytest.raises(ValueError, match="must name 2 columns"):
        geometry_columns(ds, model, ["x"])
    with pytest.raises(TypeError, match="model must be"):
        geometry_columns(ds, "model", ["x", "y"])
