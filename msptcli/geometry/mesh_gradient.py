"""Derivatives on a planar mesh: least-squares point gradients over the mesh edges, and their Laplacian.

At a point i with edge neighbours j, d_ij = x_j - x_i (in the plane) and weights w_ij = 1 / |d_ij|^2,
the gradient of a point field f is the weighted least-squares fit

    g_i = M_i^{-1} sum_j w_ij d_ij (f_j - f_i),        M_i = sum_j w_ij d_ij d_ij^T          (2 x 2)

exact for linear fields. It is linear in f, so it is kept as two sparse (N, N) matrices D_x, D_y,
built once per mesh; the Laplacian is L = D_x D_x + D_y D_y (two rings of neighbours). ``size`` is the
mean length of a point's edges, the local cell size h; ``mean`` averages a field over each point's edge
neighbours (A f)_i = mean_j f_j, the smoother of spatially correlated noise; ``transport`` carries a field
along a velocity (``geometry/transport.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from msptcli.geometry.faces import parse_faces
from msptcli.geometry.transport import Transport


@dataclass(frozen=True)
class MeshOperators:
    """The operators of one planar mesh that a transient step's inputs need (see the module docstring)."""

    dx: csr_matrix  # (N, N)
    dy: csr_matrix  # (N, N)
    laplacian: csr_matrix  # (N, N)
    size: np.ndarray  # (N,) mean edge length at each point
    mean: csr_matrix  # (N, N) the mean over each point's edge neighbours (a point without any keeps its value)
    transport: Transport  # semi-Lagrangian transport on the points


def cell_edges(mesh: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points ``(N, 3)`` and every cell's edges ``a -> b`` in its vertex order, with their cell, of a polygonal
    mesh (an edge shared by two cells appears twice, once in each direction for consistently oriented cells)."""
    faces = parse_faces(mesh)
    conn, offsets = faces.conn, faces.offsets
    following = np.arange(1, len(conn) + 1)
    following[offsets[1:] - 1] = offsets[:-1]  # each cell's last vertex is followed by its first
    cell = np.repeat(np.arange(faces.n_cells), np.diff(offsets))
    return faces.points, conn, conn[following], cell


def mesh_edges(mesh: Any) -> np.ndarray:
    """(M, 2) int64 undirected edges (i < j) of the cells of a polygonal mesh, each once."""
    _, a, b, _ = cell_edges(mesh)
    pairs = np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1)
    return np.unique(pairs[pairs[:, 0] != pairs[:, 1]], axis=0).astype(np.int64)


def mesh_operators(points: np.ndarray, edges: np.ndarray) -> MeshOperators:
    """The operators of the mesh with ``points`` (N, 3) and undirected ``edges`` (M, 2)."""
    n = len(points)
    xy = np.asarray(points, dtype=np.float64)[:, :2]
    i = np.concatenate([edges[:, 0], edges[:, 1]])  # both directions
    j = np.concatenate([edges[:, 1], edges[:, 0]])
    d = xy[j] - xy[i]  # (2M, 2)
    length2 = np.maximum((d**2).sum(1), 1e-300)
    w = 1.0 / length2
    m = np.zeros((n, 2, 2))
    np.add.at(m, i, w[:, None, None] * d[:, :, None] * d[:, None, :])
    scale = np.trace(m, axis1=1, axis2=2)[:, None, None]
    m_inv = np.linalg.inv(m + 1e-12 * scale * np.eye(2) + (scale == 0) * np.eye(2))
    c = w[:, None] * np.einsum("kab,kb->ka", m_inv[i], d)  # (2M, 2): coefficient of f_j in g_i
    diag = np.zeros((n, 2))
    np.add.at(diag, i, -c)
    rows = np.concatenate([i, np.arange(n)])
    cols = np.concatenate([j, np.arange(n)])
    dx = csr_matrix((np.concatenate([c[:, 0], diag[:, 0]]), (rows, cols)), shape=(n, n))
    dy = csr_matrix((np.concatenate([c[:, 1], diag[:, 1]]), (rows, cols)), shape=(n, n))
    degree = np.bincount(i, minlength=n)
    size = np.bincount(i, weights=np.sqrt(length2), minlength=n) / np.maximum(degree, 1)
    alone = np.flatnonzero(degree == 0)
    weights = np.concatenate([1.0 / degree[i], np.ones(len(alone))])
    mean = csr_matrix((weights, (np.concatenate([i, alone]), np.concatenate([j, alone]))), shape=(n, n))
    return MeshOperators(
        dx=dx, dy=dy, laplacian=(dx @ dx + dy @ dy).tocsr(), size=size, mean=mean, transport=Transport.of(points)
    )
