"""Reading and writing meshes with clear errors (pyvista/VTK underneath)."""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from msptcli.errors import InvalidInputError, MeshReadError
from msptcli.io.atomic import atomic_output
from msptcli.io.guard import check_outputs

if TYPE_CHECKING:
    import pyvista as pv

#: VTK formats and STL/OBJ/PLY are read by VTK's own readers through pyvista: 10-100x faster
#: than meshio on large VTU files, and meshio cannot read VTP at all.
PYVISTA_SUFFIXES = (".vtu", ".vtp", ".vtk", ".stl", ".obj", ".ply")
#: Other formats, read by meshio (Gmsh, Abaqus, XDMF, MED, OFF, SU2, ...).
MESHIO_SUFFIXES = (".msh", ".inp", ".xdmf", ".xmf", ".med", ".off", ".su2", ".mesh", ".ugrid", ".f3grid")
MESH_SUFFIXES = PYVISTA_SUFFIXES + MESHIO_SUFFIXES
#: Extensions ``write_mesh`` can produce, by dataset kind.
VOLUME_SUFFIXES = (".vtu", ".vtk")
SURFACE_SUFFIXES = (".vtp", ".vtu", ".vtk")


def read_mesh(path: str | os.PathLike[str]) -> pv.DataSet:
    """Read a mesh file into a pyvista dataset; raise :class:`MeshReadError` naming the file and the problem."""
    import meshio
    import pyvista as pv

    p = Path(path)
    if not p.exists():
        raise MeshReadError(f"{p}: no such file")
    if p.is_dir():
        raise MeshReadError(f"{p}: is a directory, expected a mesh file")
    if p.suffix.lower() not in MESH_SUFFIXES:
        known = ", ".join(MESH_SUFFIXES)
        raise MeshReadError(f"{p}: unsupported mesh format {p.suffix!r} (expected one of {known})")
    try:
        mesh = _quiet(pv.read, p) if p.suffix.lower() in PYVISTA_SUFFIXES else pv.from_meshio(_quiet(meshio.read, p))
    except (Exception, SystemExit) as exc:  # readers raise many kinds of errors; meshio even exits
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() and not isinstance(exc, SystemExit) else ""
        raise MeshReadError(f"{p}: cannot be read as a mesh" + (f" ({reason})" if reason else "")) from None
    if isinstance(mesh, pv.MultiBlock):
        mesh = mesh.combine()
    if mesh is None or mesh.n_points == 0:
        raise MeshReadError(f"{p}: the mesh has no points (empty or unreadable file)")
    return mesh


def write_mesh(mesh: pv.DataSet, path: str | os.PathLike[str], *, inputs: tuple[Path, ...] = ()) -> Path:
    """Write ``mesh`` to ``path`` atomically; refuse to overwrite any of ``inputs``."""
    import pyvista as pv

    p = Path(path)
    check_outputs(None, [p], inputs=inputs, option="output path")
    image = isinstance(mesh, pv.ImageData)  # a structured grid (geometry/grid.py)
    surface = not image and is_surface(mesh)
    allowed = (".vti",) if image else SURFACE_SUFFIXES if surface else VOLUME_SUFFIXES
    if p.suffix.lower() not in allowed:
        kind = "surface" if surface else "volume"
        raise InvalidInputError(f"{p}: a {kind} mesh is written as one of {', '.join(allowed)}, not {p.suffix!r}")
    if surface and not isinstance(mesh, pv.PolyData) and p.suffix.lower() != ".vtu":
        mesh = as_polydata(mesh)
    data = _vtk_bytes(mesh, p)
    with atomic_output(p) as tmp:
        tmp.write_bytes(data)
    return p


def _vtk_bytes(mesh: pv.DataSet, path: Path) -> bytes:
    """The file VTK writes for ``mesh`` (binary, zlib: what ``mesh.save`` writes), made in memory.

    VTK's writers do not survive a failed write: on a full disk they abort the process (``free():
    invalid pointer``) or crash. Written by Python, the same bytes fail with an ``OSError`` instead.
    """
    import pyvista as pv
    import vtk

    if path.suffix.lower() == ".vtk":
        writer: Any = vtk.vtkDataSetWriter()
        writer.SetFileTypeToBinary()
    else:
        if path.suffix.lower() == ".vtu" and not isinstance(mesh, pv.UnstructuredGrid):
            mesh = mesh.cast_to_unstructured_grid()
        writer = vtk.vtkXMLPolyDataWriter() if path.suffix.lower() == ".vtp" else vtk.vtkXMLUnstructuredGridWriter()
        if path.suffix.lower() == ".vti":
            writer = vtk.vtkXMLImageDataWriter()
        writer.SetDataModeToBinary()
        writer.SetCompressorTypeToZLib()
    writer.SetInputData(mesh)
    writer.SetWriteToOutputString(True)
    if writer.Write() != 1:
        raise InvalidInputError(f"{path}: VTK could not write this mesh")
    data = writer.GetOutputStdString() if isinstance(writer, vtk.vtkDataWriter) else writer.GetOutputString()
    return data if isinstance(data, bytes) else data.encode("utf-8")


def as_polydata(mesh: pv.DataSet) -> pv.PolyData:
    """A polygonal surface as PolyData with the same points, cells (same order) and arrays."""
    import pyvista as pv

    if isinstance(mesh, pv.PolyData):
        return mesh
    poly = pv.PolyData(np.asarray(mesh.points), faces=np.asarray(mesh.cells))
    for name in mesh.point_data:
        poly.point_data[name] = mesh.point_data[name]
    for name in mesh.cell_data:
        poly.cell_data[name] = mesh.cell_data[name]
    return poly


def _quiet(fn: Any, *args: Any) -> Any:
    """Call ``fn`` with VTK's warnings and the readers' own prints silenced (we report the error ourselves).

    VTK's C++ code writes to file descriptor 2 directly (its logger and output window), past
    ``sys.stderr``; so for the call fd 2 points at the null device, and VTK's global warning
    display is off. Both are restored afterwards.
    """
    import vtk

    previous = vtk.vtkObject.GetGlobalWarningDisplay()
    vtk.vtkObject.GlobalWarningDisplayOff()
    sink = io.StringIO()
    try:
        with _stderr_fd_silenced(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            return fn(*args)
    finally:
        vtk.vtkObject.SetGlobalWarningDisplay(previous)


@contextlib.contextmanager
def _stderr_fd_silenced() -> Iterator[None]:
    """Point file descriptor 2 at the null device for the duration (nothing happens where fd 2 is not open)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 (a windowed process), or a closed sys.stderr
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def is_surface(mesh: pv.DataSet) -> bool:
    """Whether every cell of ``mesh`` is a polygon, line or vertex: a surface, not a volume."""
    import pyvista as pv
    import vtk

    if isinstance(mesh, pv.PolyData):
        return True
    cell = vtk.vtkGenericCell()
    for cell_type in np.unique(np.asarray(mesh.celltypes)):
        cell.SetCellType(int(cell_type))
        if cell.GetCellDimension() > 2:
            return False
    return True
