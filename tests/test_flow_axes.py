"""Flow and up directions as config keys (``data.flow_direction``, ``data.up_direction``), and the one-line
warnings where drag and lift rest on a default or cannot be computed (``physics/force_notes.py``).

A shipped Ahmed case turned 90 degrees about z (points and vector fields turned alike) with flow along +y
must give the coefficients and body features of the original with the default axes (+x, +z): through the
library's force integration, and end to end through a tiny prepare + train + predict.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import pyvista as pv
from helpers import EXAMPLES, invoke, ok, write_config

from msptcli.config import ConfigError, load_config
from msptcli.data.prepare_case import surface_arrays
from msptcli.data.read import read_fields
from msptcli.errors import InvalidInputError
from msptcli.evaluate import drag_lift
from msptcli.geometry.axes import flow_frame
from msptcli.physics import coefficients, force_coefficients, force_from_points
from msptcli.physics.force_notes import force_notes, median_area_note, missing_area_note
from msptcli.physics.force_reference import ForceReference
from msptcli.prepare import prepare_dataset
from msptcli.trust.shape import shape_features

CASE = EXAMPLES / "case_0000"
#: 90 degrees about z: +x -> +y, +y -> -x.
QUARTER = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
VELOCITY_LINE = "Cd/Cl use the default reference velocity 40 m/s: set data.reference_velocity"
#: A prepare + train of two surface-only cases: one training case, one epoch, a width-16 model.
TINY = {
    "data": {"volume_file": None, "surface_fields": ["p"], "split": {"val": ["case_0001"], "test": []}},
    "model": {"width": 16, "num_heads": 2, "depth": 1, "anchors": {"surface": 256, "volume": 256}},
    "train": {"epochs": 1, "surface_points": 512, "warmup_epochs": 1, "val_every": 1, "threads": 1},
}


def rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """The (3, 3) rotation by ``angle`` about ``axis`` (Rodrigues)."""
    k = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def turned(mesh: pv.DataSet, matrix: np.ndarray) -> pv.DataSet:
    """A copy of ``mesh`` with its points and its 3-component fields (cell and point data) turned by ``matrix``."""
    out = mesh.copy(deep=True)
    out.points = np.asarray(mesh.points, dtype=np.float64) @ matrix.T
    for data in (out.cell_data, out.point_data):
        for name in list(data.keys()):
            values = np.asarray(data[name])
            if values.ndim == 2 and values.shape[1] == 3:
                data[name] = values @ matrix.T
    return out


def turned_case(case: Path, folder: Path, matrix: np.ndarray = QUARTER) -> Path:
    """``case`` (surface.vtu and params.json) turned by ``matrix`` into ``folder``."""
    folder.mkdir(parents=True)
    turned(pv.read(case / "surface.vtu"), matrix).save(folder / "surface.vtu")
    shutil.copy(case / "params.json", folder / "params.json")
    return folder


@pytest.fixture(scope="module")
def surface() -> pv.DataSet:
    return pv.read(CASE / "surface.vtu")


@pytest.fixture(scope="module")
def params() -> dict:
    return json.loads((CASE / "params.json").read_text())


# --- the library's force integration ---------------------------------------------------------------------


def _cell_coefficients(mesh: pv.DataSet, params: dict, **axes):
    data = mesh.cell_data
    return force_coefficients(mesh, data["p"], data["wallShearStress"], ref_area=params["frontal_area"],
                              velocity=40.0, **axes)  # fmt: skip


def test_a_case_turned_about_z_with_flow_along_y_has_the_original_coefficients(surface, params):
    original = _cell_coefficients(surface, params)
    assert abs(original.cd - params["Cd_fields"]) < 1e-5  # the solver's, as test_forces checks
    rotated = turned(surface, QUARTER)
    along_y = _cell_coefficients(rotated, params, flow=[0, 1, 0], up=[0, 0, 1])
    for name in ("cd", "cl", "cs"):
        assert getattr(along_y, name) == pytest.approx(getattr(original, name), rel=1e-9, abs=1e-12), name
    assert along_y.flow == (0.0, 1.0, 0.0) and along_y.up == (0.0, 0.0, 1.0)
    np.testing.assert_allclose(along_y.force, QUARTER @ original.force, rtol=1e-9, atol=1e-12)
    # the default axes on the turned case take the side force for drag: the directions matter
    assert abs(_cell_coefficients(rotated, params).cd - original.cd) > 0.1


def test_any_turn_with_its_turned_directions_keeps_the_coefficients(surface, params):
    original = _cell_coefficients(surface, params)
    matrix = rotation(np.array([0.3, -0.5, 0.8]), 2.1)
    axes = {"flow": 2.5 * matrix[:, 0], "up": 0.2 * matrix[:, 2]}  # any lengths: normalised
    result = _cell_coefficients(turned(surface, matrix), params, **axes)
    assert (result.cd, result.cl, result.cs) == pytest.approx((original.cd, original.cl, original.cs), rel=1e-9)


def test_point_shares_and_drag_lift_follow_the_reference_directions(params, tmp_path):
    kw = {"ref_area": params["frontal_area"], "velocity": 40.0}
    results = []
    turned_file = turned_case(CASE, tmp_path / "turned") / "surface.vtu"
    for path, axes in ((CASE / "surface.vtu", {}), (turned_file, {"flow_direction": (0.0, 1.0, 0.0)})):
        mesh = read_fields(path, ["p", "wallShearStress"])  # the reader's point fields, as prepare reads them
        arrays = surface_arrays(mesh)
        fields = {"p": mesh.fields["p"], "wallShearStress": mesh.fields["wallShearStress"]}
        reference = ForceReference(velocity=40.0, density=1.0, pressure_field="p",
                                   wall_shear_field="wallShearStress", **axes)  # fmt: skip
        via_reference = drag_lift(arrays["surface/area"], arrays["surface/area_norm"], fields, reference, **kw)
        force = force_from_points(arrays["surface/area"], arrays["surface/area_norm"], fields["p"],
                                  fields["wallShearStress"])  # fmt: skip
        direct = coefficients(force, flow=reference.flow_direction, up=reference.up_direction, **kw)
        assert via_reference == pytest.approx(direct, rel=1e-12)
        results.append(direct)
    assert results[1] == pytest.approx(results[0], rel=1e-5)  # the area shares are stored as float32
    assert abs(results[0][0] - params["Cd_fields"]) < 0.01  # the points' quadrature, as test_forces says


def test_the_default_axes_are_todays_components_exactly():
    force = np.array([-2.0, -0.25, 6.0])
    kw = {"ref_area": 2.0, "velocity": 2.0, "density": 0.5}  # q = 2
    assert coefficients(force, **kw) == (-1.0, 3.0)
    assert coefficients(force, flow=[1, 0, 0], up=[0, 0, 1], **kw) == (-1.0, 3.0)
    assert np.array_equal(flow_frame(), np.eye(3))
    assert coefficients(force, flow=[0, 0, -1], up=[0, 1, 0], **kw) == (-3.0, -0.125)  # ShapeNet-like frame


def test_force_directions_that_are_zero_or_not_at_right_angles_are_refused():
    with pytest.raises(InvalidInputError, match=r"has no direction"):
        coefficients(np.ones(3), ref_area=1.0, velocity=1.0, flow=[0, 0, 0])
    with pytest.raises(InvalidInputError, match=r"^the up direction \[1, 1, 0\] is not at right angles to the flow"):
        coefficients(np.ones(3), ref_area=1.0, velocity=1.0, up=[1, 1, 0])


def test_the_force_reference_keeps_the_directions_and_old_checkpoints_get_the_defaults():
    ref = ForceReference(velocity=1.0, density=1.0, flow_direction=(0.0, 1.0, 0.0), up_direction=(0.0, 0.0, 1.0))
    back = ForceReference.from_json(json.loads(json.dumps(ref.to_json())))
    assert back == ref and back.to_json()["flow_direction"] == [0.0, 1.0, 0.0]
    old = {k: v for k, v in ref.to_json().items() if k not in ("flow_direction", "up_direction")}
    assert ForceReference.from_json(old).flow_direction == (1.0, 0.0, 0.0)
    assert ForceReference.from_json(old).up_direction == (0.0, 0.0, 1.0)


# --- body features in the flow frame ----------------------------------------------------------------------


def test_shape_features_of_a_turned_body_with_turned_directions_are_the_originals():
    mesh = read_fields(CASE / "surface.vtu", ["p"])
    arrays = surface_arrays(mesh)
    points, share = arrays["surface/points"].astype(np.float64), arrays["surface/area_norm"]
    original = shape_features(points, share)
    assert original["length"] > 2 * original["width"] and original["alignment"] > 0.9  # an Ahmed body along x
    along_y = shape_features(points @ QUARTER.T, share, flow=[0, 1, 0], up=[0, 0, 1])
    assert along_y == pytest.approx(original, rel=1e-9, abs=1e-12)
    across = shape_features(points @ QUARTER.T, share)  # the default axes: turned across the flow
    assert across["alignment"] < 0.1 and across["length"] == pytest.approx(original["width"])
    matrix = rotation(np.array([1.0, 2.0, -0.5]), 0.7)
    anyhow = shape_features(points @ matrix.T, share, flow=matrix[:, 0], up=matrix[:, 2])
    assert anyhow == pytest.approx(original, rel=1e-9, abs=1e-12)


# --- config validation --------------------------------------------------------------------------------------


def test_directions_default_to_x_and_z_and_are_normalised():
    config = load_config(None)
    assert config.data.flow_direction == (1.0, 0.0, 0.0) and config.data.up_direction == (0.0, 0.0, 1.0)
    config = load_config(None, ["data.flow_direction=[0, 3, 0]", "data.up_direction=[0, 0, 0.5]"])
    assert config.data.flow_direction == (0.0, 1.0, 0.0) and config.data.up_direction == (0.0, 0.0, 1.0)
    tilted = load_config(None, ["data.flow_direction=[1, 1, 0]", "data.up_direction=[-1, 1, 0]"]).data
    assert tilted.flow_direction == pytest.approx((2**-0.5, 2**-0.5, 0.0))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.flow_direction=[0, 0, 0]", r"^config: data\.flow_direction: \[0, 0, 0\] has no direction: give a "),
        ("data.up_direction=[1, 0]", r"^config: data\.up_direction: a direction is a 3-vector such as \[1, 0, 0\]"),
        ("data.flow_direction=[1, 0, 0, 0]", r"^config: data\.flow_direction: a direction is a 3-vector"),
        ("data.up_direction=[1, 0, 1]", r"^config: data\.up_direction \[0\.7071, 0, 0\.7071\] is not at right angles "
                                        r"to data\.flow_direction \[1, 0, 0\] \(45 degrees\): give an up direction"),
        ("data.up_direction=[1, 0, 0]", r"^config: data\.up_direction \[1, 0, 0\] is not at right angles"),
    ],
)  # fmt: skip
def test_bad_directions_are_one_line_naming_the_key(override, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(None, [override])
    assert "\n" not in str(caught.value)


def test_a_transient_dataset_keeps_its_own_axes():
    with pytest.raises(ConfigError, match=r"a transient case's flow is along \+x of its plane"):
        load_config(None, ["data.transient={}", "data.flow_direction=[0, 1, 0]"])
    assert load_config(None, ["data.transient={}"]).data.flow_direction == (1.0, 0.0, 0.0)


def test_a_bad_direction_on_the_command_line_is_one_line_and_exit_1(tmp_path):
    result = invoke("prepare", CASE, "-o", tmp_path / "data", "--set", "data.up_direction=[1, 0, 0]")
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "data.up_direction [1, 0, 0] is not at right angles" in lines[0], result.output
    assert not (tmp_path / "data").exists()


# --- the warnings, message by message ---------------------------------------------------------------------


def test_the_default_reference_velocity_is_said_unless_given():
    kw = {"surface_fields": ["p", "wallShearStress"], "pressure_field": "p", "wall_shear_field": "wallShearStress"}
    assert force_notes(velocity_given=False, **kw) == [VELOCITY_LINE]
    assert force_notes(velocity_given=True, **kw) == []
    assert load_config(None).data.reference_velocity is None  # not given: the default 40 m/s, said
    assert load_config(None).data.velocity == 40.0
    assert load_config(None, ["data.reference_velocity=40"]).data.reference_velocity == 40.0  # --set counts


def test_a_pressure_field_among_no_surface_field_says_no_drag():
    notes = force_notes(surface_fields=["pMean"], pressure_field="p", wall_shear_field="wallShearStress",
                        velocity_given=False)  # fmt: skip
    assert notes == ["no drag/lift: data.pressure_field 'p' is not among the surface fields ['pMean']: set "
                     "data.pressure_field (null: no forces)"]  # fmt: skip
    assert force_notes(surface_fields=["x"], pressure_field=None, wall_shear_field=None, velocity_given=False) == []


def test_a_wall_shear_field_among_no_surface_field_says_pressure_only():
    notes = force_notes(surface_fields=["p"], pressure_field="p", wall_shear_field="wallShearStress",
                        velocity_given=True)  # fmt: skip
    assert notes == ["drag is pressure-only: data.wall_shear_field 'wallShearStress' is not among the surface "
                     "fields ['p']: set data.wall_shear_field (null: pressure only)"]  # fmt: skip
    assert force_notes(surface_fields=["p"], pressure_field="p", wall_shear_field=None, velocity_given=True) == []


def test_cases_without_a_reference_area_are_said():
    every = missing_area_note(["a", "b"], 2, area_key="frontal_area")
    assert every is not None and every.startswith("no drag/lift in training (and predict needs --reference-area): ")
    some = missing_area_note(["d", "c", "b", "a"], 9, area_key="frontal_area")
    assert some is not None and some.startswith("no drag/lift in validation for 4 of 9 cases (a, b, c, ...): ")
    assert "'frontal_area' (data.reference_area_key)" in some and some.endswith("set one of them")
    assert missing_area_note([], 9, area_key="frontal_area") is None


def test_a_median_reference_area_names_the_option_and_the_keys():
    line = median_area_note(0.13210, area_key="frontal_area", params_file="params.json")
    assert line.startswith("Cd/Cl use the training cases' median reference area 0.1321: pass --reference-area")
    assert "data.reference_area_key" in line and "data.reference_area " in line


def test_prepare_reports_a_pressure_field_it_did_not_read(tmp_path):
    config = load_config(None, ["data.volume_file=null", "data.surface_fields=[p]", "data.pressure_field=pMean",
                                "data.reference_velocity=40"])  # fmt: skip
    report = prepare_dataset([str(CASE)], tmp_path / "data", config=config)
    assert report.warnings == ["no drag/lift: data.pressure_field 'pMean' is not among the surface fields ['p']: "
                               "set data.pressure_field (null: no forces)"]  # fmt: skip


# --- end to end: a turned dataset with turned directions ----------------------------------------------------


@pytest.fixture(scope="module")
def turned_run(tmp_path_factory) -> dict:
    """Two Ahmed cases turned 90 degrees about z, prepared (surface only, pressure) with flow along +y, trained
    for one epoch; the prepare and train output."""
    work = tmp_path_factory.mktemp("turned")
    cases = [turned_case(EXAMPLES / name, work / "cases" / name) for name in ("case_0000", "case_0001")]
    config = write_config(work / "config.yaml", **{**TINY, "data": {**TINY["data"], "flow_direction": [0, 1, 0]}})
    prepared = ok("prepare", *cases, "-o", work / "data", "-c", config)
    trained = ok("train", work / "data", "-o", work / "run", "-c", config)
    return {"work": work, "cases": cases, "run": work / "run", "prepare": prepared.output, "train": trained.output}


def test_prepare_says_the_default_velocity_and_the_missing_wall_shear_once(turned_run):
    said = turned_run["prepare"]
    assert said.count(VELOCITY_LINE) == 1, said
    assert said.count("drag is pressure-only: data.wall_shear_field 'wallShearStress' is not among") == 1, said
    assert "no drag/lift" not in said  # every case's params give frontal_area


def test_predict_of_a_turned_case_integrates_along_the_runs_flow_direction(turned_run, params):
    out = turned_run["work"] / "predicted"
    case = turned_run["cases"][0]
    result = ok("predict", turned_run["run"], case / "surface.vtu", "--volume-points", 0, "-o", out)
    coefficients = json.loads((out / "case_0000_surface.json").read_text())["coefficients"]
    # the solver's own fields of the turned case, integrated as predict does, along the run's flow (+y)
    mesh = read_fields(CASE / "surface.vtu", ["p"])
    arrays = surface_arrays(mesh)
    expected = coefficients_of(arrays, mesh.fields["p"], params)
    assert coefficients["cd_true_fields"] == pytest.approx(expected[0], rel=1e-4)
    assert coefficients["cl_true_fields"] == pytest.approx(expected[1], rel=1e-4, abs=1e-5)
    assert np.isfinite(coefficients["cd"]) and abs(coefficients["cd"]) < 10  # a one-epoch model: finite, bounded
    assert coefficients["reference_area_source"] == "params.json frontal_area"
    # the training body itself, measured in the run's frame (length along +y): not out of range
    assert json.loads((out / "case_0000_surface.json").read_text())["trust"]["verdict"] != "out of range"
    said = result.output
    assert said.count(VELOCITY_LINE + " or pass --reference-velocity") == 1, said
    assert "drag is pressure-only" in said and "median reference area" not in said


def coefficients_of(arrays: dict, pressure: np.ndarray, params: dict) -> tuple[float, float]:
    """(Cd, Cl) of the pressure alone with the default axes on the unturned case."""
    force = force_from_points(arrays["surface/area"], arrays["surface/area_norm"], pressure, None)
    return coefficients(force, ref_area=params["frontal_area"], velocity=40.0)


def test_predict_says_when_the_reference_area_is_the_training_median(turned_run, tmp_path):
    lone = tmp_path / "design"
    lone.mkdir()
    shutil.copy(turned_run["cases"][0] / "surface.vtu", lone / "body.vtu")  # no params file beside it
    result = ok("predict", turned_run["run"], lone / "body.vtu", "--volume-points", 0, "--reference-velocity", 40,
                "-o", tmp_path / "out")  # fmt: skip
    coefficients = json.loads((tmp_path / "out" / "body.json").read_text())["coefficients"]
    assert coefficients["reference_area_source"] == "median of the training cases"
    lines = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert any(line.startswith("warning: Cd/Cl use the training cases' median reference area") for line in lines)
    assert "--reference-area" in result.output and VELOCITY_LINE not in result.output  # the option was given
