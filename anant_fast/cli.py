"""The ``anant-fast`` command line.

``anant-fast analyze INPUT --out OUT`` fits a metric to the points of a ``.npy``, ``.csv`` or
``.parquet`` file, computes the scalar curvature at every point, Mahalanobis distances, z-scores and
outlier flags, sharded over Ray (an embedded local Ray, or a cluster by ``--address``), and writes a
Parquet or ``.npz`` table with a JSON summary. ``anant-fast demo`` runs the same pipeline on a
synthetic noisy sphere with planted outliers.
"""
import argparse
import importlib
import importlib.util
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import metrics
from .analysis import (AUTO_SIGMA_FACTOR, AnalysisError, atomic_paths, auto_sigma, check_column_names,
                       check_output, plot_points, read_points, require, result_columns, write_json,
                       write_table, zscore_outliers)

MODELS = {"local-covariance": metrics.LocalCovariance, "local-diagonal": metrics.LocalDiagonal,
          "covariance": metrics.Covariance}
DEFAULT_RHO = 1e-3
RAY_MISSING_NOTE = ("anant-fast: note: Ray is not installed, running in-process "
                    "(pip install 'anant-fast[ray]' to shard over Ray)")


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


# ---------------------------------------------------------------------------------------------
# Where the point-wise work runs
# ---------------------------------------------------------------------------------------------

class InProcess:
    """Every step in this process: ``model.scalar_curvature`` and ``metrics.Covariance``."""

    def describe(self):
        return {"mode": "in-process"}

    def scalar_curvature(self, model, X):
        """``(N,)`` scalar curvature of ``model`` at ``X (N, d)``."""
        return model.scalar_curvature(X)

    def mahalanobis_outliers(self, X, z):
        """Mahalanobis distances ``(N,)`` of the rows of ``X (N, d)`` and the indices of the outliers
        at z-score ``z`` (as ``Covariance(X).outliers(z=z)``)."""
        distances = metrics.Covariance(X).mahalanobis(X)
        return distances, zscore_outliers(distances, z)


class Sharded:
    """The point-wise steps as Ray tasks (``anant_fast.distributed``): the same numbers, bit for bit."""

    def __init__(self, dist, status, address, shards, progress, started=True):
        self.dist, self.shards, self.progress = dist, shards, progress
        joined = address or ("embedded" if started else "already running")
        self.info = {"mode": "ray", "address": joined, "cluster": status["address"],
                     "nodes": status["nodes"], "cpus": status["cpus"],
                     "shards": shards or max(1, int(status["cpus"]))}

    def describe(self):
        return dict(self.info)

    def scalar_curvature(self, model, X):
        return self.dist.scalar_curvature(model, X, shards=self.shards, progress=self.progress)

    def mahalanobis_outliers(self, X, z):
        found = self.dist.mahalanobis_outliers(X, z=z, shards=self.shards, progress=self.progress)
        return found.distances, found.indices


@contextmanager
def executor(use_ray=True, address=None, shards=None, progress=True, err=None):
    """An ``InProcess`` or ``Sharded`` runner. With Ray: joins ``address`` (None: an embedded local
    Ray, or the Ray this process already runs) and on exit stops only a Ray it started. Without Ray
    installed: in-process, with a note on ``err`` (default stderr; an error if ``address`` was
    given)."""
    if not use_ray:
        yield InProcess()
        return
    try:
        dist = importlib.import_module("anant_fast.distributed")
    except ImportError:
        if importlib.util.find_spec("ray") is not None:
            raise  # Ray is there: the Ray layer itself failed to import
        if address is not None:
            raise AnalysisError("--address needs Ray: pip install 'anant-fast[ray]'") from None
        print(RAY_MISSING_NOTE, file=err or sys.stderr)
        yield InProcess()
        return
    import ray
    started = not ray.is_initialized()
    status = dist.connect(address, **({"include_dashboard": False} if address is None else {}))
    try:
        yield Sharded(dist, status, address, shards, progress, started)
    finally:
        if started:
            dist.shutdown()


# ---------------------------------------------------------------------------------------------
# The pipeline
# ---------------------------------------------------------------------------------------------

class Stopwatch(dict):
    """``{step: seconds}``; ``with watch("step"):`` times one step."""

    @contextmanager
    def __call__(self, step):
        t = time.perf_counter()
        yield
        self[step] = time.perf_counter() - t


def _fit(X, metric, sigma, rho):
    """The metric model ``metric`` (a key of ``MODELS``) fitted to ``X (N, d)``; the local ones with
    kernel width ``sigma`` and regularisation ``rho``."""
    if metric == "covariance":
        return MODELS[metric](X)
    return MODELS[metric](X, sigma, rho=rho)


def run_analysis(X, runner, metric="local-covariance", sigma=None, rho=None, z=3.0, timings=None):
    """Scalar curvature and Mahalanobis outliers of the points ``X (N, d)``, the point-wise steps on
    ``runner``. ``sigma=None`` chooses it (``auto_sigma``) for the local metrics. Returns a dict:
    ``model``, ``sigma`` and ``sigma_source``, ``rho``, ``z``, ``scalar_curvature (N,)``,
    ``mahalanobis (N,)``, ``mahalanobis_outliers`` and ``curvature_outliers`` (indices),
    ``execution`` (the runner's description) and ``timings`` (seconds per step, after those of
    ``timings`` when given)."""
    if metric not in MODELS:
        raise AnalysisError(f"--metric must be one of {', '.join(MODELS)}, got {metric!r}")
    local = metric != "covariance"
    if not local and (sigma is not None or rho is not None):
        raise AnalysisError("--sigma and --rho apply to the local metrics only, not to covariance")
    rho = (DEFAULT_RHO if rho is None else rho) if local else None
    source = "given" if sigma is not None else (f"automatic ({AUTO_SIGMA_FACTOR:g} x median "
                                                "nearest-neighbour distance)" if local else None)
    watch = Stopwatch(timings or {})
    if local and sigma is None:
        with watch("choose sigma"):
            sigma = auto_sigma(X)
    with watch(f"fit {MODELS[metric].__name__}"):
        model = _fit(X, metric, sigma, rho)
    with watch("compile / load kernels"):  # first calls compile, or load from Numba's disk cache
        model.scalar_curvature(X[:2])
        metrics.Covariance(X[:10]).outliers()
    with watch("scalar curvature"):
        curvature = runner.scalar_curvature(model, X)
    with watch("Mahalanobis outliers"):
        distances, mahalanobis_outliers = runner.mahalanobis_outliers(X, z)
    return {"model": model, "sigma": sigma, "sigma_source": source, "rho": rho, "z": z,
            "scalar_curvature": curvature, "mahalanobis": distances,
            "mahalanobis_outliers": mahalanobis_outliers,
            "curvature_outliers": zscore_outliers(curvature, z),
            "execution": runner.describe(), "timings": dict(watch)}


def summary_of(result, metric, n, d, extra=()):
    """The JSON summary of a ``run_analysis`` result on ``n`` points of dimension ``d``."""
    S = result["scalar_curvature"]
    finite = S[np.isfinite(S)]
    quantiles = np.percentile(finite, [0, 5, 50, 95, 100]) if len(finite) else [None] * 5
    m_idx, c_idx = result["mahalanobis_outliers"], result["curvature_outliers"]
    return {
        **dict(extra),
        "counts": {"points": n, "dim": d, "mahalanobis_outliers": len(m_idx),
                   "curvature_outliers": len(c_idx), "either": len(np.union1d(m_idx, c_idx)),
                   "non_finite_curvature": int(n - len(finite))},
        "metric": metric, "model": repr(result["model"]), "sigma": result["sigma"],
        "sigma_source": result["sigma_source"], "rho": result["rho"], "z": result["z"],
        "scalar_curvature": dict(zip(["min", "p5", "median", "p95", "max"],
                                     [None if q is None else float(q) for q in quantiles])),
        "mahalanobis_outliers": [int(i) for i in m_idx],
        "curvature_outliers": [int(i) for i in c_idx],
        "execution": result["execution"],
        "timings_s": {step: round(seconds, 6) for step, seconds in result["timings"].items()},
    }


def write_outputs(out, summary_path, plot_path, X, names, result, summary, title=""):
    """Write the result table ``out`` (``.parquet`` or ``.npz``), the JSON ``summary`` at
    ``summary_path`` and, if ``plot_path``, the PNG: each file completely or not at all, all of them
    or none."""
    columns = result_columns(X, names, result["scalar_curvature"], result["mahalanobis"],
                             result["mahalanobis_outliers"], result["curvature_outliers"])
    targets = [out, summary_path] + ([plot_path] if plot_path else [])
    with atomic_paths(*targets) as temps:
        write_table(temps[0], columns, out.suffix.lower())
        write_json(temps[1], summary)
        if plot_path:
            plot_points(temps[2], X, names, columns["scalar_curvature"], columns["mahalanobis_outlier"],
                        columns["curvature_outlier"], title=title)


def print_report(result, out):
    """The model, where it ran, step timings, curvature quantiles and outlier counts."""
    model, execution = result["model"], result["execution"]
    sigma = "" if result["sigma"] is None else f", sigma {result['sigma']:.4g} ({result['sigma_source']})"
    cutoff = f", cutoff {model.cutoff:.3g}" if hasattr(model, "cutoff") else ""
    print(f"model: {model!r}{cutoff}{sigma}", file=out)
    if execution["mode"] == "ray":
        print(f"execution: Ray, {execution['address']} cluster at {execution['cluster']}, "
              f"{execution['nodes']} node(s), {execution['cpus']:g} CPUs, {execution['shards']} shards",
              file=out)
    else:
        print("execution: in-process", file=out)
    for name, seconds in result["timings"].items():
        print(f"  {name:<22s} {seconds * 1e3:9.1f} ms", file=out)
    S = result["scalar_curvature"]
    finite = S[np.isfinite(S)]
    if len(finite):
        q = np.percentile(finite, [0, 5, 50, 95, 100])
        print("scalar curvature: min {:.4g}  p5 {:.4g}  median {:.4g}  p95 {:.4g}  max {:.4g}".format(*q),
              file=out)
    print(f"curvature outliers (|z| > {result['z']:g}): {len(result['curvature_outliers'])} "
          f"{_first(result['curvature_outliers'])}", file=out)


def _first(indices, k=10):
    shown = [int(i) for i in indices[:k]]
    return f"{shown}" + (" ..." if len(indices) > k else "")


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

def check_outputs(out, summary=None, plot=None):
    """The output paths checked before any work (``analysis.check_output``): ``(out, summary,
    plot)`` as Paths; ``summary`` defaults to ``out`` with suffix ``.json``; ``plot`` may be None."""
    out = check_output(out)
    summary = check_output(out.with_suffix(".json") if summary is None else summary, "--summary", (".json",))
    plot = None if plot is None else check_output(plot, "--plot", (".png",))
    if plot is not None:
        require("matplotlib", "--plot")
    paths = [p for p in (out, summary, plot) if p is not None]
    if len({p.resolve() for p in paths}) < len(paths):
        raise AnalysisError("--out, --summary and --plot must name different files")
    return out, summary, plot


def demo(n=20000, sigma=0.05, rho=1e-3, seed=0, out=None, use_ray=True, address=None,
         shards=None, progress=True, results=None, summary_path=None, plot_path=None):
    """Fit a local covariance metric to a noisy sphere with planted outliers, compute its scalar
    curvature at every point and the Mahalanobis outliers (the ``analyze`` pipeline, over Ray when it
    is installed unless ``use_ray=False``); print a summary and return it as a dict with
    ``timings``, ``scalar_curvature (n,)``, ``outliers`` (Mahalanobis), ``planted`` and the rest of
    ``run_analysis``'s result. With ``results`` (a ``.parquet`` or ``.npz`` path) also write the
    table, the summary and the optional plot, as ``analyze`` does. ``out``: default stdout."""
    out = out or sys.stdout
    if results is not None:
        results, summary_path, plot_path = check_outputs(results, summary_path, plot_path)
    timings = Stopwatch()
    with timings("sample"):
        X, planted = sample_sphere_cloud(n, seed=seed)
    with executor(use_ray, address, shards, progress) as runner:
        result = run_analysis(X, runner, "local-covariance", sigma, rho, 3.0, timings)
    found = result["mahalanobis_outliers"]
    hit = np.intersect1d(found, planted)
    print(f"anant-fast demo: {n} points on a noisy unit sphere in R^3, {len(planted)} planted outliers",
          file=out)
    print_report(result, out)
    print(f"outliers flagged (z > 3): {len(found)}; planted found: {len(hit)}/{len(planted)} "
          f"{hit.tolist()}", file=out)
    if results is not None:
        names = ["x", "y", "z"]
        summary = summary_of(result, "local-covariance", n, 3,
                             {"input": f"demo: sample_sphere_cloud(n={n}, seed={seed})",
                              "columns": names, "planted": planted.tolist(), "output": str(results)})
        write_outputs(results, summary_path, plot_path, X, names, result, summary, title="anant-fast demo")
        _print_written(results, summary_path, plot_path, out)
    return {**result, "outliers": found, "planted": planted}


def analyze(input_path, out_path, columns=None, metric="local-covariance", sigma=None, rho=None, z=3.0,
            use_ray=True, address=None, shards=None, progress=True, summary_path=None, plot_path=None,
            out=None):
    """The ``analyze`` command: read the points of ``input_path`` (``analysis.read_points``), run
    ``run_analysis``, write the table ``out_path``, the summary (default: ``out_path`` with suffix
    ``.json``) and the optional plot, print a report on ``out`` (default stdout). Returns the
    summary dict."""
    out = out or sys.stdout
    out_path, summary_path, plot_path = check_outputs(out_path, summary_path, plot_path)
    timings = Stopwatch()
    with timings("read input"):
        X, names = read_points(input_path, columns)
    check_column_names(names)
    with executor(use_ray, address, shards, progress) as runner:
        result = run_analysis(X, runner, metric, sigma, rho, z, timings)
    summary = summary_of(result, metric, len(X), X.shape[1],
                         {"input": str(input_path), "columns": names, "output": str(out_path)})
    write_outputs(out_path, summary_path, plot_path, X, names, result, summary,
                  title=f"{Path(input_path).name}: scalar curvature ({metric})")
    print(f"anant-fast analyze: {len(X)} points, {X.shape[1]} columns ({', '.join(names)}) "
          f"from {input_path}", file=out)
    print_report(result, out)
    print(f"Mahalanobis outliers (|z| > {z:g}): {len(result['mahalanobis_outliers'])} "
          f"{_first(result['mahalanobis_outliers'])}", file=out)
    _print_written(out_path, summary_path, plot_path, out)
    return summary


def _print_written(results, summary_path, plot_path, out):
    written = [p for p in (results, summary_path, plot_path) if p is not None]
    print("wrote " + ", ".join(str(p) for p in written), file=out)


def _run_options(args):
    """The ``executor`` keywords of the parsed arguments."""
    if args.no_ray and args.address:
        raise AnalysisError("--address needs Ray: drop --no-ray")
    return {"use_ray": not args.no_ray, "address": args.address, "shards": args.shards,
            "progress": not args.no_progress}


def _analyze_command(args):
    analyze(args.input, args.out, args.columns, args.metric, args.sigma, args.rho, args.z,
            summary_path=args.summary, plot_path=args.plot, **_run_options(args))


def _demo_command(args):
    if (args.summary or args.plot) and not args.out:
        raise AnalysisError("--summary and --plot need --out")
    demo(n=args.n, sigma=args.sigma, rho=args.rho, seed=args.seed, results=args.out,
         summary_path=args.summary, plot_path=args.plot, **_run_options(args))


def _positive(kind):
    """An argparse type: a positive, finite ``kind`` (int or float)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not (value > 0 and np.isfinite(value)):
            raise argparse.ArgumentTypeError(f"must be positive and finite, got {text!r}")
        return value
    return parse


def _add_run_options(p):
    """Output files beside the table, and where the work runs."""
    p.add_argument("--summary", metavar="PATH", help="JSON summary (default: OUT with suffix .json)")
    p.add_argument("--plot", metavar="FILE.png", help="plot of the points coloured by curvature, "
                   "outliers marked (needs the plot extra: pip install 'anant-fast[plot]')")
    p.add_argument("--address", help="join this Ray cluster ('auto', 'host:port', 'ray://host:port'); "
                   "default: an embedded local Ray")
    p.add_argument("--shards", type=_positive(int), help="Ray tasks per step (default: one per CPU)")
    p.add_argument("--no-ray", action="store_true", help="run in this process, without Ray")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def build_parser():
    """The ``anant-fast`` argument parser (subcommands ``analyze`` and ``demo``)."""
    parser = argparse.ArgumentParser(prog="anant-fast", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("analyze", help="curvature and outliers of the points of a data file")
    p.add_argument("input", metavar="INPUT", help="points: .npy (N, d), .csv with a header row, or .parquet")
    p.add_argument("--out", required=True, metavar="OUT", help="results: .parquet or .npz")
    p.add_argument("--columns", help="comma-separated column names or 0-based positions "
                   "(default: every numeric column; .npy columns are x0, x1, ...)")
    p.add_argument("--metric", choices=list(MODELS), default="local-covariance",
                   help="metric model (default local-covariance)")
    p.add_argument("--sigma", type=_positive(float), help="kernel width of a local metric (default: "
                   f"{AUTO_SIGMA_FACTOR:g} x the median nearest-neighbour distance)")
    p.add_argument("--rho", type=_positive(float),
                   help=f"regularisation of a local metric (default {DEFAULT_RHO:g})")
    p.add_argument("--z", type=_positive(float), default=3.0, help="outlier z-score threshold (default 3)")
    _add_run_options(p)
    p.set_defaults(handler=_analyze_command)

    p = sub.add_parser("demo", help="the analyze pipeline on a synthetic point cloud")
    p.add_argument("--n", type=int, default=20000, help="number of points (default 20000)")
    p.add_argument("--sigma", type=_positive(float), default=0.05, help="kernel width of the local metric")
    p.add_argument("--rho", type=_positive(float), default=DEFAULT_RHO,
                   help="regularisation of the local metric")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", metavar="OUT", help="also write the results (.parquet or .npz)")
    _add_run_options(p)
    p.set_defaults(handler=_demo_command)
    return parser


def main(argv=None):
    """Entry point of ``anant-fast``; returns the exit code (0; 1 on an error; 2 on bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo" and args.n < 10:
        parser.error("--n must be at least 10")
    try:
        args.handler(args)
    except (ValueError, OSError) as exc:  # AnalysisError, the models' validation, files, connections
        print(f"anant-fast: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("anant-fast: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
