"""Bad input to the ball tree: a ValueError that names the problem and, in a batch, the cloud."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from msptcli.errors import InvalidInputError
from msptcli.geometry import ball_tree_order, rotation_matrix, run_boundaries, tree_depth


@pytest.mark.parametrize(
    ("points", "message"),
    [
        (np.zeros((10, 4)), r"shape \(N, 2\) or \(N, 3\), got \(10, 4\)"),
        (np.zeros(10), r"got \(10,\)"),
        (np.zeros((2, 5, 3)), r"got \(2, 5, 3\)"),
        (np.zeros((0, 3)), "cloud 0 is empty"),
        (np.array([["a", "b", "c"]]), "dtype <U1"),
        (np.zeros((4, 3), dtype=np.complex64), "complex64"),
    ],
)
def test_bad_points(points, message):
    with pytest.raises(ValueError, match=message):
        ball_tree_order(points)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_coordinates_name_cloud_and_point(bad, dtype):
    clouds = [np.zeros((5, 3), dtype), np.zeros((8, 3), dtype), np.zeros((4, 3), dtype)]
    clouds[1][6, 2] = bad
    with pytest.raises(InvalidInputError, match=r"cloud 1: point 6 has a non-finite coordinate \(0, 0, -?(nan|inf)\)"):
        ball_tree_order(clouds)
    with pytest.raises(ValueError, match="cloud 1: point 6"):
        ball_tree_order(np.concatenate(clouds), offsets=[0, 5, 13, 17])
    with pytest.raises(ValueError, match="cloud 0: point 9"):
        ball_tree_order(np.concatenate(clouds)[2:])


def test_non_finite_in_rotated_cloud():
    points = np.zeros((5, 3))
    points[2, 0] = np.nan
    with pytest.raises(ValueError, match="point 2 has a non-finite"):
        ball_tree_order(points, rotation=rotation_matrix(0.5))


def test_empty_cloud_in_batch_is_named():
    with pytest.raises(ValueError, match="cloud 2 is empty"):
        ball_tree_order([np.zeros((3, 3)), np.zeros((1, 3)), np.zeros((0, 3))])
    with pytest.raises(ValueError, match="cloud 1 is empty"):
        ball_tree_order(np.zeros((4, 3)), offsets=[0, 2, 2, 4])


def test_bad_batches():
    with pytest.raises(ValueError, match="batch is empty"):
        ball_tree_order([])
    with pytest.raises(ValueError, match="same dimension"):
        ball_tree_order([np.zeros((3, 3)), np.zeros((3, 2))])
    with pytest.raises(ValueError, match=r"cloud 1 must have shape"):
        ball_tree_order([np.zeros((3, 3)), np.zeros((3, 4))])


@pytest.mark.parametrize(
    ("offsets", "message"),
    [
        ([0, 2, 5], "end at the number of points 4"),
        ([1, 4], "start at 0"),
        ([[0, 4]], "1-D integer array"),
        ([0.0, 4.0], "1-D integer array"),
        ([4], "1-D integer array"),
        ([0, 3, 2, 4], "cloud 1 is empty or has negative size"),
    ],
)
def test_bad_offsets(offsets, message):
    with pytest.raises(ValueError, match=message):
        ball_tree_order(np.zeros((4, 3)), offsets=np.asarray(offsets))


def test_bad_rotation():
    with pytest.raises(ValueError, match=r"shape \(3, 3\)"):
        ball_tree_order(np.zeros((4, 3)), rotation=np.eye(2))
    with pytest.raises(ValueError, match="orthogonal"):
        ball_tree_order(np.zeros((4, 3)), rotation=2 * np.eye(3))
    with pytest.raises(ValueError, match="dim 2 or 3"):
        rotation_matrix(0.1, dim=4)


def test_bad_threads_and_levels():
    with pytest.raises(ValueError, match="num_threads"):
        ball_tree_order(np.zeros((4, 3)), num_threads=-1)
    with pytest.raises(ValueError, match="level"):
        run_boundaries(10, -1)
    with pytest.raises(ValueError, match="at least one point"):
        tree_depth(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.gpu
def test_cuda_tensor_is_refused_with_advice():
    with pytest.raises(ValueError, match=r"pass \.cpu\(\)"):
        ball_tree_order(torch.zeros(4, 3, device="cuda"))


def test_meta_tensor_is_refused():
    with pytest.raises(ValueError, match="meta"):
        ball_tree_order(torch.zeros(4, 3, device="meta"))
