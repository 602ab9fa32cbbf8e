"""From clouds as the user has them to the packed, tree-ordered input of the model, and back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from msptcli.errors import InvalidInputError
from msptcli.geometry.balltree import ball_tree_order
from msptcli.model.config import ModelConfig
from msptcli.model.layout import PatchLayout, build_layout


@dataclass(frozen=True)
class PackedBatch:
    """Features of several clouds stacked in ball-tree order, with their layout.

    ``order[r]`` is the row, in the concatenation of the clouds as given, of
    packed row ``r``; :meth:`unpack` puts model outputs back in the given order.
    """

    features: Tensor  # (N, F)
    layout: PatchLayout
    order: Tensor  # (N,) long

    def unpack(self, packed: Tensor) -> Tensor:
        """(N, ...) rows in tree order -> the same rows in the clouds' own order."""
        out = torch.empty_like(packed)
        out[self.order.to(packed.device)] = packed
        return out

    def to(self, device: torch.device | str) -> PackedBatch:
        return PackedBatch(self.features.to(device), self.layout.to(device), self.order.to(device))


def pack_clouds(
    points: Sequence[np.ndarray | Tensor],
    features: Sequence[np.ndarray | Tensor],
    config: ModelConfig,
    *,
    num_threads: int | None = None,
) -> PackedBatch:
    """Order each cloud by its ball tree and stack the features of all clouds.

    Args:
        points: per cloud, (n_b, 2 or 3) coordinates used for the tree.
        features: per cloud, (n_b, F) model inputs (which may include the coordinates).
        config: the model configuration (it decides the patches).
    """
    if len(points) != len(features):
        raise InvalidInputError(f"{len(points)} point clouds but {len(features)} feature arrays")
    for b, (p, f) in enumerate(zip(points, features, strict=True)):
        if len(p) != len(f):
            raise InvalidInputError(f"cloud {b}: {len(p)} points but {len(f)} rows of features")
    perms = ball_tree_order(list(points), num_threads=num_threads)
    sizes = [len(p) for p in perms]
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    order = torch.from_numpy(np.concatenate([start + np.asarray(p) for start, p in zip(starts, perms, strict=True)]))
    stacked = torch.cat([torch.as_tensor(f) for f in features])
    return PackedBatch(features=stacked[order], layout=build_layout(sizes, config), order=order)
