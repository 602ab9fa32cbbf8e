"""Training pairs of a transient dataset: (case, t) -> the step from snapshot t to t + 1, and their validation.

Every pair of consecutive snapshots of every training case (after the first ``history`` ones) is one
item; an epoch visits each once. An item is the whole mesh (or ``train.volume_points`` random points
of it, with their own ball tree) in tree order, with the step's inputs and standardised increment
(``data/transient.py``), and noise on the input state drawn from (seed, epoch, index), so runs are
reproducible whatever the number of loader workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from msptcli.config import TransientConfig
from msptcli.data.features import Channels
from msptcli.data.manifest import Manifest, SampleEntry
from msptcli.data.sample import Sample, load_sample, map_sample
from msptcli.data.transient import (
    field_matrix,
    noise_scale,
    operators_of,
    static_features,
    step_inputs,
    step_target,
)
from msptcli.geometry.balltree import ball_tree_order
from msptcli.geometry.mesh_gradient import MeshOperators
from msptcli.model.inference import predict_clouds
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
        rng = np.random.default_rng([self.seed, self.epoch, index])
        n = len(sample.arrays["mesh/points"])
        rows = np.arange(n) if self.points is None or self.points >= n else np.sort(rng.choice(n, self.points, False))
        operators = None
        if self.transient.derivatives:
            if len(rows) == n:  # the whole mesh: its operators once per case (and loader worker)
                if entry.name not in self._operators:
                    self._operators[entry.name] = operators_of(sample.arrays)
                operators = self._operators[entry.name]
            else:
                operators = operators_of(sample.arrays, rows)
        inputs, target = step_arrays(
            sample, self.manifest, self.channels, self.transient, t, rows, rng=rng if self.noise else None,
            operators=operators,
        )  # fmt: skip
        order = (
            np.asarray(sample.arrays["order"])
            if len(rows) == n
            else ball_tree_order(np.asarray(sample.arrays["mesh/points"])[rows])
        )
        return Cloud(
            features=torch.from_numpy(inputs[order]),
            targets=torch.from_numpy(target[order]),
            mask=torch.ones(target.shape, dtype=torch.bool),
            num_surface=0,
            order=order,
        )


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
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (n, width) and standardised increment (n, F) of the step t -> t + 1 at ``rows`` (all: None);
    with ``rng`` the input state gets the training noise and the target is the step from it. ``operators``:
    the derivatives of the mesh (of ``rows``), built here when the inputs need them and none are given."""
    a = sample.arrays
    rows = np.arange(len(a["mesh/points"])) if rows is None else rows
    geometry = {k: np.asarray(a[k])[rows] for k in ("mesh/points", "mesh/normals", "mesh/distance", "mesh/direction",
                                                    "mesh/wall")}  # fmt: skip
    static = static_features(manifest.stats, geometry)
    h = transient.history
    states = [field_matrix({n: a[f"series/{n}"][s][rows] for n, _ in channels.volume}, channels)
              for s in range(t - h, t + 2)]  # fmt: skip
    following = states.pop()
    if rng is not None and transient.noise > 0:
        states[-1] = states[-1] + rng.standard_normal(states[-1].shape).astype(np.float32) * noise_scale(
            manifest.stats, channels, transient
        )
    conditions = sample.meta["conditions"]
    if transient.derivatives and operators is None:
        operators = operators_of(a, None if len(rows) == len(a["mesh/points"]) else rows)
    inputs = step_inputs(manifest.stats, channels, transient, static, states, conditions, operators)
    return inputs, step_target(manifest.stats, channels, states[-1], following)


def validate_steps(
    model: Network, data_dir: Path, manifest: Manifest, entries: list[SampleEntry], transient: TransientConfig,
    device: torch.device, *, bf16: bool,
) -> dict[str, float]:  # fmt: skip
    """One-step errors on ``VAL_STEPS`` steps of every validation case, on whole meshes and without noise:
    ``val_loss`` (the training loss on them) and ``val_<field>_rel_l2`` of the predicted next state."""
    channels = Channels.from_fields(manifest.fields)
    sums: dict[str, list[float]] = {}
    for entry in entries:
        sample = load_sample(data_dir / entry.file)
        points = np.asarray(sample.arrays["mesh/points"])
        h, steps = transient.history, entry.num_steps or 0
        operators = operators_of(sample.arrays) if transient.derivatives else None
        for t in np.unique(np.linspace(h, steps - 2, VAL_STEPS).round().astype(int)):
            inputs, target = step_arrays(sample, manifest, channels, transient, int(t), operators=operators)
            (out,) = predict_clouds(
                model, [points], [inputs], orders=[sample.arrays["order"]], device=device, bf16=bf16
            )
            sums.setdefault("loss", []).append(float(np.mean((out - target) ** 2)))
            for name, errs in step_errors(sample, channels, manifest, t, out).items():
                sums.setdefault(f"{name}_rel_l2", []).append(errs)
    return {f"val_{k}": float(np.mean(v)) for k, v in sums.items()}


def step_errors(sample: Sample, channels: Channels, manifest: Manifest, t: int, out: np.ndarray) -> dict[str, Any]:
    """Relative L2 error of each field of the state after one predicted step from snapshot t."""
    from msptcli.data.transient import next_state, split_fields

    a = sample.arrays
    current = field_matrix({n: a[f"series/{n}"][t] for n, _ in channels.volume}, channels)
    truth = field_matrix({n: a[f"series/{n}"][t + 1] for n, _ in channels.volume}, channels)
    pred = next_state(manifest.stats, channels, current, out)
    p, q = split_fields(pred, channels), split_fields(truth, channels)
    return {n: float(np.linalg.norm(p[n] - q[n]) / max(np.linalg.norm(q[n]), 1e-30)) for n, _ in channels.volume}
