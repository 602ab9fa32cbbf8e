"""Training samples: a random subset of points per sample and step, its ball tree built in the loader.

With anchors (anchor-query MSPT) every step also draws a new set of anchors from the sample's
geometry (``data/anchors.py``); the drawn points are the queries, and the loss counts on them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from msptcli.data.anchors import sample_anchors
from msptcli.data.features import Channels, cloud_inputs, cloud_part, model_targets
from msptcli.data.manifest import Manifest, SampleEntry
from msptcli.data.sample import Sample, map_sample
from msptcli.geometry.balltree import ball_tree_order
from msptcli.model import ModelConfig, build_layout
from msptcli.model.anchors import PackedAnchors, pack_anchors
from msptcli.model.config import AnchorConfig
from msptcli.model.layout import PatchLayout
from msptcli.model.queries import Queries, locate_queries, place_queries


@dataclass
class Cloud:
    """One sample's cloud in tree order: inputs, standardised targets and their mask."""

    features: torch.Tensor  # (n + m, 11)
    targets: torch.Tensor  # (n + m, C)
    mask: torch.Tensor  # (n + m, C) bool
    num_surface: int  # surface rows come first in the *unordered* cloud
    order: np.ndarray  # tree order: row r of the tensors is row order[r] of [surface ; volume]
    unroll: int | None = None  # transient pushforward: the item whose inputs the loop builds (StepPairs.push_forward)


@dataclass
class Batch:
    features: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    layout: PatchLayout
    unrolls: tuple[tuple[int, int, int], ...] = ()  # (item, first row, end row) of every cloud marked ``unroll``

    def to(self, device: torch.device) -> Batch:
        nb = device.type == "cuda"
        return Batch(
            self.features.to(device, non_blocking=nb),
            self.targets.to(device, non_blocking=nb),
            self.mask.to(device, non_blocking=nb),
            self.layout.to(device),
            self.unrolls,
        )


def rows_of(
    sample: Sample, manifest: Manifest, channels: Channels, surface_rows: np.ndarray, volume_rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points (k, 3), inputs (k, 11), standardised targets (k, C) and their mask of the chosen rows
    [surface ; volume] of a sample, in that order."""
    a = sample.arrays
    has_volume = len(volume_rows) > 0
    v_geometry = cloud_part(a, "volume", volume_rows) if has_volume else None
    points, inputs = cloud_inputs(manifest.stats, cloud_part(a, "surface", surface_rows), v_geometry)
    surface = {name: a[f"surface/{name}"][surface_rows] for name, _ in channels.surface}
    volume = {name: a[f"volume/{name}"][volume_rows] for name, _ in channels.volume} if has_volume else {}
    targets, mask = model_targets(manifest.stats, channels, surface, volume, len(surface_rows), len(volume_rows))
    return points, inputs, targets, mask


def cloud_of(
    sample: Sample, manifest: Manifest, channels: Channels, surface_rows: np.ndarray, volume_rows: np.ndarray
) -> Cloud:
    """The cloud of the chosen surface and volume rows of a sample, in its ball-tree order."""
    points, inputs, targets, mask = rows_of(sample, manifest, channels, surface_rows, volume_rows)
    full = len(surface_rows) == sample.num_surface and len(volume_rows) == sample.num_volume
    order = np.asarray(sample.arrays["order"]) if full and "order" in sample.arrays else ball_tree_order(points)
    return Cloud(
        features=torch.from_numpy(inputs[order]),
        targets=torch.from_numpy(targets[order]),
        mask=torch.from_numpy(mask[order]),
        num_surface=len(surface_rows),
        order=order,
    )


@dataclass
class AnchorCloud:
    """One sample's draw for anchor-query MSPT: anchors from its geometry, queries with their targets."""

    anchor_points: np.ndarray  # (n, 3)
    anchor_features: np.ndarray  # (n, 11)
    query_points: np.ndarray  # (m, 3)
    features: torch.Tensor  # (m, 11) of the queries
    targets: torch.Tensor  # (m, C)
    mask: torch.Tensor  # (m, C) bool


@dataclass
class QueryBatch:
    """A batch of anchor clouds and their queries; the loss counts on the queries."""

    anchors: PackedAnchors
    queries: Queries
    targets: torch.Tensor
    mask: torch.Tensor

    def to(self, device: torch.device) -> QueryBatch:
        nb = device.type == "cuda"
        return QueryBatch(
            self.anchors.to(device),
            self.queries.to(device),
            self.targets.to(device, non_blocking=nb),
            self.mask.to(device, non_blocking=nb),
        )


class TrainClouds(Dataset):
    """Each item draws ``surface_points`` + ``volume_points`` random points of a training sample.

    The draw depends only on (seed, epoch, index), so runs are reproducible
    whatever the number of loader workers; call :meth:`set_epoch` each epoch.
    """

    def __init__(
        self,
        data_dir: Path,
        manifest: Manifest,
        entries: list[SampleEntry],
        *,
        surface_points: int | None,
        volume_points: int | None,
        seed: int,
        anchors: AnchorConfig | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.manifest = manifest
        self.entries = entries
        self.channels = Channels.from_fields(manifest.fields)
        self.surface_points = surface_points
        self.volume_points = volume_points
        self.seed = seed
        self.anchors = anchors
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> Cloud | AnchorCloud:
        entry = self.entries[index]
        sample = map_sample(self.data_dir / entry.file)  # only the drawn rows are read from disk
        rng = np.random.default_rng([self.seed, self.epoch, index])
        surface_rows = _draw(rng, sample.num_surface, self.surface_points)
        volume_rows = _draw(rng, sample.num_volume, self.volume_points) if self.channels.volume else np.zeros(0, int)
        if self.anchors is None:
            return cloud_of(sample, self.manifest, self.channels, surface_rows, volume_rows)
        anchor_points, anchor_features = sample_anchors(sample, self.manifest.stats, self.anchors, rng)
        points, inputs, targets, mask = rows_of(sample, self.manifest, self.channels, surface_rows, volume_rows)
        return AnchorCloud(
            anchor_points, anchor_features, points, torch.from_numpy(inputs), torch.from_numpy(targets),
            torch.from_numpy(mask),
        )  # fmt: skip


def collate(clouds: list[Cloud] | list[AnchorCloud], model_config: ModelConfig) -> Batch | QueryBatch:
    """Stack clouds (each in its own tree order) into one packed batch with its patch layout; anchor clouds
    into a :class:`QueryBatch` (the anchors' trees, every query placed in its patches)."""
    if isinstance(clouds[0], AnchorCloud):
        anchors = pack_anchors([c.anchor_points for c in clouds], [c.anchor_features for c in clouds], model_config)
        places = locate_queries(anchors, [c.query_points for c in clouds])
        return QueryBatch(
            anchors=anchors,
            queries=place_queries(anchors, places, torch.cat([c.features for c in clouds])),
            targets=torch.cat([c.targets for c in clouds]),
            mask=torch.cat([c.mask for c in clouds]),
        )
    features = torch.cat([c.features for c in clouds])
    sizes = [len(c.features) for c in clouds]
    starts = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    unrolls = tuple((c.unroll, starts[b], starts[b + 1]) for b, c in enumerate(clouds) if c.unroll is not None)
    return Batch(
        features=features,
        targets=torch.cat([c.targets for c in clouds]),
        mask=torch.cat([c.mask for c in clouds]),
        layout=build_layout(sizes, model_config, features),  # adaptive patches: built again after push_forward
        unrolls=unrolls,
    )


#: Steps an epoch needs before the default starts a loader worker: the worker is forked anew every epoch.
WORKER_MIN_STEPS = 8


def loader_workers(requested: int | None, steps_per_epoch: int) -> int:
    """DataLoader workers: ``requested``, or by default one where this process may use two cores or more
    and an epoch has at least ``WORKER_MIN_STEPS`` steps.

    Loading a sample (the draw, its anchors' trees, the layout and the queries' places) costs about a
    tenth of a default step on two cores; one worker does it while the step runs.
    """
    if requested is not None:
        return requested
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 1 if cores >= 2 and steps_per_epoch >= WORKER_MIN_STEPS else 0


def _draw(rng: np.random.Generator, n: int, k: int | None) -> np.ndarray:
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=k, replace=False))
