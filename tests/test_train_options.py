"""Training options: torch.compile, and whole-mesh metrics that do not depend on point subsampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import ROOT, tiny_config_file
from safetensors.numpy import load_file
from typer.testing import CliRunner

from msptcli.checkpoint import force_reference, load_checkpoint
from msptcli.cli import app
from msptcli.config import load_config
from msptcli.data.manifest import read_manifest
from msptcli.data.sample import load_sample
from msptcli.evaluate import evaluate_sample

runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    work = tmp_path_factory.mktemp("options")
    config = tiny_config_file(work / "config.yaml")
    cases = [str(ROOT / "examples" / "ahmed" / f"case_000{i}") for i in range(3)]
    assert runner.invoke(app, ["prepare", *cases, "-o", str(work / "data"), "-c", str(config)]).exit_code == 0
    return work / "data", config


def train(data, out, *overrides):
    data_dir, config = data
    args = ["train", str(data_dir), "-o", str(out), "-c", str(config), "--epochs", "1", *overrides]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return {k: v for k, v in load_file(out / "checkpoints" / "last.safetensors").items() if not k.startswith("extra")}


@pytest.mark.slow
def test_compiled_training_follows_eager_training(data, tmp_path):
    eager = train(data, tmp_path / "eager")
    compiled = train(data, tmp_path / "compiled", "train.compile=true")
    assert max(float(np.abs(eager[k] - compiled[k]).max()) for k in eager) < 1e-4


def test_validation_metrics_use_whole_meshes_whatever_the_subsampling(data, tmp_path):
    data_dir, config = data
    train(data, tmp_path / "run")
    ckpt = load_checkpoint(tmp_path / "run")
    manifest = read_manifest(data_dir)
    sample = load_sample(data_dir / manifest.split("val")[0].file)
    metrics = []
    for points in ("512", "null"):  # training subsets of 512 points, or none
        cfg = load_config(config, [f"train.surface_points={points}", f"train.volume_points={points}"])
        reference = force_reference(cfg, manifest.split("train"))
        metrics.append(evaluate_sample(ckpt.model, sample, manifest, reference=reference, device=torch.device("cpu")))
    assert metrics[0] == metrics[1]
    # and they are whole-mesh metrics: the stored tree order covers every point of the case
    assert len(sample.arrays["order"]) == sample.num_surface + sample.num_volume


def test_loader_workers_default_to_one_where_two_cores_and_enough_steps():
    import os

    from msptcli.train.dataset import WORKER_MIN_STEPS, loader_workers

    assert loader_workers(3, 1) == 3 and loader_workers(0, 100) == 0  # asked for: as asked
    assert loader_workers(None, WORKER_MIN_STEPS - 1) == 0  # a fork every epoch would not pay back
    assert loader_workers(None, WORKER_MIN_STEPS) == (1 if len(os.sched_getaffinity(0)) >= 2 else 0)
