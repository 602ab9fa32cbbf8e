"""What drag and lift need besides the fields, as a checkpoint stores it: the force reference.

Built from the config and the training cases when a run is trained (``checkpoint.force_reference``),
stored as JSON in the checkpoint's metadata (key ``reference``), read back by :meth:`ForceReference.from_json`
for validation (``evaluate.py``), ``mspt predict``, the rollout and the export sidecar. The JSON:

=========================  ===================  ==================================================================
key                        type                 meaning
=========================  ===================  ==================================================================
reference_area             float or null        ``data.reference_area``: A_ref where a case's params give none
area_key                   str or null          ``data.reference_area_key``: A_ref's key in a case's params
velocity                   float > 0            ``data.reference_velocity``: U in ``q = 1/2 rho U² A_ref``
density                    float > 0            ``data.density``: rho (1 for kinematic fields)
pressure_field             str or null          ``data.pressure_field``: the surface field of the pressure
wall_shear_field           str or null          ``data.wall_shear_field``: the surface field of the wall shear
flow_direction             list of 3 floats     ``data.flow_direction``: drag is the force along it (absent: [1, 0, 0])
up_direction               list of 3 floats     ``data.up_direction``: lift is the force along it (absent: [0, 0, 1])
training_reference_areas   list of float        the training cases' A_ref (their median: predict's last resort)
transient                  object, optional     transient runs only: :class:`TransientReference`
=========================  ===================  ==================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np

from msptcli.geometry.axes import FLOW, UP, unit


@dataclass(frozen=True)
class TransientReference:
    """What the 2D forces of a rollout need: L_ref, the viscosity (or its dotted key in a case's params), and the
    training cases' conditions by case name (a rollout says when it leaves their range)."""

    length: float
    viscosity: float | None
    viscosity_key: str | None
    training_conditions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "length": self.length,
            "viscosity": self.viscosity,
            "viscosity_key": self.viscosity_key,
            "training_conditions": self.training_conditions,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TransientReference:
        return cls(
            length=value["length"],
            viscosity=value.get("viscosity"),
            viscosity_key=value.get("viscosity_key"),
            training_conditions=value.get("training_conditions") or {},
        )


@dataclass(frozen=True)
class ForceReference:
    """The force reference of a trained model (module docstring)."""

    velocity: float
    density: float
    pressure_field: str | None = None
    wall_shear_field: str | None = None
    reference_area: float | None = None
    area_key: str | None = None
    training_reference_areas: list[float] = field(default_factory=list)
    transient: TransientReference | None = None
    flow_direction: tuple[float, float, float] = FLOW
    up_direction: tuple[float, float, float] = UP

    def to_json(self) -> dict[str, Any]:
        """The checkpoint's JSON (module docstring); ``transient`` only for a transient run."""
        out = {
            "reference_area": self.reference_area,
            "area_key": self.area_key,
            "velocity": self.velocity,
            "density": self.density,
            "pressure_field": self.pressure_field,
            "wall_shear_field": self.wall_shear_field,
            "flow_direction": list(self.flow_direction),
            "up_direction": list(self.up_direction),
            "training_reference_areas": self.training_reference_areas,
        }
        return out if self.transient is None else {**out, "transient": self.transient.to_json()}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ForceReference:
        """The reference of a checkpoint's JSON, every key but ``velocity`` and ``density`` optional.

        Raises:
            ValueError: a velocity or density that is not a positive number.
        """
        for key in ("velocity", "density"):
            v = value.get(key)
            if not isinstance(v, Real) or isinstance(v, bool) or not np.isfinite(v) or v <= 0:
                raise ValueError(f"the reference {key} must be a positive number, got {v}")
        transient = value.get("transient")
        return cls(
            velocity=value["velocity"],
            density=value["density"],
            pressure_field=value.get("pressure_field"),
            wall_shear_field=value.get("wall_shear_field"),
            reference_area=value.get("reference_area"),
            area_key=value.get("area_key"),
            training_reference_areas=list(value.get("training_reference_areas") or []),
            transient=None if transient is None else TransientReference.from_json(transient),
            flow_direction=unit(value.get("flow_direction") or FLOW),
            up_direction=unit(value.get("up_direction") or UP),
        )
