"""The model's own view of a design: does the trained network see it as it saw its training designs?

The shape check (``check.py``) compares geometry; this compares what the network makes of it. A
design's *latent* is the mean and the spread, over its anchors, of the anchors' own (normalised)
outputs after the blocks (``read_anchors(..., outputs=True)``): one vector of 2 x out_features numbers that
summarises the flow the model predicts around the body. ``mspt train`` records every training body's
latent in the best checkpoint (anchors drawn as validation draws them); ``mspt predict`` computes the new
body's (anchors drawn as predict draws them) and its root-mean-square distance, in training spreads, to
the nearest training latent. As for shapes, the threshold is ``NEIGHBOUR_FACTOR`` times the largest
leave-one-out distance among the training latents, and the percentile is among those distances; with
fewer than ``MIN_DESIGNS`` training designs there is no threshold (the distances between a few designs say
little of the family), and the check flags nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msptcli.device import autocast
from msptcli.model import Network
from msptcli.model.anchors import pack_anchors
from msptcli.trust.check import nearest_design

SPREAD_FLOOR = 0.25  # the least spread of a latent dimension, as a share of the median spread over dimensions
MIN_DESIGNS = 5  # with fewer training designs the leave-one-out distances set no threshold: nothing is flagged


@dataclass(frozen=True)
class TrainingLatents:
    """The latents of the training designs, as a checkpoint records them."""

    names: tuple[str, ...]
    values: np.ndarray  # (n, D)

    def to_json(self) -> dict[str, Any]:
        return {n: [float(v) for v in row] for n, row in zip(self.names, self.values, strict=True)}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TrainingLatents:
        names = tuple(value)
        return cls(names, np.array([value[n] for n in names], dtype=np.float64))


@dataclass(frozen=True)
class LatentCheck:
    """A design's latent against the training designs' (the ``trust.model`` of a prediction's JSON)."""

    score: float
    threshold: float | None  # None: too few training designs (MIN_DESIGNS) to set one
    percentile: float
    nearest: str

    @property
    def flagged(self) -> bool:
        return self.threshold is not None and self.score > self.threshold

    def to_json(self) -> dict[str, Any]:
        return {"score": self.score, "threshold": self.threshold, "percentile": self.percentile,
                "nearest_training_body": self.nearest, "flagged": self.flagged}  # fmt: skip

    def note(self) -> str:
        return (f"the model sees it unlike every training body: {self.score:.2f} training spreads from the nearest "
                f"({self.nearest}), beyond the {self.threshold or 0:.2f} of the training bodies' own")  # fmt: skip


def design_latent(
    model: Network, points: np.ndarray, features: np.ndarray, *, device: torch.device | str = "cpu", bf16: bool = True
) -> np.ndarray:
    """(2 x out_features,) the mean and the standard deviation over one cloud of anchors of their own outputs."""
    device = torch.device(device)
    anchors = pack_anchors([points], [features], model.config).to(device)
    dtype = next(model.parameters()).dtype
    with torch.no_grad(), autocast(device, bf16):
        _, out = model.read_anchors(anchors.features.to(dtype), anchors.layout, anchors.trees, outputs=True)
    assert out is not None
    out64 = out.float().cpu().numpy().astype(np.float64)
    return np.concatenate([out64.mean(axis=0), out64.std(axis=0)])


def sample_latent(
    model: Network, sample: Any, stats: Any, *, device: torch.device | str = "cpu", bf16: bool = True
) -> np.ndarray:
    """The latent of a prepared sample, from anchors drawn as validation draws them (the first seed's draw):
    the one rule for the training designs' latents and a validation body's."""
    from msptcli.data.anchors import sample_anchors, seeds_of

    assert model.config.anchors is not None
    draw = seeds_of(model.config.anchors)[0]
    points, features = sample_anchors(sample, stats, draw, np.random.default_rng(draw.seed))
    return design_latent(model, points, features, device=device, bf16=bf16)


def training_latents(
    model: Network, data_dir: Path, manifest: Any, entries: Sequence[Any], *, device: torch.device | str = "cpu",
    bf16: bool = True,
) -> TrainingLatents | None:  # fmt: skip
    """The latents of a dataset's training ``entries`` (anchors as validation draws them); None without anchors."""
    from msptcli.data.sample import load_sample

    if model.config.anchors is None or not entries:
        return None
    rows = [sample_latent(model, load_sample(data_dir / e.file), manifest.stats, device=device, bf16=bf16)
            for e in entries]  # fmt: skip
    return TrainingLatents(tuple(e.name for e in entries), np.array(rows))


def check_latent(latents: TrainingLatents, latent: np.ndarray) -> LatentCheck:
    """A design's latent against the training designs': distance to the nearest, threshold, percentile."""
    train = latents.values
    spread = train.std(axis=0) if len(train) > 1 else np.ones(train.shape[1])
    spread = np.maximum(spread, SPREAD_FLOOR * max(float(np.median(spread)), 1e-12))
    scaled, new = train / spread, np.asarray(latent, dtype=np.float64) / spread

    score, index, threshold, percentile = nearest_design(new, scaled, MIN_DESIGNS)
    return LatentCheck(score, threshold, percentile, latents.names[index])
