"""Exact distance from points to a triangulated body surface, through a ball-tree box hierarchy."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from scipy.spatial import cKDTree

from msptcli.geometry.balltree import ball_tree_order, run_boundaries
from msptcli.geometry.faces import check_points, fan_triangulation, parse_faces

if TYPE_CHECKING:
    import pyvista as pv

#: Triangles per leaf of the bounding-volume tree (at most).
_LEAF_SIZE = 4
#: Query points traversed together (bounds the memory of the traversal).
_CHUNK = 2048


def distance_to_surface(
    points: np.ndarray, surface: pv.DataSet, *, progress: Callable[[int, int], None] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact distance from each point to the closest point of the triangulated surface.

    The triangles (fans of the cells) are ordered by the ball tree of their centroids, whose
    runs at each depth are the nodes of a bounding-box hierarchy. Starting from the distance
    to the nearest surface vertex (an upper bound), all points descend the hierarchy together,
    dropping nodes whose box lies farther than that bound; at the leaves the exact point-triangle
    distance (Voronoi regions of the triangle: Ericson, *Real-Time Collision Detection*, 5.1.5)
    picks the minimum. No candidate that could be closest is ever dropped, so the result is exact.

    Args:
        points: ``(m, 3)`` query points.
        surface: the body surface.
        progress: called with (points done, points in all) after every chunk of points.

    Returns:
        distance ``(m,)`` float64 and direction ``(m, 3)`` float64: the unit vector from the point
        to its closest surface point (the zero vector where the distance is 0).

    Raises:
        InvalidInputError: points not of shape ``(m, 3)`` or not finite; a surface without cells.
    """
    x = check_points(points)
    faces = parse_faces(surface)
    tri, _ = fan_triangulation(faces)
    dist = np.zeros(len(x))
    direction = np.zeros((len(x), 3))
    if len(x) == 0:
        return dist, direction
    tree = TriangleTree.build(faces.points, tri)
    for start in range(0, len(x), _CHUNK):
        chunk = slice(start, start + _CHUNK)
        closest = tree.closest_points(x[chunk])  # (c, 3)
        delta = closest - x[chunk]
        d = np.linalg.norm(delta, axis=1)
        dist[chunk] = d
        direction[chunk] = np.divide(delta, d[:, None], out=np.zeros_like(delta), where=d[:, None] > 0)
        if progress is not None:
            progress(min(start + _CHUNK, len(x)), len(x))
    return dist, direction


# --- exact distance ----------------------------------------------------------------------------------------


class TriangleTree(NamedTuple):
    """Triangles in ball-tree order and the bounding boxes of its runs at every depth."""

    a: np.ndarray  # (T, 3) first vertices, tree order
    b: np.ndarray
    c: np.ndarray
    lo: list[np.ndarray]  # lo[level]: (2**level, 3) box minima of the runs at that depth
    hi: list[np.ndarray]
    leaf_bounds: np.ndarray  # (2**depth + 1,) run bounds at the leaf depth
    vertices: cKDTree  # of the points the triangles use: the initial upper bound
    order: np.ndarray  # (T,) the given index of each triangle in tree order

    @classmethod
    def build(cls, points: np.ndarray, tri: np.ndarray) -> TriangleTree:
        corners = points[tri]  # (T, 3 corners, 3)
        order = ball_tree_order(corners.mean(axis=1))
        corners = corners[order]
        n = len(corners)
        depth = max(0, int(np.ceil(np.log2(n / _LEAF_SIZE)))) if n > _LEAF_SIZE else 0
        tmin, tmax = corners.min(axis=1), corners.max(axis=1)  # (T, 3)
        lo, hi = [], []
        for level in range(depth + 1):
            starts = run_boundaries(n, level)[:-1]  # 2**level <= n: no run is empty
            lo.append(np.minimum.reduceat(tmin, starts, axis=0))
            hi.append(np.maximum.reduceat(tmax, starts, axis=0))
        verts = cKDTree(points[np.unique(tri)])
        a, b, c = (np.ascontiguousarray(corners[:, k]) for k in range(3))
        return cls(a, b, c, lo, hi, run_boundaries(n, depth), verts, np.asarray(order, dtype=np.int64))

    def closest_points(self, x: np.ndarray) -> np.ndarray:
        """Closest surface point ``(m, 3)`` to each of ``x`` ``(m, 3)``."""
        _, q, _ = self.closest_within(x)
        return q

    def closest_within(self, x: np.ndarray, within: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The closest surface point and its triangle (the given index) of each point of ``x`` ``(m, 3)`` that lies
        within ``within`` of the surface (None: every point). Points farther away are dropped early, in the
        hierarchy's coarse boxes, so a band around the surface costs about what the points in it cost.

        Returns:
            rows ``(k,)`` of ``x`` found, ascending; their closest points ``(k, 3)`` and triangles ``(k,)``.
            A point at exactly ``within`` may or may not be among them.
        """
        bound, _ = self.vertices.query(x)  # (m,) distance to the nearest vertex >= the answer
        if within is not None:
            bound = np.minimum(bound, within)
        bound2 = (bound * (1 + 1e-9) + 1e-12) ** 2  # slack for rounding: never drop the true closest
        p = np.arange(len(x))  # (P,) point of each (point, node) pair
        node = np.zeros(len(x), dtype=np.int64)  # (P,) node at the current depth
        for level in range(1, len(self.lo)):
            p = np.repeat(p, 2)
            node = (2 * node[:, None] + np.arange(2)).ravel()
            xp = x[p]
            gap = np.maximum(np.maximum(self.lo[level][node] - xp, xp - self.hi[level][node]), 0.0)
            keep = np.einsum("ij,ij->i", gap, gap) <= bound2[p]
            p, node = p[keep], node[keep]
        start = self.leaf_bounds[node]
        size = self.leaf_bounds[node + 1] - start
        tp = np.repeat(p, size)  # (Q,) point of each (point, triangle) candidate
        tt = np.repeat(start, size) + np.arange(len(tp)) - np.repeat(np.cumsum(size) - size, size)
        q = _closest_on_triangles(x[tp], self.a[tt], self.b[tt], self.c[tt])  # (Q, 3)
        d2 = np.einsum("ij,ij->i", q - x[tp], q - x[tp])
        order = np.lexsort((d2, tp))
        best = order[np.r_[True, tp[order][1:] != tp[order][:-1]]]  # nearest candidate of each point
        return tp[best], q[best], self.order[tt[best]]


def _closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Closest point ``(k, 3)`` of triangle ``(a, b, c)`` to ``p``, all ``(k, 3)``, as ``a + v (b - a) + w (c - a)``.

    The region of the triangle's plane that ``p`` projects into (a vertex, an edge, or the
    inside) decides ``(v, w)``; the tests below are applied from the lowest precedence to the
    highest, so where two hold the vertex wins over the edge and the edge over the inside.
    """
    ab, ac = b - a, c - a
    d1, d2 = _dot(ab, p - a), _dot(ac, p - a)
    d3, d4 = _dot(ab, p - b), _dot(ac, p - b)
    d5, d6 = _dot(ab, p - c), _dot(ac, p - c)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    v, w = _ratio(vb, va + vb + vc), _ratio(vc, va + vb + vc)  # inside
    on_bc = (va <= 0) & (d4 >= d3) & (d5 >= d6)
    t = _ratio(d4 - d3, (d4 - d3) + (d5 - d6))
    v, w = np.where(on_bc, 1 - t, v), np.where(on_bc, t, w)
    on_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    v, w = np.where(on_ac, 0.0, v), np.where(on_ac, _ratio(d2, d2 - d6), w)
    at_c = (d6 >= 0) & (d5 <= d6)
    v, w = np.where(at_c, 0.0, v), np.where(at_c, 1.0, w)
    on_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    v, w = np.where(on_ab, _ratio(d1, d1 - d3), v), np.where(on_ab, 0.0, w)
    at_b = (d3 >= 0) & (d4 <= d3)
    v, w = np.where(at_b, 1.0, v), np.where(at_b, 0.0, w)
    at_a = (d1 <= 0) & (d2 <= 0)
    v, w = np.where(at_a, 0.0, v), np.where(at_a, 0.0, w)
    return a + v[:, None] * ab + w[:, None] * ac


def _dot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", u, v)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den``, 0 where ``den`` is 0 (degenerate triangles)."""
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)
