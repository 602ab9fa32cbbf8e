"""Drag, lift and side force of a body from its surface pressure and wall shear stress.

The definition is that of the OpenFOAM data the project trains on (the Ahmed cases, docs/physics.md)::

    F = sum over surface cells c of (p_c a_c - tau_c |a_c|)
    Cd = F . e_flow / q,   Cs = F . e_side / q,   Cl = F . e_up / q,   q = 1/2 rho U^2 A_ref

where ``a_c`` is the cell's area vector pointing out of the fluid, into the body (the
orientation of the body faces in OpenFOAM's ``surface.vtu``), polygons split into
triangle fans; ``e_flow`` and ``e_up`` are the flow and up directions (``data.flow_direction`` and
``data.up_direction``, defaults +x and +z, so that Cd = F_x / q and Cl = F_z / q) and ``e_side = e_up x e_flow``
(``geometry/axes.py``). ``p a`` is the push of the pressure on the wall; ``-tau |a|`` is the
friction, with OpenFOAM's ``wallShearStress`` (the shear the wall exerts on the fluid,
so the force on the body is its opposite).

With fields at the points (what a point-wise surrogate predicts), each point ``i`` takes
an equal share of the area vector and area of every cell it belongs to, ``A_i`` and
``S_i`` (stored by ``mspt prepare``), and ``F = sum_i (p_i A_i - tau_i S_i)``: the same
as averaging the point values to each cell and integrating over cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import TYPE_CHECKING, Literal

import numpy as np

from msptcli.errors import InvalidInputError
from msptcli.geometry.axes import FLOW, UP, flow_frame
from msptcli.geometry.faces import point_to_cell_average, polygon_area_vectors
from msptcli.geometry.orientation import outward_area_vectors

if TYPE_CHECKING:
    import pyvista as pv

__all__ = [
    "ForceCoefficients",
    "area_vectors",
    "coefficients",
    "force_coefficients",
    "force_from_points",
    "inward_area_vectors",
]


@dataclass(frozen=True)
class ForceCoefficients:
    """Force coefficients of a body and what they were computed from.

    ``force`` ``(3,)`` is ``F`` in the units of the fields times m² (m⁴/s² for kinematic
    fields; multiply by the density for newtons); ``cd``, ``cs``, ``cl`` are its components
    along ``flow``, ``up x flow`` and ``up`` (x, y, z for the defaults) over
    ``1/2 density velocity² ref_area``.
    """

    cd: float
    cl: float
    cs: float
    force: np.ndarray = field(compare=False, repr=False)
    ref_area: float
    velocity: float
    density: float
    flow: tuple[float, float, float] = FLOW
    up: tuple[float, float, float] = UP

    @classmethod
    def of_force(
        cls,
        force: np.ndarray,
        *,
        ref_area: float,
        velocity: float,
        density: float = 1.0,
        flow: Sequence[float] = FLOW,
        up: Sequence[float] = UP,
    ) -> ForceCoefficients:
        """The coefficients of ``force`` ``(3,)``: its components along ``flow``, ``up x flow`` and ``up``
        over ``q = 1/2 density velocity² ref_area``.

        Raises:
            InvalidInputError: a force not of shape ``(3,)``; a reference value not positive and finite;
                directions that are zero or not at right angles (``geometry.axes.flow_frame``).
        """
        f = np.array(force, dtype=np.float64)  # a copy: the result owns it
        if f.shape != (3,):
            raise InvalidInputError(f"a force needs shape (3,), got {f.shape}")
        q = _dynamic_pressure(ref_area, velocity, density)
        frame = flow_frame(flow, up)  # rows: flow, side, up
        drag, side, lift = frame @ f
        f.setflags(write=False)
        return cls(
            cd=float(drag / q),
            cl=float(lift / q),
            cs=float(side / q),
            force=f,
            ref_area=float(ref_area),
            velocity=float(velocity),
            density=float(density),
            flow=_as_tuple(frame[0]),
            up=_as_tuple(frame[2]),
        )


def coefficients(
    force: np.ndarray,
    *,
    ref_area: float,
    velocity: float,
    density: float = 1.0,
    flow: Sequence[float] = FLOW,
    up: Sequence[float] = UP,
) -> tuple[float, float]:
    """``(Cd, Cl) = (F . flow, F . up) / (1/2 rho U² A_ref)`` (``(F_x, F_z)`` for the default directions);
    keep ``density`` 1 for kinematic fields.

    Raises:
        InvalidInputError: as :meth:`ForceCoefficients.of_force`.
    """
    c = ForceCoefficients.of_force(force, ref_area=ref_area, velocity=velocity, density=density, flow=flow, up=up)
    return c.cd, c.cl


def force_from_points(
    area: np.ndarray, area_norm: np.ndarray, pressure: np.ndarray, wall_shear: np.ndarray | None
) -> np.ndarray:
    """Force ``(3,)`` of point fields: ``F = sum_i (p_i A_i - tau_i S_i)`` (module docstring).

    Args:
        area: ``(n, 3)`` each point's share ``A_i`` of its cells' area vectors, pointing into the body
            (``surface/area`` of a prepared sample).
        area_norm: ``(n,)`` or ``(n, 1)`` each point's share ``S_i`` of its cells' areas (``surface/area_norm``).
        pressure: ``(n,)`` or ``(n, 1)`` pressure at the points.
        wall_shear: ``(n, 3)`` wall shear stress at the points, OpenFOAM's convention; None: pressure only.

    Raises:
        InvalidInputError: arrays whose shapes do not match.
    """
    a = np.asarray(area, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 3:
        raise InvalidInputError(f"point area vectors need shape (n, 3), got {a.shape}")
    n = len(a)
    p = _point_values(pressure, n, "pressure")
    force = (p[:, None] * a).sum(axis=0)
    if wall_shear is not None:
        tau = np.asarray(wall_shear, dtype=np.float64)
        if tau.shape != (n, 3):
            raise InvalidInputError(f"wall_shear needs shape ({n}, 3) (one value per point), got {tau.shape}")
        force -= (tau * _point_values(area_norm, n, "area_norm")[:, None]).sum(axis=0)
    return force


def area_vectors(surface: pv.DataSet) -> np.ndarray:
    """Cell area vectors ``(n_cells, 3)`` as the file's vertex order orients them (right-hand rule).

    For OpenFOAM's ``surface.vtu`` they point out of the fluid, into the body: the ``a`` of
    the force definition.
    """
    return polygon_area_vectors(surface)


def inward_area_vectors(surface: pv.DataSet) -> np.ndarray:
    """Cell area vectors ``(n_cells, 3)`` pointing into the body whatever the file's vertex order.

    The opposite of :func:`msptcli.geometry.orientation.outward_area_vectors`; use it for surfaces
    ordered either way (an STL from a designer).
    """
    return -outward_area_vectors(surface)


def force_coefficients(
    surface: pv.DataSet,
    pressure: np.ndarray,
    wall_shear: np.ndarray,
    *,
    ref_area: float,
    velocity: float,
    density: float = 1.0,
    at: Literal["cells", "points"] = "cells",
    orient: Literal["file", "outward"] = "file",
    flow: Sequence[float] = FLOW,
    up: Sequence[float] = UP,
) -> ForceCoefficients:
    """Integrate pressure and wall shear over ``surface`` into drag, lift and side coefficients.

    Args:
        surface: the body surface (triangles, quads, polygons).
        pressure: ``(n,)`` pressure, one value per cell (``at="cells"``) or point (``at="points"``).
        wall_shear: ``(n, 3)`` wall shear stress, OpenFOAM's ``wallShearStress`` convention.
        ref_area: reference area ``A_ref`` (m²), e.g. the frontal area.
        velocity: free-stream speed ``U`` (m/s).
        density: ``rho`` in ``q = 1/2 rho U² A_ref``. Keep 1 for kinematic fields (``p / rho``,
            ``tau / rho``, as OpenFOAM writes them for incompressible flow); pass the density
            when the fields are in pascals.
        at: ``"cells"``: the fields are cell data, the exact definition. ``"points"``: point
            data, first averaged to each cell (the mean over its vertices), which is what a
            point-wise surrogate can give; the result is then an approximation (docs/physics.md).
        orient: ``"file"``: area vectors from the file's vertex order, which must point into
            the body (OpenFOAM's). ``"outward"``: oriented into the body from the geometry
            (module ``msptcli.geometry.orientation``), whatever the vertex order.
        flow, up: the free-stream and up directions (``data.flow_direction``, ``data.up_direction``): Cd is
            the force along ``flow``, Cl along ``up``, Cs along ``up x flow``. Any non-zero lengths; at right
            angles.

    Returns:
        The coefficients, the force ``F`` and the reference values.

    Raises:
        InvalidInputError: fields of the wrong shape or not finite, non-positive reference
            values, an unknown ``at`` or ``orient``, directions that are zero or not at right angles.
    """
    _dynamic_pressure(ref_area, velocity, density)  # check the reference values before integrating
    flow_frame(flow, up)
    if at not in ("cells", "points"):
        raise InvalidInputError(f"at must be 'cells' or 'points', got {at!r}")
    if orient not in ("file", "outward"):
        raise InvalidInputError(f"orient must be 'file' or 'outward', got {orient!r}")
    n = surface.n_cells if at == "cells" else surface.n_points
    p = _field(pressure, (n,), "pressure", at)
    tau = _field(wall_shear, (n, 3), "wall_shear", at)
    if at == "points":
        p, tau = point_to_cell_average(surface, p), point_to_cell_average(surface, tau)
    a = area_vectors(surface) if orient == "file" else inward_area_vectors(surface)  # (C, 3)
    force = p @ a - np.linalg.norm(a, axis=1) @ tau  # (3,)
    return ForceCoefficients.of_force(force, ref_area=ref_area, velocity=velocity, density=density, flow=flow, up=up)


def _as_tuple(vector: np.ndarray) -> tuple[float, float, float]:
    return float(vector[0]), float(vector[1]), float(vector[2])


def _dynamic_pressure(ref_area: float, velocity: float, density: float) -> float:
    """``q = 1/2 rho U² A_ref``, once each reference value is checked to be a positive number."""
    for name, value in (("reference area", ref_area), ("velocity", velocity), ("density", density)):
        if not isinstance(value, Real) or not np.isfinite(value) or value <= 0:
            shown = f"{value:g}" if isinstance(value, Real) else repr(value)
            raise InvalidInputError(f"{name} must be a positive number, got {shown}")
    return 0.5 * density * velocity**2 * ref_area


def _field(values: np.ndarray, shape: tuple[int, ...], name: str, at: str) -> np.ndarray:
    """``values`` as float64 of ``shape`` (a pressure of shape (n, 1) is accepted), checked finite."""
    v = np.asarray(values, dtype=np.float64)
    if len(shape) == 1 and v.shape == (shape[0], 1):
        v = v[:, 0]
    if v.shape != shape:
        raise InvalidInputError(f"{name} needs shape {shape} (one value per {at[:-1]}), got {v.shape}")
    bad = ~np.isfinite(v.reshape(len(v), -1)).all(axis=1)
    if bad.any():
        raise InvalidInputError(f"{name} is not finite at {at[:-1]} {int(np.flatnonzero(bad)[0])}")
    return v


def _point_values(values: np.ndarray, n: int, name: str) -> np.ndarray:
    """``values`` ``(n,)`` or ``(n, 1)`` as float64 ``(n,)``."""
    v = np.asarray(values, dtype=np.float64)
    if v.shape not in ((n,), (n, 1)):
        raise InvalidInputError(f"{name} needs shape ({n},) or ({n}, 1) (one value per point), got {v.shape}")
    return v.reshape(n)
