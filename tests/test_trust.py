"""When not to trust a prediction: units, frame and range of a new body against the training bodies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import pyvista as pv
from helpers import EXAMPLES, invoke, ok, one_line_error, sphere_surface, tree_digest

from msptcli import choices
from msptcli.errors import OptionError
from msptcli.trust.check import UNITS, TrainingShapes, check_shape, unit_scale
from msptcli.trust.shape import FEATURES, outline_shape_features, shape_features

pytest_plugins = ["helpers"]


def features_of(mesh: pv.PolyData) -> dict[str, float]:
    """Shape features with the area of every point the mean of its triangles' thirds (as prepare's shares)."""
    tri = mesh.triangulate()
    faces = tri.faces.reshape(-1, 4)[:, 1:]
    p = np.asarray(tri.points, dtype=np.float64)
    area = 0.5 * np.linalg.norm(np.cross(p[faces[:, 1]] - p[faces[:, 0]], p[faces[:, 2]] - p[faces[:, 0]]), axis=1)
    share = np.zeros(len(p))
    np.add.at(share, faces.ravel(), np.repeat(area / 3, 3))
    return shape_features(p, share)


def family(n: int = 12, seed: int = 0) -> list[pv.PolyData]:
    """Boxes of a family: length 0.9-1.2, width 0.35-0.45, height 0.25-0.33, on the ground 0.05 up."""
    rng = np.random.default_rng(seed)
    bodies = []
    for _ in range(n):
        length, width, height = rng.uniform(0.9, 1.2), rng.uniform(0.35, 0.45), rng.uniform(0.25, 0.33)
        bodies.append(pv.Box((0, length, -width / 2, width / 2, 0.05, 0.05 + height), level=2).triangulate())
    return bodies


@pytest.fixture(scope="module")
def shapes() -> TrainingShapes:
    rows = [list(features_of(b).values()) for b in family()]
    return TrainingShapes(tuple(f"case_{i}" for i in range(len(rows))), np.array(rows))


def test_features_follow_scale_turn_and_move():
    body = pv.Box((0, 1.0, -0.2, 0.2, 0.05, 0.35), level=2).triangulate()
    f = features_of(body)
    assert (f["length"], f["width"], f["height"]) == pytest.approx((1.0, 0.4, 0.3))
    assert f["area"] == pytest.approx(2 * (0.4 + 0.3 + 0.12)) and f["alignment"] == pytest.approx(1.0)
    assert f["bottom"] == pytest.approx(0.05) and f["centre_x"] == pytest.approx(0.5)
    big = features_of(body.scale(3.0, inplace=False))
    assert big["length"] == pytest.approx(3.0) and big["area"] == pytest.approx(9 * f["area"])
    turned = features_of(body.rotate_z(90, point=body.center, inplace=False))
    assert (turned["length"], turned["width"]) == pytest.approx((0.4, 1.0)) and turned["alignment"] < 1e-6
    moved = features_of(body.translate((2.0, 0, 0), inplace=False))
    assert moved["centre_x"] == pytest.approx(2.5) and moved["length"] == pytest.approx(1.0)


def test_a_body_of_the_family_is_ok(shapes):
    new = pv.Box((0, 1.05, -0.2, 0.2, 0.05, 0.34), level=2).triangulate()
    check = check_shape(shapes, features_of(new))
    assert check.verdict == "ok" and check.units is None and check.out_of_range == {}
    assert 0 <= check.percentile <= 100 and check.notes() == []
    assert check.scale == pytest.approx(1.0, rel=0.2)


@pytest.mark.parametrize("unit", ["mm", "cm", "in"])
def test_a_body_in_other_units_is_named_with_its_fix(shapes, unit):
    body = pv.Box((0, 1.05, -0.2, 0.2, 0.05, 0.34), level=2).triangulate()
    check = check_shape(shapes, features_of(body.scale(1 / UNITS[unit], inplace=False)))
    assert check.verdict == "out of range"
    assert f"--units {unit}" in check.units and f"--scale {UNITS[unit]:g}" in check.units and "--force" in check.units


def test_a_body_of_no_unit_gets_the_scale_that_fits(shapes):
    body = pv.Box((0, 1.05, -0.2, 0.2, 0.05, 0.34), level=2).triangulate()
    check = check_shape(shapes, features_of(body.scale(1e20, inplace=False)))
    assert check.units is not None and "--scale 1e-20" in check.units and "--units" not in check.units


@pytest.mark.parametrize(
    ("change", "flagged"),
    [
        (lambda b: b.scale((1.4, 1, 1), inplace=False), {"length"}),
        (lambda b: b.scale((1, 1.4, 1), inplace=False), {"width"}),
        (lambda b: b.scale((1, 1, 0.6), inplace=False), {"height"}),
        (lambda b: b.rotate_z(90, point=b.center, inplace=False), {"length", "width", "alignment"}),
        (lambda b: b.translate((3.0, 0, 0), inplace=False), {"centre_x"}),
        (lambda b: b.translate((0, 0, 0.5), inplace=False), {"bottom", "centre_z"}),
    ],
    ids=["longer", "wider", "lower", "turned", "moved downstream", "lifted"],
)
def test_a_body_unlike_the_family_is_flagged_with_what_differs(shapes, change, flagged):
    body = pv.Box((0, 1.05, -0.2, 0.2, 0.05, 0.34), level=2).triangulate()
    check = check_shape(shapes, features_of(change(body)))
    assert check.verdict in ("warn", "out of range") and check.units is None
    assert flagged <= set(check.out_of_range)
    assert all("training bodies'" in note for note in check.notes())


def test_units_and_scale_options():
    assert list(UNITS) == list(get_args(choices.Units))
    assert unit_scale("mm", None) == 1e-3 and unit_scale(None, 2.5) == 2.5 and unit_scale(None, None) == 1.0
    for units, scale in (("mm", 0.001), (None, 0.0), (None, float("nan")), ("yd", None)):
        with pytest.raises(OptionError):
            unit_scale(units, scale)


def test_shapes_round_trip_and_refuse_other_features(shapes):
    again = TrainingShapes.from_json(json.loads(json.dumps(shapes.to_json())))
    assert again.names == shapes.names and np.array_equal(again.values, shapes.values)
    wrong = shapes.to_json() | {"features": list(FEATURES)[:-1]}
    with pytest.raises(ValueError, match="not this mspt's"):
        TrainingShapes.from_json(wrong)
    older = {k: v for k, v in shapes.to_json().items() if k != "kind"}  # checkpoints before outline records
    assert TrainingShapes.from_json(older).kind == "surface"


def _outline(xy: np.ndarray, box: float = 7.0) -> tuple[np.ndarray, np.ndarray]:
    """A planar mesh's points (the closed outline ``xy`` and the corners of a channel) and the outline's edges."""
    corners = np.array([[-box, -box], [2 * box, -box], [2 * box, box], [-box, box]])
    points = np.concatenate([xy, corners])
    points = np.concatenate([points, np.zeros((len(points), 1))], axis=1)
    n = len(xy)
    return points, np.stack([np.arange(n), (np.arange(n) + 1) % n], axis=1)


def test_outline_features_of_planar_bodies():
    """A transient case's body outline (``outline_shape_features``): a circle has no long axis, an ellipse
    across the flow is aligned 0, and the channel's extent is part of the record."""
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    circle = outline_shape_features(*_outline(0.5 * np.stack([np.cos(t), np.sin(t)], axis=1)))
    assert circle["length"] == pytest.approx(1.0, abs=1e-3) and circle["perimeter"] == pytest.approx(np.pi, rel=1e-3)
    assert circle["alignment"] == 1.0 and abs(circle["balance_x"]) < 1e-6
    assert circle["domain_length"] == 21.0 and circle["domain_height"] == 14.0
    across = outline_shape_features(*_outline(np.stack([0.2 * np.cos(t), 0.5 * np.sin(t)], axis=1)))
    assert across["alignment"] < 1e-6 and across["height"] == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="no shape"):
        outline_shape_features(np.zeros((4, 3)), np.zeros((0, 2), dtype=int))


def test_outline_records_check_units_without_rescale_options():
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    bodies = [outline_shape_features(*_outline(r * np.stack([np.cos(t), np.sin(t)], axis=1))) for r in (0.5, 0.55, 0.6)]
    record = TrainingShapes(("a", "b", "c"), np.array([list(b.values()) for b in bodies]), kind="outline")
    assert check_shape(record, bodies[1]).verdict == "ok"
    points, edges = _outline(0.55 * np.stack([np.cos(t), np.sin(t)], axis=1))
    check = check_shape(record, outline_shape_features(points * 1000, edges), rescale=False)
    assert check.verdict == "out of range"
    assert "look like mm: write the series in the training cases' units" in check.units
    assert "--units" not in check.units


# --- through mspt predict ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def millimetre_case(tmp_path_factory, design_case) -> Path:
    """The design's STL in millimetres, beside its params.json."""
    folder = tmp_path_factory.mktemp("mm") / design_case.name
    folder.mkdir()
    shutil.copy(design_case / "params.json", folder / "params.json")
    stl = pv.read(design_case / "geometry.stl")
    stl.points = np.asarray(stl.points) * 1000.0
    stl.save(folder / "geometry.stl")
    return folder


def test_checkpoint_records_the_training_bodies(trained):
    from msptcli.checkpoint import load_checkpoint
    from msptcli.data.manifest import read_manifest

    ckpt = load_checkpoint(trained.run)
    assert ckpt.shapes is not None
    assert list(ckpt.shapes.names) == [e.name for e in read_manifest(trained.prepared.data).split("train")]
    assert ckpt.shapes.values.shape == (len(ckpt.shapes.names), len(FEATURES))


def test_predict_refuses_a_millimetre_stl_in_one_line(trained, millimetre_case, tmp_path):
    geometry = millimetre_case / "geometry.stl"
    before = tree_digest(millimetre_case)
    result = invoke("predict", trained.run, geometry, "--volume-points", 0, "-o", tmp_path / "out")
    line = one_line_error(result, str(geometry), "--units mm", "--scale 0.001", "--force")
    assert "the training bodies' size" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert tree_digest(millimetre_case) == before


def test_predict_with_scale_gives_the_metre_answer_in_the_input_coordinates(trained, design_case, predicted_stl,
                                                                         tmp_path):  # fmt: skip
    # 1024x and back is exact in floating point: the prediction must be the metre STL's to the last bit
    folder = tmp_path / design_case.name
    folder.mkdir()
    shutil.copy(design_case / "params.json", folder / "params.json")
    stl = pv.read(design_case / "geometry.stl")
    stl.points = np.asarray(stl.points) * 1024.0
    stl.save(folder / "geometry.stl")
    out = tmp_path / "out"
    ok("predict", trained.run, folder / "geometry.stl", "--scale", 1 / 1024, "--volume-points", 2000, "-o", out)
    name = "case_0003_geometry"
    summary = json.loads((out / f"{name}.json").read_text())
    metre = json.loads((predicted_stl.out / f"{name}.json").read_text())
    assert summary["scale"] == 1 / 1024 and "units" not in summary["trust"]
    assert summary["coefficients"] == metre["coefficients"]
    assert summary["trust"] == metre["trust"]
    written, given = pv.read(out / f"{name}.vtp"), pv.read(folder / "geometry.stl")
    assert np.array_equal(written.points, given.points)  # the input's own coordinates
    assert np.allclose(written.point_data["p"], pv.read(predicted_stl.out / f"{name}.vtp").point_data["p"], atol=1e-5)
    volume, metre_volume = (pv.read(o / f"{name}_volume.vtu").points for o in (out, predicted_stl.out))
    assert np.allclose(volume, np.asarray(metre_volume) * 1024.0, rtol=1e-5)


def test_predict_with_units_reads_millimetres(trained, millimetre_case, predicted_stl, tmp_path):
    out = tmp_path / "out"
    result = ok("predict", trained.run, millimetre_case / "geometry.stl", "--units", "mm", "--volume-points", 0,
                "-o", out)  # fmt: skip
    summary = json.loads((out / "case_0003_geometry.json").read_text())
    metre = json.loads((predicted_stl.out / "case_0003_geometry.json").read_text())
    assert summary["scale"] == 1e-3 and "units" not in summary["trust"]
    assert summary["trust"]["features"] == pytest.approx(metre["trust"]["features"], rel=1e-5, abs=1e-9)
    assert summary["coefficients"]["cd"] == pytest.approx(metre["coefficients"]["cd"], rel=0.1)  # anchors redrawn
    assert np.allclose(pv.read(out / "case_0003_geometry.vtp").points, pv.read(millimetre_case / "geometry.stl").points)
    assert "trust" in result.output


def test_predict_with_force_marks_the_prediction_out_of_range(trained, millimetre_case, tmp_path):
    out = tmp_path / "out"
    result = ok("predict", trained.run, millimetre_case / "geometry.stl", "--force", "--volume-points", 0, "-o", out)
    trust = json.loads((out / "case_0003_geometry.json").read_text())["trust"]
    assert trust["verdict"] == "out of range" and "--units mm" in trust["units"]
    assert "out of range" in result.output and "predicted with --force" in result.output


def test_predict_warns_of_a_turned_body_and_not_of_a_training_body(trained, tmp_path):
    folder = tmp_path / "case_0000"
    folder.mkdir()
    shutil.copy(EXAMPLES / "case_0000" / "params.json", folder / "params.json")
    stl = pv.read(EXAMPLES / "case_0000" / "geometry.stl")
    stl.save(folder / "geometry.stl")
    clean = ok("predict", trained.run, folder / "geometry.stl", "--volume-points", 0, "-o", tmp_path / "clean")
    assert json.loads((tmp_path / "clean" / "case_0000_geometry.json").read_text())["trust"]["verdict"] == "ok"
    assert "warn:" not in clean.output and "beyond" not in clean.output

    stl.rotate_z(90, point=stl.center, inplace=True)
    stl.save(folder / "geometry.stl")
    turned = ok("predict", trained.run, folder / "geometry.stl", "--volume-points", 0, "-o", tmp_path / "turned")
    trust = json.loads((tmp_path / "turned" / "case_0000_geometry.json").read_text())["trust"]
    assert trust["verdict"] == "out of range" and {"length", "width", "alignment"} <= set(trust["out_of_range"])
    assert "turned away from the flow" in turned.output


def test_units_and_scale_together_are_refused(trained, tmp_path):
    result = invoke("predict", trained.run, EXAMPLES / "case_0000" / "geometry.stl", "--units", "mm", "--scale",
                    "0.001", "-o", tmp_path / "out")  # fmt: skip
    one_line_error(result, "--units and --scale")


def test_sphere_in_other_units_is_refused_by_the_library(trained, tmp_path):
    from msptcli.checkpoint import load_checkpoint
    from msptcli.errors import InvalidInputError
    from msptcli.predict import predict_geometry

    path = tmp_path / "ball.stl"
    sphere_surface().scale(500.0, inplace=False).save(path)
    with pytest.raises(InvalidInputError, match="--force"):
        predict_geometry(load_checkpoint(trained.run), path, tmp_path / "out", volume_points=0, preview=False)


# --- uncertainty: the spread over anchor draws, calibrated on the validation bodies ----------------------------


def test_conformal_factor_covers_the_stated_share():
    from msptcli.trust.uncertainty import conformal_factor

    rng = np.random.default_rng(0)
    raw = rng.uniform(0.5, 2.0, 20_000)
    error = np.abs(rng.standard_normal(20_000) * raw * 7.0)  # errors 7x the spread, spread ranks them
    factor = conformal_factor(error[:10_000], raw[:10_000])
    assert factor == pytest.approx(7.0 * 1.6449, rel=0.05)
    covered = np.mean(error[10_000:] <= factor * raw[10_000:])  # held-out points
    assert 0.88 <= covered <= 0.92
    assert conformal_factor(np.zeros(5), np.zeros(5)) == 0.0  # nothing wrong, nothing spread


def test_the_spread_is_smoothed_over_neighbouring_points_of_its_part():
    """Three draws estimate a standard deviation with about 50% noise; the RMS over a point's NEIGHBOURS nearest
    points keeps a smooth spread as it is and takes most of that noise out."""
    from msptcli.trust.uncertainty import DRAWS, smoothed, spread

    rng = np.random.default_rng(0)
    points = rng.random((4000, 3))
    level = 0.1 + points[:, :1]  # (n, 1) the spread the draws estimate: slowly varying
    assert np.allclose(smoothed(np.repeat([[0.3]], 4000, axis=0), points), 0.3)
    draws = [level * rng.standard_normal((4000, 1)) for _ in range(DRAWS)]
    raw = spread(draws)
    for estimate, most in ((raw, 0.6), (smoothed(raw, points), 0.2)):
        relative = np.abs(estimate / level - 1)
        assert np.median(relative) < most and (estimate.shape == raw.shape)
    assert np.median(np.abs(smoothed(raw, points) / level - 1)) < 0.5 * np.median(np.abs(raw / level - 1))
    assert np.array_equal(smoothed(raw[:1], points[:1]), raw[:1])  # one point: itself


def test_forces_take_their_own_factor_only_from_enough_bodies():
    from msptcli.trust.uncertainty import MIN_FORCE_BODIES, fit_calibration

    rng = np.random.default_rng(1)
    errors, raws = {"surface/p": [rng.uniform(0, 3, 50)]}, {"surface/p": [np.ones(50)]}
    forces = [(0.01 * i, 0.001, 0.02, 0.001) for i in range(1, MIN_FORCE_BODIES + 1)]
    own = fit_calibration(errors, raws, forces, draws=3)
    assert own.forces_from == "bodies" and own.cd == pytest.approx(0.05 / 0.001)
    few = fit_calibration(errors, raws, forces[:1], draws=3)
    assert few.forces_from == "none" and few.cd is None and few.fields["surface/p"] > 0
    distances = [0.5] * MIN_FORCE_BODIES  # the bodies' latent distances: the factors are over them
    by_latent = fit_calibration(errors, raws, forces, draws=3, distances=distances)
    assert by_latent.forces_from == "latent" and by_latent.cd == pytest.approx(0.05 / 0.5)
    assert by_latent.cl == pytest.approx(0.02 / 0.5) and by_latent.fields == own.fields
    assert fit_calibration(errors, raws, forces[:1], draws=3, distances=distances[:1]).forces_from == "none"


def test_predict_scales_cd_by_the_latent_distance_where_calibrated_so(trained, design_case, tmp_path):
    """With factors over the latent distance (5+ validation bodies and latents), Cd's standard deviation is the
    design's distance (its trust.model.score) times the factor over 1.645, not the draws' spread."""
    from dataclasses import replace

    from msptcli.checkpoint import load_checkpoint
    from msptcli.predict import predict_geometry
    from msptcli.trust.uncertainty import Z90, Calibration

    ckpt = load_checkpoint(trained.run)
    assert ckpt.latents is not None
    cal = Calibration(dict(ckpt.calibration.fields), cd=0.2, cl=0.3, bodies=5, draws=3, forces_from="latent")
    result = predict_geometry(replace(ckpt, calibration=cal), design_case / "geometry.stl", tmp_path,
                              volume_points=0)  # fmt: skip
    c, distance = result.coefficients, result.trust.model.score
    assert distance > 0 and c.cd_std == pytest.approx(0.2 * distance / Z90)
    assert c.cl_std == pytest.approx(0.3 * distance / Z90)
    assert "latent distance" in c.uncertainty


def test_training_calibrates_the_best_checkpoint_on_the_validation_bodies(trained):
    from msptcli.checkpoint import load_checkpoint
    from msptcli.trust.uncertainty import DRAWS

    cal = load_checkpoint(trained.run).calibration
    assert cal is not None and cal.bodies == 1 and cal.draws == DRAWS
    assert set(cal.fields) == {"surface/p", "surface/wallShearStress", "volume/U", "volume/p"}
    assert all(np.isfinite(v) and v > 0 for v in cal.fields.values())
    assert cal.forces_from == "none" and cal.cd is None and cal.cl is None  # one body: Cd, Cl uncalibrated
    assert "uncertainty calibrated on 1 validation bodies" in trained.result.output
    assert load_checkpoint(trained.run / "checkpoints" / "last.safetensors").calibration is None


def test_predict_writes_standard_deviations_and_leaves_the_fields_as_they_are(trained, predicted_stl, tmp_path):
    name = "case_0003_geometry"
    with_spread = pv.read(predicted_stl.out / f"{name}.vtp")
    for field in ("p", "wallShearStress"):
        std = np.asarray(with_spread.point_data[f"{field}_std"])
        assert std.shape == np.asarray(with_spread.point_data[field]).shape
        assert np.isfinite(std).all() and (std >= 0).all() and std.max() > 0
    volume = pv.read(predicted_stl.out / f"{name}_volume.vtu")
    assert {"U_std", "p_std"} <= set(volume.point_data.keys())
    c = json.loads((predicted_stl.out / f"{name}.json").read_text())["coefficients"]
    assert c["cd_std"] > 0 and c["cl_std"] > 0
    assert "3 anchor draws, calibrated on 1 validation bodies" in c["uncertainty"]
    assert "Cd, Cl uncalibrated (fewer than 5 validation bodies)" in c["uncertainty"]
    assert "±" in predicted_stl.result.output

    out = tmp_path / "plain"
    ok("predict", trained.run, predicted_stl.geometry, "--volume-points", 2000, "--uncertainty", 0, "-o", out)
    plain = pv.read(out / f"{name}.vtp")
    assert "p_std" not in plain.point_data
    assert np.array_equal(plain.point_data["p"], with_spread.point_data["p"])  # the spread changes no prediction
    plain_c = json.loads((out / f"{name}.json").read_text())["coefficients"]
    assert plain_c["cd"] == c["cd"] and "cd_std" not in plain_c


def test_the_cli_default_is_the_library_default():
    import inspect

    from msptcli.cli import predict
    from msptcli.predict import predict_geometry
    from msptcli.trust.uncertainty import DRAWS

    assert inspect.signature(predict).parameters["uncertainty"].default == DRAWS
    assert inspect.signature(predict_geometry).parameters["uncertainty"].default == DRAWS


# --- the model-level check: the design's latent against the training designs' ----------------------------------


def test_latent_check_flags_a_far_design_and_not_a_near_one():
    from msptcli.trust.latent import TrainingLatents, check_latent

    rng = np.random.default_rng(0)
    train = rng.standard_normal((20, 18))
    latents = TrainingLatents(tuple(f"case_{i}" for i in range(20)), train)
    near = check_latent(latents, train[3] + 0.01 * rng.standard_normal(18))
    assert not near.flagged and near.nearest == "case_3" and near.percentile == 0.0
    far = check_latent(latents, train.mean(axis=0) + 10 * train.std(axis=0))
    assert far.flagged and far.percentile == 100.0 and "unlike every training body" in far.note()
    few = check_latent(TrainingLatents(latents.names[:4], train[:4]), train.mean(axis=0) + 10 * train.std(axis=0))
    assert few.threshold is None and not few.flagged
    again = TrainingLatents.from_json(json.loads(json.dumps(latents.to_json())))
    assert again.names == latents.names and np.allclose(again.values, latents.values)


def test_best_checkpoint_records_the_training_latents_and_predict_reads_them(trained, predicted_stl):
    from msptcli.checkpoint import load_checkpoint
    from msptcli.data.manifest import read_manifest

    ckpt = load_checkpoint(trained.run)
    assert ckpt.latents is not None and ckpt.latents.values.shape == (2, 2 * ckpt.model.out_features)
    assert list(ckpt.latents.names) == [e.name for e in read_manifest(trained.prepared.data).split("train")]
    model = json.loads((predicted_stl.out / "case_0003_geometry.json").read_text())["trust"]["model"]
    assert set(model) == {"score", "threshold", "percentile", "nearest_training_body", "flagged"}
    assert model["score"] >= 0 and model["threshold"] is None and not model["flagged"]  # 2 training bodies: too few


@pytest.mark.parametrize(("change", "needle"), [(lambda p: p * 1000.0, "x the body's size"),
                                                 (lambda p: p + np.array([50.0, 0, 0]), "does not surround the body")],
                         ids=["millimetres", "moved"])  # fmt: skip
def test_a_volume_mesh_that_does_not_belong_to_the_body_is_refused(trained, design_case, tmp_path, change, needle):
    volume = pv.read(design_case / "volume.vtu")
    volume.points = change(np.asarray(volume.points))
    volume.save(tmp_path / "volume.vtu")
    result = invoke("predict", trained.run, design_case / "surface.vtu", "--volume", tmp_path / "volume.vtu",
                    "-o", tmp_path / "out")  # fmt: skip
    one_line_error(result, "volume.vtu", needle, "--force")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_volume_problem_names_a_volume_far_larger_than_the_body():
    from msptcli.trust.check import volume_problem

    body = np.random.default_rng(0).uniform(0, 1, (100, 3))
    assert volume_problem(body, body * 20 - 10) is None
    assert "5e+03x the body's size" in volume_problem(body, body * 5000 - 2500)
