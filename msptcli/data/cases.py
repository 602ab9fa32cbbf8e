"""Finding the cases of a dataset: folders, files or globs, resolved by the data config's patterns."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from msptcli.config import DataConfig
from msptcli.errors import InvalidInputError


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case. ``volume`` and ``params`` may be absent."""

    name: str
    surface: Path
    volume: Path | None = None
    params: Path | None = None


def find_cases(inputs: Sequence[str], data: DataConfig, *, require_volume: bool = True) -> list[CaseFiles]:
    """Resolve command-line inputs into cases, in a stable (sorted) order.

    An input is a case folder (its surface, volume and params files found by the
    config's glob patterns), a mesh file (a surface-only case named by its stem),
    or a glob of either. Raises :class:`InvalidInputError` for an input that
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


def _one(folder: Path, pattern: str, what: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise InvalidInputError(f"{folder}: no {what} file matching {pattern!r} (set data.{what}_file)")
    if len(found) > 1:
        names = ", ".join(f.name for f in found[:3])
        raise InvalidInputError(f"{folder}: several {what} files match {pattern!r} ({names})")
    return found[0]


def _optional(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern))
    return found[0] if len(found) == 1 else None
