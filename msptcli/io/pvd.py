"""ParaView collections (``.pvd``): the files and times of a time series, read and written in one place.

A collection is XML that lists one ``DataSet`` per snapshot::

    <VTKFile type="Collection" version="0.1" byte_order="LittleEndian">
      <Collection>
        <DataSet timestep="0.1" group="" part="0" file="case/case_001.vtu"/>
        ...

``file`` is relative to the collection's folder (or absolute). mspt reads single-part collections
(``data/series.py``) and writes them for a rollout (``rollout.py``).
"""

from __future__ import annotations

import itertools
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np

from msptcli.errors import InvalidInputError, MeshReadError
from msptcli.io.atomic import atomic_output


def read_pvd(path: Path) -> tuple[list[Path], np.ndarray]:
    """The files and (T,) float64 times of a collection, sorted by time; missing files, repeated times and
    several parts are errors that name the collection."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "not XML"
        raise MeshReadError(f"{path}: cannot be read as a .pvd collection ({reason})") from None
    entries: list[tuple[float, str, Path]] = []
    parts: set[str] = set()
    for element in root.iter("DataSet"):
        step, name = element.get("timestep"), element.get("file")
        if step is None or name is None:
            raise InvalidInputError(f"{path}: a DataSet without a 'timestep' or 'file' attribute")
        try:
            time = float(step)
        except ValueError:
            raise InvalidInputError(f"{path}: timestep {step!r} of {name} is not a number") from None
        if not np.isfinite(time):
            raise InvalidInputError(f"{path}: timestep {step!r} of {name} is not finite")
        parts.add(element.get("part", "0") or "0")
        file = Path(name) if Path(name).is_absolute() else path.parent / name
        entries.append((time, name, file))
    if not entries:
        raise InvalidInputError(f"{path}: no DataSet entries (not a ParaView collection of snapshots?)")
    if len(parts) > 1:
        raise InvalidInputError(f"{path}: parts {', '.join(sorted(parts))}: multi-part collections are not supported")
    entries.sort(key=lambda e: e[0])
    for (t0, n0, _), (t1, n1, _) in itertools.pairwise(entries):
        if t1 == t0:
            raise InvalidInputError(f"{path}: {n0} and {n1} have the same timestep {t0:.10g}")
    for time, name, file in entries:
        if not file.is_file():
            raise MeshReadError(f"{path}: snapshot file {name} (timestep {time:.10g}) does not exist")
    return [e[2] for e in entries], np.array([e[0] for e in entries], dtype=np.float64)


def write_pvd(path: str | os.PathLike[str], entries: Sequence[tuple[float, str]]) -> Path:
    """Write the collection of ``entries`` (time, file relative to the collection's folder), whole or not at all."""
    rows = "\n".join(
        f'    <DataSet timestep="{float(t)!r}" group="" part="0" file={quoteattr(f)}/>' for t, f in entries
    )
    text = (
        '<?xml version="1.0"?>\n<VTKFile type="Collection" version="0.1" byte_order="LittleEndian">\n'
        f"  <Collection>\n{rows}\n  </Collection>\n</VTKFile>\n"
    )
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)
