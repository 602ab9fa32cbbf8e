"""Whether a surface is closed, in how many pieces, its area and enclosed volume, and which way its faces point.

Edges are counted on the faces' triangle fans (``faces.py``) after merging points with equal
coordinates, so an STL's unmerged corners join up. An edge used by one triangle is a
**boundary** edge (a hole or a cut), one used by three or more is **non-manifold**; a surface
with neither is **closed**. The fan diagonals inside a polygon are always used twice, so they
change neither count.

Which way the file's vertex order points is judged against ``orientation.py``'s outward
area vectors (into the fluid, away from each body's centroid): the share of the area whose
file-ordered area vector agrees with them. The same comparison judges a normals array.

The enclosed volume of a closed surface is the divergence theorem with outward faces,
``V = sum over triangles of a_t . v0_t / 3`` (``a_t`` outward area vector, ``v0_t`` a corner).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse
from scipy.sparse import csgraph

from msptcli.geometry.faces import cell_sum, fan_triangulation, merged_ids, parse_faces, triangle_area_vectors
from msptcli.geometry.orientation import edge_groups, outward_area_vectors, point_normals

if TYPE_CHECKING:
    import pyvista as pv

__all__ = ["SurfaceClosure", "outward_share", "surface_closure"]


@dataclass(frozen=True)
class SurfaceClosure:
    """What :func:`surface_closure` found on a surface's faces."""

    faces: int
    area: float
    regions: int  #: pieces connected through shared points
    boundary_edges: int  #: edges of one face: a hole, a cut or an open sheet
    non_manifold_edges: int  #: edges of three faces or more
    outward: float  #: share of the area whose file vertex order points outward (1: all, 0: all inward)
    enclosed_volume: float | None  #: volume inside, when closed

    @property
    def closed(self) -> bool:
        return self.boundary_edges == 0 and self.non_manifold_edges == 0

    @property
    def orientation(self) -> str:
        """``outward``, ``inward``, or ``mixed`` (the share of the area that points outward)."""
        if self.outward >= 0.999:
            return "outward"
        if self.outward <= 0.001:
            return "inward"
        return f"mixed ({100 * self.outward:.1f}% of the area outward)"


def surface_closure(surface: pv.DataSet) -> SurfaceClosure:
    """Closedness, pieces, area, enclosed volume and vertex order of ``surface`` (triangles, quads, polygons).

    Raises:
        InvalidInputError: as :func:`msptcli.geometry.faces.parse_faces` (cells that are not faces, NaN points).
    """
    faces = parse_faces(surface)
    tri, cell = fan_triangulation(faces)  # (T, 3), (T,)
    ids, n_unique = merged_ids(faces.points)
    t = ids[tri]  # (T, 3) merged point ids
    _, _, sizes, _ = edge_groups(t)
    file_areas = triangle_area_vectors(faces.points, tri)  # (T, 3) file order
    outward = outward_area_vectors(surface)  # (C, 3)
    file_cells = cell_sum(file_areas, cell, faces.n_cells)  # (C, 3)
    sign = np.where(np.einsum("ij,ij->i", file_cells, outward) < 0, -1.0, 1.0)  # (C,) file order -> outward
    cell_area = np.bincount(cell, weights=np.linalg.norm(file_areas, axis=1), minlength=faces.n_cells)  # (C,)
    area = float(cell_area.sum())  # of the fan triangles, as VTK measures triangles and quads
    boundary, non_manifold = int((sizes == 1).sum()), int((sizes > 2).sum())
    volume = None
    if boundary == 0 and non_manifold == 0:
        cone = np.einsum("ij,ij->i", file_areas, faces.points[tri[:, 0]]) / 3.0  # (T,) file order
        volume = float(abs((cone * sign[cell]).sum()))
    return SurfaceClosure(
        faces=faces.n_cells,
        area=area,
        regions=_regions(t, n_unique),
        boundary_edges=boundary,
        non_manifold_edges=non_manifold,
        outward=float(cell_area[sign > 0].sum() / area) if area > 0 else 1.0,
        enclosed_volume=volume,
    )


def outward_share(surface: pv.DataSet, normals: np.ndarray, *, at: str) -> float:
    """Share of ``normals`` ``(n, 3)`` (at the points, ``at="point"``, or cells, ``"cell"``) that point outward:
    a positive dot product with the outward normal there (``orientation.py``); zero vectors count as not."""
    reference = point_normals(surface) if at == "point" else outward_area_vectors(surface)
    n = np.asarray(normals, dtype=np.float64).reshape(len(reference), -1)[:, :3]
    return float((np.einsum("ij,ij->i", n, reference) > 0).mean()) if len(n) else 1.0


def _regions(t: np.ndarray, n_unique: int) -> int:
    """Pieces of the triangles ``t`` (merged point ids), connected through shared points."""
    graph = sparse.coo_matrix((np.ones(2 * len(t)), (t[:, [0, 1]].ravel(), t[:, [1, 2]].ravel())), (n_unique,) * 2)
    _, label = csgraph.connected_components(graph, directed=False)
    return len(np.unique(label[t[:, 0]]))
