"""Real multi-process training: torchrun with gloo on the CPU, against one process with the same global batch."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT, ranks_said, tiny_config_file, torchrun
from safetensors.numpy import load_file
from typer.testing import CliRunner

from msptcli.cli import app

pytestmark = pytest.mark.slow
runner = CliRunner()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("ddp")
    config = tiny_config_file(work / "config.yaml")
    cases = [str(ROOT / "examples" / "ahmed" / f"case_000{i}") for i in range(5)]
    result = runner.invoke(app, ["prepare", *cases, "-o", str(work / "data"), "-c", str(config)])
    assert result.exit_code == 0, result.output
    return work / "data", config


def torchrun_train(*args: object, nproc: int = 2) -> subprocess.CompletedProcess:
    return torchrun("-m", "msptcli", "train", *args, nproc=nproc)


def weights(run: Path) -> dict[str, np.ndarray]:
    return {k: v for k, v in load_file(run / "checkpoints" / "last.safetensors").items() if not k.startswith("extra")}


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray], atol: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k] - b[k]).max()) for k in a)
    assert worst <= atol, worst


@pytest.mark.parametrize("backbone", [[], ["model.backbone=transolver", "model.transolver.slices=8"]], ids=str)
def test_two_processes_match_one_with_the_same_global_batch(data, tmp_path, backbone):
    """Also for another backbone (Transolver: per-cloud slices, no batch statistics, so the same arithmetic)."""
    data_dir, config = data
    ddp = torchrun_train(str(data_dir), "-o", str(tmp_path / "ddp"), "-c", str(config), "train.batch_size=1", *backbone)
    assert ddp.returncode == 0, ranks_said(ddp)
    assert ddp.stdout.count("trained 2 epochs") == 1  # rank 0 alone reports
    single = runner.invoke(
        app, ["train", str(data_dir), "-o", str(tmp_path / "one"), "-c", str(config), "train.batch_size=2", *backbone]
    )
    assert single.exit_code == 0, single.output
    assert_same(weights(tmp_path / "ddp"), weights(tmp_path / "one"))
    rows_ddp = (tmp_path / "ddp" / "metrics.csv").read_text().splitlines()
    rows_one = (tmp_path / "one" / "metrics.csv").read_text().splitlines()
    assert len(rows_ddp) == len(rows_one) == 3
    for a, b in zip(rows_ddp[1:], rows_one[1:], strict=True):  # loss and validation metrics, reduced over ranks
        head = rows_ddp[0].split(",")
        for name, x, y in zip(head, a.split(","), b.split(","), strict=True):
            if name != "seconds":
                assert np.isclose(float(x), float(y), rtol=1e-5, atol=1e-7), name


def test_resume_under_torchrun(data, tmp_path):
    """Stop after epoch 1 (all of it warm-up, so the learning rates do not depend on the epoch count),
    resume to 2 epochs under torchrun: the same weights as 2 epochs in one go."""
    data_dir, config = data
    first = torchrun_train(
        str(data_dir), "-o", str(tmp_path / "run"), "-c", str(config), "train.batch_size=1", "--epochs", "1"
    )
    assert first.returncode == 0, ranks_said(first)
    resumed = torchrun_train(data_dir, "-o", tmp_path / "run", "--resume", "train.batch_size=1", "--epochs", "2")
    assert resumed.returncode == 0, ranks_said(resumed)
    whole = torchrun_train(str(data_dir), "-o", str(tmp_path / "whole"), "-c", str(config), "train.batch_size=1")
    assert whole.returncode == 0, ranks_said(whole)
    assert_same(weights(tmp_path / "run"), weights(tmp_path / "whole"))
    assert len((tmp_path / "run" / "metrics.csv").read_text().splitlines()) == 3


RANK_SCRIPT = """
import sys, torch
from safetensors.torch import save_file
from msptcli.config import load_config
from msptcli.train.loop import train_model

data, run, config, out = sys.argv[1:5]
summary = train_model(data, run, config=load_config(config, ["train.batch_size=1"]))
rank = int(__import__("os").environ["RANK"])
save_file({k: v.contiguous() for k, v in summary.model.state_dict().items()}, f"{out}/rank{rank}.safetensors")
"""


def test_both_ranks_end_with_identical_weights(data, tmp_path):
    data_dir, config = data
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    done = torchrun(script, data_dir, tmp_path / "run", config, tmp_path)
    assert done.returncode == 0, ranks_said(done)
    rank0, rank1 = (load_file(tmp_path / f"rank{r}.safetensors") for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    assert all(np.array_equal(rank0[k], rank1[k]) for k in rank0)  # DDP keeps the replicas bit-identical
    assert_same(rank0, weights(tmp_path / "run"), atol=0.0)  # and rank 0 wrote them
