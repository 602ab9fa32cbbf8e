"""What training minimises and how fast: the weighted loss and the learning-rate schedule (by steps or by time)."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.optim.lr_scheduler import LambdaLR

from msptcli.config import TrainConfig
from msptcli.data.features import Channels
from msptcli.train.budget import Budget


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


def schedule(optimizer: torch.optim.Optimizer, train: TrainConfig, steps_per_epoch: int, budget: Budget) -> LambdaLR:
    """Warm-up and cosine decay over the run's steps (``train.epochs``); with a time limit, over the share of the
    budget spent at its last tick instead, the warm-up its first ``warmup_epochs / epochs``."""
    if budget.limited:
        warmup = min(1.0, train.warmup_epochs / train.epochs)
        return LambdaLR(optimizer, lambda _: lr_factor_by_time(budget.fraction, warmup, train.min_lr_ratio))
    warmup, total = train.warmup_epochs * steps_per_epoch, train.epochs * steps_per_epoch
    return LambdaLR(optimizer, lambda s: lr_factor(s, warmup, total, train.min_lr_ratio))


def follow_time(scheduler: LambdaLR) -> None:
    """Set the learning rates to what the schedule gives now, without counting a step: a time schedule resumed
    goes on from the share of its limit (which may have changed) spent, not from the rate it saved."""
    for group, base, factor in zip(
        scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base * factor(scheduler.last_epoch)


def lr_factor(step: int, warmup: float, total: int, floor: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay from 1 to ``floor`` at step ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return _cosine(min(1.0, (step - warmup) / max(1.0, total - warmup)), floor)


def lr_factor_by_time(fraction: float, warmup: float, floor: float) -> float:
    """The schedule of :func:`lr_factor` laid over a time budget (``train.time_limit``): ``fraction`` of it spent,
    linear warm-up from 0 over its first ``warmup`` share (``warmup_epochs / epochs``), then cosine decay from 1
    to ``floor`` when it is all spent."""
    if fraction < warmup:
        return fraction / warmup
    return _cosine(min(1.0, (fraction - warmup) / max(1e-12, 1.0 - warmup)), floor)


def _cosine(progress: float, floor: float) -> float:
    """Half a cosine from 1 (``progress`` 0) to ``floor`` (``progress`` 1)."""
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
