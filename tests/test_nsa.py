"""Erwin-NSA: every branch against dense attention written here, selection, padding, gradients, export."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.fx.experimental._config as fx_config
from torch import Tensor, nn

from msptcli.geometry.balltree import run_boundaries
from msptcli.model.anchors import AnchorTrees
from msptcli.model.backbones.nsa import BRANCHES, BallSparseAttention, NSABackbone
from msptcli.model.config import ModelConfig, NSAConfig
from msptcli.model.layout import PatchChunk, PatchLayout, build_layout

SIZES = [250, 37, 1, 130]  # 8, 1, 1 and 4 balls of 32: ball counts differ, padded slots and summaries


def config(selected: int = 4, **overrides) -> ModelConfig:
    cfg = dict(backbone="erwin-nsa", width=12, num_heads=3, depth=2, patch_size=32, num_supernodes=2, anchors=None)
    cfg.update(overrides)
    return ModelConfig(**cfg, nsa=NSAConfig(selected=selected))


def make(seed: int = 0, dtype: torch.dtype = torch.float64, **overrides) -> NSABackbone:
    """A backbone with large random weights: peaked attention, well separated ball scores (no near-ties)."""
    torch.manual_seed(seed)
    model = NSABackbone(config(**overrides), in_features=3).to(dtype)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 0.3)
                if m.bias is not None:
                    m.bias.normal_(0.0, 0.1)
    return model


def randn(*shape: int, dtype: torch.dtype = torch.float64, seed: int = 1) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def run(model: NSABackbone, features: Tensor, sizes: list[int]) -> Tensor:
    with torch.no_grad():
        return model(model.embed(features), features[:, :3], build_layout(sizes, model.config))


def force_gates(model: NSABackbone, branch: str) -> None:
    """Gates exactly 1 for ``branch`` and 0 for the others (sigmoid(+-1e4) in float64), every head."""
    with torch.no_grad():
        for block in model.blocks:
            gate = block.attn.gate
            heads = block.attn.num_heads
            bias = torch.full((3, heads), -1e4, dtype=gate.bias.dtype)
            bias[BRANCHES.index(branch)] = 1e4
            gate.weight.zero_()
            gate.bias.copy_(bias.flatten())


# --- the dense reference: one cloud at a time, explicit masks, no padding ---------------------------------


class Cloud:
    """Balls and sub-runs of one cloud of ``n`` points, straight from the ball-tree rule."""

    def __init__(self, n: int, cfg: ModelConfig) -> None:
        level = cfg.patch_level(n)
        bounds = run_boundaries(n, level)
        self.ball = torch.from_numpy(np.repeat(np.arange(len(bounds) - 1), np.diff(bounds)))  # (n,)
        self.num_balls = len(bounds) - 1
        self.q = cfg.num_supernodes
        self.sub_bounds = run_boundaries(n, level + int(math.log2(self.q)))

    def summaries(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Mean of every sub-run (K * Q, C), zero where empty, and which are not empty (K * Q,)."""
        b = self.sub_bounds
        s = torch.stack([h[i:j].mean(0) if j > i else h.new_zeros(h.shape[1]) for i, j in itertools.pairwise(b)])
        return s, torch.from_numpy(b[1:] > b[:-1])


def heads_attention(attn: BallSparseAttention, h: Tensor, keys: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """softmax(q k^T / sqrt(d) + mask) v for every head: (n, H, d) outputs and (H, n, m) probabilities."""
    n, heads, d = h.shape[0], attn.num_heads, attn.head_dim
    q = attn.q(h).view(n, heads, d).transpose(0, 1)  # (H, n, d)
    k, v = (t.view(len(keys), heads, d).transpose(0, 1) for t in attn.kv(keys).chunk(2, dim=-1))  # (H, m, d)
    logits = (q @ k.transpose(1, 2) / math.sqrt(d)).masked_fill(~mask, -torch.inf)  # (H, n, m)
    prob = torch.softmax(logits, dim=-1)
    return (prob @ v).transpose(0, 1), prob


def full_attention(attn: BallSparseAttention, h: Tensor, cloud: Cloud) -> Tensor:
    """Plain multi-head attention of every point over all points of its cloud."""
    mask = torch.ones(len(h), len(h), dtype=torch.bool)
    return attn.proj(heads_attention(attn, h, h, mask)[0].flatten(1))


def ball_attention(attn: BallSparseAttention, h: Tensor, cloud: Cloud) -> Tensor:
    """Attention of every point over the points of its own ball."""
    mask = cloud.ball[:, None] == cloud.ball[None, :]
    return attn.proj(heads_attention(attn, h, h, mask)[0].flatten(1))


def summary_attention(attn: BallSparseAttention, h: Tensor, cloud: Cloud) -> Tensor:
    """Attention of every point over the (non-empty) mean-pooled summaries of its cloud."""
    s, nonempty = cloud.summaries(h)
    return attn.proj(heads_attention(attn, h, s, nonempty[None, :].expand(len(h), -1))[0].flatten(1))


def nsa_attention(attn: BallSparseAttention, h: Tensor, cloud: Cloud) -> Tensor:
    """The three gated branches, dense, with the selection computed ball by ball from its definition."""
    n, heads = h.shape[0], attn.num_heads
    s, nonempty = cloud.summaries(h)
    o_cmp, prob = heads_attention(attn, h, s, nonempty[None, :].expand(n, -1))  # prob (H, n, K * Q)
    chosen = torch.zeros(cloud.num_balls, cloud.num_balls, dtype=torch.bool)  # [ball p, ball j]: p selects j
    k = min(attn.selected, cloud.num_balls)
    for p in range(cloud.num_balls):
        mean = prob[:, cloud.ball == p].mean(dim=(0, 1))  # (K * Q,): averaged over heads and the ball's points
        score = mean.view(cloud.num_balls, cloud.q).sum(1)  # (K,): summed over each ball's summaries
        chosen[p, score.topk(k).indices] = True
    o_sel = heads_attention(attn, h, h, chosen[cloud.ball][:, cloud.ball])[0]
    o_loc = heads_attention(attn, h, h, cloud.ball[:, None] == cloud.ball[None, :])[0]
    g = torch.sigmoid(attn.gate(h)).view(n, 3, heads, 1)
    return attn.proj((g[:, 0] * o_cmp + g[:, 1] * o_sel + g[:, 2] * o_loc).flatten(1))


def dense_backbone(model: NSABackbone, features: Tensor, sizes: list[int], attention) -> Tensor:  # type: ignore[no-untyped-def]
    """The backbone's blocks applied to every cloud alone, with ``attention(attn, h, cloud)`` for the attention."""
    outs = []
    with torch.no_grad():
        for f in features.split(sizes):
            cloud = Cloud(len(f), model.config)
            x = model.embed(f)
            for block in model.blocks:
                x = x + attention(block.attn, block.norm1(x), cloud)
                x = x + block.mlp(block.norm2(x))
            outs.append(x)
    return torch.cat(outs)


# --- tests -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [1, 2])
@pytest.mark.parametrize("selected", [8, 100])  # every ball of the cloud (8), or more than it has
def test_selected_branch_over_every_ball_is_dense_attention(q, selected):
    """THE reduction: select every ball, gate only the selected branch -> exact dense attention over the cloud."""
    model = make(num_supernodes=q, selected=selected)
    force_gates(model, "selected")
    layout = build_layout([250], model.config)
    assert layout.num_patches == 8 and layout.whole.key_bias is not None  # 250 = 8 balls of 31-32: padded slots
    features = randn(250, 3)
    ours = run(model, features, [250])
    reference = dense_backbone(model, features, [250], full_attention)
    assert torch.allclose(ours, reference, rtol=0, atol=1e-10), (ours - reference).abs().max()


def test_reduction_check_can_fail():
    # The comparison above is not vacuous: selecting all balls but one is clearly not dense attention.
    model = make(selected=7)
    force_gates(model, "selected")
    features = randn(250, 3)
    assert (run(model, features, [250]) - dense_backbone(model, features, [250], full_attention)).abs().max() > 1e-2


@pytest.mark.parametrize("q", [1, 2, 4])
@pytest.mark.parametrize(("branch", "reference"), [("local", ball_attention), ("compressed", summary_attention)])
def test_local_and_compressed_branches_equal_their_dense_attention(q, branch, reference):
    """Local-only gates: attention within each ball; compressed-only: attention over the summaries of the cloud."""
    model = make(num_supernodes=q)
    force_gates(model, branch)
    features = randn(sum(SIZES), 3)
    ours = run(model, features, SIZES)
    expected = dense_backbone(model, features, SIZES, reference)
    assert torch.allclose(ours, expected, rtol=0, atol=1e-10), (ours - expected).abs().max()
    other = ball_attention if reference is summary_attention else summary_attention
    assert (ours - dense_backbone(model, features, SIZES, other)).abs().max() > 1e-2  # and the branches differ


@pytest.mark.parametrize(("q", "selected"), [(1, 1), (2, 2), (2, 3), (4, 5)])
def test_gated_branches_and_selection_equal_dense_reference(q, selected):
    """Random gates, a real top-k: the packed, padded module equals the three branches computed densely,
    with every ball's selection worked out from its definition (scores summed per ball, averaged)."""
    model = make(num_supernodes=q, selected=selected)
    features = randn(sum(SIZES), 3)
    ours = run(model, features, SIZES)
    expected = dense_backbone(model, features, SIZES, nsa_attention)
    assert torch.allclose(ours, expected, rtol=0, atol=1e-10), (ours - expected).abs().max()


def test_selection_matters():
    # With gates on the selected branch only, k = 1 and k = 2 give different outputs (the top-k is not a no-op).
    features = randn(250, 3)
    outs = []
    for selected in (1, 2):
        model = make(selected=selected)
        force_gates(model, "selected")
        outs.append(run(model, features, [250]))
    assert (outs[0] - outs[1]).abs().max() > 1e-2


@pytest.mark.parametrize("q", [1, 2])
def test_cloud_alone_equals_cloud_in_a_batch(q):
    """Padding of slots, summaries and balls never leaks: a cloud alone == packed with others of other sizes."""
    model = make(num_supernodes=q, selected=3)
    cloud = randn(250, 3, seed=2)  # 8 balls
    alone = run(model, cloud, [250])
    for others in ([37], [1, 130], [700, 5]):  # 1 ball; 1 and 4 balls; 32 balls (longer L) and 1
        parts = [randn(n, 3, seed=3 + i) for i, n in enumerate(others)]
        for at in range(len(others) + 1):  # our cloud first, in the middle, last
            clouds = [*parts[:at], cloud, *parts[at:]]
            sizes = [len(c) for c in clouds]
            start = sum(sizes[:at])
            out = run(model, torch.cat(clouds), sizes)[start : start + 250]
            assert torch.allclose(out, alone, rtol=0, atol=1e-10), (out - alone).abs().max()
            changed = [c * 3 + 1 if c is not cloud else c for c in clouds]
            out = run(model, torch.cat(changed), sizes)[start : start + 250]
            assert torch.allclose(out, alone, rtol=0, atol=1e-10)


def test_gradients_reach_every_parameter():
    model = make(pooling="softmax", num_supernodes=2, selected=2)  # softmax pooling: the pool has weights too
    features = randn(sum(SIZES), 3)
    layout = build_layout(SIZES, model.config)
    out = model(model.embed(features), features, layout)
    (out * randn(*out.shape, seed=5)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, name


def test_gradient_equals_finite_differences():
    # The top-k is piecewise constant; everything else is differentiable and its backward is right.
    model = make(width=6, num_heads=2, depth=1, patch_size=8, selected=2)
    sizes = [30, 9]
    layout = build_layout(sizes, model.config)
    x = randn(sum(sizes), 6, seed=4).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: model(t, t[:, :3], layout), (x,), eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize(
    "overrides",
    [
        {"num_supernodes": 1, "selected": 1},
        {"num_supernodes": 2, "selected": 3, "patch_size": 8},
        {"num_supernodes": 2, "selected": 4096, "patch_size": 64},
        {"num_supernodes": 4, "selected": 2, "pooling": "max", "fourier_features": 2},
        {"num_supernodes": 1, "selected": 2, "num_patches": 1, "patch_size": None},  # every cloud a single ball
        {"num_supernodes": 2, "selected": 4},  # the default patch rule
    ],
)
@pytest.mark.parametrize("sizes", [SIZES, [20], [256]])  # a cloud of one ball; a cloud with nothing padded
def test_shapes_and_no_nan(overrides, sizes):
    model = make(**overrides)
    features = randn(sum(sizes), 3)
    out = run(model, features, sizes)
    assert out.shape == (sum(sizes), 12) and torch.isfinite(out).all()
    assert torch.allclose(model.embed(features[:5]), model.embed(features)[:5], rtol=0, atol=1e-14)  # row-wise


def test_bf16_autocast_runs_forward_and_backward():
    model = make(dtype=torch.float32, selected=2)
    features = randn(sum(SIZES), 3, dtype=torch.float32)
    layout = build_layout(SIZES, model.config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(model.embed(features), features, layout)
    out.float().square().mean().backward()
    assert torch.isfinite(out.float()).all() and all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_rotated_tree_blocks_attend_in_the_second_tree():
    """With two trees block 1 runs in tree 1's order (``trees.reorder[1]``) and is put back (``restore[1]``)."""
    model = make(selected=2)
    layout = build_layout(SIZES, model.config)
    offsets = np.cumsum([0, *SIZES])
    rng = np.random.default_rng(0)
    perm = np.concatenate([a + rng.permutation(b - a) for a, b in itertools.pairwise(offsets)])  # within clouds
    reorder = torch.from_numpy(perm)
    restore = torch.from_numpy(np.argsort(perm))
    x = model.embed(randn(sum(SIZES), 3))
    with torch.no_grad():
        ours = model(x, x[:, :3], layout, AnchorTrees((None, reorder), (None, restore)))
        by_hand = model.blocks[1](model.blocks[0](x, layout)[reorder], layout)[restore]
        assert torch.allclose(ours, by_hand, rtol=0, atol=1e-12)
        assert (ours - model(x, x[:, :3], layout)).abs().max() > 1e-2  # the second tree changes the result


def test_checkpointing_gives_the_same_values_and_gradients():
    sizes = [130, 37]
    features = randn(sum(sizes), 3)
    layout = build_layout(sizes, config())
    results = []
    for checkpointing in (False, True):
        model = make(checkpointing=checkpointing)
        out = model(model.embed(features), features, layout)
        out.square().sum().backward()
        results.append((out.detach(), model.blocks[0].attn.q.weight.grad))
    assert torch.allclose(results[0][0], results[1][0], rtol=0, atol=1e-12)
    assert torch.allclose(results[0][1], results[1][1], rtol=0, atol=1e-10)


# --- export ---------------------------------------------------------------------------------------------------

LAYOUT_NAMES = ("patch_index", "point_slot", "patch_cloud", "sub_slots", "sub_count", "sub_index", "key_bias")


class Exported(nn.Module):
    """embed + forward on the layout's index tensors (as ``runtime/graph.py`` feeds them)."""

    def __init__(self, model: NSABackbone) -> None:
        super().__init__()
        self.model = model

    def forward(self, features, patch_index, point_slot, patch_cloud, sub_slots, sub_count, sub_index, key_bias):  # type: ignore[no-untyped-def]
        n, p = features.shape[0], patch_index.shape[0]
        whole = PatchChunk(0, p, 0, n, patch_index, point_slot, patch_cloud, sub_slots, sub_count, key_bias)
        q = self.model.config.num_supernodes
        layout = PatchLayout((), q, patch_index.shape[1], np.zeros(0, dtype=np.int64), sub_index, whole)
        return self.model(self.model.embed(features), features, layout)


def graph_inputs(sizes: list[int], cfg: ModelConfig) -> dict[str, Tensor]:
    layout = build_layout(sizes, cfg)
    w = layout.whole
    bias = w.key_bias
    if bias is None:  # the graph always takes a bias: zeros when nothing is padded
        bias = torch.zeros(layout.num_patches, 1, 1, layout.patch_len + layout.sub_index.shape[1])
    values = (w.patch_index, w.point_slot, w.patch_cloud, w.sub_slots, w.sub_count, layout.sub_index, bias)
    return {
        "features": randn(sum(sizes), 3, dtype=torch.float32, seed=len(sizes)),
        **dict(zip(LAYOUT_NAMES, values, strict=True)),
    }


#: Batches the graphs must run besides the traced one: more balls than traced, fewer than ``selected``,
#: a single point, nothing padded, and one cloud of one ball (K = 1: a size-1 axis).
OTHER_BATCHES = ([700, 33, 1, 130], [256], [1000, 999, 3], [5])


@pytest.mark.filterwarnings("ignore:`torch.jit.trace")
def test_torch_export_with_dynamic_points_and_patches():
    """``torch.export`` with every axis a ``Dim``: the top-k count ``min(selected, S // Q)`` stays symbolic.

    Exported under ``backed_size_oblivious`` as ``torch.onnx.export(dynamo=True)`` does: without it
    torch.export specialises axes of size 1, and a batch whose clouds all have a single ball fails a
    guard (MSPT's graph has the same limit for a batch of one point).
    """
    model = make(dtype=torch.float32, depth=1, width=8, num_heads=2, selected=3).eval()
    wrapper = Exported(model)
    example = graph_inputs([250, 130], model.config)  # 8 and 4 balls: S // Q = 8 > selected
    dims = {
        name: {axis: torch.export.Dim.DYNAMIC for axis in range(t.dim()) if t.shape[axis] > 1}
        for name, t in example.items()
    }
    dims["features"] = {0: torch.export.Dim.DYNAMIC}
    with fx_config.patch(backed_size_oblivious=True):
        program = torch.export.export(wrapper, (), kwargs=example, dynamic_shapes=dims)
    traced = torch.jit.trace(wrapper, example_kwarg_inputs=example, check_trace=False)  # TorchScript too
    for sizes in OTHER_BATCHES:
        inputs = graph_inputs(sizes, model.config)
        with torch.no_grad():
            want = wrapper(**inputs)
            for graph in (program.module(), traced):
                got = graph(**inputs)
                assert got.shape == want.shape and torch.allclose(got, want, rtol=0, atol=1e-5), sizes
