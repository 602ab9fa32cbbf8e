"""Outward orientation of a surface's cells, and the outward normals at its cells and points.

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
oriented away from its own centroid too. Surfaces are parsed by ``faces.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from msptcli.geometry.faces import (
    Faces,
    cell_sum,
    fan_triangulation,
    merged_ids,
    parse_faces,
    triangle_area_vectors,
    unit_rows,
)

if TYPE_CHECKING:
    import pyvista as pv

__all__ = ["cell_normals", "edge_groups", "outward_area_vectors", "point_normals"]


def outward_area_vectors(surface: pv.DataSet) -> np.ndarray:
    """Area vector of every cell, ``(n_cells, 3)``, pointing out of the body (method: module docstring)."""
    return _outward_areas(parse_faces(surface))


def cell_normals(surface: pv.DataSet) -> np.ndarray:
    """Outward unit normal of every cell, ``(n_cells, 3)`` float64; zero for cells of zero area."""
    return unit_rows(outward_area_vectors(surface))


def point_normals(surface: pv.DataSet) -> np.ndarray:
    """Outward unit normal at every point, ``(n, 3)`` float64, weighted by the areas of the cells around it.

    ``n_i`` is the normalised sum of the outward area vectors of the cells that use point ``i``
    (or any point with the same coordinates, so an STL with unmerged points gets smooth
    normals too). Points used by no cell get a zero vector.
    """
    faces = parse_faces(surface)
    areas = _outward_areas(faces)  # (C, 3)
    ids, n_unique = merged_ids(faces.points)
    corner_cell = np.repeat(np.arange(faces.n_cells), np.diff(faces.offsets))  # (len(conn),)
    summed = cell_sum(areas[corner_cell], ids[faces.conn], n_unique)  # (n_unique, 3)
    return unit_rows(summed)[ids]


def edge_groups(t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Directed edges of triangles ``t`` ``(T, 3)`` grouped by undirected edge.

    Returns ``order`` (edge numbers ``3 * triangle + side`` sorted by undirected edge), the start and
    size of each group in ``order``, and ``forward`` ``(3T,)``: the edge runs from its lower id.
    A closed, manifold surface has every group of size 2.
    """
    a, b = t.ravel(), t[:, [1, 2, 0]].ravel()
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo * (int(t.max()) + 1) + hi
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    sizes = np.diff(np.r_[starts, len(key)])
    return order, starts, sizes, a < b


# --- the three steps ----------------------------------------------------------------------------------------


def _outward_areas(faces: Faces) -> np.ndarray:
    """Outward area vectors ``(n_cells, 3)`` of parsed faces."""
    tri, cell = fan_triangulation(faces)
    areas = cell_sum(triangle_area_vectors(faces.points, tri), cell, faces.n_cells)
    return areas * _outward_signs(faces.points, tri, cell, faces.n_cells)[:, None]


def _outward_signs(points: np.ndarray, tri: np.ndarray, cell: np.ndarray, n_cells: int) -> np.ndarray:
    """``+1`` or ``-1`` per cell: the factor that turns its file-ordered area vector outward."""
    ids, n_unique = merged_ids(points)
    t = ids[tri]  # (T, 3) merged point ids
    # 1. consistency: the flip of each cell relative to the seed of its sheet
    order, starts, sizes, forward = edge_groups(t)
    pairs = starts[sizes == 2]
    e1, e2 = order[pairs], order[pairs + 1]
    c1, c2 = cell[e1 // 3], cell[e2 // 3]
    between = c1 != c2  # fan diagonals join a cell to itself
    flip, sheet = _relative_flips(c1[between], c2[between], forward[e1[between]] == forward[e2[between]], n_cells)
    # 2. bodies: connected points, and the area-weighted centroid of each
    graph = sparse.coo_matrix((np.ones(2 * len(t)), (t[:, [0, 1]].ravel(), t[:, [1, 2]].ravel())), (n_unique,) * 2)
    _, body_of_point = csgraph.connected_components(graph, directed=False)
    body = body_of_point[t[:, 0]]  # (T,)
    areas = triangle_area_vectors(points, tri)  # (T, 3) file order
    weight = np.linalg.norm(areas, axis=1)
    centroid = points[tri].mean(axis=1)
    total = np.bincount(body, weights=weight)
    center = cell_sum(centroid * weight[:, None], body, len(total)) / np.maximum(total, 1e-300)[:, None]
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
