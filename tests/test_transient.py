"""Transient runs end to end on real pimpleFoam snapshots: prepare a series, train the step, roll it out.

One tiny run (width 16, one block, history 1) on the two example cases (12 snapshots each) is shared
by the module: prepare -> train -> rollout, then resume, streaming, export and errors on it.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import pyvista as pv
import yaml
from helpers import ROOT, invoke, needs_pvpython, ok, one_line_error, ranks_said, run_pvpython, torchrun

from msptcli.checkpoint import load_checkpoint
from msptcli.config import load_config
from msptcli.data.features import Channels
from msptcli.data.manifest import read_manifest
from msptcli.data.sample import load_sample
from msptcli.data.transient import (
    input_width,
    next_state,
    noise_scale,
    operators_of,
    split_fields,
    training_noise,
)
from msptcli.errors import ConfigError, InvalidInputError
from msptcli.geometry.transport import Transport
from msptcli.rollout import rollout_series
from msptcli.runtime.inference import predict_clouds
from msptcli.train.loop import train_model
from msptcli.train.transient import StepPairs, step_arrays

pytest_plugins = ["helpers"]

EXAMPLES = ROOT / "examples" / "transient"
TINY = {
    "data": {
        "reference_velocity": 1.0,
        "transient": {"fields": ["U", "p"], "conditions": ["Re"], "history": 1, "noise": 0.1},
        "split": {"train": ["case_0000"], "val": ["case_0002"]},
    },
    "model": {"width": 16, "num_heads": 2, "depth": 1},
    "train": {"epochs": 2, "warmup_epochs": 0.5, "val_every": 1, "num_workers": 0},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(config file, dataset, run directory) of the module's tiny transient run."""
    work = tmp_path_factory.mktemp("transient")
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump(TINY))
    ok("prepare", str(EXAMPLES / "case_*"), "-o", work / "data", "-c", config)
    (work / "train.log").write_text(ok("train", work / "data", "-o", work / "run").output)
    return config, work / "data", work / "run"


def test_prepare_stores_geometry_once_and_every_snapshot(run):
    _, data, _ = run
    manifest = read_manifest(data)
    assert manifest.kind == "transient"
    assert manifest.fields == {"surface": {}, "volume": {"U": 3, "p": 1}}
    assert set(manifest.stats.increments) == {"U", "p"} and set(manifest.stats.conditions) == {"Re", "dt"}
    entry = manifest.split("train")[0]
    assert entry.num_steps == 12 and entry.dt == pytest.approx(0.399)
    a = load_sample(data / entry.file).arrays
    n = len(a["mesh/points"])
    source = pv.read(EXAMPLES / "case_0000" / "fields_007.vtu")
    np.testing.assert_array_equal(a["series/U"][7], source.point_data["U"])
    np.testing.assert_array_equal(a["series/p"][7, :, 0], source.point_data["p"])
    assert sorted(a["order"].tolist()) == list(range(n))
    wall = a["mesh/wall"] > 0
    assert 100 < wall.sum() < 400
    assert np.abs(a["series/U"][:, wall]).max() == 0  # no-slip: the outline found is the body
    assert (a["mesh/distance"][wall] == 0).all() and (a["mesh/distance"][~wall] > 0).all()
    np.testing.assert_allclose(np.linalg.norm(a["mesh/normals"][wall], axis=1), 1, atol=1e-5)
    # outward: from the body's centre (the origin) a wall point's normal points away
    assert (np.einsum("ij,ij->i", a["mesh/normals"][wall, :2], a["mesh/points"][wall, :2]) > 0).all()
    inside = ~wall  # the direction leads towards the body: a step along it shortens the distance
    step = a["mesh/points"][inside, :2] + 1e-3 * a["mesh/direction"][inside, :2]
    assert (np.linalg.norm(step, axis=1) < np.linalg.norm(a["mesh/points"][inside, :2], axis=1) + 1e-9).mean() > 0.99


def test_config_runs_transient_steps_on_the_mesh(tmp_path):
    cfg = load_config(values={"data.transient": {"fields": ["U"]}})
    assert cfg.model.anchors is None and cfg.train.volume_points is None
    with pytest.raises(ConfigError, match=r"set model\.anchors: null"):
        load_config(values={"data.transient": {"fields": ["U"]}, "model.anchors": {"surface": 256}})
    assert load_config().model.anchors is not None  # steady configs keep their defaults


def test_targets_are_increments_and_noise_is_corrected_for(run):
    config, data, _ = run
    cfg = load_config(config)
    manifest, transient = read_manifest(data), cfg.data.transient
    channels = Channels.from_fields(manifest.fields)
    sample = load_sample(data / manifest.split("train")[0].file)
    a = sample.arrays
    current = np.concatenate([a["series/U"][4], a["series/p"][4]], axis=1)
    following = np.concatenate([a["series/U"][5], a["series/p"][5]], axis=1)
    inputs, target = step_arrays(sample, manifest, channels, transient, 4)
    assert inputs.shape == (len(current), input_width(transient, channels)) == (len(current), 11 + 4 + 13 + 4 + 4 + 2)
    np.testing.assert_allclose(next_state(manifest.stats, channels, current, target), following, atol=1e-5)
    noisy_inputs, noisy_target = step_arrays(sample, manifest, channels, transient, 4, rng=np.random.default_rng(0))
    std = np.array(manifest.stats.volume["U"].std + manifest.stats.volume["p"].std)
    mean = np.array(manifest.stats.volume["U"].mean + manifest.stats.volume["p"].mean)
    noisy_state = noisy_inputs[:, 11:15] * std + mean
    assert 0 < np.abs(noisy_state - current).max() < 0.2  # noise of 0.1 of one step's change
    np.testing.assert_allclose(next_state(manifest.stats, channels, noisy_state, noisy_target), following, atol=1e-4)
    pairs = StepPairs(data, manifest, manifest.split("train"), transient, points=None, seed=0)
    assert len(pairs) == 12 - 1 - 1  # history 1: from t = 1 to t = 10
    np.testing.assert_array_equal(pairs[3].features, pairs[3].features)  # the draw is a function of the index


def test_smoothed_noise_keeps_its_deviation_and_leaves_the_derivative_inputs_mostly_signal(run):
    config, data, _ = run
    manifest = read_manifest(data)
    channels = Channels.from_fields(manifest.fields)
    sample = load_sample(data / manifest.split("train")[0].file)
    ops = operators_of(sample.arrays)
    transient = load_config(config).data.transient.model_copy(update={"noise": 0.5})
    scale = noise_scale(manifest.stats, channels, transient)
    n = len(ops.size)
    white = training_noise(np.random.default_rng(1), scale, n)
    smooth = training_noise(np.random.default_rng(1), scale, n, sweeps=32, operators=ops)
    np.testing.assert_array_equal(smooth, training_noise(np.random.default_rng(1), scale, n, sweeps=32, operators=ops))
    varied = scale > 1e-9 * scale.max()  # not w of the 2D flow
    assert varied.sum() == 3
    np.testing.assert_allclose(smooth.std(axis=0)[varied], scale[varied], rtol=1e-5)  # the same deviation
    # its cell-size gradient, which the derivative inputs are made of, is well under the white noise's (0.3-0.4x)
    grad = {k: ops.size[:, None] * (ops.dx @ z.astype(np.float64)) for k, z in (("white", white), ("smooth", smooth))}
    assert (grad["smooth"].std(axis=0)[varied] < 0.5 * grad["white"].std(axis=0)[varied]).all()
    # and neighbouring points' noise is correlated (white noise's is not)
    a, b = np.asarray(sample.arrays["mesh/edges"]).T
    corr = [np.corrcoef(z[a, 0], z[b, 0])[0, 1] for z in (white, smooth)]
    assert abs(corr[0]) < 0.05 and corr[1] > 0.9
    # a run with smoothed noise and no derivative inputs still gets the operators it smooths with
    plain = transient.model_copy(update={"derivatives": False, "noise_smoothing": 8})
    inputs, target = step_arrays(sample, manifest, channels, plain, 4, rng=np.random.default_rng(0))
    assert inputs.shape[1] == input_width(plain, channels) and np.isfinite(target).all()
    with pytest.raises(ValueError, match="operators"):
        training_noise(np.random.default_rng(1), scale, n, sweeps=2)


def test_advection_inputs_are_the_last_increment_carried_along_the_flow(run):
    config, data, _ = run
    manifest = read_manifest(data)
    channels = Channels.from_fields(manifest.fields)
    sample = load_sample(data / manifest.split("train")[0].file)
    a = sample.arrays
    base = load_config(config).data.transient.model_copy(update={"advection": None})
    carried = base.model_copy(update={"advection": "U"})
    plain, _ = step_arrays(sample, manifest, channels, base, 4)
    inputs, _ = step_arrays(sample, manifest, channels, carried, 4)
    assert inputs.shape[1] == input_width(carried, channels) == plain.shape[1] + 4
    np.testing.assert_array_equal(inputs[:, : plain.shape[1] - 2], plain[:, :-2])  # the same inputs before it
    np.testing.assert_array_equal(inputs[:, -2:], plain[:, -2:])  # and the conditions last
    state = [np.concatenate([a["series/U"][s], a["series/p"][s]], axis=1).astype(np.float64) for s in (3, 4)]
    inc = np.array(manifest.stats.increments["U"].std + manifest.stats.increments["p"].std)
    moved = Transport.of(a["mesh/points"]).carry(state[1] - state[0], state[1][:, :2], sample.meta["conditions"]["dt"])
    np.testing.assert_allclose(inputs[:, -6:-2], moved / inc, rtol=1e-4, atol=1e-4)
    # the velocity's: a better guess of its step than the last increment where it is (a wake moves downstream)
    _, target = step_arrays(sample, manifest, channels, carried, 4)
    errors = [np.linalg.norm(guess[:, :2] - target[:, :2]) for guess in (inputs[:, -6:-2], plain[:, -6:-2])]
    assert errors[0] < 0.7 * errors[1], errors


def test_training_learns_the_step(run):
    _, _, run_dir = run
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"val_loss", "val_rel_l2/volume/U", "val_rel_l2/volume/p"} <= set(header)  # named as steady runs'
    assert "volume/U" in (run_dir.parent / "train.log").read_text()  # so the progress line shows them
    first, last = (dict(zip(header, r.split(","), strict=True)) for r in (rows[1], rows[-1]))
    assert float(last["train_loss"]) < float(first["train_loss"])
    ckpt = load_checkpoint(run_dir)
    assert ckpt.model.in_features == 38 and ckpt.config.data.transient.history == 1


def test_rollout_writes_a_series_pyvista_reads_back(run, tmp_path):
    _, data, run_dir = run
    ckpt = load_checkpoint(run_dir)
    result = invoke("rollout", run_dir, EXAMPLES / "case_0002" / "series.pvd", "--start", 2,
                    "--steps", 4, "-o", tmp_path)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Strouhal" in result.output and "rel. L2 U" in result.output
    pvd = tmp_path / "case_0002.pvd"
    entries = ET.parse(pvd).getroot().findall("./Collection/DataSet")
    assert len(entries) == 4 and len(list((tmp_path / "case_0002").glob("*.vtu"))) == 4
    times = json.loads((EXAMPLES / "case_0002" / "params.json").read_text())["snapshots"]["times"]
    reader = pv.get_reader(pvd)
    np.testing.assert_allclose(reader.time_values, times[3:7], rtol=1e-9)
    reader.set_active_time_value(reader.time_values[0])
    first = reader.read()[0]
    truth = pv.read(EXAMPLES / "case_0002" / "fields_003.vtu")
    assert {"U", "p", "U_true", "p_true", "U_error", "p_error"} <= set(first.point_data)
    np.testing.assert_allclose(first.point_data["U_true"], truth.point_data["U"])
    np.testing.assert_allclose(first.point_data["U_error"], first.point_data["U"] - truth.point_data["U"], atol=1e-6)
    # step 1 is the network's one step from the true snapshots 1 and 2
    manifest = read_manifest(data)
    sample = load_sample(data / next(e.file for e in manifest.samples if e.name == "case_0002"))
    inputs, _ = step_arrays(sample, manifest, ckpt.channels, ckpt.config.data.transient, 2)
    (out,) = predict_clouds(ckpt.model, [sample.arrays["mesh/points"]], [inputs], orders=[sample.arrays["order"]])
    current = np.concatenate([sample.arrays["series/U"][2], sample.arrays["series/p"][2]], axis=1)
    expected = split_fields(next_state(ckpt.stats, ckpt.channels, current, out), ckpt.channels)
    np.testing.assert_allclose(first.point_data["U"], expected["U"], atol=1e-5)
    summary = json.loads((tmp_path / "case_0002.json").read_text())
    assert summary["steps"] == 4 and len(summary["relative_l2"]["U"]) == 4
    assert len(summary["forces"]["predicted"]["cl"]) == 4 and summary["shedding"]["solver"]["St"] == pytest.approx(
        0.2068, abs=1e-4
    )
    assert (tmp_path / "case_0002_rollout.png").read_bytes()[:4] == b"\x89PNG"


def test_rollout_past_the_series_has_no_truth_and_leaves_inputs_alone(run, tmp_path):
    _, _, run_dir = run
    series = tmp_path / "case"
    shutil.copytree(EXAMPLES / "case_0002", series)
    before = {p.name: p.stat().st_mtime_ns for p in series.iterdir()}
    result = rollout_series(load_checkpoint(run_dir), series, tmp_path / "out", start=9, steps=5)
    assert result.steps == 5 and result.errors["U"][:2] != [None, None] and result.errors["U"][2:] == [None] * 3
    last = pv.read(tmp_path / "out" / "case" / "case_005.vtu")
    assert "U_true" not in last.point_data and np.isfinite(last.point_data["U"]).all()
    assert {p.name: p.stat().st_mtime_ns for p in series.iterdir()} == before
    with pytest.raises(InvalidInputError, match="refusing to overwrite the input series"):
        rollout_series(load_checkpoint(run_dir), series, tmp_path, name="case", start=1, steps=1)


def test_streaming_one_step_equals_the_whole_mesh(run):
    _, data, run_dir = run
    ckpt = load_checkpoint(run_dir)
    manifest = read_manifest(data)
    sample = load_sample(data / manifest.split("val")[0].file)
    inputs, _ = step_arrays(sample, manifest, ckpt.channels, ckpt.config.data.transient, 5)
    kw = dict(orders=[sample.arrays["order"]])
    (whole,) = predict_clouds(ckpt.model, [sample.arrays["mesh/points"]], [inputs], chunk_points=None, **kw)
    (streamed,) = predict_clouds(ckpt.model, [sample.arrays["mesh/points"]], [inputs], chunk_points=1000, **kw)
    np.testing.assert_allclose(streamed, whole, atol=1e-5)


def test_resume_continues_the_transient_run_exactly(run, tmp_path):
    config, data, run_dir = run
    calls = iter(range(10_000))
    stopped = train_model(data, tmp_path / "half", config=load_config(config), should_stop=lambda: next(calls) == 13)
    assert stopped.interrupted and stopped.epochs_done == 1  # in the middle of the second epoch
    ok("train", data, "-o", tmp_path / "half", "--resume")
    resumed, straight = load_checkpoint(tmp_path / "half"), load_checkpoint(run_dir)
    for key, value in straight.model.state_dict().items():
        np.testing.assert_allclose(resumed.model.state_dict()[key].numpy(), value.numpy(), atol=1e-6, err_msg=key)


def test_pushforward_trains_the_step_from_the_networks_own_rollout(run, tmp_path, monkeypatch):
    config, data, run_dir = run
    cfg = load_config(config)
    manifest = read_manifest(data)
    transient = cfg.data.transient.model_copy(update={"pushforward": 2, "noise": 0.0})
    channels = Channels.from_fields(manifest.fields)
    entries = manifest.split("train")
    pairs = StepPairs(data, manifest, entries, transient, points=None, seed=0)
    items = [pairs[i] for i in range(len(pairs))]
    marked = [i for i, c in enumerate(items) if c.unroll is not None]
    assert [c.unroll for c in items if c.unroll is not None] == marked and 0 < len(marked) < len(pairs)
    assert items[0].unroll is None  # t = 1 has no earlier snapshot to start a rollout from (history 1)
    model = load_checkpoint(run_dir).model
    sample = load_sample(data / entries[0].file)
    a = sample.arrays
    order = a["order"]
    for index in marked[:3]:
        _, t = pairs.items[index]
        _, unrolled, _ = pairs._draw(index, t, sample)
        model.train()
        inputs, target = pairs.push_forward(model, index, "cpu", bf16=False)
        assert model.training  # back in training mode
        data_inputs, _ = step_arrays(sample, manifest, channels, transient, t)
        assert 1 <= unrolled <= 2 and not np.allclose(inputs.numpy(), data_inputs[order], atol=1e-3)
        # the trained step goes from where the network got to, to the data's next snapshot
        state = np.concatenate([a["series/U"][t - unrolled], a["series/p"][t - unrolled]], axis=1)
        previous = None
        for s in range(unrolled):  # the network's own rollout from snapshot t - j, step by step
            step_in, _ = step_arrays(sample, manifest, channels, transient, t - unrolled + s,
                                     states=None if s == 0 else [previous, state])  # fmt: skip
            (out,) = predict_clouds(model, [a["mesh/points"]], [step_in], orders=[order], bf16=False)
            previous, state = state, next_state(manifest.stats, channels, state, out)
        following = np.concatenate([a["series/U"][t + 1], a["series/p"][t + 1]], axis=1)
        increment = np.empty_like(following)
        increment[order] = target.numpy()  # tree order -> the mesh's
        np.testing.assert_allclose(next_state(manifest.stats, channels, state, increment), following, atol=1e-4)
        final, _ = step_arrays(sample, manifest, channels, transient, t, states=[previous, state])
        np.testing.assert_allclose(inputs.numpy(), final[order], atol=1e-5)

    calls = []
    original = StepPairs.push_forward
    monkeypatch.setattr(StepPairs, "push_forward", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    cfg = load_config(config, values={"data.transient.pushforward": 1, "train.epochs": 1})
    summary = train_model(data, tmp_path / "pushed", config=cfg)
    assert summary.epochs_done == 1 and calls
    rows = (tmp_path / "pushed" / "metrics.csv").read_text().splitlines()
    assert np.isfinite(float(dict(zip(rows[0].split(","), rows[1].split(","), strict=True))["train_loss"]))


@pytest.mark.slow
def test_torchrun_two_processes_match_one_with_pushforward(run, tmp_path):
    """Two gloo ranks of one step pair each against one process with both in its batch: the same weights,
    pushforward clouds included (every rank rolls its own out with its copy of the network)."""
    config, data, _ = run
    common = ["-c", str(config), "train.epochs=1", "data.transient.pushforward=1"]
    ddp = torchrun("-m", "msptcli", "train", data, "-o", tmp_path / "ddp", *common, "train.batch_size=1")
    assert ddp.returncode == 0, ranks_said(ddp)
    ok("train", data, "-o", tmp_path / "one", *common, "train.batch_size=2")
    a, b = load_checkpoint(tmp_path / "ddp").model.state_dict(), load_checkpoint(tmp_path / "one").model.state_dict()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < 1e-5, worst


def test_one_step_exports_to_onnx_verified_in_onnxruntime(run, tmp_path):
    pytest.importorskip("onnxruntime")
    _, _, run_dir = run
    result = ok("export", run_dir, "-o", tmp_path / "step.onnx")
    assert "verified" in result.output
    sidecar = json.loads((tmp_path / "step.onnx.json").read_text())
    assert sidecar["in_features"] == 38 and sidecar["transient"]["history"] == 1
    assert sidecar["transient"]["advection"] == "U"
    assert sidecar["transient"]["conditions"] == ["Re", "dt"]
    assert sidecar["transient"]["columns"] == {  # F = 4 (U, p), derivatives 3F + 1, one history increment, carried
        "static": [0, 11], "current": [11, 15], "derivatives": [15, 28], "history_1": [28, 32], "carried_1": [32, 36],
        "conditions": [36, 38],
    }  # fmt: skip


def test_rollout_errors_are_one_line(run, trained, tmp_path):
    _, _, run_dir = run
    series = EXAMPLES / "case_0002" / "series.pvd"
    one_line_error(invoke("rollout", trained.run, series, "-o", tmp_path), "steady model")
    one_line_error(invoke("rollout", run_dir, series, "--start", 0, "-o", tmp_path), "start at 1")
    one_line_error(invoke("predict", run_dir, "x.stl", "--initial", series, "-o", tmp_path), "not both")
    one_line_error(invoke("predict", run_dir, "-o", tmp_path), "mspt rollout RUN SERIES")
    one_line_error(invoke("rollout", run_dir, series, "--start", 11, "-o", tmp_path), "last")
    one_line_error(invoke("rollout", run_dir, series, "--condition", "Re=fast", "-o", tmp_path), "KEY=NUMBER")
    one_line_error(invoke("rollout", run_dir, tmp_path / "none.pvd", "--start", 1, "-o", tmp_path), "none.pvd")
    assert not list(tmp_path.iterdir())


@needs_pvpython
def test_paraview_plays_the_predicted_series(run, tmp_path):
    _, _, run_dir = run
    ok("rollout", run_dir, EXAMPLES / "case_0000", "--start", 1, "--steps", 3, "-o", tmp_path)
    script = tmp_path / "play.py"
    script.write_text(
        "import sys\n"
        "from paraview.simple import OpenDataFile, UpdatePipeline\n"
        "source = OpenDataFile(sys.argv[1])\n"
        "times = list(source.TimestepValues)\n"
        "print('TIMES', len(times))\n"
        "for t in times:\n"
        "    source.UpdatePipeline(t)\n"
        "    info = source.GetPointDataInformation()\n"
        "    names = sorted(info.GetArray(i).GetName() for i in range(info.GetNumberOfArrays()))\n"
        "    low, high = source.PointData['U_error'].GetRange(-1)\n"
        "    print('STEP', t, source.GetDataInformation().GetNumberOfPoints(), ','.join(names), high - low)\n"
    )
    done = run_pvpython(script, tmp_path / "case_0000.pvd")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert "TIMES 3" in lines
    steps = [line.split() for line in lines if line.startswith("STEP")]
    assert len(steps) == 3 and len({s[1] for s in steps}) == 3
    for s in steps:
        assert int(s[2]) == 11650 and "U_error" in s[3] and "p_true" in s[3] and float(s[4]) > 0


def test_prepare_errors_are_one_line_and_numbered_snapshots_work(tmp_path):
    case = tmp_path / "cases" / "run_a"
    case.mkdir(parents=True)
    for k in range(4):
        shutil.copy(EXAMPLES / "case_0000" / f"fields_{k:03d}.vtu", case / f"snap_{k}.vtu")
    shutil.copy(EXAMPLES / "case_0000" / "params.json", case)
    numbered = {**TINY, "data": {**TINY["data"], "split": {"fractions": [1, 0, 0]}}}
    numbered["data"]["transient"] = {**TINY["data"]["transient"], "series_file": "snap_*.vtu"}
    config = tmp_path / "numbered.yaml"
    config.write_text(yaml.safe_dump(numbered))
    one_line_error(invoke("prepare", case, "-o", tmp_path / "none", "-c", config), "data.transient.dt")
    ok("prepare", case, "-o", tmp_path / "data", "-c", config, "--set", "data.transient.dt=0.5")
    sample = load_sample(tmp_path / "data" / "samples" / "run_a.safetensors")
    np.testing.assert_allclose(sample.arrays["times"], [0, 0.5, 1.0, 1.5])
    (case / "snap_2.vtu").unlink()
    one_line_error(invoke("prepare", case, "-o", tmp_path / "gap", "-c", config, "--set", "data.transient.dt=0.5"),
                   "snapshot 2 is missing")  # fmt: skip
    broken = tmp_path / "broken"
    shutil.copytree(EXAMPLES / "case_0002", broken)
    pvd = broken / "series.pvd"
    pvd.write_text(pvd.read_text().replace('timestep="31.215"', 'timestep="31.3"'))
    one_line_error(invoke("prepare", broken, "-o", tmp_path / "uneven", "-c", tmp_path / "numbered.yaml",
                          "--set", "data.transient.series_file=series.pvd"), "not equally spaced")  # fmt: skip
    assert not (tmp_path / "uneven" / "manifest.json").exists() and not (tmp_path / "gap" / "manifest.json").exists()


def test_a_flow_without_a_body_has_no_wall_channels(tmp_path):
    from msptcli.data.prepare_series import mesh_geometry
    from msptcli.data.series import read_series

    for k in range(3):  # the wake only: a box behind the body, its boundary all on the bounding box
        mesh = pv.read(EXAMPLES / "case_0000" / f"fields_{k:03d}.vtu")
        mesh.extract_cells(np.flatnonzero(mesh.cell_centers().points[:, 0] > 2.0)).save(tmp_path / f"w_{k}.vtu")
    series = read_series(tmp_path, ["U", "p"], pattern="w_*.vtu", dt=0.4)
    geometry = mesh_geometry(series)
    assert len(geometry["body/edges"]) == 0 and not geometry["mesh/wall"].any()
    assert not geometry["mesh/distance"].any() and not geometry["mesh/normals"].any()


def test_a_condition_outside_the_training_range_is_noted(run, tmp_path):
    _, _, run_dir = run
    # `mspt predict RUN --initial SERIES`: the alias of `mspt rollout RUN SERIES`
    result = ok("predict", run_dir, "--initial", EXAMPLES / "case_0002", "--steps", 1, "--condition", "Re=1000",
                "-o", tmp_path)  # fmt: skip
    summary = json.loads((tmp_path / "case_0002.json").read_text())
    assert summary["start"] == 1  # by default the first snapshot with the model's history of 1 before it
    assert summary["conditions"]["Re"] == 1000
    assert any("Re = 1000 is outside the training cases' 278.8..278.8" in n for n in summary["notes"])
    trust = summary["trust"]  # and the rounded rectangle is unlike the one training body, a circle
    assert trust["verdict"] == "out of range" and {"Re", "length", "alignment"} <= set(trust["out_of_range"])
    said = " ".join(result.output.split())  # the terminal wraps long lines where the paths' lengths put them
    assert "out of range: Re = 1000 is outside" in said
    assert "out of range: length 0.7" in said

    clean = ok("predict", run_dir, "--initial", EXAMPLES / "case_0000", "--steps", 1, "-o", tmp_path / "clean")
    trust = json.loads((tmp_path / "clean" / "case_0000.json").read_text())["trust"]  # the training case itself
    assert trust["verdict"] == "ok" and trust["out_of_range"] == {}
    assert trust["shape"]["verdict"] == "ok" and trust["shape"]["score"] == 0.0
    assert "warn:" not in clean.output


def _transformed_series(source, folder, points):
    """A copy of the example series ``source`` whose every mesh has its points mapped by ``points``."""
    shutil.copytree(source, folder)
    for vtk in [*folder.glob("*.vtu"), *folder.glob("*.vtp")]:
        mesh = pv.read(vtk)
        mesh.points = points(np.asarray(mesh.points))
        mesh.save(vtk)
    return folder


def test_a_series_in_other_units_is_refused_and_an_unlike_body_is_named(run, tmp_path):
    """The rollout's series goes through predict's shape check (``trust/check.py``) on its body outline."""
    _, _, run_dir = run
    assert load_checkpoint(run_dir).shapes.kind == "outline"
    mm = _transformed_series(EXAMPLES / "case_0000", tmp_path / "mm", lambda x: x * 1000)
    one_line_error(invoke("rollout", run_dir, mm, "--steps", 1, "-o", tmp_path / "out"),
                   "its coordinates look like mm: write the series in the training cases' units")  # fmt: skip
    assert not (tmp_path / "out").exists()
    forced = ok("rollout", run_dir, mm, "--steps", 1, "-o", tmp_path / "out", "--force")
    trust = json.loads((tmp_path / "out" / "mm.json").read_text())["trust"]
    assert trust["verdict"] == "out of range" and trust["shape"]["units"]
    forced_said = " ".join(forced.output.split())  # the terminal wraps long lines
    assert "out of range:" in forced_said and "rolled out with --force" in forced_said

    longer = _transformed_series(EXAMPLES / "case_0000", tmp_path / "longer", lambda x: x * [1.05, 1, 1])
    result = ok("rollout", run_dir, longer, "--steps", 1, "-o", tmp_path / "out")
    trust = json.loads((tmp_path / "out" / "longer.json").read_text())["trust"]
    assert trust["verdict"] == "warn", trust
    assert {"length", "domain_length"} <= set(trust["shape"]["out_of_range"])
    said = " ".join(result.output.split())  # the terminal wraps long lines
    assert "warn: length 1.05 m is beyond the training bodies' 0.9998..0.9998 m" in said
