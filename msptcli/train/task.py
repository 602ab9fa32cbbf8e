"""What a training run learns, chosen once: a steady field prediction or a transient step.

The loop (``train/loop.py``) is the same for both; a :class:`Task` answers everything that differs:

| | :class:`SteadyTask` | :class:`TransientTask` |
|---|---|---|
| network inputs | 11 geometry channels | a step's inputs (``data/transient.py``), maybe time levels |
| training items | random point subsets of each sample (``TrainClouds``) | (case, t) step pairs (``StepPairs``) |
| before a step | nothing | pushforward clouds filled in by the network's own steps |
| forward | clouds, or anchors and queries (anchor-query MSPT) | clouds |
| validation | per-sample metrics, ``train.val_points`` (``evaluate_sample``) | one-step errors (``validate_steps``) |
| volume template | the first training sample's (for geometry-only prediction) | none |

Both name validation metrics alike (``val_loss``, ``val_rel_l2/<part>/<field>``). ``reference`` is the
run's force reference (``checkpoint.force_reference``), which steady validation's drag and lift need.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from msptcli.config import MsptConfig, TransientConfig
from msptcli.data.features import IN_FEATURES, Channels
from msptcli.data.manifest import Manifest, SampleEntry
from msptcli.data.sample import load_sample
from msptcli.data.template import volume_template
from msptcli.data.transient import input_width, time_levels
from msptcli.errors import InvalidInputError
from msptcli.evaluate import evaluate_sample
from msptcli.model import Network, build_layout, build_network
from msptcli.physics.force_reference import ForceReference
from msptcli.train.dataset import Batch, QueryBatch, TrainClouds
from msptcli.train.transient import StepPairs, validate_steps

#: A training batch: clouds, or anchors and their queries.
AnyBatch = Batch | QueryBatch
#: A run's training items: a steady run's clouds or a transient run's step pairs.
TrainItems = TrainClouds | StepPairs
#: Metrics of ``evaluate_sample`` that are per-sample values, not errors: left out of the validation means.
NOT_AVERAGED = ("cd_pred", "cd_true", "cl_pred", "cl_true")


class Task(Protocol):
    """What differs between steady and transient training (module docstring)."""

    def network(self, channels: Channels) -> Network: ...
    def dataset(self, manifest: Manifest, entries: list[SampleEntry]) -> TrainItems: ...
    def volume_template(self, channels: Channels, entries: list[SampleEntry]) -> np.ndarray | None: ...
    def prepare(self, batch: AnyBatch, dataset: TrainItems, model: Network, device: torch.device) -> AnyBatch: ...
    def forward(self, net: nn.Module, batch: AnyBatch) -> Tensor: ...
    def validate(
        self, model: Network, manifest: Manifest, entries: list[SampleEntry], device: torch.device,
        reference: ForceReference, *, whole: bool = False,
    ) -> dict[str, float]: ...


def task_for(data_dir: Path, manifest: Manifest, config: MsptConfig) -> Task:
    """The task of a dataset and config; a dataset trained with the other kind of config is refused in one line."""
    transient = config.data.transient
    if manifest.kind == "transient":
        if transient is None:
            raise InvalidInputError(
                f"{data_dir}: is a transient dataset; train it with its own config (data.transient)"
            )
        if config.train.init is not None:
            raise InvalidInputError("fine-tuning (--init) of transient runs is not supported yet")
        return TransientTask(data_dir, config, transient)
    if transient is not None:
        raise InvalidInputError(f"{data_dir}: is a steady dataset, but the config sets data.transient")
    return SteadyTask(data_dir, config)


@dataclass(frozen=True)
class SteadyTask:
    """Fields of a steady flow from the geometry: surface and volume clouds, or anchors and queries."""

    data_dir: Path
    config: MsptConfig

    def network(self, channels: Channels) -> Network:
        return build_network(self.config.model, in_features=IN_FEATURES, out_features=channels.total, levels=None)

    def dataset(self, manifest: Manifest, entries: list[SampleEntry]) -> TrainItems:
        tc = self.config.train
        return TrainClouds(
            self.data_dir, manifest, entries, surface_points=tc.surface_points, volume_points=tc.volume_points,
            seed=tc.seed, anchors=self.config.model.anchors,
        )  # fmt: skip

    def volume_template(self, channels: Channels, entries: list[SampleEntry]) -> np.ndarray | None:
        return volume_template(self.data_dir, entries) if channels.volume else None

    def prepare(self, batch: AnyBatch, dataset: TrainItems, model: Network, device: torch.device) -> AnyBatch:
        return batch

    def forward(self, net: nn.Module, batch: AnyBatch) -> Tensor:
        if isinstance(batch, QueryBatch):  # anchor-query MSPT: the loss counts on the queries
            a = batch.anchors
            return net(a.features, a.layout, queries=batch.queries, trees=a.trees)
        return net(batch.features, batch.layout)

    def validate(
        self, model: Network, manifest: Manifest, entries: list[SampleEntry], device: torch.device,
        reference: ForceReference, *, whole: bool = False,
    ) -> dict[str, float]:
        """Mean over the validation samples of their metrics (``evaluate_sample``), as ``val_*``: on at most
        ``train.val_points`` surface and volume points of each (the same ones every time), or ``whole`` meshes."""
        tc = self.config.train
        limit = None if whole else tc.val_points
        kw = dict(reference=reference, device=device, bf16=tc.bf16, max_points=limit, seed=tc.seed)
        rows = [evaluate_sample(model, load_sample(self.data_dir / e.file), manifest, **kw) for e in entries]
        keys = sorted({k for r in rows for k in r if not k.startswith(NOT_AVERAGED)})
        return {f"val_{k}": float(np.mean([r[k] for r in rows if k in r])) for k in keys}


@dataclass(frozen=True)
class TransientTask:
    """The step of a transient flow: (case, t) pairs, with pushforward clouds built by the network itself."""

    data_dir: Path
    config: MsptConfig
    transient: TransientConfig

    def network(self, channels: Channels) -> Network:
        return build_network(
            self.config.model, in_features=input_width(self.transient, channels), out_features=channels.total,
            levels=time_levels(self.transient, channels),
        )  # fmt: skip

    def dataset(self, manifest: Manifest, entries: list[SampleEntry]) -> TrainItems:
        tc = self.config.train
        return StepPairs(self.data_dir, manifest, entries, self.transient, points=tc.volume_points, seed=tc.seed)

    def volume_template(self, channels: Channels, entries: list[SampleEntry]) -> np.ndarray | None:
        return None

    def prepare(self, batch: AnyBatch, dataset: TrainItems, model: Network, device: torch.device) -> AnyBatch:
        """The batch with the inputs and targets of its pushforward clouds (``StepPairs.push_forward``) filled in."""
        if not isinstance(batch, Batch) or not batch.unrolls:
            return batch
        assert isinstance(dataset, StepPairs)
        features, targets = batch.features, batch.targets  # the collated batch's own tensors: filled in place
        for index, start, stop in batch.unrolls:
            features[start:stop], targets[start:stop] = dataset.push_forward(
                model, index, device, bf16=self.config.train.bf16
            )
        layout = batch.layout
        if self.config.model.adaptive is not None:  # the patches follow the inputs
            layout = build_layout(layout.sizes, self.config.model, features)
        return replace(batch, features=features, targets=targets, layout=layout, unrolls=())

    def forward(self, net: nn.Module, batch: AnyBatch) -> Tensor:
        return net(batch.features, batch.layout)

    def validate(
        self, model: Network, manifest: Manifest, entries: list[SampleEntry], device: torch.device,
        reference: ForceReference, *, whole: bool = False,
    ) -> dict[str, float]:
        """One-step errors of the validation steps (``whole`` changes nothing: no subsample here)."""
        return validate_steps(model, self.data_dir, manifest, entries, self.transient, device,
                              bf16=self.config.train.bf16)  # fmt: skip
