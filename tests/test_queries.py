"""Anchor-query attention: a query's output depends on the anchors and itself alone; on an anchor it is the anchor's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from msptcli.errors import InvalidInputError
from msptcli.model import MSPT, ModelConfig, build_layout, pack_clouds
from msptcli.model.queries import group_queries, query_patches

SIZES = [300, 45]  # two clouds of anchors, none a power of two


def make(dtype=torch.float64, **overrides) -> MSPT:
    torch.manual_seed(0)
    cfg = {"width": 24, "num_heads": 3, "depth": 2, **overrides}
    return MSPT(ModelConfig(**cfg), in_features=4, out_features=2).to(dtype)


def clouds(seed: int = 0):
    rng = np.random.default_rng(seed)
    points = [rng.random((n, 3)) for n in SIZES]
    features = [np.concatenate([p, np.sin(5 * p[:, :1])], axis=1).astype(np.float32) for p in points]
    return points, features  # float32 features, as pack_clouds stores them


def run(model, packed, anchors_sorted, query_points, query_features):
    patches = query_patches(anchors_sorted, packed.layout, query_points)
    groups = group_queries(patches, packed.layout.num_patches)
    feats = torch.from_numpy(np.concatenate(query_features)).to(torch.float64)
    with torch.no_grad():
        return model.forward_queries(packed.features.double(), packed.layout, feats, groups)


@pytest.mark.parametrize(
    "variant", [{}, {"num_supernodes": 2, "pooling": "softmax"}, {"supernodes": "carried", "num_supernodes": 2}]
)
def test_a_query_on_an_anchor_gets_the_anchors_output(variant):
    model = make(**variant)
    points, features = clouds()
    packed = pack_clouds(points, features, model.config)
    sorted_points = np.split(np.concatenate(points)[packed.order], np.cumsum(SIZES)[:-1])
    anchors_out, queries_out = run(model, packed, sorted_points, points, features)
    with torch.no_grad():
        assert torch.allclose(anchors_out, model(packed.features.double(), packed.layout), rtol=0, atol=1e-12)
    # queries in the clouds' own order; anchors in tree order
    assert np.allclose(queries_out.numpy(), packed.unpack(anchors_out.numpy()), rtol=0, atol=1e-10)


def test_a_query_does_not_depend_on_the_other_queries_or_their_chunks():
    model = make(num_supernodes=2)
    points, features = clouds()
    packed = pack_clouds(points, features, model.config)
    sorted_points = np.split(np.concatenate(points)[packed.order], np.cumsum(SIZES)[:-1])
    rng = np.random.default_rng(1)
    queries = [rng.random((m, 3)) for m in (500, 80)]
    q_features = [np.concatenate([q, np.cos(3 * q[:, :1])], axis=1) for q in queries]
    _, together = run(model, packed, sorted_points, queries, q_features)
    assert not torch.allclose(together[0], together[1])
    for chunk in (1, 7, 128):  # the same queries a few at a time: cloud 0's first 256, cloud 1's first 40
        parts = []
        for start in range(0, 256, chunk):
            stop = min(start + chunk, 256)
            qs = [queries[0][start:stop], queries[1][:0]]
            fs = [q_features[0][start:stop], q_features[1][:0]]
            parts.append(run(model, packed, sorted_points, qs, fs)[1])
        assert torch.allclose(torch.cat(parts), together[:256], rtol=0, atol=1e-10)
    alone = run(
        model, packed, sorted_points, [queries[0][:0], queries[1][:40]], [q_features[0][:0], q_features[1][:40]]
    )
    assert torch.allclose(alone[1], together[500:540], rtol=0, atol=1e-10)


def test_queries_train_the_network():
    model = make(torch.float32)
    points, features = clouds()
    packed = pack_clouds(points, features, model.config)
    sorted_points = np.split(np.concatenate(points)[packed.order], np.cumsum(SIZES)[:-1])
    patches = query_patches(sorted_points, packed.layout, points)
    groups = group_queries(patches, packed.layout.num_patches)
    feats = torch.from_numpy(np.concatenate(features)).float()
    _, out = model.forward_queries(packed.features, packed.layout, feats, groups)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_grouping_and_its_errors():
    groups = group_queries(np.array([2, 0, 2, 2]), 4)
    assert groups.slots.tolist() == [[1, 0, 0], [0, 0, 0], [0, 2, 3], [0, 0, 0]]
    assert groups.query_slot.tolist() == [6, 0, 7, 8]
    with pytest.raises(InvalidInputError, match=r"lie in \[0, 4\)"):
        group_queries(np.array([4]), 4)
    layout = build_layout([10], ModelConfig(num_patches=2))
    with pytest.raises(InvalidInputError, match="anchor clouds"):
        query_patches([np.zeros((10, 3))], layout, [])
