"""The torch device a command runs on: ``auto`` (a GPU when present, else the CPU), ``cpu``, ``cuda``, ``mps``."""

from __future__ import annotations

from typing import Literal

import torch

from msptcli.errors import InvalidInputError

DeviceName = Literal["auto", "cpu", "cuda", "mps"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


def pick_device(name: str) -> torch.device:
    """The device called ``name``; :class:`InvalidInputError` when it is unknown or not present here."""
    if name not in DEVICES:
        raise InvalidInputError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("--device cuda: no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError("--device mps: MPS is not available")
    return torch.device(name)
