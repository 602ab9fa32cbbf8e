"""The one check of a command's outputs, before anything is written: no output may clobber an input.

Every command that writes (``prepare``, ``train``, ``predict``, the rollout, ``export``) and every
mesh write (``io/meshes.py::write_mesh``) calls :func:`check_outputs` with the paths it will write,
so a mistaken ``-o`` is one line and leaves every file as it was.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from msptcli.errors import InvalidInputError, OutputError


def check_outputs(
    folder: Path | None,
    files: Iterable[Path] = (),
    *,
    folders: Iterable[Path] = (),
    inputs: Iterable[Path] = (),
    input_name: str = "an input file",
    option: str = "--output",
) -> None:
    """Refuse the outputs of a command before it writes any of them.

    Args:
        folder: the output directory: it may be new, not an existing file (:class:`OutputError`).
        files: the files to write: none may be a directory (:class:`OutputError`) or one of ``inputs``.
        folders: folders to write or replace: none may be one of ``inputs`` or hold one.
        inputs: the command's input files; ``input_name`` names them in the message ("the input series").
        option: the command's output option, named in the message.

    Raises:
        OutputError: an output directory that is a file, an output file that is a directory.
        InvalidInputError: an output that would overwrite an input.
    """
    if folder is not None and folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder}: exists and is not a directory; choose another {option}")
    sources = [q for q in inputs if q.exists()]
    files, folders = list(files), list(folders)
    for path in files:
        if path.is_dir():
            raise OutputError(f"cannot write {path}: it is a directory")
    clobbered = [p for p in files if any(same_file(p, q) for q in sources)]
    clobbered += [p for p in folders if any(q.resolve().is_relative_to(p.resolve()) for q in sources)]
    if clobbered:
        raise InvalidInputError(f"{clobbered[0]}: refusing to overwrite {input_name}; choose another {option}")


def same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are one existing file (through links, too)."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False
