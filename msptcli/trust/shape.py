"""What a body looks like to the trust checks: a few size, position and orientation numbers of its surface.

Every number is computed from the surface's points and their area shares (``surface/points`` and
``surface/area_norm``, the arrays ``mspt prepare`` stores and ``mspt predict`` computes alike), in the
training frame, so that a training body in a prepared sample and a designer's STL of the same body give
the same numbers. The frame's axes are the flow, side and up directions (``data.flow_direction``,
``up x flow``, ``data.up_direction``; ``geometry/axes.py``), below called x, y and z: +x, +y and +z for the
defaults, and a body turned with its flow and up directions gives the same numbers:

    length, width, height   extent of the points along x, y, z                              [m]
    area                    surface area, the sum of the shares                             [m^2]
    centre_x, _y, _z        area-weighted centroid                                          [m]
    bottom                  lowest z (the ground clearance where the ground is z = 0)       [m]
    balance_x, balance_z    where the area lies between the front and the back, the bottom and the top:
                            (centroid - middle of the extent) / extent along x and z; the sign tells
                            a body turned end for end, or upside down                        [-]
    alignment               |e_1 . x|: how closely the body's long principal axis (the eigenvector
                            of the largest eigenvalue of the area-weighted covariance) follows the
                            flow; 1 along it, 0 across it                                    [-]

A body scaled by s has its lengths times s and its area times s^2; turned 90 degrees about the
vertical (the directions kept) it swaps length and width and its alignment falls to 0; turned end for end its balance_x
changes sign; moved, its centroid and bottom move.

A transient model's case is a planar mesh (one plane of a one-cell-thick case, flow along +x,
cross-stream +y) around a body's outline: its :data:`OUTLINE_FEATURES` come from the outline's
segments (each weighted by its length) and the mesh's extent:

    length, height          extent of the outline along x and y (the frontal height)        [m]
    perimeter               the outline's length                                            [m]
    centre_x, centre_y      length-weighted centroid of the outline                         [m]
    balance_x, balance_y    (centroid - middle of the extent) / extent along x and y         [-]
    alignment               |e_1 . x| of the outline's long axis; 1 for a body without one
                            (a circle or a square: its two principal lengths within 10%)     [-]
    domain_length, _height  extent of the whole mesh along x and y (the channel)            [m]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from msptcli.geometry.axes import FLOW, UP, flow_frame

#: The features, in the order of :func:`shape_features`'s values, with their units.
FEATURES: dict[str, str] = {
    "length": "m",
    "width": "m",
    "height": "m",
    "area": "m^2",
    "centre_x": "m",
    "centre_y": "m",
    "centre_z": "m",
    "bottom": "m",
    "balance_x": "",
    "balance_z": "",
    "alignment": "",
}
#: Dimensionless features (the rest are sizes or positions).
RATIOS = ("balance_x", "balance_z", "alignment")
#: Features that scale with the body's size (the rest are positions or a cosine).
SIZES = ("length", "width", "height", "area")

#: A planar (transient) case's features, from its body's outline and its mesh (module docstring).
OUTLINE_FEATURES: dict[str, str] = {
    "length": "m",
    "height": "m",
    "perimeter": "m",
    "centre_x": "m",
    "centre_y": "m",
    "balance_x": "",
    "balance_y": "",
    "alignment": "",
    "domain_length": "m",
    "domain_height": "m",
}
OUTLINE_RATIOS = ("balance_x", "balance_y", "alignment")
OUTLINE_SIZES = ("length", "height", "perimeter", "domain_length", "domain_height")
ISOTROPIC = 0.9  # principal lengths within this ratio: the outline has no long axis (alignment 1)


@dataclass(frozen=True)
class Kind:
    """A kind of body record: its features, which are dimensionless and which are sizes, and its one size."""

    name: str  # "surface" (steady models) or "outline" (transient models)
    features: dict[str, str]
    ratios: tuple[str, ...]
    sizes: tuple[str, ...]
    size: str  # the feature whose (square root, for an area) is the body's one size: the units check
    root: bool  # the size feature is an area

    def size_of(self, features: dict[str, float]) -> float:
        """One length for a body's scale (the same whichever way it is turned)."""
        value = float(features[self.size])
        return float(np.sqrt(value)) if self.root else value


KINDS: dict[str, Kind] = {
    "surface": Kind("surface", FEATURES, RATIOS, SIZES, "area", root=True),
    "outline": Kind("outline", OUTLINE_FEATURES, OUTLINE_RATIOS, OUTLINE_SIZES, "perimeter", root=False),
}


def shape_features(
    points: np.ndarray, area: np.ndarray, *, flow: Sequence[float] = FLOW, up: Sequence[float] = UP
) -> dict[str, float]:
    """The :data:`FEATURES` of a surface: (n, 3) points and their (n,) area shares, in the frame of the
    ``flow`` and ``up`` directions (``data.flow_direction``, ``data.up_direction``; ``geometry/axes.py``)."""
    x = np.asarray(points, dtype=np.float64).reshape(-1, 3) @ flow_frame(flow, up).T  # (flow, side, up) coordinates
    w = np.asarray(area, dtype=np.float64).reshape(-1)
    total = float(w.sum())
    if len(x) == 0 or not total > 0:
        raise ValueError("a surface without area has no shape")
    extent = np.ptp(x, axis=0)
    centre = (w[:, None] * x).sum(axis=0) / total
    middle = (x.min(axis=0) + x.max(axis=0)) / 2
    d = x - centre
    covariance = (w[:, None, None] * d[:, :, None] * d[:, None, :]).sum(axis=0) / total
    _, vectors = np.linalg.eigh(covariance)  # eigenvalues ascending: the last vector is the long axis
    return {
        "length": float(extent[0]),
        "width": float(extent[1]),
        "height": float(extent[2]),
        "area": total,
        "centre_x": float(centre[0]),
        "centre_y": float(centre[1]),
        "centre_z": float(centre[2]),
        "bottom": float(x[:, 2].min()),
        "balance_x": float((centre[0] - middle[0]) / max(extent[0], 1e-300)),
        "balance_z": float((centre[2] - middle[2]) / max(extent[2], 1e-300)),
        "alignment": float(abs(vectors[0, -1])),
    }


def outline_shape_features(points: np.ndarray, edges: np.ndarray) -> dict[str, float]:
    """The :data:`OUTLINE_FEATURES` of a planar mesh's (N, 3) points with its body's (E, 2) outline edges."""
    xy = np.asarray(points, dtype=np.float64).reshape(-1, 3)[:, :2]
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    if len(edges) == 0:
        raise ValueError("a mesh without a body outline has no shape")
    a, b = xy[edges[:, 0]], xy[edges[:, 1]]
    w = np.linalg.norm(b - a, axis=1)  # (E,) segment lengths
    total = float(w.sum())
    if not total > 0:
        raise ValueError("an outline without length has no shape")
    mid = (a + b) / 2
    nodes = xy[np.unique(edges)]
    extent = np.ptp(nodes, axis=0)
    centre = (w[:, None] * mid).sum(axis=0) / total
    middle = (nodes.min(axis=0) + nodes.max(axis=0)) / 2
    d = mid - centre
    covariance = (w[:, None, None] * d[:, :, None] * d[:, None, :]).sum(axis=0) / total
    values, vectors = np.linalg.eigh(covariance)  # ascending
    isotropic = values[0] >= ISOTROPIC**2 * values[1]  # principal lengths (square roots) within ISOTROPIC
    domain = np.ptp(xy, axis=0)
    return {
        "length": float(extent[0]),
        "height": float(extent[1]),
        "perimeter": total,
        "centre_x": float(centre[0]),
        "centre_y": float(centre[1]),
        "balance_x": float((centre[0] - middle[0]) / max(extent[0], 1e-300)),
        "balance_y": float((centre[1] - middle[1]) / max(extent[1], 1e-300)),
        "alignment": 1.0 if isotropic else float(abs(vectors[0, -1])),
        "domain_length": float(domain[0]),
        "domain_height": float(domain[1]),
    }
