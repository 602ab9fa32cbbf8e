"""Points on and around a body: uniform samples of its surface by area, which points lie outside it, and
uniform samples of the fluid in a box around it.

Inside and outside are decided by ray parity on the triangulated surface (VTK's
``vtkSelectEnclosedPoints``), which needs a closed surface: every edge shared by exactly
two triangles, after merging points with equal coordinates.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from msptcli.errors import InvalidInputError
from msptcli.geometry.distance import TriangleTree
from msptcli.geometry.faces import (
    check_points,
    fan_triangulation,
    merged_ids,
    parse_faces,
    triangle_area_vectors,
    unit_rows,
)
from msptcli.geometry.orientation import edge_groups, outward_area_vectors

if TYPE_CHECKING:
    import pyvista as pv

__all__ = ["open_edge_count", "outside_body", "sample_near_surface", "sample_on_surface", "sample_points_around"]

#: Rounds of rejection sampling before giving up (the body fills almost all of the box).
_MAX_DRAWS = 1000


def sample_on_surface(surface: pv.DataSet, n: int, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points drawn uniformly by area from the surface, with the outward unit normal at each.

    A fan triangle ``t`` is drawn with probability ``|a_t| / sum |a|``, then a point uniformly inside it
    (``v0 + u (v1 - v0) + w (v2 - v0)``, ``(u, w)`` reflected into the triangle when ``u + w > 1``); its
    normal is the outward normal of the triangle's cell (``geometry.orientation``). So any tessellation
    of the same body gives the same distribution of points, and the same ``seed`` the same points.

    Returns:
        points ``(n, 3)`` and normals ``(n, 3)``, float64.

    Raises:
        InvalidInputError: ``n < 0``, a surface without faces or of zero area.
    """
    if n < 0:
        raise InvalidInputError(f"n must be non-negative, got {n}")
    faces = parse_faces(surface)
    tri, cell = fan_triangulation(faces)
    area = np.linalg.norm(triangle_area_vectors(faces.points, tri), axis=1)  # (T,)
    total = float(area.sum())
    if not total > 0:
        raise InvalidInputError("the surface has zero area: no point can be drawn on it")
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tri), size=n, p=area / total)  # (n,)
    u, w = rng.random(n), rng.random(n)
    outside = u + w > 1
    u[outside], w[outside] = 1 - u[outside], 1 - w[outside]
    v0, v1, v2 = (faces.points[tri[pick, k]] for k in range(3))
    points = v0 + u[:, None] * (v1 - v0) + w[:, None] * (v2 - v0)
    normals = unit_rows(outward_area_vectors(surface))[cell[pick]]
    return points, normals


def sample_near_surface(
    surface: pv.DataSet, n: int, *, seed: int = 0, band: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points on the surface, about uniform by area, that depend on the body's shape and not on its faces.

    Points are drawn uniformly in the body's bounding box (enlarged by the band), in rounds of a fixed
    size from ``seed``; those within ``band`` times the box diagonal of the surface are projected onto
    their closest surface point, with the unit vector between the two, turned outward, as normal. The
    draws depend on the seed and the box alone, the distances and projections on the shape alone: two
    tessellations of one shape (a mesh and its subdivision) give the same points up to rounding, and an
    STL and a CFD surface of one body points that differ only where the shapes do. Points within the
    band of a face project uniformly onto it; a convex edge of length l takes about
    ``band * diagonal * l / (2 * area)`` of the points onto its line (2-3% on the Ahmed bodies).

    Returns:
        points ``(n, 3)`` and outward unit normals ``(n, 3)``, float64.
    """
    if n < 0:
        raise InvalidInputError(f"n must be non-negative, got {n}")
    faces = parse_faces(surface)
    tri, cell = fan_triangulation(faces)  # triangle t is a fan triangle of cell[t]
    outward = unit_rows(outward_area_vectors(surface))[cell]  # (T, 3)
    used = faces.points[np.unique(tri)]
    lo, hi = used.min(axis=0), used.max(axis=0)
    width = band * float(np.linalg.norm(hi - lo))
    if not width > 0:
        raise InvalidInputError("the surface has zero extent: no point can be drawn on it")
    lo, hi = lo - width, hi + width
    rng = np.random.default_rng(seed)
    tree = TriangleTree.build(faces.points, tri) if n else None
    points, normals, found = [np.zeros((0, 3))], [np.zeros((0, 3))], 0
    for _ in range(_MAX_DRAWS):
        if found >= n:
            break
        x = rng.uniform(lo, hi, size=(1 << 16, 3))  # a round of fixed size: the stream depends on the seed alone
        rows, closest, triangle = tree.closest_within(x, width)  # the exact closest point, in the band only
        delta = x[rows] - closest
        d = np.linalg.norm(delta, axis=1)
        near = (d < width) & (d > 0)
        delta, d, closest, triangle = delta[near], d[near], closest[near], triangle[near]
        side = np.sign(np.einsum("ij,ij->i", delta, outward[triangle]))  # +1 outside the body, -1 inside
        keep = side != 0
        points.append(closest[keep])
        normals.append(side[keep, None] * delta[keep] / d[keep, None])
        found += int(keep.sum())
    else:
        raise InvalidInputError(f"found only {found} of {n} points near the surface: is it degenerate?")
    return np.concatenate(points)[:n], np.concatenate(normals)[:n]


def outside_body(points: np.ndarray, surface: pv.DataSet) -> np.ndarray:
    """``(m,)`` bool: which points lie outside the closed body (in the fluid), by ray parity."""
    x = check_points(points)
    faces = parse_faces(surface)
    tri, _ = fan_triangulation(faces)
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
    faces = parse_faces(surface)
    tri, _ = fan_triangulation(faces)
    open_edges = open_edge_count(merged_ids(faces.points)[0][tri])
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
        if draws == _MAX_DRAWS:
            raise InvalidInputError(f"found only {found} of {n} points outside the body: enlarge the margin")
        batch = rng.uniform(lo, hi, size=(max(2 * (n - found), 1024), 3))
        kept.append(batch[~enclosed(batch)])
        found, draws = found + len(kept[-1]), draws + 1
    return np.concatenate(kept)[:n]


def open_edge_count(t: np.ndarray) -> int:
    """Edges of triangles ``t`` ``(T, 3)`` (merged point ids) not shared by exactly two triangles; 0 when closed."""
    _, _, sizes, _ = edge_groups(t)
    return int((sizes != 2).sum())


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
