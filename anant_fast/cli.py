"""The ``anant-fast`` command line. ``anant-fast demo`` runs the main job on synthetic data."""
import argparse
import sys
import time

import numpy as np

from . import metrics


def sample_sphere_cloud(n, radius=1.0, noise=0.01, n_outliers=5, seed=0):
    """``n`` noisy points on a sphere of ``radius`` in R³, the last ``n_outliers`` of them planted
    far off it; returns ``(X (n, 3), outlier_indices)``."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    X *= radius / np.linalg.norm(X, axis=1, keepdims=True)
    X += noise * rng.normal(size=X.shape)
    planted = np.arange(n - n_outliers, n)
    X[planted] *= rng.uniform(3.0, 4.0, size=(n_outliers, 1))
    return X, planted


def demo(n=20000, sigma=0.05, rho=1e-3, seed=0, out=sys.stdout):
    """Fit a local covariance metric to a noisy sphere with planted outliers, compute its scalar
    curvature at every point and the Mahalanobis outliers; print a summary and return it as a dict."""
    timings = {}
    t = time.perf_counter()
    X, planted = sample_sphere_cloud(n, seed=seed)
    timings["sample"] = time.perf_counter() - t
    t = time.perf_counter()
    model = metrics.LocalCovariance(X, sigma, rho=rho)
    timings["fit LocalCovariance"] = time.perf_counter() - t
    t = time.perf_counter()  # first calls compile (or load from Numba's on-disk cache)
    model.scalar_curvature(X[:2])
    metrics.Covariance(X[:10]).outliers()
    timings["compile / load kernels"] = time.perf_counter() - t
    t = time.perf_counter()
    S = model.scalar_curvature(X)
    timings["scalar curvature"] = time.perf_counter() - t
    t = time.perf_counter()
    found = metrics.Covariance(X).outliers(z=3.0)
    timings["Mahalanobis outliers"] = time.perf_counter() - t
    hit = np.intersect1d(found, planted)
    print(f"anant-fast demo: {n} points on a noisy unit sphere in R^3, {len(planted)} planted outliers",
          file=out)
    print(f"model: {model!r}, cutoff {model.cutoff:.3g}", file=out)
    for name, seconds in timings.items():
        print(f"  {name:<22s} {seconds * 1e3:9.1f} ms", file=out)
    q = np.percentile(S, [0, 5, 50, 95, 100])
    print("scalar curvature: min {:.4g}  p5 {:.4g}  median {:.4g}  p95 {:.4g}  max {:.4g}".format(*q), file=out)
    print(f"outliers flagged (z > 3): {len(found)}; planted found: {len(hit)}/{len(planted)} "
          f"{hit.tolist()}", file=out)
    return {"timings": timings, "scalar_curvature": S, "outliers": found, "planted": planted}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="anant-fast", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="curvature and outliers of a synthetic point cloud")
    p.add_argument("--n", type=int, default=20000, help="number of points (default 20000)")
    p.add_argument("--sigma", type=float, default=0.05, help="kernel width of the local metric")
    p.add_argument("--rho", type=float, default=1e-3, help="regularisation of the local metric")
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 10:
        parser.error("--n must be at least 10")
    demo(n=args.n, sigma=args.sigma, rho=args.rho, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
