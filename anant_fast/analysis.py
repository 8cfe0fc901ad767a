"""Pure helpers of the ``anant-fast analyze`` job: reading points, an automatic kernel width,
z-scores, the result table, a plot, and files written completely or not at all.

No Ray here (only the CLI imports the Ray layer). User-facing problems raise ``AnalysisError`` with
a one-line message naming the file, column or argument at fault.
"""
import csv
import json
import os
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .kernels.covariance import zscore_outliers

__all__ = ["AUTO_SIGMA_FACTOR", "INPUT_SUFFIXES", "OUTPUT_SUFFIXES", "AnalysisError", "atomic_paths",
           "auto_sigma", "check_column_names", "check_output", "plot_points", "project_2d",
           "read_points", "require", "result_columns", "write_json", "write_table", "zscore_outliers",
           "zscores"]

INPUT_SUFFIXES = (".npy", ".csv", ".parquet")
OUTPUT_SUFFIXES = (".parquet", ".npz")
AUTO_SIGMA_FACTOR = 4.0
"""Automatic kernel width: this many times the median nearest-neighbour distance (a few dozen
neighbours within one width for data of intrinsic dimension 2)."""
RESULT_COLUMNS = ("scalar_curvature", "mahalanobis", "mahalanobis_z", "curvature_z",
                  "mahalanobis_outlier", "curvature_outlier")

_EXTRAS = {"pyarrow": "pip install pyarrow (or 'anant-fast[ray]', which brings it)",
           "matplotlib": "pip install 'anant-fast[plot]'"}


class AnalysisError(ValueError):
    """A problem with the user's input, output or arguments; its message is one line."""


def require(module, purpose):
    """Import and return ``module`` (``"pyarrow"`` or ``"matplotlib"``), or raise an
    ``AnalysisError`` saying that ``purpose`` needs it and how to install it."""
    try:
        return __import__(module)
    except ImportError:
        raise AnalysisError(f"{purpose} needs {module}: {_EXTRAS[module]}") from None


# ---------------------------------------------------------------------------------------------
# Reading points
# ---------------------------------------------------------------------------------------------

class _NpyTable:
    """A 1-D ``(N,)`` or 2-D ``(N, d)`` real array; its columns are named ``x0 .. x{d-1}``."""

    def __init__(self, path):
        try:
            a = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise AnalysisError(f"{path}: not a readable .npy array ({_one_line(exc)})") from None
        if a.ndim not in (1, 2):
            raise AnalysisError(f"{path}: the array must have shape (N, d), got {a.shape}")
        if a.dtype.kind not in "iuf":
            raise AnalysisError(f"{path}: the array holds non-numeric data (dtype {a.dtype})")
        self.array = a.reshape(len(a), -1)
        self.names = [f"x{j}" for j in range(self.array.shape[1])]

    def is_numeric(self, name):
        return True

    def column(self, name):
        return self.array[:, self.names.index(name)].astype(np.float64)


class _CsvTable:
    """A comma-separated file with a header row. Empty cells read as NaN (and are then refused)."""

    def __init__(self, path):
        try:
            with open(path, newline="", encoding="utf-8") as f:
                lines = [(i, row) for i, row in enumerate(csv.reader(f), start=1)
                         if any(cell.strip() for cell in row)]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise AnalysisError(f"{path}: not a readable CSV file ({_one_line(exc)})") from None
        if not lines:
            raise AnalysisError(f"{path}: the CSV file is empty (expected a header row)")
        self.names = [name.strip() for name in lines[0][1]]
        _check_names(path, self.names)
        for line, row in lines[1:]:
            if len(row) != len(self.names):
                raise AnalysisError(f"{path}: line {line} has {len(row)} fields, the header has "
                                    f"{len(self.names)}")
        self.cells = np.char.strip(np.array([row for _, row in lines[1:]], dtype=str)
                                   .reshape(len(lines) - 1, len(self.names)))
        self.path = path
        self._parsed = {}

    def _parse(self, name):
        """The column as float64 (empty cells NaN), or None if a cell is not a number."""
        if name not in self._parsed:
            cells = self.cells[:, self.names.index(name)]
            try:
                self._parsed[name] = np.where(cells == "", "nan", cells).astype(np.float64)
            except ValueError:
                self._parsed[name] = None
        return self._parsed[name]

    def is_numeric(self, name):
        return self._parse(name) is not None

    def column(self, name):
        values = self._parse(name)
        if values is None:
            cells = self.cells[:, self.names.index(name)]
            row = next(r for r, cell in enumerate(cells) if not _is_number(cell))
            raise AnalysisError(f"{self.path}: column {name!r} is not numeric (data row {row}: "
                                f"{str(cells[row])!r})")
        return values


class _ParquetTable:
    """A Parquet file; integer and floating-point columns are numeric. Needs pyarrow."""

    def __init__(self, path):
        require("pyarrow", "reading Parquet")
        import pyarrow as pa
        import pyarrow.parquet as pq
        try:
            self.schema = pq.read_schema(path)
        except (pa.ArrowException, OSError) as exc:
            raise AnalysisError(f"{path}: not a readable Parquet file ({_one_line(exc)})") from None
        self.names = list(self.schema.names)
        _check_names(path, self.names)
        self.path, self._pa, self._pq = path, pa, pq

    def is_numeric(self, name):
        t = self.schema.field(name).type
        return self._pa.types.is_integer(t) or self._pa.types.is_floating(t)

    def column(self, name):
        if not self.is_numeric(name):
            raise AnalysisError(f"{self.path}: column {name!r} is not numeric "
                                f"(type {self.schema.field(name).type})")
        try:
            values = self._pq.read_table(self.path, columns=[name]).column(name)
        except (self._pa.ArrowException, OSError) as exc:
            raise AnalysisError(f"{self.path}: cannot read column {name!r} ({_one_line(exc)})") from None
        return values.to_numpy().astype(np.float64)  # nulls become NaN (refused later)


_TABLES = {".npy": _NpyTable, ".csv": _CsvTable, ".parquet": _ParquetTable}


def read_points(path, columns=None):
    """Points ``X (N, d)`` (float64, C-contiguous, finite, ``N >= 2``) and their column names
    (``d`` strings) from a ``.npy``, ``.csv`` (header row) or ``.parquet`` file.

    ``columns``: names (``.npy`` columns are ``x0, x1, ...``) or 0-based positions, as a list or a
    comma-separated string; default: every numeric column."""
    path = Path(path)
    table_type = _TABLES.get(path.suffix.lower())
    if table_type is None:
        raise AnalysisError(f"{path}: unknown input format {path.suffix or '(no suffix)'!r}; "
                            f"use one of {', '.join(INPUT_SUFFIXES)}")
    if not path.is_file():
        raise AnalysisError(f"{path}: no such file")
    table = table_type(path)
    names = _select(path, table, columns)
    X = np.ascontiguousarray(np.column_stack([table.column(name) for name in names]), dtype=np.float64)
    if len(X) < 2:
        raise AnalysisError(f"{path}: need at least 2 points, got {len(X)}")
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = np.unravel_index(int(np.argmax(bad)), X.shape)
        raise AnalysisError(f"{path}: NaN, inf or a missing value at data row {row} (counting from 0), "
                            f"column {names[col]!r}")
    return X, names


def _select(path, table, columns):
    """The names of the chosen columns: all numeric ones by default."""
    if columns is None:
        names = [name for name in table.names if table.is_numeric(name)]
        if not names:
            raise AnalysisError(f"{path}: no numeric columns")
        return names
    tokens = [t.strip() for t in columns.split(",")] if isinstance(columns, str) else list(columns)
    if not tokens or any(t == "" for t in tokens):
        raise AnalysisError(f"--columns must list column names separated by commas, got {columns!r}")
    names = [_resolve(path, table.names, str(t)) for t in tokens]
    if len(set(names)) != len(names):
        raise AnalysisError(f"--columns names a column twice: {columns!r}")
    return names


def _resolve(path, names, token):
    """The column named ``token``, or at position ``token``."""
    if token in names:
        return token
    if token.isdigit() and int(token) < len(names):
        return names[int(token)]
    shown = ", ".join(names[:20]) + (", ..." if len(names) > 20 else "")
    raise AnalysisError(f"{path}: no column {token!r} (columns: {shown})")


def _check_names(path, names):
    if any(name == "" for name in names):
        raise AnalysisError(f"{path}: a column has an empty name (column {names.index('')})")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise AnalysisError(f"{path}: duplicate column names {twice}")


def _is_number(cell):
    try:
        float(cell or "nan")
    except ValueError:
        return False
    return True


def _one_line(exc):
    return " ".join(str(exc).split())


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------

def auto_sigma(X, factor=AUTO_SIGMA_FACTOR, max_queries=100_000):
    """A kernel width for the local metrics of ``X (N, d)``: ``factor`` times the median distance
    from a point to its nearest distinct neighbour (duplicates count once; at most ``max_queries``
    evenly spaced points are queried, all are searched)."""
    from scipy.spatial import cKDTree
    distinct = np.unique(X, axis=0)
    if len(distinct) < 2:
        raise AnalysisError("cannot choose sigma automatically: all points are equal; give --sigma")
    step = max(1, -(-len(distinct) // max_queries))
    distances, _ = cKDTree(distinct).query(distinct[::step], k=2)
    return float(factor * np.median(distances[:, 1]))


def zscores(values):
    """``(values − mean) / std`` of ``values (N,)``; all zero when every value is equal (the rule of
    ``zscore_outliers``, which then flags none)."""
    std = values.std()
    if std == 0:
        return np.zeros_like(values)
    return (values - values.mean()) / std


def _mask(n, indices):
    flags = np.zeros(n, dtype=bool)
    flags[indices] = True
    return flags


def check_column_names(names):
    """Refuse input column ``names`` that are also names of result columns."""
    clash = sorted(set(names) & set(RESULT_COLUMNS))
    if clash:
        raise AnalysisError(f"input column names clash with result columns: {clash}; choose other "
                            "columns or rename them")


def result_columns(X, names, curvature, mahalanobis, mahalanobis_outliers, curvature_outliers):
    """The result table as ``{name: (N,) array}``: the coordinates ``X (N, d)`` under ``names``, then
    ``scalar_curvature``, ``mahalanobis``, their z-scores ``mahalanobis_z`` and ``curvature_z``, and
    the boolean flags ``mahalanobis_outlier`` and ``curvature_outlier`` (from the outlier indices)."""
    check_column_names(names)
    n = len(X)
    columns = {name: X[:, j] for j, name in enumerate(names)}
    columns.update(scalar_curvature=curvature, mahalanobis=mahalanobis,
                   mahalanobis_z=zscores(mahalanobis), curvature_z=zscores(curvature),
                   mahalanobis_outlier=_mask(n, mahalanobis_outliers),
                   curvature_outlier=_mask(n, curvature_outliers))
    return columns


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def check_output(path, what="--out", suffixes=OUTPUT_SUFFIXES):
    """``path`` as a Path after checking, before any work, that it can be written: a known suffix,
    an existing folder, pyarrow present for Parquet."""
    path = Path(path)
    if path.suffix.lower() not in suffixes:
        raise AnalysisError(f"{what} {path}: unknown output format {path.suffix or '(no suffix)'!r}; "
                            f"use one of {', '.join(suffixes)}")
    if not path.parent.is_dir():
        raise AnalysisError(f"{what} {path}: folder {path.parent} does not exist")
    if path.is_dir():
        raise AnalysisError(f"{what} {path} is a folder")
    if path.suffix.lower() == ".parquet":
        require("pyarrow", "writing Parquet")
    return path


@contextmanager
def atomic_paths(*paths):
    """Temporary paths in the folders of ``paths``, one each. Leaving the block normally moves each
    onto its target (``os.replace``); an exception removes them and leaves every target untouched."""
    temps = [p.with_name(f".{p.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part") for p in paths]
    try:
        yield temps
        for temp, path in zip(temps, paths):
            os.replace(temp, path)
    finally:
        for temp in temps:
            temp.unlink(missing_ok=True)


def write_table(path, columns, fmt):
    """Write ``columns`` (``{name: (N,) array}``) to ``path`` as ``fmt``: ``.parquet`` or ``.npz``."""
    if fmt == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.table(columns), path)
    else:
        with open(path, "wb") as f:
            np.savez(f, **columns)


def write_json(path, obj):
    """Write ``obj`` (dicts, lists, numbers, strings) to ``path`` as indented JSON."""
    Path(path).write_text(json.dumps(obj, indent=2, allow_nan=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Plot
# ---------------------------------------------------------------------------------------------

def project_2d(X, names):
    """Plane coordinates ``(N, 2)`` of ``X (N, d)`` and axis labels: the first two columns for
    ``d <= 2`` (a zero second axis for ``d = 1``), the two leading principal components for ``d > 2``."""
    n, d = X.shape
    if d == 1:
        return np.column_stack([X[:, 0], np.zeros(n)]), (names[0], "")
    if d == 2:
        return X, tuple(names)
    centred = X - X.mean(axis=0)
    variance, axes = np.linalg.eigh(centred.T @ centred)
    top = np.argsort(variance)[::-1][:2]
    share = variance[top] / max(variance.sum(), np.finfo(float).tiny)
    return centred @ axes[:, top], tuple(f"PC{k + 1} ({s:.0%} of variance)" for k, s in enumerate(share))


def plot_points(path, X, names, curvature, mahalanobis_flag, curvature_flag, title=""):
    """A PNG at ``path``: the points ``X (N, d)`` in the plane (``project_2d``) coloured by
    ``curvature (N,)`` (2nd to 98th percentile), Mahalanobis outliers ringed in red and curvature
    outliers crossed in black (flags ``(N,)`` bool). Needs matplotlib."""
    require("matplotlib", "--plot")
    from matplotlib.figure import Figure
    P, (xlabel, ylabel) = project_2d(X, names)
    finite = curvature[np.isfinite(curvature)]
    vmin, vmax = np.percentile(finite, [2, 98]) if len(finite) else (None, None)
    fig = Figure(figsize=(7.5, 6), layout="constrained")
    ax = fig.add_subplot()
    dots = ax.scatter(P[:, 0], P[:, 1], c=curvature, s=6, cmap="viridis", vmin=vmin, vmax=vmax)
    fig.colorbar(dots, ax=ax, label="scalar curvature")
    if mahalanobis_flag.any():
        ax.scatter(*P[mahalanobis_flag].T, s=60, facecolors="none", edgecolors="red",
                   label=f"Mahalanobis outliers ({mahalanobis_flag.sum()})")
    if curvature_flag.any():
        ax.scatter(*P[curvature_flag].T, s=30, marker="x", color="black",
                   label=f"curvature outliers ({curvature_flag.sum()})")
    if mahalanobis_flag.any() or curvature_flag.any():
        ax.legend(loc="best")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    fig.savefig(path, format="png", dpi=110)
