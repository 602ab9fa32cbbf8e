"""How a packed batch of clouds is cut into padded patches and supernodes.

A batch of B clouds is *packed*: the points of all clouds stacked, ``(N, C)``,
each cloud already in its ball-tree order, cloud ``b`` at rows
``offsets[b]:offsets[b+1]``. Cloud b is cut into ``K_b = 2**level_b`` patches
(the runs of that level, sizes differing by at most one; with adaptive patches,
subtrees of several depths: ``geometry/adaptive.py``) and every patch into
``Q`` sub-runs (the subtrees ``log2 Q`` levels deeper), each pooled into one
supernode. Patches of all clouds are numbered cloud after cloud, ``p = 0..P-1``,
and patch p owns supernodes ``p*Q .. p*Q+Q-1``.

For attention the patches are padded to a common length ``L`` (the largest
patch in the batch) and the supernodes of each cloud to ``S`` (the most any
cloud has). Padded slots never become keys (an additive -inf bias), never enter
a pooled supernode (pooling runs on the packed points), and their outputs are
dropped. The layout is built once per batch, on the CPU, from the cloud sizes
alone; nothing here depends on the features.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor

from msptcli.errors import InvalidInputError
from msptcli.geometry.adaptive import PatchCut, adaptive_cut, uniform_cut
from msptcli.model.config import ModelConfig


@dataclass(frozen=True)
class PatchGroup:
    """Patches of a chunk of about one size (adaptive patches), padded to their own longest.

    PMSA attends group by group, so that small patches do not pay for the padding of the largest.
    """

    patch_index: Tensor  # (g, Lg) long: local point of each slot (0 where padded)
    patch_cloud: Tensor  # (g,) long: cloud of each patch
    key_bias: Tensor | None  # (g, 1, 1, Lg + S) 0 / -inf, None when nothing is padded
    cloud_runs: tuple[tuple[int, int], ...] = ()  # per cloud met, in order: (cloud, patches of it in the group)


@dataclass(frozen=True)
class PatchChunk:
    """Patches ``p0:p1`` of a layout with indices local to their points ``n0:n1``.

    The whole layout is one chunk; streaming inference walks several.
    """

    p0: int
    p1: int
    n0: int
    n1: int
    patch_index: Tensor  # (p, L) long: local point of each slot (0 where padded)
    point_slot: Tensor  # (n,) long: flat slot (patch * L + i) of each local point
    patch_cloud: Tensor  # (p,) long: cloud of each patch
    sub_slots: Tensor  # (p * Q, Ls) long: local points of each sub-run, padded to the longest (0 where padded)
    sub_count: Tensor  # (p * Q,) points pooled into each supernode (0: empty sub-run)
    key_bias: Tensor | None  # (p, 1, 1, L + S) 0 / -inf, None when nothing is padded
    # Host-side facts that let attention skip copies (the defaults always work, e.g. in an exported graph):
    exact: bool = False  # every patch is full: slot (p, i) is local point p * L + i, so gathers are views
    cloud_runs: tuple[tuple[int, int], ...] = ()  # per cloud met, in order: (cloud, patches of it in the chunk)
    # Patches of very different sizes (adaptive): attention group by group (empty: all at once, padded to L).
    groups: tuple[PatchGroup, ...] = ()
    group_slot: Tensor | None = None  # (n,) long: row of each local point in the groups' slots, group after group

    @property
    def num_patches(self) -> int:
        return self.p1 - self.p0

    @property
    def num_points(self) -> int:
        return self.n1 - self.n0


@dataclass(frozen=True)
class PatchLayout:
    """Index tensors of one packed batch (see the module docstring)."""

    sizes: tuple[int, ...]  # points of every cloud (Python ints: no device sync to read them)
    num_supernodes: int  # Q
    patch_len: int  # L
    patch_start: np.ndarray  # (P + 1,) on the host: packed rows of patch p are patch_start[p]:patch_start[p+1]
    sub_index: Tensor  # (B, S) long: supernodes of each cloud (0 where padded)
    whole: PatchChunk  # all patches at once
    patch_cloud_host: np.ndarray | None = None  # (P,) the cloud of every patch, on the host (None: unknown)
    sub_valid_host: np.ndarray | None = None  # (B, S) bool: padded supernodes of every cloud that are real
    size_groups: bool = False  # attend in groups of patches of about one size (adaptive patches)

    @property
    def patch_sizes(self) -> np.ndarray:
        """(P,) points of every patch."""
        return np.diff(self.patch_start)

    @property
    def num_clouds(self) -> int:
        return len(self.sizes)

    @property
    def num_points(self) -> int:
        return self.whole.n1

    @property
    def num_patches(self) -> int:
        return self.whole.num_patches

    def to(self, device: torch.device | str) -> PatchLayout:
        """The same layout with every tensor on ``device``."""
        return _to(self, device)

    def chunks(self, max_points: int) -> Iterator[PatchChunk]:
        """Consecutive runs of whole patches of at most ``max_points`` points (at least one patch each)."""
        starts = self.patch_start
        p0 = 0
        while p0 < self.num_patches:
            p1 = int(np.searchsorted(starts, starts[p0] + max_points, side="right")) - 1
            p1 = min(max(p1, p0 + 1), self.num_patches)
            yield self.chunk(p0, p1)
            p0 = p1

    def chunk(self, p0: int, p1: int) -> PatchChunk:
        """Patches ``p0:p1`` with indices local to their points."""
        if (p0, p1) == (0, self.num_patches):
            return self.whole
        w = self.whole
        n0, n1 = int(self.patch_start[p0]), int(self.patch_start[p1])  # host array: no device sync
        subs = slice(p0 * self.num_supernodes, p1 * self.num_supernodes)  # the chunk's supernodes
        return self._grouped(
            PatchChunk(
                p0=p0,
                p1=p1,
                n0=n0,
                n1=n1,
                patch_index=torch.where(w.patch_index[p0:p1] >= n0, w.patch_index[p0:p1] - n0, 0),
                point_slot=w.point_slot[n0:n1] - p0 * self.patch_len,
                patch_cloud=w.patch_cloud[p0:p1],
                sub_slots=torch.where(w.sub_slots[subs] >= n0, w.sub_slots[subs] - n0, 0),
                sub_count=w.sub_count[subs],
                key_bias=None if w.key_bias is None else w.key_bias[p0:p1],
                exact=w.exact,
                cloud_runs=() if self.patch_cloud_host is None else _cloud_runs(self.patch_cloud_host[p0:p1]),
            )
        )

    def _grouped(self, chunk: PatchChunk) -> PatchChunk:
        """``chunk`` with its patches in groups of about one size (``size_groups``: adaptive patches).

        Patches sorted by size form a group while the largest is at most 1.25 times the smallest
        (plus one point); none are formed when that gives one group.
        """
        if not self.size_groups or self.patch_cloud_host is None or self.sub_valid_host is None:
            return chunk
        sizes = np.diff(self.patch_start[chunk.p0 : chunk.p1 + 1])
        kind = np.zeros(len(sizes), dtype=np.int64)
        by_size = np.argsort(sizes, kind="stable")
        smallest = sizes[by_size[0]]
        for rank, p in enumerate(by_size[1:], start=1):
            new = sizes[p] > 1.25 * smallest + 1
            kind[p] = kind[by_size[rank - 1]] + new
            smallest = sizes[p] if new else smallest
        kinds = np.unique(kind)
        if len(kinds) < 2:
            return chunk
        starts = self.patch_start[chunk.p0 : chunk.p1] - chunk.n0
        group_slot = np.empty(chunk.num_points, dtype=np.int64)
        groups, offset = [], 0
        for k in kinds:
            members = np.flatnonzero(kind == k)
            length = int(sizes[members].max())
            index, valid = _padded(starts[members], sizes[members], length)  # (g, Lg) each
            group_slot[index[valid]] = offset + np.flatnonzero(valid.reshape(-1))
            offset += valid.size
            clouds = self.patch_cloud_host[chunk.p0 + members]
            bias = _key_bias(np.concatenate([valid, self.sub_valid_host[clouds]], axis=1))  # (g, 1, 1, Lg + S)
            groups.append(PatchGroup(_long(index), _long(clouds), bias, _cloud_runs(clouds)))
        grouped = replace(chunk, groups=tuple(groups), group_slot=_long(group_slot))
        device = chunk.patch_index.device
        return grouped if device.type == "cpu" else _to(grouped, device)


def cloud_cut(n: int, config: ModelConfig, features: np.ndarray | Tensor | None = None) -> PatchCut:
    """The patches of a cloud of ``n`` points: the uniform cut of ``config.patch_level(n)``, or with
    ``model.adaptive`` the variance-adaptive cut of its ``features`` (in tree order) at that budget."""
    level = config.patch_level(n)
    if config.adaptive is None:
        return uniform_cut(n, level)
    if features is None:
        raise InvalidInputError("adaptive patches need the features of the cloud")
    values = np.asarray(features.detach().cpu() if isinstance(features, Tensor) else features)
    values = values[:, config.adaptive.from_channel :]
    if values.shape[1] == 0:
        raise InvalidInputError(
            f"model.adaptive.from_channel {config.adaptive.from_channel} leaves none of the {features.shape[1]} inputs"
        )
    return adaptive_cut(values, level, refine=config.adaptive.refine, min_points=config.num_supernodes)


def build_layout(sizes: Sequence[int], config: ModelConfig, features: np.ndarray | Tensor | None = None) -> PatchLayout:
    """The layout of a batch of clouds with ``sizes`` points, patches chosen by ``config`` (``cloud_cut``).

    ``features``: the packed (N, F) inputs, every cloud in tree order; needed for adaptive patches.
    """
    sizes_arr = np.asarray([int(n) for n in sizes], dtype=np.int64)
    if sizes_arr.ndim != 1 or len(sizes_arr) == 0:
        raise InvalidInputError("a batch needs at least one cloud")
    if (sizes_arr < 1).any():
        raise InvalidInputError(f"cloud {int(np.flatnonzero(sizes_arr < 1)[0])} is empty")
    num_supernodes = config.num_supernodes  # Q
    offsets = np.concatenate([[0], np.cumsum(sizes_arr)])
    if features is not None and len(features) != offsets[-1]:
        raise InvalidInputError(f"{len(features)} rows of features for clouds of {int(offsets[-1])} points")
    cuts = [
        cloud_cut(int(n), config, None if features is None else features[start : start + n])
        for start, n in zip(offsets[:-1], sizes_arr, strict=True)
    ]

    # Patch and sub-run bounds, as packed rows, cloud after cloud.
    patch_start = _packed_bounds(offsets, [cut.bounds() for cut in cuts])
    sub_start = _packed_bounds(offsets, [cut.sub_bounds(num_supernodes.bit_length() - 1) for cut in cuts])
    patch_size = np.diff(patch_start)
    sub_count = np.diff(sub_start)
    num_patches = len(patch_size)
    length = int(patch_size.max())
    cloud_patches = np.concatenate([[0], np.cumsum([len(cut) for cut in cuts])])

    # Padded patches: slot (p, i) holds packed row patch_start[p] + i while i < size_p.
    patch_index, valid = _padded(patch_start[:-1], patch_size, length)  # (P, L) each
    patch_of_point = np.repeat(np.arange(num_patches), patch_size)
    point_slot = patch_of_point * length + (np.arange(offsets[-1]) - patch_start[:-1][patch_of_point])
    sub_slots, _ = _padded(sub_start[:-1], sub_count, max(int(sub_count.max()), 1))  # (P * Q, Ls)
    patch_cloud = np.repeat(np.arange(len(sizes_arr)), np.diff(cloud_patches))

    # Supernodes of each cloud, padded to the most any cloud has.
    subs_per_cloud = np.diff(cloud_patches) * num_supernodes
    sub_index, sub_in_cloud = _padded(cloud_patches[:-1] * num_supernodes, subs_per_cloud, int(subs_per_cloud.max()))
    sub_valid = sub_in_cloud & (sub_count[sub_index] > 0)  # (B, S)
    key_bias = _key_bias(np.concatenate([valid, sub_valid[patch_cloud]], axis=1))  # (P, 1, 1, L + S)

    whole = PatchChunk(
        p0=0,
        p1=num_patches,
        n0=0,
        n1=int(offsets[-1]),
        patch_index=_long(patch_index),
        point_slot=_long(point_slot),
        patch_cloud=_long(patch_cloud),
        sub_slots=_long(sub_slots),
        sub_count=_long(sub_count),
        key_bias=key_bias,
        exact=bool(valid.all()),
        cloud_runs=_cloud_runs(patch_cloud),
    )
    layout = PatchLayout(
        sizes=tuple(int(n) for n in sizes_arr),
        num_supernodes=num_supernodes,
        patch_len=length,
        patch_start=patch_start,
        sub_index=_long(sub_index),
        whole=whole,
        patch_cloud_host=patch_cloud,
        sub_valid_host=sub_valid,
        size_groups=config.adaptive is not None,
    )
    return replace(layout, whole=layout._grouped(whole))


def _packed_bounds(offsets: np.ndarray, bounds: Sequence[np.ndarray]) -> np.ndarray:
    """Every cloud's run bounds (from 0 to its size) as packed rows, cloud after cloud: (runs + 1,), ending at N."""
    return np.concatenate([*(start + b[:-1] for start, b in zip(offsets[:-1], bounds, strict=True)), [offsets[-1]]])


def _padded(starts: np.ndarray, sizes: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Runs of ``sizes`` rows from rows ``starts``, padded to ``length`` slots: (k, length) the row of every slot
    (0 where padded) and whether the slot is real."""
    slot = np.arange(length)
    valid = slot[None, :] < sizes[:, None]
    return np.where(valid, starts[:, None] + slot[None, :], 0), valid


def _key_bias(key_valid: np.ndarray) -> Tensor | None:
    """(k, keys) bool -> (k, 1, 1, keys) float32 attention bias, 0 / -inf; None when every key is real."""
    if key_valid.all():
        return None
    return torch.from_numpy(np.where(key_valid, 0.0, -np.inf).astype(np.float32))[:, None, None, :]


def _long(a: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


def _cloud_runs(patch_cloud: np.ndarray) -> tuple[tuple[int, int], ...]:
    """(cloud, number of its patches) for every run of consecutive patches of one cloud."""
    clouds, counts = np.unique(patch_cloud, return_counts=True)  # patches are numbered cloud after cloud
    return tuple((int(c), int(k)) for c, k in zip(clouds, counts, strict=True))


def _to(obj, device):  # type: ignore[no-untyped-def]
    """A copy of a (nested) frozen dataclass with its tensors on ``device``."""
    values = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, Tensor):
            v = v.to(device)
        elif isinstance(v, PatchChunk):
            v = _to(v, device)
        elif isinstance(v, tuple) and v and isinstance(v[0], PatchGroup):
            v = tuple(_to(g, device) for g in v)
        values[f.name] = v
    return type(obj)(**values)


def point_cloud(chunk: PatchChunk, patch_len: int | Tensor) -> Tensor:
    """(n,) long: the cloud of every point of ``chunk`` (from its patches; traceable: no host-side sizes)."""
    return chunk.patch_cloud.index_select(0, torch.div(chunk.point_slot, patch_len, rounding_mode="floor"))
