"""Least-squares derivatives on a real planar mesh (the O-grid and Cartesian blocks of a shedding case)."""

from __future__ import annotations

import numpy as np
import pytest
import pyvista as pv
from helpers import ROOT

from msptcli.geometry.mesh_gradient import mesh_edges, mesh_operators

MESH = ROOT / "examples" / "transient" / "case_0000" / "fields_000.vtu"


def test_gradient_is_exact_for_linear_fields_and_laplacian_for_quadratics():
    mesh = pv.read(MESH)
    points = np.asarray(mesh.points, dtype=np.float64)
    edges = mesh_edges(mesh)
    assert edges.shape[1] == 2 and (edges[:, 0] < edges[:, 1]).all() and len(np.unique(edges, axis=0)) == len(edges)
    assert len(edges) == mesh.extract_all_edges().n_cells  # every cell edge, once
    ops = mesh_operators(points, edges)
    x, y = points[:, 0], points[:, 1]
    f = 2.0 * x - 3.0 * y + 0.5
    np.testing.assert_allclose(ops.dx @ f, 2.0, atol=1e-9)
    np.testing.assert_allclose(ops.dy @ f, -3.0, atol=1e-9)
    q = x**2 + 2 * y**2  # Laplacian 6; a one-sided fit at the boundary is not exact for quadratics
    # a point of a polygon mesh is on the boundary where it has more edges than cells around it
    cells = np.bincount(np.asarray(mesh.cell_connectivity), minlength=len(points))
    boundary = np.flatnonzero(np.bincount(edges.ravel(), minlength=len(points)) > cells)
    interior = np.ones(len(points), bool)
    interior[np.unique(edges[np.isin(edges, boundary).any(axis=1)])] = False  # and their neighbours
    lap = ops.laplacian @ q
    assert abs(np.median(lap[interior]) - 6) < 0.05 and np.mean(np.abs(lap[interior] - 6) < 0.6) > 0.9
    assert (ops.size > 0).all() and ops.size.min() < 0.02 < 0.3 < ops.size.max()  # 0.01 D at the wall


def test_neighbour_mean_averages_over_the_edges_and_keeps_a_lone_point():
    mesh = pv.read(MESH)
    points = np.asarray(mesh.points, dtype=np.float64)
    edges = mesh_edges(mesh)
    lone = np.vstack([points, [[50.0, 50.0, 0.0]]])  # a point on no edge
    ops = mesh_operators(lone, edges)
    np.testing.assert_allclose(np.asarray(ops.mean.sum(axis=1)).ravel(), 1.0, atol=1e-12)  # weights summing to 1
    f = np.random.default_rng(0).standard_normal(len(lone))
    i = int(edges[0, 0])
    neighbours = np.unique(np.concatenate([edges[edges[:, 0] == i, 1], edges[edges[:, 1] == i, 0]]))
    assert (ops.mean @ f)[i] == pytest.approx(f[neighbours].mean(), abs=1e-12)
    assert (ops.mean @ f)[-1] == f[-1]
