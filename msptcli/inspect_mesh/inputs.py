"""The inputs of ``mspt inspect``: a mesh file is described alone; a case folder by its surface and volume files,
found by the config's patterns exactly as ``mspt prepare`` finds them (``data/cases.py``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msptcli.config import DataConfig, MsptConfig
from msptcli.data.cases import find_cases
from msptcli.data.openfoam import read_case, source_files
from msptcli.errors import InvalidInputError, MeshReadError
from msptcli.inspect_mesh.mesh import MeshInfo, describe_dataset, describe_mesh
from msptcli.inspect_mesh.suggest import Suggestion, suggest


@dataclass(frozen=True)
class Inspection:
    """One input: a mesh file (``case`` None, its one mesh under ``"mesh"``) or a case folder (its ``"surface"``
    and, when found, ``"volume"``), with the suggested config for it."""

    input: Path
    case: str | None
    meshes: dict[str, MeshInfo]  # role: "mesh" | "surface" | "volume"
    params: Path | None
    suggestion: Suggestion

    def to_json(self) -> list[dict[str, Any]]:
        """One dict per mesh: the mesh's description, with its input, case, role, params and suggestion."""
        about = {"input": str(self.input), "case": self.case, "params": _str(self.params)}
        return [{**about, "role": role, **mesh.to_json(), "suggested": self.suggestion.to_json()}
                for role, mesh in self.meshes.items()]  # fmt: skip


def inspect_inputs(inputs: Sequence[str | os.PathLike[str]], *, config: MsptConfig) -> list[Inspection]:
    """Describe every input (a mesh file or a case folder) in order.

    Raises :class:`MeshReadError` for a missing or unreadable file, :class:`InvalidInputError` for a case folder
    whose files the config's patterns do not find.
    """
    data = config.data
    speed = data.reference_velocity if "reference_velocity" in data.model_fields_set else None
    found = []
    for item in inputs:
        path = Path(item)
        if not path.exists():
            raise MeshReadError(f"{path}: no such file or folder")
        if path.is_file():
            mesh = describe_mesh(path)
            part = {"surface": mesh} if mesh.kind == "surface" else {"volume": mesh}
            found.append(Inspection(path, None, {"mesh": mesh}, None, suggest(**part, reference_velocity=speed)))
            continue
        if data.transient is not None:
            raise InvalidInputError(f"{path}: mspt inspect reads steady case folders; for a transient series "
                                    "pass one of its snapshot files")  # fmt: skip
        (case,) = find_cases([str(path)], data, require_volume=False)
        if case.openfoam:
            meshes = _openfoam_meshes(case.surface, data, volume=case.volume is not None)
        else:
            meshes = {"surface": describe_mesh(case.surface)}
            if case.volume is not None:
                meshes["volume"] = describe_mesh(case.volume)
        suggestion = suggest(surface=meshes["surface"], volume=meshes.get("volume"), reference_velocity=speed)
        if case.volume is None and data.volume_file is not None and data.volume_fields:
            suggestion.notes.append(f"{path}: no single volume file matching {data.volume_file!r}: surface only "
                                    "(data.volume_fields: [])")  # fmt: skip
            suggestion.config["volume_fields"] = []
        found.append(Inspection(path, case.name, meshes, case.params, suggestion))
    return found


def _openfoam_meshes(path: Path, data: DataConfig, *, volume: bool) -> dict[str, MeshInfo]:
    """An OpenFOAM case's body surface and internal mesh as ``mspt prepare`` reads them (``data/openfoam.py``), at
    the configured time (any time folder: a mesh without results is described too); their size on disk is that
    of the files read."""
    meshes = read_case(path, data.openfoam, volume=volume, results=False)
    size = sum(f.stat().st_size for f in source_files(path, data.openfoam))
    found = {"surface": describe_dataset(meshes.surface, path=path, file_bytes=size)}
    if meshes.volume is not None:
        found["volume"] = describe_dataset(meshes.volume, path=path, file_bytes=size)
    return found


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)
