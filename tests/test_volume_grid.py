"""`mspt predict --volume-grid`: the volume fields on a structured grid (.vti) that ParaView can slice.

The grid module alone on a sphere, then predict on the shipped design with the tiny trained run: the .vti is
written and read back, its points in the body are masked, its values are those of the same points given as a
volume mesh, and it slices.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import pyvista as pv
from helpers import invoke, ok, one_line_error, sphere_surface, temp_files

from msptcli.errors import InvalidInputError, OptionError
from msptcli.geometry.grid import (
    AUTO_POINTS,
    MASK,
    MAX_POINTS,
    body_grid,
    fill_grid,
    grid_box,
    grid_dimensions,
    parse_grid_size,
    rescaled,
)
from msptcli.io.meshes import write_mesh

pytest_plugins = ["helpers"]

NAME = "case_0003_geometry"
DIMS = (48, 16, 16)  # coarse, but with grid points inside the Ahmed body (spacing 0.23 x 0.21 x 0.12 m)
VOLUME_FIELDS = {"U": 3, "p": 1}


# --- the grid alone ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"), [("96,48,48", (96, 48, 48)), (" 2, 3 ,4 ", (2, 3, 4)), ("auto", "auto"), ("AUTO", "auto"),
                       ("off", None), ("0", None)],
)  # fmt: skip
def test_grid_sizes_are_parsed(text, size):
    assert parse_grid_size(text) == size


@pytest.mark.parametrize(
    ("text", "needle"),
    [("abc", "give NX,NY,NZ"), ("10,10", "give NX,NY,NZ"), ("10,-1,10", "give NX,NY,NZ"), ("1.5,2,2", "NX,NY,NZ"),
     ("²,2,2", "NX,NY,NZ"), ("0,10,10", "at least 2 points"), ("1,10,10", "at least 2 points"),
     ("1000,1000,51", "coarser grid")],
)  # fmt: skip
def test_bad_grid_sizes_are_refused_with_the_fix(text, needle):
    with pytest.raises(OptionError, match=needle) as caught:
        parse_grid_size(text)
    assert "\n" not in str(caught.value) and "--volume-grid" in str(caught.value)


def test_the_largest_grid_is_allowed():
    assert parse_grid_size(f"{MAX_POINTS // 100},10,10") == (MAX_POINTS // 100, 10, 10)


def test_auto_dimensions_give_about_cubic_cells():
    low, high = np.array([-3.0, -1.6, 0.0]), np.array([8.0, 1.6, 2.0])  # the Ahmed cases' domain
    dims = grid_dimensions(low, high, "auto")
    spacing = (high - low) / (np.array(dims) - 1)
    assert 0.9 * AUTO_POINTS < np.prod(dims) < 1.1 * AUTO_POINTS
    assert spacing.max() / spacing.min() < 1.1, spacing
    assert grid_dimensions(low, high, (5, 6, 7)) == (5, 6, 7)


def test_the_box_is_the_templates_placed_on_the_body():
    body = np.array([[0.0, 0.0, 0.0], [2.0, 1.0, 0.5]])
    template = np.array([[-1.0, -2.0, 0.0], [3.0, 3.0, 4.0], [0.5, 0.5, 0.5]])  # relative to the body's box
    low, high = grid_box(body, template)
    assert np.allclose(low, [-2.0, -2.0, 0.0]) and np.allclose(high, [6.0, 3.0, 2.0])
    low, high = grid_box(body)  # without a template: the body's box grown by half its size
    assert np.allclose(low, [-1.0, -0.5, -0.25]) and np.allclose(high, [3.0, 1.5, 0.75])


def test_points_in_a_sphere_are_masked_and_zero(tmp_path):
    sphere = sphere_surface(24)  # radius 1 at the origin
    grid, fluid = body_grid(sphere, (21, 21, 21))
    assert isinstance(grid, pv.ImageData) and grid.dimensions == (21, 21, 21) and fluid.shape == (21**3,)
    r = np.linalg.norm(np.asarray(grid.points), axis=1)
    clear = np.abs(r - 1.0) > 0.02  # the faceted sphere lies within 0.02 of the round one
    assert np.array_equal(fluid[clear], r[clear] > 1.0) and (~fluid).sum() > 100
    x = np.asarray(grid.points)[fluid]
    filled = fill_grid(grid, fluid, {"p": x[:, 0] + 3.0, "U": np.ones((len(x), 3), dtype=np.float32)})
    assert filled.point_data.active_scalars_name is None  # ParaView 5.11 slices garbage when U is active
    back = pv.read(write_mesh(filled, tmp_path / "g.vti"))
    assert back.dimensions == (21, 21, 21) and np.array_equal(back[MASK], fluid.astype(np.uint8))
    assert np.array_equal(back["p"][~fluid], np.zeros((~fluid).sum())) and (back["p"][fluid] > 1).all()
    assert back["U"].shape == (21**3, 3) and (back["U"][~fluid] == 0).all() and (back["U"][fluid] == 1).all()
    assert temp_files(tmp_path) == []


def test_write_mesh_writes_a_grid_as_pyvista_does_and_only_as_vti(tmp_path):
    grid = pv.ImageData(dimensions=(4, 3, 2), spacing=(0.5, 1.0, 2.0), origin=(1.0, 2.0, 3.0))
    grid.point_data["p"] = np.arange(grid.n_points, dtype=np.float32)
    grid.save(tmp_path / "pyvista.vti")
    write_mesh(grid, tmp_path / "mspt.vti")
    assert (tmp_path / "mspt.vti").read_bytes() == (tmp_path / "pyvista.vti").read_bytes()
    with pytest.raises(InvalidInputError, match=r"written as one of \.vti, not '\.vtu'"):
        write_mesh(grid, tmp_path / "grid.vtu")


def test_rescaled_grid_returns_to_the_inputs_units():
    grid = pv.ImageData(dimensions=(3, 3, 3), spacing=(2.0, 2.0, 4.0), origin=(1.0, 0.0, -2.0))
    assert np.allclose(rescaled(grid, 1000.0).bounds, [0.001, 0.005, 0.0, 0.004, -0.002, 0.006])


# --- predict ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid_prediction(tmp_path_factory, trained, design_case):
    out = tmp_path_factory.mktemp("grid")
    geometry = design_case / "geometry.stl"
    dims = ",".join(map(str, DIMS))
    result = ok("predict", trained.run, geometry, "--volume-points", 300, "--volume-grid", dims, "-o", out)
    return out, geometry, result


def test_predict_writes_a_grid_with_the_asked_dimensions(grid_prediction):
    out, geometry, result = grid_prediction
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{NAME}{suffix}" for suffix in (".vtp", "_volume.vtu", "_grid.vti", ".json", ".png")
    )
    assert f"wrote {out / NAME}_grid.vti" in result.output.replace("\n", "")
    grid = pv.read(out / f"{NAME}_grid.vti")
    assert isinstance(grid, pv.ImageData) and grid.dimensions == DIMS
    assert set(grid.point_data.keys()) == {"U", "p", "U_std", "p_std", MASK}
    for field, k in VOLUME_FIELDS.items():
        for name in (field, f"{field}_std"):
            values = np.asarray(grid.point_data[name])
            assert values.shape == ((grid.n_points,) if k == 1 else (grid.n_points, k)) and np.isfinite(values).all()
        assert np.asarray(grid.point_data[field]).std() > 0
        assert (np.asarray(grid.point_data[f"{field}_std"]) >= 0).all()
    body = pv.read(geometry)
    for axis in range(3):  # the grid spans the training domain around the body
        assert grid.bounds[2 * axis] < body.bounds[2 * axis] and grid.bounds[2 * axis + 1] > body.bounds[2 * axis + 1]
    summary = json.loads((out / f"{NAME}.json").read_text())["volume_grid"]
    assert summary["file"] == f"{NAME}_grid.vti" and summary["dimensions"] == list(DIMS)
    assert summary["points"] == grid.n_points and summary["fluid_points"] == int(grid[MASK].sum())
    assert np.allclose(summary["origin"], grid.origin) and np.allclose(summary["spacing"], grid.spacing)
    assert temp_files(out) == []


def test_grid_points_inside_the_body_are_masked(grid_prediction):
    out, geometry, _ = grid_prediction
    grid = pv.read(out / f"{NAME}_grid.vti")
    mask = np.asarray(grid[MASK])
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    # an independent test of inside: the signed distance of VTK's implicit function (negative inside)
    signed = pv.PolyData(np.asarray(grid.points)).compute_implicit_distance(pv.read(geometry))["implicit_distance"]
    clear = np.abs(signed) > 1e-3
    assert np.array_equal(mask[clear] == 0, signed[clear] < 0) and (mask == 0).sum() >= 4
    inside = mask == 0
    for name in ("U", "p", "U_std", "p_std"):
        assert (np.asarray(grid[name])[inside] == 0).all()
    assert (np.linalg.norm(grid["U"][~inside], axis=1) > 0).all()


def test_grid_values_are_those_of_the_same_points_as_a_volume_mesh(grid_prediction, trained, tmp_path):
    out, geometry, _ = grid_prediction
    grid = pv.read(out / f"{NAME}_grid.vti")
    fluid = np.asarray(grid[MASK]) == 1
    cloud = pv.PolyData(np.asarray(grid.points)[fluid]).cast_to_unstructured_grid()
    cloud.save(tmp_path / "grid_points.vtu")
    ok("predict", trained.run, geometry, "--volume", tmp_path / "grid_points.vtu", "-o", tmp_path / "out")
    as_mesh = pv.read(tmp_path / "out" / f"{NAME}_volume.vtu")
    assert np.array_equal(as_mesh.points, cloud.points)
    for field in VOLUME_FIELDS:
        on_grid, on_mesh = np.asarray(grid[field])[fluid], np.asarray(as_mesh[field])
        assert on_grid.std() > 0  # the comparison is between fields that vary: it can fail
        scale = np.abs(on_mesh).max()
        assert np.allclose(on_grid, on_mesh, rtol=1e-5, atol=1e-5 * scale), np.abs(on_grid - on_mesh).max()
    # and the point order matters: the same values in another order do not match
    assert not np.allclose(np.asarray(grid["p"])[fluid][::-1], np.asarray(as_mesh["p"]))


def test_the_grid_slices_into_the_fields(grid_prediction):
    out, _, _ = grid_prediction
    grid = pv.read(out / f"{NAME}_grid.vti")
    cut = grid.slice(normal="z")
    assert cut.n_points > 0 and cut.n_cells > 0
    assert {"U", "p", "U_std", "p_std", MASK} <= set(cut.point_data.keys())
    assert np.isfinite(cut["p"]).all() and np.asarray(cut["p"]).std() > 0
    contour = grid.contour([float(np.median(grid["p"]))], scalars="p")
    assert contour.n_points > 0


def test_a_grid_alone_with_no_volume_points_and_in_the_inputs_units(trained, design_case, tmp_path):
    large = pv.read(design_case / "geometry.stl").scale(1024.0)  # a power of two: the same body after --scale
    large.save(tmp_path / "large.stl")
    args = ("--volume-points", 0, "--volume-grid", "8,6,4", "--uncertainty", 0)
    ok("predict", trained.run, tmp_path / "large.stl", "--scale", 1 / 1024, *args, "-o", tmp_path / "large")
    ok("predict", trained.run, design_case / "geometry.stl", *args, "-o", tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "large").iterdir()) == ["large.json", "large.png", "large.vtp",
                                                                     "large_grid.vti"]  # fmt: skip
    scaled, metres = pv.read(tmp_path / "large" / "large_grid.vti"), pv.read(tmp_path / "m" / f"{NAME}_grid.vti")
    assert set(scaled.point_data.keys()) == {"U", "p", MASK}  # no draws, no spread
    assert np.allclose(np.array(scaled.bounds), 1024.0 * np.array(metres.bounds), rtol=1e-6)  # the input's units
    assert np.array_equal(scaled[MASK], metres[MASK])
    assert np.allclose(scaled["p"], metres["p"], atol=1e-5)


@pytest.mark.parametrize(
    ("value", "needle"),
    [("0,10,10", "at least 2 points"), ("abc", "give NX,NY,NZ"), ("5000,5000,5", "ask for a coarser grid")],
)
def test_predict_refuses_a_bad_grid_in_one_line(tmp_path, value, needle):
    result = invoke("predict", tmp_path / "run", tmp_path / "a.stl", "--volume-grid", value, "-o", tmp_path / "out")
    one_line_error(result, "--volume-grid", needle)
    assert not (tmp_path / "out").exists()


def test_a_flat_body_gets_no_grid_in_one_line():
    plate = pv.Plane(i_resolution=2, j_resolution=2).triangulate()  # zero extent along z
    with pytest.raises(InvalidInputError, match=r"no extent along some axis.*drop --volume-grid"):
        body_grid(plate, (4, 4, 4))
