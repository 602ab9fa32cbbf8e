"""The anchors of a geometry: model inputs of a fixed-size point set drawn from the body alone.

Anchor-query MSPT (``model/queries.py``) runs its blocks on anchors, not on the mesh the user asks
about, so a prediction is a function of the geometry and of the query point only. Anchors are

- ``surface`` points about uniform by area: at prepare time a pool of area-weighted samples of the
  faces is stored with each case (``anchors/surface_points``, ``anchors/surface_normals``,
  ``geometry.sampling.sample_on_surface``); ``mspt predict`` draws seeded points in the body's box
  and projects those near the surface onto it (``sample_near_surface``), which depends on the
  body's shape and not on how it is tessellated;
- ``volume`` points from the training volume distribution: in training and validation the case's
  own volume points, in ``mspt predict`` the checkpoint's volume template placed around the body
  (``data/template.py``);

each set stratified (``geometry.stratify``) from ``candidates`` random candidates per anchor.
Training draws new candidates every step (seeded by step); predict and validation use
``anchors.seed``, so they are deterministic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from msptcli.data.features import cloud_inputs, cloud_part
from msptcli.data.manifest import Stats
from msptcli.data.prepare_case import volume_arrays
from msptcli.data.sample import Sample
from msptcli.data.template import place_template
from msptcli.errors import DatasetError
from msptcli.geometry.sampling import sample_near_surface
from msptcli.geometry.stratify import stratified_subset
from msptcli.model.config import AnchorConfig


def draw_rows(points: np.ndarray, anchors: int, candidates: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of ``anchors`` stratified anchors among the candidate ``points`` (m, 3).

    ``candidates`` per anchor are drawn at random, but never more than half of the points (so that
    every training step sees another draw), then one per ball-tree run is kept (``geometry.stratify``).
    """
    num = len(points)
    if anchors == 0 or num == 0:
        return np.zeros(0, dtype=np.int64)
    k = min(candidates * anchors, max(num // 2, anchors))
    pick = np.arange(num) if k >= num else np.sort(rng.choice(num, k, replace=False))
    return pick[stratified_subset(np.asarray(points[pick]), anchors)]


def sample_anchors(
    sample: Sample, stats: Stats, config: AnchorConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Anchors of a prepared sample: (n, 3) float64 points and (n, 11) float32 inputs (surface first)."""
    a = sample.arrays
    if "anchors/surface_points" not in a:
        raise DatasetError(
            f"sample {sample.name}: prepared without anchor samples (mspt before 0.3); run `mspt prepare` again"
        )
    pool = a["anchors/surface_points"]
    s_rows = draw_rows(pool, config.surface, config.candidates, rng)
    v_rows = draw_rows(a["volume/points"], config.volume, config.candidates, rng) if sample.num_volume else []
    volume = cloud_part(a, "volume", v_rows) if len(v_rows) else None
    return anchor_inputs(stats, pool[s_rows], a["anchors/surface_normals"][s_rows], volume)


def geometry_anchors(
    surface: Any, stats: Stats, config: AnchorConfig, template: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Anchors of a body given as a surface, as ``mspt predict`` draws them, seeded by ``config.seed``:
    (n, 3) float64 points and (n, 11) float32 inputs (surface first).

    Both sets are drawn so that they depend on the body's shape and not on its faces: the surface
    candidates by ``geometry.sampling.sample_near_surface`` (seeded draws in the bounding box projected
    onto the surface), the volume candidates as a seeded subset of the template rows placed on the
    bounding box; then stratified. Another tessellation of the same body (a subdivision, the CFD surface
    of a designer's STL) gets the same anchors up to the differences of the shapes.

    ``template``: the checkpoint's volume template (``data/template.py``); None: no volume anchors.
    """
    rng = np.random.default_rng(config.seed)
    candidates, normals = sample_near_surface(surface, config.candidates * config.surface, seed=config.seed)
    s_rows = stratified_subset(candidates, config.surface)
    volume = None
    if template is not None and config.volume:
        k = min(config.candidates * config.volume, max(len(template) // 2, config.volume))  # as in training
        rows = np.arange(len(template)) if k >= len(template) else np.sort(rng.choice(len(template), k, False))
        placed = place_template(template[rows], surface)
        if len(placed):
            arrays = volume_arrays(placed[stratified_subset(placed, config.volume)], surface)
            volume = {name.removeprefix("volume/"): values for name, values in arrays.items()}
    return anchor_inputs(stats, candidates[s_rows], normals[s_rows], volume)


def seeds_of(config: AnchorConfig) -> list[AnchorConfig]:
    """One config per anchor draw that predict and validation average (``anchors.draws``): seeds seed, seed + 1, ..."""
    return [config.model_copy(update={"seed": config.seed + r, "draws": 1}) for r in range(config.draws)]


def anchor_inputs(
    stats: Stats, surface_points: np.ndarray, surface_normals: np.ndarray, volume: dict[str, Any] | None
) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3) float64 points and (n, 11) inputs of anchors [surface ; volume] (``volume``: points, distance,
    direction)."""
    points, inputs = cloud_inputs(stats, {"points": surface_points, "normals": surface_normals}, volume)
    return points.astype(np.float64), inputs
