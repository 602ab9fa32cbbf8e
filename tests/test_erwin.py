"""Erwin backbone: the official model's outputs, rotated orders, packed clouds, gradients, shapes, export."""

from __future__ import annotations

import copy
import functools
import re

import numpy as np
import pytest
import torch
from references import ERWIN, load_reference
from torch import Tensor, nn

from msptcli.errors import InvalidInputError
from msptcli.model.anchors import ONE_TREE, AnchorTrees, PackedAnchors, pack_anchors
from msptcli.model.backbones.erwin import ErwinBackbone, rotated_orders
from msptcli.model.config import AnchorConfig, ErwinConfig, ModelConfig

IN_FEATURES = 5  # coordinates and two more channels

#: Three levels of widths 16, 32, 48 (heads 2, 4, 6); depth 3 at level 0 (blocks 0 and 2 in the first tree,
#: 1 in the rotated one), depth 1 in the decoder's level 1 (never rotated). Whole balls: clouds of 64k points.
THREE_LEVELS = ErwinConfig(
    ball_sizes=(32, 16, 8), strides=(2, 4), enc_depths=(3, 2, 2), dec_depths=(2, 1), width_multipliers=(1, 2, 3)
)


def config(erwin: ErwinConfig = THREE_LEVELS, rotate: bool = True, ratio: float = 2.0) -> ModelConfig:
    return ModelConfig(
        backbone="erwin",
        width=16,
        num_heads=2,
        mlp_ratio=ratio,
        anchors=AnchorConfig(surface=erwin.cloud_multiple(), volume=0),
        erwin=erwin.model_copy(update={"rotate": rotate}),
    )


def clouds(sizes, cfg: ModelConfig, seed=0) -> PackedAnchors:
    """Random clouds packed in their ball-tree order, with the rotated tree when ``cfg`` has one."""
    rng = np.random.default_rng(seed)
    points = [rng.standard_normal((n, 3)) for n in sizes]
    features = [np.concatenate([p, rng.standard_normal((len(p), IN_FEATURES - 3))], axis=1) for p in points]
    return pack_anchors(points, features, cfg)


def run(model: ErwinBackbone, packed: PackedAnchors, dtype=torch.float64) -> Tensor:
    f = packed.features.to(dtype)
    return model(model.embed(f), f[:, :3], packed.layout, packed.trees)


def make(cfg: ModelConfig, dtype=torch.float64, seed=0) -> ErwinBackbone:
    torch.manual_seed(seed)
    return ErwinBackbone(cfg, IN_FEATURES).to(dtype)


# --- faithfulness: the official model (maxxxzdn/erwin @ 83faaf9, models/erwin.py) -----------------------------


def _never(*args, **kwargs):
    raise AssertionError("the reference must not build its own ball tree: the test gives it ours")


@pytest.fixture(scope="module")
def reference():
    # torch_cluster builds the MPNN's radius graph (mp_steps=0: never called); balltree-erwin builds the
    # tree, which the test passes in (tree_idx, tree_idx_rot), so its stand-in refuses to be called.
    return load_reference(
        *ERWIN, stand_ins={"torch_cluster": {}, "balltree": {"build_balltree_with_rotations": _never}}
    )


def reference_model(reference, cfg: ModelConfig, seed=0) -> nn.Module:
    """The official ErwinTransformer of the same sizes, with random weights of unit gain and BatchNorm
    statistics of one batch (with the initial weights, std 0.02, the blocks barely change their input)."""
    s = cfg.erwin_settings
    widths = [cfg.width * k for k in s.width_multipliers]
    heads = [cfg.num_heads * k for k in s.width_multipliers]
    torch.manual_seed(seed)
    model = reference.ErwinTransformer(
        c_in=IN_FEATURES,
        c_hidden=widths,
        ball_sizes=list(s.ball_sizes),
        enc_num_heads=heads,
        enc_depths=list(s.enc_depths),
        dec_num_heads=heads[:-1],
        dec_depths=list(s.dec_depths),
        strides=list(s.strides),
        rotate=45 if s.rotate else 0,
        decode=True,
        mlp_ratio=int(cfg.mlp_ratio),
        dimensionality=3,
        mp_steps=0,
    ).double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn_like(p) * p.shape[1] ** -0.5)
            elif name.endswith("sigma_att"):
                p.copy_(-1 - torch.rand_like(p))  # a bias that matters: distances of a ball are O(0.1-1)
            else:
                p.add_(0.1 * torch.randn_like(p))
    return model


def ours_from(reference_model: nn.Module, cfg: ModelConfig) -> ErwinBackbone:
    """Our backbone with the reference's weights and buffers: every name maps, every shape matches."""
    levels = len(cfg.erwin_settings.strides)

    def rename(key: str) -> str:
        key = key.replace("embed.embed_fn.", "embed.").replace(".BMSA.", ".attn.").replace(".swiglu.", ".mlp.")
        key = re.sub(r"^encoder\.(\d+)\.pool\.", r"pools.\1.", key)
        key = re.sub(r"^decoder\.(\d+)\.unpool\.", lambda m: f"unpools.{levels - 1 - int(m[1])}.", key)
        return re.sub(r"^decoder\.(\d+)\.blocks\.", lambda m: f"decoder.{levels - 1 - int(m[1])}.blocks.", key)

    ours = ErwinBackbone(cfg, IN_FEATURES).double()
    ours.load_state_dict({rename(k): v for k, v in reference_model.state_dict().items()}, strict=True)
    return ours


def call_reference(model: nn.Module, packed: PackedAnchors, dtype, orders: list[Tensor] | None = None) -> Tensor:
    """The reference on our rows: already in tree order (tree_idx = arange, nothing padded) and, with rotation,
    our rotated orders of every encoder level and the bottleneck (it pops them one by one)."""
    f = packed.features.to(dtype)
    n = f.shape[0]
    batch = torch.repeat_interleave(torch.arange(len(packed.layout.sizes)), torch.tensor(packed.layout.sizes))
    if orders is None:
        levels = len(model.strides) + 1
        orders = rotated_orders(packed.trees, model.strides) if model.rotate else [None] * levels
    return model(
        node_features=f,
        node_positions=f[:, :3],
        batch_idx=batch,
        tree_idx=torch.arange(n),
        tree_mask=torch.ones(n, dtype=torch.bool),
        tree_idx_rot=list(orders),
    )


@pytest.fixture
def exact_cdist(monkeypatch):
    """The reference's torch.cdist without its matrix-product shortcut (|x|^2 + |y|^2 - 2 x.y for balls of
    more than 25 points), whose rounding leaves distances of ~sqrt(eps) on the diagonal (3e-4 in float32);
    ours subtracts the positions. Only the reference calls cdist."""
    monkeypatch.setattr(torch, "cdist", functools.partial(torch.cdist, compute_mode="donot_use_mm_for_euclid_dist"))


@pytest.mark.faithfulness
@pytest.mark.parametrize("rotate", [True, False])
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("sizes", [[512], [256, 128]])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_equals_the_official_model(reference, exact_cdist, rotate, train, sizes, dtype, tol):
    """Eval (running statistics) and train mode (batch statistics), one cloud and two packed, with and without
    the rotated trees: the same weights give the same level-0 features."""
    cfg = config(rotate=rotate)
    packed = clouds(sizes, cfg)
    ref = reference_model(reference, cfg)
    with torch.no_grad():
        call_reference(ref.train(), clouds(sizes, cfg, seed=9), torch.float64)  # BatchNorm statistics of a batch
        ours = ours_from(ref, cfg)
        ref.to(dtype).train(train)
        ours.to(dtype).train(train)
        expected = call_reference(ref, packed, dtype)
        got = run(ours, packed, dtype)
    assert got.shape == (sum(sizes), cfg.width) and got.dtype == dtype
    assert expected.std() > 0.1  # the blocks, pooling and BatchNorm all move the features
    scale = max(1.0, expected.abs().max().item())  # unit-gain weights: outputs up to ~15
    assert (got - expected).abs().max() < tol * scale, (got - expected).abs().max()


@pytest.mark.faithfulness
def test_equals_the_official_model_with_its_own_cdist(reference):
    """The reference as it is: its mm-based cdist puts distances of ~1e-8 on the diagonal (float64)."""
    cfg = config()
    packed = clouds([256, 128], cfg)
    ref = reference_model(reference, cfg).eval()
    ours = ours_from(ref, cfg).eval()
    with torch.no_grad():
        assert (run(ours, packed) - call_reference(ref, packed, torch.float64)).abs().max() < 1e-6


@pytest.mark.faithfulness
def test_the_comparison_can_fail(reference, exact_cdist):
    """One weight of the bottleneck changed, or other rotated orders, and the outputs no longer agree."""
    cfg = config()
    packed = clouds([256, 128], cfg)
    ref = reference_model(reference, cfg).eval()
    ours = ours_from(ref, cfg).eval()
    with torch.no_grad():
        expected = call_reference(ref, packed, torch.float64)
        assert (run(ours, packed) - expected).abs().max() < 1e-12
        perturbed = copy.deepcopy(ours)
        perturbed.bottleneck.blocks[1].attn.sigma_att[0, 2] += 0.05  # a rotated block, one head
        assert (run(perturbed, packed) - expected).abs().max() > 1e-4
        orders = rotated_orders(packed.trees, cfg.erwin_settings.strides)
        orders[1] = torch.arange(len(orders[1]))  # level 1 not rotated
        assert (run(ours, packed) - call_reference(ref, packed, torch.float64, orders)).abs().max() > 1e-4


# --- the rotated orders ----------------------------------------------------------------------------------


def test_rotated_orders_are_the_rotated_tree_then_mean_places_within_each_cloud():
    cfg = config()
    packed = clouds([512, 256], cfg)
    orders = rotated_orders(packed.trees, cfg.erwin_settings.strides)
    assert len(orders) == 3 and torch.equal(orders[0], packed.trees.reorder[1])
    rank = packed.trees.restore[1].double()
    for order, size in zip(orders, (1, 2, 8), strict=True):
        nodes = 768 // size
        assert torch.equal(order.sort().values, torch.arange(nodes))  # a permutation
        assert (order[: 512 // size] < 512 // size).all()  # cloud 0's nodes first, in cloud 0's rows
        mean = rank.view(nodes, size).mean(1)[order]
        assert (mean[1:] >= mean[:-1]).all()  # by the mean place of their points in the rotated tree
    assert not torch.equal(orders[1], torch.arange(384))  # the rotated order is another order


def test_rotation_needs_the_rotated_tree():
    cfg = config()
    model = make(cfg)
    packed = clouds([512], cfg)
    with pytest.raises(ValueError, match=r"erwin\.rotate needs the rotated ball tree"):
        model(model.embed(packed.features.double()), packed.features[:, :3].double(), packed.layout, ONE_TREE)


def test_a_cloud_of_partial_balls_is_one_clear_error():
    cfg = config()
    model = make(cfg)
    packed = clouds([512, 96], cfg)  # 96 is not a multiple of 64
    with pytest.raises(InvalidInputError, match="erwin: cloud 1 has 96 points, not a multiple of 64"):
        run(model, packed)


# --- packed clouds, gradients, shapes -----------------------------------------------------------------------


def test_a_cloud_alone_equals_the_cloud_packed_with_another():
    """In eval mode (BatchNorm's running statistics) clouds never mix: balls, pooling and rotated orders
    stay within each cloud's rows."""
    cfg = config()
    model = make(cfg).eval()
    rng = np.random.default_rng(3)
    mine = rng.standard_normal((256, 3))
    other = rng.standard_normal((512, 3))

    def packed(points):
        features = [np.concatenate([p, np.sin(p[:, :2])], axis=1) for p in points]
        return pack_anchors(points, features, cfg)

    with torch.no_grad():
        alone = run(model, packed([mine]))
        first = run(model, packed([mine, other]))[:256]
        second = run(model, packed([other, mine]))[512:]
    assert (first - alone).abs().max() < 1e-10 and (second - alone).abs().max() < 1e-10
    assert alone.std() > 0


def test_gradients_reach_every_parameter():
    cfg = config()
    model = make(cfg).train()
    packed = clouds([256, 128], cfg)
    features = packed.features.double().requires_grad_()
    out = model(model.embed(features), features[:, :3], packed.layout, packed.trees)
    (out * torch.randn_like(out)).sum().backward()  # a random readout: BatchNorm's output sums to a constant
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, name


def test_checkpointing_gives_the_same_gradients():
    cfg = config()
    packed = clouds([256, 128], cfg)
    grads = []
    for checkpointing in (False, True):
        model = make(cfg.model_copy(update={"checkpointing": checkpointing})).train()
        run(model, packed).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert (grads[0] - grads[1]).abs().max() < 1e-12 and grads[0].abs().max() > 0


@pytest.mark.parametrize(
    "erwin",
    [
        ErwinConfig(ball_sizes=(64,), strides=(), enc_depths=(2,), dec_depths=(), width_multipliers=(1,)),
        ErwinConfig(ball_sizes=(32, 32), strides=(2,), enc_depths=(2, 2), dec_depths=(2,), width_multipliers=(1, 2)),
        THREE_LEVELS,
    ],
    ids=["one-level", "two-levels", "three-levels"],
)
@pytest.mark.parametrize("rotate", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_shapes_and_finite_outputs(erwin, rotate, train):
    cfg = config(erwin, rotate=rotate, ratio=1.5)
    model = make(cfg, dtype=torch.float32).train(train)
    m = erwin.cloud_multiple()
    packed = clouds([2 * m, m], cfg)
    with torch.no_grad():
        out = run(model, packed, torch.float32)
    assert out.shape == (3 * m, 16) and out.dtype == torch.float32 and torch.isfinite(out).all()
    top = 16 * erwin.width_multipliers[-1]
    assert model.bottleneck.blocks[0].mlp.w1.out_features == int(top * 1.5)  # SwiGLU hidden: int(width * mlp_ratio)


def test_autocast_bfloat16_runs():
    cfg = config()
    model = make(cfg, dtype=torch.float32)
    packed = clouds([512], cfg)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = run(model, packed, torch.float32)
    assert out.shape == (512, 16) and torch.isfinite(out.float()).all()


# --- export ---------------------------------------------------------------------------------------------------


class Exported(nn.Module):
    """embed + forward on plain tensors (the rotated tree's two index tensors), as an exported graph sees them."""

    def __init__(self, model: ErwinBackbone, packed: PackedAnchors) -> None:
        super().__init__()
        self.model, self.layout = model, packed.layout  # the layout is read only outside tracing

    def forward(self, features: Tensor, reorder: Tensor, restore: Tensor) -> Tensor:
        trees = AnchorTrees((None, reorder), (None, restore))
        return self.model(self.model.embed(features), features[:, :3], self.layout, trees)


TINY = ErwinConfig(ball_sizes=(16, 8), strides=(2,), enc_depths=(2, 2), dec_depths=(2,), width_multipliers=(1, 2))


def _inputs(packed: PackedAnchors) -> tuple[Tensor, Tensor, Tensor]:
    return packed.features, packed.trees.reorder[1], packed.trees.restore[1]


def test_jit_trace_runs_other_sizes():
    cfg = config(TINY)
    model = make(cfg, dtype=torch.float32).eval()
    example = clouds([64, 32], cfg)
    traced = torch.jit.trace(Exported(model, example), _inputs(example), check_trace=False)
    other = clouds([48, 96, 16], cfg, seed=1)
    with torch.no_grad():
        assert (traced(*_inputs(other)) - Exported(model, other)(*_inputs(other))).abs().max() < 1e-6


@pytest.mark.slow
def test_torch_export_with_a_dynamic_number_of_points():
    """torch.export needs the number of points declared a multiple of cloud_multiple() (the balls are views)."""
    cfg = config(TINY)
    model = make(cfg, dtype=torch.float32).eval()
    example = clouds([64, 32], cfg)
    k = torch.export.Dim("k")
    n = cfg.erwin_settings.cloud_multiple() * k
    program = torch.export.export(
        Exported(model, example),
        _inputs(example),
        dynamic_shapes={"features": {0: n}, "reorder": {0: n}, "restore": {0: n}},
    )
    other = clouds([48, 96, 16], cfg, seed=1)
    with torch.no_grad():
        assert (program.module()(*_inputs(other)) - Exported(model, other)(*_inputs(other))).abs().max() < 1e-6
