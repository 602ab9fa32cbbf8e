"""OpenFOAM case folders read directly, through VTK's own reader: the body's patches as the surface, the
internal mesh as the volume (``data.openfoam``; docs/pipeline.md, "OpenFOAM cases").

A case folder is recognised by ``system/controlDict``, ``constant/polyMesh`` or
``processor*/constant/polyMesh``; a ``.foam`` or ``.OpenFOAM`` marker file inside one stands for it.
VTK's reader takes the path of a marker file but reads only its folder, so a marker that does not
exist is passed where there is none: nothing is ever written into the case.

- **time**: the latest time folder (``data.openfoam.time: latest``), or the one of a given value.
  A decomposed case (``processor0..N``) is read as one mesh when its processors hold that time and
  the reconstructed case does not (or is later): the reader appends the processors' meshes.
- **surface**: the boundary patches named by ``data.openfoam.body_patches`` (glob patterns), by
  default every patch of type ``wall`` in ``constant/polyMesh/boundary`` whose name is not one of
  ``data.openfoam.domain_patches`` (ground, tunnel walls); they are merged into one surface, points
  with equal coordinates merged (patch seams, processor boundaries), faces in the reader's order.
- **volume**: the internal mesh (``internalMesh``), points merged across processor boundaries.
- **fields**: cell data, the solver's values at the cell (and boundary face) centres
  (``fields_at: cells``); with ``fields_at: points`` also VTK's interpolation of them to the points,
  which ``read_fields`` then prefers.
"""

from __future__ import annotations

import fnmatch
import gzip
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from msptcli.errors import InvalidInputError, MeshReadError

if TYPE_CHECKING:
    import pyvista as pv

    from msptcli.config import OpenFOAMConfig

#: Marker files that stand for their case folder (ParaView's convention), compared in lower case.
MARKER_SUFFIXES = (".foam", ".openfoam")
#: The name of the marker passed to VTK when the case has none; it is never created.
ABSENT_MARKER = "mspt-reads-this-case.foam"
#: Patch types that are no part of any body: the seams between processors.
PROCESSOR_TYPES = ("processor", "processorCyclic")


@dataclass(frozen=True)
class Patch:
    """A boundary patch of ``constant/polyMesh/boundary``."""

    name: str
    type: str
    faces: int


@dataclass(frozen=True)
class Layout:
    """What of a case is read: the reconstructed or decomposed mesh, at which time folder."""

    folder: Path
    decomposed: bool
    time: str | None  # the time folder's name; None: the case has no time folder (a mesh without results)
    patches: tuple[Patch, ...]

    @property
    def mesh_roots(self) -> list[Path]:
        """The folders holding ``constant/polyMesh`` and the time folders: the case, or its processors."""
        return _processors(self.folder) if self.decomposed else [self.folder]


@dataclass
class CaseMeshes:
    """An OpenFOAM case read: the merged body surface, the internal mesh (None: not asked) and what was read."""

    surface: Any  # pyvista.PolyData
    volume: Any | None  # pyvista.UnstructuredGrid
    layout: Layout
    body: list[str] = field(default_factory=list)  # the patches merged into the surface

    def describe(self) -> dict[str, Any]:
        """What a prepared sample records of its source."""
        return {"time": self.layout.time, "decomposed": self.layout.decomposed, "body_patches": self.body}


def case_folder(path: str | os.PathLike[str]) -> Path | None:
    """The OpenFOAM case ``path`` stands for: the folder itself, or the folder of a marker file; None if neither.

    Raises:
        InvalidInputError: a marker file whose folder is no OpenFOAM case.
    """
    p = Path(path)
    if p.is_dir():
        return p if is_case_folder(p) else None
    if p.suffix.lower() in MARKER_SUFFIXES:
        if not is_case_folder(p.parent):
            raise InvalidInputError(
                f"{p}: an OpenFOAM marker file, but its folder holds no system/controlDict, constant/polyMesh or "
                "processor*/constant/polyMesh"
            )
        return p.parent
    return None


def refuse_output_in_case(out: Path, inputs: Iterable[Path], *, option: str = "-o") -> None:
    """Refuse an output folder ``out`` inside an OpenFOAM case that one of ``inputs`` stands for: nothing is ever
    written into a case (``prepare -o``, ``predict -o`` or its default ``predictions/`` run from inside one).

    Raises:
        InvalidInputError: one line naming the case and ``option``.
    """
    resolved = out.resolve()
    for path in inputs:
        folder = case_folder(path)
        if folder is not None and resolved.is_relative_to(folder.resolve()):
            shown = folder if folder.name else folder.resolve()  # "." when run inside the case
            raise InvalidInputError(f"{out}: is inside the OpenFOAM case {shown}, which mspt only reads; choose "
                                    f"an {option} outside it")  # fmt: skip


def is_case_folder(folder: Path) -> bool:
    """Whether ``folder`` is an OpenFOAM case: ``system/controlDict``, ``constant/polyMesh`` or processors."""
    return (
        (folder / "system" / "controlDict").is_file()
        or (folder / "constant" / "polyMesh").is_dir()
        or bool(_processors(folder))
    )


def read_case(
    path: str | os.PathLike[str],
    config: OpenFOAMConfig,
    *,
    volume: bool = False,
    results: bool = True,
    fields: Sequence[str] | None = None,
) -> CaseMeshes:
    """The body surface (and with ``volume`` the internal mesh) of the case at ``path``, at the configured time.

    ``fields``: the fields read, where the time folder has them all (else every field, which the missing
    field's error then lists); None: every field. ``results``: the time read must hold the solver's
    results, so the latest time of a case whose only time folder is ``0`` (its initial fields) is refused
    unless ``time: 0`` is asked for. Raises :class:`InvalidInputError` (one line naming the case) for a
    case without a mesh, an unknown time, no body patch, and :class:`MeshReadError` for files VTK cannot read.
    """
    p = Path(path)
    folder = case_folder(p)
    if folder is None:
        raise InvalidInputError(f"{p}: not an OpenFOAM case (no system/controlDict, constant/polyMesh or processors)")
    layout = case_layout(folder, config, results=results)
    body = body_patches(layout, config)
    marker = p if p.is_file() else folder / ABSENT_MARKER
    blocks = _read(marker, layout, body, volume=volume, at_points=config.fields_at == "points", fields=fields)
    patches = {key.rsplit("/", 1)[-1]: block for key, block in blocks.items() if key != "internalMesh"}
    surfaces = [patches[name] for name in body if name in patches and patches[name].n_cells > 0]
    if not surfaces:
        raise InvalidInputError(f"{folder}: the body patches {', '.join(body)} have no faces")
    surface = _merged_surface(surfaces)
    internal = blocks.get("internalMesh") if volume else None
    if volume and (internal is None or internal.n_cells == 0):
        raise InvalidInputError(f"{folder}: the internal mesh has no cells")
    if internal is not None and layout.decomposed:
        internal = _merged_points(internal)
    return CaseMeshes(surface=surface, volume=internal, layout=layout, body=body)


def read_mesh_or_case(
    path: str | os.PathLike[str], *, part: Literal["surface", "volume"], config: OpenFOAMConfig
) -> pv.DataSet:
    """``read_mesh(path)`` for a mesh file; for an OpenFOAM case its body surface or its internal mesh (any time:
    a geometry to predict on may have no results yet)."""
    from msptcli.io.meshes import read_mesh

    if case_folder(path) is None:
        return read_mesh(path)
    meshes = read_case(path, config, volume=part == "volume", results=False)
    return meshes.surface if part == "surface" else meshes.volume


def source_files(path: str | os.PathLike[str], config: OpenFOAMConfig) -> list[Path]:
    """The files a read of the case depends on: each mesh root's ``constant/polyMesh`` and chosen time folder
    (what decides whether a prepared sample is reused)."""
    folder = case_folder(path)
    assert folder is not None
    layout = case_layout(folder, config, results=False)
    files = [folder / "system" / "controlDict"]
    for root in layout.mesh_roots:
        for sub in ("constant/polyMesh", layout.time):
            if sub is not None and (root / sub).is_dir():
                files += sorted(f for f in (root / sub).iterdir() if f.is_file())
    return [f for f in files if f.is_file()]


# --- what to read ----------------------------------------------------------------------------------------


def case_layout(folder: Path, config: OpenFOAMConfig, *, results: bool = True) -> Layout:
    """The reconstructed or decomposed mesh and the time folder to read (module docstring)."""
    processors = _processors(folder)
    own = (folder / "constant" / "polyMesh").is_dir()
    own_times = _times(folder) if own else {}
    proc_times = _times(processors[0]) if processors else {}
    if not own and not processors:
        raise InvalidInputError(f"{folder}: an OpenFOAM case without a mesh (no constant/polyMesh or processor*)")
    if config.time == "latest":
        own_last = max(own_times, default=-math.inf)
        proc_last = max(proc_times, default=-math.inf)
        decomposed = bool(processors) and (not own or proc_last > own_last)
        times = proc_times if decomposed else own_times
        value = max(times, default=None)
        if results and value is not None and value == 0 and len(times) == 1:
            raise InvalidInputError(
                f"{folder}: the only time folder is 0, the initial fields (no results); set data.openfoam.time: 0 to "
                "read them"
            )
    else:
        value = next((t for t in own_times if math.isclose(t, config.time, rel_tol=1e-9, abs_tol=1e-12)), None)
        decomposed = value is None
        if value is None:
            value = next((t for t in proc_times if math.isclose(t, config.time, rel_tol=1e-9, abs_tol=1e-12)), None)
        if value is None:
            have = sorted({*own_times.values(), *proc_times.values()}, key=float)
            raise InvalidInputError(
                f"{folder}: no time folder {config.time:g} (times: {', '.join(have) or 'none'}); set data.openfoam.time"
            )
    times = proc_times if decomposed else own_times
    root = processors[0] if decomposed else folder
    return Layout(folder=folder, decomposed=decomposed, time=times.get(value), patches=_patches(root))


def body_patches(layout: Layout, config: OpenFOAMConfig) -> list[str]:
    """The names of the patches that form the body (module docstring), in the boundary file's order.

    Raises:
        InvalidInputError: no patch matches: one line listing the case's patches and types and the key to set.
    """
    candidates = [p for p in layout.patches if p.type not in PROCESSOR_TYPES]
    if config.body_patches is not None:
        body = [p.name for p in candidates if _matches(p.name, config.body_patches)]
        why = f"no patch matches data.openfoam.body_patches {config.body_patches}"
    else:
        body = [p.name for p in candidates if p.type == "wall" and not _matches(p.name, config.domain_patches)]
        why = "no patch of type wall besides the domain's (data.openfoam.domain_patches)"
    if not body:
        listed = ", ".join(f"{p.name} ({p.type})" for p in candidates) or "none"
        raise InvalidInputError(
            f"{layout.folder}: {why}; its patches: {listed}; set data.openfoam.body_patches to the body's patch "
            "names or glob patterns"
        )
    return body


def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name.lower(), pattern.lower()) for pattern in patterns)


def _processors(folder: Path) -> list[Path]:
    """``processor0..N`` that hold a mesh, in processor order."""
    found = [d for d in folder.glob("processor*") if re.fullmatch(r"processor\d+", d.name) and d.is_dir()]
    found = [d for d in found if (d / "constant" / "polyMesh").is_dir()]
    return sorted(found, key=lambda d: int(d.name.removeprefix("processor")))


def _times(root: Path) -> dict[float, str]:
    """The time folders of ``root``: value -> folder name (``0``, ``100``, ``0.005``, ``1e-05``)."""
    times: dict[float, str] = {}
    for d in root.iterdir():
        try:
            value = float(d.name)
        except ValueError:
            continue
        if d.is_dir() and math.isfinite(value):
            times[value] = d.name
    return times


_COMMENTS = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_ENTRY = re.compile(r"([^\s{}();]+)\s*\{([^{}]*)\}")


def _patches(root: Path) -> tuple[Patch, ...]:
    """The patches of ``root/constant/polyMesh/boundary`` (ASCII, possibly gzipped), in file order."""
    path = root / "constant" / "polyMesh" / "boundary"
    try:
        raw = gzip.decompress(path.with_suffix(".gz").read_bytes()) if not path.is_file() else path.read_bytes()
        text = _COMMENTS.sub(" ", raw.decode("utf-8", errors="replace"))
    except OSError as exc:
        raise MeshReadError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    patches = []
    for name, body in _ENTRY.findall(text):
        if name == "FoamFile":
            continue
        kind = re.search(r"\btype\s+([^\s;]+)\s*;", body)
        faces = re.search(r"\bnFaces\s+(\d+)\s*;", body)
        patches.append(Patch(name=name, type=kind[1] if kind else "?", faces=int(faces[1]) if faces else 0))
    if not patches:
        raise MeshReadError(f"{path}: no boundary patches found (not an OpenFOAM boundary file)")
    return tuple(patches)


# --- reading ---------------------------------------------------------------------------------------------


def _read(
    marker: Path, layout: Layout, body: list[str], *, volume: bool, at_points: bool, fields: Sequence[str] | None
) -> dict[str, Any]:
    """VTK's reader on the case: the blocks ``internalMesh`` and ``boundary/<patch>`` asked for, as pyvista data."""
    import pyvista as pv
    import vtk

    reader = vtk.vtkPOpenFOAMReader()
    reader.SetFileName(str(marker))
    reader.SetCaseType(0 if layout.decomposed else 1)  # 0: decomposed (the processors appended), 1: reconstructed
    reader.SetSkipZeroTime(False)
    reader.SetCreateCellToPoint(at_points)
    reader.SetReadZones(False)

    def run() -> None:
        reader.UpdateInformation()
        wanted = {"internalMesh"} if volume else set()
        wanted |= {f"patch/{name}" for name in body} | set(body)  # VTK 9.3+ names patches "patch/<name>"
        for i in range(reader.GetNumberOfPatchArrays()):
            name = reader.GetPatchArrayName(i)
            reader.SetPatchArrayStatus(name, int(name in wanted))
        have = [reader.GetCellArrayName(i) for i in range(reader.GetNumberOfCellArrays())]
        if fields is not None and set(fields) <= set(have):  # only the fields asked for: less to read
            for name in have:
                reader.SetCellArrayStatus(name, int(name in fields))
        if layout.time is None:
            reader.Update()
        else:
            reader.UpdateTimeStep(float(layout.time))

    error = _vtk_error(run)
    if error is not None:
        raise MeshReadError(f"{layout.folder}: VTK cannot read this OpenFOAM case ({error})")
    blocks: dict[str, Any] = {}
    _flatten(pv.wrap(reader.GetOutput()), "", blocks)
    return blocks


def _vtk_error(fn: Any) -> str | None:
    """Call ``fn``; the first error VTK reported meanwhile (its message, one line), else None.

    VTK's reader reports a file it cannot parse through its output window, not as an exception: for
    the call that window is a string buffer (and file descriptor 2 the null device, where VTK's logger
    writes), both restored afterwards.
    """
    import vtk

    from msptcli.io.meshes import _stderr_fd_silenced

    window, previous = vtk.vtkStringOutputWindow(), vtk.vtkOutputWindow.GetInstance()
    shown = vtk.vtkObject.GetGlobalWarningDisplay()
    vtk.vtkOutputWindow.SetInstance(window)
    vtk.vtkObject.GlobalWarningDisplayOn()
    try:
        with _stderr_fd_silenced():
            fn()
    finally:
        vtk.vtkOutputWindow.SetInstance(previous)
        vtk.vtkObject.SetGlobalWarningDisplay(shown)
    found = re.search(r"ERROR: In [^\n]*\n(?:[^\n]*?\(0x[0-9a-f]+\): )?([^\n]+)", window.GetOutput())
    return re.sub(r"\s+", " ", found[1]).strip()[:300] if found else None


def _flatten(multi: Any, prefix: str, out: dict[str, Any]) -> None:
    """``out[path] = dataset`` for every leaf of the multiblock ``multi`` (``internalMesh``, ``boundary/body``)."""
    import pyvista as pv

    for i in range(multi.n_blocks):
        name, block = multi.get_block_name(i), multi[i]
        if isinstance(block, pv.MultiBlock):
            _flatten(block, f"{prefix}{name}/", out)
        elif block is not None:
            out[f"{prefix}{name}"] = block


def _merged_surface(patches: list[Any]) -> pv.PolyData:
    """The patches as one PolyData: faces in order, the arrays every patch has, equal points merged."""
    import pyvista as pv
    import vtk

    append = vtk.vtkAppendPolyData()
    for patch in patches:
        append.AddInputData(patch)
    clean = vtk.vtkCleanPolyData()
    clean.SetInputConnection(append.GetOutputPort())
    clean.PointMergingOn()
    clean.SetTolerance(0.0)
    clean.ConvertPolysToLinesOff()
    clean.ConvertLinesToPointsOff()
    clean.ConvertStripsToPolysOff()
    clean.Update()
    return pv.wrap(clean.GetOutput())


def _merged_points(mesh: Any) -> pv.UnstructuredGrid:
    """A decomposed case's internal mesh with the points that processors share merged (cells unchanged)."""
    import pyvista as pv
    import vtk

    clean = vtk.vtkStaticCleanUnstructuredGrid()
    clean.SetInputData(mesh)
    clean.SetTolerance(0.0)
    clean.Update()
    return pv.wrap(clean.GetOutput())
