"""Outward normals, exact distances, fluid sample points and patch levels on tiny and real bodies."""

import numpy as np
import pytest
import pyvista as pv
import vtk
from helpers import EXAMPLE_CASE, EXAMPLE_SURFACE

from msptcli.errors import InvalidInputError
from msptcli.geometry.distance import distance_to_surface
from msptcli.geometry.faces import cell_centers, fan_triangles, point_to_cell_average, polygon_area_vectors
from msptcli.geometry.orientation import cell_normals, outward_area_vectors, point_normals
from msptcli.geometry.patches import patch_level
from msptcli.geometry.sampling import outside_body, sample_on_surface, sample_points_around


def reversed_cells(mesh: pv.DataSet, which: np.ndarray | None = None) -> pv.UnstructuredGrid:
    """A copy of ``mesh`` with the vertex order of the cells ``which`` (bool mask; all by default) reversed."""
    grid = mesh.cast_to_unstructured_grid() if not isinstance(mesh, pv.UnstructuredGrid) else mesh
    conn, offsets = np.asarray(grid.cell_connectivity), np.asarray(grid.cell_offsets)
    sizes = np.diff(offsets)
    cell = np.repeat(np.arange(grid.n_cells), sizes)
    pos = np.arange(len(conn))
    flip = np.ones(grid.n_cells, dtype=bool) if which is None else which
    new = np.where(flip[cell], offsets[cell] + offsets[cell + 1] - 1 - pos, pos)
    padded = np.insert(conn[new], offsets[:-1], sizes)  # VTK's legacy layout: size, ids, size, ids, ...
    out = pv.UnstructuredGrid(padded, np.asarray(grid.celltypes), np.asarray(grid.points))
    for name in grid.cell_data:
        out.cell_data[name] = grid.cell_data[name]
    for name in grid.point_data:
        out.point_data[name] = grid.point_data[name]
    return out


@pytest.fixture(scope="module")
def fine_sphere() -> pv.PolyData:
    return pv.Sphere(radius=1.0, theta_resolution=120, phi_resolution=120)


@pytest.fixture(scope="module")
def openfoam_surface() -> pv.UnstructuredGrid:
    return pv.read(EXAMPLE_SURFACE)


@pytest.fixture(scope="module")
def stl_body() -> pv.PolyData:
    return pv.read(EXAMPLE_CASE / "geometry.stl")


# --- normals ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flip", ["none", "all", "random"])
def test_sphere_normals_point_away_from_the_centre(flip, rng):
    sphere = pv.Sphere(radius=2.0, center=(1.0, -1.0, 0.5))
    which = {"none": None, "all": np.ones(sphere.n_cells, bool), "random": rng.random(sphere.n_cells) < 0.3}[flip]
    mesh = sphere if which is None else reversed_cells(sphere, which)
    radial = np.asarray(mesh.points) - (1.0, -1.0, 0.5)
    radial /= np.linalg.norm(radial, axis=1, keepdims=True)
    n = point_normals(mesh)
    assert n.shape == (mesh.n_points, 3) and n.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-12)
    assert (np.einsum("ij,ij->i", n, radial) > 0.99).all()
    centres = cell_centers(mesh) - (1.0, -1.0, 0.5)
    assert (np.einsum("ij,ij->i", cell_normals(mesh), centres) > 0).all()


@pytest.mark.parametrize("flipped", [False, True])
def test_box_cell_normals_centres_and_areas(flipped):
    box = pv.Box(bounds=(0, 2, 0, 3, 0, 4))  # six quads
    mesh = reversed_cells(box) if flipped else box
    centres, normals = cell_centers(mesh), cell_normals(mesh)
    np.testing.assert_allclose(np.abs(normals).sum(axis=1), 1.0, atol=1e-12)  # axis-aligned unit normals
    offset = centres - (1, 1.5, 2)  # face centre from the box centre: along the outward normal
    np.testing.assert_allclose(np.einsum("ij,ij->i", offset, normals), np.linalg.norm(offset, axis=1), atol=1e-12)
    np.testing.assert_allclose(np.sort(np.linalg.norm(offset, axis=1)), [1, 1, 1.5, 1.5, 2, 2], atol=1e-12)
    areas = np.linalg.norm(outward_area_vectors(mesh), axis=1)
    np.testing.assert_allclose(np.sort(areas), [6, 6, 8, 8, 12, 12], atol=1e-12)
    np.testing.assert_allclose(outward_area_vectors(mesh).sum(axis=0), 0, atol=1e-12)  # closed surface


def test_two_bodies_are_oriented_separately():
    a = pv.Sphere(radius=1.0, center=(0, 0, 0))
    b = reversed_cells(pv.Sphere(radius=0.5, center=(5, 0, 0)))
    both = a.cast_to_unstructured_grid().merge(b, merge_points=False)
    n = cell_normals(both)
    centre = np.where((cell_centers(both)[:, 0] > 2.5)[:, None], (5.0, 0, 0), (0.0, 0, 0))
    assert (np.einsum("ij,ij->i", n, cell_centers(both) - centre) > 0).all()


def test_unmerged_stl_points_get_the_same_normal_as_merged_ones():
    sphere = pv.Sphere(theta_resolution=12, phi_resolution=8)
    faces = sphere.regular_faces
    soup = pv.PolyData.from_regular_faces(
        np.asarray(sphere.points)[faces.ravel()], np.arange(faces.size).reshape(-1, 3)
    )
    merged = point_normals(sphere)[faces.ravel()]
    np.testing.assert_allclose(point_normals(soup), merged, atol=1e-12)


def test_fan_triangles_keep_the_vertex_order():
    hexagon = pv.PolyData(
        np.array([[np.cos(t), np.sin(t), 0] for t in np.arange(6) * np.pi / 3]), faces=[6, 0, 1, 2, 3, 4, 5]
    )
    _, tri, cell = fan_triangles(hexagon)
    np.testing.assert_array_equal(tri, [[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 5]])
    np.testing.assert_array_equal(cell, 0)
    np.testing.assert_allclose(polygon_area_vectors(hexagon), [[0, 0, 1.5 * np.sqrt(3)]], atol=1e-12)
    np.testing.assert_allclose(point_to_cell_average(hexagon, np.arange(6.0)), [2.5])


@pytest.mark.parametrize("name", ["surface.vtu", "geometry.stl"])
@pytest.mark.parametrize("flipped", [False, True])
def test_real_body_normals_point_into_the_fluid(name, flipped):
    mesh = pv.read(EXAMPLE_CASE / name)
    if flipped:
        mesh = reversed_cells(mesh)
    points, n = np.asarray(mesh.points), point_normals(mesh)
    x0, x1, _, _, z0, z1 = mesh.bounds
    nose = np.argmin(np.linalg.norm(points - (x0, 0, 0.5 * (z0 + z1)), axis=1))
    roof = np.argmin(np.linalg.norm(points - (0.5 * (x0 + x1), 0, z1), axis=1))
    belly = np.argmin(np.linalg.norm(points - (0.5 * (x0 + x1), 0, z0), axis=1))
    assert n[nose] @ (-1, 0, 0) > 0.99
    assert n[roof] @ (0, 0, 1) > 0.99
    assert n[belly] @ (0, 0, -1) > 0.99
    if name == "surface.vtu":  # OpenFOAM orders the body faces into the body
        expected = 1 if flipped else -1
        assert (np.einsum("ij,ij->i", polygon_area_vectors(mesh), cell_normals(mesh)) * expected > 0).all()


# --- distance -----------------------------------------------------------------------------------------------


def brute_force_distance(x: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> float:
    """Distance from x to triangle abc: to the plane where x projects inside, else to the nearest edge."""

    def to_segment(p, q):
        t = np.clip((x - p) @ (q - p) / ((q - p) @ (q - p)), 0, 1)
        return np.linalg.norm(x - (p + t * (q - p)))

    n = np.cross(b - a, c - a)
    foot = x - ((x - a) @ n) / (n @ n) * n
    inside = all(np.cross(q - p, foot - p) @ n >= 0 for p, q in ((a, b), (b, c), (c, a)))
    if inside:
        return abs((x - a) @ n) / np.linalg.norm(n)
    return min(to_segment(a, b), to_segment(b, c), to_segment(c, a))


def test_distance_matches_brute_force_on_a_tiny_mesh(rng):
    mesh = pv.Sphere(theta_resolution=5, phi_resolution=4).merge(pv.Box(bounds=(0.3, 1.0, -0.2, 0.4, 0.1, 0.5)))
    mesh.points += rng.normal(scale=0.05, size=mesh.points.shape)
    points, tri, _ = fan_triangles(mesh)
    x = np.vstack([rng.uniform(-1.5, 1.5, (300, 3)), rng.normal(scale=10, size=(20, 3)), points[:5]])
    d, direction = distance_to_surface(x, mesh)
    a, b, c = points[tri[:, 0]], points[tri[:, 1]], points[tri[:, 2]]
    expected = [min(brute_force_distance(xi, *abc) for abc in zip(a, b, c, strict=True)) for xi in x]
    np.testing.assert_allclose(d, expected, rtol=1e-12, atol=1e-14)
    assert (d[-5:] == 0).all() and (direction[-5:] == 0).all()  # surface vertices
    np.testing.assert_allclose(np.linalg.norm(direction[:-5], axis=1), 1.0, atol=1e-12)
    on_surface, _ = distance_to_surface(x + d[:, None] * direction, mesh)
    np.testing.assert_allclose(on_surface, 0, atol=1e-12)


def test_distance_to_a_fine_sphere_is_close_to_analytic(fine_sphere, rng):
    directions = rng.normal(size=(4000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    radii = rng.uniform(0.3, 4.0, size=4000)  # near the centre every facet is a candidate: slow
    x = directions * radii[:, None]
    d, towards = distance_to_surface(x, fine_sphere)
    sag = 1 - np.cos(np.pi / 120)  # how far the facets lie inside the unit sphere, at most (about 3e-4)
    np.testing.assert_allclose(d, np.abs(radii - 1.0), atol=2 * sag)
    outside = radii > 1.01
    inside = radii < 0.99
    np.testing.assert_allclose(np.einsum("ij,ij->i", towards[outside], -directions[outside]), 1, atol=1e-3)
    np.testing.assert_allclose(np.einsum("ij,ij->i", towards[inside], directions[inside]), 1, atol=1e-3)


def test_distance_to_the_real_surface_matches_vtk(openfoam_surface, rng):
    points, tri, _ = fan_triangles(openfoam_surface)
    x = rng.uniform((-0.5, -0.5, -0.2), (2.0, 0.5, 0.8), size=(1500, 3))
    d, _ = distance_to_surface(x, openfoam_surface)
    implicit = vtk.vtkImplicitPolyDataDistance()
    implicit.SetInput(pv.PolyData.from_regular_faces(points, tri))
    expected = np.abs([implicit.EvaluateFunction(xi) for xi in x])
    np.testing.assert_allclose(d, expected, rtol=1e-10, atol=1e-13)


def test_distance_of_no_points(fine_sphere):
    d, direction = distance_to_surface(np.zeros((0, 3)), fine_sphere)
    assert d.shape == (0,) and direction.shape == (0, 3)


# --- sampling -----------------------------------------------------------------------------------------------


def test_sample_points_around_a_sphere_are_outside_and_deterministic():
    sphere = pv.Sphere(radius=1.0, theta_resolution=60, phi_resolution=60)
    x = sample_points_around(sphere, 5000, margin=0.5, seed=3)
    assert x.shape == (5000, 3) and x.dtype == np.float64
    assert (np.linalg.norm(x, axis=1) > np.cos(np.pi / 60)).all()  # outside every facet
    assert (np.abs(x) <= 2.0).all()  # the box of the body, [-1, 1], enlarged by 0.5 * 2 on every side
    np.testing.assert_array_equal(x, sample_points_around(sphere, 5000, margin=0.5, seed=3))
    assert not np.array_equal(x, sample_points_around(sphere, 5000, margin=0.5, seed=4))
    inner = np.linalg.norm(x, axis=1) < 1.2  # uniform: the shell 1 < r < 1.2 holds its share of the box
    assert abs(inner.mean() - 4 / 3 * np.pi * (1.2**3 - 1) / (64 - 4 / 3 * np.pi)) < 0.02


def test_sample_points_around_the_real_body_stay_above_the_ground(stl_body):
    x = sample_points_around(stl_body, 2000, margin=0.5, seed=0, ground_z=0.0)
    assert (x[:, 2] >= 0).all() and x[:, 2].min() < 0.04  # the box reaches the ground below the body
    d, _ = distance_to_surface(x, stl_body)
    assert (d > 0).all()
    flipped = sample_points_around(reversed_cells(stl_body), 2000, margin=0.5, seed=0, ground_z=0.0)
    np.testing.assert_array_equal(x, flipped)
    assert sample_points_around(stl_body, 0).shape == (0, 3)


def test_outside_body_of_a_box():
    box = pv.Box(bounds=(0, 1, 0, 2, 0, 3))
    x = np.array([[0.5, 1.0, 1.5], [2.0, 1.0, 1.5], [0.5, -1.0, 1.5], [0.1, 0.1, 0.1]])
    np.testing.assert_array_equal(outside_body(x, box), [False, True, True, False])
    np.testing.assert_array_equal(outside_body(x, reversed_cells(box)), [False, True, True, False])
    assert outside_body(np.zeros((0, 3)), box).shape == (0,)


# --- patch levels -------------------------------------------------------------------------------------------


def test_patch_level_rule_by_hand():
    assert patch_level(1) == 0  # one point: one patch
    assert patch_level(1000) == 5  # K ~ sqrt(1000) = 31.6: round(0.5 * 9.97) = 5
    assert patch_level(1000, num_supernodes=4) == 3  # K * Q ~ sqrt(n): 5 - log2(4)
    assert patch_level(3, num_supernodes=4) == 0  # round(0.79) - 2 < 0: at least one patch
    assert patch_level(1000, patch_size=100) == 3  # 1000 / 100 = 10 patches: round(3.32) = 3
    assert patch_level(1000, patch_size=5000) == 0  # patches larger than the cloud: one patch
    assert patch_level(1000, num_patches=64) == 6
    assert patch_level(10, num_patches=64) == 3  # K <= n: floor(log2 10) = 3
    assert patch_level(2**20, patch_size=1) == 20


def test_patch_level_errors():
    with pytest.raises(InvalidInputError, match="at least one point, got 0"):
        patch_level(0)
    with pytest.raises(InvalidInputError, match="patch_size must be at least 1, got 0"):
        patch_level(10, patch_size=0)


# --- errors -------------------------------------------------------------------------------------------------


def test_clear_errors(fine_sphere):
    cloud = pv.PolyData()
    cloud.points = np.random.default_rng(0).random((10, 3))
    with pytest.raises(InvalidInputError, match="no cells"):
        point_normals(cloud)
    with pytest.raises(InvalidInputError, match="no faces"):
        point_normals(pv.PolyData(cloud.points))  # vertex cells only
    with pytest.raises(InvalidInputError, match="not triangles, quads or polygons"):
        cell_normals(pv.Sphere(theta_resolution=4, phi_resolution=4).merge(pv.Line()))
    with pytest.raises(InvalidInputError, match=r"shape \(m, 3\), got \(4, 2\)"):
        distance_to_surface(np.zeros((4, 2)), fine_sphere)
    with pytest.raises(InvalidInputError, match="point 1 has a non-finite coordinate"):
        distance_to_surface(np.array([[0, 0, 0], [np.nan, 0, 0]]), fine_sphere)
    nan_surface = fine_sphere.copy()
    nan_surface.points[7] = np.nan
    with pytest.raises(InvalidInputError, match="surface point 7"):
        point_normals(nan_surface)
    with pytest.raises(InvalidInputError, match="not closed"):
        sample_points_around(pv.Plane(), 10)
    with pytest.raises(InvalidInputError, match="n must be non-negative"):
        sample_points_around(fine_sphere, -1)
    with pytest.raises(InvalidInputError, match="ground_z"):
        sample_points_around(fine_sphere, 10, ground_z=5.0)
    with pytest.raises(InvalidInputError, match="pyvista mesh"):
        point_normals(np.zeros((3, 3)))


# --- points drawn on a surface by area -----------------------------------------------------------------------


def test_surface_samples_follow_the_face_areas():
    """Two triangles of areas 1 and 3: a quarter of the points on the first (a binomial test that can fail)."""
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [3, 0, 1], [4, 0, 1], [3, 6, 1]], dtype=float)
    mesh = pv.PolyData.from_regular_faces(points, np.array([[0, 1, 2], [3, 4, 5]]))
    n = 40_000
    x, normals = sample_on_surface(mesh, n, seed=3)
    on_first = int((x[:, 2] < 0.5).sum())
    assert abs(on_first - n / 4) < 4 * np.sqrt(n * 0.25 * 0.75), on_first  # 4 sigma
    assert np.allclose(np.abs(normals[:, 2]), 1)  # both triangles lie in z = const planes
    # uniform inside a triangle: the mean is its centroid
    assert np.allclose(x[x[:, 2] < 0.5].mean(axis=0), points[:3].mean(axis=0), atol=0.02)


def test_surface_samples_do_not_depend_on_the_tessellation():
    """A box and the same box with every triangle split into 16: the same share of points on each face."""
    box = pv.Box(bounds=(0, 4, 0, 2, 0, 1)).triangulate().clean()
    fine = box.subdivide(2)
    assert fine.n_cells == 16 * box.n_cells
    n = 30_000
    shares = []
    for mesh in (box, fine):
        x, normals = sample_on_surface(mesh, n, seed=0)
        assert np.allclose(np.linalg.norm(normals, axis=1), 1)
        assert (np.einsum("ij,ij->i", normals, x - np.array([2, 1, 0.5])) > 0).all()  # outward
        shares.append(
            [int((np.round(normals) == axis).all(axis=1).sum()) / n for axis in np.vstack([np.eye(3), -np.eye(3)])]
        )
    area = np.array([2, 4, 8, 2, 4, 8]) / 28  # faces normal to +x, +y, +z, -x, -y, -z
    for share in shares:
        assert np.allclose(share, area, atol=4 * np.sqrt(0.25 / n))
    a, b = sample_on_surface(box, 100, seed=7), sample_on_surface(box, 100, seed=7)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], sample_on_surface(box, 100, seed=8)[0])


def test_surface_samples_refuse_zero_area():
    flat = pv.PolyData.from_regular_faces(np.zeros((3, 3)), np.array([[0, 1, 2]]))
    with pytest.raises(InvalidInputError, match="zero area"):
        sample_on_surface(flat, 10)
