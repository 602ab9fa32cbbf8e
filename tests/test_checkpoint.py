"""Checkpoints: a file of the first format (before the restructure) still predicts exactly what it did."""

from __future__ import annotations

import json

import numpy as np
import pytest
import pyvista as pv
from helpers import EXAMPLES, ROOT, ok

from msptcli.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from msptcli.physics.force_reference import ForceReference, TransientReference

LEGACY = ROOT / "tests" / "data" / "checkpoint_v1"

pytest_plugins = ["helpers"]


def test_a_format_1_checkpoint_predicts_the_same_fields(tmp_path):
    expected = np.load(LEGACY / "predicted.npz")
    ok(
        "predict",
        LEGACY / "best.safetensors",
        EXAMPLES / "case_0003" / "geometry.stl",
        "--volume-points",
        500,
        "-o",
        tmp_path,
    )
    surface = pv.read(tmp_path / "case_0003_geometry.vtp")
    volume = pv.read(tmp_path / "case_0003_geometry_volume.vtu")
    assert np.array_equal(np.asarray(volume.points), expected["volume_points"])
    for key, got in (
        ("surface_p", surface.point_data["p"]),
        ("surface_wallShearStress", surface.point_data["wallShearStress"]),
        ("volume_U", volume.point_data["U"]),
        ("volume_p", volume.point_data["p"]),
    ):
        assert np.allclose(got, expected[key], rtol=1e-5, atol=1e-6 * np.abs(expected[key]).max()), key
    summary = json.loads((tmp_path / "case_0003_geometry.json").read_text())
    assert summary["coefficients"]["cd"] == pytest.approx(float(expected["cd"]), rel=1e-5)
    assert summary["coefficients"]["cl"] == pytest.approx(float(expected["cl"]), rel=1e-5)


def test_a_format_1_checkpoint_is_translated_and_saved_in_the_current_format(tmp_path):
    old = load_checkpoint(LEGACY / "best.safetensors")
    assert old.model.config.pooling == "softmax" and old.model.config.supernodes == "carried"  # renamed options
    assert old.config.model == old.model.config
    assert not any(k.endswith("score.bias") for k in old.model.state_dict())  # the dead bias is gone
    path = save_checkpoint(
        tmp_path / "new.safetensors",
        old.model,
        config=old.config,
        channels=old.channels,
        stats=old.stats,
        surface_location=old.surface_location,
        reference=old.reference,
        epoch=old.epoch,
        volume_template=old.volume_template,
    )
    from safetensors import safe_open

    with safe_open(str(path), framework="np") as f, safe_open(str(LEGACY / "best.safetensors"), framework="np") as g:
        assert f.metadata()["format"] == FORMAT
        assert json.loads(f.metadata()["reference"]) == json.loads(g.metadata()["reference"])  # the same JSON
    new = load_checkpoint(path)
    assert all(np.array_equal(v, new.model.state_dict()[k]) for k, v in old.model.state_dict().items())
    assert np.array_equal(new.volume_template, old.volume_template)


def test_the_force_reference_round_trips_through_its_json():
    transient = TransientReference(length=0.1, viscosity=None, viscosity_key="reference.nu",
                                   training_conditions={"case_0000": {"Re": 100}})  # fmt: skip
    ref = ForceReference(velocity=1.5, density=1.0, pressure_field="p", area_key="frontal_area",
                         training_reference_areas=[0.1, 0.2], transient=transient)  # fmt: skip
    as_json = json.loads(json.dumps(ref.to_json()))
    assert as_json["transient"]["length"] == 0.1 and as_json["velocity"] == 1.5
    assert ForceReference.from_json(as_json) == ref
    steady = ForceReference(velocity=40.0, density=1.0)
    assert "transient" not in steady.to_json() and ForceReference.from_json(steady.to_json()) == steady
    for bad in (0, -1.0, float("nan"), None, "40"):
        with pytest.raises(ValueError, match="the reference velocity must be a positive number"):
            ForceReference.from_json({**steady.to_json(), "velocity": bad})


def test_older_defaults_are_written_out_so_that_a_new_default_cannot_change_a_saved_network():
    from msptcli.checkpoint import _without_anchors_if_older

    def meta(net):
        return {"model_config": json.dumps(net), "config": json.dumps({"model": dict(net)})}

    before_anchors = _without_anchors_if_older(meta({"width": 64}))
    assert json.loads(before_anchors["model_config"])["anchors"] is None
    assert json.loads(before_anchors["config"])["model"]["anchors"] is None
    before_reads = _without_anchors_if_older(meta({"width": 64, "anchors": {"surface": 256}}))
    assert json.loads(before_reads["model_config"])["anchors"] == {"surface": 256, "reads": "patch"}
    assert json.loads(before_reads["config"])["model"]["anchors"]["reads"] == "patch"
    current = meta({"width": 64, "anchors": {"surface": 256, "reads": "nearest"}})
    assert _without_anchors_if_older(current) == current

    def transient(**keys):
        saved = {"model_config": json.dumps({"anchors": None}), "config": json.dumps({"data": {"transient": keys}})}
        return json.loads(_without_anchors_if_older(saved)["config"])["data"]["transient"]

    assert transient(history=1) == {"history": 1, "derivatives": False, "advection": None}  # before both
    assert transient(derivatives=True) == {"derivatives": True, "advection": None}  # before the transported inputs
    assert transient(derivatives=True, advection="U") == {"derivatives": True, "advection": "U"}
