"""The features every point of a planar mesh gets from its body's outline (``geometry/outline.py``), on a square
hole whose distances and normals are known by hand; the outline's loops are tested in test_shedding.py."""

import numpy as np
import pytest
from test_shedding import annulus

from msptcli.geometry.outline import body_edges, outline_features


def test_outline_features_of_a_square_hole():
    mesh = annulus()  # unit quads on [0, 6]^2 without the body [2, 4]^2
    points = np.asarray(mesh.points, dtype=np.float64)
    body = outline_features(points, body_edges(mesh))
    at = {tuple(p[:2]): k for k, p in enumerate(points)}
    wall = [at[xy] for xy in [(2, 2), (3, 2), (4, 2), (4, 3), (4, 4), (3, 4), (2, 4), (2, 3)]]
    np.testing.assert_array_equal(np.flatnonzero(body.wall), sorted(wall))
    assert not body.distance[wall].any() and not body.direction[wall].any()
    np.testing.assert_allclose(body.normals[at[3, 2]], [0, -1, 0], atol=1e-12)  # an edge's middle: out of the body
    np.testing.assert_allclose(body.normals[at[2, 2]], [-(0.5**0.5), -(0.5**0.5), 0], atol=1e-12)  # a corner
    off = np.flatnonzero(body.wall == 0)
    assert not body.normals[off].any()
    assert body.distance[at[0, 0]] == pytest.approx(8**0.5)  # to the corner (2, 2)
    np.testing.assert_allclose(body.direction[at[0, 0]], [0.5**0.5, 0.5**0.5, 0])
    assert body.distance[at[3, 0]] == pytest.approx(2.0)  # straight up to the edge's middle
    np.testing.assert_allclose(body.direction[at[3, 0]], [0, 1, 0])
    np.testing.assert_allclose(np.linalg.norm(body.direction[off], axis=1), 1.0)


def test_a_mesh_without_a_body_has_no_features():
    mesh = annulus(hole=False)
    points = np.asarray(mesh.points, dtype=np.float64)
    body = outline_features(points, body_edges(mesh, required=False))
    assert not body.wall.any() and not body.distance.any() and not body.normals.any() and not body.direction.any()
