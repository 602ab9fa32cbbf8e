"""The exported graph of a network: its inputs, named and shaped, and the wrapper that traces the network on them.

The exported graph is ``MSPT.forward`` itself, called on plain tensors (nothing re-implemented). Everything that depends
on the cloud sizes (patches, padding, supernodes) stays outside it: the caller
builds the layout with ``build_layout`` and feeds its index tensors, named as in
``PatchLayout``. Inside, every size is read from a tensor shape, so the graph
has no Python ints of one batch baked in:

    features    (N, F)           float32  packed, tree-ordered inputs
    patch_index (P, L)           int64    packed row of every patch slot (0 where padded)
    point_slot  (N,)             int64    flat slot (p * L + i) of every point
    patch_cloud (P,)             int64    cloud of every patch
    sub_slots   (P * Q, Ls)      int64    packed rows of every sub-run, padded (0 where padded)
    sub_count   (P * Q,)         int64    points pooled into every supernode
    sub_index   (B, S)           int64    supernodes of every cloud (0 where padded)
    key_bias    (P, 1, 1, L + S) float32  0 / -inf; all zeros when nothing is padded
    -> prediction (N, out_features) float32, in the same (tree) order

An anchor-query model (``model.anchors``) takes the same inputs for its anchors, then its queries:

    query_features  (M, F)        float32  inputs of the query points, in any order
    query_slots_t   (G_t, T_t)    int64    per tree t: query row of every slot of its query group (0 where padded)
    query_slot_t    (M,)          int64    per tree t: flat slot (g * T_t + j) of every query
    query_patch_t   (G_t,)        int64    per tree t: the anchor patch every query group reads
    tree_reorder_1  (N,)          int64    with rotate_trees: packed anchor row of each row of tree 1
    tree_restore_1  (N,)          int64    its inverse
    -> prediction (M, out_features) float32, the queries in their own order

and with ``anchors.reads: nearest`` the queries' slots in their groups (``query_slots_0``, ``query_slot_0``), then:

    query_key_rows    (G, U)            int64    packed anchor rows of every query group's keys (0 where padded)
    query_key_bias    (G, Lq, U + S)    float32  bias of each (query slot, key): log window weight, -inf where
                                                 not among its k; 0 / -inf for the supernodes
    query_group_cloud (G,)              int64    cloud of every group

and with ``anchors.reads: blend`` the patch inputs of the first tree, then the second patch of the queries
within reach of one (at least one row: query 0 at weight 0 where none is):

    query_second_rows   (M2,)        int64    the queries that read a second patch
    query_second_slots  (G2, T2)     int64    row (of query_second_rows) of every slot of its second-patch group
    query_second_slot   (M2,)        int64    flat slot of every such query
    query_second_patch  (G2,)        int64    the second patch every group reads
    query_second_weight (M2,)        float32  its weight w_2 in [0, 1]

(``QueryGroups``, ``NearestKeys`` and ``SecondPatch`` of ``model/queries.py``, ``AnchorTrees`` of
``model/anchors.py``; ``query_inputs`` builds them all.) Writing, running and verifying the graph is ``portable.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from msptcli.errors import InvalidInputError
from msptcli.model.anchors import ONE_TREE, AnchorTrees, PackedAnchors, pack_anchors
from msptcli.model.layout import PatchChunk, PatchLayout
from msptcli.model.network import Network
from msptcli.model.queries import NearestKeys, Queries, QueryGroups, SecondPatch, locate_queries, place_queries
from msptcli.runtime.inference import PackedClouds, pack_clouds

#: Graph inputs after ``features``, in order.
LAYOUT_INPUTS = ("patch_index", "point_slot", "patch_cloud", "sub_slots", "sub_count", "sub_index", "key_bias")
OUTPUT_NAME = "prediction"

#: The symbolic axes of every graph input, named as in docs/model.md.
AXES: dict[str, dict[int, str]] = {
    "features": {0: "num_points"},
    "patch_index": {0: "num_patches", 1: "patch_len"},
    "point_slot": {0: "num_points"},
    "patch_cloud": {0: "num_patches"},
    "sub_slots": {0: "num_subruns", 1: "subrun_len"},
    "sub_count": {0: "num_subruns"},
    "sub_index": {0: "num_clouds", 1: "cloud_supernodes"},
    "key_bias": {0: "num_patches", 3: "num_keys"},
}

#: Cloud sizes of the batch traced when no example is given: padded patches and supernodes.
DEFAULT_EXAMPLE_SIZES = (160, 97, 33)


def query_axes(trees: int, *, nearest: bool = False) -> dict[str, dict[int, str]]:
    """The symbolic axes of the query inputs of a model with ``trees`` ball trees (``nearest``: reads: nearest)."""
    axes = {
        "query_features": {0: "num_queries"},
        "query_key_rows": {0: "query_groups", 1: "query_keys"},
        "query_key_bias": {0: "query_groups", 1: "query_group_len", 2: "query_keys_and_supernodes"},
        "query_group_cloud": {0: "query_groups"},
        "query_second_rows": {0: "second_queries"},
        "query_second_slots": {0: "second_groups", 1: "second_group_len"},
        "query_second_slot": {0: "second_queries"},
        "query_second_patch": {0: "second_groups"},
        "query_second_weight": {0: "second_queries"},
    }
    for t in range(trees):
        axes[f"query_slots_{t}"] = {0: f"query_groups_{t}", 1: f"query_group_len_{t}"}
        axes[f"query_slot_{t}"] = {0: "num_queries"}
        axes[f"query_patch_{t}"] = {0: f"query_groups_{t}"}
    if nearest:  # the queries' slots are in groups of anchors, not in the patches
        axes["query_slots_0"] = {0: "query_groups", 1: "query_group_len"}
        del axes["query_patch_0"]
    for t in range(1, trees):
        axes[f"tree_reorder_{t}"] = {0: "num_points"}
        axes[f"tree_restore_{t}"] = {0: "num_points"}
    return axes


class ExportableNetwork(nn.Module):
    """``MSPT.forward`` on the layout's index tensors, for tracing; it owns no weights of its own.

    A ``PatchLayout`` is rebuilt from the inputs: ``whole`` and ``sub_index`` are
    all the forward pass reads on one chunk, and its host-side fields (sizes, patch
    bounds) are left empty so that no size of the traced batch enters the graph.
    """

    def __init__(self, model: Network) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        features: Tensor,
        patch_index: Tensor,
        point_slot: Tensor,
        patch_cloud: Tensor,
        sub_slots: Tensor,
        sub_count: Tensor,
        sub_index: Tensor,
        key_bias: Tensor,
        query_features: Tensor | None = None,
        query_slots_0: Tensor | None = None,
        query_slot_0: Tensor | None = None,
        query_patch_0: Tensor | None = None,
        query_slots_1: Tensor | None = None,
        query_slot_1: Tensor | None = None,
        query_patch_1: Tensor | None = None,
        tree_reorder_1: Tensor | None = None,
        tree_restore_1: Tensor | None = None,
        query_key_rows: Tensor | None = None,
        query_key_bias: Tensor | None = None,
        query_group_cloud: Tensor | None = None,
        query_second_rows: Tensor | None = None,
        query_second_slots: Tensor | None = None,
        query_second_slot: Tensor | None = None,
        query_second_patch: Tensor | None = None,
        query_second_weight: Tensor | None = None,
    ) -> Tensor:
        n, p = features.shape[0], patch_index.shape[0]
        whole = PatchChunk(0, p, 0, n, patch_index, point_slot, patch_cloud, sub_slots, sub_count, key_bias)
        layout = PatchLayout(
            sizes=(),
            num_supernodes=self.model.config.num_supernodes,
            patch_len=patch_index.shape[1],
            patch_start=np.zeros(0, dtype=np.int64),
            sub_index=sub_index,
            whole=whole,
        )
        if query_features is None:
            return self.model(features, layout)  # (N, out_features)
        trees = ONE_TREE
        if tree_reorder_1 is not None:
            trees = AnchorTrees((None, tree_reorder_1), (None, tree_restore_1))
        if query_key_rows is not None:  # reads: nearest
            groups = QueryGroups(query_slots_0, query_slot_0)
            nearest = NearestKeys(groups, query_key_rows, query_key_bias, query_group_cloud)
            queries = Queries(query_features, (), nearest)
        else:
            groups = [QueryGroups(query_slots_0, query_slot_0, query_patch_0)]
            if tree_reorder_1 is not None:
                groups.append(QueryGroups(query_slots_1, query_slot_1, query_patch_1))
            blend = None
            if query_second_rows is not None:  # reads: blend
                second = QueryGroups(query_second_slots, query_second_slot, query_second_patch)
                blend = SecondPatch(query_second_rows, second, query_second_weight)
            queries = Queries(query_features, tuple(groups), blend=blend)
        return self.model(features, layout, queries=queries, trees=trees)  # (M, out)


@dataclass(frozen=True)
class QueryExample:
    """Anchors and queries of an anchor-query model, as fed to its exported graph."""

    anchors: PackedAnchors
    queries: Queries


def random_example(model: Network, sizes: Sequence[int], seed: int = 0) -> PackedClouds | QueryExample:
    """Clouds of random points and inputs of ``sizes`` (anchors and as many queries, for an anchor-query model)."""
    rng = np.random.default_rng(seed)
    if model.config.backbone == "erwin":  # whole balls at every level
        m = model.config.erwin_settings.cloud_multiple()
        sizes = [-(-n // m) * m for n in sizes]
    points = [rng.normal(size=(n, 3)) for n in sizes]
    features = [rng.normal(size=(n, model.in_features)).astype(np.float32) for n in sizes]
    if model.config.anchors is None:
        return pack_clouds(points, features, model.config)
    anchors = pack_anchors(points, features, model.config)
    queries = [rng.normal(size=(n, 3)) for n in sizes]
    q_features = np.concatenate([rng.normal(size=(n, model.in_features)) for n in sizes]).astype(np.float32)
    return QueryExample(anchors, place_queries(anchors, locate_queries(anchors, queries), q_features))


def query_inputs(example: QueryExample) -> dict[str, np.ndarray]:
    """The named arrays to feed an exported anchor-query model, in the order of its graph inputs."""
    a, q = example.anchors, example.queries
    arrays = layout_inputs(a.layout, a.features)
    arrays["query_features"] = _float32(q.features)
    for t, groups in enumerate(q.groups):
        arrays[f"query_slots_{t}"] = groups.slots.cpu().numpy().astype(np.int64)
        arrays[f"query_slot_{t}"] = groups.query_slot.cpu().numpy().astype(np.int64)
        arrays[f"query_patch_{t}"] = groups.patch.cpu().numpy().astype(np.int64)
    for t in range(1, a.trees.count):
        arrays[f"tree_reorder_{t}"] = a.trees.reorder[t].cpu().numpy().astype(np.int64)
        arrays[f"tree_restore_{t}"] = a.trees.restore[t].cpu().numpy().astype(np.int64)
    if q.nearest is not None:
        arrays["query_slots_0"] = q.nearest.groups.slots.cpu().numpy().astype(np.int64)
        arrays["query_slot_0"] = q.nearest.groups.query_slot.cpu().numpy().astype(np.int64)
        arrays["query_key_rows"] = q.nearest.key_rows.cpu().numpy().astype(np.int64)
        arrays["query_key_bias"] = _float32(q.nearest.key_bias)
        arrays["query_group_cloud"] = q.nearest.group_cloud.cpu().numpy().astype(np.int64)
    if q.blend is not None:
        arrays["query_second_rows"] = q.blend.rows.cpu().numpy().astype(np.int64)
        arrays["query_second_slots"] = q.blend.groups.slots.cpu().numpy().astype(np.int64)
        arrays["query_second_slot"] = q.blend.groups.query_slot.cpu().numpy().astype(np.int64)
        arrays["query_second_patch"] = q.blend.groups.patch.cpu().numpy().astype(np.int64)
        arrays["query_second_weight"] = _float32(q.blend.weight)
    return arrays


def layout_inputs(
    batch_or_layout: PackedClouds | PatchLayout, features: Tensor | np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The named arrays to feed an exported model, in the order of its graph inputs.

    Args:
        batch_or_layout: a ``PackedClouds`` (its features are the default), or a ``PatchLayout``.
        features: (N, F) packed, tree-ordered and normalised inputs; required with a bare layout.
    """
    if isinstance(batch_or_layout, PackedClouds):
        layout = batch_or_layout.layout
        features = batch_or_layout.features if features is None else features
    else:
        layout = batch_or_layout
    if features is None:
        raise InvalidInputError("layout_inputs needs the features of the batch")
    w = layout.whole
    p, length = w.patch_index.shape
    s = layout.sub_index.shape[1]
    bias = torch.zeros(p, 1, 1, length + s) if w.key_bias is None else w.key_bias  # one graph signature
    arrays = {"features": _float32(features)}
    tensors = (w.patch_index, w.point_slot, w.patch_cloud, w.sub_slots, w.sub_count, layout.sub_index)
    arrays.update(
        {name: t.detach().cpu().numpy().astype(np.int64) for name, t in zip(LAYOUT_INPUTS[:-1], tensors, strict=True)}
    )
    arrays["key_bias"] = _float32(bias)
    if arrays["features"].ndim != 2 or len(arrays["features"]) != layout.num_points:
        raise InvalidInputError(f"features must be ({layout.num_points}, F), got {arrays['features'].shape}")
    return arrays


def _float32(a: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    return np.ascontiguousarray(a, dtype=np.float32)
