"""What the benchmarks print about the machine they ran on."""

from __future__ import annotations

import os
import platform
import resource
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def rss_bytes() -> int:
    """Resident memory of this process now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes(device: str) -> int:
    """Peak memory so far: ``torch.cuda.max_memory_allocated`` on a GPU, else the process's peak resident memory
    (ru_maxrss). Subtract a baseline taken before the measured call (``memory_now``) for its own peak."""
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def memory_now(device: str) -> int:
    """The baseline of :func:`peak_bytes`: memory allocated on the GPU, else resident memory."""
    if device == "cuda":
        import torch

        return torch.cuda.memory_allocated()
    return rss_bytes()
