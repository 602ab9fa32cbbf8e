"""What ``mspt train``'s loop tells its caller: progress while it runs (:class:`Reporter`, the CLI draws a bar from
it) and what the run did when it ends (:class:`TrainSummary`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from msptcli.checkpoint import ParentRecord
from msptcli.model import Network
from msptcli.trust.uncertainty import Calibration


class Reporter(Protocol):
    """What the loop tells its caller (the CLI draws a progress bar from it). With a time limit (``time_limit``
    seconds; ``total_steps`` then counts ``train.epochs``, which do not end the run), ``elapsed`` is the time the
    run has trained, of this process's clock; the learning rate is the one the step used."""

    def begin(self, start: TrainStart) -> None: ...
    def start(self, total_steps: int, done_steps: int, time_limit: float | None, elapsed: float) -> None: ...
    def step(self, loss: float | None, lr: float, elapsed: float) -> None: ...
    def epoch(self, epoch: int, row: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class TrainStart:
    """What the run trains with, told once before its first step (:meth:`Reporter.begin`)."""

    device: str  # ``device.describe_device``, e.g. "cpu (2 threads)"
    precision: str  # "float32" or "bf16 autocast"
    processes: int  # 1, or the processes under torchrun
    parameters: int  # the network's
    trainable: int  # of them, those the optimiser changes (fewer with train.freeze)
    cases: dict[str, int]  # split -> cases: train, val, test (held out)
    points_per_step: int | None  # points drawn per step and process (None: every point of a sample)


@dataclass
class TrainSummary:
    run_dir: Path
    epochs_done: int
    interrupted: bool = False
    model: Network | None = None  # the trained network of this process (under torchrun: of this rank)
    main: bool = True  # this process speaks for the run (rank 0 under torchrun)
    parent: ParentRecord | None = None  # fine-tuned (train.init): where the run started from
    time_up: bool = False  # the time limit (train.time_limit) ended the run
    already_spent: bool = False  # resumed with the time limit spent already: nothing was trained
    steps_done: int = 0  # optimiser steps of the whole run, every session (0: already_spent, not counted)
    elapsed: float = 0.0  # seconds the whole run trained, every session (what the time limit counts)
    calibration: Calibration | None = None  # the best checkpoint's spread calibration, fitted at the end
    best_epoch: int | None = None  # the epoch of the best checkpoint, and the metrics row it was saved with
    best_metrics: dict[str, Any] | None = None
