"""The inputs and targets of one transient step, and back from the model's outputs to the next state.

A transient sample holds one mesh and the fields of T equally spaced snapshots on it. The network
learns the *increment* of a step (standard for stable rollouts):

    inputs(t)  = [ static (11) | f(t) (F) | h Df(t), h^2 Lf(t), log h  (3F + 1) | f(t-j+1) - f(t-j), j = 1..h  (h F)
                   | S_u(t),j dt [ f(t-j+1) - f(t-j) ], j = 1..h  (h F) | conditions (C) ]
    target(t)  = ( f(t+1) - f(t) ) / sigma_inc                                   per channel
    f(t+1)     = f(t) + sigma_inc * output                                       in a rollout

``static`` are the 11 geometry channels of steady mspt (``data/features.py``): coordinates, the body's
outward normal on wall points, distance and direction to the body elsewhere, the wall flag. ``f`` are
the configured fields (e.g. U, p), standardised with the training snapshots' mean and deviation.
``D f`` and ``L f`` are the mesh gradient (x, y) and Laplacian of the current fields
(``geometry/mesh_gradient.py``), times the local cell size h and h^2, over the field's deviation
(``data.transient.derivatives``): the stencil of a step, given rather than left to attention. The
history increments and the targets with the deviation of one step's change, ``sigma_inc``, per channel;
``S_u,j dt`` is the semi-Lagrangian transport along the current velocity u for j spacings
(``data.transient.advection``, ``geometry/transport.py``): each history increment carried downstream to
where a wake's pattern of change goes by t + 1; like the history, over sigma_inc. The conditions (the
case's params, e.g. Re, and always the spacing dt) with their training statistics.
In training, noise of ``noise * sigma_inc`` is added to f(t) and the target is the step from the noisy
state, so the network learns to pull a slightly wrong state back towards the solution (noise
injection, Sanchez-Gonzalez et al. 2020).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from msptcli.config import TransientConfig
from msptcli.data.features import IN_FEATURES, Channels
from msptcli.data.manifest import FieldStats, Stats
from msptcli.errors import InvalidInputError
from msptcli.geometry.mesh_gradient import MeshOperators, mesh_operators
from msptcli.model.spacetime import TimeLevels

#: The condition every transient model gets: the spacing of its snapshots.
DT = "dt"


def input_width(transient: TransientConfig | None, channels: Channels) -> int:
    """Per-point input channels of the network: 11 for steady data, more for a transient step."""
    return IN_FEATURES if transient is None else step_columns(transient, channels).width


@dataclass(frozen=True)
class StepColumns:
    """Where each part of a step's inputs sits among its columns (:func:`step_inputs`' order)."""

    static: range  # the 11 geometry channels
    current: range  # f(t), standardised
    derivatives: range  # h Df(t), h^2 Lf(t), log h (empty without them)
    history: tuple[range, ...]  # f(t-j+1) - f(t-j) over sigma_inc, j = 1..h
    carried: tuple[range, ...]  # the same carried along the flow, j = 1..h (empty without advection)
    conditions: range
    width: int

    def time_levels(self) -> TimeLevels:
        """The columns of each time level, for a network that gives every point one token per level
        (``model.time_axis: attention``): the current state with its derivatives, then each earlier increment
        with its carried copy; geometry and conditions are shared by every level."""
        return TimeLevels(
            shared=(*self.static, *self.conditions),
            current=(*self.current, *self.derivatives),
            past=tuple((*h, *c) for h, c in zip(self.history, self.carried or [()] * len(self.history), strict=True)),
        )


def step_columns(transient: TransientConfig, channels: Channels) -> StepColumns:
    """The column ranges of a step's inputs (the layout :func:`step_inputs` writes)."""
    fields = sum(k for _, k in channels.volume)
    start = 0

    def take(n: int) -> range:
        nonlocal start
        start += n
        return range(start - n, start)

    static, current = take(IN_FEATURES), take(fields)
    derivatives = take(3 * fields + 1 if transient.derivatives else 0)
    history = tuple(take(fields) for _ in range(transient.history))
    carried = tuple(take(fields) for _ in range(transient.history)) if transient.advects else ()
    conditions = take(len(condition_names(transient)))
    return StepColumns(static, current, derivatives, history, carried, conditions, start)


def time_levels(transient: TransientConfig | None, channels: Channels) -> TimeLevels | None:
    """The time levels of a step's inputs for ``model.time_axis: attention``; None without a history."""
    if transient is None or transient.history == 0:
        return None
    return step_columns(transient, channels).time_levels()


def condition_names(transient: TransientConfig) -> list[str]:
    """The conditions the model is given, in input order: the configured params, then dt."""
    return [*transient.conditions, DT]


def condition_values(transient: TransientConfig, params: dict[str, Any], dt: float, *, source: str) -> dict[str, float]:
    """The values of :func:`condition_names` for a case: each key looked up (dotted) in its ``params``."""
    values = {}
    for key in transient.conditions:
        value = lookup(params, key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            got = "nothing" if value is None else repr(value)
            raise InvalidInputError(
                f"{source}: condition {key!r} must be a number in the case's params, found {got} "
                "(set data.transient.conditions)"
            )
        values[key] = float(value)
    values[DT] = float(dt)
    return values


def lookup(params: dict[str, Any], key: str) -> Any:
    """``params['a']['b']`` for the dotted key ``'a.b'``; None where a part is missing."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def field_matrix(fields: dict[str, np.ndarray], channels: Channels) -> np.ndarray:
    """(..., N, F) float32 of the fields in channel order, from name -> (..., N, k)."""
    return np.concatenate([np.asarray(fields[name], dtype=np.float32) for name, _ in channels.volume], axis=-1)


def split_fields(matrix: np.ndarray, channels: Channels) -> dict[str, np.ndarray]:
    """The inverse of :func:`field_matrix`."""
    out, start = {}, 0
    for name, k in channels.volume:
        out[name] = matrix[..., start : start + k]
        start += k
    return out


def _vector(table: dict[str, FieldStats], channels: Channels, what: str) -> tuple[np.ndarray, np.ndarray]:
    missing = [name for name, _ in channels.volume if name not in table]
    if missing:
        raise ValueError(f"no {what} statistics for the field {missing[0]!r}")
    mean = np.concatenate([np.asarray(table[n].mean, dtype=np.float64) for n, _ in channels.volume])
    std = np.concatenate([np.asarray(table[n].std, dtype=np.float64) for n, _ in channels.volume])
    return mean, std


def step_inputs(
    stats: Stats,
    channels: Channels,
    transient: TransientConfig,
    static: np.ndarray,
    states: Sequence[np.ndarray],
    conditions: dict[str, float],
    operators: MeshOperators | None = None,
) -> np.ndarray:
    """(N, input_width) float32 inputs of one step.

    Args:
        static: (N, 11) geometry channels (:func:`static_features`).
        states: the physical fields (N, F) at t - h, ..., t (oldest first, ``1 + history`` of them).
        conditions: the case's values of :func:`condition_names`.
        operators: the mesh's derivatives (:func:`operators_of`), with ``transient.derivatives``.
    """
    if len(states) != 1 + transient.history:
        raise ValueError(f"a step with history {transient.history} needs {1 + transient.history} states")
    mean, std = _vector(stats.volume, channels, "field")
    _, inc = _vector(stats.increments, channels, "increment")
    current = states[-1]
    parts = [static, (current - mean) / std]
    if transient.derivatives:
        if operators is None:
            raise ValueError("transient.derivatives needs the mesh operators")
        h = operators.size[:, None]
        f = current.astype(np.float64)
        parts += [h * (operators.dx @ f) / std, h * (operators.dy @ f) / std, h**2 * (operators.laplacian @ f) / std,
                  np.log(operators.size / stats.coord_scale)[:, None]]  # fmt: skip
    for j in range(1, transient.history + 1):
        parts.append((states[-j] - states[-j - 1]) / inc)
    if transient.advects:
        if operators is None:
            raise ValueError("transient.advection needs the mesh operators")
        u = current[:, velocity_columns(channels, transient.advection)]
        for j in range(1, transient.history + 1):  # the j-th last increment, carried for as long as it has been
            moved = operators.transport.carry(states[-j] - states[-j - 1], u, j * conditions[DT], substeps=4 * j)
            parts.append(moved / inc)
    names = condition_names(transient)
    cond = np.array(
        [(conditions[n] - stats.conditions[n].mean[0]) / stats.conditions[n].std[0] for n in names], dtype=np.float64
    )
    parts.append(np.broadcast_to(cond, (len(static), len(names))))
    return np.concatenate(parts, axis=1).astype(np.float32)


def velocity_columns(channels: Channels, name: str | None) -> slice:
    """The x, y columns of the velocity field ``name`` in a field matrix."""
    start = 0
    for field, k in channels.volume:
        if field == name:
            if k < 2:
                raise InvalidInputError(
                    f"data.transient.advection: {name!r} has {k} component, a velocity needs 2 or 3"
                )
            return slice(start, start + 2)
        start += k
    raise InvalidInputError(f"data.transient.advection: {name!r} is not one of the fields")


def step_target(stats: Stats, channels: Channels, current: np.ndarray, following: np.ndarray) -> np.ndarray:
    """(N, F) float32 standardised increment from the state ``current`` to ``following``."""
    _, inc = _vector(stats.increments, channels, "increment")
    return ((following - current) / inc).astype(np.float32)


#: The deviation a channel that never changed in training is given (``series_stats``).
FLAT = 1e-12


def next_state(stats: Stats, channels: Channels, current: np.ndarray, output: np.ndarray) -> np.ndarray:
    """The physical state after one step: ``current + sigma_inc * output``. A channel that never changed in
    training (w of a 2D flow) keeps its value: its outputs were never trained, and a drift of it, however
    small, would read as O(1) in the next step's standardised inputs."""
    _, inc = _vector(stats.increments, channels, "increment")
    return (current + output.astype(np.float64) * np.where(inc > 2 * FLAT, inc, 0.0)).astype(np.float32)


def noise_scale(stats: Stats, channels: Channels, transient: TransientConfig) -> np.ndarray:
    """(F,) deviation of the training noise on each channel of the state, physical units."""
    _, inc = _vector(stats.increments, channels, "increment")
    return (transient.noise * inc).astype(np.float32)


def needs_operators(transient: TransientConfig, *, noisy: bool) -> bool:
    """Whether a step needs its mesh's operators: for the derivative or transported inputs, or to smooth its
    training noise."""
    return (
        transient.derivatives or transient.advects or (noisy and transient.noise > 0 and transient.noise_smoothing > 0)
    )


def training_noise(
    rng: np.random.Generator, scale: np.ndarray, n: int, *, sweeps: int = 0, operators: MeshOperators | None = None
) -> np.ndarray:
    """(n, F) float32 training noise of deviation ``scale`` (F,) on each channel.

    ``sweeps`` = 0: independent at every point. Its mesh derivatives are then mostly noise: at 0.5 sigma_inc
    the gradient inputs of a vortex-shedding snapshot are as much noise as signal and the Laplacian 8 times
    more. With ``sweeps`` > 0 the white draw is smoothed, z <- (z + A z) / 2 with A the mean over the edge
    neighbours (``operators.mean``), ``sweeps`` times, a diffusion over about sqrt(sweeps / 4) cells, then
    rescaled per channel to the same deviation. Measured worse than independent noise on the shedding
    benchmark (docs/benchmarks.md): a trained step's own errors are about as rough as 16 sweeps make it.
    """
    z = rng.standard_normal((n, len(scale))).astype(np.float32)
    if sweeps > 0:
        if operators is None:
            raise ValueError("smoothed noise needs the mesh operators")
        z64 = z.astype(np.float64)
        for _ in range(sweeps):
            z64 = 0.5 * (z64 + operators.mean @ z64)
        z = (z64 / np.maximum(z64.std(axis=0), 1e-30)).astype(np.float32)
    return z * scale


def operators_of(arrays: dict[str, np.ndarray], rows: np.ndarray | None = None) -> MeshOperators:
    """The derivative operators of a prepared transient mesh (``mesh/points``, ``mesh/edges``). With ``rows``
    (a subset of the points, training's ``train.volume_points``) the operators of the subset: the edges between
    kept points (a coarser stencil, as the subset is a coarser mesh)."""
    points, edges = np.asarray(arrays["mesh/points"]), np.asarray(arrays["mesh/edges"])
    if rows is None:
        return mesh_operators(points, edges)
    index = np.full(len(points), -1)
    index[rows] = np.arange(len(rows))
    kept = index[edges]
    return mesh_operators(points[rows], kept[(kept >= 0).all(axis=1)])


def step_operators(
    transient: TransientConfig, arrays: dict[str, np.ndarray], rows: np.ndarray | None = None, *, noisy: bool = False
) -> MeshOperators | None:
    """The operators of the mesh (of ``rows``; None: all points) where a step needs them (:func:`needs_operators`,
    ``noisy``: for its training noise too), else None."""
    if not needs_operators(transient, noisy=noisy):
        return None
    whole = rows is None or len(rows) == len(arrays["mesh/points"])
    return operators_of(arrays, None if whole else rows)


def static_features(stats: Stats, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(N, 11) float32 geometry channels of a transient mesh, in mesh order (``data/features.py``'s layout:
    wall points as surface points with their normal, the others as volume points)."""
    mean, scale = np.asarray(stats.coord_mean, dtype=np.float64), stats.coord_scale
    points = np.asarray(arrays["mesh/points"], dtype=np.float64)
    out = np.zeros((len(points), IN_FEATURES), dtype=np.float32)
    out[:, 0:3] = (points - mean) / scale
    out[:, 3:6] = arrays["mesh/normals"]
    out[:, 6] = np.asarray(arrays["mesh/distance"]).reshape(-1) / scale
    out[:, 7:10] = arrays["mesh/direction"]
    out[:, 10] = arrays["mesh/wall"]
    return out


def robust_std(std: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Deviations safe to divide by: a condition that never varies (the one Re of a single training case)
    gets ``max(|mean|, 1)``, so that a new value reads as a relative change, not as 1e12."""
    std, mean = np.asarray(std, dtype=np.float64), np.asarray(mean, dtype=np.float64)
    flat = std < 1e-6 * np.maximum(np.abs(mean), 1.0)
    return np.where(flat, np.maximum(np.abs(mean), 1.0), std)


def series_stats(
    samples: Sequence[Any], fields: dict[str, int], condition_keys: Sequence[str]
) -> tuple[dict[str, FieldStats], dict[str, FieldStats], dict[str, FieldStats], np.ndarray, float]:
    """From the training samples (:class:`~msptcli.data.sample.Sample` of transient cases): the statistics of
    the fields over every snapshot, of their one-step increments, and of the conditions, plus the coordinate
    mean and scale. A field channel that never varies (w of a 2D flow) keeps a deviation of 1e-12, as in
    steady datasets: it stays 0 in inputs, targets, noise and rollouts. The conditions' deviations go
    through :func:`robust_std`: one training Reynolds number must not make another one read as 1e12."""
    coords = np.concatenate([np.asarray(s.arrays["mesh/points"], dtype=np.float64) for s in samples])
    coord_mean = coords.mean(0)
    coord_scale = float(np.sqrt(np.mean(coords.var(0))))
    values, increments = {}, {}
    for name in fields:
        s1 = s2 = d1 = d2 = 0.0
        n = m = 0
        for sample in samples:
            x = np.asarray(sample.arrays[f"series/{name}"], dtype=np.float64)  # (T, N, k)
            d = np.diff(x, axis=0)
            s1, s2, n = s1 + x.sum((0, 1)), s2 + (x * x).sum((0, 1)), n + x.shape[0] * x.shape[1]
            d1, d2, m = d1 + d.sum((0, 1)), d2 + (d * d).sum((0, 1)), m + d.shape[0] * d.shape[1]
        for table, a, b, count in ((values, s1, s2, n), (increments, d1, d2, m)):
            mean = np.asarray(a) / count
            std = np.sqrt(np.maximum(np.asarray(b) / count - mean**2, 0.0))
            table[name] = FieldStats(mean=mean.tolist(), std=np.maximum(std, FLAT).tolist())
    conditions = {}
    for key in condition_keys:
        c = np.array([s.meta["conditions"][key] for s in samples], dtype=np.float64)
        conditions[key] = FieldStats(
            mean=[float(c.mean())], std=robust_std(c.std(keepdims=True), c.mean(keepdims=True)).tolist()
        )
    return values, increments, conditions, coord_mean, coord_scale
