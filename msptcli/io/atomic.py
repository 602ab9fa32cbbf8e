"""Outputs appear whole or not at all: write to a temporary name, then rename.

Every file mspt writes goes through :func:`atomic_output` (and every output folder through
:func:`make_dirs`), so every write failure — a read-only or missing directory, a full disk, a
path that is a directory — becomes one :class:`~msptcli.errors.OutputError` naming the file, and
no temporary file is left.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from msptcli.errors import MsptError, OutputError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary file keeps the suffix of ``path`` (writers choose the format
    by it) and is removed if the block raises, so an interrupted write never
    leaves a half-written ``path`` behind. An ``OSError``, or a writer's own error
    wrapping a failed write (torch's ``RuntimeError``, safetensors' error), becomes
    an :class:`OutputError`.
    """
    final = Path(path)
    if final.is_dir():
        raise OutputError(f"cannot write {final}: it is a directory")
    make_dirs(final.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent)
        os.close(fd)
    except OSError as exc:
        raise output_error(final, exc) from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.stat().st_size == 0 and final.suffix not in (".csv", ".txt"):
            full = _disk_full(tmp.parent)
            raise OutputError(f"cannot write {final}: " + (full or "nothing was written (is the disk full?)"))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, final)
    except MsptError:
        raise
    except Exception as exc:
        reason = _write_failure(exc, tmp.parent)
        if reason is None:  # not a failed write: a bug, shown as such
            raise
        raise OutputError(f"cannot write {final}: {reason}") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike[str], value: Any) -> Path:
    """Write ``value`` as indented JSON through :func:`atomic_output`. JSON has no NaN or Infinity:
    such numbers become null; NumPy scalars become Python numbers."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(_finite(value), indent=1, allow_nan=False))
    return Path(path)


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    return value


def make_dirs(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` and its parents if missing; :class:`OutputError` naming it if they cannot be."""
    p = Path(folder)
    blocking = next((q for q in (p, *p.parents) if q.exists() and not q.is_dir()), None)
    if blocking is not None:
        raise OutputError(f"cannot write into {p}: {blocking} is a file, not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(p, exc) from None
    return p


def output_error(path: str | os.PathLike[str], exc: OSError) -> OutputError:
    """``cannot write PATH: REASON`` for an ``OSError`` met while writing ``path``."""
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


def _write_failure(exc: Exception, folder: Path) -> str | None:
    """Why a write failed, if ``exc`` is a failed write: an ``OSError``; a Rust I/O error (safetensors:
    ``... (os error 28)``); any writer error while the file system is full (torch reports a short write
    as ``unexpected pos ...``); torch's ``RuntimeError`` about a failed write. Else None."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    code = re.search(r"\(os error (\d+)\)", str(exc))
    if code:
        return os.strerror(int(code.group(1)))
    full = _disk_full(folder)
    if full:
        return full
    if isinstance(exc, RuntimeError) and "writ" in str(exc).lower():
        return str(exc).strip().splitlines()[0]
    return None


def _disk_full(folder: Path) -> str | None:
    """``No space left on device`` when the file system of ``folder`` has no free block left, else None."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return os.strerror(errno.ENOSPC) if st.f_bavail == 0 else None
