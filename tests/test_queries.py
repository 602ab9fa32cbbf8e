"""Anchor-query attention: a query's output depends on the anchors and itself alone; on an anchor it is the anchor's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from msptcli.errors import InvalidInputError
from msptcli.model import MSPT, ModelConfig
from msptcli.model.anchors import pack_anchors
from msptcli.model.queries import group_queries, locate_queries, nearest_anchors, place_queries, window_log_weight
from msptcli.runtime import predict_queries

SIZES = [300, 45]  # two clouds of anchors, none a power of two


def make(dtype=torch.float64, **overrides) -> MSPT:
    torch.manual_seed(0)
    cfg = {"width": 24, "num_heads": 3, "depth": 3, "anchors": {"reads": "patch"}, **overrides}  # NEAREST: the other
    return MSPT(ModelConfig(**cfg), in_features=4, out_features=2).to(dtype)


def clouds(seed: int = 0, sizes=SIZES):
    rng = np.random.default_rng(seed)
    points = [rng.random((n, 3)) for n in sizes]
    features = [np.concatenate([p, np.sin(5 * p[:, :1])], axis=1).astype(np.float32) for p in points]
    return points, features  # float32 features, as the packers store them


def featurise(queries):
    return [np.concatenate([q, np.cos(3 * q[:, :1])], axis=1).astype(np.float32) for q in queries]


def run(model, anchors, query_points, query_features, *, outputs=False):
    """Queries' outputs (and, with ``outputs``, the anchors' in the packed order)."""
    queries = place_queries(anchors, locate_queries(anchors, query_points), np.concatenate(query_features))
    queries = queries.to("cpu", torch.float64)
    with torch.no_grad():
        keys, anchor_out = model.read_anchors(anchors.features.double(), anchors.layout, anchors.trees, outputs=outputs)
        out = model.answer_queries(keys, anchors.layout, queries)
    return (anchor_out, out) if outputs else out


VARIANTS = [
    {},
    {"num_supernodes": 2, "pooling": "softmax"},
    {"rotate_trees": True, "num_supernodes": 2},
]


@pytest.mark.parametrize("variant", VARIANTS)
def test_a_query_on_an_anchor_gets_the_anchors_output(variant):
    model = make(**variant)
    points, features = clouds()
    anchors = pack_anchors(points, features, model.config)
    anchors_out, queries_out = run(model, anchors, points, features, outputs=True)
    if not variant.get("rotate_trees"):  # one tree: the anchors run exactly the plain MSPT forward pass
        with torch.no_grad():
            plain = model(anchors.features.double(), anchors.layout)
        assert torch.allclose(anchors_out, plain, rtol=0, atol=1e-12)
    order = np.concatenate([start + np.arange(n) for start, n in zip([0, SIZES[0]], SIZES, strict=True)])
    given = np.concatenate(points)
    packed_rows = nearest_anchors(anchors, points)  # every query is an anchor: its own packed row
    assert np.allclose(np.concatenate(anchors.points)[packed_rows], given[order], rtol=0, atol=0)
    assert np.allclose(queries_out.numpy(), anchors_out.numpy()[packed_rows], rtol=0, atol=1e-10)


def test_rotated_trees_cut_the_anchors_into_other_patches():
    model = make(rotate_trees=True, num_patches=8)
    points, features = clouds()
    anchors = pack_anchors(points, features, model.config)
    assert anchors.trees.count == 2
    reorder, restore = anchors.trees.reorder[1], anchors.trees.restore[1]
    assert torch.equal(reorder[restore], torch.arange(sum(SIZES)))  # a permutation and its inverse
    patch = np.repeat(np.arange(anchors.layout.num_patches), np.diff(anchors.layout.patch_start))
    same = patch[anchors.tree_rank[0]] == patch[anchors.tree_rank[1]]
    assert same.mean() < 0.5  # most anchors change patch between the two trees
    model_one = make(num_patches=8)  # the same weights without the rotated tree give other outputs
    model_one.load_state_dict(model.state_dict())
    q = [np.random.default_rng(3).random((50, 3)), np.zeros((0, 3))]
    a_one = pack_anchors(points, features, model_one.config)
    assert not torch.allclose(run(model, anchors, q, featurise(q)), run(model_one, a_one, q, featurise(q)))


NEAREST = {"anchors": {"reads": "nearest", "neighbours": 12}}
FINAL = {"query_reading": "final", "query_depth": 2}  # the queries read the anchors' final features
BLEND = {"anchors": {"reads": "blend", "neighbours": 16}}  # the two nearest patches, blended
OWN = {"anchor_blocks": 1}  # one block of the anchors' own before the blocks the queries read


@pytest.mark.parametrize(
    "variant",
    [
        {"num_supernodes": 2},
        {"rotate_trees": True},
        NEAREST,
        FINAL,
        {**FINAL, **NEAREST, "rotate_trees": True},
        {**OWN, "rotate_trees": True},
        BLEND,
        {**BLEND, "num_supernodes": 2},
    ],
)
def test_a_query_does_not_depend_on_the_other_queries_or_their_chunks(variant):
    model = make(**variant)
    points, features = clouds()
    anchors = pack_anchors(points, features, model.config)
    rng = np.random.default_rng(1)
    queries = [rng.random((500, 3)), rng.random((80, 3))]
    q_features = featurise(queries)
    together = run(model, anchors, queries, q_features)
    assert not torch.allclose(together[0], together[1])
    for chunk in (1, 7, 128):  # the same queries a few at a time: cloud 0's first 256
        parts = []
        for start in range(0, 256, chunk):
            stop = min(start + chunk, 256)
            qs = [queries[0][start:stop], queries[1][:0]]
            fs = [q_features[0][start:stop], q_features[1][:0]]
            parts.append(run(model, anchors, qs, fs))
        assert torch.allclose(torch.cat(parts), together[:256], rtol=0, atol=1e-10)
    alone = run(model, anchors, [queries[0][:0], queries[1][:40]], [q_features[0][:0], q_features[1][:40]])
    assert torch.allclose(alone, together[500:540], rtol=0, atol=1e-10)


@pytest.mark.parametrize(
    "variant",
    [
        {"rotate_trees": True},
        {**NEAREST, "rotate_trees": True},
        {**FINAL, "rotate_trees": True},
        {**OWN, **NEAREST},
        {**BLEND, **FINAL},
    ],
)
def test_streaming_predict_in_float32_does_not_depend_on_chunks_or_other_queries(variant):
    model = make(torch.float32, **variant)
    points, features = clouds()
    rng = np.random.default_rng(2)
    queries = [rng.random((3000, 3)), rng.random((700, 3))]
    q_features = featurise(queries)
    whole = predict_queries(model, points, features, queries, q_features, chunk_points=None)
    for chunk in (1000, 333):
        parts = predict_queries(model, points, features, queries, q_features, chunk_points=chunk)
        for a, b in zip(parts, whole, strict=True):
            assert np.allclose(a, b, rtol=0, atol=1e-5)
    few = predict_queries(model, points, features, [queries[0][:5], queries[1][:2]], [q_features[0][:5],
                          q_features[1][:2]])  # fmt: skip
    assert np.allclose(few[0], whole[0][:5], rtol=0, atol=1e-5)
    assert np.allclose(few[1], whole[1][:2], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "variant",
    [
        {},
        {"rotate_trees": True, "checkpointing": True},
        {**NEAREST, "num_supernodes": 2},
        {**FINAL, **NEAREST},
        {"anchor_blocks": 2, "rotate_trees": True},
        BLEND,
    ],
)
def test_queries_train_the_network(variant):
    model = make(torch.float32, **variant)
    points, features = clouds()
    anchors = pack_anchors(points, features, model.config)
    queries = place_queries(anchors, locate_queries(anchors, points), np.concatenate(features))
    out = model(anchors.features, anchors.layout, queries=queries, trees=anchors.trees)
    assert out.shape == (sum(SIZES), 2)
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_grouping_and_its_errors():
    groups = group_queries(np.array([2, 0, 2, 2]), np.zeros(4))  # only the patches read have groups
    assert groups.slots.tolist() == [[1, 0, 0], [0, 2, 3]]
    assert groups.query_slot.tolist() == [3, 0, 4, 5]
    assert groups.patch.tolist() == [0, 2]
    # every cloud as many groups: cloud 1 gets a padded one, reading its first patch
    groups = group_queries(np.array([0, 1, 0, 3]), np.array([0, 0, 1, 1]))
    assert groups.slots.tolist() == [[0, 2], [1, 0], [3, 0], [0, 0]]
    assert groups.query_slot.tolist() == [0, 2, 1, 4]
    assert groups.patch.tolist() == [0, 1, 3, 2]
    assert (groups.first_cloud, groups.per_cloud) == (0, 2)
    assert group_queries(np.array([3]), np.array([0, 0, 1, 1])).first_cloud == 1
    with pytest.raises(InvalidInputError, match=r"lie in \[0, 4\)"):
        group_queries(np.array([4]), np.zeros(4))
    points, features = clouds(sizes=[10])
    anchors = pack_anchors(points, features, ModelConfig(num_patches=2))
    with pytest.raises(InvalidInputError, match="query clouds"):
        nearest_anchors(anchors, [])
    with pytest.raises(InvalidInputError, match="anchor cloud 0"):
        pack_anchors([np.zeros((10, 3))], [np.zeros((9, 4))], ModelConfig())


def test_config_refuses_what_cannot_work():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="rotate_trees needs anchors"):
        ModelConfig(anchors=None, rotate_trees=True)
    with pytest.raises(ValidationError, match="power of two"):
        ModelConfig(anchors={"surface": 1000})
    with pytest.raises(ValidationError, match="query_reading: final needs anchors"):
        ModelConfig(anchors=None, query_reading="final")
    with pytest.raises(ValidationError, match="query_depth 1 is below the 2 ball trees"):
        ModelConfig(query_reading="final", query_depth=1, rotate_trees=True)
    assert ModelConfig(query_depth=1, rotate_trees=True).query_reading == "blocks"  # reading every block: unused
    with pytest.raises(ValidationError, match="reads: blend reads the patches of one ball tree"):
        ModelConfig(rotate_trees=True, **BLEND)
    for bad in ({"anchors": None}, {"query_reading": "final"}, {"backbone": "transolver"}):
        with pytest.raises(ValidationError, match="anchor_blocks are blocks of the anchors"):
            ModelConfig(anchor_blocks=1, **bad)


def test_reading_the_final_features_has_its_own_blocks():
    blocks, final = make(), make(query_reading="final", query_depth=2)
    assert len(blocks.readers) == 0 and len(final.readers) == 2
    points, features = clouds()
    anchors = pack_anchors(points, features, final.config)
    keys, _ = final.read_anchors(anchors.features.double(), anchors.layout, anchors.trees)
    assert len(keys) == 2  # one set of keys per reading block, of the final features: not one per MSPT block
    with torch.no_grad():  # the queries read the last block's output: changing the last block changes them
        before = run(final, anchors, points, features)
        final.blocks[-1].mlp.fc2.weight.mul_(1.5)  # (adding a constant would shift each row, which LN removes)
        after = run(final, anchors, points, features)
    assert not torch.allclose(before, after)


def test_the_anchors_own_blocks_come_before_the_blocks_the_queries_read():
    plain, own = make(), make(anchor_blocks=2)
    assert len(own.anchor_blocks) == 2 and len(plain.anchor_blocks) == 0
    assert sum(p.numel() for p in own.parameters()) == sum(p.numel() for p in plain.parameters()) + sum(
        p.numel() for p in own.anchor_blocks.parameters()
    )
    points, features = clouds()
    anchors = pack_anchors(points, features, own.config)
    keys, _ = own.read_anchors(anchors.features.double(), anchors.layout, anchors.trees)
    assert len(keys) == own.config.depth  # the queries read the depth blocks only, as without them
    with torch.no_grad():  # the first reading meets the anchors after their own blocks: changing one changes it
        before = run(own, anchors, points, features)
        own.anchor_blocks[0].mlp.fc2.weight.mul_(1.5)
        after = run(own, anchors, points, features)
        assert not torch.allclose(before, after)
        x = own.embed(anchors.features.double())  # the anchors' outputs pass E + L blocks, as forward does
        for block in [*own.anchor_blocks, *own.blocks]:
            x = block(x, anchors.layout)
        _, outputs = own.read_anchors(anchors.features.double(), anchors.layout, anchors.trees, outputs=True)
        assert torch.allclose(outputs, own.head(own.norm(x)), rtol=0, atol=1e-10)
        assert torch.allclose(outputs, own(anchors.features.double(), anchors.layout), rtol=0, atol=1e-10)


def test_the_blend_reads_one_patch_inside_it_and_is_continuous_across_its_boundary():
    patch, blend = make(), make(anchors={"reads": "blend", "neighbours": 6})
    blend.load_state_dict(patch.state_dict())  # the same weights: only the reading differs
    points, features = clouds(sizes=[600])
    a_patch, a_blend = pack_anchors(points, features, patch.config), pack_anchors(points, features, blend.config)
    line = np.linspace([0.05, 0.5, 0.5], [0.95, 0.5, 0.5], 4001)  # a line through the cloud, crossing patches
    places = locate_queries(a_blend, [line])
    inside = places.pair_weight == 0  # no second patch within reach: the patch reading exactly
    assert 0 < inside.sum() < len(line)
    on = run(patch, a_patch, [line], featurise([line]))
    mixed = run(blend, a_blend, [line], featurise([line]))
    assert torch.allclose(mixed[inside], on[inside], rtol=0, atol=1e-10)
    assert not torch.allclose(mixed[~inside], on[~inside])
    fine = np.linspace(line[0], line[-1], 4 * len(line) - 3)  # the same line, 4x finer

    def largest_step(model, anchors, points):
        out = run(model, anchors, [points], featurise([points]))
        return float((out[1:] - out[:-1]).abs().max())

    # the patch reading jumps where the nearest patch changes, however fine the line; the blend does not jump
    assert largest_step(patch, a_patch, fine) > 0.9 * largest_step(patch, a_patch, line)
    assert largest_step(blend, a_blend, fine) < 0.5 * largest_step(blend, a_blend, line)
    assert largest_step(blend, a_blend, line) < 0.3 * largest_step(patch, a_patch, line)
    w = places.pair_weight[~inside]  # where the two nearest patches are about equally near, both weigh about 1
    assert (w > 0).all() and (w <= 1).all() and w.max() > 0.95


def test_the_window_falls_to_zero_at_the_next_anchor():
    d = np.array([[0.0, 0.5, 1.0], [0.2, np.inf, np.inf]])
    w = window_log_weight(d, np.array([1.0, np.inf]))
    assert np.allclose(np.exp(w[0]), [1.0, 0.75**2, 0.0])
    assert w[1, 0] == 0.0 and np.isneginf(w[1, 1:]).all()  # fewer anchors than k: the present ones, unwindowed


def test_nearest_queries_read_their_nearest_anchors_in_their_own_cloud():
    config = ModelConfig(**NEAREST)
    points, features = clouds()
    anchors = pack_anchors(points, features, config)
    rng = np.random.default_rng(4)
    queries = [rng.random((40, 3)), rng.random((9, 3))]
    places = locate_queries(anchors, queries)
    assert places.rows.shape == (49, 12) and places.window.shape == (49, 12)
    packed = np.concatenate(anchors.points)
    for i, (b, x) in enumerate([(0, q) for q in queries[0]] + [(1, q) for q in queries[1]]):
        start = 0 if b == 0 else SIZES[0]
        brute = np.sort(np.linalg.norm(anchors.points[b] - x, axis=1))[:13]
        got = np.linalg.norm(packed[places.rows[i]] - x, axis=1)
        assert ((places.rows[i] >= start) & (places.rows[i] < start + SIZES[b])).all()
        assert np.allclose(got, brute[:12])
        assert np.allclose(np.exp(places.window[i]), (1 - (brute[:12] / brute[12]) ** 2) ** 2, atol=1e-6)
    q = place_queries(anchors, places, np.concatenate(featurise(queries)))
    slots, query_slot = q.nearest.groups.slots.numpy(), q.nearest.groups.query_slot.numpy()
    rows, bias = q.nearest.key_rows.numpy(), q.nearest.key_bias.numpy()
    bias, sn_bias = bias[..., : rows.shape[1]], bias[..., rows.shape[1] :]  # anchors, then the supernodes
    s = anchors.layout.sub_index.shape[1]
    cloud = q.nearest.group_cloud.numpy()
    assert sn_bias.shape[-1] == s and (sn_bias[cloud == 0] == 0).any() and np.isneginf(sn_bias).any()  # padded
    for i in range(49):  # the keys a query sees with a finite bias are its k nearest, with their window weights
        p, j = divmod(query_slot[i], slots.shape[1])
        assert slots[p, j] == i
        finite = np.isfinite(bias[p, j])
        want = {int(r): w for r, w in zip(places.rows[i], places.window[i], strict=True) if np.isfinite(w)}
        assert dict(zip(rows[p, finite].tolist(), bias[p, j, finite].tolist(), strict=True)) == pytest.approx(want)


def _walk(model, anchors, start, stop, steps=4000):
    """Outputs of queries on a straight line through the anchors, and their step length."""
    t = np.linspace(0.0, 1.0, steps)[:, None]
    line = start + t * (stop - start)
    return run(model, anchors, [line, np.zeros((0, 3))], featurise([line, np.zeros((0, 3))])).numpy(), 1 / steps


def test_nearest_reading_is_continuous_where_patch_reading_jumps():
    """Walk a line through the anchors: reading a patch, the output jumps where the nearest anchor changes patch;
    reading the nearest anchors under the window, no step is much larger than a typical step (no jumps)."""
    start, stop = np.array([0.05, 0.1, 0.2]), np.array([0.95, 0.85, 0.7])
    points, features = clouds()
    jumps = {}
    for name, variant in (("patch", {"num_patches": 8}), ("nearest", {**NEAREST, "num_patches": 8})):
        model = make(**variant)
        anchors = pack_anchors(points, features, model.config)
        out, _ = _walk(model, anchors, start, stop)
        step = np.abs(np.diff(out, axis=0)).max(axis=1)
        jumps[name] = step.max() / np.median(step)
    assert jumps["patch"] > 50  # the test can tell a jump from a step
    assert jumps["nearest"] < 10, jumps


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_nearest_reading_in_two_kernels_is_the_one_softmax(dtype):
    """Clouds with as many queries each: the nearest reading runs as two attention kernels merged by their
    log-sum-exp (the local keys; the cloud's supernodes). Outputs and gradients are those of the one softmax over
    [keys ; supernodes] (the general path), a query whose every local key is masked included."""
    from dataclasses import replace

    model = make(dtype, **NEAREST, num_supernodes=2)
    points, features = clouds()
    anchors = pack_anchors(points, features, model.config)
    rng = np.random.default_rng(5)
    queries = [rng.random((300, 3)), rng.random((300, 3))]  # as many per cloud: 10 groups each (32 queries)
    q = place_queries(anchors, locate_queries(anchors, queries), np.concatenate(featurise(queries)))
    assert q.nearest.per_cloud == 10
    bias = q.nearest.key_bias.clone()
    u = q.nearest.key_rows.shape[1]
    p, j = divmod(int(q.nearest.groups.query_slot[3]), q.nearest.groups.slots.shape[1])
    bias[p, j, :u] = -torch.inf  # query 3 reads the supernodes alone
    fused = replace(q, nearest=replace(q.nearest, key_bias=bias)).to("cpu", dtype)
    general = replace(fused, nearest=replace(fused.nearest, per_cloud=0))
    outs, grads = [], []
    for qs in (fused, general):
        model.zero_grad()
        keys, _ = model.read_anchors(anchors.features.to(dtype), anchors.layout, anchors.trees)
        out = model.answer_queries(keys, anchors.layout, qs)
        (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append(torch.cat([prm.grad.flatten() for prm in model.parameters()]))
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    assert torch.isfinite(outs[0]).all() and torch.allclose(outs[0], outs[1], rtol=0, atol=tol)
    assert (grads[0] - grads[1]).abs().max() <= tol * grads[1].abs().max()  # float32: to rounding of the largest


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_patch_reading_of_a_few_patches_is_the_one_softmax(dtype):
    """Queries that meet a few patches read only those (one group each, every cloud padded to as many groups);
    the two-kernel attention over them gives the outputs and gradients of the one softmax (the general path)
    and of queries read alone."""
    from dataclasses import replace

    model = make(dtype, num_supernodes=2, num_patches=8)
    points, features = clouds()
    anchors = pack_anchors(points, features, model.config)
    rng = np.random.default_rng(6)
    queries = [rng.random((200, 3)) * 0.3, rng.random((30, 3)) * 0.2]  # in a corner of each cloud: a few patches
    q_features = featurise(queries)
    few = place_queries(anchors, locate_queries(anchors, queries), np.concatenate(q_features))
    groups = few.groups[0]
    assert 1 < groups.per_cloud < 8 and len(groups.patch) == 2 * groups.per_cloud
    general = replace(few, groups=(replace(groups, per_cloud=0),))
    outs, grads = [], []
    for qs in (few, general):
        model.zero_grad()
        keys, _ = model.read_anchors(anchors.features.to(dtype), anchors.layout, anchors.trees)
        out = model.answer_queries(keys, anchors.layout, qs.to("cpu", dtype))
        (out * torch.linspace(-1, 1, out.numel(), dtype=dtype).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append(torch.cat([prm.grad.flatten() for prm in model.parameters()]))
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    assert torch.allclose(outs[0], outs[1], rtol=0, atol=tol)
    assert torch.allclose(grads[0], grads[1], rtol=tol, atol=tol), (grads[0] - grads[1]).abs().max()
    if dtype != torch.float64:  # run() reads in float64
        return
    alone = [run(model, anchors, [queries[0][i : i + 1], queries[1][:0]], [q_features[0][i : i + 1], q_features[1][:0]])
             for i in (0, 77, 199)]  # fmt: skip
    assert torch.allclose(torch.cat(alone), outs[0][[0, 77, 199]], rtol=0, atol=tol)
