"""Variance-adaptive patches (MATEY on the ball tree): the cut, and PMSA over patches of several sizes."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from msptcli.errors import InvalidInputError
from msptcli.geometry import ball_tree_order
from msptcli.geometry.adaptive import adaptive_cut, uniform_cut
from msptcli.model import MSPT, ModelConfig, build_layout
from msptcli.model.reference import dense_forward

SIZES = [300, 517, 64]


def structured_cloud(n: int, seed: int) -> torch.Tensor:
    """(n, 6) float64 features in tree order: coordinates, then channels that vary only where x > 0.4."""
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(n, 3))
    noise = rng.normal(size=(n, 3)) * (points[:, :1] > 0.4)
    features = np.concatenate([points, noise], axis=1)
    return torch.from_numpy(features[np.asarray(ball_tree_order(points))])


def batch(sizes=SIZES):
    return torch.cat([structured_cloud(n, seed) for seed, n in enumerate(sizes)])


def make(seed=0, **overrides) -> MSPT:
    torch.manual_seed(seed)
    cfg = dict(anchors=None, width=24, num_heads=3, depth=2, patch_size=16, adaptive={"refine": 1})
    cfg.update(overrides)
    return MSPT(ModelConfig(**cfg), in_features=6, out_features=2).double()


# --- the cut -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "level", "refine"), [(300, 4, 1), (517, 5, 2), (64, 3, 3), (1000, 0, 2), (9, 3, 1)])
def test_adaptive_cut_tiles_the_order_within_the_budget(n, level, refine):
    values = np.random.default_rng(n).normal(size=(n, 2)) ** 3
    cut = adaptive_cut(values, level, refine=refine, min_points=2 if n > 16 else 1)
    bounds = cut.bounds()
    assert bounds[0] == 0 and bounds[-1] == n and (np.diff(bounds) >= 1).all()  # a tiling, every patch non-empty
    assert len(cut) == 1 << level  # the budget is used exactly (it is reachable in all of these)
    assert (cut.depth >= max(level - refine, 0)).all() and (cut.depth <= level + refine).all()
    for m, a, lo, hi in zip(cut.depth, cut.index, bounds[:-1], bounds[1:], strict=True):  # each patch is a subtree
        assert (lo, hi) == ((a * n) >> m, ((a + 1) * n) >> m)
    again = adaptive_cut(values.copy(), level, refine=refine, min_points=2 if n > 16 else 1)
    assert np.array_equal(again.depth, cut.depth) and np.array_equal(again.index, cut.index)  # deterministic


def test_adaptive_cut_refines_where_the_values_vary():
    features = structured_cloud(4096, seed=3).numpy()
    cut = adaptive_cut(features[:, 3:], 6, refine=2)
    bounds = cut.bounds()
    varying = np.array([(features[lo:hi, 3:] != 0).mean() for lo, hi in itertools.pairwise(bounds)])
    size = np.diff(bounds)
    assert size[varying > 0.5].mean() < 0.5 * size[varying == 0].mean()  # small patches where the field varies
    assert len(np.unique(cut.depth)) >= 3  # several depths


def test_adaptive_cut_without_variance_stays_coarse_and_keeps_min_points():
    flat = np.zeros((256, 2))
    cut = adaptive_cut(flat, 4, refine=1)  # all scores tie: coarser nodes split first, giving the uniform cut
    assert np.array_equal(cut.bounds(), uniform_cut(256, 4).bounds())
    assert np.array_equal(uniform_cut(256, 4).bounds(), np.arange(0, 257, 16))
    tiny = adaptive_cut(np.random.default_rng(0).normal(size=(8, 1)), 3, refine=1, min_points=2)
    assert (np.diff(tiny.bounds()) >= 2).all() and len(tiny) < 8  # min_points wins over the budget
    with pytest.raises(InvalidInputError, match="cannot cut 8 points into 2\\^4"):
        adaptive_cut(np.zeros((8, 1)), 4, refine=1)


# --- PMSA over patches of several sizes ----------------------------------------------------------


@pytest.mark.parametrize(("q", "heads", "pooling"), [(1, 1, "mean"), (2, 3, "max"), (4, 2, "softmax")])
@pytest.mark.parametrize("refine", [1, 2])
def test_adaptive_pmsa_equals_dense_reference(q, heads, pooling, refine):
    model = make(num_heads=heads, num_supernodes=q, pooling=pooling, adaptive={"refine": refine})
    features = batch()
    layout = build_layout(SIZES, model.config, features)
    assert len(np.unique(layout.patch_sizes)) > 3 and layout.whole.groups  # patches of several sizes, in groups
    with torch.no_grad():
        ours = model(features, layout)
        reference = dense_forward(model, features, SIZES)  # the same cut, dense masked attention
    assert torch.allclose(ours, reference, rtol=0, atol=1e-10), (ours - reference).abs().max()
    uniform = model.config.model_copy(update={"adaptive": None})
    with torch.no_grad():  # the check can fail: uniform patches give other outputs
        assert (model(features, build_layout(SIZES, uniform)) - reference).abs().max() > 1e-4


def test_adaptive_groups_give_the_padded_path_values_and_gradients():
    model = make(num_supernodes=2)
    features = batch()
    layout = build_layout(SIZES, model.config, features)
    padded = replace(layout, whole=replace(layout.whole, groups=(), group_slot=None))  # every patch padded to L
    grouped_out = model(features, layout)
    padded_out = model(features, padded)
    assert torch.allclose(grouped_out, padded_out, rtol=0, atol=1e-12)
    a = torch.autograd.grad(grouped_out.square().sum(), list(model.parameters()))
    b = torch.autograd.grad(padded_out.square().sum(), list(model.parameters()))
    for ga, gb in zip(a, b, strict=True):
        assert torch.allclose(ga, gb, rtol=1e-9, atol=1e-12)


def test_adaptive_batching_is_invariant():
    model = make(num_supernodes=2)
    cloud = structured_cloud(517, seed=1)
    with torch.no_grad():
        alone = model(cloud, build_layout([517], model.config, cloud))
        for other in (structured_cloud(300, seed=0), structured_cloud(2000, seed=5)):
            for first in (True, False):
                clouds = [cloud, other] if first else [other, cloud]
                packed = torch.cat(clouds)
                out = model(packed, build_layout([len(c) for c in clouds], model.config, packed))
                ours = out[:517] if first else out[len(other) :]
                assert torch.allclose(ours, alone, rtol=0, atol=1e-12)


@pytest.mark.parametrize("chunk_points", [1, 40, 333, 10_000])
def test_adaptive_streaming_equals_full_forward(chunk_points):
    model = make(num_supernodes=2, depth=3)
    features = batch()
    layout = build_layout(SIZES, model.config, features)
    with torch.no_grad():
        full = model(features, layout)
        streamed = model(features, layout, chunk_points=chunk_points)
    assert torch.allclose(streamed, full, rtol=0, atol=1e-12)


def test_adaptive_layout_needs_features_and_a_channel():
    config = ModelConfig(anchors=None, patch_size=16, adaptive={"refine": 1})
    with pytest.raises(InvalidInputError, match="need the features"):
        build_layout([300], config)
    with pytest.raises(InvalidInputError, match="from_channel 9 leaves none of the 6 inputs"):
        build_layout(
            [300], ModelConfig(anchors=None, patch_size=16, adaptive={"refine": 1, "from_channel": 9}), batch([300])
        )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rotate_trees": True}, "rotate_trees do not combine"),
        ({"backbone": "transolver"}, "not to backbone transolver"),
        ({"adaptive": {"refine": 0}}, "greater than or equal to 1"),
    ],
)
def test_adaptive_config_errors(overrides, message):
    with pytest.raises(ValidationError, match=message):
        ModelConfig(**{"adaptive": {"refine": 1}, **overrides})


def test_adaptive_anchor_model_exports_and_verifies(tmp_path, fmt="onnx"):
    """The exported graph takes the layout as inputs: adaptive cuts of other clouds run through it too."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from msptcli.runtime import export_model, random_example, verify_export

    torch.manual_seed(0)
    config = ModelConfig(width=32, num_heads=4, depth=2, anchors={"surface": 64, "volume": 64},
                         adaptive={"refine": 2})  # fmt: skip
    model = MSPT(config, in_features=11, out_features=2)
    path = export_model(model, tmp_path / f"m.{fmt}", fmt=fmt)
    example = random_example(model, (700, 333, 41), seed=3)
    assert len(set(np.diff(example.anchors.layout.patch_start).tolist())) > 1  # the example's patches differ in size
    assert verify_export(path, model, example) < 1e-4
