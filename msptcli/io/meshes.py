"""Reading and writing meshes with clear errors (pyvista/VTK underneath)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msptcli.errors import InvalidInputError, MeshReadError
from msptcli.io.atomic import atomic_output

if TYPE_CHECKING:
    import pyvista as pv

#: Extensions pyvista reads as meshes (volume and surface).
MESH_SUFFIXES = (".vtu", ".vtp", ".vtk", ".stl", ".obj", ".ply", ".vtm")
#: Extensions ``write_mesh`` can produce, by dataset kind.
VOLUME_SUFFIXES = (".vtu", ".vtk")
SURFACE_SUFFIXES = (".vtp", ".vtk", ".stl", ".ply")


def read_mesh(path: str | os.PathLike[str]) -> pv.DataSet:
    """Read a mesh file; raise :class:`MeshReadError` naming the file and the problem."""
    import pyvista as pv

    p = Path(path)
    if not p.exists():
        raise MeshReadError(f"{p}: no such file")
    if p.is_dir():
        raise MeshReadError(f"{p}: is a directory, expected a mesh file")
    if p.suffix.lower() not in MESH_SUFFIXES:
        raise MeshReadError(f"{p}: unsupported mesh format {p.suffix!r} (expected one of {', '.join(MESH_SUFFIXES)})")
    try:
        mesh = _quiet_vtk(pv.read, p)
    except Exception as exc:  # VTK readers raise many kinds of errors for corrupt files
        raise MeshReadError(f"{p}: cannot be read as a mesh ({type(exc).__name__}: {exc})") from None
    if isinstance(mesh, pv.MultiBlock):
        mesh = mesh.combine()
    if mesh is None or mesh.n_points == 0:
        raise MeshReadError(f"{p}: the mesh has no points (empty or unreadable file)")
    return mesh


def write_mesh(mesh: pv.DataSet, path: str | os.PathLike[str], *, inputs: tuple[Path, ...] = ()) -> Path:
    """Write ``mesh`` to ``path`` atomically; refuse to overwrite any of ``inputs``."""
    import pyvista as pv

    p = Path(path)
    if any(_same_file(p, q) for q in inputs):
        raise InvalidInputError(f"{p}: refusing to overwrite an input file; choose another output path")
    allowed = SURFACE_SUFFIXES if isinstance(mesh, pv.PolyData) else VOLUME_SUFFIXES
    if p.suffix.lower() not in allowed:
        kind = "surface" if isinstance(mesh, pv.PolyData) else "volume"
        raise InvalidInputError(f"{p}: a {kind} mesh is written as one of {', '.join(allowed)}, not {p.suffix!r}")
    with atomic_output(p) as tmp:
        mesh.save(tmp)
    return p


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _quiet_vtk(fn: Any, *args: Any) -> Any:
    """Call ``fn`` with VTK's own error printing silenced; VTK errors become exceptions."""
    import vtk

    output = vtk.vtkOutputWindow.GetInstance()
    previous = output.GetGlobalWarningDisplay()
    output.SetGlobalWarningDisplay(0)
    try:
        return fn(*args)
    finally:
        output.SetGlobalWarningDisplay(previous)
