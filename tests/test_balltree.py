"""The compiled ball tree against a pure-Python reference, its properties and its batch/thread behaviour."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from reference_balltree import check_tree, reference_order

from msptcli.geometry import (
    ball_tree_order,
    rotation_matrix,
    run_boundaries,
    run_boundaries_batch,
    tree_depth,
)


def adversarial_clouds(rng: np.random.Generator, dim: int) -> dict[str, np.ndarray]:
    """Small clouds that break careless trees: ties, degenerate shapes, odd sizes, extreme scales."""
    line = np.zeros((37, dim))
    line[:, 0] = rng.random(37)
    plane = np.zeros((50, dim))
    plane[:, :2] = rng.random((50, 2))
    grid = np.stack(np.meshgrid(*[np.arange(5)] * dim, indexing="ij"), axis=-1).reshape(-1, dim)
    clusters = np.concatenate([rng.normal(0, 1e-3, (40, dim)), rng.normal(100, 1e-3, (23, dim))])
    signed_zeros = np.where(rng.random((30, dim)) < 0.5, -0.0, 0.0)
    signed_zeros[:10, 0] = 1.0
    return {
        "single": rng.random((1, dim)),
        "pair": rng.random((2, dim)),
        "triple": rng.random((3, dim)),
        "prime": rng.random((101, dim)),
        "power_of_two": rng.random((128, dim)),
        "all_duplicates": np.ones((33, dim)),
        "some_duplicates": np.repeat(rng.random((9, dim)), 7, axis=0),
        "collinear": line,
        "coplanar": plane,
        "grid_ties": grid.astype(np.float64),
        "clusters": clusters,
        "sorted": np.sort(rng.random((64, dim)), axis=0),
        "reversed": np.sort(rng.random((64, dim)), axis=0)[::-1].copy(),
        "huge": rng.random((40, dim)) * 1e30,
        "tiny": rng.random((40, dim)) * 1e-30,
        "signed_zeros": signed_zeros,
    }


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_reference_on_adversarial_clouds(rng, dim, dtype):
    for name, cloud in adversarial_clouds(rng, dim).items():
        points = cloud.astype(dtype)
        perm = ball_tree_order(points)
        assert perm.dtype == np.int64
        assert np.array_equal(perm, reference_order(points)), name
        check_tree(points, perm)


@pytest.mark.parametrize("n", [5, 64, 257, 1000, 3001])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_reference_on_random_clouds(rng, n, dtype):
    points = rng.normal(size=(n, 3)).astype(dtype) * np.array([3.0, 1.0, 0.3], dtype=dtype)
    perm = ball_tree_order(points)
    assert np.array_equal(perm, reference_order(points))
    check_tree(points, perm)


def test_large_cloud_has_tree_properties(rng):
    # Large enough for the sampled pivots, the block partition and the parallel tasks.
    points = rng.random((70_000, 3), dtype=np.float32) ** 3
    check_tree(points, ball_tree_order(points))


def test_surface_like_cloud_matches_reference(rng):
    theta, phi = rng.random(4000) * 2 * np.pi, np.arccos(2 * rng.random(4000) - 1)
    sphere = np.stack([np.sin(phi) * np.cos(theta), np.sin(phi) * np.sin(theta), np.cos(phi)], axis=1)
    points = (sphere * [2.0, 1.0, 0.5]).astype(np.float32)
    assert np.array_equal(ball_tree_order(points), reference_order(points))


def test_runs_at_every_level_are_subtrees(rng):
    n = 1234
    points = rng.random((n, 3))
    perm = ball_tree_order(points)
    for level in range(tree_depth(n) + 1):
        bounds = run_boundaries(n, level)
        sizes = np.diff(bounds)
        assert bounds[0] == 0 and bounds[-1] == n and len(sizes) == 2**level
        assert sizes.max() - sizes.min() <= 1
        # A run at this level is the union of its two children at the next level.
        assert set(bounds) <= set(run_boundaries(n, level + 1))
        # The points of one run are spatially separated from those of the next: run a's
        # bounding box along its parent's split axis does not overlap its sibling's.
        for a in range(0, 2**level - 1, 2):
            if sizes[a] and sizes[a + 1]:
                left = points[perm[bounds[a] : bounds[a + 1]]]
                right = points[perm[bounds[a + 1] : bounds[a + 2]]]
                both = np.concatenate([left, right])
                axis = np.argmax(both.max(0) - both.min(0))
                assert left[:, axis].max() <= right[:, axis].min()


def test_run_boundaries_closed_form():
    assert run_boundaries(10, 0).tolist() == [0, 10]
    assert run_boundaries(10, 2).tolist() == [0, 2, 5, 7, 10]
    assert run_boundaries(3, 2).tolist() == [0, 0, 1, 2, 3]
    assert tree_depth(1) == 0 and tree_depth(2) == 1 and tree_depth(1000) == 10 and tree_depth(1024) == 10


def test_run_boundaries_batch_matches_per_cloud():
    offsets = np.array([0, 10, 11, 111, 1111])
    batch = run_boundaries_batch(offsets, 3)
    assert batch.shape == (4, 9)
    for b in range(4):
        n = offsets[b + 1] - offsets[b]
        assert np.array_equal(batch[b], offsets[b] + run_boundaries(n, 3))


def test_batch_equals_clouds_one_by_one(rng):
    clouds = [rng.random((n, 3)).astype(np.float32) for n in (1, 17, 9000, 300, 20_000, 2)]
    alone = [ball_tree_order(c) for c in clouds]
    as_list = ball_tree_order(clouds)
    for a, b in zip(alone, as_list, strict=True):
        assert np.array_equal(a, b)
    offsets = np.cumsum([0] + [len(c) for c in clouds])
    joined = ball_tree_order(np.concatenate(clouds), offsets=offsets)
    for b, a in enumerate(alone):
        assert np.array_equal(joined[offsets[b] : offsets[b + 1]], offsets[b] + a)


def test_same_result_for_any_thread_count(rng):
    single = rng.random((200_000, 3), dtype=np.float32)
    batch = [rng.random((n, 2)) for n in (5000, 40_000, 123, 16_384)]
    expected_single = ball_tree_order(single, num_threads=1)
    expected_batch = ball_tree_order(batch, num_threads=1)
    for threads in (2, 3, 4, None):
        assert np.array_equal(ball_tree_order(single, num_threads=threads), expected_single)
        for a, b in zip(ball_tree_order(batch, num_threads=threads), expected_batch, strict=True):
            assert np.array_equal(a, b)


def test_torch_in_torch_out(rng):
    points = rng.random((500, 3), dtype=np.float32)
    expected = ball_tree_order(points)
    t = torch.from_numpy(points).requires_grad_(True)
    perm = ball_tree_order(t)
    assert isinstance(perm, torch.Tensor) and perm.dtype == torch.int64
    assert np.array_equal(perm.numpy(), expected)
    listed = ball_tree_order([torch.from_numpy(points), points])
    assert isinstance(listed[0], torch.Tensor) and isinstance(listed[1], np.ndarray)
    offsets = torch.tensor([0, 200, 500])
    assert isinstance(ball_tree_order(t, offsets=offsets), torch.Tensor)


def test_float32_is_not_copied_to_float64(rng, monkeypatch):
    from msptcli.geometry import balltree

    seen = []
    original = balltree._balltree.build_order

    def spy(points, *args):
        seen.append(points)
        return original(points, *args)

    monkeypatch.setattr(balltree._balltree, "build_order", spy)
    points = rng.random((100, 3), dtype=np.float32)
    ball_tree_order(points)
    assert seen[0].dtype == np.float32 and np.shares_memory(seen[0], points)


def test_other_dtypes_and_layouts(rng):
    points = rng.integers(0, 50, (300, 3))
    assert np.array_equal(ball_tree_order(points), reference_order(points.astype(np.float64)))
    strided = rng.random((600, 3))[::2]
    assert np.array_equal(ball_tree_order(strided), reference_order(strided))
    half = rng.random((64, 2)).astype(np.float16)
    check_tree(half.astype(np.float32), ball_tree_order(half))
    bf16 = torch.rand(64, 3, dtype=torch.bfloat16)
    check_tree(bf16.float().numpy(), ball_tree_order(bf16).numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rotated_tree_is_the_tree_of_the_rotated_cloud(rng, dtype):
    points = rng.random((2000, 3)).astype(dtype)
    r = rotation_matrix(0.7, axis=1) @ rotation_matrix(0.3, axis=2)
    # The rotated coordinates as the core computes them: double-precision sums in order, rounded.
    x = points.astype(np.float64)
    rotated = np.stack([((0.0 + r[i, 0] * x[:, 0]) + r[i, 1] * x[:, 1]) + r[i, 2] * x[:, 2] for i in range(3)], 1)
    perm = ball_tree_order(points, rotation=r)
    assert np.array_equal(perm, reference_order(rotated.astype(dtype)))
    assert not np.array_equal(perm, ball_tree_order(points))


def test_rotation_in_2d(rng):
    points = rng.random((300, 2))
    r = rotation_matrix(np.pi / 4, dim=2)
    check_tree(points @ r.T, ball_tree_order(points, rotation=r))


def test_gil_is_released_while_building(rng):
    points = rng.random((1_500_000, 3), dtype=np.float32)
    done = threading.Event()
    ticks = 0

    def build():
        ball_tree_order(points, num_threads=1)
        done.set()

    worker = threading.Thread(target=build)
    worker.start()
    while not done.is_set():
        ticks += 1
    worker.join()
    # Holding the GIL for the whole build would leave this loop a handful of turns.
    assert ticks > 10_000


def test_the_checkers_catch_a_wrong_order(rng):
    points = rng.random((200, 3))
    perm = ball_tree_order(points)
    swapped = perm.copy()
    swapped[[0, -1]] = swapped[[-1, 0]]  # two points in the wrong leaves
    with pytest.raises(AssertionError):
        check_tree(points, swapped)
    assert not np.array_equal(swapped, reference_order(points))
    with pytest.raises(AssertionError):
        check_tree(points, rng.permutation(200))


def _order_in_child(points, queue):
    queue.put(ball_tree_order(points))


def test_forked_workers_do_not_hang(rng):
    # libgomp's thread pool does not survive fork(): DataLoader workers forked after the parent
    # built a tree used to wait forever. A forked child now builds on one thread.
    import multiprocessing

    points = rng.random((100_000, 3), dtype=np.float32)
    expected = ball_tree_order(points, num_threads=2)  # the parent's thread pool now exists
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    children = [ctx.Process(target=_order_in_child, args=(points, queue)) for _ in range(2)]
    for child in children:
        child.start()
    try:
        results = [queue.get(timeout=60) for _ in children]
    finally:
        for child in children:
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
    assert all(np.array_equal(r, expected) for r in results)


def test_dataloader_workers_build_trees(rng):
    points = torch.rand(20_000, 3)
    expected = ball_tree_order(points)

    class Clouds(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return ball_tree_order(points)

    loader = torch.utils.data.DataLoader(Clouds(), num_workers=2, timeout=60, multiprocessing_context="fork")
    assert all(torch.equal(batch[0], expected) for batch in loader)
