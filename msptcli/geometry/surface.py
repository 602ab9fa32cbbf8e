"""Surface geometry for the model's inputs: outward normals, distances to the body, points around it.

Every function takes a surface as pyvista reads it: the OpenFOAM ``surface.vtu`` (an
UnstructuredGrid of quads and polygons) or STL/OBJ/PLY PolyData such as ``geometry.stl``.
Cells must be triangles, quads or polygons; a polygon ``(v0, v1, ..., v_{k-1})`` is split
into the triangle fan ``(v0, v_j, v_{j+1})``, ``j = 1 .. k-2``, which keeps the file's
vertex order.

**Outward** means into the fluid, away from the body. The file's vertex order is not
trusted (OpenFOAM orders the body faces into the body; an STL may be ordered either way,
or inconsistently). ``outward_area_vectors`` orients every cell in three steps:

1. *Consistency.* Two cells that share an edge (used by exactly those two cells, after
   merging points with equal coordinates) agree when they traverse it in opposite
   directions. A breadth-first spanning tree of this edge graph gives each cell its flip
   relative to a seed cell of its connected sheet.
2. *Bodies.* Points connected through cells form one body; its centroid ``c`` is the
   area-weighted mean of its triangle centroids.
3. *Outward.* Each sheet is flipped as a whole when its cone volume about its body's
   centroid, ``sum_t a_t . (v0_t - c) / 3`` over its triangles, is negative. For a closed
   body this is the signed enclosed volume (independent of ``c``), positive exactly when
   the normals point out of it.

Each connected body is taken to be a solid without cavities: an inner shell would be
oriented away from its own centroid too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from msptcli.errors import InvalidInputError

if TYPE_CHECKING:
    import pyvista as pv

__all__ = [
    "cell_centers",
    "cell_normals",
    "fan_triangles",
    "outside_body",
    "outward_area_vectors",
    "point_normals",
    "point_to_cell_average",
    "polygon_area_vectors",
    "sample_points_around",
]

#: VTK cell types accepted as surface cells: triangle, polygon, quad.
_SURFACE_CELL_TYPES = (5, 7, 9)


class _Faces(NamedTuple):
    """A surface's polygons: points ``(n, 3)`` float64, ``conn`` point ids, ``offsets`` ``(n_cells + 1,)``."""

    points: np.ndarray
    conn: np.ndarray
    offsets: np.ndarray

    @property
    def n_cells(self) -> int:
        return len(self.offsets) - 1


# --- public API -------------------------------------------------------------------------------------


def fan_triangles(surface: pv.DataSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split every cell of ``surface`` into a triangle fan, keeping the file's vertex order.

    Returns:
        points ``(n, 3)`` float64; triangles ``(T, 3)`` int64 point ids; cell ``(T,)`` int64,
        the cell each triangle comes from (a cell of ``k`` vertices gives ``k - 2`` triangles).

    Raises:
        InvalidInputError: no cells, cells that are not triangles/quads/polygons, NaN points.
    """
    faces = _faces(surface)
    tri, cell = _fan(faces)
    return faces.points, tri, cell


def polygon_area_vectors(surface: pv.DataSet) -> np.ndarray:
    """Area vector of every cell, ``(n_cells, 3)``, oriented by the file's vertex order (right-hand rule).

    ``a_c = sum over the cell's fan triangles (v0, v1, v2) of (v1 - v0) x (v2 - v0) / 2``;
    ``|a_c|`` is the cell's area.
    """
    faces = _faces(surface)
    tri, cell = _fan(faces)
    return _cell_sum(_triangle_areas(faces.points, tri), cell, faces.n_cells)


def outward_area_vectors(surface: pv.DataSet) -> np.ndarray:
    """Area vector of every cell, ``(n_cells, 3)``, pointing out of the body (method: module docstring)."""
    return _outward_areas(_faces(surface))


def cell_normals(surface: pv.DataSet) -> np.ndarray:
    """Outward unit normal of every cell, ``(n_cells, 3)`` float64; zero for cells of zero area."""
    return _unit(outward_area_vectors(surface))


def point_normals(surface: pv.DataSet) -> np.ndarray:
    """Outward unit normal at every point, ``(n, 3)`` float64, weighted by the areas of the cells around it.

    ``n_i`` is the normalised sum of the outward area vectors of the cells that use point ``i``
    (or any point with the same coordinates, so an STL with unmerged points gets smooth
    normals too). Points used by no cell get a zero vector.
    """
    faces = _faces(surface)
    areas = _outward_areas(faces)  # (C, 3)
    ids, n_unique = _merged_ids(faces.points)
    corner_cell = np.repeat(np.arange(faces.n_cells), np.diff(faces.offsets))  # (len(conn),)
    summed = _cell_sum(areas[corner_cell], ids[faces.conn], n_unique)  # (n_unique, 3)
    return _unit(summed)[ids]


def cell_centers(surface: pv.DataSet) -> np.ndarray:
    """Centroid of every cell, ``(n_cells, 3)``: the area-weighted mean of its fan triangles' centroids.

    A cell of zero area gets the mean of its vertices.
    """
    faces = _faces(surface)
    tri, cell = _fan(faces)
    p = faces.points
    weight = np.linalg.norm(_triangle_areas(p, tri), axis=1)  # (T,)
    centroid = p[tri].mean(axis=1)  # (T, 3)
    total = np.bincount(cell, weights=weight, minlength=faces.n_cells)  # (C,)
    centers = _cell_sum(centroid * weight[:, None], cell, faces.n_cells)
    flat = total <= 0
    centers[~flat] /= total[~flat, None]
    centers[flat] = point_to_cell_average(surface, p)[flat]
    return centers


def point_to_cell_average(surface: pv.DataSet, values: np.ndarray) -> np.ndarray:
    """Mean of a point field over each cell's vertices: ``(n,)`` or ``(n, k)`` -> ``(n_cells,)`` or ``(n_cells, k)``."""
    faces = _faces(surface)
    v = np.asarray(values, dtype=np.float64)
    n = len(faces.points)
    if v.ndim not in (1, 2) or v.shape[0] != n:
        raise InvalidInputError(f"a point field needs shape ({n},) or ({n}, k), got {v.shape}")
    sums = np.add.reduceat(v[faces.conn], faces.offsets[:-1], axis=0)
    sizes = np.diff(faces.offsets)
    return sums / (sizes if v.ndim == 1 else sizes[:, None])


def outside_body(points: np.ndarray, surface: pv.DataSet) -> np.ndarray:
    """``(m,)`` bool: which points lie outside the closed body (in the fluid); ray parity as below."""
    x = _check_points(points)
    faces = _faces(surface)
    tri, _ = _fan(faces)
    return ~_enclosure_test(faces.points, tri)(x) if len(x) else np.zeros(0, dtype=bool)


def sample_points_around(
    surface: pv.DataSet,
    n: int,
    *,
    margin: float = 0.5,
    seed: int = 0,
    ground_z: float | None = None,
) -> np.ndarray:
    """``n`` points drawn uniformly from the fluid around a closed body, ``(n, 3)`` float64.

    The box is the body's bounding box enlarged on every side by ``margin`` times the body's
    extent along that axis; with ``ground_z`` its bottom is raised to ``z = ground_z`` (the ground
    plane, e.g. 0 for the Ahmed cases). Points inside the body are rejected (VTK's
    ``vtkSelectEnclosedPoints``, ray parity on the triangulated surface), so the points are uniform
    over box minus body. The same ``seed`` gives the same points.

    Raises:
        InvalidInputError: ``n < 0``, a negative or non-finite margin, a ground above the box,
            a surface that is not closed (an edge not shared by exactly two faces).
    """
    if n < 0:
        raise InvalidInputError(f"n must be non-negative, got {n}")
    if not np.isfinite(margin) or margin < 0:
        raise InvalidInputError(f"margin must be a non-negative number, got {margin}")
    faces = _faces(surface)
    tri, _ = _fan(faces)
    open_edges = _open_edge_count(_merged_ids(faces.points)[0][tri])
    if open_edges:
        raise InvalidInputError(f"the surface is not closed ({open_edges} edges not shared by exactly two faces)")
    used = faces.points[np.unique(tri)]
    lo, hi = used.min(axis=0), used.max(axis=0)
    lo, hi = lo - margin * (hi - lo), hi + margin * (hi - lo)
    if ground_z is not None:
        if not ground_z < hi[2]:
            raise InvalidInputError(f"ground_z={ground_z} is not below the top of the sampling box ({hi[2]:.6g})")
        lo[2] = max(lo[2], ground_z)
    rng = np.random.default_rng(seed)
    enclosed = _enclosure_test(faces.points, tri)
    kept = [np.zeros((0, 3))]
    found, draws = 0, 0
    while found < n:
        if draws == 1000:
            raise InvalidInputError(f"found only {found} of {n} points outside the body: enlarge the margin")
        batch = rng.uniform(lo, hi, size=(max(2 * (n - found), 1024), 3))
        kept.append(batch[~enclosed(batch)])
        found, draws = found + len(kept[-1]), draws + 1
    return np.concatenate(kept)[:n]


# --- parsing --------------------------------------------------------------------------------------------


def _faces(surface: pv.DataSet) -> _Faces:
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
    return _Faces(points, np.asarray(grid.cell_connectivity, dtype=np.int64), offsets)


def _check_points(points: np.ndarray) -> np.ndarray:
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


# --- triangles and orientation --------------------------------------------------------------------------


def _fan(faces: _Faces) -> tuple[np.ndarray, np.ndarray]:
    """Fan triangles ``(T, 3)`` of the polygons and the cell of each ``(T,)``."""
    n_fan = np.diff(faces.offsets) - 2  # (C,) triangles per cell
    cell = np.repeat(np.arange(faces.n_cells), n_fan)  # (T,)
    first = faces.offsets[:-1][cell]  # position of v0 in conn
    j = np.arange(len(cell)) - np.repeat(np.cumsum(n_fan) - n_fan, n_fan) + 1  # 1 .. k-2
    tri = np.stack([faces.conn[first], faces.conn[first + j], faces.conn[first + j + 1]], axis=1)
    return tri, cell


def _triangle_areas(points: np.ndarray, tri: np.ndarray) -> np.ndarray:
    """Area vectors ``(T, 3)`` of triangles: ``(v1 - v0) x (v2 - v0) / 2``."""
    v0, v1, v2 = points[tri[:, 0]], points[tri[:, 1]], points[tri[:, 2]]
    return 0.5 * np.cross(v1 - v0, v2 - v0)


def _cell_sum(values: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """Sum the rows of ``values`` ``(k, 3)`` into ``n`` bins by ``index`` ``(k,)``: ``(n, 3)``."""
    return np.stack([np.bincount(index, weights=values[:, d], minlength=n) for d in range(3)], axis=1)


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0)


def _merged_ids(points: np.ndarray) -> tuple[np.ndarray, int]:
    """One id per distinct coordinate triple: ``(n,)`` ids and their number."""
    unique, inverse = np.unique(points, axis=0, return_inverse=True)
    return inverse.reshape(-1), len(unique)


def _edges(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Directed edges of triangles ``t`` ``(T, 3)`` grouped by undirected edge.

    Returns ``order`` (edge numbers ``3 * triangle + side`` sorted by undirected edge), the start and
    size of each group in ``order``, and ``forward`` ``(3T,)``: the edge runs from its lower id.
    """
    a, b = t.ravel(), t[:, [1, 2, 0]].ravel()
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo * (int(t.max()) + 1) + hi
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    sizes = np.diff(np.r_[starts, len(key)])
    return order, starts, sizes, a < b


def _open_edge_count(t: np.ndarray) -> int:
    _, _, sizes, _ = _edges(t)
    return int((sizes != 2).sum())


def _outward_areas(faces: _Faces) -> np.ndarray:
    """Outward area vectors ``(n_cells, 3)`` of parsed faces."""
    tri, cell = _fan(faces)
    areas = _cell_sum(_triangle_areas(faces.points, tri), cell, faces.n_cells)
    return areas * _outward_signs(faces.points, tri, cell, faces.n_cells)[:, None]


def _outward_signs(points: np.ndarray, tri: np.ndarray, cell: np.ndarray, n_cells: int) -> np.ndarray:
    """``+1`` or ``-1`` per cell: the factor that turns its file-ordered area vector outward."""
    ids, n_unique = _merged_ids(points)
    t = ids[tri]  # (T, 3) merged point ids
    # 1. consistency: the flip of each cell relative to the seed of its sheet
    order, starts, sizes, forward = _edges(t)
    pairs = starts[sizes == 2]
    e1, e2 = order[pairs], order[pairs + 1]
    c1, c2 = cell[e1 // 3], cell[e2 // 3]
    between = c1 != c2  # fan diagonals join a cell to itself
    flip, sheet = _relative_flips(c1[between], c2[between], forward[e1[between]] == forward[e2[between]], n_cells)
    # 2. bodies: connected points, and the area-weighted centroid of each
    graph = sparse.coo_matrix((np.ones(2 * len(t)), (t[:, [0, 1]].ravel(), t[:, [1, 2]].ravel())), (n_unique,) * 2)
    _, body_of_point = csgraph.connected_components(graph, directed=False)
    body = body_of_point[t[:, 0]]  # (T,)
    areas = _triangle_areas(points, tri)  # (T, 3) file order
    weight = np.linalg.norm(areas, axis=1)
    centroid = points[tri].mean(axis=1)
    total = np.bincount(body, weights=weight)
    center = _cell_sum(centroid * weight[:, None], body, len(total)) / np.maximum(total, 1e-300)[:, None]
    # 3. outward: the cone volume of each consistently oriented sheet about its body's centroid
    cone = np.einsum("ij,ij->i", areas, points[tri[:, 0]] - center[body]) / 3.0
    consistent = 1.0 - 2.0 * flip  # (C,)
    volume = np.bincount(sheet[cell], weights=cone * consistent[cell])
    return consistent * np.where(volume < 0, -1.0, 1.0)[sheet]


def _relative_flips(
    c1: np.ndarray, c2: np.ndarray, disagree: np.ndarray, n_cells: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flip (0/1) of each cell relative to its sheet's seed, and the sheet of each cell.

    ``c1[k]``, ``c2[k]`` share an edge; ``disagree[k]``: their orders do (1) or do not (0) need one flip.
    """
    pair = np.unique(np.stack([np.minimum(c1, c2), np.maximum(c1, c2), disagree], axis=1).astype(np.int64), axis=0)
    first = np.ones(len(pair), dtype=bool)
    first[1:] = (pair[1:, :2] != pair[:-1, :2]).any(axis=1)
    pair = pair[first]  # one label per pair of cells
    adjacency = sparse.coo_matrix((np.ones(len(pair)), (pair[:, 0], pair[:, 1])), (n_cells, n_cells))
    _, sheet = csgraph.connected_components(adjacency, directed=False)
    seeds = np.unique(sheet, return_index=True)[1]
    root = n_cells  # a virtual node joined to every sheet's seed, so one search covers all sheets
    rows = np.r_[pair[:, 0], seeds]
    cols = np.r_[pair[:, 1], np.full(len(seeds), root)]
    labels = np.r_[pair[:, 2] + 1, np.ones(len(seeds), dtype=np.int64)]  # 1 + flip, so no label is 0
    graph = sparse.csr_matrix((np.r_[labels, labels], (np.r_[rows, cols], np.r_[cols, rows])), (root + 1,) * 2)
    _, pred = csgraph.breadth_first_order(graph, root, directed=False, return_predecessors=True)
    parent = np.r_[pred[:root], root]
    flip = np.r_[np.asarray(graph[np.arange(root), pred[:root]]).ravel() - 1, 0].astype(np.int8)
    # pointer jumping: after k rounds flip[i] is the parity of the path to the 2^k-th ancestor
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return flip[:root], sheet
        flip ^= flip[parent]
        parent = grand


def _enclosure_test(points: np.ndarray, tri: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """A function ``(k, 3) -> (k,) bool``: which points lie inside the closed triangulated surface."""
    import pyvista as pv
    from vtkmodules.vtkFiltersModeling import vtkSelectEnclosedPoints

    body = pv.PolyData.from_regular_faces(points, tri)
    selector = vtkSelectEnclosedPoints()
    selector.SetSurfaceData(body)
    selector.SetTolerance(1e-9)

    def inside(x: np.ndarray) -> np.ndarray:
        selector.SetInputData(pv.PolyData(x))
        selector.Update()
        return np.asarray(pv.wrap(selector.GetOutput()).point_data["SelectedPoints"], dtype=bool)

    return inside
