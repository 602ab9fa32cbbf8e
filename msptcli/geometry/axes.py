"""The flow frame of a steady case: which way the flow goes and which way is up.

``data.flow_direction`` and ``data.up_direction`` (defaults +x and +z) give two unit vectors at right
angles. With the side direction ``side = up x flow`` (+y for the defaults) they make a right-handed
orthonormal frame ``(flow, side, up)``: drag is the force along ``flow``, the side force along ``side``,
lift along ``up`` (``physics/forces.py``), and a body's length, width and height are its extents along
them (``trust/shape.py``). Coordinates in this frame are ``points @ frame.T``; for the defaults they are
the points themselves.

Transient (2D) cases keep their own axes: flow along +x of their plane (``physics/shedding.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from msptcli.errors import InvalidInputError

__all__ = ["AXES_TOLERANCE", "FLOW", "UP", "cosine", "flow_frame", "unit"]

#: The default free-stream direction and up direction.
FLOW: tuple[float, float, float] = (1.0, 0.0, 0.0)
UP: tuple[float, float, float] = (0.0, 0.0, 1.0)
#: The largest |cos| of the angle between the flow and up directions still taken as a right angle (0.06
#: degrees off); the up direction's small component along the flow is then removed (:func:`flow_frame`).
AXES_TOLERANCE = 1e-3


def unit(vector: Sequence[float]) -> tuple[float, float, float]:
    """``vector`` (3 finite numbers) over its length.

    Raises:
        ValueError: not 3 finite numbers, or the zero vector (it has no direction).
    """
    values = [float(v) for v in vector]
    if len(values) != 3 or not all(np.isfinite(values)):
        raise ValueError(f"a direction needs 3 finite numbers, got {_shown(values)}")
    norm = float(np.sqrt(sum(v * v for v in values)))
    if norm == 0.0:
        raise ValueError(f"{_shown(values)} has no direction: give a non-zero 3-vector")
    return values[0] / norm, values[1] / norm, values[2] / norm


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """The cosine of the angle between two non-zero 3-vectors."""
    ua, ub = unit(a), unit(b)
    return float(sum(x * y for x, y in zip(ua, ub, strict=True)))


def flow_frame(flow: Sequence[float] = FLOW, up: Sequence[float] = UP) -> np.ndarray:
    """(3, 3) float64 rows ``flow, side, up``: unit vectors, right-handed, ``side = up x flow``.

    ``up``'s component along ``flow`` (at most ``AXES_TOLERANCE``) is removed first, so the rows are exactly
    orthonormal; the defaults give the identity.

    Raises:
        InvalidInputError: a direction that is not 3 finite numbers or is zero, or up not at right angles
            to the flow (beyond ``AXES_TOLERANCE``).
    """
    try:
        f, u = np.array(unit(flow)), np.array(unit(up))
    except ValueError as exc:
        raise InvalidInputError(f"flow and up directions: {exc}") from None
    cos = float(f @ u)
    if abs(cos) > AXES_TOLERANCE:
        angle = float(np.degrees(np.arccos(np.clip(cos, -1, 1))))
        raise InvalidInputError(
            f"the up direction {_shown(up)} is not at right angles to the flow direction {_shown(flow)} "
            f"({angle:.3g} degrees): give an up direction perpendicular to the flow"
        )
    if cos != 0.0:
        u = u - cos * f
        u /= np.linalg.norm(u)
    return np.stack([f, np.cross(u, f), u])


def _shown(vector: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in vector) + "]"
