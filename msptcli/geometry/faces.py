"""A surface's faces: polygons parsed from a pyvista mesh, their triangle fans and plain per-cell quantities.

Every function takes a surface as pyvista reads it: the OpenFOAM ``surface.vtu`` (an
UnstructuredGrid of quads and polygons) or STL/OBJ/PLY PolyData such as ``geometry.stl``.
Cells must be triangles, quads or polygons; a polygon ``(v0, v1, ..., v_{k-1})`` is split
into the triangle fan ``(v0, v_j, v_{j+1})``, ``j = 1 .. k-2``, which keeps the file's
vertex order. Quantities here follow that order; ``orientation.py`` turns them outward.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from msptcli.errors import InvalidInputError

if TYPE_CHECKING:
    import pyvista as pv

__all__ = [
    "Faces",
    "cell_centers",
    "cell_sum",
    "check_points",
    "fan_triangles",
    "fan_triangulation",
    "merged_ids",
    "parse_faces",
    "point_to_cell_average",
    "polygon_area_vectors",
    "refined",
    "triangle_area_vectors",
    "unit_rows",
]

#: VTK cell types accepted as surface cells: triangle, polygon, quad.
_SURFACE_CELL_TYPES = (5, 7, 9)


class Faces(NamedTuple):
    """A surface's polygons: points ``(n, 3)`` float64, ``conn`` point ids, ``offsets`` ``(n_cells + 1,)``.

    Cell ``c`` is the polygon ``points[conn[offsets[c]:offsets[c + 1]]]``.
    """

    points: np.ndarray
    conn: np.ndarray
    offsets: np.ndarray

    @property
    def n_cells(self) -> int:
        return len(self.offsets) - 1


def parse_faces(surface: pv.DataSet) -> Faces:
    """The polygons of ``surface``, checked.

    Raises:
        InvalidInputError: not a pyvista mesh, no cells, cells that are not triangles/quads/polygons,
            cells of fewer than 3 points, non-finite points.
    """
    import pyvista as pv

    if not isinstance(surface, pv.DataSet):
        raise InvalidInputError(f"expected a pyvista mesh, got {type(surface).__name__}")
    grid = surface if isinstance(surface, pv.UnstructuredGrid) else surface.cast_to_unstructured_grid()
    if grid.n_cells == 0:
        raise InvalidInputError(
            f"the surface has no cells ({grid.n_points} points only): normals, areas and distances need its faces"
        )
    types = np.asarray(grid.celltypes)
    bad = ~np.isin(types, _SURFACE_CELL_TYPES)
    if bad.all():
        raise InvalidInputError(f"the surface has no faces: none of its {grid.n_cells} cells is a triangle or polygon")
    if bad.any():
        raise InvalidInputError(
            f"the surface has {int(bad.sum())} cells that are not triangles, quads or polygons "
            f"(cell {int(np.flatnonzero(bad)[0])} has VTK type {int(types[bad][0])}); "
            "pass a surface mesh, e.g. mesh.extract_surface().triangulate()"
        )
    points = np.asarray(grid.points, dtype=np.float64)
    finite = np.isfinite(points).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise InvalidInputError(f"surface point {i} has a non-finite coordinate {tuple(points[i])}")
    offsets = np.asarray(grid.cell_offsets, dtype=np.int64)
    if (np.diff(offsets) < 3).any():
        c = int(np.flatnonzero(np.diff(offsets) < 3)[0])
        raise InvalidInputError(f"surface cell {c} has fewer than 3 points")
    return Faces(points, np.asarray(grid.cell_connectivity, dtype=np.int64), offsets)


def check_points(points: np.ndarray) -> np.ndarray:
    """Query points as contiguous float64 ``(m, 3)``; raise :class:`InvalidInputError` on a bad shape or NaN."""
    x = np.asarray(points)
    if x.ndim != 2 or x.shape[1] != 3:
        raise InvalidInputError(f"points must have shape (m, 3), got {x.shape}")
    if x.dtype.kind not in "fiu":
        raise InvalidInputError(f"points have dtype {x.dtype}; coordinates must be real numbers")
    x = np.ascontiguousarray(x, dtype=np.float64)
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise InvalidInputError(f"point {i} has a non-finite coordinate {tuple(x[i])}")
    return x


# --- triangles --------------------------------------------------------------------------------------------


def fan_triangulation(faces: Faces) -> tuple[np.ndarray, np.ndarray]:
    """Fan triangles ``(T, 3)`` of the polygons, ``(v0, v_j, v_{j+1})``, and the cell of each ``(T,)``."""
    n_fan = np.diff(faces.offsets) - 2  # (C,) triangles per cell
    cell = np.repeat(np.arange(faces.n_cells), n_fan)  # (T,)
    first = faces.offsets[:-1][cell]  # position of v0 in conn
    j = np.arange(len(cell)) - np.repeat(np.cumsum(n_fan) - n_fan, n_fan) + 1  # 1 .. k-2
    tri = np.stack([faces.conn[first], faces.conn[first + j], faces.conn[first + j + 1]], axis=1)
    return tri, cell


def fan_triangles(surface: pv.DataSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split every cell of ``surface`` into a triangle fan, keeping the file's vertex order.

    Returns:
        points ``(n, 3)`` float64; triangles ``(T, 3)`` int64 point ids; cell ``(T,)`` int64,
        the cell each triangle comes from (a cell of ``k`` vertices gives ``k - 2`` triangles).

    Raises:
        InvalidInputError: as :func:`parse_faces`.
    """
    faces = parse_faces(surface)
    tri, cell = fan_triangulation(faces)
    return faces.points, tri, cell


def triangle_area_vectors(points: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Area vectors ``(T, 3)`` of triangles: ``(v1 - v0) x (v2 - v0) / 2``."""
    v0, v1, v2 = points[tri[:, 0]], points[tri[:, 1]], points[tri[:, 2]]
    return 0.5 * np.cross(v1 - v0, v2 - v0)


# --- per-cell quantities ------------------------------------------------------------------------------------


def polygon_area_vectors(surface: pv.DataSet) -> np.ndarray:
    """Area vector of every cell, ``(n_cells, 3)``, oriented by the file's vertex order (right-hand rule).

    ``a_c = sum over the cell's fan triangles (v0, v1, v2) of (v1 - v0) x (v2 - v0) / 2``;
    ``|a_c|`` is the cell's area.
    """
    faces = parse_faces(surface)
    tri, cell = fan_triangulation(faces)
    return cell_sum(triangle_area_vectors(faces.points, tri), cell, faces.n_cells)


def cell_centers(surface: pv.DataSet) -> np.ndarray:
    """Centroid of every cell, ``(n_cells, 3)``: the area-weighted mean of its fan triangles' centroids.

    A cell of zero area gets the mean of its vertices.
    """
    faces = parse_faces(surface)
    tri, cell = fan_triangulation(faces)
    p = faces.points
    weight = np.linalg.norm(triangle_area_vectors(p, tri), axis=1)  # (T,)
    centroid = p[tri].mean(axis=1)  # (T, 3)
    total = np.bincount(cell, weights=weight, minlength=faces.n_cells)  # (C,)
    centers = cell_sum(centroid * weight[:, None], cell, faces.n_cells)
    flat = total <= 0
    centers[~flat] /= total[~flat, None]
    centers[flat] = point_to_cell_average(surface, p)[flat]
    return centers


def point_to_cell_average(surface: pv.DataSet, values: np.ndarray) -> np.ndarray:
    """Mean of a point field over each cell's vertices: ``(n,)`` or ``(n, k)`` -> ``(n_cells,)`` or ``(n_cells, k)``."""
    faces = parse_faces(surface)
    v = np.asarray(values, dtype=np.float64)
    n = len(faces.points)
    if v.ndim not in (1, 2) or v.shape[0] != n:
        raise InvalidInputError(f"a point field needs shape ({n},) or ({n}, k), got {v.shape}")
    sums = np.add.reduceat(v[faces.conn], faces.offsets[:-1], axis=0)
    sizes = np.diff(faces.offsets)
    return sums / (sizes if v.ndim == 1 else sizes[:, None])


# --- small helpers ----------------------------------------------------------------------------------------


def cell_sum(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """Sum the rows of ``values`` ``(k, 3)`` into ``n`` bins by ``index`` ``(k,)``: ``(n, 3)``."""
    return np.stack([np.bincount(index, weights=values[:, d], minlength=n) for d in range(3)], axis=1)


def unit_rows(v: np.ndarray) -> np.ndarray:
    """Rows of ``v`` ``(k, 3)`` scaled to unit length; zero rows stay zero."""
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)


def merged_ids(points: np.ndarray) -> tuple[np.ndarray, int]:
    """One id per distinct coordinate triple: ``(n,)`` ids and their number (an STL's unmerged points agree)."""
    unique, inverse = np.unique(points, axis=0, return_inverse=True)
    return inverse.reshape(-1), len(unique)


def refined(surface: pv.DataSet, min_points: int) -> pv.PolyData:
    """The same surface with finer faces: its fan triangles cut by linear subdivision (each triangle into four at
    its edge midpoints) as often as it takes to have at least ``min_points`` points.

    The geometry is unchanged (every new point lies on an old face), so integrals over it converge as the
    faces shrink; the vertex order, hence the orientation, is kept.
    """
    import pyvista as pv

    faces = parse_faces(surface)
    tri, _ = fan_triangulation(faces)
    mesh = pv.PolyData.from_regular_faces(faces.points, tri)
    while mesh.n_points < min_points:
        mesh = mesh.subdivide(1, "linear")
    return mesh
