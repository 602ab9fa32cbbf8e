"""Patches of a ball-tree order: the K contiguous runs MSPT attends within."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from msptcli.errors import InvalidInputError
from msptcli.geometry.balltree import run_boundaries


def patch_level(
    n: int, *, num_patches: int | None = None, patch_size: int | None = None, num_supernodes: int = 1
) -> int:
    """Depth ``level`` of the patches of a cloud of ``n`` points: ``K = 2**level`` patches.

    Rule: ``level = log2(num_patches)`` if given; else the level whose patches hold about
    ``patch_size`` points, ``round(log2(n / patch_size))``; else ``K * Q ~ sqrt(n)`` for ``Q``
    supernodes per patch, ``round(0.5 log2 n) - log2 Q``. Clamped to ``[0, floor(log2 n)]``,
    so every patch holds at least one point (``K <= n``).

    Raises:
        InvalidInputError: ``n < 1``, or a ``num_patches``, ``patch_size`` or ``num_supernodes`` below 1.
    """
    if n < 1:
        raise InvalidInputError(f"a cloud needs at least one point, got {n}")
    for name, value in (("num_patches", num_patches), ("patch_size", patch_size), ("num_supernodes", num_supernodes)):
        if value is not None and value < 1:
            raise InvalidInputError(f"{name} must be at least 1, got {value}")
    if num_patches is not None:
        level = int(math.log2(num_patches))
    elif patch_size is not None:
        level = round(math.log2(max(n / patch_size, 1.0)))
    else:
        level = round(0.5 * math.log2(n)) - int(math.log2(num_supernodes))
    return max(0, min(level, n.bit_length() - 1))  # floor(log2 n): K <= n


def patch_ids(n: int, level: int) -> np.ndarray:
    """``(n,)`` int64: the patch of each position of the tree order at depth ``level``."""
    bounds = run_boundaries(n, level)
    return np.repeat(np.arange(len(bounds) - 1, dtype=np.int64), np.diff(bounds))


@dataclass(frozen=True)
class PatchSummary:
    """How compact the patches of one level are."""

    num_points: int
    level: int
    num_patches: int
    min_size: int
    max_size: int
    mean_radius: float  # mean over patches of the largest distance to the patch centroid
    random_radius: float  # the same for patches of a random order, for comparison


def summarize_patches(
    points: np.ndarray, perm: np.ndarray, level: int, *, bounds: np.ndarray | None = None, seed: int = 0
) -> PatchSummary:
    """Sizes and radii of the patches of ``points[perm]`` at ``level``, next to a random split.

    ``bounds`` (K + 1 tree-order positions) gives other patches than the uniform ones of
    ``level``, e.g. an adaptive cut (``geometry.adaptive``); the random split keeps their sizes.
    """
    n = points.shape[0]
    if bounds is None:
        bounds = run_boundaries(n, level)
    sizes = np.diff(bounds)
    shuffled = np.random.default_rng(seed).permutation(n)
    return PatchSummary(
        num_points=n,
        level=level,
        num_patches=len(sizes),
        min_size=int(sizes.min()),
        max_size=int(sizes.max()),
        mean_radius=_mean_radius(points[perm], bounds),
        random_radius=_mean_radius(points[shuffled], bounds),
    )


def _mean_radius(ordered: np.ndarray, bounds: np.ndarray) -> float:
    starts, sizes = bounds[:-1], np.diff(bounds)
    keep = sizes > 0
    starts, sizes = starts[keep], sizes[keep]
    centroids = np.add.reduceat(ordered.astype(np.float64), starts, axis=0) / sizes[:, None]
    dist = np.linalg.norm(ordered - np.repeat(centroids, sizes, axis=0), axis=1)
    return float(np.maximum.reduceat(dist, starts).mean())
