"""One step of a transient model: the network from a state to the next, the one place that runs it.

    inputs   = step_inputs(static, f(t-h) .. f(t), conditions, operators)     (N, width)   data/transient.py
    output   = network(inputs)                                               (N, F) standardised increment
    f(t + 1) = next_state(f(t), output) = f(t) + sigma_inc * output           (N, F) physical

Three callers step: a rollout (``rollout.py``) from its own last state, pushforward training
(``train/transient.py``) from the data's state j steps back, and transient validation from the data's
state, scoring the output against the target and the next state against the next snapshot.
:class:`StepCase` is what stays fixed over the steps of one case: its mesh (or a subset of its points)
and its conditions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from msptcli.config import TransientConfig
from msptcli.data.features import Channels
from msptcli.data.manifest import Stats
from msptcli.data.transient import next_state, static_features, step_inputs
from msptcli.geometry.mesh_gradient import MeshOperators
from msptcli.model.network import Network
from msptcli.runtime.inference import DEFAULT_CHUNK_POINTS, predict_clouds

#: The per-point geometry arrays of a prepared transient mesh that a step's inputs read.
GEOMETRY = ("mesh/points", "mesh/normals", "mesh/distance", "mesh/direction", "mesh/wall")


@dataclass(frozen=True)
class StepCase:
    """One case as each of its steps sees it (``N`` points: the whole mesh or a subset of it)."""

    stats: Stats
    channels: Channels
    transient: TransientConfig
    points: np.ndarray  # (N, 3)
    static: np.ndarray  # (N, 11) geometry channels (``static_features``)
    conditions: dict[str, float]  # the values of ``condition_names``
    operators: MeshOperators | None = None  # the mesh's derivatives, for the derivative and carried inputs
    order: np.ndarray | None = None  # (N,) ball-tree order of ``points``; None: built where the network runs

    @classmethod
    def of(
        cls,
        stats: Stats,
        channels: Channels,
        transient: TransientConfig,
        geometry: Mapping[str, np.ndarray],
        conditions: dict[str, float],
        *,
        rows: np.ndarray | None = None,
        operators: MeshOperators | None = None,
        order: np.ndarray | None = None,
    ) -> StepCase:
        """The case of a mesh's ``geometry`` arrays (:data:`GEOMETRY`; a prepared sample's, or
        ``data/prepare_series.py::mesh_geometry``) at ``rows`` (all: None)."""
        rows = np.arange(len(geometry["mesh/points"])) if rows is None else rows
        picked = {k: np.asarray(geometry[k])[rows] for k in GEOMETRY}
        static = static_features(stats, picked)
        return cls(stats, channels, transient, picked["mesh/points"], static, conditions, operators, order)

    def inputs(self, states: Sequence[np.ndarray]) -> np.ndarray:
        """(N, width) float32 inputs of the step from ``states``, the (N, F) physical fields at t - h .. t."""
        return step_inputs(
            self.stats, self.channels, self.transient, self.static, states, self.conditions, self.operators
        )


def take_step(
    model: Network,
    case: StepCase,
    states: Sequence[np.ndarray],
    *,
    device: torch.device | str = "cpu",
    bf16: bool = True,
    chunk_points: int | None = DEFAULT_CHUNK_POINTS,
) -> tuple[np.ndarray, np.ndarray]:
    """One step of ``model`` (run in eval mode, without gradient) from ``states`` (t - h .. t, physical):
    the (N, F) standardised increment it predicts and the (N, F) physical state at t + 1."""
    (output,) = predict_clouds(
        model, [case.points], [case.inputs(states)], orders=[case.order], device=device, bf16=bf16,
        chunk_points=chunk_points,
    )  # fmt: skip
    return output, next_state(case.stats, case.channels, states[-1], output)
