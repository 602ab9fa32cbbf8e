"""Every backbone through the same network calls and the same commands: MSPT, Erwin, Erwin-NSA, Transolver.

The backbones' own exactness (faithfulness to the official code, the NSA full-attention reduction,
streaming) is in test_erwin.py, test_nsa.py and test_transolver.py; here: what the shared network
adds (the query reading with anchors, the head, the config rules) and the pipeline end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import invoke, ok, one_line_error
from pydantic import ValidationError

from msptcli.checkpoint import load_checkpoint
from msptcli.model import BackboneNetwork, ModelConfig, build_network
from msptcli.runtime import predict_clouds, predict_queries

pytest_plugins = ["helpers"]

#: Small settings of every backbone, anchors of 512 points (a multiple of Erwin's whole balls).
SMALL = {
    "mspt": {},
    "erwin": {
        "erwin": {
            "ball_sizes": [32, 32],
            "strides": [2],
            "enc_depths": [2, 2],
            "dec_depths": [2],
            "width_multipliers": [1, 2],
        }
    },
    "erwin-nsa": {"nsa": {"selected": 2}},
    "transolver": {"transolver": {"slices": 8}},
}
BACKBONES = list(SMALL)


def network(backbone: str, *, dtype=torch.float64, anchors=True, seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = {"backbone": backbone, "width": 16, "num_heads": 2, "depth": 2, **SMALL[backbone], **overrides}
    cfg["anchors"] = {"surface": 256, "volume": 256, **overrides.get("anchors", {})} if anchors else None
    return build_network(ModelConfig(**cfg), in_features=5, out_features=3).to(dtype).eval()


def cloud(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    points = rng.random((n, 3))
    return points, np.concatenate([points, rng.standard_normal((n, 2))], axis=1)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_runs_forward_and_backward_with_anchors(backbone):
    model = network(backbone, dtype=torch.float32).train()
    anchors = [cloud(512, 1), cloud(512, 2)]
    queries = [cloud(300, 3), cloud(77, 4)]
    from msptcli.model.anchors import pack_anchors
    from msptcli.model.queries import locate_queries, place_queries

    packed = pack_anchors([a[0] for a in anchors], [a[1] for a in anchors], model.config)
    places = locate_queries(packed, [q[0] for q in queries])
    q = place_queries(packed, places, np.concatenate([q[1] for q in queries]))
    out = model(packed.features, packed.layout, queries=q, trees=packed.trees)
    assert out.shape == (377, 3) and torch.isfinite(out).all()
    out.square().mean().backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    # MSPT's last block updates only what the queries read from it; BatchNorm's statistics are buffers
    assert not [n for n in silent if not n.startswith("blocks.1.") or backbone != "mspt"], silent


@pytest.mark.parametrize("backbone", [b for b in BACKBONES if b != "mspt"])
def test_every_backbone_has_the_written_interface(backbone):
    """``model/backbones``' ``Backbone``: the protocol's parameters, ``embed`` row by row, (N, C) -> (N, C)."""
    import inspect

    from msptcli.model.anchors import pack_anchors
    from msptcli.model.backbones import Backbone

    model = network(backbone)
    body = model.backbone
    assert isinstance(body, Backbone)
    want = inspect.signature(Backbone.forward).parameters
    got = inspect.signature(type(body).forward).parameters
    assert [(p.name, p.kind, p.default) for p in got.values()] == [(p.name, p.kind, p.default) for p in want.values()]
    points, features = cloud(512, 1)
    packed = pack_anchors([points], [features], model.config)
    features = packed.features.double()
    x = body.embed(features)  # (N, C)
    assert x.shape == (512, 16)
    torch.testing.assert_close(body.embed(features[:7]), x[:7])  # every row alone
    with torch.no_grad():
        assert body(x, features[:, :3], packed.layout, packed.trees).shape == x.shape


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("reads", ["patch", "nearest"])
def test_a_query_depends_on_the_anchors_and_itself_only(backbone, reads):
    """Every backbone gets the geometry-only guarantee: the other queries and their chunking change nothing."""
    model = network(backbone, anchors={"reads": reads, "neighbours": 8})
    a_points, a_features = cloud(512, 5)
    q_points, q_features = cloud(400, 6)
    every = predict_queries(model, [a_points], [a_features], [q_points], [q_features], chunk_points=None)[0]
    some = predict_queries(model, [a_points], [a_features], [q_points[::7]], [q_features[::7]], chunk_points=9)[0]
    assert np.abs(every[::7] - some).max() < 1e-5  # predict_queries works in float32
    assert np.isfinite(every).all() and every.std() > 0


@pytest.mark.parametrize("backbone", ["erwin", "erwin-nsa", "transolver"])
def test_anchor_clouds_alone_or_in_a_batch_give_the_same_queries(backbone):
    """Padding and batching invariance of the tree-based backbones (and Transolver's per-cloud slices)."""
    model = network(backbone)
    a1, a2 = cloud(512, 7), cloud(512, 8)
    q1, q2 = cloud(90, 9), cloud(40, 10)
    alone = predict_queries(model, [a1[0]], [a1[1]], [q1[0]], [q1[1]])[0]
    both = predict_queries(model, [a2[0], a1[0]], [a2[1], a1[1]], [q2[0], q1[0]], [q2[1], q1[1]])[1]
    assert np.abs(alone - both).max() < 1e-5


@pytest.mark.parametrize("backbone", ["erwin-nsa", "transolver"])
def test_whole_cloud_backbones_predict_every_point_in_its_own_order(backbone):
    model = network(backbone, anchors=False)
    clouds = [cloud(300, 11), cloud(45, 12)]
    together = predict_clouds(model, [c[0] for c in clouds], [c[1] for c in clouds], chunk_points=64)
    alone = predict_clouds(model, [clouds[1][0]], [clouds[1][1]], chunk_points=None)[0]
    assert together[0].shape == (300, 3) and np.abs(together[1] - alone).max() < 1e-5


def test_config_rules_of_the_backbones_are_one_line_each():
    cases = [
        ({"backbone": "erwin", "anchors": None}, "backbone erwin needs anchors"),
        ({"backbone": "erwin", "anchors": {"surface": 4096, "volume": 256}}, "is not a multiple of 512"),
        ({"backbone": "transolver", "erwin": {}}, "model.erwin is set but the backbone is transolver"),
        ({"backbone": "erwin", "erwin": {"strides": [2, 2, 2]}}, "strides and dec_depths need one value"),
        ({"backbone": "erwin", "erwin": {"ball_sizes": [100, 128]}}, "erwin.ball_sizes must be powers of two"),
        ({"backbone": "erwin", "query_depth": 1}, "query_depth 1 is below the 2 ball trees"),
        ({"backbone": "resnet"}, "backbone"),
    ]
    for values, message in cases:
        with pytest.raises(ValidationError, match=message):
            ModelConfig(**values)
    transolver = build_network(ModelConfig(backbone="transolver"), in_features=11, out_features=8)
    assert isinstance(transolver, BackboneNetwork)


# --- the pipeline, every backbone ------------------------------------------------------------------------

#: The tiny config's anchors are 256 + 256: Erwin gets balls of 32 and two levels.
CLI_SETTINGS = {
    "mspt": [],
    "erwin": [
        "model.erwin.ball_sizes=[32,32]",
        "model.erwin.strides=[2]",
        "model.erwin.enc_depths=[1,2]",
        "model.erwin.dec_depths=[1]",
        "model.erwin.width_multipliers=[1,2]",
    ],
    "erwin-nsa": ["model.nsa.selected=2"],
    "transolver": ["model.transolver.slices=8"],
}


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["erwin", "erwin-nsa", "transolver"])
def test_every_backbone_trains_predicts_and_exports(backbone, prepared, design_case, tmp_path):
    """prepare (shared) -> train one epoch -> predict an STL -> export to ONNX, verified in onnxruntime."""
    run = tmp_path / "run"
    sets = [a for s in [f"model.backbone={backbone}", *CLI_SETTINGS[backbone]] for a in ("--set", s)]
    ok("train", prepared.data, "-o", run, "-c", prepared.config, "--set", "train.epochs=1", *sets)
    ckpt = load_checkpoint(run / "checkpoints" / "best.safetensors")
    assert ckpt.model.config.backbone == backbone and isinstance(ckpt.model, BackboneNetwork)

    out = tmp_path / "pred"
    ok("predict", run, design_case / "geometry.stl", "--volume-points", 500, "-o", out)
    summary = json.loads(next(out.glob("*.json")).read_text())
    assert np.isfinite(summary["coefficients"]["cd"])

    target = tmp_path / "model.onnx"
    result = ok("export", run, "-o", target)
    assert "verified in its runtime" in result.output
    sidecar = json.loads((tmp_path / "model.onnx.json").read_text())
    assert sidecar["model_config"]["backbone"] == backbone


def test_a_backbone_setting_for_another_backbone_is_one_line(prepared, tmp_path):
    result = invoke(
        "train", prepared.data, "-o", tmp_path / "run", "-c", prepared.config, "--set", "model.transolver.slices=8"
    )
    one_line_error(result, "model.transolver is set but the backbone is mspt")
    assert not (tmp_path / "run").exists()


def test_an_override_fills_a_backbone_block_left_out(tmp_path):
    """A saved config holds ``erwin: null``; ``model.erwin.KEY=VALUE`` then gives the block (defaults + KEY)."""
    from msptcli.config import load_config

    saved = tmp_path / "config.yaml"
    saved.write_text(load_config(None).model_dump_json())  # every section, erwin: null among them (JSON is YAML)
    cfg = load_config(saved, ["model.backbone=erwin", "model.erwin.ball_sizes=[64,64]"])
    assert cfg.model.erwin_settings.ball_sizes == (64, 64) and cfg.model.erwin_settings.strides == (4,)
