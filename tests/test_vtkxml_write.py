"""The streaming VTK XML writer (``io/vtkxml_write.py``): what VTK, pyvista and meshio read back equals what was
written and what ``write_mesh`` writes; a failed or interrupted write leaves no file; progress is reported."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import pyvista as pv
from helpers import sphere_surface, temp_files

from msptcli.errors import InvalidInputError, OutputError
from msptcli.io.meshes import read_mesh, write_mesh
from msptcli.io.vtkxml_write import BLOCK_BYTES, streamable, write_streamed

PAGE = 4096


def fielded_surface() -> pv.PolyData:
    """A sphere with triangles, a line and vertices, and point, cell and field arrays of several types."""
    rng = np.random.default_rng(0)
    mesh = sphere_surface(24)
    mesh.lines = np.array([2, 0, 1])
    mesh.verts = np.array([1, 5, 1, 7])
    mesh.point_data["p"] = rng.normal(size=mesh.n_points).astype(np.float32)
    mesh.point_data["U"] = rng.normal(size=(mesh.n_points, 3))
    mesh.point_data["flag"] = (np.arange(mesh.n_points) % 3).astype(np.uint8)
    mesh.cell_data["id"] = np.arange(mesh.n_cells, dtype=np.int64)
    mesh.cell_data["tau"] = rng.normal(size=(mesh.n_cells, 3)).astype(np.float32)
    mesh.field_data["Cd"] = np.array([0.31, 0.02])
    return mesh


def mixed_grid() -> pv.UnstructuredGrid:
    """Two tetrahedra and a hexahedron, with point and cell arrays."""
    points = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1],
                       [2, 0, 0], [3, 0, 0], [3, 1, 0], [2, 1, 0], [2, 0, 1], [3, 0, 1], [3, 1, 1], [2, 1, 1]],
                      dtype=np.float64)  # fmt: skip
    cells = np.array([4, 0, 1, 2, 3, 4, 1, 2, 3, 4, 8, 5, 6, 7, 8, 9, 10, 11, 12])
    types = np.array([pv.CellType.TETRA, pv.CellType.TETRA, pv.CellType.HEXAHEDRON], dtype=np.uint8)
    grid = pv.UnstructuredGrid(cells, types, points)
    grid.point_data["p"] = np.linspace(0, 1, grid.n_points, dtype=np.float32)
    grid.cell_data["U"] = np.arange(9, dtype=np.float32).reshape(3, 3)
    return grid


def same_mesh(a: pv.DataSet, b: pv.DataSet) -> None:
    """The same points, cells and arrays (values and types), as read back."""
    assert type(a) is type(b)
    assert np.array_equal(a.points, b.points) and a.points.dtype == b.points.dtype
    if isinstance(a, pv.PolyData):
        for cells in ("faces", "lines", "verts", "strips"):
            assert np.array_equal(getattr(a, cells), getattr(b, cells)), cells
    else:
        assert np.array_equal(a.cells, b.cells) and np.array_equal(a.celltypes, b.celltypes)
    for data in ("point_data", "cell_data", "field_data"):
        x, y = getattr(a, data), getattr(b, data)
        assert sorted(x.keys()) == sorted(y.keys()), (data, x.keys(), y.keys())
        for name in x:
            assert np.asarray(x[name]).dtype == np.asarray(y[name]).dtype, name
            assert np.array_equal(np.asarray(x[name]), np.asarray(y[name])), name


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "zlib"])
@pytest.mark.parametrize("kind", ["vtp", "vtu"])
def test_read_back_equals_written_and_write_mesh(tmp_path, kind, compress):
    mesh = fielded_surface() if kind == "vtp" else mixed_grid()
    streamed = write_streamed(mesh, tmp_path / f"streamed.{kind}", compress=compress)
    reference = write_mesh(mesh, tmp_path / f"reference.{kind}")
    back = pv.read(streamed)
    same_mesh(back, pv.read(reference))
    assert back.n_points == mesh.n_points and back.n_cells == mesh.n_cells
    assert np.array_equal(back.point_data["p"], mesh.point_data["p"])
    assert temp_files(tmp_path) == []


def test_meshio_reads_it(tmp_path):
    import meshio

    for compress in (False, True):
        path = write_streamed(mixed_grid(), tmp_path / f"grid{compress}.vtu", compress=compress)
        mesh = meshio.read(path)
        assert len(mesh.points) == 13 and [c.type for c in mesh.cells] == ["tetra", "hexahedron"]
        assert np.array_equal(mesh.point_data["p"], mixed_grid().point_data["p"])


def test_arrays_over_many_blocks_and_the_progress(tmp_path):
    """An array of several blocks (raw and zlib): read back whole; progress counts every byte once, in order."""
    n = BLOCK_BYTES // 4 + 1000  # float32 'p' spans two blocks, the float64 points six
    cloud = pv.PolyData(np.random.default_rng(1).normal(size=(n, 3)))
    cloud.point_data["p"] = np.arange(n, dtype=np.float32)
    total = cloud.points.nbytes + cloud.point_data["p"].nbytes + cloud.verts.nbytes  # the verts: (n + 1) offsets
    for compress in (False, True):
        seen: list[tuple[int, int]] = []
        path = write_streamed(cloud, tmp_path / f"cloud{compress}.vtp", compress=compress,
                              progress=lambda done, all_, seen=seen: seen.append((done, all_)))  # fmt: skip
        back = pv.read(path)
        assert np.array_equal(back.points, cloud.points) and np.array_equal(back.point_data["p"], np.arange(n))
        dones = [d for d, _ in seen]
        assert len(seen) >= 8 and dones == sorted(dones) and {t for _, t in seen} == {dones[-1]}
        assert abs(dones[-1] - total) <= 16  # every array's bytes, VTK's leading offset 0 not among them


def test_an_interrupted_write_leaves_no_file_and_keeps_the_old_one(tmp_path):
    mesh = fielded_surface()
    path = tmp_path / "out.vtp"
    path.write_bytes(b"the previous result")

    def interrupt(done: int, total: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_streamed(mesh, path, progress=interrupt)
    assert path.read_bytes() == b"the previous result" and temp_files(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        write_streamed(mesh, tmp_path / "new.vtp", progress=interrupt)
    assert not (tmp_path / "new.vtp").exists() and temp_files(tmp_path) == []


def test_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(InvalidInputError, match="use write_mesh"):
        write_streamed(fielded_surface(), tmp_path / "surface.vtu")
    polyhedron = pv.UnstructuredGrid(
        np.array([17, 4, 3, 0, 1, 2, 3, 0, 1, 3, 3, 0, 2, 3, 3, 1, 2, 3]),
        np.array([pv.CellType.POLYHEDRON], dtype=np.uint8),
        np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64),
    )
    assert not streamable(polyhedron) and streamable(mixed_grid())
    with pytest.raises(InvalidInputError, match="use write_mesh"):
        write_streamed(polyhedron, tmp_path / "poly.vtu")
    surface = tmp_path / "input.vtp"
    write_mesh(fielded_surface(), surface)
    with pytest.raises(InvalidInputError, match="refusing to overwrite"):
        write_streamed(fielded_surface(), surface, inputs=(surface,))
    assert read_mesh(surface).n_points == fielded_surface().n_points
    assert temp_files(tmp_path) == []


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A tmpfs of 64 KiB (root only; skipped where mounting is not allowed), unmounted at teardown."""
    folder = tmp_path / "disk"
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip() or done.returncode}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "zlib"])
def test_a_full_disk_is_one_line_and_no_file(small_disk, compress):
    cloud = pv.PolyData(np.random.default_rng(2).normal(size=(20_000, 3)))  # 480 kB of points: no room
    path = small_disk / "cloud.vtp"
    with pytest.raises(OutputError) as caught:
        write_streamed(cloud, path, compress=compress)
    assert str(caught.value) == f"cannot write {path}: No space left on device"
    assert list(small_disk.iterdir()) == []
