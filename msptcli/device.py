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


#: The device types on which ``bf16`` (``train.bf16``) turns bfloat16 autocast on; on the CPU it is ignored (slower
#: than float32 there). The tests add ``"cpu"`` to run the GPU's precision path on a CPU.
BF16_DEVICES: tuple[str, ...] = ("cuda",)


def autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """The autocast of a forward pass on ``device``: bfloat16 where ``bf16`` asks for it and the device is one of
    :data:`BF16_DEVICES`, else off (float32 or the model's own dtype)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type in BF16_DEVICES)


def describe_device(device: torch.device) -> str:
    """The device in words, as ``mspt train`` says and its checkpoints record it: ``cpu (2 threads)`` (torch's
    threads now), ``cuda:0 NVIDIA H100 80GB HBM3``, ``mps``."""
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        return f"cuda:{index} {torch.cuda.get_device_name(index)}"
    return str(device)


def precision(device: torch.device, bf16: bool) -> str:
    """The precision :func:`autocast` gives a forward pass on ``device``: ``bf16 autocast`` or ``float32``."""
    return "bf16 autocast" if bf16 and device.type in BF16_DEVICES else "float32"
