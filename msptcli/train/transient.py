"""Training pairs of a transient dataset: (case, t) -> the step from snapshot t to t + 1, and their validation.

Every pair of consecutive snapshots of every training case (after the first ``history`` ones) is one
item; an epoch visits each once. An item is the whole mesh (or ``train.volume_points`` random points
of it, with their own ball tree) in tree order, with the step's inputs and standardised increment
(``data/transient.py``), and noise on the input state drawn from (seed, epoch, index), so runs are
reproducible whatever the number of loader workers.

Pushforward training (``data.transient.pushforward`` = k > 0; Brandstetter, Worrall and Welling, 2022):
an item then also draws j in 0..k, and for j > 0 its input state is not the data's but the network's own
rollout of j steps from snapshot t - j (the rollout's step, ``data/step.py``), without gradient, so the
trained step t -> t + 1 sees the errors that a rollout makes and learns to undo them. The loader cannot
run the network; it marks such an item (``Cloud.unroll``) and the loop calls :meth:`StepPairs.push_forward`
for it before the step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from msptcli.config import TransientConfig
from msptcli.data.features import Channels
from msptcli.data.manifest import Manifest, SampleEntry
from msptcli.data.sample import Sample, load_sample, map_sample
from msptcli.data.step import StepCase, take_step
from msptcli.data.transient import (
    field_matrix,
    input_width,
    needs_operators,
    next_state,
    noise_scale,
    operators_of,
    split_fields,
    step_operators,
    step_target,
    training_noise,
)
from msptcli.evaluate import relative_l2
from msptcli.geometry.balltree import ball_tree_order
from msptcli.geometry.mesh_gradient import MeshOperators
from msptcli.model.network import Network
from msptcli.train.dataset import Cloud

#: Steps of every validation case that validation evaluates (evenly spread over its series).
VAL_STEPS = 8


class StepPairs(Dataset):
    """The (case, t) steps of ``entries``; see the module docstring."""

    def __init__(
        self,
        data_dir: Path,
        manifest: Manifest,
        entries: list[SampleEntry],
        transient: TransientConfig,
        *,
        points: int | None,
        seed: int,
        noise: bool = True,
    ) -> None:
        self.data_dir, self.manifest, self.entries, self.transient = data_dir, manifest, entries, transient
        self.channels = Channels.from_fields(manifest.fields)
        self.points, self.seed, self.noise = points, seed, noise
        h = transient.history
        self.items = [(e, t) for e in entries for t in range(h, (e.num_steps or 0) - 1)]
        self.epoch = 0
        self._operators: dict[str, MeshOperators] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Cloud:
        entry, t = self.items[index]
        sample = map_sample(self.data_dir / entry.file)  # only this step's snapshots are read from disk
        rng, unrolled, rows = self._draw(index, t, sample)
        order = self._order(sample, rows)
        if unrolled:  # the loop builds this item's inputs and target from the network's rollout (push_forward)
            width = input_width(self.transient, self.channels)
            return Cloud(
                features=torch.zeros((len(rows), width)),
                targets=torch.zeros((len(rows), self.channels.total)),
                mask=torch.ones((len(rows), self.channels.total), dtype=torch.bool),
                num_surface=0,
                order=order,
                unroll=index,
            )
        inputs, target = step_arrays(
            sample, self.manifest, self.channels, self.transient, t, rows, rng=rng if self.noise else None,
            operators=self._operators_for(entry.name, sample, rows),
        )  # fmt: skip
        return Cloud(
            features=torch.from_numpy(inputs[order]),
            targets=torch.from_numpy(target[order]),
            mask=torch.ones(target.shape, dtype=torch.bool),
            num_surface=0,
            order=order,
        )

    def push_forward(self, model: Network, index: int, device: torch.device, *, bf16: bool) -> tuple[Tensor, Tensor]:
        """Inputs and standardised target, in tree order, of item ``index`` drawn with j > 0 unrolled steps:
        the network (in eval mode and without gradient, then back in training mode) steps j times from the
        data at snapshot t - j; the trained step starts from where it got to, with the training noise."""
        entry, t = self.items[index]
        sample = map_sample(self.data_dir / entry.file)
        rng, unrolled, rows = self._draw(index, t, sample)
        operators = self._operators_for(entry.name, sample, rows)
        order = self._order(sample, rows)
        case = StepCase.of(
            self.manifest.stats, self.channels, self.transient, sample.arrays, sample.meta["conditions"], rows=rows,
            operators=operators, order=order,
        )  # fmt: skip
        was_training = model.training
        states = step_states(sample, self.channels, self.transient, t - unrolled, rows)  # the data's, up to t - j
        for _ in range(unrolled):
            _, state = take_step(model, case, states, device=device, bf16=bf16)
            states = [*states[1:], state]  # one step on
        model.train(was_training)
        inputs, target = step_arrays(
            sample, self.manifest, self.channels, self.transient, t, rows, rng=rng if self.noise else None,
            operators=operators, states=states,
        )  # fmt: skip
        return torch.from_numpy(inputs[order]), torch.from_numpy(target[order])

    def _draw(self, index: int, t: int, sample: Sample) -> tuple[np.random.Generator, int, np.ndarray]:
        """The item's random stream, its number of unrolled steps and its rows: the same in the loader and loop."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        k = min(self.transient.pushforward, t - self.transient.history)
        unrolled = int(rng.integers(0, k + 1)) if k > 0 else 0
        n = len(sample.arrays["mesh/points"])
        rows = np.arange(n) if self.points is None or self.points >= n else np.sort(rng.choice(n, self.points, False))
        return rng, unrolled, rows

    def _order(self, sample: Sample, rows: np.ndarray) -> np.ndarray:
        points = np.asarray(sample.arrays["mesh/points"])
        return np.asarray(sample.arrays["order"]) if len(rows) == len(points) else ball_tree_order(points[rows])

    def _operators_for(self, name: str, sample: Sample, rows: np.ndarray) -> MeshOperators | None:
        if not needs_operators(self.transient, noisy=self.noise):
            return None
        if len(rows) < len(sample.arrays["mesh/points"]):
            return operators_of(sample.arrays, rows)
        if name not in self._operators:  # the whole mesh: its operators once per case (and process)
            self._operators[name] = operators_of(sample.arrays)
        return self._operators[name]


def step_arrays(
    sample: Sample,
    manifest: Manifest,
    channels: Channels,
    transient: TransientConfig,
    t: int,
    rows: np.ndarray | None = None,
    *,
    rng: np.random.Generator | None = None,
    operators: MeshOperators | None = None,
    states: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (n, width) and standardised increment (n, F) of the step t -> t + 1 at ``rows`` (all: None);
    with ``rng`` the input state gets the training noise and the target is the step from it. ``operators``:
    the derivatives of the mesh (of ``rows``), built here when the inputs need them and none are given.
    ``states``: the history and current state (t - h .. t) to use instead of the data's (pushforward)."""
    rows = np.arange(len(sample.arrays["mesh/points"])) if rows is None else rows
    states = step_states(sample, channels, transient, t, rows, states)
    following = snapshot(sample, channels, t + 1, rows)
    noisy = rng is not None and transient.noise > 0
    if operators is None:
        operators = step_operators(transient, sample.arrays, rows, noisy=noisy)
    if noisy:
        scale = noise_scale(manifest.stats, channels, transient)
        states[-1] = states[-1] + training_noise(
            rng, scale, len(rows), sweeps=transient.noise_smoothing, operators=operators
        )
    case = StepCase.of(
        manifest.stats, channels, transient, sample.arrays, sample.meta["conditions"], rows=rows, operators=operators
    )
    return case.inputs(states), step_target(manifest.stats, channels, states[-1], following)


def step_states(
    sample: Sample, channels: Channels, transient: TransientConfig, t: int, rows: np.ndarray,
    states: list[np.ndarray] | None = None,
) -> list[np.ndarray]:  # fmt: skip
    """The h + 1 states t - h .. t at ``rows`` (physical field matrices): a copy of ``states`` when given,
    else the data's."""
    if states is not None:
        return list(states)
    return [snapshot(sample, channels, s, rows) for s in range(t - transient.history, t + 1)]


def snapshot(sample: Sample, channels: Channels, s: int, rows: np.ndarray | slice = slice(None)) -> np.ndarray:
    """The (n, F) physical field matrix of snapshot ``s`` at ``rows``."""
    return field_matrix({n: sample.arrays[f"series/{n}"][s][rows] for n, _ in channels.volume}, channels)


def validate_steps(
    model: Network, data_dir: Path, manifest: Manifest, entries: list[SampleEntry], transient: TransientConfig,
    device: torch.device, *, bf16: bool,
) -> dict[str, float]:  # fmt: skip
    """One-step errors on ``VAL_STEPS`` steps of every validation case, on whole meshes and without noise, named
    as steady validation's: ``val_loss`` (the training loss on them) and ``val_rel_l2/volume/<field>`` of the
    predicted next state."""
    channels = Channels.from_fields(manifest.fields)
    sums: dict[str, list[float]] = {}
    for entry in entries:
        sample = load_sample(data_dir / entry.file)
        rows = np.arange(len(sample.arrays["mesh/points"]))
        case = StepCase.of(
            manifest.stats, channels, transient, sample.arrays, sample.meta["conditions"],
            operators=step_operators(transient, sample.arrays), order=sample.arrays["order"],
        )  # fmt: skip
        h, steps = transient.history, entry.num_steps or 0
        for t in np.unique(np.linspace(h, steps - 2, VAL_STEPS).round().astype(int)):
            states = step_states(sample, channels, transient, int(t), rows)
            out, state = take_step(model, case, states, device=device, bf16=bf16)
            truth = snapshot(sample, channels, int(t) + 1)
            target = step_target(manifest.stats, channels, states[-1], truth)
            sums.setdefault("loss", []).append(float(np.mean((out - target) ** 2)))
            for name, error in state_errors(state, truth, channels).items():
                sums.setdefault(f"rel_l2/volume/{name}", []).append(error)
    return {f"val_{k}": float(np.mean(v)) for k, v in sums.items()}


def step_errors(sample: Sample, channels: Channels, manifest: Manifest, t: int, out: np.ndarray) -> dict[str, float]:
    """Relative L2 error of each field of the state after one predicted step (``out``) from snapshot t."""
    current, truth = snapshot(sample, channels, t), snapshot(sample, channels, t + 1)
    return state_errors(next_state(manifest.stats, channels, current, out), truth, channels)


def state_errors(pred: np.ndarray, truth: np.ndarray, channels: Channels) -> dict[str, float]:
    """Relative L2 error of each field of the (N, F) state ``pred`` against ``truth``."""
    p, q = split_fields(pred, channels), split_fields(truth, channels)
    return {n: relative_l2(p[n], q[n]) for n, _ in channels.volume}
