"""OpenFOAM case folders as inputs of `mspt prepare` and `mspt predict` (msptcli/data/openfoam.py), with no
OpenFOAM installed: a tiny real ASCII case is written in Python (tests/openfoam_case.py), as a reconstructed
case, as its decomposed form and as our .vtu layout of the same arrays; all three must give the same
prepared samples and the same predictions, and no input folder may change. The case shipped in
examples/openfoam/ (real simpleFoam output, made with OpenFOAM v1912) must read with physical fields.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import pyvista as pv
import yaml
from helpers import ROOT, invoke, ok, one_line_error, tree_digest
from openfoam_case import TIMES, build_mesh, field_values, write_case, write_decomposed, write_params, write_vtu_case

from msptcli.config import OpenFOAMConfig, load_config
from msptcli.data.openfoam import ABSENT_MARKER, case_folder, case_layout, read_case
from msptcli.data.sample import load_sample
from msptcli.errors import ConfigError, InvalidInputError
from msptcli.physics.forces import coefficients, force_from_points

FORMS = ("foam", "decomposed", "vtu")
NAME = "car"  # every form's case folder has this name, so that its samples and outputs are named alike
CONFIG = {
    "data": {"split": {"train": [NAME], "val": [], "test": []}, "reference_area": 0.5, "reference_velocity": 2.0},
    "model": {"width": 16, "num_heads": 2, "depth": 1, "anchors": {"surface": 64, "volume": 64}},
    "train": {"epochs": 2, "surface_points": 64, "volume_points": 256, "warmup_epochs": 1, "val_every": 1,
              "threads": 1},
}  # fmt: skip


@dataclass
class Forms:
    root: Path
    cases: dict[str, Path]  # form -> case folder
    config: Path
    digests: dict[str, dict[str, str]]  # form -> every file's hash before any command ran


def write_config(path: Path, **data: object) -> Path:
    config = {**CONFIG, "data": {**CONFIG["data"], **data}}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def forms(tmp_path_factory) -> Forms:
    root = tmp_path_factory.mktemp("openfoam")
    mesh = build_mesh()
    cases = {
        "foam": write_case(root / "foam" / NAME, mesh),
        "decomposed": write_decomposed(root / "decomposed" / NAME, mesh),
        "vtu": write_vtu_case(root / "vtu" / NAME, mesh),
    }
    for folder in cases.values():
        write_params(folder, frontal_area=0.5)
    digests = {form: tree_digest(folder) for form, folder in cases.items()}
    return Forms(root, cases, write_config(root / "config.yaml"), digests)


@pytest.fixture(scope="module")
def prepared(forms) -> dict[str, Path]:
    """Each form prepared into its own dataset."""
    out = {}
    for form, case in forms.cases.items():
        out[form] = forms.root / f"data_{form}"
        ok("prepare", case, "-o", out[form], "-c", forms.config)
    return out


@pytest.fixture(scope="module")
def run(forms, prepared) -> Path:
    """A two-epoch run on the .vtu form's dataset."""
    run = forms.root / "run"
    ok("train", prepared["vtu"], "-o", run, "-c", forms.config)
    return run


@pytest.fixture(scope="module")
def predicted(forms, run) -> dict[str, Path]:
    """`mspt predict RUN CASE --volume CASE` for the OpenFOAM forms, the .vtu files for ours."""
    out = {}
    for form, case in forms.cases.items():
        out[form] = forms.root / f"predicted_{form}"
        geometry, volume = (case / "surface.vtu", case / "volume.vtu") if form == "vtu" else (case, case)
        ok("predict", run, geometry, "--volume", volume, "-o", out[form], "--uncertainty", 0)
    return out


def sample(data: Path):
    return load_sample(data / "samples" / f"{NAME}.safetensors")


# --- the three forms agree -----------------------------------------------------------------------------


def test_the_three_forms_prepare_the_same_sample(prepared):
    reference = sample(prepared["vtu"])
    assert reference.arrays["surface/points"].shape == (40, 3) and reference.arrays["volume/points"].shape == (416, 3)
    for form in ("foam", "decomposed"):
        other = sample(prepared[form])
        assert sorted(other.arrays) == sorted(reference.arrays)
        for key, values in reference.arrays.items():
            assert np.array_equal(other.arrays[key], values), f"{form}: {key} differs from the .vtu form's"
        assert other.meta["surface_location"] == "cells" and other.meta["num_volume"] == 416
        assert other.meta["openfoam"] == {"time": "100", "decomposed": form == "decomposed", "body_patches": ["body"]}
        assert other.meta["reference_area"] == 0.5  # params.json inside the case folder


def test_the_latest_time_is_read(prepared):
    mesh = build_mesh()
    latest = field_values(mesh.face_centres("body"), TIMES[-1])
    for form in ("foam", "decomposed"):
        arrays = sample(prepared[form]).arrays
        assert np.array_equal(arrays["surface/p"][:, 0], latest["p"].astype(np.float32))
        assert np.array_equal(arrays["surface/wallShearStress"], latest["wallShearStress"].astype(np.float32))
        assert np.array_equal(arrays["volume/U"], field_values(mesh.centres, "100")["U"].astype(np.float32))


def test_the_three_forms_predict_the_same_fields(forms, predicted):
    names = {"foam": NAME, "decomposed": NAME, "vtu": f"{NAME}_surface"}  # an OpenFOAM case: by its folder
    surfaces = {f: pv.read(predicted[f] / f"{names[f]}.vtp") for f in FORMS}
    volumes = {f: pv.read(predicted[f] / f"{names[f]}_volume.vtu") for f in FORMS}
    for form in ("foam", "decomposed"):
        for name in ("p", "wallShearStress", "p_true", "wallShearStress_error"):
            assert np.array_equal(surfaces[form].cell_data[name], surfaces["vtu"].cell_data[name]), (form, name)
        assert np.array_equal(volumes[form].points, volumes["vtu"].points)
        for name in ("U", "p"):
            assert np.array_equal(volumes[form].point_data[name], volumes["vtu"].point_data[name]), (form, name)
        summary = json.loads((predicted[form] / f"{NAME}.json").read_text())
        assert summary["coefficients"]["reference_area_source"] == "params.json frontal_area"
    assert surfaces["vtu"].cell_data["p"].std() > 0


def test_no_input_folder_changed(forms, prepared, predicted):
    for form, folder in forms.cases.items():
        assert tree_digest(folder) == forms.digests[form], f"{form}: the case folder changed"
        assert not (folder / ABSENT_MARKER).exists()


def test_prepare_again_reuses_the_samples_until_a_field_changes(forms, tmp_path):
    case, data = shutil.copytree(forms.cases["decomposed"], tmp_path / NAME), tmp_path / "data"
    assert "1 written, 0 reused" in ok("prepare", case, "-o", data, "-c", forms.config).output
    assert "0 written, 1 reused" in ok("prepare", case, "-o", data, "-c", forms.config).output
    p = case / "processor1" / "100" / "p"
    p.write_text(p.read_text().replace("type            calculated;", "type  calculated;", 1))
    assert "1 written, 0 reused" in ok("prepare", case, "-o", data, "-c", forms.config).output


# --- time, marker files, globs ----------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["foam", "decomposed"])
def test_a_chosen_time_is_read(forms, form, tmp_path):
    config = write_config(tmp_path / "config.yaml", openfoam={"time": 0})
    ok("prepare", forms.cases[form], "-o", tmp_path / "data", "-c", config)
    arrays = sample(tmp_path / "data").arrays
    initial = field_values(build_mesh().face_centres("body"), "0")
    assert np.array_equal(arrays["surface/p"][:, 0], initial["p"].astype(np.float32))
    config = write_config(tmp_path / "config.yaml", openfoam={"time": 50})
    result = invoke("prepare", forms.cases[form], "-o", tmp_path / "data50", "-c", config)
    one_line_error(result, "no time folder 50", "times: 0, 100", "data.openfoam.time")


def test_a_case_given_twice_is_refused(forms, tmp_path):
    case = shutil.copytree(forms.cases["foam"], tmp_path / "car_a")
    (case / "car_a.foam").touch()  # the user's own marker (ParaView's convention) and the folder: one case twice
    result = invoke("prepare", case / "car_a.foam", case, "-o", tmp_path / "data", "-c", forms.config)
    one_line_error(result, "two cases are named 'car_a'")


def test_marker_files_and_globs_name_their_case_folders(forms, tmp_path):
    root = tmp_path / "cases"
    for name in ("car_a", "car_b"):
        shutil.copytree(forms.cases["foam"], root / name)
        (root / name / "case.foam").touch()
    config = write_config(tmp_path / "config.yaml", split={"train": ["car_a", "car_b"], "val": [], "test": []})
    ok("prepare", f"{root}/*/case.foam", "-o", tmp_path / "markers", "-c", config)
    ok("prepare", f"{root}/car_*", "-o", tmp_path / "folders", "-c", config)
    for data in ("markers", "folders"):
        names = sorted(p.stem for p in (tmp_path / data / "samples").glob("*.safetensors"))
        assert names == ["car_a", "car_b"], data
    assert np.array_equal(sample_of(tmp_path / "markers", "car_a")["surface/p"],
                          sample_of(tmp_path / "folders", "car_a")["surface/p"])  # fmt: skip


def sample_of(data: Path, name: str) -> dict[str, np.ndarray]:
    return load_sample(data / "samples" / f"{name}.safetensors").arrays


def test_decomposed_is_read_only_when_its_time_is_later(forms, tmp_path):
    case = shutil.copytree(forms.cases["foam"], tmp_path / NAME)
    for proc in ("processor0", "processor1"):
        shutil.copytree(forms.cases["decomposed"] / proc, case / proc)
    assert case_layout(case, OpenFOAMConfig()).decomposed is False  # both at 100: the reconstructed case
    for proc in ("processor0", "processor1"):
        (case / proc / "100").rename(case / proc / "200")
    layout = case_layout(case, OpenFOAMConfig())
    assert layout.decomposed and layout.time == "200"
    assert case_layout(case, OpenFOAMConfig(time=100)).decomposed is False
    meshes = read_case(case, OpenFOAMConfig(), volume=True)
    assert meshes.volume.n_cells == 416 and meshes.surface.n_cells == 40


# --- refusals: one line each ------------------------------------------------------------------------------


def test_no_body_patch_is_one_line_listing_the_patches(forms, tmp_path):
    case = write_case(tmp_path / NAME, body_type="patch")  # the body is no wall: nothing is found by default
    result = invoke("prepare", case, "-o", tmp_path / "data", "-c", forms.config)
    line = one_line_error(result, str(case), "inlet (patch)", "ground (wall)", "body (patch)",
                          "data.openfoam.body_patches")  # fmt: skip
    assert "domain_patches" in line
    config = write_config(tmp_path / "config.yaml", openfoam={"body_patches": ["bo*"]})
    ok("prepare", case, "-o", tmp_path / "data", "-c", config)
    config = write_config(tmp_path / "config.yaml", openfoam={"body_patches": ["wheel*"]})
    one_line_error(invoke("prepare", case, "-o", tmp_path / "data2", "-c", config), "['wheel*']", "body (patch)")
    assert not (tmp_path / "data2" / "manifest.json").exists()


def test_a_case_of_initial_fields_only_is_refused_for_training_but_predicted_on(forms, run, tmp_path):
    case = shutil.copytree(forms.cases["foam"], tmp_path / NAME)
    shutil.rmtree(case / "100")
    one_line_error(invoke("prepare", case, "-o", tmp_path / "data", "-c", forms.config), "only time folder is 0",
                   "data.openfoam.time: 0")  # fmt: skip
    shutil.rmtree(case / "0")  # a new design meshed, not yet simulated
    ok("predict", run, case, "--volume", case, "-o", tmp_path / "out", "--uncertainty", 0)
    predicted = pv.read(tmp_path / "out" / f"{NAME}.vtp")
    assert predicted.n_cells == 40 and "p" in predicted.cell_data and "p_true" not in predicted.cell_data


def test_a_folder_that_is_no_case_keeps_its_errors(forms, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(invoke("prepare", empty, "-o", tmp_path / "data", "-c", forms.config), "no surface file")
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "case.foam").touch()
    one_line_error(invoke("prepare", stray / "case.foam", "-o", tmp_path / "data", "-c", forms.config),
                   "marker file", "constant/polyMesh")  # fmt: skip
    with pytest.raises(InvalidInputError, match="without a mesh"):
        case_layout(_controldict_only(tmp_path / "bare"), OpenFOAMConfig())


def _controldict_only(folder: Path) -> Path:
    (folder / "system").mkdir(parents=True)
    (folder / "system" / "controlDict").write_text("application simpleFoam;\n")
    assert case_folder(folder) == folder
    return folder


def test_a_file_vtk_cannot_parse_is_one_line_naming_it(forms, tmp_path):
    case = shutil.copytree(forms.cases["decomposed"], tmp_path / NAME)
    field = case / "processor1" / "100" / "p"
    field.write_bytes(field.read_bytes()[:2000])  # cut short, as by a full disk
    result = invoke("prepare", case, "-o", tmp_path / "data", "-c", forms.config)
    one_line_error(result, str(case), "VTK cannot read this OpenFOAM case", "processor1/100/p", "Unexpected EOF")


def test_an_output_inside_the_case_is_refused(forms, tmp_path):
    case = shutil.copytree(forms.cases["foam"], tmp_path / NAME)
    before = tree_digest(case)
    one_line_error(invoke("prepare", case, "-o", case / "data", "-c", forms.config), "inside the OpenFOAM case",
                   "choose an -o outside it")  # fmt: skip
    assert tree_digest(case) == before and not (case / "data").exists()


def test_predict_never_writes_into_a_case_it_reads(forms, run, tmp_path, monkeypatch):
    case = shutil.copytree(forms.cases["foam"], tmp_path / NAME)
    before = tree_digest(case)
    one_line_error(invoke("predict", run, case, "--volume", case, "-o", case / "predicted", "--uncertainty", 0),
                   f"{case / 'predicted'}: is inside the OpenFOAM case {case}", "choose an -o outside it")  # fmt: skip
    # a mesh file first: its outputs would be written before the case's turn came; none are
    other = forms.cases["vtu"] / "surface.vtu"
    one_line_error(invoke("predict", run, other, case, "-o", case / "predicted", "--uncertainty", 0),
                   "inside the OpenFOAM case", "-o")  # fmt: skip
    monkeypatch.chdir(case)  # the default -o, predictions/, from inside the case
    one_line_error(invoke("predict", run, ".", "--uncertainty", 0), "predictions: is inside the OpenFOAM case",
                   str(case), "-o")  # fmt: skip
    assert tree_digest(case) == before
    monkeypatch.chdir(tmp_path)  # the same prediction with its output beside the case is written
    ok("predict", run, NAME, "--uncertainty", 0)
    assert (tmp_path / "predictions" / f"{NAME}.vtp").is_file() and tree_digest(case) == before


def test_bad_openfoam_keys_are_one_line():
    with pytest.raises(ConfigError, match=r"data\.openfoam\.time: latest or a time's value"):
        load_config(overrides=["data.openfoam.time=last"])
    with pytest.raises(ConfigError, match=r"data\.openfoam\.fields_at"):
        load_config(overrides=["data.openfoam.fields_at=faces"])
    with pytest.raises(ConfigError, match=r"unknown key 'data\.openfoam\.patches'"):
        load_config(overrides=["data.openfoam.patches=[body]"])


def test_point_fields_are_the_readers_interpolation(forms):
    meshes = read_case(forms.cases["decomposed"], OpenFOAMConfig(fields_at="points"), volume=True)
    assert set(meshes.surface.point_data) >= {"p", "wallShearStress"} and "p" in meshes.volume.point_data
    assert meshes.volume.n_points == 634  # the points of the processor boundary merged
    cells_only = read_case(forms.cases["decomposed"], OpenFOAMConfig(), volume=True)
    assert "p" not in cells_only.surface.point_data and "p" in cells_only.surface.cell_data


def test_a_patch_written_without_values_takes_its_cells_values(forms):
    mesh = build_mesh()  # the outlet's p is zeroGradient: OpenFOAM writes no values there
    outlet = read_case(forms.cases["foam"], OpenFOAMConfig(body_patches=["outlet"])).surface
    owners = [owner for _, owner in mesh.patches["outlet"]]
    expected = field_values(mesh.centres[owners], TIMES[-1])["p"]
    assert np.array_equal(np.asarray(outlet.cell_data["p"]), expected.astype(np.float32))


# --- the shipped case: real simpleFoam output ------------------------------------------------------------

SHIPPED = ROOT / "examples" / "openfoam"
INLET_SPEED = 40.0  # m/s, the case's inlet (examples/openfoam/README.md)


def test_the_shipped_case_prepares_with_physical_fields(tmp_path):
    case = SHIPPED / "case_0000"
    before = tree_digest(case)
    assert not list(case.glob("*.foam")) and not list(case.glob("processor*"))  # the marker-less path
    assert "format      ascii;" in (case / "300" / "U").read_text()[:1000]  # as simpleFoam wrote it
    ok("prepare", f"{SHIPPED}/case_*", "-o", tmp_path / "data", "-c", SHIPPED / "config.yaml")
    shipped = load_sample(tmp_path / "data" / "samples" / "case_0000.safetensors")
    a = shipped.arrays
    assert shipped.meta["openfoam"] == {"time": "300", "decomposed": False, "body_patches": ["body"]}
    assert a["surface/points"].shape == (296, 3) and a["volume/points"].shape == (8480, 3)  # the body's faces, cells
    # the body, 0.5 x 0.3 x 0.25 m on the ground at x = 0..0.5
    assert np.allclose(a["surface/points"].min(0), [0, -0.15, 0], atol=0.05)
    assert np.allclose(a["surface/points"].max(0), [0.5, 0.15, 0.25], atol=0.05)
    # the volume: the free stream at the inlet's speed, a wake, a stagnation pressure of about U^2/2
    speed = np.linalg.norm(a["volume/U"], axis=1)
    inlet = a["volume/points"][:, 0] < -0.8
    assert np.allclose(a["volume/U"][inlet].mean(0), [INLET_SPEED, 0, 0], atol=1.0)
    assert 0.9 * INLET_SPEED < np.median(speed) < 1.2 * INLET_SPEED and speed.max() < 1.5 * INLET_SPEED
    assert (a["volume/U"][:, 0] < 0).any()  # reversed flow behind the box
    stagnation = INLET_SPEED**2 / 2  # kinematic pressure
    p_body = a["surface/p"][:, 0]
    assert 0.8 * stagnation < p_body.max() < 1.2 * stagnation
    assert -2 * stagnation < p_body.min() < 0
    assert 0.8 * stagnation < a["volume/p"].max() < 1.2 * stagnation
    tau = np.linalg.norm(a["surface/wallShearStress"], axis=1)
    assert 0 < np.median(tau) < 0.01 * stagnation  # skin friction: Cf of a few thousandths
    # the solver's own drag and lift from the fields read (OpenFOAM's forceCoeffs on the written fields)
    force = force_from_points(a["surface/area"], a["surface/area_norm"], a["surface/p"], a["surface/wallShearStress"])
    cd, cl = coefficients(force, ref_area=shipped.meta["reference_area"], velocity=INLET_SPEED)
    params = json.loads((case / "params.json").read_text())
    assert shipped.meta["reference_area"] == params["frontal_area"] == 0.075
    assert cd == pytest.approx(params["Cd_fields"], rel=2e-3) and cl == pytest.approx(params["Cl_fields"], rel=2e-3)
    assert tree_digest(case) == before


def test_inspect_reads_the_shipped_case_as_prepare_does():
    case = SHIPPED / "case_0000"
    before = tree_digest(case)
    found = {m["role"]: m for m in json.loads(ok("inspect", case, "--json").output)}
    assert sorted(found) == ["surface", "volume"]
    assert found["surface"]["kind"] == "surface" and found["surface"]["cells"] == 296  # the body patch
    assert found["volume"]["kind"] == "volume" and found["volume"]["cells"] == 8480  # the internal mesh
    assert found["surface"]["file_bytes"] > 1_000_000  # the mesh and time files read, not a folder's entry
    suggested = found["surface"]["suggested"]["config"]["data"]
    assert suggested["surface_fields"] == ["p", "wallShearStress"] and suggested["volume_fields"] == ["U", "p"]
    assert suggested["density"] == 1.0  # kinematic pressure, recognised from U^2/2
    assert tree_digest(case) == before
