"""Geometry on point clouds: the ball-tree ordering and its patches."""

from msptcli.geometry.balltree import (
    ball_tree_order,
    default_num_threads,
    rotation_matrix,
    run_boundaries,
    run_boundaries_batch,
    tree_depth,
)

__all__ = [
    "ball_tree_order",
    "default_num_threads",
    "rotation_matrix",
    "run_boundaries",
    "run_boundaries_batch",
    "tree_depth",
]
