"""Anchor-query attention: query points read the anchors' MSPT blocks without changing them.

A cloud of *anchors* (a fixed-size sample of the geometry) runs the MSPT blocks as usual:
ball-tree patches and supernodes. A *query* point i — any surface or volume point a user asks
about — falls into the patch p(i) of its nearest anchor and, in every block, attends in one
softmax to the anchors of that patch and to all supernodes of its cloud, with the block's own
weights (PMSA, Eq. 5-6, with the query as the only query):

    x_i' = x_i + Proj softmax(q_i [K_p(i) ; K_S]^T / sqrt(d)) [V_p(i) ; V_S],   q_i = W_q LN(x_i)
    x_i  = x_i' + MLP(LN(x_i'))

where K, V are the keys and values of the anchors at the block's input. With ``rotate_trees``
the odd blocks cut the anchors into the patches of a second ball tree, built on the rotated
anchors (Erwin's rotated trees), so that no patch boundary stays in place through the network;
a query reads, in each block, the patch of its nearest anchor in that block's tree. A query never sees
another query, so its output is a function of the anchors and of its own features alone: the
same whatever the other queries and however they are chunked. A query with an anchor's position
and features gets exactly that anchor's output. (The idea of anchor tokens follows AB-UPT; the
patches and supernodes are MSPT's.)

Reading a patch makes a query's prediction jump where the nearest anchor changes patch: two
neighbouring queries on either side of a boundary read disjoint anchor sets. With
``anchors.reads: nearest`` a query instead reads its k nearest anchors N_k(i) under a window
that falls to zero at the (k+1)-th nearest, at distance r_i:

    a_ij = q_i k_j^T / sqrt(d) + log w(|x_i - a_j| / r_i),   w(t) = (1 - t^2)^2  (t < 1, else 0)
    x_i' = x_i + Proj softmax([a_ij : j in N_k(i)] ; [q_i K_S^T / sqrt(d)]) [V_N_k(i) ; V_S]

An anchor enters or leaves N_k(i) only where it is the k-th and (k+1)-th nearest at once, that
is at t = 1, where its weight is zero: the output is continuous in the query's position, and
no patch boundary of any tree shows in the fields.

``anchors.reads: blend`` keeps the patch reading and makes it continuous the same way. Among the
query's k nearest anchors (``anchors.neighbours``) let d_1 be the distance to the nearest (in patch
P_1), d_2 to the nearest of another patch P_2, d_3 to the nearest of a third, and R = min(d_3, r_i)
with r_i the (k+1)-th distance (a patch not found among the k is at least that far). The query reads
P_1 and, where w_2 > 0, P_2, each in the patch reading's one softmax with the supernodes, and blends
the two outputs:

    u_j = max(0, R - d_j),   w_2 = u_2 / u_1,   o_i = (o_i(P_1) + w_2 o_i(P_2)) / (1 + w_2)

Deep inside a patch P_2 is far (w_2 = 0) and the reading is exactly the patch reading. Where P_1 and
P_2 swap (d_1 = d_2) both weigh 1; where P_2 and P_3 swap (d_2 = d_3), or P_2 enters the k nearest
(d_2 = r_i), w_2 = 0: the output is continuous in the query's position, at the cost of a second
patch reading for the queries within reach of a boundary.

This module prepares that reading on the host: where every query sits among its cloud's anchors
(:func:`locate_queries`), then the queries grouped by the patch they read in every tree
(:class:`QueryGroups`) or by their nearest anchors (:class:`NearestKeys`), in :class:`Queries`
(:func:`place_queries`). The anchors themselves are packed by ``anchors.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from msptcli.errors import InvalidInputError
from msptcli.model.anchors import PackedAnchors
from msptcli.model.layout import PatchLayout


@dataclass(frozen=True)
class QueryGroups:
    """Queries grouped by the anchor patch they read: one group for every patch that some query reads,
    padded to the most queries any of them has.

    Padded slots hold query 0 and their outputs are dropped. Groups come cloud by cloud, patch by patch;
    every cloud from ``first_cloud`` on has ``per_cloud`` groups (a cloud with fewer is given padded groups
    that read its first patch), which lets the attention batch a cloud's groups against its supernodes. A
    chunk of queries near one another (predict's order) thus reads only the patches it meets.
    """

    slots: Tensor  # (G, T) long: query row of each slot (0 where padded)
    query_slot: Tensor  # (M,) long: flat slot (group * T + j) of each query
    patch: Tensor | None = None  # (G,) long: the patch every group reads (None: the nearest reading's groups)
    first_cloud: int = 0  # host-side facts for the attention (the defaults always work, e.g. in a graph)
    per_cloud: int = 0  # groups of every cloud from first_cloud on (0: not known)

    def to(self, device: torch.device | str) -> QueryGroups:
        patch = None if self.patch is None else self.patch.to(device)
        return QueryGroups(self.slots.to(device), self.query_slot.to(device), patch, self.first_cloud, self.per_cloud)


def group_queries(query_patch: np.ndarray, patch_cloud: np.ndarray) -> QueryGroups:
    """The :class:`QueryGroups` of queries whose patches (global patch numbers of a layout whose patches lie in
    the clouds ``patch_cloud``, ascending) are ``query_patch``."""
    patch, patch_cloud = np.asarray(query_patch, dtype=np.int64), np.asarray(patch_cloud, dtype=np.int64)
    num_patches = len(patch_cloud)
    if patch.ndim != 1 or len(patch) == 0:
        raise InvalidInputError("query patches must be a non-empty (M,) array")
    if patch.min() < 0 or patch.max() >= num_patches:
        raise InvalidInputError(f"query patches must lie in [0, {num_patches}), got {patch.min()}..{patch.max()}")
    counts = np.bincount(patch, minlength=num_patches)  # (P,) queries of every patch
    read = (counts > 0).astype(np.int64)  # (P,) 1 where some query reads the patch
    num_clouds = int(patch_cloud[-1]) + 1
    cloud_groups = np.bincount(patch_cloud, weights=read, minlength=num_clouds).astype(np.int64)  # (B,)
    present = np.flatnonzero(cloud_groups)
    first, last = int(present[0]), int(present[-1])
    per_cloud = int(cloud_groups[first : last + 1].max())
    before = np.cumsum(read) - read  # (P,) patches read before, in all clouds
    first_patch = np.searchsorted(patch_cloud, np.arange(num_clouds))  # (B,) first patch of every cloud
    group_of = (patch_cloud - first) * per_cloud + before - before[first_patch[patch_cloud]]  # (P,) where read
    group_patch = np.repeat(first_patch[first : last + 1], per_cloud)  # (G,) padded groups: the cloud's first patch
    group_patch[group_of[read > 0]] = np.flatnonzero(read)
    groups = _slots(group_of[patch], len(group_patch))
    return QueryGroups(groups.slots, groups.query_slot, torch.from_numpy(group_patch), first, per_cloud)


def _slots(label: np.ndarray, num_labels: int) -> QueryGroups:
    """Queries grouped by ``label`` (one group per label, padded to the most queries any label has)."""
    order = np.argsort(label, kind="stable")
    counts = np.bincount(label, minlength=num_labels)
    length = max(int(counts.max()), 1)
    rank = np.empty(len(label), dtype=np.int64)
    rank[order] = np.arange(len(label)) - (np.cumsum(counts) - counts)[label[order]]
    slots = np.zeros((num_labels, length), dtype=np.int64)
    slots[label, rank] = np.arange(len(label))
    return QueryGroups(slots=torch.from_numpy(slots), query_slot=torch.from_numpy(label * length + rank))


#: Queries that read their nearest anchors are grouped, within each cloud, into runs of this many queries in the
#: order of their nearest anchor (the first tree's order: spatially compact, so the union of a group's k nearest
#: anchors stays small: on a training batch of the Ahmed bodies about 100 anchors for k = 16, at most about 220;
#: runs of 64 gave 150 and 290, and a training step 8% slower). Grouping changes the cost only.
QUERY_GROUP = 32


@dataclass(frozen=True)
class NearestKeys:
    """What queries that read their nearest anchors (``reads: nearest``) attend to.

    For speed the queries of every cloud are sorted by their nearest anchor (in the first tree's order) and cut
    into runs of ``QUERY_GROUP`` queries; a group's keys are the union of its queries' k nearest
    anchors, then the supernodes of its cloud. The bias of a (query, anchor) pair is its log w(t)
    where the anchor is one of that query's k nearest and -inf elsewhere; that of a supernode 0, or
    -inf for padding: the same attention as gathering every query's own k anchors, with a group's
    keys computed once for all its queries.
    """

    groups: QueryGroups  # the queries by group: slots (G, Lq), query_slot (M,)
    key_rows: Tensor  # (G, U) long: packed anchor rows of every group's keys (0 where padded)
    key_bias: Tensor  # (G, Lq, U + S) float32: bias of each (query slot, key), the supernodes last
    group_cloud: Tensor  # (G,) long: cloud of every group
    per_cloud: int = 0  # groups of every cloud where each cloud of the layout has as many (G = B * per_cloud), else 0

    def to(self, device: torch.device | str) -> NearestKeys:
        return NearestKeys(
            self.groups.to(device), self.key_rows.to(device), self.key_bias.to(device), self.group_cloud.to(device),
            self.per_cloud,
        )  # fmt: skip


@dataclass(frozen=True)
class SecondPatch:
    """``reads: blend``: the queries within reach of a second patch, grouped by it, and its weight w_2."""

    rows: Tensor  # (m2,) long: the queries (rows of the batch's queries) that read a second patch
    groups: QueryGroups  # those queries grouped by their second patch (query rows index ``rows``)
    weight: Tensor  # (m2,) float32: w_2 in [0, 1] (0 only for the one padding row when no query reads one)

    def to(self, device: torch.device | str) -> SecondPatch:
        return SecondPatch(self.rows.to(device), self.groups.to(device), self.weight.to(device))


@dataclass(frozen=True)
class Queries:
    """Query points of a batch: their features and either, per tree, their grouping by anchor patch
    (``reads: patch``; with ``reads: blend`` also their second patch) or their nearest anchors (``reads:
    nearest``; ``groups`` is then empty)."""

    features: Tensor  # (M, F)
    groups: tuple[QueryGroups, ...]
    nearest: NearestKeys | None = None
    blend: SecondPatch | None = None

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Queries:
        """The same queries on ``device`` (features in ``dtype``, when given)."""
        nearest = None if self.nearest is None else self.nearest.to(device)
        blend = None if self.blend is None else self.blend.to(device)
        return Queries(self.features.to(device, dtype), tuple(g.to(device) for g in self.groups), nearest, blend)


@dataclass(frozen=True)
class QueryPlaces:
    """Where every query of a batch sits among its cloud's anchors (clouds stacked in order).

    ``rows[:, 0]`` is the nearest anchor (whose patch a query reads with ``reads: patch``); with
    ``reads: nearest`` ``rows`` holds the k nearest, nearest first, and ``window`` their log w(t).
    """

    rows: np.ndarray  # (M, k) int64 packed anchor rows, nearest first
    window: np.ndarray | None  # (M, k) float32 log window weights (reads: nearest), else None
    cloud: np.ndarray  # (M,) int64 cloud of every query
    pair: np.ndarray | None = None  # (M, 2) int64 reads: blend: the two patches P_1, P_2 read (P_1 twice: none)
    pair_weight: np.ndarray | None = None  # (M,) float32 reads: blend: w_2, the second patch's weight (0: not read)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, rows: slice | np.ndarray) -> QueryPlaces:
        window = None if self.window is None else self.window[rows]
        if self.pair is None:
            return QueryPlaces(self.rows[rows], window, self.cloud[rows])
        return QueryPlaces(self.rows[rows], window, self.cloud[rows], self.pair[rows], self.pair_weight[rows])


def locate_queries(anchors: PackedAnchors, query_points: Sequence[np.ndarray]) -> QueryPlaces:
    """The :class:`QueryPlaces` of query points, one (m_b, 3) array per cloud of ``anchors``."""
    if len(query_points) != anchors.layout.num_clouds:
        raise InvalidInputError(f"{len(query_points)} query clouds for {anchors.layout.num_clouds} clouds of anchors")
    k = anchors.neighbours
    patch_of_row = None  # reads: blend: the patch of every packed anchor row
    if anchors.blend:
        patch_of_row = np.repeat(np.arange(anchors.layout.num_patches), np.diff(anchors.layout.patch_start))
    rows, windows, pairs, clouds, start = [], [], [], [], 0
    for b, (cloud, queries) in enumerate(zip(anchors.points, query_points, strict=True)):
        q = np.asarray(queries, dtype=np.float64).reshape(-1, 3)
        n = len(cloud)
        if k == 0:  # the nearest anchor only
            nearest = cKDTree(cloud).query(q, workers=_workers(q))[1] if len(q) else np.zeros(0, dtype=np.int64)
            rows.append(start + np.asarray(nearest, dtype=np.int64).reshape(-1, 1))
        else:
            distance, index = (cKDTree(cloud).query(q, k=k + 1, workers=_workers(q)) if len(q)
                               else (np.zeros((0, k + 1)),) * 2)  # fmt: skip
            distance, index = distance.reshape(-1, k + 1), np.asarray(index, dtype=np.int64).reshape(-1, k + 1)
            found = start + np.where(index[:, :k] < n, index[:, :k], 0)
            if patch_of_row is not None:
                rows.append(found[:, :1])
                pairs.append(patch_pair(patch_of_row[found], distance[:, :k], distance[:, k]))
            else:
                rows.append(found)
                windows.append(window_log_weight(distance[:, :k], distance[:, k]))
        clouds.append(np.full(len(q), b, dtype=np.int64))
        start += n
    window = np.concatenate(windows).astype(np.float32) if windows else None
    if not pairs:
        return QueryPlaces(np.concatenate(rows), window, np.concatenate(clouds))
    pair = np.concatenate([p for p, _ in pairs])
    weight = np.concatenate([w for _, w in pairs]).astype(np.float32)
    return QueryPlaces(np.concatenate(rows), None, np.concatenate(clouds), pair, weight)


def patch_pair(patch: np.ndarray, distance: np.ndarray, radius: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two patches a query reads with ``reads: blend`` and the second one's weight w_2 (module docstring).

    Args:
        patch: (M, k) patch of each of the query's k nearest anchors, nearest first.
        distance: (M, k) their distances (infinite where the cloud has fewer anchors).
        radius: (M,) distance to the (k+1)-th nearest anchor (infinite where there is none).

    Returns:
        (M, 2) patches P_1, P_2 (P_2 = P_1 where no other patch is among the k) and (M,) the weights w_2 of
        P_2 (0: not read).
    """
    m, k = patch.shape
    columns = np.arange(k)
    other = patch != patch[:, :1]  # (M, k) anchors of another patch than the nearest
    second = np.where(other.any(axis=1), np.argmax(other, axis=1), k)  # (M,) first of another patch, k: none
    rows = np.arange(m)
    p2 = np.where(second < k, patch[rows, np.minimum(second, k - 1)], patch[:, 0])
    third = other & (patch != p2[:, None]) & (columns[None, :] > second[:, None])
    d3 = np.where(third.any(axis=1), distance[rows, np.argmax(third, axis=1)], np.inf)
    d2 = np.where(second < k, distance[rows, np.minimum(second, k - 1)], np.inf)
    reach = np.minimum(d3, radius)  # R: a patch not among the k nearest is at least the (k+1)-th distance away
    u1, u2 = reach - distance[:, 0], np.maximum(reach - d2, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w2 = np.where((u1 > 0) & (u2 > 0) & np.isfinite(u1), np.minimum(u2 / u1, 1.0), 0.0)
    return np.stack([patch[:, 0], p2], axis=1).astype(np.int64), w2


def _workers(queries: np.ndarray) -> int:
    """Threads of a k-d tree search: every core for a prediction's many queries, one for a training batch's
    (whose loader workers already share the cores)."""
    return -1 if len(queries) > 100_000 else 1


def window_log_weight(distance: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """log w(d / r), w(t) = (1 - t^2)^2 for t < 1, else 0: (M, k) distances to the k nearest anchors, (M,) radii.

    A missing neighbour (a cloud of at most k anchors: infinite distance) gets -inf; when the
    (k+1)-th anchor is missing (infinite radius) every present neighbour gets weight 1.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(np.isfinite(radius)[:, None], distance / radius[:, None], 0.0)
        return np.where(np.isfinite(distance) & (t < 1.0), 2.0 * np.log1p(-(np.minimum(t, 1.0) ** 2)), -np.inf)


def nearest_anchors(anchors: PackedAnchors, query_points: Sequence[np.ndarray]) -> np.ndarray:
    """(M,) packed row of the nearest anchor, in the same cloud, of every query (clouds stacked in order)."""
    return locate_queries(anchors, query_points).rows[:, 0]


def place_queries(anchors: PackedAnchors, places: QueryPlaces, features: np.ndarray | Tensor) -> Queries:
    """The :class:`Queries` at ``places`` (from :func:`locate_queries`), with their features."""
    layout = anchors.layout
    features = torch.as_tensor(features, dtype=torch.float32)
    if len(features) != len(places):
        raise InvalidInputError(f"{len(places)} query points but {len(features)} rows of query features")
    if places.window is not None:  # reads: nearest
        return Queries(features, (), nearest_keys(layout, places))
    patch_of_row = np.repeat(np.arange(layout.num_patches), np.diff(layout.patch_start))
    patch_cloud = layout.whole.patch_cloud.cpu().numpy()
    nearest_row = places.rows[:, 0]
    groups = tuple(group_queries(patch_of_row[rank[nearest_row]], patch_cloud) for rank in anchors.tree_rank)
    if places.pair is None:
        return Queries(features, groups)
    second = np.flatnonzero(places.pair_weight > 0)  # reads: blend: the queries that read a second patch
    if len(second) == 0:  # none: query 0 at weight 0 (its output unchanged), for one shape of the inputs
        second = np.zeros(1, dtype=np.int64)
    blend = SecondPatch(
        torch.from_numpy(second), group_queries(places.pair[second, 1], patch_cloud),
        torch.from_numpy(places.pair_weight[second].astype(np.float32)),
    )  # fmt: skip
    return Queries(features, groups, blend=blend)


def nearest_keys(layout: PatchLayout, places: QueryPlaces) -> NearestKeys:
    """The :class:`NearestKeys` of queries at ``places`` (with their k nearest anchors and window weights)."""
    num_anchors, num_clouds = layout.num_points, layout.num_clouds
    order = np.lexsort((places.rows[:, 0], places.cloud))  # (M,) queries by cloud, then by their nearest anchor
    per_cloud = np.bincount(places.cloud, minlength=num_clouds)  # (B,) queries of every cloud
    cloud_start = np.concatenate([[0], np.cumsum(per_cloud)[:-1]])
    groups_of = -(-per_cloud // QUERY_GROUP)  # (B,) groups of every cloud: runs of QUERY_GROUP, the last shorter
    first_group = np.concatenate([[0], np.cumsum(groups_of)[:-1]])
    cloud = places.cloud[order]
    group = np.empty(len(order), dtype=np.int64)
    group[order] = first_group[cloud] + (np.arange(len(order)) - cloud_start[cloud]) // QUERY_GROUP
    num_groups = int(groups_of.sum())
    groups = _slots(group, num_groups)
    slots = groups.slots.shape[1]
    rank = groups.query_slot.numpy() - group * slots  # slot of every query within its group
    k = places.rows.shape[1]
    keep = np.isfinite(places.window.ravel())  # pairs of weight 0 (and missing neighbours) are not keys
    pair_group, pair_rank = np.repeat(group, k)[keep], np.repeat(rank, k)[keep]
    pair_anchor, pair_bias = places.rows.ravel()[keep], places.window.ravel()[keep]
    keys, which = np.unique(pair_group * num_anchors + pair_anchor, return_inverse=True)  # sorted by group
    key_group = keys // num_anchors
    count = np.bincount(key_group, minlength=num_groups)
    position = np.arange(len(keys)) - np.concatenate([[0], np.cumsum(count)[:-1]])[key_group]
    length = max(int(count.max()) if len(count) else 1, 1)
    key_rows = np.zeros((num_groups, length), dtype=np.int64)
    key_rows[key_group, position] = keys % num_anchors
    group_cloud = np.repeat(np.arange(num_clouds), groups_of)
    valid = supernode_valid(layout)  # (B, S)
    bias = np.full((num_groups, slots, length + valid.shape[1]), -np.inf, dtype=np.float32)
    bias[pair_group, pair_rank, position[which]] = pair_bias
    bias[:, :, length:] = np.where(valid[group_cloud], 0.0, -np.inf)[:, None, :]
    uniform = int(groups_of[0]) if num_groups and (groups_of == groups_of[0]).all() else 0
    return NearestKeys(
        groups, torch.from_numpy(key_rows), torch.from_numpy(bias), torch.from_numpy(group_cloud), uniform
    )


def supernode_valid(layout: PatchLayout) -> np.ndarray:
    """(B, S) bool: which padded supernode slots of every cloud hold a real supernode, read from the layout's own
    key bias (its last S columns, the same for every patch of a cloud)."""
    w, s = layout.whole, layout.sub_index.shape[1]
    if w.key_bias is None:  # nothing padded
        return np.ones((layout.num_clouds, s), dtype=bool)
    first = np.searchsorted(w.patch_cloud.cpu().numpy(), np.arange(layout.num_clouds))  # first patch of each cloud
    return np.isfinite(w.key_bias[first, 0, 0, w.key_bias.shape[-1] - s :].cpu().numpy())
