"""Reading a transient run: equally spaced snapshots on one fixed mesh, with one-line errors that name the file.

A series is a ParaView collection (``.pvd``) or numbered snapshot files (``fields_000.vtu``,
``fields_001.vtu``, ...). :func:`series_files` finds the files and, for a collection, their
times (``io/pvd.py``); :func:`read_series` reads the selected snapshots with
:func:`msptcli.data.read.read_fields` and checks that they are equally spaced in time and share
one mesh: mspt learns a fixed time step on a fixed mesh.
"""

from __future__ import annotations

import glob
import itertools
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from msptcli.data.read import FieldMesh, read_fields
from msptcli.errors import InvalidInputError, MeshReadError
from msptcli.io.meshes import MESH_SUFFIXES, read_mesh
from msptcli.io.pvd import read_pvd

#: Consecutive snapshot times may differ from the mean spacing by this much, relative ...
SPACING_RTOL = 1e-4
#: ... plus this much, absolute.
SPACING_ATOL = 1e-9
#: Snapshot points may differ from the first snapshot's by this fraction of the mesh's extent.
POINTS_RTOL = 1e-6
#: The VTK field-data array with a snapshot's time (foamToVTK writes it).
TIME_ARRAY = "TimeValue"


@dataclass
class Series:
    """The snapshots of a transient run, in time order, on the mesh of the first one.

    ``fields[name]`` is ``(T, N, k)`` float32 at ``points`` (mesh points, ``location='points'``, or
    cell centres, ``'cells'``); ``times`` is ``(T,)`` float64 and equally spaced.
    """

    source: Path  # the .pvd, or the first numbered file
    files: list[Path]  # one per snapshot, in time order
    times: np.ndarray  # (T,) float64
    mesh: Any  # pyvista.DataSet of the first snapshot
    points: np.ndarray  # (N, 3) float64
    location: str  # "points" | "cells"
    fields: dict[str, np.ndarray]  # name -> (T, N, k) float32

    @property
    def dt(self) -> float:
        """The snapshot spacing: the mean difference of consecutive times."""
        return float((self.times[-1] - self.times[0]) / (len(self.times) - 1))


def series_files(path: str | os.PathLike[str], pattern: str | None = None) -> tuple[list[Path], np.ndarray | None]:
    """The snapshot files of the series at ``path``, in time order, and their times when the series says them.

    ``path`` is a ``.pvd`` collection (times from its ``timestep`` attributes), a folder, or a glob of
    numbered snapshot files (times ``None``: :func:`read_series` takes them from the files or ``dt``).
    In a folder, ``pattern`` (a glob relative to it) picks the series; without one, the folder's only
    ``.pvd``, else its only group of numbered mesh files. ``pattern`` is ignored unless ``path`` is a folder.
    """
    _, files, times = _resolve(path, pattern)
    return files, times


def read_series(
    path: str | os.PathLike[str],
    names: Sequence[str],
    *,
    pattern: str | None = None,
    dt: float | None = None,
    start: int | None = 0,
    stop: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Series:
    """Read the fields ``names`` of the snapshots ``[start:stop]`` of the series at ``path``.

    Only the selected snapshots are read. Times come from the ``.pvd``, else from each file's
    ``TimeValue`` field data, else ``index * dt`` (``index`` counts from the first file of the whole
    series, so a selection keeps its times); ``dt`` is not used where the series has times.
    ``progress(done, total)`` is called after each snapshot read. Raises :class:`InvalidInputError`
    for fewer than 2 snapshots, unequal spacing, a changed mesh, and the errors of
    :func:`msptcli.data.read.read_fields`; :class:`MeshReadError` for missing or unreadable files.
    """
    if dt is not None and not (np.isfinite(dt) and dt > 0):
        raise InvalidInputError(f"the snapshot spacing dt must be a positive number, not {dt} (data.transient.dt)")
    source, all_files, all_times = _resolve(path, pattern)
    positions = list(range(len(all_files)))[start:stop]
    if len(positions) < 2:
        chosen = "" if (start in (0, None) and stop is None) else f" selected by start={start}, stop={stop}"
        raise InvalidInputError(
            f"{source}: {len(positions)} snapshot(s){chosen} of {len(all_files)}; a transient series needs at least 2"
        )
    files = [all_files[i] for i in positions]
    if all_times is not None:  # known before reading: fail before reading anything
        _check_spacing(source, files, all_times[positions])
    first_mesh: Any = None
    points = np.empty((0, 3))
    location = ""
    fields: dict[str, np.ndarray] = {}
    file_times: list[float | None] = []
    for j, file in enumerate(files):
        mesh = read_mesh(file)
        if first_mesh is None:
            first_mesh = mesh
        else:
            _check_same_mesh(first_mesh, files[0], mesh, file)
        got = read_fields(file, names, mesh=mesh)
        if j == 0:
            points, location = got.points, got.location
            fields = {n: np.empty((len(files), *v.shape), dtype=np.float32) for n, v in got.fields.items()}
        _store(fields, j, got, file, files[0], location)
        if all_times is None:
            file_times.append(_time_value(mesh, file))
            if j == 0 and file_times[0] is None and dt is None:
                raise InvalidInputError(
                    f"{file}: no snapshot time (no {TIME_ARRAY} field data and no .pvd); "
                    "give the snapshot spacing (data.transient.dt)"
                )
        if progress is not None:
            progress(j + 1, len(files))
    times = _times(files, positions, all_times, file_times, dt)
    if all_times is None:
        _check_spacing(source, files, times)
    return Series(
        source=source, files=files, times=times, mesh=first_mesh, points=points, location=location, fields=fields
    )


def _store(fields: dict[str, np.ndarray], j: int, got: FieldMesh, file: Path, first: Path, location: str) -> None:
    """Snapshot ``j``'s fields (``read_fields``' result) into the (T, N, k) arrays, checked to be of the first
    snapshot's location and components."""
    if got.location != location:
        raise InvalidInputError(
            f"{file}: the fields are {got.location[:-1]} data, in {first.name} they are {location[:-1]} data"
        )
    for name, values in got.fields.items():
        if values.shape[1:] != fields[name].shape[2:]:
            raise InvalidInputError(
                f"{file}: field {name!r} has {values.shape[1]} components, {first.name} has {fields[name].shape[2]}"
            )
        fields[name][j] = values


# --- finding the files ---------------------------------------------------------------------------------------


def _resolve(path: str | os.PathLike[str], pattern: str | None) -> tuple[Path, list[Path], np.ndarray | None]:
    """``(source, files, times)`` of the series at ``path``; ``times`` is None for numbered files."""
    text = os.fspath(path)
    if glob.has_magic(text) and not Path(text).exists():
        matches = [Path(m) for m in sorted(glob.glob(text)) if Path(m).is_file()]
        if not matches:
            raise MeshReadError(f"{text}: matches no file")
        return _from_matches(matches, text)
    p = Path(text)
    if not p.exists():
        raise MeshReadError(f"{p}: no such file or folder")
    if p.is_dir():
        if pattern is not None:
            matches = sorted(m for m in p.glob(pattern) if m.is_file())
            if not matches:
                raise MeshReadError(f"{p}: no file matches {pattern!r} (set the series pattern)")
            return _from_matches(matches, f"{p / pattern}")
        return _from_folder(p)
    if p.suffix.lower() == ".pvd":
        files, times = read_pvd(p)
        return p, files, times
    return _from_matches([p], text)


def _from_folder(folder: Path) -> tuple[Path, list[Path], np.ndarray | None]:
    """The folder's only .pvd, else its only group of numbered mesh files (same name but for the number)."""
    collections = sorted(m for m in folder.glob("*.pvd") if m.is_file())
    if len(collections) == 1:
        files, times = read_pvd(collections[0])
        return collections[0], files, times
    if collections:
        names = ", ".join(c.name for c in collections[:3])
        raise InvalidInputError(f"{folder}: several .pvd files ({names}); give a pattern to pick one")
    groups: dict[str, list[Path]] = {}
    for m in sorted(folder.iterdir()):
        if m.is_file() and m.suffix.lower() in MESH_SUFFIXES and _number(m) is not None:
            groups.setdefault(_template(m), []).append(m)
    if len(groups) != 1:
        found = ", ".join(sorted(groups)[:3]) if groups else "none"
        raise InvalidInputError(
            f"{folder}: no .pvd and {'no' if not groups else 'several'} groups of numbered mesh files "
            f"({found}); give a pattern such as 'fields_*.vtu'"
        )
    ((template, matches),) = groups.items()
    return _from_matches(matches, str(folder / template))


def _from_matches(matches: list[Path], what: str) -> tuple[Path, list[Path], np.ndarray | None]:
    """One .pvd, or numbered mesh files, matched by ``what`` (a glob, named by errors)."""
    collections = [m for m in matches if m.suffix.lower() == ".pvd"]
    if collections:
        if len(matches) > 1:
            names = ", ".join(m.name for m in matches[:3])
            several = "several .pvd files" if len(collections) == len(matches) else "a .pvd and other files"
            raise InvalidInputError(f"{what}: matches {several} ({names}); match one .pvd, or numbered mesh files")
        files, times = read_pvd(collections[0])
        return collections[0], files, times
    for m in matches:
        if m.suffix.lower() not in MESH_SUFFIXES:
            raise InvalidInputError(f"{m}: not a mesh file or .pvd collection (matched by {what})")
    files = _numbered(matches, what)
    return files[0], files, None


def _numbered(matches: list[Path], what: str) -> list[Path]:
    """Numbered snapshot files in the order of the last integer in their names; a gap or a repeat is an error."""
    if len(matches) == 1:
        return matches
    by_number: dict[int, Path] = {}
    for m in matches:
        number = _number(m)
        if number is None:
            raise InvalidInputError(f"{m}: no snapshot number in the file name (matched by {what})")
        if number in by_number:
            raise InvalidInputError(f"{m}: snapshot {number} again, {by_number[number].name} has the same number")
        by_number[number] = m
    numbers = sorted(by_number)
    for a, b in itertools.pairwise(numbers):
        if b != a + 1:
            gap = f"snapshot {a + 1} is missing" if b == a + 2 else f"snapshots {a + 1} to {b - 1} are missing"
            raise InvalidInputError(f"{what}: {gap} between {by_number[a].name} and {by_number[b].name}")
    return [by_number[n] for n in numbers]


def _number(path: Path) -> int | None:
    """The last integer in the file's name (before the suffix), or None."""
    found = re.findall(r"\d+", path.stem)
    return int(found[-1]) if found else None


def _template(path: Path) -> str:
    """The file name with its last integer replaced by ``*``: the glob of its series."""
    stem = path.stem
    match = list(re.finditer(r"\d+", stem))[-1]
    return f"{stem[: match.start()]}*{stem[match.end() :]}{path.suffix}"


# --- times and checks ----------------------------------------------------------------------------------------


def _time_value(mesh: Any, file: Path) -> float | None:
    """The snapshot time in the file's ``TimeValue`` field data, or None."""
    if TIME_ARRAY not in mesh.field_data:
        return None
    values = np.asarray(mesh.field_data[TIME_ARRAY]).ravel()
    if values.size == 0 or not np.issubdtype(values.dtype, np.number) or not np.isfinite(values[0]):
        raise InvalidInputError(f"{file}: field data {TIME_ARRAY} is not a time ({values[:3]!r})")
    return float(values[0])


def _times(
    files: list[Path],
    positions: list[int],
    all_times: np.ndarray | None,
    file_times: list[float | None],
    dt: float | None,
) -> np.ndarray:
    """The selected snapshots' times: from the .pvd, from every file's TimeValue, or ``position * dt``."""
    if all_times is not None:
        return all_times[positions]
    have = [t is not None for t in file_times]
    if all(have):
        times = np.array(file_times, dtype=np.float64)
        for i in range(len(files) - 1):
            if times[i + 1] <= times[i]:
                raise InvalidInputError(
                    f"{files[i + 1]}: {TIME_ARRAY} {times[i + 1]:.10g} does not follow {files[i].name}'s "
                    f"{times[i]:.10g}; snapshot times must increase with the file number"
                )
        return times
    if any(have):
        lacking = files[have.index(False)]
        raise InvalidInputError(f"{lacking}: no {TIME_ARRAY} field data, but {files[have.index(True)].name} has one")
    assert dt is not None  # read_series stops at the first file without it
    return np.array(positions, dtype=np.float64) * dt


def _check_spacing(source: Path, files: list[Path], times: np.ndarray) -> None:
    """Consecutive times must differ by the mean spacing, to within SPACING_RTOL (+ SPACING_ATOL).

    The error names the first pair of snapshots whose step is off the median step (the one that is
    really off where a single step is: it moves the mean, and so every step off the mean).
    """
    steps = np.diff(times)
    mean = float((times[-1] - times[0]) / (len(times) - 1))
    if not (np.abs(steps - mean) > SPACING_RTOL * abs(mean) + SPACING_ATOL).any():
        return
    median = float(np.median(steps))
    off = np.flatnonzero(np.abs(steps - median) > SPACING_RTOL * abs(median) + SPACING_ATOL)
    i = int(off[0]) if off.size else int(np.argmax(np.abs(steps - mean)))
    raise InvalidInputError(
        f"{source}: snapshots are not equally spaced: {files[i].name} (t={times[i]:.10g}) to "
        f"{files[i + 1].name} (t={times[i + 1]:.10g}) is {steps[i]:.6g}, the median step is {median:.6g}; "
        "mspt learns a fixed time step"
    )


def _check_same_mesh(first: Any, first_file: Path, mesh: Any, file: Path) -> None:
    """``mesh`` must have the points and cells of the first snapshot: a fixed mesh."""
    same = "(the mesh must be the same in every snapshot)"
    if type(mesh) is not type(first):
        raise InvalidInputError(f"{file}: a {type(mesh).__name__}, {first_file.name} is a {type(first).__name__}")
    for what, n, n0 in (("points", mesh.n_points, first.n_points), ("cells", mesh.n_cells, first.n_cells)):
        if n != n0:
            raise InvalidInputError(f"{file}: {n} {what}, {first_file.name} has {n0} {same}")
    cells0 = _cells(first)
    for what, array in _cells(mesh).items():
        if not np.array_equal(array, cells0[what]):
            raise InvalidInputError(f"{file}: the {what} differ from {first_file.name}'s {same}")
    points, points0 = np.asarray(mesh.points, dtype=np.float64), np.asarray(first.points, dtype=np.float64)
    moved = float(np.abs(points - points0).max()) if len(points) else 0.0
    extent = float(np.ptp(points0, axis=0).max()) if len(points0) else 0.0
    if not moved <= POINTS_RTOL * extent:  # also catches NaN
        raise InvalidInputError(
            f"{file}: points moved by up to {moved:.3g} from {first_file.name} (a moving mesh is not supported)"
        )


def _cells(mesh: Any) -> dict[str, np.ndarray]:
    """The arrays that define the cells of ``mesh``, by what they are called in errors."""
    import pyvista as pv

    if isinstance(mesh, pv.UnstructuredGrid):
        return {"cell types": np.asarray(mesh.celltypes), "cell connectivity": np.asarray(mesh.cells)}
    if isinstance(mesh, pv.PolyData):
        return {
            "vertex cells": np.asarray(mesh.verts),
            "line cells": np.asarray(mesh.lines),
            "polygon cells": np.asarray(mesh.faces),
            "strip cells": np.asarray(mesh.strips),
        }
    if hasattr(mesh, "dimensions"):
        return {"grid dimensions": np.asarray(mesh.dimensions)}
    return {}
