"""What one mesh file holds: its size, cells, bounds, every point and cell array, and, for a surface, its closure.

``describe_mesh`` reads the file with :func:`msptcli.io.meshes.read_mesh` (every format ``mspt prepare``
reads) and returns a :class:`MeshInfo`; nothing here prints. Array statistics skip NaN and Inf
values and count them apart. A vector's ``min``/``max``/``median`` are those of its magnitude, with
each component's range beside them.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from msptcli.errors import InvalidInputError
from msptcli.geometry.closure import SurfaceClosure, outward_share, surface_closure
from msptcli.io.meshes import is_surface, read_mesh

if TYPE_CHECKING:
    import pyvista as pv

#: Arrays taken for normals: a 3-vector named so (``Normals``, ``normals``, ``n``, ``face_normals``...).
NORMALS = re.compile(r"^(n|normals?|.*_normals?)$", re.IGNORECASE)


@dataclass(frozen=True)
class ArrayInfo:
    """One point or cell array. For a vector, ``min``/``max``/``median`` are of its magnitude."""

    name: str
    location: str  # "point" | "cell"
    components: int
    dtype: str
    min: float | None  # None: no finite value (or not numbers)
    max: float | None
    median: float | None
    component_min: list[float] | None = None  # vectors only
    component_max: list[float] | None = None
    nonfinite: int = 0  # values (points or cells) with a NaN or Inf component

    @property
    def is_vector(self) -> bool:
        return self.components > 1


@dataclass(frozen=True)
class SurfaceInfo:
    """A surface's closure (``geometry/closure.py``) and its normals arrays with the share pointing outward."""

    closure: SurfaceClosure
    normals: dict[str, float] = field(default_factory=dict)  # "point:Normals" -> share of vectors pointing out
    skipped_cells: int = 0  # lines and vertices beside the faces, left out

    def to_json(self) -> dict[str, Any]:
        c = self.closure
        return {**asdict(c), "closed": c.closed, "orientation": c.orientation, "normals_arrays": self.normals,
                "skipped_cells": self.skipped_cells}  # fmt: skip


@dataclass(frozen=True)
class MeshInfo:
    """What :func:`describe_mesh` found in one file."""

    path: Path
    dataset: str  # pyvista's class: UnstructuredGrid, PolyData, ...
    kind: str  # "surface" (faces, lines, vertices only) or "volume" (3-D cells)
    points: int
    cells: int
    cell_types: dict[str, int]  # VTK cell type name -> count
    bounds: tuple[float, float, float, float, float, float]  # xmin, xmax, ymin, ymax, zmin, zmax
    file_bytes: int
    memory_bytes: int  # VTK's estimate of the mesh in memory
    arrays: list[ArrayInfo]
    surface: SurfaceInfo | None = None
    surface_problem: str | None = None  # why a surface was not analysed

    @property
    def extent(self) -> tuple[float, float, float]:
        """Length, width and height: the bounding box's sides along x, y and z."""
        b = self.bounds
        return b[1] - b[0], b[3] - b[2], b[5] - b[4]

    def array(self, name: str) -> ArrayInfo | None:
        """The point array ``name``, else the cell array; None if neither."""
        found = [a for a in self.arrays if a.name == name]
        return min(found, key=lambda a: a.location != "point") if found else None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "dataset": self.dataset,
            "kind": self.kind,
            "points": self.points,
            "cells": self.cells,
            "cell_types": self.cell_types,
            "bounds": list(self.bounds),
            "extent": list(self.extent),
            "file_bytes": self.file_bytes,
            "memory_bytes": self.memory_bytes,
            "arrays": [asdict(a) for a in self.arrays],
            "surface": None if self.surface is None else self.surface.to_json(),
            "surface_problem": self.surface_problem,
        }


def describe_mesh(path: str | Path) -> MeshInfo:
    """Read the mesh at ``path`` and describe it; raises :class:`MeshReadError` for a missing or unreadable file."""
    p = Path(path)
    return describe_dataset(read_mesh(p), path=p, file_bytes=p.stat().st_size)


def describe_dataset(mesh: pv.DataSet, *, path: Path, file_bytes: int) -> MeshInfo:
    """Describe a mesh already read from ``path`` (a file, or an OpenFOAM case folder) of ``file_bytes`` on disk."""
    types = np.asarray(mesh.celltypes) if hasattr(mesh, "celltypes") else mesh.cast_to_unstructured_grid().celltypes
    names, counts = np.unique(np.asarray(types), return_counts=True)
    kind = "surface" if is_surface(mesh) else "volume"
    arrays = [_array_info(name, "point", mesh.point_data[name]) for name in mesh.point_data]
    arrays += [_array_info(name, "cell", mesh.cell_data[name]) for name in mesh.cell_data]
    surface, problem = _surface(mesh, types) if kind == "surface" else (None, None)
    return MeshInfo(
        path=path,
        dataset=type(mesh).__name__,
        kind=kind,
        points=int(mesh.n_points),
        cells=int(mesh.n_cells),
        cell_types={_cell_name(int(t)): int(c) for t, c in zip(names, counts, strict=True)},
        bounds=tuple(float(b) for b in mesh.bounds),  # type: ignore[arg-type]
        file_bytes=file_bytes,
        memory_bytes=int(mesh.actual_memory_size) * 1024,
        arrays=arrays,
        surface=surface,
        surface_problem=problem,
    )


def _array_info(name: str, location: str, values: Any) -> ArrayInfo:
    a = np.asarray(values)
    components = 1 if a.ndim == 1 else int(np.prod(a.shape[1:]))
    if a.dtype.kind not in "fiub" or len(a) == 0:
        return ArrayInfo(name, location, components, str(a.dtype), None, None, None)
    x = a.reshape(len(a), components).astype(np.float64)  # (n, k)
    finite = np.isfinite(x).all(axis=1)
    good = x[finite]
    if len(good) == 0:
        return ArrayInfo(name, location, components, str(a.dtype), None, None, None, nonfinite=int((~finite).sum()))
    size = good[:, 0] if components == 1 else np.linalg.norm(good, axis=1)
    low, high = (good.min(axis=0).tolist(), good.max(axis=0).tolist()) if components > 1 else (None, None)
    return ArrayInfo(
        name, location, components, str(a.dtype), float(size.min()), float(size.max()), float(np.median(size)),
        component_min=low, component_max=high, nonfinite=int((~finite).sum()),
    )  # fmt: skip


def _surface(mesh: pv.DataSet, types: np.ndarray) -> tuple[SurfaceInfo | None, str | None]:
    """The closure of the mesh's faces (triangles, quads, polygons) and its normals arrays; else why not."""
    faces = np.isin(types, (5, 7, 9))  # VTK_TRIANGLE, VTK_POLYGON, VTK_QUAD
    if not faces.any():
        return None, "no faces (triangles, quads or polygons): points or lines only"
    surface = mesh if faces.all() else mesh.extract_cells(np.flatnonzero(faces))
    try:
        closure = surface_closure(surface)
        normals = {}
        for location, data in (("point", surface.point_data), ("cell", surface.cell_data)):
            for name in data:
                values = np.asarray(data[name])
                if NORMALS.match(name) and values.ndim == 2 and values.shape[1] == 3:
                    normals[f"{location}:{name}"] = outward_share(surface, values, at=location)
    except InvalidInputError as exc:
        return None, str(exc)
    return SurfaceInfo(closure, normals, skipped_cells=int((~faces).sum())), None


def _cell_name(cell_type: int) -> str:
    """``VTK_QUAD`` -> ``quad``: the VTK name of a cell type, lower case, without the prefix."""
    import pyvista as pv

    try:
        return pv.CellType(cell_type).name.lower()
    except ValueError:
        return f"type {cell_type}"
