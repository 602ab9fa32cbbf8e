"""MSPT: exactness against the dense reference, padding, equivariance, streaming, gradients."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from helpers import EXAMPLE_SURFACE
from pydantic import ValidationError

from msptcli.geometry import ball_tree_order
from msptcli.model import MSPT, ModelConfig, build_layout
from msptcli.model.reference import dense_forward
from msptcli.runtime import pack_clouds

SIZES = [300, 37, 5, 1, 130]  # none divisible by its K; a single point; several clouds


def make(dtype=torch.float64, seed=0, in_features=3, **overrides) -> MSPT:
    torch.manual_seed(seed)
    cfg = dict(width=24, num_heads=3, depth=2)
    cfg.update(overrides)
    return MSPT(ModelConfig(**cfg), in_features=in_features, out_features=2).to(dtype)


def randn(*shape, dtype=torch.float64, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize(
    ("patches", "q", "heads"),
    [
        ({}, 1, 1),
        ({}, 2, 3),
        ({}, 4, 2),
        ({"num_patches": 1}, 2, 3),
        ({"num_patches": 4}, 1, 3),
        ({"num_patches": 16}, 4, 6),
        ({"patch_size": 7}, 2, 2),
        ({"patch_size": 64}, 1, 6),
    ],
)
@pytest.mark.parametrize("pooling", ["mean", "max", "softmax"])
def test_pmsa_equals_dense_masked_reference(patches, q, heads, pooling):
    model = make(num_heads=heads, num_supernodes=q, pooling=pooling, **patches)
    layout = build_layout(SIZES, model.config)
    features = randn(sum(SIZES), 3)
    with torch.no_grad():
        ours = model(features, layout)
        reference = dense_forward(model, features, SIZES)
    assert torch.allclose(ours, reference, rtol=0, atol=1e-10), (ours - reference).abs().max()


@pytest.mark.parametrize("sizes", [[256], [300, 290, 310], [64, 64]], ids=["exact", "padded", "exact-batch"])
@pytest.mark.parametrize("q", [1, 2, 4])
def test_two_kernel_attention_equals_dense_reference_and_fused_gradients(sizes, q, monkeypatch):
    """On the CPU, clouds with the same number of patches run Eq. 6 as two flash kernels merged by their
    log-sum-exp: the values equal the dense reference and the gradients those of the one fused kernel."""
    from msptcli.model import pmsa

    model = make(num_heads=3, num_supernodes=q, num_patches=4)
    layout = build_layout(sizes, model.config)
    assert {k for _, k in layout.whole.cloud_runs} == {4} and layout.whole.exact == (sizes != [300, 290, 310])
    features = randn(sum(sizes), 3)
    calls = []
    two_kernels = pmsa._two_kernels
    monkeypatch.setattr(pmsa, "_two_kernels", lambda t: calls.append(1) or two_kernels(t))
    out = model(features, layout)
    assert calls and two_kernels(features)
    with torch.no_grad():
        reference = dense_forward(model, features, sizes)
    assert torch.allclose(out, reference, rtol=0, atol=1e-10), (out - reference).abs().max()
    grads = torch.autograd.grad(out.square().sum(), list(model.parameters()))
    monkeypatch.setattr(pmsa, "_two_kernels", lambda t: False)  # the one fused kernel over concatenated keys
    fused = model(features, layout)
    fused_grads = torch.autograd.grad(fused.square().sum(), list(model.parameters()))
    assert torch.allclose(out, fused, rtol=0, atol=1e-12)
    for a, b in zip(grads, fused_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12), (a - b).abs().max()


def test_reference_check_can_fail():
    # The comparison above is not vacuous: a different patch rule gives a different output.
    model = make(num_patches=4)
    features = randn(sum(SIZES), 3)
    other = build_layout(SIZES, model.config.model_copy(update={"num_patches": 8}))
    with torch.no_grad():
        assert (model(features, other) - dense_forward(model, features, SIZES)).abs().max() > 1e-3


def test_padding_does_not_leak():
    """A cloud's outputs are the same alone (no padding) and in batches that pad its patches a little or a lot."""
    model = make(num_patches=4, num_supernodes=2)
    cloud = randn(256, 3, seed=2)  # 4 patches of 64: nothing padded when alone
    with torch.no_grad():
        alone = model(cloud, build_layout([256], model.config))
        assert build_layout([256], model.config).whole.key_bias is None
        for other_size in (260, 1000):  # L = 65 (a few padded slots) and L = 250 (many)
            other = randn(other_size, 3, seed=3)
            for first in (True, False):  # padded slots gather row 0: put our cloud there and elsewhere
                clouds = [cloud, other] if first else [other, cloud]
                sizes = [len(c) for c in clouds]
                out = model(torch.cat(clouds), build_layout(sizes, model.config))
                ours = out[:256] if first else out[other_size:]
                assert torch.allclose(ours, alone, rtol=0, atol=1e-12)
                # Changing the other cloud changes nothing here.
                clouds2 = [cloud, other * 3 + 1] if first else [other * 3 + 1, cloud]
                out2 = model(torch.cat(clouds2), build_layout(sizes, model.config))
                ours2 = out2[:256] if first else out2[other_size:]
                assert torch.allclose(ours2, alone, rtol=0, atol=1e-12)


def test_permuting_points_permutes_outputs():
    rng = np.random.default_rng(0)
    points = rng.random((500, 3))
    features = torch.from_numpy(np.concatenate([points, np.sin(points)], axis=1))
    model = make(in_features=6, num_supernodes=2)
    sigma = rng.permutation(500)
    with torch.no_grad():
        batch = pack_clouds([points], [features], model.config)
        out = batch.unpack(model(batch.features.double(), batch.layout).numpy())
        shuffled = pack_clouds([points[sigma]], [features[sigma]], model.config)
        out_shuffled = shuffled.unpack(model(shuffled.features.double(), shuffled.layout).numpy())
    assert np.allclose(out_shuffled, out[sigma], rtol=0, atol=1e-6)
    assert np.array_equal(points[sigma][ball_tree_order(points[sigma])], points[ball_tree_order(points)])


@pytest.mark.parametrize(("pooling", "q"), [("mean", 1), ("softmax", 4), ("max", 2)])
@pytest.mark.parametrize("chunk_points", [1, 50, 333, 10_000])
def test_streaming_equals_full_forward(pooling, q, chunk_points):
    model = make(torch.float32, pooling=pooling, num_supernodes=q, depth=3)
    layout = build_layout(SIZES, model.config)
    features = randn(sum(SIZES), 3, dtype=torch.float32)
    with torch.no_grad():
        full = model(features, layout)
        streamed = model(features, layout, chunk_points=chunk_points)
    rel = (streamed - full).norm() / full.norm()
    assert rel <= 1e-5, rel


def test_chunked_forward_needs_no_grad():
    model = make(torch.float32)
    layout = build_layout(SIZES, model.config)
    with pytest.raises(ValueError, match="no_grad"):
        model(randn(sum(SIZES), 3, dtype=torch.float32), layout, chunk_points=50)


VARIANTS = [
    dict(),
    dict(num_supernodes=4, pooling="max"),
    dict(pooling="softmax", num_supernodes=2),
    dict(checkpointing=True),
    dict(patch_size=16),
    dict(fourier_features=4),
]


def test_fourier_features_are_octaves_of_the_coordinates():
    model = make(torch.float64, fourier_features=3)
    f = randn(5, 3)
    angle = torch.pi * torch.stack([f * 2.0**k for k in range(3)], dim=2).flatten(1)  # (5, 3 * 3), x-major
    expected = model.embed.fc2(torch.nn.functional.gelu(model.embed.fc1(torch.cat([f, angle.sin(), angle.cos()], 1))))
    assert torch.allclose(model.embed(f), expected, rtol=0, atol=1e-12)
    assert model.embed.fc1.in_features == 3 + 18


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: ",".join(f"{k}={x}" for k, x in v.items()) or "default")
def test_every_variant_runs_and_every_parameter_gets_a_gradient(variant):
    model = make(torch.float32, **variant)
    layout = build_layout(SIZES, model.config)
    out = model(randn(sum(SIZES), 3, dtype=torch.float32), layout)
    assert out.shape == (sum(SIZES), 2) and torch.isfinite(out).all()
    out.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_checkpointing_gives_the_same_gradients():
    grads = []
    for checkpointing in (False, True):
        model = make(checkpointing=checkpointing, num_supernodes=2)
        layout = build_layout(SIZES, model.config)
        model(randn(sum(SIZES), 3), layout).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(*grads, rtol=0, atol=1e-12)


def test_bf16_autocast_runs_and_stays_close():
    model = make(torch.float32)
    layout = build_layout(SIZES, model.config)
    features = randn(sum(SIZES), 3, dtype=torch.float32)
    with torch.no_grad():
        full = model(features, layout)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(features, layout)
    assert low.dtype == torch.bfloat16 and torch.isfinite(low).all()
    assert (low.float() - full).norm() / full.norm() < 0.05


def test_patch_rule():
    cfg = ModelConfig()
    assert cfg.patch_level(1) == 0 and cfg.patch_level(3) == 1 and cfg.patch_level(16) == 2
    for n in (10, 1000, 12_345, 1_000_000):
        k = 2 ** cfg.patch_level(n)
        assert k <= n and 0.5 <= k / np.sqrt(n) <= 2  # K * Q ~ sqrt(N)
    q4 = cfg.model_copy(update={"num_supernodes": 4})
    assert 2 ** q4.patch_level(1_000_000) * 4 == 2 ** cfg.patch_level(1_000_000)
    assert cfg.model_copy(update={"patch_size": 100}).patch_level(12_800) == 7
    assert cfg.model_copy(update={"num_patches": 64}).patch_level(1_000) == 6
    assert cfg.model_copy(update={"num_patches": 64}).patch_level(10) == 3  # at most one patch per point


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(width=30, num_heads=4), "not divisible"),
        (dict(num_supernodes=3), "power of two"),
        (dict(num_patches=12), "power of two"),
        (dict(num_patches=8, patch_size=10), "not both"),
        (dict(pooling="median"), "pooling"),
        (dict(widht=64), "widht"),
        (dict(pooling="linear"), "now called 'softmax'"),
        (dict(supernodes="carried"), r"model\.supernodes: 'carried' was removed in mspt 0\.1 \(.*\): drop the key and"),
        (dict(supernodes="stream"), "model.supernodes: 'stream' was removed"),
        (dict(supernodes="all"), "model.supernodes was removed"),
        (dict(mlp_ratio=float("nan")), "finite"),
    ],
)
def test_config_errors(overrides, message):
    with pytest.raises(ValidationError, match=message):
        ModelConfig(**overrides)


def test_the_removed_supernodes_key_is_dropped_when_it_holds_the_default():
    """Every config and checkpoint saved before the key went holds ``supernodes: keys``: it still loads, as before."""
    old = ModelConfig.model_validate_json('{"width": 16, "num_heads": 2, "supernodes": "keys"}')
    assert old == ModelConfig(width=16, num_heads=2) and "supernodes" not in old.model_dump()


def test_layout_masks_only_what_is_padded():
    cfg = ModelConfig(num_patches=4, num_supernodes=2)
    layout = build_layout([10, 7], cfg)
    bias = layout.whole.key_bias[:, 0, 0]  # (P, L + S)
    assert layout.patch_len == 3 and bias.shape == (8, 3 + 8)
    sizes = (layout.patch_start[1:] - layout.patch_start[:-1]).tolist()
    assert sizes == [2, 3, 2, 3, 1, 2, 2, 2]
    for p, size in enumerate(sizes):
        assert (bias[p, :size] == 0).all() and (bias[p, size:3] == -torch.inf).all()
    # cloud 1 (7 points, 8 sub-runs): one sub-run is empty and masked
    assert int((bias[4:, 3:] == -torch.inf).sum(1)[0]) == 1
    assert set(itertools.chain(*[layout.chunk(p, p + 1).patch_index.flatten().tolist() for p in range(8)])) <= {0, 1, 2}


@pytest.mark.slow
def test_learns_a_real_pressure_field():
    """A few hundred steps on the shipped OpenFOAM surface cut the error of kinematic pressure by a large factor."""
    import pyvista as pv

    torch.manual_seed(0)
    mesh = pv.read(EXAMPLE_SURFACE)
    rng = np.random.default_rng(0)
    pick = rng.choice(mesh.n_points, 2048, replace=False)
    points = np.asarray(mesh.points, dtype=np.float64)[pick]
    pressure = np.asarray(mesh.point_data["p"], dtype=np.float64)[pick]
    coords = (points - points.mean(0)) / points.std(0)
    target = torch.from_numpy((pressure - pressure.mean()) / pressure.std()).float()[:, None]
    fourier = np.concatenate([coords, np.sin(np.pi * coords), np.cos(np.pi * coords)], axis=1)
    model = MSPT(ModelConfig(width=64, num_heads=4, depth=2, patch_size=64), in_features=9, out_features=1)
    batch = pack_clouds([points], [fourier], model.config)
    y = target[batch.order]
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    with torch.no_grad():
        start = torch.mean((model(batch.features, batch.layout) - y) ** 2).item()
    for _ in range(300):
        loss = torch.mean((model(batch.features, batch.layout) - y) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = torch.mean((model(batch.features, batch.layout) - y) ** 2).item()
    assert end < start / 20, (start, end)


@pytest.mark.slow
def test_torch_compile_full_graph():
    """torch.compile captures forward and backward in one graph (no breaks, no host syncs) and agrees."""
    model = make(torch.float32, num_supernodes=2)
    layout = build_layout(SIZES, model.config)
    features = randn(sum(SIZES), 3, dtype=torch.float32)
    expected = model(features, layout)
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(features, layout)
    assert torch.allclose(out, expected, rtol=1e-4, atol=1e-5)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("sizes", [[4096], [3000, 1000]], ids=["unpadded", "padded"])
def test_gpu_bf16_uses_fused_attention_kernels(sizes):
    """On a GPU, bf16 PMSA runs on the flash (no padding) or memory-efficient (padding mask) kernels."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = make(torch.float32, width=64, num_heads=4).cuda()
    layout = build_layout(sizes, model.config).to("cuda")
    features = randn(sum(sizes), 3, dtype=torch.float32).cuda()
    expected = model(features, layout)
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]
    with sdpa_kernel(backends), torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(features, layout)
        out.float().square().mean().backward()
    assert torch.isfinite(out).all()
    assert (out.float() - expected).norm() / expected.norm() < 0.05
    with torch.no_grad():
        streamed = model(features, layout, chunk_points=1000)
    assert (streamed - expected).norm() / expected.norm() < 1e-5


def test_mlp_that_recomputes_its_gelu_gives_the_plain_values_and_gradients():
    from msptcli.model.layers import Mlp

    torch.manual_seed(0)
    mlp = Mlp(6, 24, 5).double()
    x = randn(40, 6).requires_grad_()
    out = mlp(x)  # GeluLinear: saves the pre-activation only
    plain = mlp.fc2(torch.nn.functional.gelu(mlp.fc1(x)))
    assert out.grad_fn.name().startswith("GeluLinear") and torch.equal(out, plain)
    for a, b in zip(
        torch.autograd.grad(out.square().sum(), [x, *mlp.parameters()]),
        torch.autograd.grad(plain.square().sum(), [x, *mlp.parameters()]),
        strict=True,
    ):
        assert torch.allclose(a, b, rtol=0, atol=1e-13)
    assert torch.autograd.gradcheck(mlp, (x[:4].detach().requires_grad_(),))
