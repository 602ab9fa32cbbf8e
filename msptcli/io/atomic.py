"""Outputs appear whole or not at all: write to a temporary name, then rename.

Every file mspt writes goes through :func:`atomic_output`, so every write failure — a
read-only or missing directory, a full disk, a path that is a directory — becomes one
:class:`~msptcli.errors.OutputError` naming the file, and no temporary file is left.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from msptcli.errors import OutputError


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` if the block succeeds.

    The temporary file keeps the suffix of ``path`` (writers choose the format
    by it) and is removed if the block raises, so an interrupted write never
    leaves a half-written ``path`` behind. An ``OSError`` (or a writer's own error
    wrapping one, as torch and VTK raise) becomes an :class:`OutputError`.
    """
    final = Path(path)
    if final.is_dir():
        raise OutputError(f"cannot write {final}: it is a directory")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent)
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write {final}: {exc.strerror or exc}") from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.stat().st_size == 0 and final.suffix not in (".csv", ".txt"):
            raise OutputError(f"cannot write {final}: nothing was written (is the disk full?)")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        os.replace(tmp, final)
    except OSError as exc:
        raise OutputError(f"cannot write {final}: {exc.strerror or exc}") from None
    except RuntimeError as exc:  # torch.save reports a failed write (e.g. a full disk) as a RuntimeError
        if "writ" not in str(exc).lower():
            raise
        raise OutputError(f"cannot write {final}: {str(exc).splitlines()[0]}") from None
    finally:
        tmp.unlink(missing_ok=True)
