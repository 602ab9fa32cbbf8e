"""Several processes (torchrun) as one training run: PyTorch's own distributed engine, nothing home-made.

``mspt train`` runs unchanged under ``torchrun --nproc_per_node=N`` (and multi-node
torchrun with a rendezvous endpoint): torchrun sets ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK``; we join the process group (nccl on GPUs, gloo on the CPU), wrap the
model in DistributedDataParallel, give every rank its own share of each global batch,
and let rank 0 alone write checkpoints, metrics and plots.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from msptcli.errors import InvalidInputError


@dataclass(frozen=True)
class World:
    """This process's place in the run; a single process is rank 0 of 1."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum(self, value: float, device: torch.device) -> float:
        """The sum of ``value`` over all ranks."""
        return self._reduce(value, device, dist.ReduceOp.SUM)

    def max(self, value: float, device: torch.device) -> float:
        """The largest ``value`` of all ranks (e.g. the elapsed time, read by each rank's clock)."""
        return self._reduce(value, device, dist.ReduceOp.MAX)

    def _reduce(self, value: float, device: torch.device, op: dist.ReduceOp.RedOpType) -> float:
        if not self.distributed:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(t, op=op)
        return float(t.item())

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every rank when ``flag`` is true on any (e.g. Ctrl-C reached one rank first)."""
        return self.sum(float(flag), device) > 0 if self.distributed else flag


def join(device_name: str) -> tuple[World, torch.device | None]:
    """Join the torchrun process group if there is one; the device of this rank (None: the caller picks)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), None
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if device_name == "cuda" and not use_cuda:
        raise InvalidInputError("--device cuda: no CUDA device is available")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        return World(rank, size, local_rank), torch.device("cuda", local_rank)
    return World(rank, size, local_rank), torch.device("cpu")


def leave(world: World, *, together: bool = False) -> None:
    """Leave the process group. ``together``: after a barrier, so that every rank has finished its last
    collective before any closes its connections (the normal end; not after an error, where the other ranks may
    never come).

    What still holds the group (the DistributedDataParallel wrapper of a finished run, freed only by the garbage
    collector: it sits in reference cycles) is collected first, so that the group and its worker threads are torn
    down here, while the interpreter is alive, and not at exit, where gloo's threads may still be running and
    the process aborts ("terminate called without an active exception", seen on a non-main rank)."""
    if world.distributed and dist.is_initialized():
        if together:
            dist.barrier()
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


def rank_batches(order: list[int], batch_size: int, world: World) -> list[list[int]]:
    """This rank's batches of an epoch: global batches of ``batch_size * world.size`` samples of ``order``,
    cut into one slice per rank. With several ranks the order is taken cyclically so that every rank
    gets a full batch at every step (DistributedDataParallel needs all ranks to step together)."""
    n, per_step = len(order), batch_size * world.size
    steps = -(-n // per_step)
    if not world.distributed:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    cyclic = [order[i % n] for i in range(steps * per_step)]
    return [
        cyclic[s * per_step + world.rank * batch_size : s * per_step + (world.rank + 1) * batch_size]
        for s in range(steps)
    ]
