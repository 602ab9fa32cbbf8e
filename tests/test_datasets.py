"""The public datasets' layouts through `mspt prepare`, by their shipped configs alone.

Each test builds a tiny copy of a public dataset's layout in tmp_path from the REAL shipped
OpenFOAM examples (examples/ahmed/case_0000..0002): the fields renamed to the public names,
written in the public file formats and names, next to the other files those folders hold.
Then `mspt prepare -c examples/configs/<name>.yaml` must read them and the manifest must
have the fields, component counts, samples and split the config asks for.
docs/datasets.md describes the real layouts and where each fact comes from.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import pyvista as pv
import vtk
import yaml
from helpers import ROOT
from typer.testing import CliRunner

from msptcli.cli import app
from msptcli.config import load_config

CONFIGS = ROOT / "examples" / "configs"
CASES = [ROOT / "examples" / "ahmed" / f"case_{i:04d}" for i in range(3)]
VOLUME_CELLS = 1500  # cells kept of each ~167k-cell example volume: the tests stay small
runner = CliRunner()

QUAD, HEXAHEDRON = 9, 12  # VTK cell types


# --- the real example data ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def examples() -> list[tuple[pv.UnstructuredGrid, pv.UnstructuredGrid]]:
    """(surface, volume) of the three shipped cases: surface point+cell data p, wallShearStress;
    volume point data U, p, nut."""
    return [(pv.read(c / "surface.vtu"), pv.read(c / "volume.vtu")) for c in CASES]


def as_cell_data(volume: pv.UnstructuredGrid, seed: int) -> pv.UnstructuredGrid:
    """A random subset of the volume's cells with its fields as cell data, as the ML datasets store them."""
    cells = volume.point_data_to_cell_data()
    keep = np.sort(np.random.default_rng(seed).choice(volume.n_cells, VOLUME_CELLS, replace=False))
    small = cells.extract_cells(keep)
    out = pv.UnstructuredGrid(small.cells, small.celltypes, small.points)
    for name in volume.point_data:
        out.cell_data[name] = small.cell_data[name]
    return out


def surface_polydata(surface: pv.UnstructuredGrid) -> pv.PolyData:
    """The surface as PolyData (same points, same cells in the same order), no fields yet."""
    return pv.PolyData(np.asarray(surface.points), faces=np.asarray(surface.cells))


def write_csv(path: Path, header: str, row: str) -> None:
    path.write_text(f"{header}\n{row}\n")


def run_prepare(inputs: str, out: Path, config: str | Path, *extra: str):  # type: ignore[no-untyped-def]
    """`mspt prepare INPUTS -o OUT -c CONFIG` (a name in examples/configs, or a path) through the CLI."""
    config = CONFIGS / config if isinstance(config, str) else config
    return runner.invoke(app, ["prepare", inputs, "-o", str(out), "-c", str(config), *extra])


def prepare(inputs: str, out: Path, config: str | Path, *extra: str) -> dict:
    """Prepare, expect success, return the manifest."""
    result = run_prepare(inputs, out, config, *extra)
    assert result.exit_code == 0, result.output
    return json.loads((out / "manifest.json").read_text())


def check_saved_config(out: Path, manifest: dict, config: str) -> None:
    """The full validated config is saved with the dataset (config.yaml and the manifest) and is the shipped one."""
    shipped = load_config(CONFIGS / config).model_dump(mode="json")
    assert manifest["config"] == shipped
    assert yaml.safe_load((out / "config.yaml").read_text()) == shipped


# --- DrivAerML and AhmedML: run_<i>/boundary_<i>.vtp + volume_<i>.vtu, fields as cell data ---------


def write_ml_run(
    root: Path, i: int, surface: pv.UnstructuredGrid, volume: pv.UnstructuredGrid, names: dict[str, str], stem: str
) -> None:
    """One run_<i> folder of DrivAerML (stem 'drivaer') or AhmedML (stem 'ahmed').

    ``names`` maps the example's fields to the public ones (p -> pMeanTrim, ...); the
    dataset's extra arrays and side files are there too, so the config must pick out the right ones.
    """
    run = root / f"run_{i}"
    (run / "slices").mkdir(parents=True)
    (run / "images").mkdir()
    poly = surface_polydata(surface)
    for old in ("p", "wallShearStress"):
        poly.cell_data[names[old]] = surface.cell_data[old]
    poly.cell_data[names["Cp"]] = surface.cell_data["p"] / (0.5 * 40.0**2)  # a field not asked for
    poly.save(run / f"boundary_{i}.vtp")  # VTK XML PolyData: read by pyvista
    grid = as_cell_data(volume, seed=i)
    for old in ("U", "p", "nut"):
        grid.cell_data[names[old]] = grid.cell_data.pop(old)
    grid.save(run / f"volume_{i}.vtu")  # VTK XML UnstructuredGrid: read by meshio
    shutil.copy(CASES[0] / "geometry.stl", run / f"{stem}_{i}.stl")
    poly.slice(normal="y").save(run / "slices" / f"yNormal_{i}.vtp")  # not matched by boundary_*.vtp


def ml_manifest_checks(manifest: dict, names: dict[str, str], examples: list) -> None:
    p, tau, u = names["p"], names["wallShearStress"], names["U"]
    assert manifest["fields"] == {"surface": {p: 1, tau: 3}, "volume": {u: 3, p: 1}}
    assert manifest["surface_location"] == "cells"  # the ML datasets store cell data
    samples = manifest["samples"]
    assert [s["name"] for s in samples] == ["run_1", "run_2", "run_3"]
    for s, (surface, _) in zip(samples, examples, strict=True):
        assert s["num_surface"] == surface.n_cells  # one point per surface cell (its centre)
        assert s["num_volume"] == VOLUME_CELLS  # one point per volume cell, below max_volume_points
        assert s["file"] == f"samples/{s['name']}.safetensors"
    assert set(manifest["stats"]["surface"]) == {p, tau} and set(manifest["stats"]["volume"]) == {u, p}
    assert manifest["skipped"] == []


def test_drivaerml_layout(tmp_path, examples):
    names = {"p": "pMeanTrim", "wallShearStress": "wallShearStressMeanTrim", "Cp": "CpMeanTrim"}
    names |= {"U": "UMeanTrim", "nut": "nutMeanTrim"}
    root = tmp_path / "drivaerml"
    for i, (surface, volume) in enumerate(examples, start=1):
        write_ml_run(root, i, surface, volume, names, "drivaer")
        run = root / f"run_{i}"
        write_csv(run / f"force_mom_{i}.csv", "Cd,Cl,Clf,Clr,Cs", "0.30,0.05,-0.1,0.1,0.0")
        write_csv(run / f"force_mom_constref_{i}.csv", "Cd,Cl,Clf,Clr,Cs", "0.31,0.05,-0.1,0.1,0.0")
        header = "lRef,aRef,forcesCoR,lRefRef,aRefRef,forcesCoRRef"
        write_csv(run / f"geo_ref_{i}.csv", header, "2.79,2.298,(1.402 0 -0.3176),2.78618,2.17,(1.40009 0 -0.3176)")
    # A run whose volume is still in its two downloaded parts has no volume_<i>.vtu: one clear line.
    parts = tmp_path / "parts" / "run_9"
    shutil.copytree(root / "run_1", parts)
    (parts / "volume_1.vtu").rename(parts / "volume_1.vtu.00.part")
    result = run_prepare(str(parts), tmp_path / "bad", "drivaerml.yaml")
    assert result.exit_code == 1 and "no volume file matching 'volume_*.vtu'" in result.output

    out = tmp_path / "data"
    manifest = prepare(str(root / "run_*"), out, "drivaerml.yaml", "--workers", "2")
    ml_manifest_checks(manifest, names, examples)
    # Three cases with the (0.8, 0.1, 0.1) fractions: round(0.3) = 0 validation and test cases.
    assert [s["split"] for s in manifest["samples"]] == ["train"] * 3
    # No params file: every case gets the constant reference area of force_mom_constref_<i>.csv.
    assert [s["reference_area"] for s in manifest["samples"]] == [2.17] * 3
    assert all(s["params"] == {} for s in manifest["samples"])
    data = manifest["config"]["data"]
    assert (data["reference_velocity"], data["density"], data["pressure_field"]) == (38.889, 1.0, "pMeanTrim")
    check_saved_config(out, manifest, "drivaerml.yaml")


def test_ahmedml_layout(tmp_path, examples):
    names = {"p": "pMean", "wallShearStress": "wallShearStressMean", "Cp": "static(p)_coeffMean"}
    names |= {"U": "UMean", "nut": "nutMean"}
    root = tmp_path / "ahmedml"
    for i, (surface, volume) in enumerate(examples, start=1):
        write_ml_run(root, i, surface, volume, names, "ahmed")
        run = root / f"run_{i}"
        write_csv(run / f"force_mom_{i}.csv", "run, cd, cl", f"{i}, 0.29, 0.40")
        write_csv(run / f"force_mom_varref_{i}.csv", "run, cd, cl", f"{i}, 0.28, 0.39")
        write_csv(run / f"geo_parameters_{i}.csv", "run, body-length, body-width, body-height", f"{i}, 1044, 389, 288")

    out = tmp_path / "data"
    manifest = prepare(str(root / "run_*"), out, "ahmedml.yaml")
    ml_manifest_checks(manifest, names, examples)
    assert [s["split"] for s in manifest["samples"]] == ["train"] * 3
    assert [s["reference_area"] for s in manifest["samples"]] == [0.112] * 3
    data = manifest["config"]["data"]
    assert (data["reference_velocity"], data["density"], data["pressure_field"]) == (1.0, 1.0, "pMean")
    check_saved_config(out, manifest, "ahmedml.yaml")


# --- ShapeNet-Car: param<k>/<hash>/quadpress_smpl.vtk + hexvelo_smpl.vtk, legacy VTK, point data ----


def write_legacy_vtk(grid: pv.UnstructuredGrid, path: Path) -> None:
    """ASCII legacy VTK (file version 4.2), its one point array written as the active SCALARS or VECTORS."""
    writer = vtk.vtkUnstructuredGridWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(grid)
    writer.SetFileTypeToASCII()
    writer.SetFileVersion(vtk.vtkUnstructuredGridWriter.VTK_LEGACY_READER_VERSION_4_2)
    assert writer.Write() == 1


def write_shapenet_case(folder: Path, surface: pv.UnstructuredGrid, volume: pv.UnstructuredGrid, seed: int) -> None:
    """quadpress_smpl.vtk: the quads only, plus a few points used by no cell (as in the real files);
    hexvelo_smpl.vtk: some hexahedra of the volume; the fields as point data."""
    folder.mkdir(parents=True)
    quads = surface.extract_cells(np.flatnonzero(surface.celltypes == QUAD))
    stray = np.asarray(surface.points)[:8] + np.array([0.0, 0.0, -0.01])  # points of no quad, with a pressure too
    points = np.vstack([np.asarray(quads.points), stray])
    press = pv.UnstructuredGrid(quads.cells, quads.celltypes, points)
    press.point_data["point_scalars"] = np.concatenate([quads.point_data["p"], surface.point_data["p"][:8]])
    press.set_active_scalars("point_scalars")
    write_legacy_vtk(press, folder / "quadpress_smpl.vtk")

    hexes = np.flatnonzero(volume.celltypes == HEXAHEDRON)
    keep = np.sort(np.random.default_rng(seed).choice(hexes, VOLUME_CELLS, replace=False))
    small = volume.extract_cells(keep)
    velo = pv.UnstructuredGrid(small.cells, small.celltypes, small.points)
    velo.point_data["point_vectors"] = small.point_data["U"]
    velo.set_active_vectors("point_vectors")
    velo.GetPointData().SetActiveScalars(None)  # written once, as VECTORS only
    write_legacy_vtk(velo, folder / "hexvelo_smpl.vtk")

    np.save(folder / "press.npy", press.point_data["point_scalars"])
    np.save(folder / "velo.npy", np.asarray(velo.point_data["point_vectors"]).ravel())
    (folder / "cd.txt").write_text("0.3\n")


def case_glob(root: Path) -> str:
    """The documented input glob: every case folder (the trailing / leaves out files such as param0.tar.gz)."""
    return f"{root}/param*/*/"


@pytest.fixture
def shapenet(tmp_path, examples) -> tuple[Path, list[str], list[int]]:
    """mlcfd_data/training_data with cases in param0 and param1; (root, case names, volume points)."""
    root = tmp_path / "mlcfd_data" / "training_data"
    names = ["1a0bc9ab92c915167ae33d942430658c", "1a48d03a977a6f0aeda0253452893d75", "2a0f59a1f6b0ee2ae2f6fbd4c2b6d8cb"]
    params = ["param0", "param1", "param1"]
    sizes = []
    for i, (name, param, (surface, volume)) in enumerate(zip(names, params, examples, strict=True)):
        write_shapenet_case(root / param / name, surface, volume, seed=i)
        sizes.append(pv.read(root / param / name / "hexvelo_smpl.vtk").n_points)
    (root / "param0.tar.gz").write_bytes(b"")  # a file beside the case folders: the trailing / skips it
    return root, names, sizes


def test_shapenet_car_layout(tmp_path, shapenet, examples):
    root, names, volume_points = shapenet
    out = tmp_path / "data"
    manifest = prepare(case_glob(root), out, "shapenet-car.yaml")
    assert manifest["fields"] == {"surface": {"point_scalars": 1}, "volume": {"point_vectors": 3}}
    assert manifest["surface_location"] == "points"  # legacy VTK point data
    samples = manifest["samples"]
    assert [s["name"] for s in samples] == names  # the case folders' names, in sorted order
    for s, n_volume, (surface, _) in zip(samples, volume_points, examples, strict=True):
        quads = surface.extract_cells(np.flatnonzero(surface.celltypes == QUAD))
        assert s["num_surface"] == quads.n_points + 8  # every point of the file, the 8 stray ones too
        assert s["num_volume"] == n_volume  # max_volume_points: null keeps them all
        assert s["reference_area"] is None and s["params"] == {}
    assert [s["split"] for s in samples] == ["train"] * 3  # (0.9, 0.1, 0.0) of 3 cases: round(0.3) = 0 val
    data = manifest["config"]["data"]
    assert data["pressure_field"] is None and data["wall_shear_field"] is None
    check_saved_config(out, manifest, "shapenet-car.yaml")


def test_shapenet_car_transolver_split(tmp_path, shapenet):
    """docs/datasets.md: hold out param0 as the test set by listing its folders in split.test."""
    root, names, _ = shapenet
    config = yaml.safe_load((CONFIGS / "shapenet-car.yaml").read_text())
    config["data"]["split"]["test"] = sorted(p.name for p in (root / "param0").iterdir() if p.is_dir())
    config["data"]["split"]["fractions"] = [0.5, 0.5, 0.0]
    custom = tmp_path / "shapenet-car-split.yaml"
    custom.write_text(yaml.safe_dump(config))
    manifest = prepare(case_glob(root), tmp_path / "data", custom)
    split = {s["name"]: s["split"] for s in manifest["samples"]}
    assert split[names[0]] == "test"  # the param0 case
    assert sorted(split[n] for n in names[1:]) == ["train", "val"]  # the rest: one each by the seeded fractions


def test_shapenet_car_empty_folder_is_one_line(tmp_path, shapenet):
    """The raw release has a few case folders without quadpress_smpl.vtk; prepare names the folder."""
    root, _, _ = shapenet
    (root / "param2" / "854bb96a96a4d1b338acbabdc1252e2f").mkdir(parents=True)
    result = run_prepare(case_glob(root), tmp_path / "d", "shapenet-car.yaml")
    assert result.exit_code == 1
    assert "854bb96a96a4d1b338acbabdc1252e2f: no surface file matching 'quadpress_smpl.vtk'" in result.output
