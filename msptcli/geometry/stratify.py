"""A stratified subset of a point set: one representative per run of its ball tree.

A random sample of a distribution jitters by about one point spacing from draw to draw. To get
nearly the same ``n`` points from two independent samples of the same distribution (another seed,
another tessellation of the same body), draw ``c * n`` candidates, order them by their balanced
ball tree and cut the order into its ``n`` runs of the level ``log2 n``; each run gives the
candidate nearest the run's centroid. The runs are equal-count cells of the distribution whose
bounds settle as ``c`` grows, so the representatives of two draws differ by a fraction of a cell.
"""

from __future__ import annotations

import numpy as np

from msptcli.errors import InvalidInputError
from msptcli.geometry.balltree import ball_tree_order, run_boundaries


def stratified_subset(points: np.ndarray, n: int) -> np.ndarray:
    """Rows of ``n`` representatives of ``points`` (m, 3), one per ball-tree run (see the module docstring).

    ``n`` must be a power of two; with ``n >= m`` every row is returned. The result is sorted.
    """
    m = len(points)
    if n < 1 or n & (n - 1):
        raise InvalidInputError(f"a stratified subset needs a power of two of points, got {n}")
    if n >= m:
        return np.arange(m)
    order = np.asarray(ball_tree_order(np.ascontiguousarray(points)), dtype=np.int64)
    bounds = run_boundaries(m, n.bit_length() - 1)  # (n + 1,) runs of the level log2 n
    x = np.asarray(points, dtype=np.float64)[order]  # (m, 3) in tree order
    run = np.repeat(np.arange(n), np.diff(bounds))  # (m,) run of each ordered row
    centroid = np.add.reduceat(x, bounds[:-1], axis=0) / np.diff(bounds)[:, None]  # (n, 3)
    dist = np.einsum("ij,ij->i", x - centroid[run], x - centroid[run])
    nearest = np.lexsort((dist, run))[bounds[:-1]]  # first row of each run after sorting by distance
    return np.sort(order[nearest])
