"""Variance-adaptive patches of a ball-tree order: MATEY's adaptive tokens on the ball tree.

MATEY (Zhang et al., "multiscale adaptive foundation models for spatiotemporal physical
systems") refines a coarse token into smaller ones where the field inside it varies most,
within a budget of tokens. On a balanced ball tree every subtree is a contiguous run of the
tree order, node ``(m, a)`` (depth m, index a) holding positions

    [floor(a n / 2^m), floor((a + 1) n / 2^m))        (``run_boundaries``)

and its children ``(m + 1, 2a)`` and ``(m + 1, 2a + 1)`` split it in two. A *cut* is a set of
nodes that tile the order; the uniform cut at depth l is all ``2^l`` nodes of that depth.

The adaptive cut (``adaptive_cut``) starts from the uniform cut ``refine`` levels above the budget
level l and repeatedly splits the node of highest score, the mean over channels of the variance
of ``values`` inside it, until it holds ``2^l`` patches (the budget: as many patches, and so as
many supernodes, as the uniform cut at depth l). No node is split below depth ``l + refine`` or
into children of fewer than ``min_points`` points. Ties go to the coarser, then the earlier node,
so the cut is a pure function of the values (deterministic), and values without variance give
the uniform cut.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from msptcli.errors import InvalidInputError


@dataclass(frozen=True)
class PatchCut:
    """The patches of one cloud of ``n`` points: nodes of its ball tree that tile the tree order, in order."""

    n: int
    depth: np.ndarray  # (K,) int64 depth m of each patch's node
    index: np.ndarray  # (K,) int64 index a of each patch's node at its depth

    def __len__(self) -> int:
        return len(self.depth)

    def bounds(self) -> np.ndarray:
        """(K + 1,) int64 tree-order positions: patch k is ``bounds[k]:bounds[k + 1]``."""
        starts = (self.index * self.n) >> self.depth
        return np.concatenate([starts, [self.n]]).astype(np.int64)

    def sub_bounds(self, q_levels: int) -> np.ndarray:
        """(K * Q + 1,) bounds of the ``Q = 2**q_levels`` sub-runs of every patch (the subtrees ``q_levels`` deeper)."""
        q = 1 << q_levels
        sub = (self.index[:, None] << q_levels) + np.arange(q)[None, :]  # (K, Q) index of each sub-run node
        starts = (sub * self.n) >> (self.depth[:, None] + q_levels)
        return np.concatenate([starts.reshape(-1), [self.n]]).astype(np.int64)


def uniform_cut(n: int, level: int) -> PatchCut:
    """The ``2**level`` nodes of depth ``level``: MSPT's uniform patches."""
    k = 1 << level
    return PatchCut(n, np.full(k, level, dtype=np.int64), np.arange(k, dtype=np.int64))


def adaptive_cut(values: np.ndarray, level: int, *, refine: int, min_points: int = 1) -> PatchCut:
    """The variance-adaptive cut of a cloud with ``2**level`` patches (see the module docstring).

    Args:
        values: (n, F) per-point values in tree order whose variance drives the refinement.
        level: the budget level: the cut holds ``2**level`` patches, as the uniform cut at that depth.
        refine: levels between the coarsest and the budget level, and between it and the finest.
        min_points: no child of a split holds fewer points (e.g. Q, so every sub-run is non-empty).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or len(values) == 0:
        raise InvalidInputError(f"adaptive patches need (n, F) values of a non-empty cloud, got shape {values.shape}")
    n = len(values)
    if refine < 0 or level < 0 or (1 << level) > n:
        raise InvalidInputError(f"cannot cut {n} points into 2^{level} patches refined over {refine} levels")
    # Prefix sums: the variance of any run in O(F).
    zero = np.zeros((1, values.shape[1]))
    first = np.concatenate([zero, np.cumsum(values, axis=0)])
    second = np.concatenate([zero, np.cumsum(values * values, axis=0)])

    def node(m: int, a: int) -> tuple[float, int, int, int, int]:
        lo, hi = (a * n) >> m, ((a + 1) * n) >> m
        count = max(hi - lo, 1)
        mean = (first[hi] - first[lo]) / count
        var = np.maximum((second[hi] - second[lo]) / count - mean * mean, 0.0)
        # heap entries: (-score, depth, position, index, size); on a tie the coarser, then the earlier node
        return (-float(var.mean()), m, lo, a, hi - lo)

    coarse, finest = max(level - refine, 0), level + refine
    heap = [node(coarse, a) for a in range(1 << coarse)]
    heapq.heapify(heap)
    done: list[tuple[int, int]] = []  # (depth, index) of nodes that are not split any further
    patches = len(heap)
    while patches < (1 << level) and heap:
        _, m, _, a, size = heapq.heappop(heap)
        if m >= finest or size // 2 < min_points:
            done.append((m, a))
            continue
        heapq.heappush(heap, node(m + 1, 2 * a))
        heapq.heappush(heap, node(m + 1, 2 * a + 1))
        patches += 1
    done.extend((m, a) for _, m, _, a, _ in heap)
    done.sort(key=lambda ma: ma[1] << (finest - ma[0]))  # tree order: the node's first position at the finest depth
    depth = np.array([m for m, _ in done], dtype=np.int64)
    index = np.array([a for _, a in done], dtype=np.int64)
    return PatchCut(n, depth, index)
