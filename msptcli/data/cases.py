"""Finding the cases of a dataset: folders, files or globs, resolved by the data config's patterns."""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from msptcli.config import DataConfig
from msptcli.data.openfoam import case_folder
from msptcli.errors import InvalidInputError


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case. ``volume`` and ``params`` may be absent.

    ``openfoam``: ``surface`` (and ``volume``) is an OpenFOAM case folder or its marker file, whose body
    patches are the surface and whose internal mesh is the volume (``msptcli/data/openfoam.py``).
    """

    name: str
    surface: Path
    volume: Path | None = None
    params: Path | None = None
    openfoam: bool = False


def find_cases(inputs: Sequence[str], data: DataConfig, *, require_volume: bool = True) -> list[CaseFiles]:
    """Resolve command-line inputs into cases, in a stable (sorted) order.

    An input is a case folder (its surface, volume and params files found by the
    config's glob patterns), an OpenFOAM case folder or marker file (one without a
    file matching ``data.surface_file``), a mesh file (a surface-only case named by
    its stem), or a glob of either. Raises :class:`InvalidInputError` for an input that
    matches nothing, a folder without exactly one surface (or volume) file, and
    two cases with the same name.
    """
    paths: list[Path] = []
    for item in inputs:
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not matches:
            raise InvalidInputError(f"{item}: matches no file or folder")
        for m in matches:
            p = Path(m)
            if not p.exists() and _OVERRIDE.match(m):
                raise InvalidInputError(f"{m}: is not a file or folder but looks like a config override: use --set {m}")
            if not p.exists():
                raise InvalidInputError(f"{p}: no such file or folder")
            paths.append(p)
    cases = [_case_of(p, data, require_volume=require_volume) for p in paths]
    seen: dict[str, Path] = {}
    for case in cases:
        if case.name in seen:
            raise InvalidInputError(f"two cases are named {case.name!r}: {seen[case.name]} and {case.surface}")
        seen[case.name] = case.surface
    if not cases:
        raise InvalidInputError("no input cases given")
    return sorted(cases, key=lambda c: c.name)


def _case_of(path: Path, data: DataConfig, *, require_volume: bool) -> CaseFiles:
    if data.transient is not None:
        return _series_case_of(path, data)
    foam = case_folder(path)
    if foam is not None and not (path.is_dir() and any(path.glob(data.surface_file))):
        volume = path if data.volume_file is not None and data.volume_fields else None
        params = find_params(foam, data.params_file)
        return CaseFiles(name=foam.name, surface=path, volume=volume, params=params, openfoam=True)
    if path.is_file():
        return CaseFiles(name=path.stem, surface=path)
    surface = _one(path, data.surface_file, "surface")
    volume = None
    if data.volume_file is not None and data.volume_fields:
        volume = _one(path, data.volume_file, "volume") if require_volume else _optional(path, data.volume_file)
    params = find_params(path, data.params_file)
    return CaseFiles(name=path.name, surface=surface, volume=volume, params=params)


def _series_case_of(path: Path, data: DataConfig) -> CaseFiles:
    """A transient case: a folder holding its series (``data.transient.series_file``), or the series file
    itself; either way the case is named by the folder, and ``surface`` is what the series is read from."""
    assert data.transient is not None
    folder = path.parent if path.is_file() else path
    if path.is_dir() and not any(folder.glob(data.transient.series_file)):
        raise InvalidInputError(
            f"{folder}: no series matching {data.transient.series_file!r} (set data.transient.series_file)"
        )
    params = find_params(folder, data.params_file)
    return CaseFiles(name=folder.resolve().name, surface=path, params=params)


def find_params(folder: Path, pattern: str | None) -> Path | None:
    """A case's params file: the one file in ``folder`` matching ``pattern`` (``data.params_file``); None for no
    pattern, no file or several files."""
    return _optional(folder, pattern) if pattern else None


#: ``section.key=value``: what a Hydra-style override given where a case is expected looks like.
_OVERRIDE = re.compile(r"^[A-Za-z_]\w*(\.\w+)+=")


def _one(folder: Path, pattern: str, what: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found and what == "surface":
        raise InvalidInputError(_not_a_case(folder, pattern))
    if not found:
        raise InvalidInputError(f"{folder}: no {what} file matching {pattern!r} (set data.{what}_file)")
    if len(found) > 1:
        names = ", ".join(f.name for f in found[:3])
        raise InvalidInputError(f"{folder}: several {what} files match {pattern!r} ({names})")
    return found[0]


def _optional(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern))
    return found[0] if len(found) == 1 else None


def _not_a_case(folder: Path, pattern: str) -> str:
    """Why ``folder`` has no surface file matching ``pattern``, with the likely fix: it is the parent of the case
    folders, or a transient case (or their parent) given without a config that says so, or neither."""
    subfolders = sorted(d for d in folder.iterdir() if d.is_dir())
    cases = [d.name for d in subfolders if any(d.glob(pattern))]
    if cases:
        shown = ", ".join(cases[:3]) + (", ..." if len(cases) > 3 else "")
        return (f"{folder}: is not a case but holds {len(cases)} case folder{'s' * (len(cases) > 1)} ({shown}); "
                f"did you mean '{folder / _glob_of(cases)}'?")  # fmt: skip
    series = [folder.name] if _holds_series(folder) else [d.name for d in subfolders if _holds_series(d)]
    if series:
        what, where = ("a time series, a transient case", folder) if series == [folder.name] else (
            f"{len(series)} transient case folder{'s' * (len(series) > 1)}", folder / _glob_of(series))
        return (f"{folder}: holds {what}: prepare '{where}' with a config that has a data.transient section "
                "(e.g. -c examples/transient/config.yaml; docs/transient.md)")
    return f"{folder}: no surface file matching {pattern!r} (set data.surface_file, or see docs/pipeline.md)"


def _glob_of(names: list[str]) -> str:
    """One name, or the glob of several by their common prefix (``case_0000``, ``case_0001`` -> ``case_*``)."""
    if len(names) == 1:
        return names[0]
    first, last = min(names), max(names)  # the common prefix of all names is that of the first and last in order
    common = next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first))
    return first[:common].rstrip("0123456789") + "*"


def _holds_series(folder: Path) -> bool:
    """Whether ``folder`` holds a ParaView collection or numbered mesh snapshots (``fields_000.vtu``, ...)."""
    if any(folder.glob("*.pvd")):
        return True
    numbered = [f for f in folder.glob("*_[0-9]*.vt[uk]") if f.is_file()]
    return len(numbered) > 1
