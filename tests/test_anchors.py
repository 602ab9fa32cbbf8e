"""Anchors: stratified subsets, anchors of a geometry (deterministic, on and around the body, nearly the same for any
tessellation) and of a prepared sample."""

from __future__ import annotations

import numpy as np
import pytest
import pyvista as pv
from helpers import EXAMPLE_CASE
from scipy.spatial import cKDTree

from msptcli.data.anchors import draw_rows, geometry_anchors, sample_anchors
from msptcli.data.manifest import FieldStats, Stats
from msptcli.data.sample import Sample
from msptcli.errors import DatasetError, InvalidInputError
from msptcli.geometry.balltree import ball_tree_order, run_boundaries
from msptcli.geometry.distance import distance_to_surface
from msptcli.geometry.sampling import outside_body, sample_on_surface
from msptcli.geometry.stratify import stratified_subset
from msptcli.model import AnchorConfig


@pytest.fixture(scope="module")
def stl_body() -> pv.PolyData:
    return pv.read(EXAMPLE_CASE / "geometry.stl")


@pytest.fixture(scope="module")
def stats() -> Stats:
    one = FieldStats(mean=[0.0], std=[1.0])
    return Stats(coord_mean=[0.5, 0.0, 0.2], coord_scale=1.0, surface={"p": one}, volume={"p": one})


def template(n: int = 6000, seed: int = 0) -> np.ndarray:
    """Volume points relative to a body's box, as a checkpoint keeps them: denser near the box."""
    rng = np.random.default_rng(seed)
    return (0.5 + rng.normal(scale=0.6, size=(n, 3))).astype(np.float32)


def mean_gap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance from each point of ``a`` to the nearest of ``b``."""
    return float(cKDTree(b).query(a)[0].mean())


def test_stratified_subset_takes_one_point_per_run_nearest_its_centroid():
    rng = np.random.default_rng(0)
    x = rng.random((1000, 3))
    rows = stratified_subset(x, 64)
    assert len(rows) == 64 and np.array_equal(rows, np.sort(rows))
    order = ball_tree_order(x)
    bounds = run_boundaries(1000, 6)
    for a in range(64):  # brute force, run by run
        run = order[bounds[a] : bounds[a + 1]]
        centroid = x[run].mean(axis=0)
        assert run[np.argmin(((x[run] - centroid) ** 2).sum(axis=1))] in rows
    assert np.array_equal(stratified_subset(x, 64), rows)  # deterministic
    assert np.array_equal(stratified_subset(x[:50], 64), np.arange(50))  # fewer points than asked: all
    with pytest.raises(InvalidInputError, match="power of two"):
        stratified_subset(x, 48)


def test_two_stratified_draws_are_much_closer_than_two_random_draws():
    rng = np.random.default_rng(1)
    a, b = rng.random((32 * 512, 3)), rng.random((32 * 512, 3))  # two independent samples of one distribution
    random_gap = mean_gap(a[:512], b[:512])
    stratified_gap = mean_gap(a[stratified_subset(a, 512)], b[stratified_subset(b, 512)])
    assert stratified_gap < 0.6 * random_gap, (stratified_gap, random_gap)


def test_draw_rows_uses_the_candidates_asked_for():
    rng = np.random.default_rng(0)
    x = rng.random((5000, 3))
    rows = draw_rows(len(x), 16, 8, np.random.default_rng(3), x)
    assert len(rows) == 16 and len(set(rows.tolist())) == 16
    assert draw_rows(len(x), 0, 8, rng, x).shape == (0,) and draw_rows(0, 16, 8, rng, x[:0]).shape == (0,)


def test_geometry_anchors_lie_on_and_around_the_body_and_are_deterministic(stl_body, stats):
    config = AnchorConfig(surface=512, volume=256, candidates=8)
    points, inputs = geometry_anchors(stl_body, stats, config, template())
    assert points.shape == (768, 3) and inputs.shape == (768, 11)
    surface, volume = points[:512], points[512:]
    d_surface, _ = distance_to_surface(surface, stl_body)
    assert d_surface.max() < 1e-9 * np.ptp(np.asarray(stl_body.points), axis=0).max() + 1e-12
    assert outside_body(volume, stl_body).all()
    assert (inputs[:512, 10] == 1).all() and (inputs[512:, 10] == 0).all()
    assert np.allclose(np.linalg.norm(inputs[:512, 3:6], axis=1), 1, atol=1e-5)  # outward normals
    assert (inputs[512:, 6] > 0).all()  # distance to the body
    again, _ = geometry_anchors(stl_body, stats, config, template())
    assert np.array_equal(points, again)
    other, _ = geometry_anchors(stl_body, stats, config.model_copy(update={"seed": 1}), template())
    assert not np.array_equal(points, other)
    alone, _ = geometry_anchors(stl_body, stats, config, None)  # no template: surface anchors only
    assert np.array_equal(alone, surface)


def test_geometry_anchors_nearly_ignore_the_tessellation(stl_body, stats):
    """A 4x subdivision of the same body: the stratified anchors differ by a small fraction of their spacing,
    the random ones (``candidates: 1``) by about a spacing."""
    finer = stl_body.triangulate().subdivide(1, "linear")
    gaps = {}
    for c in (1, 32):
        config = AnchorConfig(surface=1024, volume=0, candidates=c)
        a, _ = geometry_anchors(stl_body, stats, config, None)
        b, _ = geometry_anchors(finer, stats, config, None)
        gaps[c] = mean_gap(a, b)
    spacing = _spacing(a)
    assert gaps[32] < 0.7 * gaps[1], gaps
    assert gaps[32] < 0.7 * spacing, (gaps, spacing)


def _spacing(x: np.ndarray) -> float:
    """Mean distance of each point to its nearest other point."""
    return float(cKDTree(x).query(x, k=2)[0][:, 1].mean())


def test_surface_anchors_of_a_sample_follow_its_area_weighted_pool(stl_body, stats):
    pool, normals = sample_on_surface(stl_body, 20_000, seed=0)
    sample = Sample(
        "s",
        {
            "surface/points": pool[:10].astype(np.float32),
            "anchors/surface_points": pool.astype(np.float32),
            "anchors/surface_normals": normals.astype(np.float32),
        },
    )
    config = AnchorConfig(surface=256, volume=256, candidates=8)
    points, inputs = sample_anchors(sample, stats, config, np.random.default_rng(0))
    assert points.shape == (256, 3) and inputs.shape == (256, 11)  # no volume in the sample: surface anchors only
    assert np.isin(points[:, 0].astype(np.float32), pool[:, 0].astype(np.float32)).all()
    old = Sample("old", {"surface/points": pool[:10].astype(np.float32)})
    with pytest.raises(DatasetError, match="prepare` again"):
        sample_anchors(old, stats, config, np.random.default_rng(0))
