"""What a body looks like to the trust checks: a few size, position and orientation numbers of its surface.

Every number is computed from the surface's points and their area shares (``surface/points`` and
``surface/area_norm``, the arrays ``mspt prepare`` stores and ``mspt predict`` computes alike), in the
training frame (flow along +x, up along +z), so that a training body in a prepared sample and a
designer's STL of the same body give the same numbers:

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
vertical it swaps length and width and its alignment falls to 0; turned end for end its balance_x
changes sign; moved, its centroid and bottom move.
"""

from __future__ import annotations

import numpy as np

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


def shape_features(points: np.ndarray, area: np.ndarray) -> dict[str, float]:
    """The :data:`FEATURES` of a surface: (n, 3) points and their (n,) area shares."""
    x = np.asarray(points, dtype=np.float64).reshape(-1, 3)
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


def size_of(features: dict[str, float]) -> float:
    """One length for a body's scale: the square root of its area (the same whichever way it is turned)."""
    return float(np.sqrt(features["area"]))
