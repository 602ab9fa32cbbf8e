"""Which arrays look like pressure, wall shear and velocity, and the ``data:`` config lines that would use them.

The guesses go by an array's name and number of components only (names compared in lower case):

| role | components | names |
|---|---|---|
| pressure | 1 | ``p``, ``pMean``, ``pMeanTrim``, ``p_mean``, ``pAvg``..., or containing ``pressure`` |
| wall shear | 3 | containing ``shear``, or starting with ``tau`` or ``wss`` |
| velocity | 3 | ``U``, ``UMean``, ``UMeanTrim``, ``u_mean``..., or containing ``velocity`` |

Among several candidates, time-averaged names (containing ``mean`` or ``avg``) come first (a steady
surrogate learns the mean field), then the shorter name. Anything else is left to the user.

**Density.** At a stagnation point the pressure rises above the free stream's by ``rho U^2 / 2``, so
``max p / (U^2 / 2)`` estimates the density ``rho`` the pressure was computed with, when ``p`` is relative to
the free stream (OpenFOAM's ``p`` is 0 at the outlet) and the stagnation point is resolved. ``U`` is the
median speed of the volume's velocity (a CFD domain is mostly free stream: the shipped Ahmed cases give
40.0 for their 40 m/s inlet), else ``data.reference_velocity`` when the config sets it. The estimate is
read as kinematic pressure ``p / rho`` (``data.density: 1``) from 0.5 to 1.1, pascals in air (1.2) from 1.1
to 1.5, pascals in water (1000) from 500 to 2000, and not read otherwise. The bands of kinematic and air
touch: a ratio near 1.1 is a guess either way, and the note shows the number it rests on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from msptcli.config_text import yaml_value
from msptcli.inspect_mesh.mesh import ArrayInfo, MeshInfo

#: role -> (components, name pattern), see the module docstring.
ROLES: dict[str, tuple[int, re.Pattern[str]]] = {
    "pressure": (1, re.compile(r"^p_?(mean|avg)?(_?trim)?$|pressure", re.IGNORECASE)),
    "wall_shear": (3, re.compile(r"shear|^tau|^wss", re.IGNORECASE)),
    "velocity": (3, re.compile(r"^u_?(mean|avg)?(_?trim)?$|velocity", re.IGNORECASE)),
}
#: (low, high, what the pressure looks like, data.density) for max p / (U^2 / 2).
DENSITY_BANDS = (
    (0.5, 1.1, "kinematic (p / rho)", 1.0),
    (1.1, 1.5, "like pascals in air", 1.2),
    (500.0, 2000.0, "like pascals in water", 1000.0),
)


@dataclass(frozen=True)
class Suggestion:
    """The candidates of each role (best first), the ``data.*`` keys that would use them, and notes."""

    candidates: dict[str, list[str]] = field(default_factory=dict)  # "surface pressure" -> ["pMean", "p"]
    config: dict[str, Any] = field(default_factory=dict)  # "surface_fields" -> [...], keys of the data section
    notes: list[str] = field(default_factory=list)

    def yaml(self) -> str:
        """The ``data:`` section of a config with these keys (empty text when there are none)."""
        lines = [f"  {k}: {yaml_value(v)}\n" for k, v in self.config.items()]
        return "data:\n" + "".join(lines) if lines else ""

    def to_json(self) -> dict[str, Any]:
        return {"candidates": self.candidates, "config": {"data": self.config}, "notes": self.notes}


def candidates(mesh: MeshInfo, role: str) -> list[str]:
    """Names of ``mesh``'s arrays that look like ``role`` (a key of :data:`ROLES`), best first."""
    components, pattern = ROLES[role]
    names = {a.name for a in mesh.arrays if a.components == components and pattern.search(a.name)}
    return sorted(names, key=lambda n: (not re.search("mean|avg", n, re.IGNORECASE), len(n), n))


def suggest(
    *, surface: MeshInfo | None = None, volume: MeshInfo | None = None, reference_velocity: float | None = None
) -> Suggestion:
    """The fields a config would name for a case of this ``surface`` and ``volume`` (either may be None).

    ``reference_velocity``: the config's ``data.reference_velocity`` when set explicitly, for the density note
    when no volume velocity gives the free-stream speed.
    """
    found: dict[str, list[str]] = {}
    config: dict[str, Any] = {}
    notes: list[str] = []
    pressure = None
    if surface is not None and not surface.arrays:
        notes.append(f"{surface.path.name}: no point or cell arrays: a geometry (what mspt predict takes), no "
                     "fields to train on")  # fmt: skip
    elif surface is not None:
        found = {f"surface {r}": candidates(surface, r) for r in ("pressure", "wall_shear")}
        p, tau = (found[f"surface {r}"][:1] for r in ("pressure", "wall_shear"))
        if p or tau:
            config["surface_fields"] = p + tau
        else:
            notes.append(f"{surface.path.name}: no array looks like pressure or wall shear: name the surface "
                         "fields yourself (data.surface_fields)")  # fmt: skip
        config["pressure_field"] = p[0] if p else None
        config["wall_shear_field"] = tau[0] if tau else None
        if not p:
            notes.append("no surface pressure: pressure_field null turns off the drag and lift metrics")
        pressure = surface.array(p[0]) if p else None
    speed, source = None, ""
    if volume is not None:
        found |= {f"volume {r}": candidates(volume, r) for r in ("velocity", "pressure")}
        fields = found["volume velocity"][:1] + found["volume pressure"][:1]
        config["volume_fields"] = fields
        if not fields:
            notes.append(f"{volume.path.name}: no array looks like velocity or pressure: name the volume fields "
                         "yourself (data.volume_fields)")  # fmt: skip
        velocity = volume.array(found["volume velocity"][0]) if found["volume velocity"] else None
        if velocity is not None and velocity.median:
            speed, source = velocity.median, f"the median |{velocity.name}| of {volume.path.name}"
        if pressure is None and found["volume pressure"]:
            pressure = volume.array(found["volume pressure"][0])
    if speed is None and reference_velocity is not None:
        speed, source = reference_velocity, "data.reference_velocity"
    notes += [f"{role}: {', '.join(names)} (the first is used)" for role, names in found.items() if len(names) > 1]
    if pressure is not None and speed is not None:
        note, density = _density(pressure, speed, source)
        notes.append(note)
        if density is not None:
            config["density"] = density
    for mesh in (surface, volume):
        notes += _nonfinite(mesh, config) if mesh is not None else []
    return Suggestion(candidates=found, config=config, notes=notes)


def _density(pressure: ArrayInfo, speed: float, source: str) -> tuple[str, float | None]:
    """The density note (module docstring) and the density it suggests, if any."""
    name = pressure.name
    if pressure.min is None or pressure.max is None or pressure.min >= 0:
        return (f"{name} is not negative anywhere: an absolute pressure? The density cannot be told from it (it "
                "needs p relative to the free stream)", None)  # fmt: skip
    ratio = pressure.max / (0.5 * speed**2)
    basis = f"max {name} / (U^2/2) = {ratio:.3g} with U = {speed:.4g}, {source}"
    for low, high, looks, density in DENSITY_BANDS:
        if low <= ratio < high:
            return f"{name} looks {looks}: data.density {density:g} ({basis})", density
    return f"{name}: {basis}: none of kinematic (1), air (1.2) or water (1000); check its units", None


def _nonfinite(mesh: MeshInfo, config: dict[str, Any]) -> list[str]:
    """A note for every suggested field of ``mesh`` with NaN or Inf values (``mspt prepare`` refuses them)."""
    named = {*config.get("surface_fields", []), *config.get("volume_fields", [])}
    return [
        f"{mesh.path.name}: {a.name} ({a.location} data) has {a.nonfinite} {a.location}s with NaN or Inf values; "
        "mspt prepare stops at a field with such values"
        for a in mesh.arrays
        if a.nonfinite and a.name in named
    ]
