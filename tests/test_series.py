"""Transient series: a .pvd collection or numbered snapshots, read in time order on one fixed mesh.

Everything is read from the shipped example (12 snapshots of vortex shedding past a circle); the
broken series are modified copies in ``tmp_path``.
"""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import pyvista as pv

from msptcli.data.series import Series, read_series, series_files
from msptcli.errors import InvalidInputError, MeshReadError
from msptcli.io.pvd import read_pvd
from msptcli.io.pvd import write_pvd as write_collection  # the tests' own write_pvd writes by hand

CASE = Path(__file__).resolve().parents[1] / "examples" / "transient" / "case_0000"
PVD = CASE / "series.pvd"
SNAPSHOTS = sorted(CASE.glob("fields_*.vtu"))


def pvd_times() -> np.ndarray:
    return np.array([float(d.get("timestep")) for d in ET.parse(PVD).getroot().iter("DataSet")])


def write_pvd(path: Path, entries: list[tuple[str, str]], part: list[str] | None = None) -> Path:
    """A collection of ``(timestep, file)`` entries, written as ParaView writes them."""
    parts = part or ["0"] * len(entries)
    lines = [
        f'    <DataSet timestep="{t}" group="" part="{p}" file="{f}"/>'
        for (t, f), p in zip(entries, parts, strict=True)
    ]
    text = '<?xml version="1.0"?>\n<VTKFile type="Collection" version="0.1">\n  <Collection>\n'
    path.write_text(text + "\n".join(lines) + "\n  </Collection>\n</VTKFile>\n")
    return path


def copy_case(tmp_path: Path) -> Path:
    folder = tmp_path / "case"
    shutil.copytree(CASE, folder)
    return folder


def copy_numbered(tmp_path: Path, names: list[str]) -> Path:
    """Copies of the first ``len(names)`` snapshots under these names in ``tmp_path / 'run'``."""
    folder = tmp_path / "run"
    folder.mkdir()
    for name, src in zip(names, SNAPSHOTS[: len(names)], strict=True):
        shutil.copy(src, folder / name)
    return folder


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message, message
    return message


# --- reading ---------------------------------------------------------------------------------------------


def test_pvd_gives_its_times_and_the_fields_pyvista_reads():
    calls: list[tuple[int, int]] = []
    series = read_series(PVD, ["U", "p"], progress=lambda i, n: calls.append((i, n)))
    assert isinstance(series, Series)
    assert series.source == PVD and series.files == SNAPSHOTS
    np.testing.assert_array_equal(series.times, pvd_times())
    assert series.times.dtype == np.float64 and series.dt == pytest.approx(0.399)
    direct = pv.read(SNAPSHOTS[5])
    n = direct.n_points
    assert series.location == "points" and series.points.shape == (n, 3)
    np.testing.assert_array_equal(series.points, np.asarray(direct.points, dtype=np.float64))
    assert series.fields["U"].shape == (12, n, 3) and series.fields["p"].shape == (12, n, 1)
    assert series.fields["U"].dtype == np.float32
    np.testing.assert_array_equal(series.fields["U"][5], direct.point_data["U"])
    np.testing.assert_array_equal(series.fields["p"][5, :, 0], direct.point_data["p"])
    assert series.mesh.n_cells == direct.n_cells
    assert calls == [(i, 12) for i in range(1, 13)]


def test_start_and_stop_select_snapshots_before_reading():
    calls: list[tuple[int, int]] = []
    series = read_series(PVD, ["p"], start=3, stop=7, progress=lambda i, n: calls.append((i, n)))
    assert series.files == SNAPSHOTS[3:7] and calls == [(i, 4) for i in range(1, 5)]
    np.testing.assert_array_equal(series.times, pvd_times()[3:7])
    np.testing.assert_array_equal(series.fields["p"][0, :, 0], pv.read(SNAPSHOTS[3]).point_data["p"])
    tail = read_series(PVD, ["p"], start=-2)
    assert tail.files == SNAPSHOTS[-2:]


def test_series_files_of_a_pvd_a_folder_and_a_glob():
    files, times = series_files(PVD)
    assert files == SNAPSHOTS and times is not None
    np.testing.assert_array_equal(times, pvd_times())
    assert series_files(CASE)[0] == SNAPSHOTS  # the folder's only .pvd
    assert series_files(CASE, "series.pvd")[0] == SNAPSHOTS
    files, times = series_files(CASE, "fields_*.vtu")
    assert files == SNAPSHOTS and times is None
    assert series_files(str(CASE / "fields_00*.vtu")) == (SNAPSHOTS[:10], None)


def test_numbered_files_in_a_folder_with_dt():
    series = read_series(CASE, ["U"], pattern="fields_*.vtu", dt=0.5)
    assert series.source == SNAPSHOTS[0] and series.files == SNAPSHOTS
    np.testing.assert_allclose(series.times, np.arange(12) * 0.5)
    assert series.dt == pytest.approx(0.5)
    np.testing.assert_array_equal(series.fields["U"][7], pv.read(SNAPSHOTS[7]).point_data["U"])
    # a selection keeps the times of the whole series
    np.testing.assert_allclose(
        read_series(CASE, ["U"], pattern="fields_*.vtu", dt=0.5, start=8).times, [4, 4.5, 5, 5.5]
    )


def test_numbered_files_sort_by_number_not_by_name(tmp_path):
    folder = copy_numbered(tmp_path, [f"s_{i}.vtu" for i in range(1, 11)])
    series = read_series(str(folder / "s_*.vtu"), ["p"], dt=1.0)
    assert [f.name for f in series.files] == [f"s_{i}.vtu" for i in range(1, 11)]
    for k in (1, 9):  # s_2.vtu is SNAPSHOTS[1], s_10.vtu is SNAPSHOTS[9]
        np.testing.assert_array_equal(series.fields["p"][k, :, 0], pv.read(SNAPSHOTS[k]).point_data["p"])
    assert read_series(folder, ["p"], dt=1.0).files == series.files  # the folder's only numbered group


def test_time_value_field_data_is_used_without_dt(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for i, src in enumerate(SNAPSHOTS[:3]):
        mesh = pv.read(src)
        mesh.field_data["TimeValue"] = [7.0 + 0.25 * i]
        mesh.save(folder / f"fields_{i}.vtu")
    series = read_series(folder, ["U", "p"], pattern="fields_*.vtu")
    np.testing.assert_allclose(series.times, [7.0, 7.25, 7.5])
    assert series.dt == pytest.approx(0.25)
    np.testing.assert_allclose(read_series(folder, ["p"], dt=9.0).times, [7.0, 7.25, 7.5])  # the files' times win


def test_cell_data_gives_cell_centres(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for i, src in enumerate(SNAPSHOTS[:3]):
        cells = pv.read(src).point_data_to_cell_data(pass_point_data=False)
        cells.save(folder / f"fields_{i}.vtu")
    series = read_series(folder, ["U", "p"], dt=0.1)
    first = pv.read(folder / "fields_0.vtu")
    assert series.location == "cells" and series.fields["U"].shape == (3, first.n_cells, 3)
    np.testing.assert_allclose(series.points, first.cell_centers().points)
    np.testing.assert_array_equal(series.fields["p"][0, :, 0], first.cell_data["p"])


def test_unequal_time_values_are_refused(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    for i, (src, t) in enumerate(zip(SNAPSHOTS[:4], [1.0, 1.5, 2.0, 2.6], strict=True)):
        mesh = pv.read(src)
        mesh.field_data["TimeValue"] = [t]
        mesh.save(folder / f"fields_{i}.vtu")
    with pytest.raises(InvalidInputError, match=r"fields_2\.vtu \(t=2\) to fields_3\.vtu \(t=2\.6\).*fixed time step"):
        read_series(folder, ["p"])


# --- errors ----------------------------------------------------------------------------------------------


def test_unequal_spacing_names_the_pair_of_files(tmp_path):
    folder = copy_case(tmp_path)
    pvd = folder / "series.pvd"
    pvd.write_text(pvd.read_text().replace('timestep="31.596"', 'timestep="31.7"'))
    calls: list[int] = []
    with pytest.raises(
        InvalidInputError,
        match=r"not equally spaced: fields_003\.vtu \(t=31\.197\) to fields_004\.vtu "
        r"\(t=31\.7\).*fixed time step",
    ) as exc:
        read_series(pvd, ["p"], progress=lambda i, n: calls.append(i))
    assert str(pvd) in one_line(exc)
    assert calls == []  # a .pvd's times are checked before any snapshot is read


def test_moving_points_are_refused(tmp_path):
    folder = copy_case(tmp_path)
    mesh = pv.read(folder / "fields_007.vtu")
    mesh.points[100] += [0.3, 0.0, 0.0]
    mesh.save(folder / "fields_007.vtu")
    with pytest.raises(InvalidInputError, match=r"fields_007\.vtu: points moved by up to 0\.3 .*moving mesh") as exc:
        read_series(folder / "series.pvd", ["U"])
    one_line(exc)


def test_a_different_number_of_points_is_refused(tmp_path):
    folder = copy_case(tmp_path)
    full = pv.read(folder / "fields_004.vtu")
    part = full.extract_cells(np.arange(full.n_cells // 2))
    part.save(folder / "fields_004.vtu")
    with pytest.raises(
        InvalidInputError,
        match=rf"fields_004\.vtu: {part.n_points} points, fields_000\.vtu has "
        rf"{full.n_points}",
    ) as exc:
        read_series(folder / "series.pvd", ["U"])
    one_line(exc)


def test_changed_cells_are_refused(tmp_path):
    folder = copy_case(tmp_path)
    mesh = pv.read(folder / "fields_002.vtu")
    quads = mesh.cells.reshape(-1, 5)[::-1]  # the same quads, in the opposite order
    changed = pv.UnstructuredGrid(quads.ravel(), mesh.celltypes, mesh.points)
    changed.point_data.update(mesh.point_data)
    changed.save(folder / "fields_002.vtu")
    with pytest.raises(InvalidInputError, match=r"fields_002\.vtu: the cell connectivity differ") as exc:
        read_series(folder / "series.pvd", ["p"], stop=4)
    one_line(exc)


def test_a_gap_in_the_numbers_names_the_missing_snapshot(tmp_path):
    names = ["fields_000.vtu", "fields_001.vtu", "fields_002.vtu", "fields_004.vtu"]
    folder = copy_numbered(tmp_path, names)
    with pytest.raises(InvalidInputError, match=r"snapshot 3 is missing between fields_002\.vtu and fields_004\.vtu"):
        series_files(folder, "fields_*.vtu")
    with pytest.raises(InvalidInputError, match="snapshot 3 is missing") as exc:
        read_series(folder, ["p"], dt=1.0)
    one_line(exc)


def test_two_files_with_the_same_number_are_refused(tmp_path):
    folder = copy_numbered(tmp_path, ["f_1.vtu", "f_01.vtu", "f_2.vtu"])
    with pytest.raises(InvalidInputError, match=r"f_1\.vtu: snapshot 1 again, f_01\.vtu has the same number"):
        series_files(folder, "f_*.vtu")


def test_a_pvd_naming_a_missing_file(tmp_path):
    folder = copy_case(tmp_path)
    (folder / "fields_006.vtu").unlink()
    with pytest.raises(
        MeshReadError,
        match=r"series\.pvd: snapshot file fields_006\.vtu \(timestep 32\.394\) does "
        "not exist",
    ) as exc:
        read_series(folder / "series.pvd", ["p"])
    one_line(exc)


def test_a_missing_field_names_the_file():
    with pytest.raises(InvalidInputError, match=r"fields_000\.vtu: no field 'T' \(fields in the file: U, p\)"):
        read_series(PVD, ["U", "T"])


def test_one_snapshot_is_not_a_series(tmp_path):
    with pytest.raises(InvalidInputError, match=r"1 snapshot\(s\) selected by start=11.*at least 2") as exc:
        read_series(PVD, ["p"], start=11)
    one_line(exc)
    single = write_pvd(tmp_path / "one.pvd", [("30", str(SNAPSHOTS[0]))])
    with pytest.raises(InvalidInputError, match=r"1 snapshot.*at least 2"):
        read_series(single, ["p"])
    with pytest.raises(InvalidInputError, match="at least 2"):
        read_series(SNAPSHOTS[0], ["p"], dt=1.0)


def test_numbered_files_without_times_need_dt():
    with pytest.raises(InvalidInputError, match=r"fields_000\.vtu: no snapshot time .*data\.transient\.dt") as exc:
        read_series(CASE, ["p"], pattern="fields_*.vtu")
    one_line(exc)
    with pytest.raises(InvalidInputError, match="positive"):
        read_series(CASE, ["p"], pattern="fields_*.vtu", dt=0.0)


def test_duplicate_times_in_a_pvd(tmp_path):
    pvd = write_pvd(
        tmp_path / "dup.pvd", [("1.0", str(SNAPSHOTS[0])), ("1", str(SNAPSHOTS[1])), ("2", str(SNAPSHOTS[2]))]
    )
    with pytest.raises(InvalidInputError, match=r"fields_000\.vtu and .*fields_001\.vtu have the same timestep 1"):
        series_files(pvd)


def test_unsorted_pvd_entries_are_sorted_by_time(tmp_path):
    pvd = write_pvd(
        tmp_path / "shuffled.pvd", [("2", str(SNAPSHOTS[2])), ("0", str(SNAPSHOTS[0])), ("1", str(SNAPSHOTS[1]))]
    )
    files, times = series_files(pvd)
    assert files == SNAPSHOTS[:3] and times is not None
    np.testing.assert_array_equal(times, [0, 1, 2])


def test_multi_part_collections_are_refused(tmp_path):
    entries = [("0", str(SNAPSHOTS[0])), ("0", str(SNAPSHOTS[1])), ("1", str(SNAPSHOTS[2])), ("1", str(SNAPSHOTS[3]))]
    pvd = write_pvd(tmp_path / "parts.pvd", entries, part=["0", "1", "0", "1"])
    with pytest.raises(InvalidInputError, match="multi-part collections are not supported"):
        series_files(pvd)


def test_unreadable_pvd_and_missing_paths(tmp_path):
    bad = tmp_path / "bad.pvd"
    bad.write_text("<VTKFile><Collection>")
    with pytest.raises(MeshReadError, match=r"bad\.pvd: cannot be read as a \.pvd collection"):
        series_files(bad)
    with pytest.raises(MeshReadError, match="no such file or folder"):
        series_files(tmp_path / "nothing.pvd")
    with pytest.raises(MeshReadError, match="matches no file"):
        series_files(str(tmp_path / "f_*.vtu"))
    with pytest.raises(MeshReadError, match=re.escape(f"{CASE}: no file matches 'u_*.vtu'")):
        series_files(CASE, "u_*.vtu")


def test_a_written_collection_reads_back_its_files_and_times(tmp_path):
    # write_pvd and read_pvd are one format: names that need XML quoting and times at full precision survive
    folder = tmp_path / 'run "a" & b'
    folder.mkdir()
    names = [f"snap <{k}>.vtu" for k in range(3)]
    for name, src in zip(names, SNAPSHOTS, strict=False):
        shutil.copy(src, folder / name)
    times = [0.1, 0.2 + 1e-12, 1 / 3]
    pvd = write_collection(tmp_path / "out.pvd", [(t, f"{folder.name}/{n}") for t, n in zip(times, names, strict=True)])
    files, read = read_pvd(pvd)
    assert files == [folder / n for n in names]
    np.testing.assert_array_equal(read, times)  # repr of every float: no digit lost
