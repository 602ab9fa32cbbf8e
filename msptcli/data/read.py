"""Reading one mesh and the fields asked of it, with one-line errors that name the file.

Meshes are read by :func:`msptcli.io.meshes.read_mesh`. Fields are taken
from point data when every asked field is there, else from cell data, with the
cell centres as the points.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msptcli.errors import InvalidInputError, MeshReadError
from msptcli.io.meshes import read_mesh


@dataclass
class FieldMesh:
    """A mesh and the asked fields at its points (``location='points'``) or cell centres (``'cells'``).

    ``source`` is the file the mesh was read from, named by errors about it (None: built in memory).
    """

    mesh: Any  # pyvista.DataSet
    points: np.ndarray  # (n, 3) float64: mesh points or cell centres
    location: str
    fields: dict[str, np.ndarray] = field(default_factory=dict)  # name -> (n, k) float32
    source: Path | None = None


def read_fields(path: str | os.PathLike[str], names: Sequence[str], *, mesh: Any = None) -> FieldMesh:
    """The fields ``names`` of the mesh at ``path`` (at points, or cell centres when all are cell data)."""
    p = Path(path)
    mesh = read_mesh(p) if mesh is None else mesh
    location = _location(p, names, set(mesh.point_data.keys()), set(mesh.cell_data.keys()))
    if location == "points":
        data, points = mesh.point_data, np.asarray(mesh.points, dtype=np.float64)
    else:
        data, points = mesh.cell_data, np.asarray(mesh.cell_centers().points, dtype=np.float64)
    if not np.isfinite(points).all():
        raise InvalidInputError(f"{p}: the mesh has non-finite point coordinates")
    fields: dict[str, np.ndarray] = {}
    for name in names:
        values = np.asarray(data[name], dtype=np.float32)
        values = values[:, None] if values.ndim == 1 else values
        if values.ndim != 2 or values.shape[0] != len(points):
            raise InvalidInputError(f"{p}: field {name!r} has shape {values.shape}, expected ({len(points)}, k)")
        fields[name] = _finite(p, name, values, location)
    return FieldMesh(mesh=mesh, points=points, location=location, fields=fields, source=p)


def read_fields_subset(
    path: str | os.PathLike[str], names: Sequence[str], *, choose: Callable[[int], np.ndarray]
) -> FieldMesh:
    """The fields ``names`` of a VTK XML file at the rows ``choose(n)`` only, read without reading the whole file.

    The same rule and checks as :func:`read_fields` (point data when every asked field is there, else
    cell data at the cell centres), applied to the subset: ``choose`` gets the number of points or
    cells and returns the sorted rows to keep. ``mesh`` of the result is None.
    """
    from msptcli.io.vtkxml import VtkXmlFile

    p = Path(path)
    if not p.is_file():
        raise MeshReadError(f"{p}: no such file" if not p.exists() else f"{p}: is a directory, expected a mesh file")
    with VtkXmlFile(p) as f:
        location = _location(p, names, set(f.names("points")), set(f.names("cells")))
        rows = np.asarray(choose(f.n_points if location == "points" else f.n_cells), dtype=np.int64)
        points = f.points(rows) if location == "points" else f.cell_centres(rows)
        if (f.n_points if location == "points" else f.n_cells) == 0 or f.n_points == 0:
            raise MeshReadError(f"{p}: the mesh has no points (empty or unreadable file)")
        if not np.isfinite(points).all():
            raise InvalidInputError(f"{p}: the mesh has non-finite point coordinates")
        fields: dict[str, np.ndarray] = {}
        for name in names:
            fields[name] = _finite(p, name, f.array(location, name, rows), location)
    return FieldMesh(mesh=None, points=points, location=location, fields=fields, source=p)


def _location(path: Path, names: Sequence[str], point_names: set[str], cell_names: set[str]) -> str:
    """Where the fields are: ``points`` when every asked field is point data, else ``cells``; else one line."""
    if all(n in point_names for n in names):
        return "points"
    if names and all(n in cell_names for n in names):
        return "cells"
    missing = [n for n in names if n not in point_names and n not in cell_names]
    if missing:
        have = ", ".join(sorted(point_names | cell_names)) or "none"
        raise InvalidInputError(f"{path}: no field {missing[0]!r} (fields in the file: {have})")
    raise InvalidInputError(f"{path}: fields {list(names)} are split between point and cell data")


def _finite(path: Path, name: str, values: np.ndarray, location: str) -> np.ndarray:
    """``values`` (n, k), refused in one line when a row holds NaN or Inf."""
    bad = int((~np.isfinite(values)).any(axis=1).sum())
    if bad:
        raise InvalidInputError(f"{path}: field {name!r} has {bad} {location[:-1]}s with NaN or Inf values")
    return values
