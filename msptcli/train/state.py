"""What ``--resume`` needs beside the checkpoint, the check that it fits the network, and the lock that keeps one
``mspt train`` per run directory.

``train_state.pt`` holds the optimiser, scheduler, RNG and loop position as plain
tensors, numbers and strings, read with ``torch.load(weights_only=True)``: a file
with arbitrary Python objects is refused, never run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from msptcli.errors import CheckpointError, InvalidInputError
from msptcli.io.atomic import atomic_output, make_dirs, output_error

if TYPE_CHECKING:
    from msptcli.model import Network

STATE = "train_state.pt"
LOCK = ".mspt-train.lock"


def save_train_state(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Optimizer, scheduler, RNG and loop state: tensors, numbers and strings only."""
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def load_train_state(path: str | os.PathLike[str], *, mmap: bool = False) -> dict[str, Any]:
    """Read ``train_state.pt`` with ``weights_only=True``: a file with arbitrary objects is refused, not run.
    ``mmap``: the tensors stay in the file until read (``mspt info`` reads the numbers only)."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no training state to resume from (train without --resume first)")
    try:
        with warnings.catch_warnings():  # torch warns about old pickle protocols before refusing them
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception:
        raise CheckpointError(
            f"{p}: refusing to load training state: not a plain tensor file (it may hold arbitrary Python objects)"
        ) from None


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` for the whole run; a second ``mspt train`` there is refused at once.

    The lock is an ``flock`` on ``RUN_DIR/.mspt-train.lock``, released by the kernel when the process ends
    however it ends (a SIGKILL leaves no stale lock, only the file, which is no obstacle). The file names
    the holder's process id, and it is removed when the run ends or is refused: a run directory keeps no
    trace of a lock. A process that locked a file another one removed meanwhile locks the new one.
    """
    path = make_dirs(run_dir) / LOCK
    fd = _locked(path, run_dir)
    try:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:  # a full disk
            raise output_error(path, exc) from None
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # while still held: no other process can hold it at the same time
        os.close(fd)


def _locked(path: Path, run_dir: Path) -> int:
    """A descriptor of ``path`` under an exclusive ``flock``, the file still at ``path`` (not removed by its
    last holder between our open and our lock); :class:`InvalidInputError` if another process holds it."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise output_error(path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise InvalidInputError(
                f"{run_dir}: another `mspt train` is writing to this run (process {holder}); "
                "wait for it to end or choose another -o"
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed the file after our open: lock the file now at ``path``


def check_same_model(state: dict[str, Any], model: Network, run_dir: Path) -> None:
    """``--resume`` continues the network the run trained: refuse another ``model:`` config in one line."""
    saved = state.get("model_config")
    if saved is not None and saved != model.config.model_dump_json():
        old, new = json.loads(saved), model.config.model_dump(mode="json")
        diff = ", ".join(f"model.{k} {old.get(k)} there, {new.get(k)} now" for k in new if old.get(k) != new.get(k))
        raise InvalidInputError(f"{run_dir}: cannot resume with another network ({diff})")
    own = model.state_dict()
    for key, value in state["model"].items():
        if key not in own or own[key].shape != value.shape:
            raise InvalidInputError(f"{run_dir}: cannot resume: its saved weights do not fit this network ({key})")
