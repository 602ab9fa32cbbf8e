"""Checkpoints: files of older formats and options still load into the same network, or are refused in one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import pyvista as pv
import torch
from helpers import EXAMPLES, ROOT, invoke, ok, one_line_error
from safetensors import safe_open
from safetensors.torch import save_file

from msptcli.checkpoint import FORMAT, load_checkpoint, resolve_checkpoint, save_checkpoint
from msptcli.errors import CheckpointError
from msptcli.model import build_network
from msptcli.physics.force_reference import ForceReference, TransientReference

LEGACY = ROOT / "tests" / "data" / "checkpoint_v1"
GEOMETRY = EXAMPLES / "case_0003" / "geometry.stl"

pytest_plugins = ["helpers"]


def rewrite(source: Path, target: Path, meta: Callable[[dict], dict], state: Callable[[dict], dict] = dict) -> Path:
    """A copy of the checkpoint ``source`` with its metadata and weights edited, as an older mspt wrote it."""
    with safe_open(str(source), framework="pt") as f:
        old_meta, old_state = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file(state(old_state), str(target), metadata=meta(old_meta))
    return target


def with_model_keys(meta: dict, **keys: object) -> dict:
    """``meta`` with ``keys`` set in the network's config and in the run config's ``model`` section."""
    net, config = json.loads(meta["model_config"]), json.loads(meta["config"])
    net.update(keys)
    config["model"].update(keys)
    return {**meta, "model_config": json.dumps(net), "config": json.dumps(config)}


def predict_arrays(checkpoint: Path, out: Path) -> dict[str, np.ndarray]:
    ok("predict", checkpoint, GEOMETRY, "--volume-points", 500, "-o", out)
    surface, volume = pv.read(out / "case_0003_geometry.vtp"), pv.read(out / "case_0003_geometry_volume.vtu")
    coefficients = json.loads((out / "case_0003_geometry.json").read_text())["coefficients"]
    return {
        "volume_points": np.asarray(volume.points),
        **{f"surface_{k}": np.asarray(surface.point_data[k]) for k in ("p", "wallShearStress")},
        **{f"volume_{k}": np.asarray(volume.point_data[k]) for k in ("U", "p")},
        "cd_cl": np.array([coefficients["cd"], coefficients["cl"]]),
    }


def to_format_1(meta: dict) -> dict:
    """Format 1 (before the restructure): the widths inside the network's config, softmax pooling named 'linear'."""
    meta = with_model_keys(meta, pooling="linear")
    net = json.loads(meta["model_config"])
    net |= {"in_features": int(meta.pop("in_features")), "out_features": int(meta.pop("out_features"))}
    return {**meta, "format": "mspt-checkpoint-1", "model_config": json.dumps(net)}


def with_score_bias(state: dict) -> dict:
    """Format 1's softmax pooling had a bias in its score, which a softmax ignores (a dead weight)."""
    bias = {k.replace("score.weight", "score.bias"): torch.full((1,), 0.5) for k in state if k.endswith("score.weight")}
    assert bias, "the network has no softmax pooling"
    return {**state, **bias}


def test_a_format_1_checkpoint_is_translated_into_the_same_network(trained, tmp_path):
    trained_ckpt = load_checkpoint(trained.run)
    config = trained_ckpt.config.model_copy(
        update={"model": trained_ckpt.config.model.model_copy(update={"pooling": "softmax"})}
    )
    torch.manual_seed(0)
    net = build_network(config.model, in_features=trained_ckpt.model.in_features,
                        out_features=trained_ckpt.model.out_features)  # fmt: skip
    parts = {k: getattr(trained_ckpt, k) for k in ("channels", "stats", "surface_location", "reference", "epoch")}
    current = save_checkpoint(tmp_path / "current.safetensors", net, config=config,
                              volume_template=trained_ckpt.volume_template, **parts)  # fmt: skip
    v1 = rewrite(current, tmp_path / "v1.safetensors", to_format_1, with_score_bias)

    old, new = load_checkpoint(v1), load_checkpoint(current)
    assert old.model.config == new.model.config and old.model.config.pooling == "softmax"  # renamed option
    assert old.config == new.config and old.config.model == old.model.config
    assert not any(k.endswith("score.bias") for k in old.model.state_dict())  # the dead bias is gone
    assert all(torch.equal(v, new.model.state_dict()[k]) for k, v in old.model.state_dict().items())
    expected = predict_arrays(current, tmp_path / "from_current")
    for key, got in predict_arrays(v1, tmp_path / "from_v1").items():
        assert np.array_equal(got, expected[key]), key

    resaved = save_checkpoint(tmp_path / "resaved.safetensors", old.model, config=old.config,
                              volume_template=old.volume_template, **parts)  # fmt: skip
    with safe_open(str(resaved), framework="np") as f, safe_open(str(v1), framework="np") as g:
        assert f.metadata()["format"] == FORMAT
        assert json.loads(f.metadata()["reference"]) == json.loads(g.metadata()["reference"])  # the same JSON
    again = load_checkpoint(resaved)
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in old.model.state_dict().items())
    assert np.array_equal(again.volume_template, old.volume_template)


def test_the_format_1_fixture_of_the_removed_carried_variant_is_refused_in_one_line(tmp_path):
    """``tests/data/checkpoint_v1`` is a network of ``supernodes: stream`` (later ``carried``), removed in mspt 0.1."""
    path = LEGACY / "best.safetensors"
    with pytest.raises(CheckpointError, match=r"model\.supernodes: 'stream' was removed in mspt 0\.1") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    out = tmp_path / "pred"
    one_line_error(invoke("predict", path, GEOMETRY, "-o", out), str(path), "'stream' was removed", "train again")
    assert not out.exists()


@pytest.mark.parametrize("value", ["keys", "carried"])
def test_a_checkpoint_saved_with_the_removed_supernodes_key(trained, tmp_path, value):
    """Every checkpoint saved before the key went holds ``supernodes: keys``: it loads as before. A network of
    ``carried`` is refused in one line by ``load_checkpoint`` and ``mspt predict``, which writes nothing."""
    source = resolve_checkpoint(trained.run)
    path = rewrite(source, tmp_path / "saved.safetensors", lambda meta: with_model_keys(meta, supernodes=value))
    if value == "keys":
        old, new = load_checkpoint(path), load_checkpoint(source)
        assert old.model.config == new.model.config and old.config == new.config
        assert all(torch.equal(v, new.model.state_dict()[k]) for k, v in old.model.state_dict().items())
        return
    needle = "model.supernodes: 'carried' was removed in mspt 0.1"
    with pytest.raises(CheckpointError, match=needle):
        load_checkpoint(path)
    out = tmp_path / "pred"
    one_line_error(invoke("predict", path, GEOMETRY, "-o", out), str(path), needle, "drop the key and train again")
    assert not out.exists()


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
    assert json.loads(before_reads["model_config"])["query_reading"] == "blocks"  # before the final reading
    assert json.loads(before_reads["config"])["model"]["query_reading"] == "blocks"
    current = meta({"width": 64, "anchors": {"surface": 256, "reads": "nearest"}, "query_reading": "final"})
    assert _without_anchors_if_older(current) == current

    def transient(**keys):
        net = {"anchors": None, "query_reading": "blocks"}
        saved = {"model_config": json.dumps(net), "config": json.dumps({"data": {"transient": keys}})}
        return json.loads(_without_anchors_if_older(saved)["config"])["data"]["transient"]

    assert transient(history=1) == {"history": 1, "derivatives": False, "advection": None}  # before both
    assert transient(derivatives=True) == {"derivatives": True, "advection": None}  # before the transported inputs
    assert transient(derivatives=True, advection="U") == {"derivatives": True, "advection": "U"}
