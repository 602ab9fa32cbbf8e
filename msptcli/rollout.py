"""``mspt rollout RUN series.pvd``: roll a transient model out from one snapshot of a series.

    snapshot K (and the h before it)  --step, N times-->  K+1 ... K+N, each the last output + sigma * increment

Outputs, in ``OUT``:

    <name>.pvd                  the predicted series (ParaView plays it), written last
    <name>/<name>_NNN.vtu       one per step: the predicted fields, and ``<field>_true`` / ``<field>_error``
                                wherever the input series has that snapshot
    <name>.json                 errors per step, drag/lift histories, Strouhal number and mean drag, predicted
                                and from the series' own fields, next to the solver's (the case's params)
    <name>_rollout.png          the lift/drag histories and the error against the step

Read (every output checked first) -> roll (``data/step.py``'s step, as pushforward and validation take
it) -> score against the series -> write. The VTU folder is written under a temporary name and renamed
when complete, and the ``.pvd`` comes last: an interrupted rollout leaves no series that ParaView would
open half-filled.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msptcli.checkpoint import Checkpoint
from msptcli.data.cases import find_params
from msptcli.data.params import read_params
from msptcli.data.prepare_series import mesh_geometry
from msptcli.data.series import Series, read_series
from msptcli.data.step import StepCase, take_step
from msptcli.data.transient import (
    condition_names,
    condition_values,
    field_matrix,
    lookup,
    split_fields,
    step_operators,
)
from msptcli.errors import InvalidInputError, MsptError
from msptcli.evaluate import relative_l2
from msptcli.geometry.balltree import ball_tree_order
from msptcli.io.atomic import atomic_output, make_dirs, write_json
from msptcli.io.guard import check_outputs
from msptcli.io.meshes import write_mesh
from msptcli.io.pvd import write_pvd
from msptcli.runtime.inference import DEFAULT_CHUNK_POINTS
from msptcli.trust.check import VERDICTS, ShapeCheck, check_shape
from msptcli.trust.shape import outline_shape_features

#: Called after each step with (steps done, steps in all).
Progress = Callable[[int, int], None]


@dataclass
class Rollout:
    """What a rollout wrote and measured."""

    name: str
    start: int = 0  # the snapshot the rollout started from
    files: list[Path] = field(default_factory=list)
    steps: int = 0
    diverged_at: int | None = None  # the first step whose state was not finite (the rollout stopped before it)
    errors: dict[str, list[float | None]] = field(default_factory=dict)  # field -> rel. L2 per step (None: no truth)
    summary: dict[str, Any] = field(default_factory=dict)  # St, Cd mean, ... predicted / fields / solver
    seconds_per_step: float = 0.0
    trust: dict[str, Any] = field(default_factory=dict)  # the conditions against the training cases' (verdict)


@dataclass
class _Case:
    """The series a rollout starts from, read and checked (:func:`_read`): what the later phases need."""

    name: str
    out: Path  # the output folder
    start: int  # the snapshot the rollout starts from
    steps: int  # steps asked for
    series: Series  # snapshots start - h .. (the last asked, or of the file)
    geometry: dict[str, np.ndarray]  # ``mesh_geometry``'s arrays
    params: dict[str, Any]  # the case's params file, or {}
    conditions: dict[str, float]  # the values the model is given
    truth: np.ndarray  # (T', N, F) physical fields of the series' snapshots
    step: StepCase
    shape: ShapeCheck | None = None  # the body outline against the training cases' (None: no record, no body)


@dataclass
class _Scores:
    """The rollout's steps against the series: times, the series' row of each step, drag and lift."""

    times: np.ndarray  # (S,) time of each predicted state
    true_at: list[int | None]  # the row of ``truth`` at each step; None past the series' end
    forces: dict[str, Any]


def rollout_series(
    ckpt: Checkpoint,
    initial: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    start: int | None = None,
    steps: int | None = None,
    name: str | None = None,
    conditions: dict[str, float] | None = None,
    device: torch.device | str = "cpu",
    chunk_points: int | None = DEFAULT_CHUNK_POINTS,
    progress: Progress | None = None,
    force: bool = False,
) -> Rollout:
    """Roll the transient model of ``ckpt`` out from snapshot ``start`` (default: the first with the model's
    ``history`` snapshots before it) of the series ``initial`` for ``steps`` steps (default: to the end of the
    series); see the module docstring.

    ``conditions`` set or override the case's condition values (else read from its params file). A mesh in
    other units than the training cases' (``trust.check``'s units check of its body outline) is refused
    unless ``force``.
    """
    case = _read(ckpt, Path(initial), Path(out_dir), start=start, steps=steps, name=name, conditions=conditions,
                 force=force)  # fmt: skip
    result = Rollout(name=case.name, start=case.start)
    predicted = _roll(ckpt, case, result, device=device, chunk_points=chunk_points, progress=progress)
    scores = _score(ckpt, case, predicted, result)
    _write(ckpt, case, predicted, scores, result)
    return result


def _read(
    ckpt: Checkpoint,
    initial: Path,
    out: Path,
    *,
    start: int | None,
    steps: int | None,
    name: str | None,
    conditions: dict[str, float] | None,
    force: bool = False,
) -> _Case:
    """The snapshots the rollout needs, checked, with the outputs checked before anything is written; the
    case's geometry, tree order and conditions, once."""
    transient = ckpt.config.data.transient
    if transient is None:
        raise InvalidInputError(f"{ckpt.path}: is a steady model; mspt rollout rolls out transient models only")
    h = transient.history
    start = h if start is None else start  # the first snapshot with h before it
    if start < h:
        raise InvalidInputError(f"--start {start}: the model reads {h} earlier snapshots, so start at {h} or later")
    stop = None if steps is None else start + steps + 1
    series = read_series(initial, transient.fields, pattern=transient.series_file, dt=transient.dt,
                         start=start - h, stop=stop)  # fmt: skip
    if steps is None:
        steps = len(series.times) - 1 - h  # snapshots after the start in the file
        if steps < 1:
            raise InvalidInputError(f"{series.source}: snapshot {start} is its last; give --steps to roll out past it")
    if steps < 1:
        raise InvalidInputError(f"--steps {steps}: roll out at least one step")
    name = name or _case_name(initial)
    paths = _paths(out, name)
    files = [paths["pvd"], paths["json"], paths["png"]]
    check_outputs(out, files, folders=[paths["folder"]], inputs=series.files, input_name="the input series")
    geometry = mesh_geometry(series)
    shape = _shape_check(ckpt, geometry)
    if shape is not None and shape.units is not None and not force:
        raise InvalidInputError(f"{series.source}: {shape.units}")
    params = _params_of(initial, ckpt)
    values = condition_values(transient, {**params, **(conditions or {})}, series.dt, source=str(series.source))
    step = StepCase.of(
        ckpt.stats, ckpt.channels, transient, geometry, values, order=ball_tree_order(geometry["mesh/points"]),
        operators=step_operators(transient, geometry),
    )  # fmt: skip
    truth = field_matrix(series.fields, ckpt.channels)  # (T', N, F) from snapshot start - h
    return _Case(name, out, start, steps, series, geometry, params, values, truth, step, shape)


def _roll(
    ckpt: Checkpoint,
    case: _Case,
    result: Rollout,
    *,
    device: torch.device | str,
    chunk_points: int | None,
    progress: Progress | None,
) -> np.ndarray:
    """(S, N, F) the states after each step, each from the last h + 1; the rollout stops before the first state
    that is not finite (``result.diverged_at``), and with none finite is an error."""
    h = case.step.transient.history
    states = [case.truth[j] for j in range(h + 1)]
    predicted: list[np.ndarray] = []
    started = time.perf_counter()
    for step in range(1, case.steps + 1):
        _, state = take_step(ckpt.model, case.step, states[-(h + 1) :], device=device, chunk_points=chunk_points)
        if not np.isfinite(state).all():
            result.diverged_at = step
            break
        states.append(state)
        predicted.append(state)
        if progress is not None:
            progress(step, case.steps)
    result.steps = len(predicted)
    result.seconds_per_step = (time.perf_counter() - started) / max(len(predicted), 1)
    if not predicted:
        raise MsptError("the rollout diverged at its first step (non-finite fields); nothing was written")
    return np.stack(predicted)


def _score(ckpt: Checkpoint, case: _Case, predicted: np.ndarray, result: Rollout) -> _Scores:
    """Each step's relative L2 error per field where the series has its snapshot (``result.errors``), and drag,
    lift and shedding numbers, predicted and from the series' fields (``result.summary``)."""
    h, channels = case.step.transient.history, ckpt.channels
    times = float(case.series.times[h]) + case.series.dt * np.arange(1, result.steps + 1)
    true_at = [h + k if h + k < len(case.truth) else None for k in range(1, result.steps + 1)]
    result.errors = {n: [] for n, _ in channels.volume}
    for state, row in zip(predicted, true_at, strict=True):
        pred = split_fields(state, channels)
        ref = None if row is None else split_fields(case.truth[row], channels)
        for n, errs in result.errors.items():
            errs.append(None if ref is None else relative_l2(pred[n], ref[n]))
    forces = _forces(ckpt, case, predicted, true_at, times)
    result.summary = forces.pop("summary", {})
    return _Scores(times, true_at, forces)


def _write(ckpt: Checkpoint, case: _Case, predicted: np.ndarray, scores: _Scores, result: Rollout) -> None:
    """The VTU folder under a temporary name, renamed; the JSON and the PNG; the .pvd last."""
    paths = _paths(case.out, case.name)
    make_dirs(case.out)
    written = _write_states(ckpt, case, predicted, scores)
    result.trust = _trust(ckpt, case.conditions, case.shape)
    write_json(paths["json"], _summary(ckpt, case, scores, result))
    _plot(paths["png"], case.name, scores.times, scores.forces, result.errors)
    write_pvd(paths["pvd"], written)
    result.files = [paths["pvd"], paths["folder"], paths["json"], paths["png"]]


def _write_states(ckpt: Checkpoint, case: _Case, predicted: np.ndarray, scores: _Scores) -> list[tuple[float, str]]:
    """One VTU per predicted state, with ``<field>_true`` and ``<field>_error`` where the series has the
    snapshot, into the case's folder (whole or not at all); the (time, file) entries of the .pvd."""
    folder = _paths(case.out, case.name)["folder"]
    tmp = Path(tempfile.mkdtemp(prefix=f".{case.name}.", suffix=".tmp", dir=case.out))
    try:
        written = []
        for k, (state, row, time_k) in enumerate(zip(predicted, scores.true_at, scores.times, strict=True)):
            mesh = case.series.mesh.copy(deep=False)
            mesh.clear_data()
            pred = split_fields(state, ckpt.channels)
            ref = split_fields(case.truth[row], ckpt.channels) if row is not None else None
            for fname, k_comp in ckpt.channels.volume:
                mesh.point_data[fname] = _shape(pred[fname], k_comp)
                if ref is not None:
                    mesh.point_data[f"{fname}_true"] = _shape(ref[fname], k_comp)
                    mesh.point_data[f"{fname}_error"] = _shape(pred[fname] - ref[fname], k_comp)
            mesh.field_data["TimeValue"] = np.array([time_k])
            file = f"{case.name}_{k + 1:03d}.vtu"
            write_mesh(mesh, tmp / file, inputs=tuple(case.series.files))
            written.append((time_k, f"{case.name}/{file}"))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def _summary(ckpt: Checkpoint, case: _Case, scores: _Scores, result: Rollout) -> dict[str, Any]:
    """The rollout's JSON record (module docstring)."""
    h = case.step.transient.history
    return {
        "name": case.name,
        "checkpoint": str(ckpt.path),
        "checkpoint_epoch": ckpt.epoch,
        "initial": str(case.series.source),
        "start": case.start,
        "start_time": float(case.series.times[h]),
        "steps": result.steps,
        "diverged_at": result.diverged_at,
        "dt": case.series.dt,
        "num_points": len(case.step.points),
        "conditions": case.conditions,
        "fields": [n for n, _ in ckpt.channels.volume],
        "times": scores.times.tolist(),
        "relative_l2": result.errors,
        "forces": scores.forces,
        "shedding": result.summary,
        "seconds_per_step": result.seconds_per_step,
        "notes": list(result.trust["out_of_range"].values()),
        "trust": result.trust,
    }


def _forces(
    ckpt: Checkpoint, case: _Case, predicted: np.ndarray, true_at: list[int | None], times: np.ndarray
) -> dict[str, Any]:
    """Drag and lift histories from the ``predicted`` (S, N, F) states and from the series' own (``truth`` rows
    ``true_at`` of each step, None past its end), with the shedding summaries: St, mean Cd, Cl amplitude."""
    from msptcli.physics.shedding import body_forces, shedding_summary

    ref = ckpt.reference.transient
    transient = ckpt.config.data.transient
    names = dict(ckpt.channels.volume)
    velocity_name, pressure_name = "U", ckpt.config.data.pressure_field or "p"
    if velocity_name not in names or pressure_name not in names:
        return {"note": f"forces need the fields {velocity_name!r} and {pressure_name!r}"}
    edges = case.geometry["body/edges"]
    if len(edges) == 0:
        return {"note": "no body: the mesh has no inner boundary"}
    params = case.params
    nu = transient.viscosity if transient.viscosity is not None else lookup(params, transient.viscosity_key or "")
    nu = float(nu) if isinstance(nu, (int, float)) and not isinstance(nu, bool) else None
    kw = dict(
        nu=nu or 0.0,
        density=ckpt.config.data.density,
        velocity=ckpt.config.data.velocity,
        length=transient.reference_length if ref is None else ref.length,
    )

    def coefficients(states: np.ndarray) -> dict[str, np.ndarray]:
        f = split_fields(states, ckpt.channels)
        return body_forces(case.series.mesh, edges, f[velocity_name], f[pressure_name], **kw)

    out: dict[str, Any] = {"viscous": nu is not None, "reference": kw}
    summary: dict[str, Any] = {}
    rows = [r for r in true_at if r is not None]
    for key, states in (("predicted", predicted), ("fields", case.truth[rows] if rows else None)):
        if states is not None:
            c = coefficients(states)
            cd, cl = np.asarray(c["cd"]), np.asarray(c["cl"])
            out[key] = {"cd": cd.tolist(), "cl": cl.tolist()}
            summary[key] = shedding_summary(times[: len(states)], cd, cl)
    solver = params.get("forces", {}) if isinstance(params.get("forces"), dict) else {}
    picked = {k: solver[k] for k in ("St", "Cd_mean", "Cl_amp", "Cl_rms") if isinstance(solver.get(k), (int, float))}
    if picked:
        summary["solver"] = picked
    out["summary"] = summary
    return out


def _shape_check(ckpt: Checkpoint, geometry: dict[str, np.ndarray]) -> ShapeCheck | None:
    """The case's body outline and mesh against the training cases' (``trust/check.py``); None where the
    checkpoint records none (an older run) or the mesh has no body."""
    if ckpt.shapes is None or ckpt.shapes.kind != "outline" or not len(geometry["body/edges"]):
        return None
    features = outline_shape_features(geometry["mesh/points"], geometry["body/edges"])
    return check_shape(ckpt.shapes, features, rescale=False)


def _trust(ckpt: Checkpoint, values: dict[str, float], shape: ShapeCheck | None = None) -> dict[str, Any]:
    """The rollout's ``trust``, in the words of ``mspt predict``'s (``trust/check.py``): a condition outside the
    training cases' range is named (the model extrapolates there) and makes the verdict ``warn``; the body
    outline's check (``shape``) joins it: its findings are named beside the conditions', its verdict the worse."""
    transient = ckpt.reference.transient
    training = {} if transient is None else transient.training_conditions
    out_of_range = {}
    for key in condition_names(ckpt.config.data.transient):
        seen = [c[key] for c in training.values() if isinstance(c.get(key), (int, float))]
        if seen and not min(seen) * (1 - 1e-6) <= values[key] <= max(seen) * (1 + 1e-6):
            span = f"{min(seen):.4g}..{max(seen):.4g}"
            out_of_range[key] = f"{key} = {values[key]:.4g} is outside the training cases' {span}"
    verdict = "warn" if out_of_range else "ok"
    out: dict[str, Any] = {"verdict": verdict, "out_of_range": out_of_range}
    if shape is not None:
        if shape.units:
            out_of_range["units"] = shape.units.split(", or pass --force")[0] + " (rolled out with --force)"
        out_of_range.update({name: f"{name} {text}" for name, text in shape.out_of_range.items()})
        if (distance := shape.distance_note()) is not None:
            out_of_range["shape"] = distance
        out["verdict"] = max(verdict, shape.verdict, key=VERDICTS.index)
        out["shape"] = shape.to_json()
    return out


def _params_of(initial: Path, ckpt: Checkpoint) -> dict[str, Any]:
    """The case's params: the data config's params file beside the series, or nothing."""
    folder = initial if initial.is_dir() else initial.parent
    return read_params(find_params(folder, ckpt.config.data.params_file))


def _paths(out: Path, name: str) -> dict[str, Path]:
    """The outputs of the rollout ``name`` in ``out`` (module docstring)."""
    files = {"pvd": f"{name}.pvd", "folder": name, "json": f"{name}.json", "png": f"{name}_rollout.png"}
    return {k: out / v for k, v in files.items()}


def _case_name(initial: Path) -> str:
    """The rollout's name: the case folder's name (a series file is named by its folder when it is 'series')."""
    folder = initial if initial.is_dir() else initial.parent
    return folder.resolve().name if initial.is_dir() or initial.stem == "series" else initial.stem


def _shape(values: np.ndarray, components: int) -> np.ndarray:
    return values.reshape(-1) if components == 1 else values


def _plot(path: Path, name: str, times: np.ndarray, forces: dict[str, Any], errors: dict[str, list]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, key in zip(axes[:2], ("cl", "cd"), strict=True):
        if "predicted" in forces:
            ax.plot(times, forces["predicted"][key], "-o", ms=3, label="predicted")
        if "fields" in forces:
            n = len(forces["fields"][key])
            ax.plot(times[:n], forces["fields"][key], "-", color="k", label="from the series' fields")
        ax.set_xlabel("t")
        ax.set_ylabel(key.capitalize())
        ax.legend()
        ax.grid(alpha=0.3)
    for fname, errs in errors.items():
        steps = [k + 1 for k, e in enumerate(errs) if e is not None]
        axes[2].plot(steps, [e for e in errs if e is not None], "-o", ms=3, label=fname)
    axes[2].set_xlabel("rollout step")
    axes[2].set_ylabel("relative L2 error")
    axes[2].set_yscale("log")
    axes[2].legend()
    axes[2].grid(alpha=0.3, which="both")
    fig.suptitle(f"{name}: rollout of {len(times)} steps")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
