"""What training minimises and how fast: the weighted loss and the learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from msptcli.config import TrainConfig
from msptcli.data.features import Channels


def channel_weights(channels: Channels, train: TrainConfig) -> Tensor:
    """Per output channel: part weight x field weight / components (each field counts once)."""
    w = []
    for part, part_weight in (("surface", train.surface_weight), ("volume", train.volume_weight)):
        for name, k in getattr(channels, part):
            w += [part_weight * train.field_weights.get(name, 1.0) / k] * k
    return torch.tensor(w, dtype=torch.float32)


def masked_mse(pred: Tensor, targets: Tensor, mask: Tensor, weights: Tensor) -> Tensor:
    """Weighted MSE per channel over the rows where the channel counts (surface or volume points).

    ``pred``, ``targets``, ``mask``: (N, C); ``weights``: (C,).
    """
    err = (pred.float() - targets) ** 2 * mask
    per_channel = err.sum(0) / mask.sum(0).clamp(min=1)  # (C,)
    return (per_channel * weights).sum() / weights.sum().clamp(min=1e-12)


def lr_factor(step: int, warmup: float, total: int, floor: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from 1 to ``floor`` at step ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
