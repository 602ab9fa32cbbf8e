"""Fine-tuning (``mspt train --init``): the parent's weights, head rows for kept fields, frozen groups, records."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import ROOT, invoke, ok, tiny_config_file
from safetensors.numpy import load_file

from msptcli.checkpoint import load_checkpoint
from msptcli.data.features import Channels, to_physical
from msptcli.data.manifest import read_manifest
from msptcli.model import build_network
from msptcli.train import finetune

CASES = [str(ROOT / "examples" / "ahmed" / f"case_000{i}") for i in range(3)]
OTHER_CASES = [str(ROOT / "examples" / "ahmed" / f"case_000{i}") for i in range(3, 6)]


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
    """A dataset with the default fields and a parent trained on it one epoch; a second dataset of other
    bodies with surface p, volume U and a field the parent never saw (volume nut)."""
    work = tmp_path_factory.mktemp("finetune")
    config = tiny_config_file(work / "config.yaml")
    ok("prepare", *CASES, "-o", work / "a", "-c", config)
    other = tiny_config_file(work / "other.yaml", data={"split": {"val": ["case_0005"], "test": []}})
    ok("prepare", *OTHER_CASES, "-o", work / "b", "-c", other, "--surface-fields", "p", "--volume-fields", "U,nut")
    ok("train", work / "a", "-o", work / "parent", "--epochs", "1")
    return work


def weights(run):
    return {k: v for k, v in load_file(run / "checkpoints" / "last.safetensors").items() if not k.startswith("extra")}


def test_frozen_attention_stays_bit_for_bit_and_the_rest_trains(parent, tmp_path):
    run = tmp_path / "ft"
    result = ok("train", parent / "b", "-o", run, "--init", parent / "parent", "--freeze", "attention", "--epochs", "1")
    assert "fine-tuned from" in result.output and "volume/nut" in result.output
    before, after = weights(parent / "parent"), weights(run)
    attention = [k for k in after if ".attn." in f".{k}"]
    others = [k for k in after if k not in attention and not k.startswith("head.")]
    assert attention and others
    assert all(np.array_equal(before[k], after[k]) for k in attention)  # frozen: bit for bit
    assert sum(not np.array_equal(before[k], after[k]) for k in others) > 0.9 * len(others)  # MLPs, embedding train

    ckpt = load_checkpoint(run)
    record = ckpt.parent
    assert record.freeze == "attention" and record.epoch == 1
    assert record.kept_fields == {"surface/p": "surface/p", "volume/U": "volume/U"}
    assert record.new_fields == ["volume/nut"]
    assert len(record.sha256) == 64 and record.path.endswith("best.safetensors")
    frozen = sum(v.size for k, v in after.items() if k in attention)
    assert record.frozen_parameters == frozen
    assert ckpt.config.train.init == str(parent / "parent") and ckpt.config.train.freeze == "attention"
    assert ckpt.channels.volume == (("U", 3), ("nut", 1))


def test_frozen_encoder_trains_only_the_head_and_survives_resume(parent, tmp_path):
    run = tmp_path / "ft"
    ok("train", parent / "b", "-o", run, "--init", parent / "parent", "--freeze", "encoder", "--epochs", "1")
    ok("train", parent / "b", "-o", run, "--resume", "--epochs", "2")
    before, after = weights(parent / "parent"), weights(run)
    body = [k for k in after if not k.startswith(("head.", "norm."))]
    assert all(np.array_equal(before[k], after[k]) for k in body)
    assert not np.array_equal(before["norm.weight"], after["norm.weight"])
    ckpt = load_checkpoint(run)
    assert ckpt.epoch == 2 and ckpt.parent.freeze == "encoder"


def test_kept_head_rows_predict_the_parents_fields_before_any_step(parent):
    """Head rows are re-expressed for the new normalisation: the started network gives the parent's physics."""
    old = finetune.load_parent(parent / "parent")
    manifest = read_manifest(parent / "b")
    channels = Channels.from_fields(manifest.fields)
    stats = finetune.fine_tune_stats(old, manifest.stats)
    pairs = finetune.field_pairs(old, channels, {})
    model = build_network(old.checkpoint.config.model, in_features=11, out_features=channels.total).eval()
    finetune.start_from_parent(model, old, channels, stats, pairs)
    assert stats.coord_scale == old.checkpoint.stats.coord_scale

    torch.manual_seed(0)
    features = torch.randn(256, 11)
    from msptcli.model import build_layout

    layout = build_layout([256], model.config)
    with torch.no_grad():
        new_out = model(features, layout).numpy()
        old_out = old.checkpoint.model(features, layout).numpy()
    new_fields = to_physical(stats, channels, new_out, 128)
    old_fields = to_physical(old.checkpoint.stats, old.checkpoint.channels, old_out, 128)
    for part, name in (("surface", "p"), ("volume", "U")):
        np.testing.assert_allclose(new_fields[part][name], old_fields[part][name], rtol=1e-4, atol=1e-4)
    # the stats differ, so this is not the identity: the rows were rescaled
    assert manifest.stats.surface["p"].std != old.checkpoint.stats.surface["p"].std


def test_field_map_keeps_a_renamed_field(parent, tmp_path):
    run = tmp_path / "ft"
    ok("train", parent / "b", "-o", run, "--init", parent / "parent", "--field-map", "volume/nut=volume/p",
       "--epochs", "1")  # fmt: skip
    assert load_checkpoint(run).parent.kept_fields["volume/nut"] == "volume/p"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--resume"], "--init starts a new run"),
        (["--field-map", "volume/q=volume/p"], "'volume/q' is not a field of this dataset"),
        (["--field-map", "volume/nut=volume/k"], "'volume/k' is not a field of the parent"),
        (["--field-map", "volume/nut=volume/U"], "has 1 components, the parent's 'volume/U' 3"),
        (["--field-map", "nut=p"], "expected NEW=OLD of part/name fields"),
        (["--set", "model.backbone=transolver"], "the parent's backbone is mspt, this run's model.backbone transolver"),
        (["--set", "model.width=32"], "model.width 16 there, 32 here"),
    ],
)
def test_bad_fine_tuning_gives_one_line_and_no_run(parent, tmp_path, extra, message):
    run = tmp_path / "ft"
    result = invoke("train", parent / "b", "-o", run, "--init", parent / "parent", "--epochs", "1", *extra)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert result.output.strip().count("\n") == 0 and "Traceback" not in result.output
    assert not run.exists()


def test_freeze_without_init_and_a_missing_parent(parent, tmp_path):
    result = invoke("train", parent / "b", "-o", tmp_path / "ft", "--freeze", "attention")
    assert result.exit_code == 1 and "give --init RUN too" in result.output
    result = invoke("train", parent / "b", "-o", tmp_path / "ft", "--init", tmp_path / "nowhere")
    assert result.exit_code == 1 and "no such run directory or checkpoint" in result.output
