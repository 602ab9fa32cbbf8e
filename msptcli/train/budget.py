"""A training run's wall-clock budget (``train.time_limit``): how much of it is spent, counted across ``--resume``.

The budget counts the training loop: its steps, validations and checkpoints, from the first step of each
session on; setting up (reading the dataset, building the network) is not counted, nor the last validation
after the budget ran out. The elapsed time is saved in the training state, so a resumed run goes on with what
is left. The clock is an argument (``time.monotonic`` by default): tests drive it by hand.

What the schedule and the stop read is the elapsed time *agreed* at the last :meth:`Budget.tick`, not the
clock itself: under torchrun every rank ticks on the same steps and takes the largest elapsed time of all
(``agree``), so all ranks step with the same learning rate and stop at the same step.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Budget:
    """The time a run may train (``seconds``, None: no limit) and how much of it is spent."""

    def __init__(
        self, seconds: float | None, *, spent: float = 0.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self.spent_before = spent  # trained in earlier sessions of the run (the training state)
        self.clock = clock
        self.agreed = spent  # the elapsed time at the last tick: what the schedule and the stop read
        self._started: float | None = None

    @property
    def limited(self) -> bool:
        return self.seconds is not None

    def start(self) -> None:
        """This session's training starts now."""
        self._started = self.clock()

    def elapsed(self) -> float:
        """Seconds trained by the run so far, this session's by the clock now; never less than agreed at the last
        tick (under torchrun another rank's clock may have been ahead: the run stopped by it)."""
        now = self.spent_before + (self.clock() - self._started if self._started is not None else 0.0)
        return max(now, self.agreed)

    def tick(self, agree: Callable[[float], float] = float) -> bool:
        """Read the clock (``agree``: the value every rank takes from theirs); whether the budget is spent."""
        self.agreed = agree(self.elapsed())
        return self.spent

    @property
    def spent(self) -> bool:
        """Whether the budget was spent at the last tick (never, without a limit)."""
        return self.seconds is not None and self.agreed >= self.seconds

    @property
    def fraction(self) -> float:
        """The share of the budget spent at the last tick, 0 to 1 (0 without a limit)."""
        return min(1.0, self.agreed / self.seconds) if self.seconds else 0.0

    @property
    def left(self) -> float:
        """Seconds left at the last tick (0 when spent or without a limit)."""
        return max(0.0, self.seconds - self.agreed) if self.seconds else 0.0
