"""The GPU's code paths on a CPU: bf16 autocast through training, validation and prediction, and device placement.

- bf16: ``train.bf16`` turns autocast on where ``msptcli.device.BF16_DEVICES`` says (CUDA); with ``"cpu"`` added
  the same code runs a training epoch, its validation and prediction in bfloat16 here, for every backbone.
- Placement: the forward pass, the training step and the calls of the inference path run on the ``meta`` device
  under a dispatch mode that records the device of every tensor an operation returns; a factory call
  without ``device=`` (``torch.arange(n)``) would make a CPU tensor and silently move work to the CPU on a GPU.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from helpers import write_config
from test_backbones import SMALL, cloud, network
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import msptcli.device
from msptcli.config import load_config
from msptcli.model.anchors import pack_anchors
from msptcli.model.queries import locate_queries, place_queries
from msptcli.runtime import pack_clouds, predict_clouds, predict_queries
from msptcli.train.loop import train_model

pytest_plugins = ["helpers"]

BACKBONES = list(SMALL)


# --- bf16 autocast on the CPU ---------------------------------------------------------------------------------


@pytest.fixture
def bf16_on_cpu(monkeypatch):
    """``train.bf16`` honoured on the CPU; yields the set of dtypes the network's Linear layers returned."""
    monkeypatch.setattr(msptcli.device, "BF16_DEVICES", ("cuda", "cpu"))
    seen: set[torch.dtype] = set()

    def record(module, args, output):
        if isinstance(module, nn.Linear) and isinstance(output, torch.Tensor):
            seen.add(output.dtype)

    handle = nn.modules.module.register_module_forward_hook(record)
    yield seen
    handle.remove()


def model_inputs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A cloud of ``n`` points and 11 input features per point (the points, then noise), as a dataset's model takes."""
    points, _ = cloud(n, seed)
    return points, np.concatenate([points, np.random.default_rng(seed).standard_normal((n, 8))], axis=1)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_training_validation_and_prediction_under_bf16_on_the_cpu(prepared, tmp_path, bf16_on_cpu, backbone):
    model = {"backbone": backbone, "width": 32, "num_heads": 2, "depth": 2, **SMALL[backbone]}
    config = load_config(write_config(tmp_path / "config.yaml", model=model), ["train.epochs=1", "train.threads=1"])
    assert config.train.bf16 and config.train.device in ("auto", "cpu")
    summary = train_model(prepared.data, tmp_path / "run", config=config)
    assert torch.bfloat16 in bf16_on_cpu  # the training step and validation ran under autocast
    with (tmp_path / "run" / "metrics.csv").open() as f:
        (row,) = list(csv.DictReader(f))
    losses = {k: float(v) for k, v in row.items() if k.endswith("loss") or k.startswith("val_rel_l2/")}
    assert "val_loss" in losses and all(np.isfinite(v) for v in losses.values()), row

    net = summary.model.float().eval()
    anchors, queries = model_inputs(512, 1), model_inputs(300, 2)
    bf16_on_cpu.clear()
    (low,) = predict_queries(net, [anchors[0]], [anchors[1]], [queries[0]], [queries[1]], bf16=True, chunk_points=64)
    assert bf16_on_cpu == {torch.bfloat16}
    (full,) = predict_queries(net, [anchors[0]], [anchors[1]], [queries[0]], [queries[1]], bf16=False)
    assert low.shape == full.shape == (300, net.out_features) and np.isfinite(low).all()
    assert np.abs(low - full).max() < 0.05 * max(1.0, np.abs(full).max())  # bfloat16 keeps 8 bits


@pytest.mark.parametrize("backbone", ["mspt", "erwin-nsa", "transolver"])
def test_whole_cloud_prediction_under_bf16_on_the_cpu(bf16_on_cpu, backbone):
    net = network(backbone, dtype=torch.float32, anchors=False)
    points, features = cloud(700, 3)
    (low,) = predict_clouds(net, [points], [features], bf16=True, chunk_points=128)
    assert bf16_on_cpu == {torch.bfloat16}
    (full,) = predict_clouds(net, [points], [features], bf16=False)
    assert np.isfinite(low).all() and np.abs(low - full).max() < 0.05 * max(1.0, np.abs(full).max())


def test_bf16_stays_off_on_the_cpu_by_default():
    """What users get: on the CPU ``bf16`` is ignored (float32 is faster there)."""
    with msptcli.device.autocast(torch.device("cpu"), True):
        assert not torch.is_autocast_enabled("cpu")
    assert msptcli.device.BF16_DEVICES == ("cuda",)


# --- every tensor follows the input's device -----------------------------------------------------------------


class DeviceLog(TorchDispatchMode):
    """The devices of the tensors every operation returns, by operation, while active."""

    def __init__(self) -> None:
        super().__init__()
        self.made: dict[str, set[str]] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.made.setdefault(t.device.type, set()).add(str(func))
        return out

    def elsewhere(self, device: str) -> dict[str, set[str]]:
        return {d: ops for d, ops in self.made.items() if d != device}


@pytest.fixture
def meta_autocast(monkeypatch):
    """Autocast has no ``meta`` key (``torch.is_autocast_enabled("meta")`` raises): on ``meta`` it is off."""
    enabled = torch.is_autocast_enabled
    monkeypatch.setattr(torch, "is_autocast_enabled", lambda *device: device != ("meta",) and enabled(*device))


def anchored_inputs(net, seed: int = 0):
    """Anchors and queries of two clouds, packed as the inference path packs them (on the CPU)."""
    anchors, queries = [cloud(512, seed + 1), cloud(512, seed + 2)], [cloud(100, seed + 3), cloud(37, seed + 4)]
    packed = pack_anchors([a[0] for a in anchors], [a[1] for a in anchors], net.config)
    places = locate_queries(packed, [q[0] for q in queries])
    return packed, place_queries(packed, places, np.concatenate([q[1] for q in queries]))


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("backbone", BACKBONES)
def test_the_anchored_network_makes_every_tensor_on_the_input_device(meta_autocast, backbone, train):
    """Forward (and in training, backward) with anchors and queries, and the inference path's two calls."""
    net = network(backbone, dtype=torch.float32).train(train)
    packed, queries = anchored_inputs(net)
    net, packed, queries = net.to("meta"), packed.to("meta"), queries.to("meta")
    features = packed.features.float()
    with DeviceLog() as log, torch.set_grad_enabled(train):
        out = net(features, packed.layout, queries=queries, trees=packed.trees)
        if train:
            out.square().mean().backward()
        else:  # predict_queries: the anchors once, then the queries in chunks
            keys, _ = net.read_anchors(features, packed.layout, packed.trees)
            net.answer_queries(keys, packed.layout, queries)
    assert out.device.type == "meta" and out.shape == (137, 3)
    assert log.elsewhere("meta") == {}, log.elsewhere("meta")


@pytest.mark.parametrize("chunk_points", [None, 64])
@pytest.mark.parametrize("backbone", ["mspt", "erwin-nsa", "transolver"])
def test_the_whole_cloud_network_makes_every_tensor_on_the_input_device(meta_autocast, backbone, chunk_points):
    """predict's forward pass over whole clouds, at once and streaming in chunks."""
    net = network(backbone, dtype=torch.float32, anchors=False)
    packed = pack_clouds([cloud(300, 1)[0], cloud(45, 2)[0]], [cloud(300, 1)[1], cloud(45, 2)[1]], net.config)
    net, layout, features = net.to("meta"), packed.layout.to("meta"), packed.features.float().to("meta")
    with DeviceLog() as log, torch.no_grad():
        out = net(features, layout, chunk_points=chunk_points)
    assert out.device.type == "meta" and out.shape == (345, 3)
    assert log.elsewhere("meta") == {}, log.elsewhere("meta")


def test_the_device_check_can_fail():
    """A layer that makes a tensor without ``device=`` is caught (here ``torch.arange`` on the CPU)."""

    class Careless(nn.Module):
        def forward(self, x):
            return x + torch.arange(x.shape[-1], dtype=x.dtype).to(x.device)

    with DeviceLog() as log:
        Careless()(torch.zeros(2, 3, device="meta"))
    (ops,) = log.elsewhere("meta").values()
    assert list(log.elsewhere("meta")) == ["cpu"] and [op.split(".")[1] for op in ops] == ["arange"]
