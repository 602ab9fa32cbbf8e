"""Model inputs and targets of a cloud [surface points ; volume points], and back to physical fields.

Inputs, 11 per point (all from geometry, none from the solution):

    [ (x - mean) / scale (3) | outward normal (3) | distance / scale (1) | direction to surface (3) | is_surface (1) ]

surface points carry their normal and zero distance/direction; volume points a
zero normal and their distance and direction to the body. Targets are the
configured fields, standardised with the training statistics; surface
channels count on surface points only and volume channels on volume points.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from msptcli.data.manifest import Stats

IN_FEATURES = 11


@dataclass(frozen=True)
class Channels:
    """Where each field sits in the model's output channels."""

    surface: tuple[tuple[str, int], ...]  # (field, components), in output order
    volume: tuple[tuple[str, int], ...]

    @classmethod
    def from_fields(cls, fields: dict[str, dict[str, int]]) -> Channels:
        return cls(tuple(fields.get("surface", {}).items()), tuple(fields.get("volume", {}).items()))

    @property
    def num_surface(self) -> int:
        return sum(k for _, k in self.surface)

    @property
    def total(self) -> int:
        return self.num_surface + sum(k for _, k in self.volume)

    def slices(self, part: str) -> dict[str, slice]:
        start = 0 if part == "surface" else self.num_surface
        out = {}
        for name, k in self.surface if part == "surface" else self.volume:
            out[name] = slice(start, start + k)
            start += k
        return out


def model_inputs(
    stats: Stats,
    surface_points: np.ndarray,
    surface_normals: np.ndarray,
    volume_points: np.ndarray | None = None,
    volume_distance: np.ndarray | None = None,
    volume_direction: np.ndarray | None = None,
) -> np.ndarray:
    """(n + m, 11) float32 inputs of a cloud (see the module docstring)."""
    mean, scale = np.asarray(stats.coord_mean, dtype=np.float64), stats.coord_scale
    n = len(surface_points)
    m = 0 if volume_points is None else len(volume_points)
    out = np.zeros((n + m, IN_FEATURES), dtype=np.float32)
    out[:n, 0:3] = (surface_points - mean) / scale
    out[:n, 3:6] = surface_normals
    out[:n, 10] = 1.0
    if m:
        out[n:, 0:3] = (volume_points - mean) / scale
        out[n:, 6] = np.asarray(volume_distance).reshape(-1) / scale
        out[n:, 7:10] = volume_direction
    return out


def cloud_inputs(
    stats: Stats, surface: Mapping[str, np.ndarray], volume: Mapping[str, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The cloud [surface ; volume] as the model takes it: its (n + m, 3) points and (n + m, 11) float32 inputs.

    ``surface``: ``points`` (n, 3) and ``normals`` (n, 3); ``volume``: ``points`` (m, 3), ``distance`` (m,) or
    (m, 1) and ``direction`` (m, 3), as :func:`cloud_part` takes them from a sample's arrays; None or empty: no
    volume. The points keep their dtype.
    """
    v = volume or {}
    points = np.concatenate([surface["points"], *([v["points"]] if v else [])])  # (n + m, 3)
    s_points, normals = surface["points"], surface["normals"]
    return points, model_inputs(stats, s_points, normals, v.get("points"), v.get("distance"), v.get("direction"))


def cloud_part(
    arrays: Mapping[str, np.ndarray], name: str, rows: np.ndarray | slice = slice(None)
) -> dict[str, np.ndarray]:
    """The geometry of one part of a cloud, ``surface`` or ``volume``, at ``rows``, from arrays keyed
    ``<part>/<name>`` (a prepared sample's, ``prepare_case.surface_arrays``/``volume_arrays``): the arrays
    :func:`cloud_inputs` takes."""
    keys = ("points", "normals") if name == "surface" else ("points", "distance", "direction")
    return {k: arrays[f"{name}/{k}"][rows] for k in keys}


def model_targets(
    stats: Stats, channels: Channels, surface: dict[str, np.ndarray], volume: dict[str, np.ndarray], n: int, m: int
) -> tuple[np.ndarray, np.ndarray]:
    """Standardised targets (n + m, C) and the mask of the channels that count on each row."""
    targets = np.zeros((n + m, channels.total), dtype=np.float32)
    mask = np.zeros((n + m, channels.total), dtype=bool)
    for part, rows, values, table in (
        ("surface", slice(0, n), surface, stats.surface),
        ("volume", slice(n, n + m), volume, stats.volume),
    ):
        for name, cols in channels.slices(part).items():
            if name in values:
                s = table[name]
                targets[rows, cols] = (values[name] - np.asarray(s.mean)) / np.asarray(s.std)
                mask[rows, cols] = True
    return targets, mask


def to_physical(stats: Stats, channels: Channels, pred: np.ndarray, n: int) -> dict[str, dict[str, np.ndarray]]:
    """Model outputs (n + m, C) -> {'surface': {field: (n, k)}, 'volume': {field: (m, k)}} in physical units."""
    out: dict[str, dict[str, np.ndarray]] = {"surface": {}, "volume": {}}
    for part, rows, table in (("surface", slice(0, n), stats.surface), ("volume", slice(n, None), stats.volume)):
        for name, cols in channels.slices(part).items():
            s = table[name]
            out[part][name] = (pred[rows, cols] * np.asarray(s.std) + np.asarray(s.mean)).astype(np.float32)
    return out
