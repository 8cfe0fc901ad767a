"""A point-wise computation prepared at the boundary: the unit that runs in one process or sharded.

A method such as ``model.scalar_curvature(Q)`` is three steps: validate and prepare the inputs, run a
compiled kernel over the points, turn the kernel's outputs into the result (drop the axis of a single
point, warn about failed pairs). ``Plan`` holds them apart, so that the Ray layer can run the middle
step on contiguous ranges of the points in separate tasks, with the very same kernel call, and the
first and last steps once on the driver (STUMPY's ``stump`` / ``stumped`` split).
"""
from dataclasses import dataclass, replace
from typing import Any, Callable


@dataclass(frozen=True)
class Plan:
    """``compute(shared, *rows, **options)`` is a module-level function returning a tuple of arrays.

    ``rows``: arrays split across shards along their entry in ``axes`` (default 0 for all; an entry
    ``None``, or a row that is ``None``, is passed whole). The outputs are joined along ``out_axes``
    (default 0 for all). Every contiguous split of the rows gives the same outputs, bit for bit: the
    kernels compute each point on its own. ``finish(outputs)`` turns the joined outputs into the
    caller's result. ``owner`` is the object whose lifetime bounds ``shared`` (the model): the Ray
    layer keeps ``shared`` in its object store while ``owner`` lives. ``offset`` names a keyword of
    ``compute`` that receives the index of the first point of the rows it gets (0 in one process):
    counter-based random draws keyed by the global point index. ``targets``: where ``compute`` can
    run; a plan for ``"cuda"`` has ``options["target"] == "cuda"`` (see ``on``).
    """
    compute: Callable
    shared: Any
    rows: tuple
    options: dict
    finish: Callable
    axes: tuple = None
    out_axes: tuple = None
    owner: Any = None
    offset: str = None
    targets: tuple = ("cpu",)

    def __post_init__(self):
        if self.axes is not None and len(self.axes) != len(self.rows):
            raise ValueError("a plan needs one entry of axes per row")

    def run(self):
        """The result, computed in this process."""
        options = self.options if self.offset is None else dict(self.options, **{self.offset: 0})
        return self.finish(self.compute(self.shared, *self.rows, **options))

    def on(self, target):
        """The same plan for ``target`` (``"cpu"`` or ``"cuda"``), without checking that this process
        could run it there (the Ray layer runs it on cluster nodes that can)."""
        require(target, self.targets)
        options = {k: v for k, v in self.options.items() if k != "target"}
        return replace(self, options=options if target == "cpu" else dict(options, target=target))

    def split_axes(self):
        """The split axis of every row (None: passed whole)."""
        axes = self.axes if self.axes is not None else (0,) * len(self.rows)
        return tuple(None if row is None else axis for row, axis in zip(self.rows, axes))

    @property
    def n_points(self):
        """The number of points (the length of the split axis)."""
        for row, axis in zip(self.rows, self.split_axes()):
            if axis is not None:
                return row.shape[axis]
        raise ValueError("a plan needs at least one split row")


def require(target, targets):
    """A ValueError unless ``target`` is one of ``targets`` (where a computation has kernels)."""
    if target not in targets:
        raise ValueError(f"this computation has no {target!r} kernel; CUDA runs christoffel, "
                         "ricci, scalar/sectional curvature, mahalanobis, and exp/geodesic with "
                         "fixed steps=")
