"""Time attention (``model.time_axis: attention``): exact against the dense reference, the input columns of every
level, streaming, the config rules, and a transient run trained, rolled out and exported with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from helpers import ROOT, invoke, ok, one_line_error

from msptcli.checkpoint import load_checkpoint
from msptcli.config import TransientConfig, load_config
from msptcli.data.features import IN_FEATURES, Channels
from msptcli.data.transient import input_width, step_columns, time_levels
from msptcli.errors import ConfigError
from msptcli.model import ModelConfig, build_layout, build_network
from msptcli.model.reference import dense_forward, dense_spacetime_forward
from msptcli.model.spacetime import SpaceTimeMSPT, TimeLevels

SIZES = [300, 37, 5, 1, 130]  # none divisible by its K; a single point; several clouds
CHANNELS = Channels.from_fields({"volume": {"U": 3, "p": 1}})


def make(history=2, seed=0, **overrides) -> tuple[SpaceTimeMSPT, TimeLevels]:
    transient = TransientConfig(history=history)
    levels = time_levels(transient, CHANNELS)
    torch.manual_seed(seed)
    config = ModelConfig(**{"width": 24, "num_heads": 3, "depth": 2, "anchors": None, "time_axis": "attention",
                            **overrides})  # fmt: skip
    width = input_width(transient, CHANNELS)
    model = build_network(config, in_features=width, out_features=4, levels=levels)
    return model.to(torch.float64), levels


def randn(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_step_columns_tile_the_inputs_and_name_every_level():
    transient = TransientConfig(history=2)  # advection U by default: each history increment and its carried copy
    cols = step_columns(transient, CHANNELS)
    parts = [cols.static, cols.current, cols.derivatives, *cols.history, *cols.carried, cols.conditions]
    assert [i for r in parts for i in r] == list(range(cols.width)) and cols.width == input_width(transient, CHANNELS)
    levels = cols.time_levels()
    assert levels.count == 3 and levels.shared == (*range(IN_FEATURES), *cols.conditions)
    assert levels.current == (*range(11, 15), *range(15, 28))  # f(t), then h Df, h^2 Lf, log h
    assert levels.past == ((*cols.history[0], *cols.carried[0]), (*cols.history[1], *cols.carried[1]))
    plain = step_columns(TransientConfig(history=1, advection=None, derivatives=False), CHANNELS)
    assert plain.carried == () and len(plain.derivatives) == 0
    assert plain.time_levels().past == (tuple(plain.history[0]),)
    assert time_levels(TransientConfig(history=0), CHANNELS) is None and time_levels(None, CHANNELS) is None


@pytest.mark.parametrize(("history", "overrides"), [(1, {}), (2, {"num_supernodes": 2}), (3, {"num_patches": 4})])
def test_forward_equals_the_dense_reference(history, overrides):
    model, levels = make(history=history, **overrides)
    features = randn(sum(SIZES), model.in_features)
    with torch.no_grad():
        out = model(features, build_layout(SIZES, model.config))
        reference = dense_spacetime_forward(model, features, SIZES, levels)
    assert out.shape == (sum(SIZES), 4) and torch.isfinite(out).all()
    assert (out - reference).abs().max() < 1e-10


def test_reference_check_can_fail():
    model, levels = make()
    features = randn(sum(SIZES), model.in_features)
    swapped = TimeLevels(levels.shared, levels.current, levels.past[::-1])  # the lags read in the wrong order
    with torch.no_grad():
        out = model(features, build_layout(SIZES, model.config))
        assert (out - dense_spacetime_forward(model, features, SIZES, swapped)).abs().max() > 1e-3


def test_every_level_reads_its_own_columns_and_points_mix_only_in_space():
    model, levels = make(history=2)
    features = randn(300, model.in_features)
    layout = build_layout([300], model.config)
    with torch.no_grad():
        base = model(features, layout)
        for cols in (levels.shared, levels.current, *levels.past):
            moved = features.clone()
            moved[:, list(cols)] += 1.0
            assert (model(moved, layout) - base).abs().max() > 1e-4  # every level reaches the output
        # without the spatial blocks' mixing (one point per cloud), a point's output is its own levels' alone
        single = model(features[:5], build_layout([1] * 5, model.config))
        for i in range(5):
            alone = model(features[i : i + 1], build_layout([1], model.config))
            torch.testing.assert_close(single[i : i + 1], alone, rtol=0, atol=1e-12)


def test_streaming_equals_the_whole_pass_and_gradients_flow():
    model, _ = make(history=2, num_patches=16)
    features = randn(sum(SIZES), model.in_features)
    layout = build_layout(SIZES, model.config)
    with torch.no_grad():
        whole = model(features, layout)
        streamed = model(features, layout, chunk_points=64)
    assert (whole - streamed).abs().max() < 1e-10
    with pytest.raises(ValueError, match=r"torch\.no_grad"):
        model(features, layout, chunk_points=64)
    model(features, layout).square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.lag.grad.abs().max() > 0 and model.blocks[0].time.qkv.weight.grad.abs().max() > 0
    checkpointed = make(history=2, num_patches=16, checkpointing=True)[0]
    checkpointed.load_state_dict(model.state_dict())
    torch.testing.assert_close(checkpointed(features, layout), model(features, layout), rtol=0, atol=1e-12)


def test_one_level_of_history_differs_from_the_plain_network():
    """A sanity check that the variant is its own network: the plain MSPT on the same inputs is not it."""
    model, _ = make(history=1)
    plain = build_network(model.config.model_copy(update={"time_axis": "channels"}), in_features=model.in_features,
                          out_features=4).to(torch.float64)  # fmt: skip
    features = randn(300, model.in_features)
    layout = build_layout([300], model.config)
    with torch.no_grad():
        assert dense_forward(plain, features, [300]).shape == model(features, layout).shape
    assert sum(p.numel() for p in model.parameters()) > sum(p.numel() for p in plain.parameters())


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"model.time_axis": "attention"}, "attends over a transient step's history, but data.transient is not set"),
        ({"model.time_axis": "attention", "data.transient": {"history": 0}}, "data.transient.history is 0"),
        ({"model.time_axis": "attention", "model.backbone": "erwin", "data.transient": {}}, "not backbone erwin"),
        ({"model.time_axis": "attention", "model.supernodes": "carried"}, "config: model.supernodes: 'carried' was"),
    ],
)
def test_config_errors_are_one_line(values, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(values=values)
    assert "\n" not in str(err.value)


def test_the_network_needs_its_time_levels():
    with pytest.raises(ValueError, match="needs the time levels"):
        build_network(ModelConfig(time_axis="attention", anchors=None), in_features=38, out_features=4)
    levels = time_levels(TransientConfig(history=1), CHANNELS)
    with pytest.raises(ValueError, match="read 38 input columns, the network takes 40"):
        build_network(ModelConfig(time_axis="attention", anchors=None), in_features=40, out_features=4, levels=levels)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny transient run with time attention on the example cases."""
    work = tmp_path_factory.mktemp("spacetime")
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"reference_velocity": 1.0, "transient": {"fields": ["U", "p"], "history": 1, "noise": 0.1},
                 "split": {"train": ["case_0000"], "val": ["case_0002"]}},
        "model": {"width": 16, "num_heads": 2, "depth": 1, "time_axis": "attention"},
        "train": {"epochs": 1, "warmup_epochs": 0.5, "val_every": 1, "num_workers": 0},
    }))  # fmt: skip
    ok("prepare", str(ROOT / "examples" / "transient" / "case_*"), "-o", work / "data", "-c", config)
    ok("train", work / "data", "-o", work / "run")
    return work


def test_a_run_with_time_attention_trains_rolls_out_and_exports(run, tmp_path):
    ckpt = load_checkpoint(run / "run")
    assert isinstance(ckpt.model, SpaceTimeMSPT) and ckpt.config.model.time_axis == "attention"
    rows = (run / "run" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    last = dict(zip(header, rows[-1].split(","), strict=True))
    assert np.isfinite(float(last["val_rel_l2/volume/U"]))
    series = ROOT / "examples" / "transient" / "case_0002" / "series.pvd"
    result = ok("rollout", run / "run", series, "--steps", 3, "-o", tmp_path / "roll")
    summary = json.loads((tmp_path / "roll" / "case_0002.json").read_text())
    assert summary["steps"] == 3 and all(np.isfinite(summary["relative_l2"]["U"])), result.output
    pytest.importorskip("onnxruntime")
    result = ok("export", run / "run", "-o", tmp_path / "step.onnx")
    assert "verified" in result.output
    assert json.loads((tmp_path / "step.onnx.json").read_text())["model_config"]["time_axis"] == "attention"


def test_a_steady_dataset_refuses_time_attention_in_one_line(run, tmp_path):
    config = tmp_path / "steady.yaml"
    config.write_text(yaml.safe_dump({"model": {"time_axis": "attention"}}))
    one_line_error(invoke("train", run / "data", "-o", tmp_path / "r", "-c", config), "data.transient is not set")


def test_step_columns_describe_the_inputs_a_step_builds(run):
    """The column ranges are where step_inputs writes each part (real snapshots, history 1, advection on)."""
    from msptcli.data.manifest import read_manifest
    from msptcli.data.sample import load_sample
    from msptcli.train.transient import snapshot, step_arrays

    ckpt = load_checkpoint(run / "run")
    manifest = read_manifest(run / "data")
    sample = load_sample(run / "data" / manifest.split("val")[0].file)
    transient, channels = ckpt.config.data.transient, ckpt.channels
    inputs, _ = step_arrays(sample, manifest, channels, transient, 4)
    cols = step_columns(transient, channels)
    assert inputs.shape[1] == cols.width and len(cols.carried) == 1
    mean = np.concatenate([manifest.stats.volume[n].mean for n, _ in channels.volume])
    std = np.concatenate([manifest.stats.volume[n].std for n, _ in channels.volume])
    inc = np.concatenate([manifest.stats.increments[n].std for n, _ in channels.volume])
    now, before = snapshot(sample, channels, 4), snapshot(sample, channels, 3)
    np.testing.assert_allclose(inputs[:, list(cols.current)] * std + mean, now, rtol=1e-4, atol=1e-4 * std.max())
    moving = inc > 1e-6  # w of the 2D flow never changes: its columns are 0
    np.testing.assert_allclose((inputs[:, list(cols.history[0])] * inc)[:, moving], (now - before)[:, moving],
                               rtol=1e-4, atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(inputs[:, list(cols.static)][:, 10], sample.arrays["mesh/wall"])
