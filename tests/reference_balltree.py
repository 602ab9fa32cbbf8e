"""A slow, obviously correct ball tree in pure Python/NumPy, and a checker of tree properties.

The compiled tree is defined so that its permutation is unique; this reference
builds the same definition one node at a time with ``np.lexsort``.
"""

from __future__ import annotations

import numpy as np


def reference_order(points: np.ndarray) -> np.ndarray:
    """Depth-first leaf order of the balanced ball tree of one cloud (``points`` in working precision)."""
    n = points.shape[0]
    out = np.empty(n, dtype=np.int64)

    def build(idx: np.ndarray, level: int, a: int) -> None:
        start, end = (a * n) >> level, ((a + 1) * n) >> level
        assert len(idx) == end - start
        if end - start < 2:
            out[start:end] = idx
            return
        mid = ((2 * a + 1) * n) >> (level + 1)
        pts = points[idx]
        spread = pts.max(axis=0) - pts.min(axis=0)  # in the input precision
        axis = int(np.argmax(spread))  # first maximum: ties go to the lowest axis
        order = idx[np.lexsort((idx, pts[:, axis]))]  # by coordinate, then by index
        build(order[: mid - start], level + 1, 2 * a)
        build(order[mid - start :], level + 1, 2 * a + 1)

    build(np.arange(n, dtype=np.int64), 0, 0)
    return out


def check_tree(points: np.ndarray, perm: np.ndarray) -> None:
    """Assert the tree properties of ``perm`` directly, without rebuilding the tree.

    At every node: the two children are the runs of the closed-form bounds, and
    along the axis of largest spread every point of the left child lies at or
    below every point of the right child.
    """
    n = points.shape[0]
    assert perm.shape == (n,)
    assert np.array_equal(np.sort(perm), np.arange(n)), "not a permutation"
    ordered = points[perm]
    stack = [(0, 0)]
    while stack:
        level, a = stack.pop()
        start, end = (a * n) >> level, ((a + 1) * n) >> level
        if end - start < 2:
            continue
        mid = ((2 * a + 1) * n) >> (level + 1)
        assert mid - start in ((end - start) // 2, (end - start + 1) // 2), "unbalanced split"
        node = ordered[start:end]
        spread = node.max(axis=0) - node.min(axis=0)
        axis = int(np.argmax(spread))
        left, right = node[: mid - start, axis], node[mid - start :, axis]
        assert left.max() <= right.min(), f"node ({level}, {a}) is not split at the median of axis {axis}"
        stack += [(level + 1, 2 * a), (level + 1, 2 * a + 1)]
