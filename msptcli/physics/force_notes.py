"""One line for each way drag and lift rest on a default or cannot be computed: what ``mspt prepare`` says once
per dataset and ``mspt predict`` once per checkpoint (the CLI prints them as warnings on stderr).

- the reference velocity is the default (``data.reference_velocity`` not given, and at predict no
  ``--reference-velocity``);
- ``data.pressure_field`` is not among the surface fields: no drag and lift at all;
- ``data.wall_shear_field`` is not among them: drag and lift of the pressure alone;
- prepare: cases without a reference area (neither their params' ``data.reference_area_key`` nor
  ``data.reference_area``): no drag and lift in their validation;
- predict: the reference area is the training cases' median, the last resort.

A field set to null is a choice, not a default, and gets no line; nor do the flow and up directions,
whose defaults (+x, +z) are documented.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["DEFAULT_REFERENCE_VELOCITY", "force_notes", "median_area_note", "missing_area_note"]

#: U of Cd and Cl where ``data.reference_velocity`` is not given (m/s; the shipped Ahmed cases' inflow).
DEFAULT_REFERENCE_VELOCITY = 40.0


def force_notes(
    *,
    surface_fields: Sequence[str],
    pressure_field: str | None,
    wall_shear_field: str | None,
    velocity_given: bool,
    velocity_option: str | None = None,
) -> list[str]:
    """The lines about the fields and the velocity (module docstring): none where drag and lift are complete.

    ``surface_fields``: the dataset's (the checkpoint's) surface fields; ``velocity_given``: the user set
    ``data.reference_velocity`` (or, at predict, ``velocity_option``); ``velocity_option``: the command's
    option that sets it, named in the line.
    """
    fields = list(surface_fields)
    if pressure_field is None:  # forces turned off on purpose
        return []
    if pressure_field not in fields:
        return [
            f"no drag/lift: data.pressure_field {pressure_field!r} is not among the surface fields {fields}: "
            "set data.pressure_field (null: no forces)"
        ]
    notes = []
    if wall_shear_field is not None and wall_shear_field not in fields:
        notes.append(
            f"drag is pressure-only: data.wall_shear_field {wall_shear_field!r} is not among the surface fields "
            f"{fields}: set data.wall_shear_field (null: pressure only)"
        )
    if not velocity_given:
        also = f" or pass {velocity_option}" if velocity_option else ""
        notes.append(
            f"Cd/Cl use the default reference velocity {DEFAULT_REFERENCE_VELOCITY:g} m/s: set "
            f"data.reference_velocity{also}"
        )
    return notes


def missing_area_note(cases: Sequence[str], total: int, *, area_key: str | None) -> str | None:
    """The prepare line for the ``cases`` (of ``total``) that have no reference area, or None for none."""
    if not cases:
        return None
    names = sorted(cases)
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    if len(names) == total:
        what, whose = "no drag/lift in training (and predict needs --reference-area)", "no case's params give"
    else:
        what, whose = f"no drag/lift in validation for {len(names)} of {total} cases ({shown})", "their params give no"
    key = f"{whose} {area_key!r} (data.reference_area_key)" if area_key else "data.reference_area_key is null"
    return f"{what}: {key} and data.reference_area is not set: set one of them"


def median_area_note(area: float, *, area_key: str | None, params_file: str | None) -> str:
    """The predict line for a reference area that is the training cases' median."""
    where = (
        f", put {area_key!r} in a {params_file} beside the geometry (data.reference_area_key)"
        if area_key and params_file
        else ""
    )
    return (
        f"Cd/Cl use the training cases' median reference area {area:.4g}: pass --reference-area{where}, or set "
        "data.reference_area when training"
    )
