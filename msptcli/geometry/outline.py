"""The outline of a 2D body in a planar mesh, and the per-point features measured from it.

The meshes are the z = 0 plane of a one-cell-thick OpenFOAM case (the transient data), the body a
hole in it. The boundary edges of a planar mesh are the cell edges used by exactly one cell. They
form closed loops; the loops that touch the mesh's bounding box are the channel (inlet, outlet,
walls), the others are the body (or bodies). :func:`body_edges` orients every body edge
counter-clockwise around its body: going from ``edge[0]`` to ``edge[1]`` the body is on the left
and the fluid on the right, so with ``(dx, dy)`` the edge vector and ``l`` its length the unit
normal of the body pointing into the fluid is::

    n = (dy, -dx) / l

From the outline every mesh point gets the features of a transient step's inputs
(:func:`outline_features`): the wall flag, the body's normal on the wall, and elsewhere the distance
and direction to the nearest outline segment, in the plane. The forces on the body are
``physics/shedding.py``'s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from msptcli.errors import InvalidInputError
from msptcli.geometry.mesh_gradient import cell_edges


@dataclass(frozen=True)
class OutlineFeatures:
    """What every point of a planar mesh knows of the body (all 0 for a mesh without one)."""

    normals: np.ndarray  # (N, 3) the body's unit normal into the fluid on wall points, else 0
    wall: np.ndarray  # (N,) float32, 1 on the outline
    distance: np.ndarray  # (N,) to the nearest outline segment, 0 on the wall
    direction: np.ndarray  # (N, 3) unit, towards that segment; 0 on the wall


def planar_edges(mesh: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points ``(N, 3)``, every cell's edges ``a -> b`` in its vertex order, their cell, and which are boundary
    edges (used by one cell), of a mesh that must be planar (one z)."""
    points, a, b, cell = cell_edges(mesh)
    z = points[:, 2]
    extent = max(float(np.ptp(points[:, :2], axis=0).max()), 1.0)
    if np.ptp(z) > 1e-6 * extent:
        raise InvalidInputError(
            f"the mesh is not planar: its points span z = {z.min():g} .. {z.max():g}, not one z plane"
        )
    key = np.minimum(a, b) * len(points) + np.maximum(a, b)
    _, inverse, count = np.unique(key, return_inverse=True, return_counts=True)
    return points, a, b, cell, count[inverse] == 1


def body_edges(mesh: Any, *, required: bool = True) -> np.ndarray:
    """The body's boundary edges ``(E, 2)`` int64, counter-clockwise around the body (module docstring).
    ``required=False``: a mesh without an inner boundary gives no edges, ``(0, 2)``, instead of an error.

    The edges come loop by loop, each in order along its loop (``edges[i, 1] == edges[i + 1, 0]``,
    the last edge of a loop ending where its first begins); the fluid is on the right of each
    edge and ``(dy, -dx) / l`` points into it.

    Raises:
        InvalidInputError: a mesh that is not planar (one z), cells that are not triangles, quads
            or polygons, a boundary that is not a set of simple loops, no inner boundary loop.
    """
    points, a, b, cell, boundary = planar_edges(mesh)
    xy = points[:, :2]
    # A cell's own edges have the cell on their left when it is counter-clockwise: reverse those,
    # so that the fluid is on the right of every boundary edge.
    area2 = np.bincount(cell, weights=xy[a, 0] * xy[b, 1] - xy[b, 0] * xy[a, 1], minlength=cell.max() + 1)
    ccw = area2[cell[boundary]] > 0
    edges = np.where(ccw[:, None], np.stack([b[boundary], a[boundary]], 1), np.stack([a[boundary], b[boundary]], 1))

    starts = np.bincount(edges[:, 0], minlength=len(points))
    if (starts > 1).any():
        i = int(np.flatnonzero(starts > 1)[0])
        raise InvalidInputError(
            f"the mesh boundary is not a set of simple loops: {starts[i]} boundary edges leave point {i}"
        )
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    tol = 1e-9 * max(float((hi - lo).max()), 1.0)
    on_box = ((xy - lo <= tol) | (hi - xy <= tol)).any(axis=1)
    loops = [loop for loop in _loops(edges, len(points)) if not on_box[edges[loop, 0]].any()]
    if not loops:
        if not required:
            return np.zeros((0, 2), dtype=np.int64)
        raise InvalidInputError("no body: the mesh has no inner boundary")
    return edges[np.concatenate(loops)].astype(np.int64)


def outline_features(points: np.ndarray, edges: np.ndarray) -> OutlineFeatures:
    """The features of every point (N, 3) of a planar mesh from its body's ``edges`` (:func:`body_edges`).

    A wall point's normal is the normalised sum of the unit normals of its two edges.
    """
    normals = np.zeros_like(points)
    edge_normals = outward_normals(points, edges)  # (E, 3) unit, into the fluid
    np.add.at(normals, edges[:, 0], edge_normals)
    np.add.at(normals, edges[:, 1], edge_normals)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)
    wall = np.zeros(len(points), dtype=np.float32)
    wall[edges.ravel()] = 1.0
    distance, direction = distance_to_outline(points, edges)
    distance[wall > 0], direction[wall > 0] = 0.0, 0.0
    return OutlineFeatures(normals=normals, wall=wall, distance=distance, direction=direction)


def outward_normals(points: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(E, 3) unit normals of the outline's edges, out of the body (the fluid lies to the right of a->b:
    the normal is (dy, -dx))."""
    d = points[edges[:, 1]] - points[edges[:, 0]]
    n = np.stack([d[:, 1], -d[:, 0], np.zeros(len(d))], axis=1)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)


def distance_to_outline(points: np.ndarray, edges: np.ndarray, *, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(N,) distance of every point to the nearest outline segment, in the plane, and (N, 3) the unit
    direction towards it (0 where the distance is 0; both 0 everywhere without an outline)."""
    if len(edges) == 0:
        return np.zeros(len(points)), np.zeros((len(points), 3))
    a, b = points[edges[:, 0], :2], points[edges[:, 1], :2]  # (E, 2)
    ab = b - a
    length2 = np.maximum((ab**2).sum(1), 1e-300)
    distance = np.empty(len(points))
    direction = np.zeros((len(points), 3))
    for start in range(0, len(points), chunk):
        p = points[start : start + chunk, None, :2]  # (n, 1, 2)
        t = np.clip(((p - a) * ab).sum(-1) / length2, 0.0, 1.0)  # (n, E)
        closest = a + t[..., None] * ab  # (n, E, 2)
        d2 = ((closest - p) ** 2).sum(-1)
        best = d2.argmin(1)
        rows = np.arange(len(best))
        vec = closest[rows, best] - p[:, 0]
        dist = np.sqrt(d2[rows, best])
        distance[start : start + len(best)] = dist
        direction[start : start + len(best), :2] = np.divide(
            vec, dist[:, None], out=np.zeros_like(vec), where=dist[:, None] > 0
        )
    return distance, direction


def _loops(edges: np.ndarray, n_points: int) -> list[np.ndarray]:
    """The boundary loops as lists of edge indices in order, following each edge to the one leaving its end."""
    leaving = np.full(n_points, -1)
    leaving[edges[:, 0]] = np.arange(len(edges))
    seen = np.zeros(len(edges), dtype=bool)
    loops = []
    for first in range(len(edges)):
        if seen[first]:
            continue
        loop, k = [], first
        while k >= 0 and not seen[k]:
            seen[k] = True
            loop.append(k)
            k = leaving[edges[k, 1]]
        if k != first:
            raise InvalidInputError(f"the mesh boundary is not closed at point {int(edges[loop[-1], 1])}")
        loops.append(np.array(loop))
    return loops
