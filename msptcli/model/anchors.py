"""Anchors on the host: every cloud of anchors in its ball tree's order (and its rotated tree's), stacked.

A cloud of *anchors* (a fixed-size sample of the geometry, ``data/anchors.py``) runs the MSPT
blocks as any cloud does: ball-tree patches and supernodes. With ``rotate_trees`` the odd blocks
cut the anchors into the patches of a second ball tree, built on the rotated anchors (Erwin's
rotated trees), so that no patch boundary stays in place through the network. Both trees of a
cloud have the same sizes, hence one ``PatchLayout``; :class:`AnchorTrees` moves the rows
between the first tree's (packed) order and the others. How queries read the anchors is
``queries.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from msptcli.errors import InvalidInputError
from msptcli.geometry.balltree import ball_tree_order, rotation_matrix
from msptcli.model.config import ModelConfig
from msptcli.model.layout import PatchLayout, build_layout

#: The rotation of the second ball tree (``rotate_trees``): 45 degrees about z, then about x.
TREE_ROTATION = rotation_matrix(np.pi / 4, axis=0) @ rotation_matrix(np.pi / 4, axis=2)
#: The first tree of the anchors is built on coordinates turned by a generic small rotation (0.3, 0.2, 0.1 rad
#: about z, y, x). Bodies and domains have faces parallel to the axes (a roof, the ground); anchors on such a
#: face share one coordinate, so a median split along that axis would cut them by index (a random subset)
#: and rounding at 1e-8 (another tessellation of the same face) would cut them otherwise. Turned, no two
#: anchors tie, the patches stay spatially coherent, and a subdivided STL gets the same patches.
FIRST_ROTATION = rotation_matrix(0.1, axis=0) @ rotation_matrix(0.2, axis=1) @ rotation_matrix(0.3, axis=2)


@dataclass(frozen=True)
class AnchorTrees:
    """How the anchors, packed in the first tree's order, are put in every tree's order and back.

    ``reorder[t]`` (N,) gives, for every row of tree t's order, its packed row (None for t = 0), and
    ``restore[t]`` is its inverse: ``x[reorder[t]]`` is x in tree t's order, ``y[restore[t]]`` back.
    All trees of a cloud have the same sizes, hence one patch layout.
    """

    reorder: tuple[Tensor | None, ...]
    restore: tuple[Tensor | None, ...]

    @property
    def count(self) -> int:
        return len(self.reorder)

    def to(self, device: torch.device | str) -> AnchorTrees:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return AnchorTrees(tuple(move(t) for t in self.reorder), tuple(move(t) for t in self.restore))


ONE_TREE = AnchorTrees((None,), (None,))


@dataclass(frozen=True)
class PackedAnchors:
    """The anchors of a batch of clouds, stacked in the first tree's order, with what the blocks need."""

    features: Tensor  # (N, F) float32, first tree's order
    layout: PatchLayout
    trees: AnchorTrees
    tree_rank: tuple[np.ndarray, ...]  # per tree (N,): position in that tree's order of each packed row
    points: tuple[np.ndarray, ...]  # per cloud (n_b, 3) float64 anchor coordinates, packed (first tree's) order
    neighbours: int = 0  # k nearest anchors each query reads (reads: nearest) or searches (blend); 0: one patch
    blend: bool = False  # reads: blend: a query blends its two nearest patches' readings (model/queries.py)

    def to(self, device: torch.device | str) -> PackedAnchors:
        return PackedAnchors(
            features=self.features.to(device),
            layout=self.layout.to(device),
            trees=self.trees.to(device),
            tree_rank=self.tree_rank,
            points=self.points,
            neighbours=self.neighbours,
            blend=self.blend,
        )


def pack_anchors(
    points: Sequence[np.ndarray], features: Sequence[np.ndarray | Tensor], config: ModelConfig
) -> PackedAnchors:
    """Order each cloud of anchors by its ball tree (and, with ``rotate_trees``, its rotated tree) and stack them."""
    if len(points) != len(features) or not points:
        raise InvalidInputError(f"{len(points)} anchor clouds but {len(features)} feature arrays")
    for b, (p, f) in enumerate(zip(points, features, strict=True)):
        if len(p) != len(f) or len(p) == 0:
            raise InvalidInputError(f"anchor cloud {b}: {len(p)} points and {len(f)} rows of features")
    sizes = [len(p) for p in points]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    clouds = [np.asarray(p, dtype=np.float64) for p in points]
    every_given = np.concatenate(clouds)
    orders = [np.asarray(ball_tree_order(every_given, offsets=offsets, rotation=FIRST_ROTATION), dtype=np.int64)]
    # (rows of each cloud, in tree order; the first tree is built on slightly rotated coordinates, below)
    if config.num_trees == 2:
        rotated = ball_tree_order(every_given, offsets=offsets, rotation=TREE_ROTATION)
        orders.append(np.asarray(rotated, dtype=np.int64))
    first = orders[0]
    stacked = torch.cat([torch.as_tensor(f, dtype=torch.float32) for f in features])
    rank0 = np.empty_like(first)
    rank0[first] = np.arange(len(first))  # packed row of every given row
    reorder, restore, tree_rank = [None], [None], [np.arange(len(first))]
    for order in orders[1:]:
        rows = rank0[order]  # packed row of each row of this tree's order
        back = np.empty_like(rows)
        back[rows] = np.arange(len(rows))
        reorder.append(torch.from_numpy(rows))
        restore.append(torch.from_numpy(back))
        tree_rank.append(back)
    every = every_given[first]
    ordered = stacked[torch.from_numpy(first)]
    return PackedAnchors(
        features=ordered,
        layout=build_layout(sizes, config, ordered),
        trees=AnchorTrees(tuple(reorder), tuple(restore)),
        tree_rank=tuple(tree_rank),
        points=tuple(every[offsets[b] : offsets[b + 1]] for b in range(len(sizes))),
        neighbours=config.anchors.neighbours if config.anchors is not None and config.anchors.reads != "patch" else 0,
        blend=config.anchors is not None and config.anchors.reads == "blend",
    )
