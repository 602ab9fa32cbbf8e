"""`mspt inspect` and `mspt config`, through the CLI, on the shipped Ahmed case and on tiny meshes made here.

Every number `mspt inspect` reports is checked against pyvista or NumPy computing it another way; the
suggested config must load and name the arrays a person would pick; `mspt config` must print exactly the
config.yaml that `mspt prepare` saves, and its --defaults template must load back as the defaults.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import pyvista as pv
import yaml
from helpers import EXAMPLE_CASE, invoke, ok, one_line_error, sphere_surface

from msptcli.config import MsptConfig, load_config
from msptcli.config_text import config_template, config_yaml
from msptcli.errors import ConfigError

pytest_plugins = ["helpers"]


def inspect_json(*args: object) -> list[dict]:
    """``mspt inspect ARGS --json``: stdout must be one JSON document (nothing else on it)."""
    return json.loads(ok("inspect", *args, "--json").stdout)


def by_name(entry: dict, name: str, location: str = "point") -> dict:
    (found,) = [a for a in entry["arrays"] if a["name"] == name and a["location"] == location]
    return found


def signed_volume(mesh: pv.DataSet) -> float:
    """The divergence theorem on pyvista's own triangulation, in the file's vertex order."""
    tri = pv.PolyData(mesh.points, mesh.cells) if isinstance(mesh, pv.UnstructuredGrid) else mesh
    tri = tri.triangulate()
    t = tri.regular_faces
    p = np.asarray(tri.points, dtype=np.float64)
    return float(np.einsum("ij,ij->i", p[t[:, 0]], np.cross(p[t[:, 1]], p[t[:, 2]])).sum() / 6)


def boundary_edges(mesh: pv.DataSet) -> int:
    poly = mesh if isinstance(mesh, pv.PolyData) else mesh.extract_surface(algorithm="dataset_surface")
    return poly.extract_feature_edges(
        boundary_edges=True, feature_edges=False, manifold_edges=False, non_manifold_edges=False
    ).n_cells


# --- the shipped case ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> list[dict]:
    return inspect_json(EXAMPLE_CASE, EXAMPLE_CASE / "geometry.stl")


def test_a_case_folder_is_its_surface_and_volume(shipped):
    surface, volume, stl = shipped
    assert [e["role"] for e in shipped] == ["surface", "volume", "mesh"]
    assert surface["case"] == volume["case"] == "case_0000" and stl["case"] is None
    assert surface["path"] == str(EXAMPLE_CASE / "surface.vtu") and volume["path"] == str(EXAMPLE_CASE / "volume.vtu")
    assert surface["params"] == str(EXAMPLE_CASE / "params.json")
    for entry in shipped:
        mesh = pv.read(entry["path"])
        assert (entry["points"], entry["cells"]) == (mesh.n_points, mesh.n_cells)
        np.testing.assert_allclose(entry["bounds"], mesh.bounds)
        assert entry["extent"] == pytest.approx(np.diff(np.reshape(mesh.bounds, (3, 2)), axis=1).ravel())
        assert entry["file_bytes"] == Path(entry["path"]).stat().st_size
        types = mesh.celltypes if hasattr(mesh, "celltypes") else mesh.cast_to_unstructured_grid().celltypes
        names, counts = np.unique(types, return_counts=True)
        expected = {pv.CellType(int(n)).name.lower(): int(c) for n, c in zip(names, counts, strict=True)}
        assert entry["cell_types"] == expected
    assert volume["kind"] == "volume" and volume["surface"] is None
    assert surface["kind"] == stl["kind"] == "surface"


def test_array_statistics_match_numpy(shipped):
    surface, volume, _ = shipped
    mesh = pv.read(EXAMPLE_CASE / "surface.vtu")
    p = by_name(surface, "p")
    assert (p["components"], p["dtype"], p["nonfinite"]) == (1, "float32", 0)
    assert p["min"] == pytest.approx(float(mesh.point_data["p"].min()))
    assert p["max"] == pytest.approx(float(mesh.point_data["p"].max()))
    tau = mesh.cell_data["wallShearStress"].astype(np.float64)
    cell_tau = by_name(surface, "wallShearStress", "cell")
    assert cell_tau["components"] == 3
    assert cell_tau["min"] == pytest.approx(np.linalg.norm(tau, axis=1).min())
    assert cell_tau["max"] == pytest.approx(np.linalg.norm(tau, axis=1).max())
    np.testing.assert_allclose(cell_tau["component_min"], tau.min(axis=0))
    np.testing.assert_allclose(cell_tau["component_max"], tau.max(axis=0))
    u = np.linalg.norm(pv.read(EXAMPLE_CASE / "volume.vtu").point_data["U"].astype(np.float64), axis=1)
    assert by_name(volume, "U")["median"] == pytest.approx(np.median(u))
    assert {a["name"] for a in volume["arrays"]} == {"U", "p", "nut"}


def test_surfaces_closed_with_their_area_volume_and_orientation(shipped):
    surface, _, stl = shipped
    params = json.loads((EXAMPLE_CASE / "params.json").read_text())
    for entry in (surface, stl):
        mesh = pv.read(entry["path"])
        s = entry["surface"]
        assert s["closed"] and s["boundary_edges"] == boundary_edges(mesh) == 0 and s["non_manifold_edges"] == 0
        assert s["regions"] == 1
        # VTK measures a polygon by its area vector, a little less than its triangles' areas where it is not flat
        assert s["area"] == pytest.approx(mesh.area, rel=1e-4)
        assert s["enclosed_volume"] == pytest.approx(abs(signed_volume(mesh)), rel=1e-6)  # VTK cuts polygons its way
        assert s["enclosed_volume"] == pytest.approx(params["stl"]["volume"], rel=1e-3)
    # OpenFOAM orders the body faces into the body (a negative signed volume); the STL outward
    assert signed_volume(pv.read(surface["path"])) < 0 and surface["surface"]["orientation"] == "inward"
    assert signed_volume(pv.read(stl["path"])) > 0 and stl["surface"]["orientation"] == "outward"


def test_the_suggested_config_names_the_case_fields_and_loads(shipped, tmp_path):
    suggested = shipped[0]["suggested"]
    assert suggested == shipped[1]["suggested"]  # one suggestion for the case, on each of its meshes
    data = suggested["config"]["data"]
    assert data["surface_fields"] == ["p", "wallShearStress"] and data["volume_fields"] == ["U", "p"]
    assert (data["pressure_field"], data["wall_shear_field"]) == ("p", "wallShearStress")
    # max p / (U^2/2) with U = the median speed of the volume (40): the case's p is kinematic
    assert data["density"] == 1.0
    (note,) = [n for n in suggested["notes"] if "kinematic" in n]
    assert "U = 40" in note
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(suggested["config"]))
    assert load_config(tmp_path / "c.yaml").data.volume_fields == ["U", "p"]
    assert shipped[2]["suggested"]["config"] == {"data": {}}  # an STL holds no fields


def test_the_table_shows_the_same(shipped):
    out = ok("inspect", EXAMPLE_CASE).stdout
    for text in (
        "surface of case_0000",
        "volume of case_0000",
        "11,536 / 11,506",
        "quad 11,450",
        "closed",
        "enclosed volume",
        "wallShearStress",
        "suggested config:",
        "  volume_fields: [U, p]",
        "note: p looks",
    ):  # the terminal wraps a long title where the path's length puts it: compare with whitespace normalised
        assert " ".join(text.split()) in " ".join(out.split()), text
    yaml_block = out.split("suggested config:\n", 1)[1].split("\nnote:", 1)[0]
    assert yaml.safe_load(yaml_block) == shipped[0]["suggested"]["config"]


# --- tiny meshes ---------------------------------------------------------------------------------------


def test_an_open_surface(tmp_path):
    plane = pv.Plane(i_resolution=4, j_resolution=3).triangulate()
    plane.save(tmp_path / "plane.vtp")
    (entry,) = inspect_json(tmp_path / "plane.vtp")
    s = entry["surface"]
    assert not s["closed"] and s["enclosed_volume"] is None
    assert s["boundary_edges"] == boundary_edges(plane) == 14
    assert s["area"] == pytest.approx(plane.area)
    assert "closed" in ok("inspect", tmp_path / "plane.vtp").stdout


def test_a_closed_sphere_with_inverted_faces_and_normals(tmp_path):
    sphere = sphere_surface()
    outward = sphere.compute_normals(point_normals=True, cell_normals=False, auto_orient_normals=True)
    inverted = sphere.flip_faces()
    inverted.point_data["Normals"] = -outward.point_data["Normals"]
    inverted.save(tmp_path / "sphere.vtp")
    (entry,) = inspect_json(tmp_path / "sphere.vtp")
    s = entry["surface"]
    assert s["closed"] and s["regions"] == 1 and s["orientation"] == "inward" and s["outward"] == 0.0
    assert signed_volume(inverted) < 0
    assert s["enclosed_volume"] == pytest.approx(sphere.volume, rel=1e-9)
    assert s["area"] == pytest.approx(sphere.area, rel=1e-9)
    assert s["normals_arrays"] == {"point:Normals": 0.0}
    sphere.point_data["Normals"] = outward.point_data["Normals"]
    two = sphere.merge(sphere.translate((3, 0, 0), inplace=False))  # two bodies, outward, with outward normals
    two.save(tmp_path / "two.vtp")
    (entry,) = inspect_json(tmp_path / "two.vtp")
    assert entry["surface"]["regions"] == 2 and entry["surface"]["orientation"] == "outward"
    assert entry["surface"]["normals_arrays"] == {"point:Normals": 1.0}
    assert entry["surface"]["enclosed_volume"] == pytest.approx(2 * sphere.volume, rel=1e-9)


def test_a_non_manifold_edge(tmp_path):
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1]], dtype=float)
    fan = pv.PolyData.from_regular_faces(points, np.array([[0, 1, 2], [1, 0, 3], [0, 1, 4]]))
    fan.save(tmp_path / "fan.vtp")
    (entry,) = inspect_json(tmp_path / "fan.vtp")
    assert entry["surface"]["non_manifold_edges"] == 1  # edge 0-1 of three triangles
    assert entry["surface"]["boundary_edges"] == 6 and not entry["surface"]["closed"]


def test_nan_and_inf_are_counted_and_left_out_of_the_ranges(tmp_path):
    plane = pv.Plane(i_resolution=5, j_resolution=5)
    p = np.linspace(-2.0, 1.0, plane.n_points)
    p[[0, 4]] = np.nan
    p[7] = np.inf
    plane.point_data["p"] = p
    tau = np.ones((plane.n_cells, 3))
    tau[3, 1] = np.nan
    plane.cell_data["wallShearStress"] = tau
    plane.save(tmp_path / "nan.vtp")
    (entry,) = inspect_json(tmp_path / "nan.vtp")
    info = by_name(entry, "p")
    assert info["nonfinite"] == 3
    assert info["min"] == np.nanmin(p[np.isfinite(p)]) and info["max"] == np.max(p[np.isfinite(p)])
    assert by_name(entry, "wallShearStress", "cell")["nonfinite"] == 1
    assert by_name(entry, "wallShearStress", "cell")["max"] == pytest.approx(np.sqrt(3))
    notes = " ".join(entry["suggested"]["notes"])
    assert "p (point data) has 3 points with NaN or Inf" in notes
    assert "wallShearStress (cell data) has 1 cells with NaN or Inf" in notes
    assert entry["suggested"]["config"]["data"]["surface_fields"] == ["p", "wallShearStress"]
    table = ok("inspect", tmp_path / "nan.vtp").stdout
    assert re.search(r"│ p\s.*│\s+3 │", table), table  # the count in the table's last column


def test_field_names_are_recognised_by_role(tmp_path):
    plane = pv.Plane()
    for name in ("pMean", "p", "temperature"):
        plane.point_data[name] = np.linspace(-1, 1, plane.n_points)
    for name in ("wallShearStressMean", "UMean", "Normals"):
        plane.point_data[name] = np.ones((plane.n_points, 3))
    plane.save(tmp_path / "named.vtp")
    (entry,) = inspect_json(tmp_path / "named.vtp")
    s = entry["suggested"]
    assert s["candidates"]["surface pressure"] == ["pMean", "p"]  # time-averaged first
    assert s["config"]["data"]["surface_fields"] == ["pMean", "wallShearStressMean"]
    assert s["config"]["data"]["pressure_field"] == "pMean"
    assert "point:Normals" in entry["surface"]["normals_arrays"]


def test_the_density_note_reads_the_pressure_scale(tmp_path):
    mesh = pv.read(EXAMPLE_CASE / "surface.vtu")
    kinematic = tmp_path / "kinematic.vtu"
    mesh.save(kinematic)
    # without a velocity: no reading of the density
    (entry,) = inspect_json(kinematic)
    assert "density" not in entry["suggested"]["config"]["data"]
    assert not [n for n in entry["suggested"]["notes"] if "U^2" in n]
    (entry,) = inspect_json(kinematic, "--set", "data.reference_velocity=40")
    assert entry["suggested"]["config"]["data"]["density"] == 1.0
    mesh.point_data["p"] = mesh.point_data["p"] * 998.0  # the same flow in water, in pascals
    water = tmp_path / "water.vtu"
    mesh.save(water)
    (entry,) = inspect_json(water, "--set", "data.reference_velocity=40")
    assert entry["suggested"]["config"]["data"]["density"] == 1000.0
    mesh.point_data["p"] = mesh.point_data["p"] / 998.0 * 1.2 + 101325.0  # absolute, in air: no reading
    absolute = tmp_path / "absolute.vtu"
    mesh.save(absolute)
    (entry,) = inspect_json(absolute, "--set", "data.reference_velocity=40")
    assert "density" not in entry["suggested"]["config"]["data"]
    assert any("absolute pressure" in n for n in entry["suggested"]["notes"])


def test_a_case_folder_found_with_the_config_patterns(tmp_path):
    case = tmp_path / "run_7"
    case.mkdir()
    shutil.copy(EXAMPLE_CASE / "surface.vtu", case / "boundary_7.vtu")
    one_line_error(invoke("inspect", case), "no surface file matching 'surface.vtu'")
    (entry,) = inspect_json(case, "--set", "data.surface_file=boundary_*.vtu")
    assert entry["case"] == "run_7" and entry["role"] == "surface" and entry["path"] == str(case / "boundary_7.vtu")
    data = entry["suggested"]["config"]["data"]
    assert data["volume_fields"] == []  # no volume file: surface only
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  surface_file: boundary_*.vtu\n  volume_file: null\n")
    (entry,) = inspect_json(case, "-c", config)
    assert "volume_fields" not in entry["suggested"]["config"]["data"]


def test_missing_and_unreadable_inputs_are_one_line(tmp_path):
    one_line_error(invoke("inspect", tmp_path / "none.vtu"), "none.vtu", "no such file")
    (tmp_path / "text.vtu").write_text("not a mesh")
    one_line_error(invoke("inspect", tmp_path / "text.vtu"), "text.vtu", "unreadable")
    (tmp_path / "notes.txt").write_text("x")
    one_line_error(invoke("inspect", tmp_path / "notes.txt"), "unsupported mesh format")
    one_line_error(invoke("inspect", EXAMPLE_CASE, "--set", "data.nope=1"), "unknown key 'data.nope'")


# --- mspt config ---------------------------------------------------------------------------------------


def test_config_prints_what_prepare_saves(prepared):
    printed = ok("config", "-c", prepared.config).stdout
    assert printed == (prepared.data / "config.yaml").read_text()
    assert yaml.safe_load(printed) == load_config(prepared.config).model_dump(mode="json")


def test_config_applies_the_file_then_the_overrides():
    printed = ok("config", "-c", "examples/ahmed/config.yaml", "--set", "train.lr=0.01").stdout
    expected = load_config("examples/ahmed/config.yaml", ["train.lr=0.01"])
    assert printed == config_yaml(expected)
    assert yaml.safe_load(printed)["train"]["lr"] == 0.01 and expected.model.width == 64
    assert yaml.safe_load(ok("config").stdout) == MsptConfig().model_dump(mode="json")


def test_config_errors_are_load_configs_one_line(tmp_path):
    for override in ("train.lrx=1", "train.lr=fast", "data.split.fractions=[1, 1, 1]"):
        with pytest.raises(ConfigError) as raised:
            load_config(None, [override])
        assert one_line_error(invoke("config", "--set", override)) == f"error: {raised.value}"
    one_line_error(invoke("config", "-c", tmp_path / "none.yaml"), "no such config file")
    one_line_error(invoke("config", "--defaults", "--set", "train.lr=1"), "--defaults")


def walk(model: type, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, FieldInfo) of every field of the config, nested sections too."""
    from pydantic import BaseModel

    found = []
    for name, info in model.model_fields.items():
        found.append((prefix + name, info))
        for candidate in (info.annotation, *getattr(info.annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                found += walk(candidate, f"{prefix}{name}.")
    return found


def test_the_defaults_template_loads_back_as_the_defaults(tmp_path):
    text = ok("config", "--defaults").stdout
    assert text == config_template()
    path = tmp_path / "template.yaml"
    path.write_text(text)
    assert load_config(path) == MsptConfig()
    assert load_config(path).model_dump(mode="json") == MsptConfig().model_dump(mode="json")
    comments = " ".join(re.sub(r"^[\s#]+", "", line) for line in text.splitlines() if line.lstrip().startswith("#"))
    comments = " ".join(comments.split())
    keys = walk(MsptConfig)
    assert len(keys) > 80
    for key, info in keys:
        leaf = key.rsplit(".", 1)[-1]
        assert f"{leaf}:" in text, key
        if info.description:  # the words of each description, in order, in the comments
            assert " ".join(info.description.split()) in comments, key
    # an optional section that is off shows its keys commented out, and they load once uncommented
    assert "  transient: null\n" in text and "  #   series_file: series.pvd\n" in text
    assert "one of: mean, max, softmax" in text


def test_the_template_check_can_fail(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text(config_template().replace("  width: 64\n", "  width: 128\n"))
    assert load_config(broken) != MsptConfig()
