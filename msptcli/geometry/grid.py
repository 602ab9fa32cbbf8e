"""A structured grid around a body: the volume prediction that ParaView can slice, contour and trace.

The volume points of ``mspt predict`` are scattered (a volume mesh's, or the checkpoint's template placed around
the body, ``data/template.py``), written as vertex cells: ParaView's Slice, Contour and Stream Tracer need cells.
The grid is a ``pyvista.ImageData`` (``.vti``) over the box the training volumes covered: the template's bounding
box placed on the body's box as :func:`~msptcli.data.template.place_template` places its points (without a
template, the body's box grown by ``MARGIN`` times its size on every side, the box of
:func:`~msptcli.geometry.sampling.sample_points_around`).

Grid points inside the body are not predicted. They carry ``vtkValidPointMask`` 0 (1 in the fluid: the name and
meaning of the mask VTK's probe filter writes) and every field 0. Measured with ParaView 5.11 on a sphere in
potential flow: NaN there makes the Stream Tracer integrate NaN positions, and the Stream Tracer ignores the
mask; with 0 (the no-slip velocity) a streamline stops at the body. The file has no active scalars: ParaView
5.11's Slice of an image whose active scalars are a vector returns garbage values. ``io/meshes.py::write_mesh``
writes it (``.vti``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from msptcli.errors import InvalidInputError, OptionError
from msptcli.geometry.sampling import outside_body

if TYPE_CHECKING:
    import pyvista as pv

#: Grid points of ``--volume-grid auto``: cells about cubic over the box, this many points in all.
AUTO_POINTS = 200_000
#: The most grid points asked for (50M points of a few fields take several GB to predict and write).
MAX_POINTS = 50_000_000
#: Without a template, the box is the body's grown by this times its size on every side.
MARGIN = 0.5
#: The point array that tells the fluid (1) from the body (0).
MASK = "vtkValidPointMask"

#: A grid's points per axis, or "auto" (:func:`grid_dimensions`).
GridSize = tuple[int, int, int] | Literal["auto"]

_FORM = "give NX,NY,NZ (whole numbers >= 2, e.g. 96,48,48), auto or off"


def parse_grid_size(text: str) -> GridSize | None:
    """``--volume-grid``: "NX,NY,NZ" -> (NX, NY, NZ); "auto" -> "auto"; "off" or "0" -> None (no grid).

    Raises:
        OptionError: anything else, a count below 2, more than ``MAX_POINTS`` points.
    """
    value = text.strip().lower()
    if value in ("off", "0"):
        return None
    if value == "auto":
        return "auto"
    parts = value.split(",")
    if len(parts) != 3 or not all(p.strip().isascii() and p.strip().isdigit() for p in parts):
        raise OptionError(f"--volume-grid {text!r} is not a grid size: {_FORM}")
    size = (int(parts[0]), int(parts[1]), int(parts[2]))
    if min(size) < 2:
        raise OptionError(f"--volume-grid {text}: every axis needs at least 2 points; {_FORM}")
    total = size[0] * size[1] * size[2]
    if total > MAX_POINTS:
        raise OptionError(f"--volume-grid {text} is {total:,} points, more than {MAX_POINTS:,}: ask for a coarser grid")
    return size


def grid_box(body: np.ndarray, template: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The box (low (3,), high (3,)) the grid spans around the body's points ``body`` (n, 3): the bounding box of
    ``template`` (M, 3, relative to the body's box, ``data/template.py``) placed on the body's box, or without one
    the body's box grown by ``MARGIN`` times its size on every side."""
    points = np.asarray(body, dtype=np.float64)
    lo, size = points.min(axis=0), np.ptp(points, axis=0)
    if template is None or not len(template):
        return lo - MARGIN * size, lo + (1 + MARGIN) * size
    t = np.asarray(template, dtype=np.float64)
    return lo + t.min(axis=0) * size, lo + t.max(axis=0) * size


def grid_dimensions(low: np.ndarray, high: np.ndarray, size: GridSize) -> tuple[int, int, int]:
    """Points per axis: ``size`` itself, or for "auto" about ``AUTO_POINTS`` points with about cubic cells of edge
    ``h = (volume / AUTO_POINTS)^(1/3)`` (an axis ``L`` long gets ``round(L / h) + 1`` points, at least 2)."""
    if size != "auto":
        return size
    extent = np.maximum(np.asarray(high, dtype=np.float64) - np.asarray(low, dtype=np.float64), 0.0)
    positive = extent[extent > 0]
    h = float(np.prod(positive) / AUTO_POINTS) ** (1.0 / len(positive)) if len(positive) else 1.0
    nx, ny, nz = (max(2, round(e / h) + 1) for e in extent)
    return nx, ny, nz


def body_grid(
    surface: pv.DataSet, size: GridSize, template: np.ndarray | None = None
) -> tuple[pv.ImageData, np.ndarray]:
    """The grid around the closed body ``surface`` (:func:`grid_box`, :func:`grid_dimensions`) and which of its
    points lie in the fluid: ``(N,)`` bool in VTK's point order (x fastest), N = nx * ny * nz."""
    import pyvista as pv

    low, high = grid_box(np.asarray(surface.points), template)
    dims = grid_dimensions(low, high, size)
    if not (np.isfinite(low).all() and np.isfinite(high).all() and (high > low).all()):
        raise InvalidInputError(
            "the body has no extent along some axis: no volume grid fits around it; drop --volume-grid"
        )
    spacing = (high - low) / (np.asarray(dims) - 1)
    grid = pv.ImageData(dimensions=dims, spacing=tuple(spacing), origin=tuple(low))
    return grid, outside_body(np.asarray(grid.points, dtype=np.float64), surface)


def fill_grid(grid: pv.ImageData, fluid: np.ndarray, fields: dict[str, np.ndarray]) -> pv.ImageData:
    """Store ``fields`` (name -> (m,) or (m, k) values at the ``m = fluid.sum()`` fluid points, in grid order) on
    ``grid``, 0 at the points in the body, and the mask ``MASK`` (uint8: 1 fluid, 0 body); no active scalars."""
    n = grid.n_points
    if fluid.shape != (n,):
        raise InvalidInputError(f"the fluid mask has shape {fluid.shape}, the grid {n} points")
    for name, values in fields.items():
        full = np.zeros((n, *values.shape[1:]), dtype=np.float32)
        full[fluid] = values
        grid.point_data[name] = full
    grid.point_data[MASK] = fluid.astype(np.uint8)
    grid.point_data.active_scalars_name = None
    return grid


def rescaled(grid: pv.ImageData, factor: float) -> pv.ImageData:
    """``grid`` with its origin and spacing divided by ``factor`` (back to the input's units after ``--scale``)."""
    if factor != 1.0:
        grid.origin = tuple(np.asarray(grid.origin, dtype=np.float64) / factor)
        grid.spacing = tuple(np.asarray(grid.spacing, dtype=np.float64) / factor)
    return grid


def grid_summary(grid: pv.ImageData, path: Path) -> dict[str, Any]:
    """The ``volume_grid`` of predict's JSON: the file, the points per axis, origin and spacing, the fluid points."""
    return {
        "file": path.name,
        "dimensions": [int(d) for d in grid.dimensions],
        "origin": [float(x) for x in grid.origin],
        "spacing": [float(x) for x in grid.spacing],
        "points": int(grid.n_points),
        "fluid_points": int(np.count_nonzero(grid.point_data[MASK])),
        "mask": f"{MASK}: 1 in the fluid, 0 in the body (the fields are 0 there)",
    }
