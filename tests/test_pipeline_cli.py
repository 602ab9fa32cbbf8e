"""prepare -> train -> predict -> export end to end through the CLI, on real OpenFOAM meshes.

One tiny dataset and one two-epoch run are shared by every test (see helpers.py); every
written file is read back: VTK with pyvista and meshio (VTK's own reader for .vtp, which meshio
cannot read), JSON, CSV, PNG, safetensors, ONNX and TorchScript.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import meshio
import numpy as np
import pytest
import pyvista as pv
import torch
from helpers import (
    CASES,
    MAX_VOLUME_POINTS,
    distinct_colours,
    invoke,
    is_png,
    ok,
    one_line_error,
    temp_files,
    tree_digest,
)

from msptcli.checkpoint import load_checkpoint
from msptcli.data.manifest import read_manifest
from msptcli.data.sample import load_sample
from msptcli.geometry.distance import distance_to_surface

pytest_plugins = ["helpers"]

SURFACE_FIELDS = {"p": 1, "wallShearStress": 3}
VOLUME_FIELDS = {"U": 3, "p": 1}


def read_vtp(path):
    """A .vtp read by VTK's XML reader directly (meshio 5 has no VTP reader), as pyvista data."""
    import vtk

    reader = vtk.vtkXMLPolyDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    assert reader.GetErrorCode() == 0
    return pv.wrap(reader.GetOutput())


def manifest_json(data) -> dict:
    return json.loads((data / "manifest.json").read_text())


def cases_row(output: str) -> tuple[int, int, int]:
    """(written, reused, failed) from the table `mspt prepare` prints."""
    m = re.search(r"(\d+) written, (\d+) reused, (\d+) failed", output)
    assert m, output
    return int(m[1]), int(m[2]), int(m[3])


# --- prepare -------------------------------------------------------------------------------------------


def test_prepare_writes_a_sample_per_case_and_a_manifest(prepared):
    assert cases_row(prepared.result.output) == (3, 0, 0)
    assert "train 2, val 1, test 0" in prepared.result.output
    manifest = read_manifest(prepared.data)
    assert [s.name for s in manifest.samples] == list(CASES)
    assert {s.name: s.split for s in manifest.samples} == {
        "case_0000": "train",
        "case_0001": "train",
        "case_0002": "val",
    }
    assert manifest.fields == {"surface": SURFACE_FIELDS, "volume": VOLUME_FIELDS}
    assert manifest.surface_location == "points" and manifest.skipped == []
    assert manifest.mspt_config.data.max_volume_points == MAX_VOLUME_POINTS
    for entry, case in zip(manifest.samples, prepared.cases, strict=True):
        source = meshio.read(case / "surface.vtu")
        assert entry.num_surface == len(source.points) and entry.num_volume == MAX_VOLUME_POINTS
        assert entry.reference_area == pytest.approx(json.loads((case / "params.json").read_text())["frontal_area"])
        sample = load_sample(prepared.data / entry.file)
        n, m = entry.num_surface, entry.num_volume
        assert np.array_equal(sample.arrays["surface/points"], source.points.astype(np.float32))
        assert np.array_equal(sample.arrays["surface/p"][:, 0], source.point_data["p"].astype(np.float32))
        for name, k in SURFACE_FIELDS.items():
            assert sample.arrays[f"surface/{name}"].shape == (n, k)
        for name, k in VOLUME_FIELDS.items():
            assert sample.arrays[f"volume/{name}"].shape == (m, k)
            assert np.isfinite(sample.arrays[f"volume/{name}"]).all()
        assert sample.arrays["volume/points"].shape == (m, 3) and sample.arrays["volume/distance"].shape == (m,)
        assert np.array_equal(np.sort(sample.arrays["order"]), np.arange(n + m))  # a permutation of the cloud
        pool = sample.arrays["anchors/surface_points"]  # area-weighted samples of the faces, for the anchors
        assert pool.shape == (1 << 18, 3) and sample.arrays["anchors/surface_normals"].shape == pool.shape
        d, _ = distance_to_surface(pool[:2000], pv.read(case / "surface.vtu"))
        assert d.max() < 1e-6
    assert manifest.stats.coord_scale > 0 and set(manifest.stats.volume) == set(VOLUME_FIELDS)
    assert (prepared.data / "config.yaml").is_file() and temp_files(prepared.data) == []


def test_prepare_again_with_a_glob_reuses_every_sample(prepared):
    samples, manifest = tree_digest(prepared.data / "samples"), manifest_json(prepared.data)
    result = ok("prepare", prepared.cases[0].parent / "case_*", "-o", prepared.data, "-c", prepared.config)
    assert cases_row(result.output) == (0, 3, 0)
    assert tree_digest(prepared.data / "samples") == samples  # not rewritten
    assert manifest_json(prepared.data) == manifest  # the same manifest (its params' key order aside)
    assert temp_files(prepared.data) == []


def test_prepare_rewrites_a_sample_cut_short(prepared, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared.data, data)
    (data / "manifest.json").unlink()
    cut = data / "samples" / "case_0001.safetensors"
    cut.write_bytes(cut.read_bytes()[:1000])  # what a non-atomic write would leave
    result = ok("prepare", *prepared.cases, "-o", data, "-c", prepared.config)
    assert cases_row(result.output) == (1, 2, 0)
    for name in CASES:  # case_0001 rewritten as it was (bytes may differ: safetensors' header order is not fixed)
        again, first = (
            load_sample(data / "samples" / f"{name}.safetensors"),
            load_sample(prepared.data / "samples" / f"{name}.safetensors"),
        )
        assert again.meta == first.meta and again.arrays.keys() == first.arrays.keys()
        assert all(np.array_equal(again.arrays[k], first.arrays[k]) for k in first.arrays)
    assert manifest_json(data) == manifest_json(prepared.data)


# --- train ---------------------------------------------------------------------------------------------


def test_train_writes_checkpoints_metrics_and_curves(trained):
    run = trained.run
    assert "trained 2 epochs" in trained.result.output
    rows = list(csv.DictReader((run / "metrics.csv").read_text().splitlines()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for row in rows:
        for key in ("train_loss", "val_loss", "lr", *(f"val_rel_l2/volume/{f}" for f in VOLUME_FIELDS)):
            assert math.isfinite(float(row[key])), (key, row)
        assert float(row["val_loss"]) > 0
    for name in ("best", "last"):
        ckpt = load_checkpoint(run / "checkpoints" / f"{name}.safetensors")
        assert ckpt.config.model.width == 16 and ckpt.config.train.epochs == 2
        assert dict(ckpt.channels.surface) == SURFACE_FIELDS and dict(ckpt.channels.volume) == VOLUME_FIELDS
        assert 1 <= ckpt.epoch <= 2
    assert load_checkpoint(run).epoch == load_checkpoint(run / "checkpoints" / "best.safetensors").epoch
    assert load_checkpoint(run / "checkpoints" / "last.safetensors").epoch == 2
    state = torch.load(run / "train_state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["step_in_epoch"] == 0
    assert is_png(run / "curves.png")
    assert (run / "config.yaml").is_file() and temp_files(run) == []


# --- predict -------------------------------------------------------------------------------------------


def test_predict_stl_writes_fields_json_and_png(predicted_stl):
    out, name = predicted_stl.out, "case_0003_geometry"  # a case folder's file gets the folder's name
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{name}{suffix}" for suffix in (".vtp", "_volume.vtu", ".json", ".png")
    )
    source = pv.read(predicted_stl.geometry)
    for surface in (pv.read(out / f"{name}.vtp"), read_vtp(out / f"{name}.vtp")):
        assert surface.n_points == source.n_points and surface.n_cells == source.n_cells
        assert np.allclose(surface.points, source.points)
        for field, k in SURFACE_FIELDS.items():
            values = np.asarray(surface.point_data[field])
            assert values.shape == ((source.n_points,) if k == 1 else (source.n_points, k))
            assert np.isfinite(values).all() and values.std() > 0

    grid = pv.read(out / f"{name}_volume.vtu")
    mesh = meshio.read(out / f"{name}_volume.vtu")
    assert grid.n_points == len(mesh.points) == 2000
    for field, k in VOLUME_FIELDS.items():
        for values in (np.asarray(grid.point_data[field]), mesh.point_data[field]):
            assert values.shape == ((2000,) if k == 1 else (2000, k)) and np.isfinite(values).all()
    assert np.array_equal(np.asarray(grid.point_data["U"]), mesh.point_data["U"])

    summary = json.loads((out / f"{name}.json").read_text())
    params = json.loads((predicted_stl.geometry.parent / "params.json").read_text())
    c = summary["coefficients"]
    assert math.isfinite(c["cd"]) and math.isfinite(c["cl"])
    assert c["reference_area"] == pytest.approx(params["frontal_area"])
    assert c["reference_area_source"] == "params.json frontal_area"
    assert summary["solver"] == {k: pytest.approx(params[k]) for k in ("Cd", "Cl", "Cd_fields", "Cl_fields")}
    assert summary["relative_l2"] == {}  # an STL carries no true fields
    assert summary["fields"] == {"surface": list(SURFACE_FIELDS), "volume": list(VOLUME_FIELDS)}
    assert is_png(out / f"{name}.png") and distinct_colours(out / f"{name}.png") > 50
    assert predicted_stl.result.output.count("wrote ") == 4


@pytest.fixture(scope="module")
def predicted_with_truth(tmp_path_factory, trained, design_case):
    out = tmp_path_factory.mktemp("predicted_truth")
    surface, volume = design_case / "surface.vtu", design_case / "volume.vtu"
    result = ok("predict", trained.run, surface, "--volume", volume, "-o", out)
    return out, surface, volume, result


def test_predict_with_true_fields_writes_errors_and_relative_l2(predicted_with_truth):
    out, surface_in, volume_in, result = predicted_with_truth
    name = "case_0003_surface"
    summary = json.loads((out / f"{name}.json").read_text())
    rel = summary["relative_l2"]
    assert set(rel) == {f"surface/{f}" for f in SURFACE_FIELDS} | {f"volume/{f}" for f in VOLUME_FIELDS}
    assert all(math.isfinite(v) and v > 0 for v in rel.values())
    assert "L2" in result.output and "surface/p" in result.output, result.output  # printed, to 3 decimals
    assert all(f"{v:.3f}" in result.output for v in rel.values()), result.output

    source = meshio.read(surface_in)
    for surface in (pv.read(out / f"{name}.vtp"), read_vtp(out / f"{name}.vtp")):
        assert surface.n_points == len(source.points) and surface.n_cells == sum(len(b.data) for b in source.cells)
        for field in SURFACE_FIELDS:
            pred, true = np.asarray(surface.point_data[field]), np.asarray(surface.point_data[f"{field}_true"])
            assert np.array_equal(true, source.point_data[field].astype(np.float32))
            assert np.allclose(surface.point_data[f"{field}_error"], pred - true)
            assert np.linalg.norm(pred - true) / np.linalg.norm(true) == pytest.approx(rel[f"surface/{field}"], 1e-5)

    volume_src = meshio.read(volume_in)
    grid, mesh = pv.read(out / f"{name}_volume.vtu"), meshio.read(out / f"{name}_volume.vtu")
    assert grid.n_points == len(mesh.points) == len(volume_src.points)
    assert grid.n_cells == sum(len(block.data) for block in volume_src.cells)
    for field, k in VOLUME_FIELDS.items():
        pred, true = mesh.point_data[field], mesh.point_data[f"{field}_true"]
        assert pred.shape == true.shape == ((len(mesh.points),) if k == 1 else (len(mesh.points), k))
        assert np.array_equal(true, volume_src.point_data[field].astype(np.float32))
        assert np.allclose(mesh.point_data[f"{field}_error"], pred - true)
        assert np.array_equal(np.asarray(grid.point_data[field]), pred)
        assert np.linalg.norm(pred - true) / np.linalg.norm(true) == pytest.approx(rel[f"volume/{field}"], 1e-5)
    assert "nut" in mesh.point_data  # the input's other arrays are kept

    c = summary["coefficients"]
    params = json.loads((surface_in.parent / "params.json").read_text())
    assert math.isfinite(c["cd"]) and math.isfinite(c["cl"])
    assert c["cd_true_fields"] == pytest.approx(params["Cd_fields"], rel=0.05)  # true fields, integrated at points
    assert summary["solver"]["Cd_fields"] == pytest.approx(params["Cd_fields"])
    assert is_png(out / f"{name}.png")


def test_predict_without_params_uses_the_training_reference_area(trained, design_case, tmp_path):
    geometry = tmp_path / "design" / "body.stl"
    geometry.parent.mkdir()
    shutil.copy(design_case / "geometry.stl", geometry)
    out = tmp_path / "out"
    ok("predict", trained.run, geometry, "--volume-points", 0, "-o", out)
    assert sorted(p.name for p in out.iterdir()) == ["body.json", "body.png", "body.vtp"]  # no volume asked
    summary = json.loads((out / "body.json").read_text())
    areas = [e.reference_area for e in read_manifest(trained.prepared.data).split("train")]
    assert summary["coefficients"]["reference_area"] == pytest.approx(float(np.median(areas)))
    assert summary["coefficients"]["reference_area_source"] == "median of the training cases"
    assert summary["solver"] == {}


# --- export --------------------------------------------------------------------------------------------


def exported_inputs(sidecar: dict, vtp, vtu):
    """The exported graph's inputs for a predicted design, built only from the sidecar's description."""
    from msptcli.data.anchors import geometry_anchors
    from msptcli.data.deploy import decode_array
    from msptcli.data.features import model_inputs
    from msptcli.data.manifest import Stats
    from msptcli.data.prepare_case import surface_arrays, volume_arrays
    from msptcli.data.read import FieldMesh
    from msptcli.geometry.balltree import ball_tree_order
    from msptcli.model import ModelConfig, build_layout
    from msptcli.model.anchors import pack_anchors
    from msptcli.model.queries import locate_queries, place_queries
    from msptcli.runtime import QueryExample, layout_inputs, query_inputs

    surface = pv.read(vtp)
    points = np.asarray(surface.points, dtype=np.float64)
    s = surface_arrays(FieldMesh(mesh=surface, points=points, location="points"))
    v_points = np.asarray(pv.read(vtu).points, dtype=np.float64)
    v = volume_arrays(v_points, surface)
    stats = Stats.model_validate(sidecar["stats"])
    features = model_inputs(
        stats,
        s["surface/points"],
        s["surface/normals"],
        v["volume/points"],
        v["volume/distance"],
        v["volume/direction"],
    )
    config = ModelConfig.model_validate(sidecar["model_config"])
    if config.anchors is not None:  # anchors drawn by the sidecar's rule; every point a query, in its own order
        template = decode_array(sidecar["anchors"]["volume_template"])
        a_points, a_inputs = geometry_anchors(surface, stats, config.anchors, template)
        anchors = pack_anchors([a_points], [a_inputs], config)
        cloud = np.concatenate([s["surface/points"], v["volume/points"]])
        queries = place_queries(anchors, locate_queries(anchors, [cloud]), features)
        return query_inputs(QueryExample(anchors, queries)), np.arange(len(features)), stats, len(points)
    order = ball_tree_order(np.concatenate([s["surface/points"], v["volume/points"]]))
    layout = build_layout([len(features)], config)
    return layout_inputs(layout, features=features[order]), order, stats, len(points)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_reproduces_predict_from_the_sidecar(trained, predicted_stl, tmp_path, fmt):
    target = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    args = ["export", trained.run, "-o", target] + (["--format", "torchscript"] if fmt == "torchscript" else [])
    result = ok(*args)
    assert "verified in its runtime" in result.output and f"({fmt})" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, f"{target.name}.json"])
    sidecar = json.loads((tmp_path / f"{target.name}.json").read_text())
    assert [tuple(x) for x in sidecar["outputs"]["channels"]["surface"]] == list(SURFACE_FIELDS.items())

    name = "case_0003_geometry"
    vtp, vtu = predicted_stl.out / f"{name}.vtp", predicted_stl.out / f"{name}_volume.vtu"
    inputs, order, stats, n = exported_inputs(sidecar, vtp, vtu)
    if fmt == "onnx":
        import onnx
        import onnxruntime

        onnx.checker.check_model(onnx.load(target))
        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        out = session.run(None, {i.name: inputs[i.name] for i in session.get_inputs()})[0]
    else:
        module = torch.jit.load(str(target))
        with torch.no_grad():
            out = module(**{k: torch.from_numpy(v) for k, v in inputs.items()}).numpy()
    pred = np.empty_like(out)
    pred[order] = out  # back from tree order to [surface ; volume]
    channels = sidecar["outputs"]["channels"]
    start = 0
    for part, rows, mesh in (("surface", slice(0, n), pv.read(vtp)), ("volume", slice(n, None), pv.read(vtu))):
        for field, k in channels[part]:  # value = output * std + mean, channels in the sidecar's order
            s = getattr(stats, part)[field]
            values = pred[rows, start : start + k] * np.asarray(s.std) + np.asarray(s.mean)
            expected = np.asarray(mesh.point_data[field]).reshape(len(values), k)
            assert np.allclose(values, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max()), (part, field)
            start += k
    assert start == out.shape[1]


# --- inputs ----------------------------------------------------------------------------------------------


def test_no_command_modified_its_inputs(input_digests, prepared, trained, predicted_stl, predicted_with_truth):
    for folder, before in input_digests.items():
        assert tree_digest(Path(folder)) == before  # same files, same bytes, nothing added


# --- one spelling of every option ----------------------------------------------------------------------


def test_overrides_are_spelled_the_same_in_every_command(prepared, tmp_path):
    """``--set KEY=VALUE`` in prepare and train, and train's positional form is the same thing."""
    import yaml

    ok("prepare", *prepared.cases[:2], "-o", tmp_path / "data", "-c", prepared.config, "--set", "data.split.val=[]",
       "--set", "data.split.fractions=[1, 0, 0]")  # fmt: skip
    saved = yaml.safe_load((tmp_path / "data" / "config.yaml").read_text())
    assert saved["data"]["split"]["fractions"] == [1, 0, 0]
    runs = {}
    for form, args in (("set", ["--set", "model.width=8", "--set", "train.epochs=1"]),
                       ("positional", ["model.width=8", "train.epochs=1"])):  # fmt: skip
        run = tmp_path / form
        ok("train", tmp_path / "data", *args, "-o", run, "-c", prepared.config)
        runs[form] = yaml.safe_load((run / "config.yaml").read_text())
        assert load_checkpoint(run).model.config.width == 8
    assert runs["set"] == runs["positional"]


@pytest.mark.parametrize("command", ["train", "predict"])
def test_device_is_one_option(command, trained, tmp_path):
    """The same ``--device`` in train and predict: its help, its choices and its error are the same."""
    help_text = invoke(command, "--help").output
    assert "--device" in help_text and "auto" in help_text and "mps" in help_text
    bad = invoke(command, "x", *(["y"] if command == "predict" else []), "--device", "tpu")
    assert bad.exit_code == 2 and "tpu" in bad.output
    if not torch.cuda.is_available():
        args = ["train", trained.prepared.data, "-o", tmp_path / "run"] if command == "train" else []
        args = args or ["predict", trained.run, trained.prepared.cases[0] / "surface.vtu", "-o", tmp_path / "out"]
        one_line_error(invoke(*args, "--device", "cuda"), "no CUDA device")
        assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "out").exists()
