"""`mspt info` on a run, a checkpoint and a dataset, and what `mspt train` says when it starts and ends.

The shared tiny dataset and two-epoch run of helpers.py; every value shown is checked against the file it comes
from (the manifest, the checkpoint loaded in full, metrics.csv).
"""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch
from helpers import invoke, ok, one_line_error

from msptcli import __version__
from msptcli.checkpoint import load_checkpoint
from msptcli.data.manifest import read_manifest
from msptcli.device import describe_device, precision

pytest_plugins = ["helpers"]


def best_of_metrics(run) -> tuple[int, dict[str, str]]:
    """The epoch with the lowest val_loss in metrics.csv (the first of equal ones) and its row."""
    with (run / "metrics.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val_loss")]
    row = min(rows, key=lambda r: float(r["val_loss"]))
    return int(float(row["epoch"])), row


def parameters(run) -> int:
    return sum(p.numel() for p in load_checkpoint(run).model.parameters())


def info_json(*args) -> dict:
    result = ok("info", *args, "--json")
    return json.loads(result.stdout)  # one JSON document, nothing else on stdout


# --- mspt train: the start and the end ------------------------------------------------------------------


def test_train_says_its_device_precision_network_and_cases(trained):
    out = trained.result.output
    start = re.search(r"training on (cpu \(\d+ threads?\)), (float32|bf16 autocast); ([\d,]+) parameters", out)
    assert start, out
    assert start[2] == "float32"  # the tests train on the CPU, where bf16 is off
    assert int(start[3].replace(",", "")) == parameters(trained.run)
    manifest = read_manifest(trained.prepared.data)
    train, val, test = (len(manifest.split(s)) for s in ("train", "val", "test"))
    assert f"cases: {train} train, {val} val, {test} test (held out); 1,024 points per step" in out, out


def test_train_ends_with_the_best_epoch_and_its_validation(trained):
    epoch, row = best_of_metrics(trained.run)
    line = next((x for x in trained.result.output.splitlines() if x.startswith("best epoch ")), None)
    assert line is not None, trained.result.output
    assert line.startswith(f"best epoch {epoch}: val {float(row['val_loss']):.4g}"), line
    for key in [k for k in row if k.startswith("val_rel_l2/")]:
        assert f"{key.removeprefix('val_rel_l2/')} {float(row[key]):.3f}" in line, (key, line)
    assert f"|dCd| {float(row['val_cd_abs_error']):.4f}" in line, line


def test_precision_names_what_autocast_does():
    assert precision(torch.device("cuda"), True) == "bf16 autocast"
    assert precision(torch.device("cuda"), False) == "float32"
    assert precision(torch.device("cpu"), True) == "float32"  # bf16 is ignored on the CPU
    assert describe_device(torch.device("cpu")) == f"cpu ({torch.get_num_threads()} thread" + (
        "s)" if torch.get_num_threads() != 1 else ")"
    )


# --- mspt info -----------------------------------------------------------------------------------------


def test_info_of_a_run_matches_its_checkpoint_manifest_and_metrics(trained):
    run, data = trained.run, trained.prepared.data
    info = info_json(run)
    ckpt, manifest = load_checkpoint(run), read_manifest(data)
    epoch, row = best_of_metrics(run)
    best = info["best"]
    assert info["type"] == "run" and best["path"].endswith("best.safetensors")
    assert best["epoch"] == epoch == ckpt.epoch == info["best_epoch_in_metrics"]
    for key in ("val_loss", "val_cd_abs_error", *[k for k in row if k.startswith("val_rel_l2/")]):
        assert best["metrics"][key] == pytest.approx(float(row[key]), rel=1e-6), key
    assert best["network"]["parameters"] == parameters(run)
    assert best["network"]["backbone"] == ckpt.config.model.backbone
    assert best["network"]["settings"]["width"] == ckpt.config.model.width == 16
    assert best["fields"] == manifest.fields
    training = best["training"]
    assert training["dataset"] == str(data.resolve())
    assert training["cases"] == {s: len(manifest.split(s)) for s in ("train", "val", "test")}
    assert training["device"].startswith("cpu (") and training["precision"] == "float32"
    assert training["torch"] == torch.__version__ and best["mspt_version"] == __version__
    ref = best["reference"]
    assert (ref["velocity"], ref["density"]) == (ckpt.reference.velocity, ckpt.reference.density)
    assert ref["case_areas"] == ckpt.reference.training_reference_areas
    assert (best["calibration"] is None) == (ckpt.calibration is None)
    if ckpt.calibration is not None:
        assert best["calibration"]["fields"] == pytest.approx(ckpt.calibration.fields)
    assert best["parent"] is None and best["time_limit"] is None and info["time_limit"] is None
    assert info["last_epoch"] == 2 and info["epochs_in_metrics"] == 2
    assert info["steps_done"] == 2 * len(manifest.split("train"))  # batch size 1: a step per training case
    assert info["seconds_trained"] > 0


def test_info_table_of_a_run(trained):
    out = ok("info", trained.run).output
    epoch, row = best_of_metrics(trained.run)
    assert f"Run {trained.run}" in " ".join(out.split())  # the title may wrap
    cells = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split("│") if p.strip()]
        if len(parts) == 2:
            cells.setdefault(parts[0], parts[1])
    assert cells["best epoch"].startswith(f"{epoch} (best.safetensors"), cells
    assert cells["val loss"] == f"{float(row['val_loss']):.4g}"
    assert cells["|dCd|"] == f"{float(row['val_cd_abs_error']):.4g}"
    assert cells["parameters"].startswith(f"{parameters(trained.run):,} ")
    assert cells["device, precision"].startswith("cpu (") and cells["device, precision"].endswith("float32")
    assert cells["parent"] == "none (trained from scratch)"
    assert cells["trained on"].startswith(str(trained.prepared.data.resolve())[:20])


def test_info_of_a_checkpoint_file(trained):
    path = trained.run / "checkpoints" / "best.safetensors"
    ckpt = load_checkpoint(path)
    info = info_json(path)
    assert info["type"] == "checkpoint" and info["epoch"] == ckpt.epoch
    assert info["metrics"] == pytest.approx(ckpt.metrics)
    assert info["network"]["parameters"] == parameters(path)
    assert info["network"]["in_features"] == ckpt.model.in_features
    assert info["network"]["out_features"] == ckpt.channels.total
    out = ok("info", path).output
    assert "Checkpoint" in out and "val loss" in out and "float32" in out


def test_info_of_a_dataset_matches_its_manifest(prepared):
    info = info_json(prepared.data)
    manifest = read_manifest(prepared.data)
    assert info["type"] == "dataset" and info["kind"] == manifest.kind == "steady"
    assert info["cases"] == {s: [e.name for e in manifest.split(s)] for s in ("train", "val", "test")}
    assert info["cases"]["val"] == ["case_0002"]
    for part, names in manifest.fields.items():
        stats = getattr(manifest.stats, part)
        for name, k in names.items():
            field = info["fields"][part][name]
            assert field["components"] == k
            assert field["mean"] == pytest.approx(stats[name].mean) and field["std"] == pytest.approx(stats[name].std)
    ref, data = info["reference"], manifest.mspt_config.data
    assert (ref["velocity"], ref["density"], ref["area_key"]) == (data.velocity, data.density, "frontal_area")
    assert ref["case_areas"] == [e.reference_area for e in manifest.split("train")]
    assert info["config"] == manifest.config
    out = ok("info", prepared.data).output
    assert "case_0000, case_0001" in out and "frontal_area" in out and "surface p (1)" in out


def test_info_of_a_run_trained_before_runs_recorded_their_device(trained, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    old = tmp_path / "old.safetensors"
    with safe_open(str(trained.run / "checkpoints" / "best.safetensors"), framework="pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k != "training"}
        save_file({k: f.get_tensor(k) for k in f.keys()}, str(old), metadata=meta)  # noqa: SIM118
    assert load_checkpoint(old).epoch == load_checkpoint(trained.run).epoch  # still a checkpoint that loads
    assert info_json(old)["training"] is None
    out = ok("info", old).output
    assert re.search(r"device, precision\s*│\s*not recorded", out), out
    assert re.search(r"trained on\s*│\s*not recorded", out), out


def test_info_refuses_what_is_none_of_the_three_in_one_line(prepared, tmp_path):
    one_line_error(invoke("info", tmp_path / "nothing"), "does not exist", "run directory", "manifest.json")
    one_line_error(invoke("info", prepared.config), "is not a run directory", "checkpoint", "dataset")
    one_line_error(invoke("info", tmp_path), "is not a run directory")
    sample = next((prepared.data / "samples").glob("*.safetensors"))
    one_line_error(invoke("info", sample), "not an mspt checkpoint")
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    one_line_error(invoke("info", tmp_path / "broken.safetensors"), "not a safetensors checkpoint")


def test_a_fine_tuned_run_says_its_parent_and_its_trainable_parameters(trained, tmp_path):
    run = tmp_path / "fine-tuned"
    args = ("--init", trained.run, "--freeze", "attention", "--epochs", 1, "train.threads=1")
    result = ok("train", trained.prepared.data, "-o", run, *args)
    parent = load_checkpoint(run).parent
    assert parent is not None and parent.frozen_parameters > 0
    total = parent.frozen_parameters + parent.trainable_parameters
    assert f"; {total:,} parameters ({parent.trainable_parameters:,} trainable)" in result.output, result.output
    info = info_json(run)
    assert info["best"]["parent"] == parent.to_json()
    assert info["best"]["network"]["parameters"] == total == parameters(run)
    assert re.search(r"parent\s*│\s*fine-tuned from ", ok("info", run).output)  # the row of the table
