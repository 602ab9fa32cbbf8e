"""Validation metrics in physical units: relative L2 per field and force coefficients."""

from __future__ import annotations

import numpy as np


def relative_l2(pred: np.ndarray, true: np.ndarray) -> float:
    """||pred - true|| / ||true|| over all points and components."""
    denom = float(np.linalg.norm(true))
    return float(np.linalg.norm(pred - true)) / max(denom, 1e-30)


def force_from_points(
    area: np.ndarray, area_norm: np.ndarray, pressure: np.ndarray, wall_shear: np.ndarray | None
) -> np.ndarray:
    """Force (3,) of point fields: sum_i p_i A_i - tau_i S_i, with each point's share A_i, S_i of its cells'
    area vectors (into the body) and areas. Equals integrating cell values averaged from their points."""
    force = (np.asarray(pressure, dtype=np.float64).reshape(-1, 1) * area).sum(axis=0)
    if wall_shear is not None:
        force -= (np.asarray(wall_shear, dtype=np.float64) * np.asarray(area_norm).reshape(-1, 1)).sum(axis=0)
    return force


def coefficients(force: np.ndarray, *, ref_area: float, velocity: float, density: float) -> tuple[float, float]:
    """(Cd, Cl) = (F_x, F_z) / (0.5 rho U^2 A_ref); fields are kinematic when density is 1."""
    q = 0.5 * density * velocity**2 * ref_area
    return float(force[0] / q), float(force[2] / q)
