"""The streaming VTK XML reader (msptcli/io/vtkxml.py) against VTK's own reader, on files VTK writes.

Every layout VTK writes (appended raw or base64, inline base64, ascii; no, zlib or lzma compression,
small blocks; UInt32 or UInt64 headers; Int32 or Int64 ids; either byte order; several pieces) on a
grid of hexahedra, tetrahedra, wedges and pyramids: the streaming subset equals VTK's whole-file
read at the same rows. Then `mspt prepare` with data.streaming always and never writes the same
sample, and bad files stop it with one line naming the file.
"""

from __future__ import annotations

import itertools
import re
import shutil
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import pyvista as pv
from helpers import EXAMPLE_CASE, EXAMPLES, invoke, ok, one_line_error, temp_files

from msptcli.data.manifest import read_manifest
from msptcli.data.prepare_case import _subsample
from msptcli.data.read import read_fields, read_fields_subset
from msptcli.data.sample import load_sample
from msptcli.errors import MeshReadError
from msptcli.io.vtkxml import VtkXmlFile

pytest_plugins = ["helpers"]

HEX, TETRA, WEDGE, PYRAMID = 12, 10, 13, 14


def mixed_grid(n: int = 4, seed: int = 0) -> pv.UnstructuredGrid:
    """n^3 cells cycling through hexahedron, tetrahedron, wedge and pyramid on a jittered lattice."""
    rng = np.random.default_rng(seed)
    m = n + 1
    i, j, k = np.meshgrid(np.arange(m), np.arange(m), np.arange(m), indexing="ij")
    points = np.stack([i.ravel(), j.ravel(), k.ravel()], 1).astype(np.float64)
    points += rng.normal(0, 0.08, points.shape)
    ci, cj, ck = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij"))
    base = ci * m * m + cj * m + ck
    corners = np.array([0, m * m, m * m + m, m, 1, m * m + 1, m * m + m + 1, m + 1])
    cells, types = [], []
    for c, b in enumerate(base):
        h = b + corners
        kind = (HEX, TETRA, WEDGE, PYRAMID)[c % 4]
        ids = {HEX: h, TETRA: h[[0, 1, 3, 4]], WEDGE: h[[0, 1, 3, 4, 5, 7]], PYRAMID: h[[0, 1, 2, 3, 4]]}[kind]
        cells += [len(ids), *ids]
        types.append(kind)
    grid = pv.UnstructuredGrid(np.array(cells), np.array(types, np.uint8), points)
    grid.cell_data["U"] = rng.normal(size=(grid.n_cells, 3)).astype(np.float32)
    grid.cell_data["p"] = rng.normal(size=grid.n_cells)  # Float64
    grid.point_data["U"] = rng.normal(size=(grid.n_points, 3)).astype(np.float32)
    grid.point_data["T"] = rng.normal(size=grid.n_points).astype(np.float32)
    return grid


def write_vtk(mesh, path: Path, *, mode="appended", encode=False, compressor="zlib", header64=False, ids64=True,
              big_endian=False, block=64, pieces=1) -> Path:  # fmt: skip
    """``mesh`` written by VTK's own XML writer with these settings."""
    import vtk

    writer = vtk.vtkXMLPolyDataWriter() if path.suffix == ".vtp" else vtk.vtkXMLUnstructuredGridWriter()
    if pieces > 1:  # each piece a different part of the mesh, as a parallel run writes it
        split = vtk.vtkExtractPolyDataPiece() if path.suffix == ".vtp" else vtk.vtkExtractUnstructuredGridPiece()
        split.SetInputData(mesh)
        writer.SetInputConnection(split.GetOutputPort())
    else:
        writer.SetInputData(mesh)
    writer.SetFileName(str(path))
    {"appended": writer.SetDataModeToAppended, "binary": writer.SetDataModeToBinary,
     "ascii": writer.SetDataModeToAscii}[mode]()  # fmt: skip
    writer.SetEncodeAppendedData(encode)
    {"none": writer.SetCompressorTypeToNone, "zlib": writer.SetCompressorTypeToZLib,
     "lzma": writer.SetCompressorTypeToLZMA}[compressor]()  # fmt: skip
    writer.SetHeaderTypeToUInt64() if header64 else writer.SetHeaderTypeToUInt32()
    writer.SetIdTypeToInt64() if ids64 else writer.SetIdTypeToInt32()
    writer.SetByteOrderToBigEndian() if big_endian else writer.SetByteOrderToLittleEndian()
    writer.SetBlockSize(block)
    if pieces > 1:
        writer.SetNumberOfPieces(pieces)
        writer.SetWritePiece(-1)
    assert writer.Write() == 1
    return path


def rows_of(n: int, k: int, seed: int = 1) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def assert_same_subset(path: Path, grid: pv.DataSet) -> None:
    """Cell centres, points and arrays at a random subset equal VTK's read of the whole file."""
    whole = pv.read(path)  # VTK's reader
    assert whole.n_cells == grid.n_cells  # all of it: the file holds ``grid``
    cells, points = rows_of(whole.n_cells, whole.n_cells // 3), rows_of(whole.n_points, whole.n_points // 3)
    with VtkXmlFile(path) as f:
        assert (f.n_points, f.n_cells) == (whole.n_points, whole.n_cells)
        np.testing.assert_allclose(f.cell_centres(cells), whole.cell_centers().points[cells], rtol=0, atol=1e-12)
        np.testing.assert_array_equal(f.points(points), np.asarray(whole.points, np.float64)[points])
        for name in whole.cell_data:
            expected = np.asarray(whole.cell_data[name], np.float32).reshape(whole.n_cells, -1)[cells]
            np.testing.assert_array_equal(f.array("cells", name, cells), expected)
        for name in whole.point_data:
            expected = np.asarray(whole.point_data[name], np.float32).reshape(whole.n_points, -1)[points]
            np.testing.assert_array_equal(f.array("points", name, points), expected)


LAYOUTS = [
    *(dict(mode="appended", encode=e, compressor=c, header64=h, ids64=i)
      for e, c, h, i in itertools.product((False, True), ("none", "zlib", "lzma"), (False, True), (False, True))),
    *(dict(mode="binary", compressor=c, header64=h, ids64=i)
      for c, h, i in itertools.product(("none", "zlib", "lzma"), (False, True), (False, True))),
    dict(mode="ascii", compressor="none", ids64=False),
    dict(mode="ascii", compressor="zlib", ids64=True),
    dict(mode="appended", compressor="zlib", big_endian=True),
    dict(mode="binary", compressor="none", big_endian=True, header64=True),
    dict(mode="appended", compressor="zlib", block=1 << 15),
]  # fmt: skip


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda d: "-".join(f"{k}={v}" for k, v in d.items()))
def test_subset_equals_vtk_in_every_layout(tmp_path, layout):
    grid = mixed_grid()
    assert_same_subset(write_vtk(grid, tmp_path / "volume.vtu", **layout), grid)


@pytest.mark.parametrize("pieces", [2, 3])
def test_pieces_are_read_as_one_mesh(tmp_path, pieces):
    grid = mixed_grid(n=5)
    path = write_vtk(grid, tmp_path / "volume.vtu", pieces=pieces)
    assert len(re.findall(rb"<Piece ", path.read_bytes()[:20000])) == pieces
    assert_same_subset(path, grid)


def test_polydata_of_vertices_lines_triangles_and_quads(tmp_path):
    rng = np.random.default_rng(3)
    points = rng.normal(size=(40, 3))
    poly = pv.PolyData(points, verts=[1, 0, 1, 5], lines=[2, 1, 2, 2, 3, 4], faces=[3, 5, 6, 7, 4, 8, 9, 10, 11] * 20)
    poly.cell_data["p"] = rng.normal(size=poly.n_cells).astype(np.float32)
    poly.point_data["T"] = rng.normal(size=poly.n_points)
    for compressor in ("none", "zlib"):
        assert_same_subset(write_vtk(poly, tmp_path / f"{compressor}.vtp", compressor=compressor), poly)


def test_polygons_and_polyhedra_are_refused_in_one_line(tmp_path):
    poly = pv.PolyData(np.random.default_rng(0).normal(size=(5, 3)), faces=[5, 0, 1, 2, 3, 4])
    poly.cell_data["p"] = np.ones(1, np.float32)
    path = write_vtk(poly, tmp_path / "polygon.vtp")
    with VtkXmlFile(path) as f, pytest.raises(MeshReadError, match=r"polygon\.vtp: .*5 points.*streaming: never"):
        f.cell_centres(np.arange(1))
    cube = pv.Cube().clean()
    faces = [len(cube.irregular_faces)] + [v for f in cube.irregular_faces for v in (len(f), *f)]
    polyhedron = pv.UnstructuredGrid(np.array([len(faces), *faces]), np.array([42], np.uint8), cube.points)
    path = write_vtk(polyhedron, tmp_path / "polyhedron.vtu")
    with VtkXmlFile(path) as f, pytest.raises(MeshReadError, match=r"polyhedron\.vtu: .*polyhedron cells"):
        f.cell_centres(np.arange(1))


def test_a_real_meshio_lzma_volume_gives_the_whole_file_subset():
    """The shipped OpenFOAM volume (meshio's inline LZMA, point data): the subset of read_fields."""
    path = EXAMPLE_CASE / "volume.vtu"
    choose = partial(_subsample, limit=3000, name="case_0000")
    whole = read_fields(path, ["U", "p"])
    keep = choose(len(whole.points))
    streamed = read_fields_subset(path, ["U", "p"], choose=choose)
    assert streamed.location == whole.location == "points"
    np.testing.assert_array_equal(streamed.points, whole.points[keep])
    for name in ("U", "p"):
        np.testing.assert_array_equal(streamed.fields[name], whole.fields[name][keep])


def test_cell_data_subset_equals_the_whole_file_subset(tmp_path):
    path = write_vtk(mixed_grid(n=6), tmp_path / "volume.vtu", compressor="zlib")
    choose = partial(_subsample, limit=50, name="case")
    whole = read_fields(path, ["U", "p"])  # point data lacks p: cell data at the cell centres
    keep = choose(len(whole.points))
    streamed = read_fields_subset(path, ["U", "p"], choose=choose)
    assert streamed.location == whole.location == "cells"
    np.testing.assert_allclose(streamed.points, whole.points[keep], rtol=0, atol=1e-12)
    for name in ("U", "p"):
        np.testing.assert_array_equal(streamed.fields[name], whole.fields[name][keep])


def test_subsample_is_a_uniform_subset_in_both_regimes():
    for n, limit in ((1_000_000, 5_000), (1_000_000, 300_000), (50_000, 49_999)):
        rows = _subsample(n, limit, "case_0007")
        assert len(rows) == limit and len(np.unique(rows)) == limit
        assert rows[0] >= 0 and rows[-1] < n and (np.diff(rows) > 0).all()
        np.testing.assert_array_equal(rows, _subsample(n, limit, "case_0007"))  # seeded: the same every run
        assert abs(rows.mean() / (n - 1) - 0.5) < 0.02  # spread over the whole range
    assert not np.array_equal(_subsample(1_000_000, 300_000, "a"), _subsample(1_000_000, 300_000, "b"))


# --- mspt prepare ----------------------------------------------------------------------------------


def cell_data_case(root: Path) -> Path:
    """A case: the shipped surface, a mixed-cell volume with cell data U and p around it, params."""
    case = root / "case_a"
    case.mkdir(parents=True)
    shutil.copy(EXAMPLE_CASE / "surface.vtu", case / "surface.vtu")
    shutil.copy(EXAMPLE_CASE / "params.json", case / "params.json")
    grid = mixed_grid(n=8)
    bounds = np.asarray(pv.read(case / "surface.vtu").bounds).reshape(3, 2)
    grid.points = bounds[:, 0] - 0.2 + np.asarray(grid.points) / 8 * (np.ptp(bounds, axis=1) + 0.4)
    write_vtk(grid, case / "volume.vtu", compressor="zlib", block=256)
    return case


def sample_arrays(out: Path) -> dict[str, np.ndarray]:
    (entry,) = read_manifest(out).samples
    sample = load_sample(out / entry.file)
    return {k: np.asarray(v) for k, v in sample.arrays.items()}


@pytest.mark.parametrize("case_of", ["cells", "points"])
def test_prepare_streaming_always_writes_the_never_sample(tmp_path, case_of):
    case = cell_data_case(tmp_path) if case_of == "cells" else EXAMPLES / "case_0000"
    samples = {}
    for mode in ("always", "never"):
        out = tmp_path / mode
        ok("prepare", case, "-o", out, "--set", "data.max_volume_points=300", "--set", f"data.streaming={mode}")
        samples[mode] = sample_arrays(out)
    assert samples["always"].keys() == samples["never"].keys()
    assert len(samples["always"]["volume/points"]) == 300
    for key, value in samples["never"].items():
        np.testing.assert_allclose(samples["always"][key], value, rtol=1e-6, atol=1e-6, err_msg=key)


def corrupt_block(path: Path) -> None:
    """Overwrite the middle of the appended data (inside a zlib block) with zeros."""
    data = bytearray(path.read_bytes())
    start = data.index(b"<AppendedData")
    at = (start + len(data)) // 2
    data[at : at + 64] = bytes(64)
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"<AppendedData") + (len(data) - data.index(b"<AppendedData")) // 2])


def lie_about_cells(path: Path) -> None:
    text = path.read_bytes()
    n = int(re.search(rb'NumberOfCells="(\d+)"', text)[1])
    path.write_bytes(re.sub(rb'NumberOfCells="\d+"', f'NumberOfCells="{n + 100}"'.encode(), text, count=1))


def unknown_compressor(path: Path) -> None:
    path.write_bytes(path.read_bytes().replace(b"vtkZLibDataCompressor", b"vtkZstdDataCompressor", 1))


BAD_VOLUMES = {
    "truncated": (truncate, "truncated"),
    "lying-header": (lie_about_cells, "the header says"),
    "corrupt-block": (corrupt_block, "does not decompress"),
    "unknown-compressor": (unknown_compressor, "unknown compressor 'vtkZstdDataCompressor'"),
}


@pytest.mark.parametrize("kind", BAD_VOLUMES)
def test_prepare_refuses_a_bad_volume_in_one_line(tmp_path, kind):
    spoil, needle = BAD_VOLUMES[kind]
    case = cell_data_case(tmp_path / "in")
    spoil(case / "volume.vtu")
    out = tmp_path / "data"
    result = invoke("prepare", case, "-o", out, "--set", "data.max_volume_points=300", "--set", "data.streaming=always")
    one_line_error(result, str(case / "volume.vtu"), needle)
    assert not (out / "manifest.json").exists()
    assert temp_files(out) == []
    assert not (out / "samples").exists() or list((out / "samples").iterdir()) == []


def test_streaming_auto_takes_large_vtk_xml_volumes_with_a_subset_only(tmp_path, monkeypatch):
    import msptcli.data.prepare_case as prepare_case
    from msptcli.config import DataConfig

    path = write_vtk(mixed_grid(), tmp_path / "volume.vtu")
    legacy = tmp_path / "volume.vtk"
    pv.read(path).save(legacy)
    subset, whole = DataConfig(max_volume_points=10), DataConfig()
    assert not prepare_case.streams(path, subset)  # small: through VTK
    monkeypatch.setattr(prepare_case, "STREAMING_BYTES", path.stat().st_size)
    assert prepare_case.streams(path, subset)
    assert not prepare_case.streams(path, whole)  # no subset asked: nothing to gain
    assert prepare_case.streams(path, DataConfig(streaming="always"))
    assert not prepare_case.streams(path, DataConfig(max_volume_points=10, streaming="never"))
    assert not prepare_case.streams(legacy, DataConfig(max_volume_points=10, streaming="always"))
