"""Bad mesh files: one line naming the file, and nothing from VTK on stderr; surfaces with no faces or no area."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import pyvista as pv
from helpers import box_surface, invoke, one_line_error, roundtrip

from msptcli.data.prepare_case import surface_arrays, volume_arrays
from msptcli.data.read import read_fields
from msptcli.errors import InvalidInputError

pytest_plugins = ["helpers"]

#: Read a mesh, print the MsptError's type and message on stdout; anything on stderr comes from below.
READ = """
import sys
from msptcli.errors import MsptError
from msptcli.io.meshes import read_mesh
try:
    read_mesh(sys.argv[1])
except MsptError as exc:
    print(type(exc).__name__, exc)
else:
    print("read")
"""


def coincident_triangles() -> pv.PolyData:
    """Two triangles whose six vertices are one point: zero area, no extent."""
    return pv.PolyData.from_regular_faces(np.full((6, 3), 0.5), np.arange(6).reshape(2, 3))


def points_only() -> pv.PolyData:
    """Ten points as vertex cells: a cloud, not a surface."""
    return pv.PolyData(np.random.default_rng(0).random((10, 3)))


# --- VTK's own output ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"garbage\x00\x01 not a vtk file\nmore\n", b"# vtk DataFile Version 3.0\n"])
def test_unreadable_vtk_gives_one_line_and_no_vtk_noise(tmp_path, content):
    path = tmp_path / "bad.vtk"
    path.write_bytes(content)
    run = subprocess.run([sys.executable, "-c", READ, str(path)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [run.stdout.strip()] and run.stdout.startswith("MeshReadError "), run.stdout
    assert str(path) in run.stdout
    assert run.stderr == "", f"VTK wrote to stderr:\n{run.stderr}"


def test_stderr_works_again_after_a_read(tmp_path):
    path = tmp_path / "bad.vtk"
    path.write_bytes(b"garbage")
    script = READ + "print('still here', file=sys.stderr)\n"
    run = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert run.stderr == "still here\n"


# --- surfaces that are not surfaces -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "mesh", "message"),
    [
        ("cloud.vtp", points_only, "the surface has no faces"),
        ("coincident.vtp", coincident_triangles, "the surface has zero area (all its points coincide)"),
        ("coincident.stl", coincident_triangles, "the surface has zero area (all its points coincide)"),
    ],
)
def test_surface_errors_name_the_file(tmp_path, name, mesh, message):
    path = tmp_path / name
    mesh().save(path)
    with pytest.raises(InvalidInputError) as info:
        surface_arrays(read_fields(path, []))
    assert str(info.value).startswith(f"{path}: {message}")


def test_flat_faces_are_refused(tmp_path):
    path = tmp_path / "line.vtp"
    pv.PolyData.from_regular_faces(np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]), np.array([[0, 1, 2]])).save(path)
    with pytest.raises(InvalidInputError, match=r"line\.vtp: the surface has zero area \(its faces are degenerate"):
        surface_arrays(read_fields(path, []))


def test_volume_arrays_name_the_surface_file(tmp_path):
    cloud = points_only()
    with pytest.raises(InvalidInputError, match=r"^body.stl: the surface has no faces"):
        volume_arrays(np.zeros((2, 3)), cloud, source=Path("body.stl"))
    with pytest.raises(InvalidInputError, match=r"^the surface has no faces"):  # built in memory: no file to name
        volume_arrays(np.zeros((2, 3)), cloud)


@pytest.mark.parametrize(("name", "mesh"), [("cloud.vtp", points_only), ("coincident.stl", coincident_triangles)])
def test_prepare_refuses_a_surface_without_area(tmp_path, name, mesh):
    path = tmp_path / name
    mesh().save(path)
    result = invoke("prepare", path, "-o", tmp_path / "out", "--surface-fields", "", "--volume-fields", "")
    one_line_error(result, str(path), "the surface has")


# --- write -> read round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".vtp", ".vtu", ".vtk"])
def test_surfaces_round_trip_through_our_writer_and_reader(tmp_path, suffix):
    box = box_surface()
    box.point_data["p"] = np.arange(box.n_points, dtype=np.float32)
    back = roundtrip(box, tmp_path / f"box{suffix}")
    assert np.allclose(np.asarray(back.points), np.asarray(box.points))
    assert np.array_equal(np.asarray(back.point_data["p"]), np.asarray(box.point_data["p"]))


def test_a_volume_round_trips_and_is_refused_as_a_surface_file(tmp_path):
    from msptcli.io.meshes import write_mesh

    grid = pv.ImageData(dimensions=(4, 3, 2)).cast_to_unstructured_grid()
    grid.point_data["U"] = np.ones((grid.n_points, 3), dtype=np.float32)
    back = roundtrip(grid, tmp_path / "volume.vtu")
    assert back.n_cells == grid.n_cells and np.array_equal(np.asarray(back.point_data["U"]), grid.point_data["U"])
    with pytest.raises(InvalidInputError, match=r"a volume mesh is written as one of \.vtu, \.vtk"):
        write_mesh(grid, tmp_path / "volume.vtp")
    assert not (tmp_path / "volume.vtp").exists()
