"""The pipeline commands on bad inputs, killed midway, interrupted, and fed pickles.

Bad input: exit 1, one line ``error: ...`` naming the problem, no traceback, nothing half-written.
Killed (SIGKILL) or interrupted (Ctrl-C): finished work is kept and reused, resuming ends where an
uninterrupted run ends, and no checkpoint is ever unpickled.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import pickle
import shutil
import signal
import subprocess
from pathlib import Path

import meshio
import numpy as np
import pytest
import pyvista as pv
import torch
from helpers import (
    CASES,
    EXAMPLES,
    digest,
    finish,
    invoke,
    kill_group,
    mspt_command,
    ok,
    one_line_error,
    spawn,
    temp_files,
    tree_digest,
    wait_until,
    write_config,
)
from safetensors.numpy import load_file

from msptcli.checkpoint import load_checkpoint
from msptcli.config import load_config
from msptcli.data.manifest import read_manifest
from msptcli.data.sample import load_sample
from msptcli.train.loop import train_model

pytest_plugins = ["helpers"]


# --- bad case folders: a real case with its surface.vtu replaced --------------------------------------


def bad_case(root: Path, name: str, write_surface) -> Path:
    """A case folder: the volume and params of case_0000 (linked) and a surface written by ``write_surface``."""
    folder = root / name
    folder.mkdir(parents=True)
    for f in ("volume.vtu", "params.json"):
        (folder / f).symlink_to(EXAMPLES / "case_0000" / f)
    write_surface(folder / "surface.vtu")
    return folder


def truncated(path: Path) -> None:
    data = (EXAMPLES / "case_0000" / "surface.vtu").read_bytes()
    path.write_bytes(data[: len(data) // 2])


def nan_in_p(path: Path) -> None:
    mesh = meshio.read(EXAMPLES / "case_0000" / "surface.vtu")
    mesh.point_data["p"] = mesh.point_data["p"].copy()
    mesh.point_data["p"][17] = np.nan
    mesh.write(path)


def no_points(path: Path) -> None:
    pv.UnstructuredGrid().save(path)


def not_a_mesh(path: Path) -> None:
    path.write_text("x,y,z,p\n0,0,0,1\n")


BAD_SURFACES = {
    "truncated": (truncated, "surface.vtu"),
    "nan": (nan_in_p, "field 'p' has 1 points with NaN"),
    "no-points": (no_points, "surface.vtu"),
    "text-as-vtu": (not_a_mesh, "surface.vtu"),
}


def assert_no_dataset(out: Path) -> None:
    """What a failed prepare may leave: nothing, or its config and an empty samples folder; never a manifest."""
    assert not (out / "manifest.json").exists()
    assert temp_files(out) == []
    assert not (out / "samples").exists() or list((out / "samples").iterdir()) == []


@pytest.mark.parametrize("kind", BAD_SURFACES)
def test_prepare_bad_surface(tmp_path, kind):
    write, needle = BAD_SURFACES[kind]
    case = bad_case(tmp_path, "case_bad", write)
    out = tmp_path / "data"
    result = invoke("prepare", case, "-o", out)
    one_line_error(result, str(case / "surface.vtu"), needle)
    assert_no_dataset(out)


def test_prepare_non_mesh_file(tmp_path):
    notes = tmp_path / "results.txt"
    notes.write_text("Cd = 0.3\n")
    out = tmp_path / "data"
    one_line_error(invoke("prepare", notes, "-o", out), "results.txt", "unsupported mesh format '.txt'")
    assert_no_dataset(out)


def test_prepare_missing_field(tmp_path):
    out = tmp_path / "data"
    result = invoke("prepare", EXAMPLES / "case_0000", "-o", out, "--surface-fields", "nosuch")
    one_line_error(result, "no field 'nosuch'", "p, wallShearStress")  # says which fields there are
    assert_no_dataset(out)


def test_prepare_config_with_unknown_key(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("train: {epoch: 3}\n")
    out = tmp_path / "data"
    one_line_error(invoke("prepare", EXAMPLES / "case_0000", "-o", out, "-c", config), "unknown key 'train.epoch'")
    assert not out.exists()


def test_prepare_error_is_exactly_one_line(tmp_path):
    case = bad_case(tmp_path, "case_bad", nan_in_p)
    result = invoke("prepare", case, "-o", tmp_path / "data")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and result.output.startswith("error: "), repr(result.output)


# --- train, predict, export on bad inputs --------------------------------------------------------------


def test_train_config_and_override_with_unknown_key(prepared, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("train: {epoch: 3}\n")
    run = tmp_path / "run"
    one_line_error(invoke("train", prepared.data, "-o", run, "-c", config), "unknown key 'train.epoch'")
    one_line_error(invoke("train", prepared.data, "train.epoch=3", "-o", run), "unknown key 'train.epoch'")
    one_line_error(invoke("train", prepared.data, "train.lr=-1", "-o", run), "train.lr")
    assert not run.exists()


def dataset_without_manifest(root: Path, prepared) -> Path:
    """An interrupted prepare: finished samples, no manifest."""
    data = root / "data"
    shutil.copytree(prepared.data / "samples", data / "samples")
    return data


def run_that_exists(root: Path, trained) -> Path:
    run = root / "run"
    shutil.copytree(trained.run, run)
    return run


def test_train_refuses_a_dataset_without_manifest(prepared, tmp_path):
    for data in (tmp_path / "empty", dataset_without_manifest(tmp_path, prepared)):
        data.mkdir(exist_ok=True)
        result = invoke("train", data, "-o", tmp_path / "run", "-c", prepared.config)
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert f"error: {data}: no manifest.json" in result.output
        assert not (tmp_path / "run").exists()


def test_train_refuses_to_overwrite_a_run(trained, tmp_path):
    run = run_that_exists(tmp_path, trained)
    before = tree_digest(run)
    result = invoke("train", trained.prepared.data, "-o", run, "-c", trained.prepared.config)
    assert result.exit_code == 1 and "already holds a run" in result.output and "Traceback" not in result.output
    assert tree_digest(run) == before


@pytest.mark.parametrize("problem", ["no-manifest", "existing-run"])
def test_train_error_is_one_line(prepared, trained, tmp_path, problem):
    if problem == "no-manifest":
        data, run = dataset_without_manifest(tmp_path, prepared), tmp_path / "run"
    else:
        data, run = prepared.data, run_that_exists(tmp_path, trained)
    one_line_error(invoke("train", data, "-o", run, "-c", prepared.config))


@pytest.mark.parametrize("command", ["predict", "export"])
def test_run_directory_without_checkpoint(tmp_path, command):
    run = tmp_path / "run"
    run.mkdir()
    out = tmp_path / "out"
    args = [EXAMPLES / "case_0000" / "geometry.stl", "-o", out] if command == "predict" else ["-o", out / "m.onnx"]
    one_line_error(invoke(command, run, *args), str(run), "no checkpoint")
    assert not out.exists()


@pytest.mark.parametrize("kind", [k for k in BAD_SURFACES if k != "nan"])  # NaN: test_predict_never_writes_nan_json
def test_predict_bad_geometry(trained, tmp_path, kind):
    write, _ = BAD_SURFACES[kind]
    geometry = tmp_path / "design" / "surface.vtu"
    geometry.parent.mkdir()
    write(geometry)
    out = tmp_path / "out"
    one_line_error(invoke("predict", trained.run, geometry, "-o", out), str(geometry))
    assert not out.exists() or list(out.iterdir()) == []


def test_predict_non_mesh_file(trained, tmp_path):
    notes = tmp_path / "design.txt"
    notes.write_text("a car\n")
    out = tmp_path / "out"
    one_line_error(invoke("predict", trained.run, notes, "-o", out), "unsupported mesh format '.txt'")
    assert not out.exists()


def test_predict_never_writes_nan_json(trained, tmp_path):
    geometry = tmp_path / "design" / "surface.vtu"
    geometry.parent.mkdir()
    nan_in_p(geometry)
    out = tmp_path / "out"
    result = invoke("predict", trained.run, geometry, "--volume-points", 0, "-o", out)
    if result.exit_code != 0:  # refusing the input is fine too, as one line
        one_line_error(result, "'p'")
        return

    def refuse(token: str) -> None:
        raise ValueError(f"{token} in JSON output")

    json.loads((out / "surface.json").read_text(), parse_constant=refuse)


# --- --on-error -----------------------------------------------------------------------------------------


def dataset_with_a_bad_case(prepared, root: Path) -> tuple[Path, list[Path]]:
    """The prepared samples copied (so they are reused) and the three good cases plus case_bad (NaN in p)."""
    out = root / "data"
    shutil.copytree(prepared.data / "samples", out / "samples")
    return out, [*prepared.cases, bad_case(root, "case_bad", nan_in_p)]


def test_on_error_skip_reports_and_lists_the_bad_case(prepared, tmp_path):
    out, cases = dataset_with_a_bad_case(prepared, tmp_path)
    result = ok("prepare", *cases, "-o", out, "-c", prepared.config, "--on-error", "skip")
    assert "0 written, 3 reused, 1 failed" in result.output
    assert "skipped case_bad" in result.output and "NaN" in result.output
    manifest = read_manifest(out)
    assert [s.name for s in manifest.samples] == list(CASES)
    assert [s["case"] for s in manifest.skipped] == ["case_bad"]
    assert "field 'p'" in manifest.skipped[0]["error"]
    assert sorted(p.name for p in (out / "samples").iterdir()) == [f"{c}.safetensors" for c in CASES]
    assert temp_files(out) == []


def test_on_error_fail_stops_without_manifest(prepared, tmp_path):
    out, cases = dataset_with_a_bad_case(prepared, tmp_path)
    samples = tree_digest(out / "samples")
    one_line_error(invoke("prepare", *cases, "-o", out, "-c", prepared.config), "case_bad", "NaN")
    assert not (out / "manifest.json").exists() and temp_files(out) == []
    assert tree_digest(out / "samples") == samples


# --- checkpoints are never unpickled ----------------------------------------------------------------------


class OpenOnUnpickle:
    """Unpickling this calls open(marker, 'w'): the marker file appears if anything unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled(path: Path, marker: Path, *, torch_zip: bool) -> Path:
    """A payload at ``path``: a raw pickle, or torch.save's zip; check it does create a marker when unpickled."""
    payload = {"model": OpenOnUnpickle(marker), "epoch": 1}
    control = path.with_name(f"control-{path.name}")
    control_marker = Path(f"{marker}.control")
    if torch_zip:
        torch.save(payload, path)
        torch.save({"model": OpenOnUnpickle(control_marker)}, control)
        opened = torch.load(control, weights_only=False)["model"]  # what an unsafe loader would do
    else:
        path.write_bytes(pickle.dumps(payload))
        opened = pickle.loads(pickle.dumps(OpenOnUnpickle(control_marker)))
    opened.close()
    assert control_marker.exists()  # the payload works: the tests below can fail
    control_marker.unlink()
    return path


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch.load's note on a raw pickle
@pytest.mark.parametrize("torch_zip", [False, True], ids=["pickle", "torch-save"])
def test_resume_refuses_a_pickled_train_state(trained, tmp_path, torch_zip):
    run = run_that_exists(tmp_path, trained)
    marker = tmp_path / "MARKER"
    pickled(run / "train_state.pt", marker, torch_zip=torch_zip)
    kept = {p: digest(run / p) for p in ("checkpoints/last.safetensors", "checkpoints/best.safetensors", "metrics.csv")}
    result = invoke("train", trained.prepared.data, "-o", run, "--resume", "--epochs", 3)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "train_state.pt: refusing to load training state" in result.output
    assert not marker.exists()
    assert {p: digest(run / p) for p in kept} == kept and temp_files(run) == []


@pytest.mark.parametrize("torch_zip", [False, True], ids=["pickle", "torch-save"])
def test_resume_refusal_is_one_line(trained, tmp_path, torch_zip):
    run = run_that_exists(tmp_path, trained)
    pickled(run / "train_state.pt", tmp_path / "MARKER", torch_zip=torch_zip)
    args = ["train", trained.prepared.data, "-o", run, "--resume"]  # a real process: its warnings reach stderr
    done = subprocess.run([*mspt_command(), *map(str, args)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "refusing to load training state" in lines[0], done.stderr


@pytest.mark.parametrize("command", ["predict", "export"])
@pytest.mark.parametrize("where", ["best.safetensors", "model.pt"])
def test_checkpoint_payload_is_never_unpickled(trained, tmp_path, command, where):
    marker = tmp_path / "MARKER"
    if where == "best.safetensors":  # in a run directory, where predict looks first
        target = run_that_exists(tmp_path, trained)
        path = pickled(target / "checkpoints" / "best.safetensors", marker, torch_zip=False)
    else:  # a checkpoint file given by path
        target = path = pickled(tmp_path / "model.pt", marker, torch_zip=True)
    out = tmp_path / "out"
    args = [EXAMPLES / "case_0000" / "geometry.stl", "-o", out] if command == "predict" else ["-o", out / "m.onnx"]
    one_line_error(invoke(command, target, *args), str(path), "not a safetensors checkpoint")
    assert not marker.exists() and not out.exists()


# --- killed for real: prepare ------------------------------------------------------------------------------


ALL_CASES = [EXAMPLES / f"case_000{i}" for i in range(6)]


def finished_samples(data: Path) -> list[Path]:
    return sorted(p for p in (data / "samples").glob("*.safetensors") if not p.name.startswith("."))


@pytest.mark.slow
def test_prepare_killed_midway_keeps_finished_samples_and_resumes(tmp_path):
    config = write_config(tmp_path / "config.yaml")
    data = tmp_path / "data"
    proc = spawn(["prepare", *ALL_CASES, "-o", data, "-c", config, "--workers", 1], tmp_path / "log1")
    wait_until(lambda: bool(finished_samples(data)), proc, what="the first sample was written")
    kill_group(proc, signal.SIGKILL)

    assert not (data / "manifest.json").exists()
    assert temp_files(data) == []
    kept = finished_samples(data)
    assert 1 <= len(kept) < len(ALL_CASES)
    for path in kept:  # whole samples, of the cases prepared first
        sample = load_sample(path)
        assert sample.arrays["volume/points"].shape == (1500, 3) and "order" in sample.arrays
    digests = {p.name: digest(p) for p in kept}

    result = ok("prepare", *ALL_CASES, "-o", data, "-c", config, "--workers", 1)
    assert f"{len(ALL_CASES) - len(kept)} written, {len(kept)} reused, 0 failed" in result.output
    assert {p.name: digest(p) for p in kept} == digests  # reused, not rewritten
    manifest = read_manifest(data)
    assert [s.name for s in manifest.samples] == [c.name for c in ALL_CASES]
    assert all(load_sample(data / s.file).num_surface == s.num_surface for s in manifest.samples)
    assert temp_files(data) == []


def test_prepare_clears_temporary_files_of_a_killed_run(prepared, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared.data / "samples", data / "samples")
    leftover = data / "samples" / ".case_0001.k3j9x2ab.tmp.safetensors"  # as atomic_output names it
    leftover.write_bytes((data / "samples" / "case_0001.safetensors").read_bytes()[:4096])
    ok("prepare", *prepared.cases, "-o", data, "-c", prepared.config)
    assert temp_files(data) == []


# --- killed for real and interrupted: train ---------------------------------------------------------------

KILL_EPOCHS = 30
KILL_ARGS = ["--epochs", KILL_EPOCHS, "train.threads=1"]


def metrics_rows(run: Path) -> list[dict[str, str]]:
    path = run / "metrics.csv"
    return list(csv.DictReader(path.read_text().splitlines())) if path.is_file() else []


def assert_same_weights(a: Path, b: Path, *, atol: float = 1e-6) -> float:
    wa, wb = load_file(a), load_file(b)
    assert wa.keys() == wb.keys()
    worst = max(float(np.abs(wa[k] - wb[k]).max()) for k in wa)
    assert worst <= atol, f"weights differ by up to {worst:.3g}"
    return worst


def assert_same_metrics(rows: list[dict], reference: list[dict]) -> None:
    """Every column but the wall-clock seconds, to float precision."""
    assert [r["epoch"] for r in rows] == [r["epoch"] for r in reference]
    for got, want in zip(rows, reference, strict=True):
        for key in want.keys() - {"seconds"}:
            assert math.isclose(float(got[key]), float(want[key]), rel_tol=1e-9, abs_tol=1e-12), (got["epoch"], key)


@pytest.fixture(scope="module")
def uninterrupted(prepared, tmp_path_factory) -> Path:
    """The run the interrupted ones must end at: same data, config and seed, in a process of its own."""
    work = tmp_path_factory.mktemp("uninterrupted")
    run = work / "run"
    proc = spawn(["train", prepared.data, "-o", run, "-c", prepared.config, *KILL_ARGS], work / "log")
    assert finish(proc, timeout=300) == 0, (work / "log" / "stderr.txt").read_text()
    return run


@pytest.mark.slow
def test_train_killed_midway_resumes_to_the_same_weights(prepared, uninterrupted, tmp_path):
    run = tmp_path / "run"
    proc = spawn(["train", prepared.data, "-o", run, "-c", prepared.config, *KILL_ARGS], tmp_path / "log1")
    wait_until(lambda: (run / "train_state.pt").is_file() and metrics_rows(run), proc, what="the first epoch ended")
    assert kill_group(proc, signal.SIGKILL) == -signal.SIGKILL
    state = torch.load(run / "train_state.pt", weights_only=True)
    assert 1 <= state["epoch"] < KILL_EPOCHS and state["step_in_epoch"] == 0
    assert len(metrics_rows(run)) >= state["epoch"]  # the row of an epoch is written before its state

    resumed = ok("train", prepared.data, "-o", run, "--resume")  # the run's own config.yaml
    assert f"trained {KILL_EPOCHS} epochs" in resumed.output
    rows = metrics_rows(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, KILL_EPOCHS + 1))  # one row per epoch
    assert_same_metrics(rows, metrics_rows(uninterrupted))
    assert_same_weights(run / "checkpoints" / "last.safetensors", uninterrupted / "checkpoints" / "last.safetensors")
    assert load_checkpoint(run / "checkpoints" / "last.safetensors").epoch == KILL_EPOCHS


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(prepared, uninterrupted, tmp_path, workers):
    run = tmp_path / "run"
    args = ["train", prepared.data, "-o", run, "-c", prepared.config, *KILL_ARGS, f"train.num_workers={workers}"]
    proc = spawn(args, tmp_path / "log")
    wait_until(lambda: (run / "train_state.pt").is_file() and metrics_rows(run), proc, what="the first epoch ended")
    assert kill_group(proc, signal.SIGINT) == 130  # to the whole group, as a terminal's Ctrl-C
    stderr = (tmp_path / "log" / "stderr.txt").read_text()
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert "--resume" in stderr and f"-o {run}" in " ".join(stderr.split())  # the command to continue
    last = load_checkpoint(run / "checkpoints" / "last.safetensors")
    state = torch.load(run / "train_state.pt", weights_only=True)
    assert last.epoch == state["epoch"] < KILL_EPOCHS
    assert temp_files(run) == []

    ok("train", prepared.data, "-o", run, "--resume")
    assert [int(r["epoch"]) for r in metrics_rows(run)] == list(range(1, KILL_EPOCHS + 1))
    assert_same_weights(run / "checkpoints" / "last.safetensors", uninterrupted / "checkpoints" / "last.safetensors")


# --- resume from the states a kill or Ctrl-C leaves, made exactly (library calls, no timing) --------------


def train_stopping(prepared, run: Path, epochs: int, stop_at_call: int | None):
    """train_model that, like Ctrl-C, stops when should_stop is asked for the ``stop_at_call``-th time."""
    config = load_config(prepared.config, [f"train.epochs={epochs}"])
    calls = itertools.count()
    stop = (lambda: next(calls) == stop_at_call) if stop_at_call is not None else (lambda: False)
    return train_model(prepared.data, run, config=config, should_stop=stop), config


@pytest.fixture(scope="module")
def four_epochs(prepared, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("four_epochs") / "run"
    train_stopping(prepared, run, 4, None)
    return run


def test_resume_mid_epoch_gives_the_same_weights(prepared, four_epochs, tmp_path):
    run = tmp_path / "run"
    summary, config = train_stopping(prepared, run, 4, stop_at_call=3)  # 2 steps per epoch: epoch 2, step 2
    assert summary.interrupted
    assert torch.load(run / "train_state.pt", weights_only=True)["step_in_epoch"] == 1
    train_model(prepared.data, run, config=config, resume=True)
    assert [int(r["epoch"]) for r in metrics_rows(run)] == [1, 2, 3, 4]
    assert_same_weights(run / "checkpoints" / "last.safetensors", four_epochs / "checkpoints" / "last.safetensors")


def test_resume_mid_epoch_gives_the_same_metrics(prepared, four_epochs, tmp_path):
    run = tmp_path / "run"
    _, config = train_stopping(prepared, run, 4, stop_at_call=3)
    train_model(prepared.data, run, config=config, resume=True)
    assert_same_metrics(metrics_rows(run), metrics_rows(four_epochs))


def test_resume_after_a_kill_between_metrics_and_state_keeps_every_row_once(prepared, four_epochs, tmp_path):
    """The row of an epoch is written before its state: a kill between them leaves row k with the state of
    epoch k - 1, and --resume redoes epoch k, replacing its row instead of duplicating it."""
    run = tmp_path / "run"
    _, config = train_stopping(prepared, run, 4, stop_at_call=4)  # the state saved at the end of epoch 2
    assert torch.load(run / "train_state.pt", weights_only=True)["epoch"] == 2
    rows = metrics_rows(run)
    with (run / "metrics.csv").open("w", newline="") as f:  # as the kill left it: row 3 appended, no state 3
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([*rows, {**rows[-1], "epoch": "3", "train_loss": "123.0"}])
    train_model(prepared.data, run, config=config, resume=True)
    rows = metrics_rows(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[2]["train_loss"]) != 123.0
    assert_same_metrics(rows, metrics_rows(four_epochs))
