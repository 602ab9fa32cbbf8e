"""``train.val_points``: validation during training evaluates a seeded subsample of each validation case, the
same every epoch; the best checkpoint is validated on the whole meshes at the end."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from helpers import ok

from msptcli.checkpoint import force_reference, load_checkpoint
from msptcli.config import load_config
from msptcli.data.manifest import read_manifest
from msptcli.data.sample import load_sample
from msptcli.evaluate import evaluate_sample, subsample_rows

pytest_plugins = ["helpers"]

LIMIT = 300


def test_subsample_rows_are_seeded_and_whole_within_the_limit():
    rows = subsample_rows(1000, 100, 7)
    assert rows is not None and len(rows) == 100 and len(set(rows)) == 100 and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, subsample_rows(1000, 100, 7)) and not np.array_equal(rows, subsample_rows(1000, 100, 8))
    assert subsample_rows(100, 100, 7) is None and subsample_rows(50, None, 7) is None


def test_evaluate_sample_on_a_subsample(trained):
    data = trained.prepared.data
    manifest = read_manifest(data)
    entry = manifest.split("val")[0]
    sample = load_sample(data / entry.file)
    ckpt = load_checkpoint(trained.run)
    cfg = load_config(trained.prepared.config)
    kw = dict(reference=force_reference(cfg, manifest.split("train")), device=torch.device("cpu"))
    whole = evaluate_sample(ckpt.model, sample, manifest, **kw)
    part = evaluate_sample(ckpt.model, sample, manifest, max_points=LIMIT, **kw)
    assert whole["evaluated_points"] == entry.num_surface + entry.num_volume > 2 * LIMIT
    assert part["evaluated_points"] == 2 * LIMIT
    assert part == evaluate_sample(ckpt.model, sample, manifest, max_points=LIMIT, **kw)  # the same points
    assert part["loss"] != whole["loss"]
    # drag and lift of a subsample: its points' area shares scaled up to the whole surface (noisy for a few points)
    most = evaluate_sample(ckpt.model, sample, manifest, max_points=entry.num_surface * 9 // 10, **kw)
    assert most["cd_true"] == pytest.approx(whole["cd_true"], rel=0.1) and most["cd_true"] != whole["cd_true"]
    assert np.isfinite(part["cd_true"])
    big = max(entry.num_surface, entry.num_volume)
    assert evaluate_sample(ckpt.model, sample, manifest, max_points=big, **kw) == whole  # within the limit: whole


def test_training_validates_the_subsample_and_the_best_whole(prepared, tmp_path):
    run = tmp_path / "run"
    ok("train", prepared.data, "-o", run, "-c", prepared.config, f"train.val_points={LIMIT}")
    entry = read_manifest(prepared.data).split("val")[0]
    with open(run / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("val_loss")]
    assert rows and all(float(row["val_evaluated_points"]) == 2 * LIMIT for row in rows)
    best = load_checkpoint(run / "checkpoints" / "best.safetensors")
    assert best.metrics["val_evaluated_points"] == entry.num_surface + entry.num_volume
    validated = next(row for row in rows if int(row["epoch"]) == best.epoch)
    assert best.metrics["val_loss"] != pytest.approx(float(validated["val_loss"]), rel=1e-9)  # replaced
    assert best.metrics["train_loss"] == pytest.approx(float(validated["train_loss"]))  # kept
    assert best.calibration is not None  # the trust checks' records still written after it
