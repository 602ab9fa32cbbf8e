"""Anchor-query attention: query points read the anchors' MSPT blocks without changing them.

A cloud of *anchors* (a fixed-size sample of the geometry) runs the MSPT blocks as usual:
ball-tree patches and supernodes. A *query* point i — any surface or volume point a user asks
about — falls into the patch p(i) of its nearest anchor and, in every block, attends in one
softmax to the anchors of that patch and to all supernodes of its cloud, with the block's own
weights (PMSA, Eq. 5-6, with the query as the only query):

    x_i' = x_i + Proj softmax(q_i [K_p(i) ; K_S]^T / sqrt(d)) [V_p(i) ; V_S],   q_i = W_q LN(x_i)
    x_i  = x_i' + MLP(LN(x_i'))

where K, V are the keys and values of the anchors at the block's input. A query never sees
another query, so its output is a function of the anchors and of its own features alone: the
same whatever the other queries and however they are chunked. A query with an anchor's position
and features gets exactly that anchor's output. (The idea of anchor tokens follows AB-UPT; the
patches and supernodes are MSPT's.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from msptcli.errors import InvalidInputError
from msptcli.model.layout import PatchLayout


@dataclass(frozen=True)
class QueryGroups:
    """Queries grouped by the anchor patch they read, padded to the most queries any patch has.

    Padded slots hold query 0 and their outputs are dropped; a patch no query falls into has
    only padded slots.
    """

    slots: Tensor  # (P, Lq) long: query row of each slot (0 where padded)
    query_slot: Tensor  # (M,) long: flat slot (patch * Lq + j) of each query

    def to(self, device: torch.device | str) -> QueryGroups:
        return QueryGroups(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def group_queries(query_patch: np.ndarray, num_patches: int) -> QueryGroups:
    """The :class:`QueryGroups` of queries whose patches (global patch numbers of the layout) are ``query_patch``."""
    patch = np.asarray(query_patch, dtype=np.int64)
    if patch.ndim != 1 or len(patch) == 0:
        raise InvalidInputError("query patches must be a non-empty (M,) array")
    if patch.min() < 0 or patch.max() >= num_patches:
        raise InvalidInputError(f"query patches must lie in [0, {num_patches}), got {patch.min()}..{patch.max()}")
    order = np.argsort(patch, kind="stable")  # queries patch by patch
    counts = np.bincount(patch, minlength=num_patches)
    length = max(int(counts.max()), 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(patch), dtype=np.int64)
    rank[order] = np.arange(len(patch)) - starts[patch[order]]  # position of each query within its patch
    slots = np.zeros((num_patches, length), dtype=np.int64)
    slots[patch, rank] = np.arange(len(patch))
    return QueryGroups(slots=torch.from_numpy(slots), query_slot=torch.from_numpy(patch * length + rank))


def query_patches(
    anchor_points: Sequence[np.ndarray], layout: PatchLayout, query_points: Sequence[np.ndarray]
) -> np.ndarray:
    """(M,) the layout's patch of each query: the patch of its nearest anchor in the same cloud.

    Args:
        anchor_points: per cloud, (n_b, 3) anchor coordinates in the cloud's ball-tree order (as packed).
        layout: the anchors' layout.
        query_points: per cloud, (m_b, 3) query coordinates; the result stacks the clouds in order.
    """
    if not (len(anchor_points) == len(query_points) == layout.num_clouds):
        raise InvalidInputError(
            f"{len(anchor_points)} anchor clouds and {len(query_points)} query clouds for a layout of "
            f"{layout.num_clouds} clouds"
        )
    patch_of_row = np.repeat(np.arange(len(layout.patch_start) - 1), np.diff(layout.patch_start))
    out, start = [], 0
    for anchors, queries, size in zip(anchor_points, query_points, layout.sizes, strict=True):
        if len(anchors) != size:
            raise InvalidInputError(f"a cloud has {len(anchors)} anchors but its layout {size}")
        _, nearest = cKDTree(np.asarray(anchors, dtype=np.float64)).query(np.asarray(queries, dtype=np.float64))
        out.append(patch_of_row[start + np.asarray(nearest, dtype=np.int64)])
        start += size
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
