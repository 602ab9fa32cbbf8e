"""Transolver backbone: the official model's outputs, packed clouds, streaming, gradients, export."""

from __future__ import annotations

import itertools
import types

import pytest
import torch
from references import TRANSOLVER, load_reference
from torch import Tensor, nn

from msptcli.model import ModelConfig, PatchChunk, PatchLayout, build_layout
from msptcli.model.anchors import AnchorTrees
from msptcli.model.backbones.transolver import TransolverBackbone
from msptcli.model.config import TransolverConfig

SIZES = [300, 37, 1, 130]  # several clouds, a single point


def config(width=24, heads=3, depth=2, ratio=2.0, slices=8, **overrides) -> ModelConfig:
    return ModelConfig(
        backbone="transolver",
        width=width,
        num_heads=heads,
        depth=depth,
        mlp_ratio=ratio,
        transolver=TransolverConfig(slices=slices),
        **overrides,
    )


def unit_gain_(model: nn.Module) -> nn.Module:
    """Random weights of unit gain, in place: with the initial ones (std 0.02) the blocks barely change
    their input, and every check below would compare little more than the embedding."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:  # the slice tokens are averages, close together: sharpen their attention
                gain = 4.0 if name.endswith(("to_q.weight", "to_k.weight")) else 1.0
                p.copy_(gain * torch.randn_like(p) * p.shape[1] ** -0.5)
            else:
                p.add_(0.1 * torch.randn_like(p))
    return model


def make(cfg: ModelConfig | None = None, in_features=5, dtype=torch.float64, seed=0) -> TransolverBackbone:
    torch.manual_seed(seed)
    return unit_gain_(TransolverBackbone(cfg or config(), in_features).to(dtype))


def randn(*shape, dtype=torch.float64, seed=1) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def run(model: TransolverBackbone, features: Tensor, sizes, **kw) -> Tensor:
    layout = build_layout(sizes, config())  # Transolver reads only the clouds of the layout
    return model(model.embed(features), features[:, :3], layout, **kw)


# --- faithfulness: the official car-design model (thuml/Transolver @ 75e0f67) ---------------------------


def official_model(in_features: int, width: int, heads: int, depth: int, ratio: int, slices: int, out: int):
    # timm is not installed: the file imports only trunc_normal_ from it.
    ref = load_reference(*TRANSOLVER, stand_ins={"timm.models.layers": {"trunc_normal_": nn.init.trunc_normal_}})
    return ref.Model(
        space_dim=3,
        fun_dim=in_features - 3,
        n_hidden=width,
        n_layers=depth,
        n_head=heads,
        mlp_ratio=ratio,
        out_dim=out,
        slice_num=slices,
    )


def official_weights(official: nn.Module, heads: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The official state dict under our names: the backbone's, and the head's (last block's ln_3, mlp2)."""
    last = f"blocks.{len(official.blocks) - 1}."
    renames = [
        ("linear_pre.0.", "fc1."),
        ("linear_post.", "fc2."),
        ("ln_1.", "norm1."),
        ("ln_2.", "norm2."),
        ("Attn.to_out.0.", "attn.to_out."),
        ("Attn.", "attn."),
    ]
    backbone, head = {}, {}
    for key, value in official.state_dict().items():
        if key.startswith(last + "ln_3."):
            head["0." + key.removeprefix(last + "ln_3.")] = value
            continue
        if key.startswith(last + "mlp2."):
            head["1." + key.removeprefix(last + "mlp2.")] = value
            continue
        for old, new in renames:
            key = key.replace(old, new)
        backbone[key] = value.view(heads, 1) if key.endswith("temperature") else value  # (1, H, 1, 1)
    return backbone, head


@pytest.mark.faithfulness
@pytest.mark.parametrize(
    ("width", "heads", "depth", "ratio", "slices"), [(32, 4, 2, 4, 16), (24, 1, 1, 2, 5), (48, 6, 3, 1, 32)]
)
@pytest.mark.parametrize(("dtype", "atol"), [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_matches_official_transolver(width, heads, depth, ratio, slices, dtype, atol):
    in_features, out, n = 7, 4, 500
    torch.manual_seed(0)
    official = official_model(in_features, width, heads, depth, ratio, slices, out).to(dtype).eval()
    unit_gain_(official)
    ours = TransolverBackbone(config(width, heads, depth, float(ratio), slices), in_features).to(dtype)
    head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, out)).to(dtype)
    backbone_sd, head_sd = official_weights(official, heads)
    ours.load_state_dict(backbone_sd)  # strict: every weight of ours has one of theirs
    head.load_state_dict(head_sd)

    features = randn(n, in_features, dtype=dtype, seed=2)
    with torch.no_grad():
        theirs = official((types.SimpleNamespace(x=features), None))  # forward((cfd_data, geom_data)) reads .x
        mine = head(run(ours, features, [n]))
        assert theirs.shape == mine.shape == (n, out)
        diff = (mine - theirs).abs().max()
        assert diff < atol, diff

        # The check can fail: one weight of the key projection, a little off.
        ours.blocks[0].attn.to_k.weight[0, 0] += 0.01
        off = (head(run(ours, features, [n])) - theirs).abs().max()
        assert off > 10 * atol, off


# --- packed clouds ---------------------------------------------------------------------------------------


def test_a_cloud_alone_equals_the_cloud_packed():
    model = make()
    features = randn(sum(SIZES), 5)
    with torch.no_grad():
        packed = run(model, features, SIZES)
        start = 0
        for n in SIZES:
            alone = run(model, features[start : start + n], [n])
            assert (packed[start : start + n] - alone).abs().max() < 1e-10
            start += n
        # The check can fail: the same rows read as one cloud mix the clouds' slices.
        merged = run(model, features, [sum(SIZES)])
        assert (merged[:300] - packed[:300]).abs().max() > 1e-3


def test_permuting_a_cloud_permutes_its_outputs():
    # The slice tokens are sums over a cloud: neither the order of its points nor the trees matter.
    model = make()
    features = randn(sum(SIZES), 5)
    offsets = [0, 300, 337, 338, 468]
    order = torch.cat([a + torch.randperm(b - a) for a, b in itertools.pairwise(offsets)])
    with torch.no_grad():
        out = run(model, features, SIZES)
        rotated = AnchorTrees((None, order), (None, torch.argsort(order)))
        assert (run(model, features[order], SIZES, trees=rotated) - out[order]).abs().max() < 1e-10


# --- streaming -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_points", [5, 64, 100, 299, 300, 467, 468, 10_000])
def test_streaming_equals_whole_pass(chunk_points):
    model = make(config(depth=3))
    features = randn(sum(SIZES), 5)
    with torch.no_grad():
        whole = run(model, features, SIZES)
        streamed = run(model, features, SIZES, chunk_points=chunk_points)  # chunks cut clouds anywhere
    assert (streamed - whole).abs().max() < 1e-10


def test_streaming_needs_no_grad_and_a_positive_chunk():
    model = make()
    features = randn(sum(SIZES), 5)
    with pytest.raises(ValueError, match="no_grad"):
        run(model, features, SIZES, chunk_points=64)
    with torch.no_grad(), pytest.raises(ValueError, match="positive"):
        run(model, features, SIZES, chunk_points=0)
    with pytest.raises(ValueError, match="rows"):
        model(model.embed(features[:10]), features[:10, :3], build_layout(SIZES, config()))


# --- gradients, variants ---------------------------------------------------------------------------------


def test_gradients_reach_every_parameter():
    model = make()
    features = randn(sum(SIZES), 5)
    out = run(model, features, SIZES)
    (out * randn(*out.shape, seed=3)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, name


def test_checkpointing_gives_the_same_values_and_gradients():
    features = randn(sum(SIZES), 5)
    grads = []
    for checkpointing in (False, True):
        model = make(config(checkpointing=checkpointing))
        out = run(model, features, SIZES)
        (out * randn(*out.shape, seed=3)).sum().backward()
        grads.append((out.detach(), [p.grad for p in model.parameters()]))
    assert (grads[0][0] - grads[1][0]).abs().max() < 1e-12
    assert all((a - b).abs().max() < 1e-12 for a, b in zip(grads[0][1], grads[1][1], strict=True))


@pytest.mark.parametrize(
    ("width", "heads", "depth", "ratio", "slices"), [(8, 1, 1, 1.0, 1), (24, 3, 2, 1.5, 5), (32, 8, 3, 4.0, 64)]
)
@pytest.mark.parametrize("sizes", [[1], [2, 50], SIZES])
def test_variants_shapes_and_finite(width, heads, depth, ratio, slices, sizes):
    model = make(config(width, heads, depth, ratio, slices), in_features=3, dtype=torch.float32)
    features = randn(sum(sizes), 3, dtype=torch.float32)
    out = run(model, features, sizes)
    assert out.shape == (sum(sizes), width) and out.dtype == torch.float32
    out.square().mean().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_bf16_autocast_runs_close_to_float32():
    model = make(dtype=torch.float32)
    features = randn(sum(SIZES), 5, dtype=torch.float32)
    with torch.no_grad():
        exact = run(model, features, SIZES)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            whole = run(model, features, SIZES)
            streamed = run(model, features, SIZES, chunk_points=100)
    for out in (whole, streamed):
        assert torch.isfinite(out).all()
        assert (out.float() - exact).abs().max() < 0.05 * exact.abs().max()


# --- export ----------------------------------------------------------------------------------------------


class Portable(nn.Module):
    """embed + forward on the layout's index tensors, as the exported graph sees them (``runtime/graph.py``)."""

    def __init__(self, model: TransolverBackbone) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, features: Tensor, point_slot: Tensor, patch_index: Tensor, patch_cloud: Tensor, sub_index: Tensor
    ) -> Tensor:
        # the backbone reads point_slot, patch_cloud and patch_len (point_cloud) and the number of clouds
        n, p = features.shape[0], patch_index.shape[0]
        whole = PatchChunk(0, p, 0, n, patch_index, point_slot, patch_cloud, patch_index, point_slot, None)
        layout = PatchLayout((), 1, patch_index.shape[1], None, sub_index, whole)  # no host-side sizes
        return self.model(self.model.embed(features), features[:, :3], layout)


def portable_inputs(sizes, seed) -> tuple[Tensor, ...]:
    layout = build_layout(sizes, config())
    w = layout.whole
    return (
        randn(sum(sizes), 5, dtype=torch.float32, seed=seed),
        w.point_slot,
        w.patch_index,
        w.patch_cloud,
        layout.sub_index,
    )


@pytest.mark.slow
def test_torch_export_and_trace_take_any_number_of_points_and_clouds():
    model = make(dtype=torch.float32).eval()
    wrapper = Portable(model)
    example = portable_inputs([160, 97, 33], seed=4)
    n, patches, length, clouds, subs = (torch.export.Dim(s) for s in ("n", "patches", "length", "clouds", "subs"))
    shapes = ({0: n}, {0: n}, {0: patches, 1: length}, {0: patches}, {0: clouds, 1: subs})
    exported = torch.export.export(wrapper, example, dynamic_shapes=shapes).module()
    traced = torch.jit.trace(wrapper, example, check_trace=False)
    for sizes in ([50, 301], [128, 64, 7, 9, 40]):
        inputs = portable_inputs(sizes, seed=5)
        with torch.no_grad():
            want = wrapper(*inputs)
            assert (exported(*inputs) - want).abs().max() < 1e-5
            assert (traced(*inputs) - want).abs().max() < 1e-5
