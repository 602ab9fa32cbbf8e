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
from msptcli.geometry.sampling import outside_body, sample_near_surface, sample_on_surface
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
    rows = draw_rows(x, 16, 8, np.random.default_rng(3))
    assert len(rows) == 16 and len(set(rows.tolist())) == 16
    assert draw_rows(x, 0, 8, rng).shape == (0,) and draw_rows(x[:0], 16, 8, rng).shape == (0,)


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


def test_points_near_the_surface_ignore_the_tessellation(stl_body):
    finer = stl_body.triangulate().subdivide(1, "linear")
    a, na = sample_near_surface(stl_body, 5000, seed=4)
    b, nb = sample_near_surface(finer, 5000, seed=4)
    assert np.abs(a - b).max() < 1e-7 and np.abs(na - nb).max() < 1e-4  # the same points, up to rounding
    c, _ = sample_near_surface(stl_body, 5000, seed=5)
    assert mean_gap(a, c) > 100 * mean_gap(a, b)  # and the seed does change them


def test_points_near_the_surface_follow_the_areas_and_point_outward():
    box = pv.Box(bounds=(0, 1, 0, 2, 0, 3), level=2).triangulate()  # faces of areas 2, 3, 6 (twice each)
    x, normals = sample_near_surface(box, 20_000, seed=0)
    assert np.abs(x - np.clip(x, [0, 0, 0], [1, 2, 3])).max() < 1e-12  # on the box
    axis = np.abs(normals).argmax(axis=1)
    share = np.bincount(axis, minlength=3) / len(x)
    assert np.allclose(share, np.array([6, 3, 2]) / 11, atol=0.02), share  # x-faces have area 6 each, ...
    centre = np.array([0.5, 1.0, 1.5])
    assert (np.einsum("ij,ij->i", normals, x - centre) > 0).all()  # outward
    assert np.allclose(np.linalg.norm(normals, axis=1), 1)


def test_geometry_anchors_ignore_the_tessellation(stl_body, stats):
    """A 4x subdivision of the same body gets the same anchors; the CFD surface of the same body (another shape
    by a few millimetres) anchors that lie a small fraction of their spacing away (measured: 0.09 on the surface,
    0.0002 in the volume)."""
    config = AnchorConfig(surface=1024, volume=256, candidates=8)
    a, ia = geometry_anchors(stl_body, stats, config, template())
    b, ib = geometry_anchors(stl_body.triangulate().subdivide(1, "linear"), stats, config, template())
    assert np.abs(a - b).max() < 1e-6 and np.abs(ia - ib).max() < 1e-4
    cfd = pv.read(EXAMPLE_CASE / "surface.vtu")
    c, _ = geometry_anchors(cfd, stats, config, template())
    assert mean_gap(a[:1024], c[:1024]) < 0.2 * _spacing(a[:1024])  # random draws: about 0.5
    assert mean_gap(a[1024:], c[1024:]) < 0.01 * _spacing(a[1024:])


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
