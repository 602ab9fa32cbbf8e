"""Holes found by a corpus of bad inputs, each closed: bad config values, tampered checkpoints and
manifests, outputs that cannot be written (a file, a read-only or full file system, an input), and two
``mspt train`` in one run directory.

Every case ends the same way: exit 1, one line ``error: ...`` naming the file or key, no traceback,
no temporary or half-written file, and every input as it was. Inputs we tamper with are copies.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import pyvista as pv
import torch
from helpers import (
    EXAMPLES,
    box_surface,
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
)
from safetensors import safe_open
from safetensors.torch import save_file

from msptcli.checkpoint import load_checkpoint
from msptcli.io.meshes import read_mesh, write_mesh
from msptcli.train.state import LOCK

pytest_plugins = ["helpers"]

PAGE = 4096  # tmpfs counts whole pages


def copy_of(folder: Path, root: Path, name: str | None = None) -> Path:
    return Path(shutil.copytree(folder, root / (name or folder.name)))


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def run_digest(run: Path) -> dict[str, str]:
    """The digests of a run directory but a lock file, which a killed run leaves behind."""
    return {k: v for k, v in tree_digest(run).items() if k != LOCK}


# --- 1. config values that must be refused ------------------------------------------------------------

BAD_TRAIN_CONFIG = {
    "epochs-list": (["train.epochs=[1,2]"], "train.epochs"),
    "epochs-list-set": (["--set", "train.epochs=[1,2]"], "train.epochs"),
    "lr-nan": (["train.lr=.nan"], "train.lr"),
    "lr-inf": (["--set", "train.lr=.inf"], "train.lr"),
    "negative-field-weight": (["--set", "train.field_weights={p: -1}"], "train.field_weights.p"),
    "heads-not-dividing": (["model.num_heads=5"], "width 16 is not divisible by num_heads 5"),
    "patches-not-power-of-two": (["model.num_patches=3"], "num_patches must be a power of two"),
    "patch-size-and-patches": (["model.patch_size=8", "model.num_patches=4"], "patch_size or num_patches"),
    "renamed-pooling": (["model.pooling=linear"], "'softmax'"),
    "removed-carried": (["--set", "model.supernodes=carried"], ": model.supernodes: 'carried' was removed in mspt 0.1"),
}


@pytest.mark.parametrize("case", BAD_TRAIN_CONFIG)
def test_train_refuses_a_bad_config_value(prepared, tmp_path, case):
    overrides, needle = BAD_TRAIN_CONFIG[case]
    run = tmp_path / "run"
    one_line_error(invoke("train", prepared.data, *overrides, "-o", run, "-c", prepared.config), needle)
    assert not run.exists()


def test_prepare_refuses_a_bad_override(tmp_path):
    out = tmp_path / "data"
    result = invoke("prepare", EXAMPLES / "case_0000", "-o", out, "--set", "model.num_heads=3")
    one_line_error(result, "model", "not divisible by num_heads 3")
    assert not out.exists()


@pytest.mark.parametrize("command", ["train", "prepare"])
def test_a_config_file_that_is_not_utf8(prepared, tmp_path, command):
    config = tmp_path / "config.yaml"
    config.write_bytes(b"\xff\xfe\x00garbage")
    out = tmp_path / "out"
    first = prepared.data if command == "train" else EXAMPLES / "case_0000"
    one_line_error(invoke(command, first, "-o", out, "-c", config), str(config), "UTF-8")
    assert not out.exists()


def case_with_params(root: Path, params: dict) -> Path:
    """A case folder: meshes of case_0000 (linked) and ``params`` as params.json (NaN written as ``NaN``)."""
    folder = root / "case_nan"
    folder.mkdir(parents=True)
    for f in ("surface.vtu", "volume.vtu"):
        (folder / f).symlink_to(EXAMPLES / "case_0000" / f)
    (folder / "params.json").write_text(json.dumps(params))
    return folder


def test_prepare_refuses_a_nan_reference_area(tmp_path):
    case = case_with_params(tmp_path, {"frontal_area": float("nan")})
    assert "NaN" in (case / "params.json").read_text()
    out = tmp_path / "data"
    one_line_error(invoke("prepare", case, "-o", out), str(case / "params.json"), "frontal_area", "nan")
    assert not (out / "manifest.json").exists() and temp_files(out) == []
    assert not (out / "samples").exists() or list((out / "samples").iterdir()) == []


def test_predict_refuses_a_nan_reference_area_beside_the_geometry(trained, design_case, tmp_path):
    design = tmp_path / "design"
    design.mkdir()
    shutil.copy(design_case / "geometry.stl", design)
    (design / "params.json").write_text(json.dumps({"frontal_area": float("nan")}))
    out = tmp_path / "out"
    one_line_error(
        invoke("predict", trained.run, design / "geometry.stl", "-o", out), str(design / "params.json"), "nan"
    )
    assert files_in(out) == []


@pytest.mark.parametrize("option", ["--reference-area", "--reference-velocity", "--density"])
@pytest.mark.parametrize("value", ["0", "inf"])  # nan: refused by the option parser (exit 2)
def test_predict_refuses_a_reference_value_that_is_not_positive(trained, design_case, tmp_path, option, value):
    out = tmp_path / "out"
    result = invoke("predict", trained.run, design_case / "geometry.stl", option, value, "-o", out)
    one_line_error(result, option, "positive")
    assert not out.exists()


# --- 2. tampered checkpoints and manifests --------------------------------------------------------------


def rewrite_checkpoint(path: Path, edit: Callable[[dict[str, str]], None]) -> None:
    """Rewrite the safetensors checkpoint ``path`` with the same weights and ``edit`` applied to its metadata."""
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    edit(meta)
    save_file(state, str(path), metadata=meta)


def edit_json(key: str, change: Callable[[dict], None]) -> Callable[[dict[str, str]], None]:
    def edit(meta: dict[str, str]) -> None:
        value = json.loads(meta[key])
        change(value)
        meta[key] = json.dumps(value)

    return edit


TAMPERED = {
    "unchanged": (lambda meta: None, None),
    "channels-less-a-field": (
        edit_json("channels", lambda c: c["surface"].pop()),
        "the network predicts 8 channels but the fields have 5",
    ),
    "std-of-wrong-length": (
        edit_json("stats", lambda s: s["surface"]["wallShearStress"]["std"].pop()),
        "'wallShearStress' have 3 means and 2 deviations for 3 components",
    ),
    "coord-scale-zero": (edit_json("stats", lambda s: s.update(coord_scale=0.0)), "coordinate scale must be positive"),
}


@pytest.mark.parametrize("command", ["predict", "export"])
@pytest.mark.parametrize("tamper", TAMPERED)
def test_a_tampered_checkpoint_is_one_line(trained, design_case, tmp_path, tamper, command):
    run = copy_of(trained.run, tmp_path)
    path = run / "checkpoints" / "best.safetensors"
    edit, needle = TAMPERED[tamper]
    rewrite_checkpoint(path, edit)
    if needle is None:  # the control: rewriting alone breaks nothing, so the edits are what is refused
        assert load_checkpoint(path).channels.total == 8
        return
    out = tmp_path / "out"
    args = [design_case / "geometry.stl", "-o", out] if command == "predict" else ["-o", out / "m.onnx"]
    one_line_error(invoke(command, run, *args), str(path), "inconsistent checkpoint", needle)
    assert not out.exists()


def test_resume_with_another_network_is_refused_and_changes_nothing(trained, tmp_path):
    run = copy_of(trained.run, tmp_path)
    before = run_digest(run)
    result = invoke("train", trained.prepared.data, "-o", run, "--resume", "model.width=32")
    one_line_error(result, str(run), "cannot resume with another network", "model.width 16 there, 32 now")
    assert run_digest(run) == before  # not even config.yaml says 32 now
    assert temp_files(run) == []


def tampered_dataset(prepared, root: Path, change: Callable[[dict], None]) -> Path:
    """A copy of the prepared dataset whose manifest.json is changed by ``change`` (samples untouched)."""
    data = copy_of(prepared.data, root, "data")
    manifest = json.loads((data / "manifest.json").read_text())
    change(manifest)
    (data / "manifest.json").write_text(json.dumps(manifest))
    return data


def p_has_three_components(manifest: dict) -> None:
    """Say the surface field p has 3 components, with statistics to match (the manifest alone is consistent)."""
    manifest["fields"]["surface"]["p"] = 3
    stats = manifest["stats"]["surface"]["p"]
    stats.update(mean=stats["mean"] * 3, std=stats["std"] * 3)


def a_field_the_samples_lack(manifest: dict) -> None:
    manifest["fields"]["volume"]["nut"] = 1
    manifest["stats"]["volume"]["nut"] = {"mean": [0.0], "std": [1.0]}


MISMATCHED = {
    "components": (p_has_three_components, "surface field 'p' has 1 components, the manifest says 3"),
    "missing-field": (a_field_the_samples_lack, "no volume field 'nut'"),
}


@pytest.mark.parametrize("mismatch", MISMATCHED)
def test_train_refuses_a_manifest_that_does_not_match_its_samples(prepared, tmp_path, mismatch):
    change, needle = MISMATCHED[mismatch]
    data = tampered_dataset(prepared, tmp_path, change)
    run = tmp_path / "run"
    result = invoke("train", data, "-o", run, "-c", prepared.config)
    one_line_error(result, str(data / "samples"), needle)
    assert not run.exists()


# --- 3. outputs that cannot be written ------------------------------------------------------------------


def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "somefile"
    path.write_text("keep me\n")
    return path


def test_prepare_into_a_file(tmp_path):
    out = a_file(tmp_path)
    one_line_error(invoke("prepare", EXAMPLES / "case_0000", "-o", out), str(out), "not a directory")
    assert out.read_text() == "keep me\n"


def test_train_into_a_file(prepared, tmp_path):
    out = a_file(tmp_path)
    one_line_error(invoke("train", prepared.data, "-o", out, "-c", prepared.config), str(out), "not a directory")
    assert out.read_text() == "keep me\n"


def test_predict_into_a_file(trained, design_case, tmp_path):
    out = a_file(tmp_path)
    result = invoke("predict", trained.run, design_case / "geometry.stl", "-o", out)
    one_line_error(result, str(out), "not a directory")
    assert out.read_text() == "keep me\n"


def test_export_over_its_own_checkpoint(trained, tmp_path):
    run = copy_of(trained.run, tmp_path)
    checkpoint = run / "checkpoints" / "best.safetensors"
    before = run_digest(run)
    result = invoke("export", run, "-o", checkpoint)
    one_line_error(result, str(checkpoint), "refusing to overwrite the checkpoint")
    assert run_digest(run) == before and temp_files(run) == []


def test_train_into_the_dataset(prepared, tmp_path):
    data = copy_of(prepared.data, tmp_path, "data")
    before = tree_digest(data)
    one_line_error(invoke("train", data, "-o", data), str(data), "inside the dataset")
    one_line_error(invoke("train", data, "-o", data / "run"), "inside the dataset")
    assert tree_digest(data) == before  # config.yaml included


def design_folder(design_case: Path, root: Path) -> Path:
    """A folder with the design as geometry.vtp and geometry.stl, a small volume mesh as geometry_volume.vtu,
    and no params.json: outputs are named by the geometry's stem, so they can collide with these inputs."""
    folder = root / "design"
    folder.mkdir()
    body = pv.read(design_case / "geometry.stl")
    shutil.copy(design_case / "geometry.stl", folder)
    body.save(folder / "geometry.vtp")
    box = pv.ImageData(dimensions=(6, 6, 6), spacing=(0.5, 0.2, 0.1), origin=(-1, -0.5, 0.0))
    box.cast_to_unstructured_grid().save(folder / "geometry_volume.vtu")
    return folder


@pytest.mark.parametrize("collision", ["surface", "volume"])
def test_predict_refuses_to_overwrite_an_input(trained, design_case, tmp_path, collision):
    folder = design_folder(design_case, tmp_path)
    before = tree_digest(folder)
    if collision == "surface":  # geometry.vtp would be written over geometry.vtp
        args = [folder / "geometry.vtp"]
        needle = str(folder / "geometry.vtp")
    else:  # geometry.vtp is free, but geometry_volume.vtu is the volume mesh given
        args = [folder / "geometry.stl", "--volume", folder / "geometry_volume.vtu"]
        needle = str(folder / "geometry_volume.vtu")
    one_line_error(invoke("predict", trained.run, *args, "-o", folder), needle, "refusing to overwrite an input")
    assert tree_digest(folder) == before  # no other result file written first


# --- read-only and full file systems (tmpfs mounts; root only) ------------------------------------------


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Callable[..., Path]]:
    """``tmpfs(name, "size=64k", "ro")``: a fresh tmpfs mounted at ``tmp_path / name``, unmounted at teardown.
    Skips the test where mounting is not allowed (not root, or in a container without the capability)."""
    mounted: list[Path] = []

    def mount(name: str, *options: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        cmd = ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(folder)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip() or done.returncode}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=False)


def pages(size: int) -> int:
    """The room a file of ``size`` bytes takes on a tmpfs: whole pages."""
    return -(-size // PAGE) * PAGE


def full_disk(tmpfs: Callable[..., Path], free: int) -> Path:
    """A tmpfs with ``free`` bytes (rounded up to pages) of room; 0: a file fills its only page."""
    disk = tmpfs("disk", f"size={max(PAGE, pages(free))}")
    if free == 0:
        (disk / "filler").write_bytes(b"x" * PAGE)
    return disk


def prepare_args(prepared, out: Path) -> list[object]:
    return ["prepare", *prepared.cases, "-o", out, "-c", prepared.config]


def train_args(prepared, out: Path) -> list[object]:
    return ["train", prepared.data, "-o", out, "-c", prepared.config, "train.threads=1"]


def test_read_only_outputs(prepared, trained, design_case, tmpfs):
    """prepare, train, predict and export into a read-only file system."""
    disk = tmpfs("ro", "size=1m", "ro")
    for args in (
        prepare_args(prepared, disk / "data"),
        train_args(prepared, disk / "run"),
        ["predict", trained.run, design_case / "geometry.stl", "-o", disk / "out"],
        ["export", trained.run, "-o", disk / "m.onnx"],
    ):
        one_line_error(invoke(*args), "cannot write", str(disk), "Read-only file system")
    assert files_in(disk) == []


@pytest.mark.parametrize("on_error", ["fail", "skip"])
@pytest.mark.parametrize("free", [0, 16 * 1024], ids=["no-room", "room-for-config"])
def test_prepare_on_a_full_disk(prepared, tmpfs, free, on_error):
    """Room for nothing, or for the config but not a sample. A full disk is no bad case: never skipped."""
    disk = full_disk(tmpfs, free)
    out = disk / "data"
    failing = out / "config.yaml" if free == 0 else out / "samples" / "case_0000.safetensors"
    result = invoke(*prepare_args(prepared, out), "--on-error", on_error)
    line = one_line_error(result, f"cannot write {failing}: No space left on device")
    assert line.startswith("error: cannot write"), line  # not "no case could be prepared: ..."
    assert temp_files(disk) == [] and not (out / "manifest.json").exists()
    assert not (out / "samples").exists() or files_in(out / "samples") == []


def ends_in_one_error(result, *needles: str) -> str:
    """Exit code 1, no traceback, and one ``error: ...`` line with every needle, the last line of the output
    (a failure midway through training comes after the progress of the epochs before it)."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.output
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    return errors[0]


@pytest.mark.parametrize("where", ["no-room", "best.safetensors", "train_state.pt", "curves.png"])
def test_train_on_a_full_disk(prepared, trained, tmpfs, where):
    """Room for nothing, or for the files written before the first checkpoint, the first training state,
    the curves (of a one-epoch run: rewriting the files of epoch 2 takes more room than the curves)."""
    size = {p.name: pages(p.stat().st_size) for p in [*trained.run.iterdir(), *trained.run.glob("checkpoints/*")]}
    size[LOCK] = 1  # a page while the run holds it; removed when the run ends
    epoch_1 = [LOCK, "config.yaml", "best.safetensors", "metrics.csv", "last.safetensors", "train_state.pt"]
    before = [*epoch_1, "curves.png"]
    free = sum(size[p] for p in before[: before.index(where)]) + size[where] // 2 if where != "no-room" else 0
    disk = full_disk(tmpfs, free)
    out = disk / "run"
    epochs = ["--epochs", 1] if where == "curves.png" else []
    result = invoke(*train_args(prepared, out), *epochs)
    if where == "no-room":
        one_line_error(result, f"cannot write {out}", "No space left on device")
    else:
        ends_in_one_error(result, f"cannot write {out}", where, "No space left on device")
    assert temp_files(disk) == []
    for path in (out / "checkpoints").glob("*.safetensors"):  # what was written is whole
        assert load_checkpoint(path).channels.total == 8


@pytest.mark.parametrize("suffix", [".vtp", ".vtu", ".vtk"])
def test_write_mesh_writes_what_pyvista_writes(tmp_path, suffix):
    """write_mesh makes the file in memory and writes it itself (VTK's own writing aborts on a full disk):
    the bytes are those of ``mesh.save``."""
    mesh = box_surface()
    mesh.point_data["p"] = np.arange(mesh.n_points, dtype=np.float32)
    if suffix == ".vtu":
        mesh = mesh.cast_to_unstructured_grid()
    mesh.save(tmp_path / f"pyvista{suffix}")
    write_mesh(mesh, tmp_path / f"mspt{suffix}")
    assert (tmp_path / f"mspt{suffix}").read_bytes() == (tmp_path / f"pyvista{suffix}").read_bytes()


def predict_in_a_process(trained, design_case, out: Path) -> subprocess.CompletedProcess:
    """``mspt predict`` in a process of its own: a crash (SIGABRT in VTK) cannot take pytest with it."""
    args = ["predict", trained.run, design_case / "geometry.stl", "--volume-points", 2000, "-o", out]
    return subprocess.run([*mspt_command(), *map(str, args)], capture_output=True, text=True, timeout=300)


PREDICTED = {"surface": ".vtp", "volume": "_volume.vtu", "json": ".json", "png": ".png"}  # in the order written


@pytest.mark.slow
@pytest.mark.parametrize("where", ["no-room", *PREDICTED])
def test_predict_on_a_full_disk(trained, design_case, predicted_stl, tmpfs, where):
    """Room for nothing, or for the outputs written before the surface, volume, JSON or PNG and all but the
    last page of it: each is cut short, in a process of its own (VTK's writer aborted the process)."""
    size = {end: pages(next(predicted_stl.out.glob(f"*{end}")).stat().st_size) for end in PREDICTED.values()}
    ends = list(PREDICTED.values())
    failing = PREDICTED.get(where, ".vtp")
    free = sum(size[e] for e in ends[: ends.index(failing)]) + size[failing] - PAGE if where != "no-room" else 0
    disk = full_disk(tmpfs, free)
    out = disk / "out"
    done = predict_in_a_process(trained, design_case, out)
    assert done.returncode == 1, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert f"cannot write {out}/case_0003_geometry{failing}: No space left on device" in lines[0], lines[0]
    assert done.stdout.strip() == "" and temp_files(disk) == []
    for path in sorted(out.glob("*.vt*")):  # what was written is whole
        assert read_mesh(path).n_points > 0
    for path in out.glob("*.json"):
        json.loads(path.read_text())


# --- 4. two `mspt train` in one run directory ------------------------------------------------------------


def lock_names(run: Path, pid: int) -> bool:
    try:
        return (run / LOCK).read_text().strip() == str(pid)
    except OSError:
        return False


@pytest.mark.slow
def test_a_second_train_in_the_same_run_is_refused_and_a_killed_one_leaves_no_lock(prepared, tmp_path):
    run = tmp_path / "run"
    proc = spawn([*train_args(prepared, run), "--epochs", 50], tmp_path / "log")
    try:
        wait_until(lambda: lock_names(run, proc.pid), proc, what="the lock names the first process")
        pid = f"process {proc.pid}"
        one_line_error(invoke(*train_args(prepared, run), "--resume"), str(run), "another `mspt train`", pid)
        wait_until(lambda: (run / "train_state.pt").is_file(), proc, what="the first epoch ended")
        # Now the run holds a checkpoint too: still the running process is what the message names.
        one_line_error(invoke(*train_args(prepared, run)), str(run), "another `mspt train`", pid)
    finally:
        kill_group(proc, signal.SIGKILL)
    assert (run / LOCK).is_file()  # left behind by the kill, and no obstacle
    done = torch.load(run / "train_state.pt", weights_only=True)["epoch"]
    result = ok("train", prepared.data, "-o", run, "--resume", "--epochs", done + 1, "train.threads=1")
    assert f"trained {done + 1} epochs" in result.output
    assert finish(proc, timeout=1) == -signal.SIGKILL
