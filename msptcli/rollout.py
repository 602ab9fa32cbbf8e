"""``mspt rollout RUN series.pvd``: roll a transient model out from one snapshot of a series.

    snapshot K (and the h before it)  --step, N times-->  K+1 ... K+N, each the last output + sigma * increment

Outputs, in ``OUT``:

    <name>.pvd                  the predicted series (ParaView plays it), written last
    <name>/<name>_NNN.vtu       one per step: the predicted fields, and ``<field>_true`` / ``<field>_error``
                                wherever the input series has that snapshot
    <name>.json                 errors per step, drag/lift histories, Strouhal number and mean drag, predicted
                                and from the series' own fields, next to the solver's (the case's params)
    <name>_rollout.png          the lift/drag histories and the error against the step

The VTU folder is written under a temporary name and renamed when complete, and the ``.pvd`` comes
last: an interrupted rollout leaves no series that ParaView would open half-filled.
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
from msptcli.data.transient import (
    condition_names,
    condition_values,
    field_matrix,
    lookup,
    needs_operators,
    next_state,
    operators_of,
    split_fields,
    static_features,
    step_inputs,
)
from msptcli.errors import InvalidInputError, MsptError
from msptcli.evaluate import relative_l2
from msptcli.geometry.balltree import ball_tree_order
from msptcli.io.atomic import atomic_output, make_dirs, write_json
from msptcli.io.guard import check_outputs
from msptcli.io.meshes import write_mesh
from msptcli.io.pvd import write_pvd
from msptcli.runtime.inference import DEFAULT_CHUNK_POINTS, predict_clouds

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
) -> Rollout:
    """Roll the transient model of ``ckpt`` out from snapshot ``start`` (default: the first with the model's
    ``history`` snapshots before it) of the series ``initial`` for ``steps`` steps (default: to the end of the
    series); see the module docstring.

    ``conditions`` set or override the case's condition values (else read from its params file).
    """
    transient = ckpt.config.data.transient
    if transient is None:
        raise InvalidInputError(f"{ckpt.path}: is a steady model; mspt rollout rolls out transient models only")
    initial, out = Path(initial), Path(out_dir)
    h = transient.history
    start = h if start is None else start  # the first snapshot with h before it
    if start < h:
        raise InvalidInputError(f"--start {start}: the model reads {h} earlier snapshots, so start at {h} or later")
    stop = None if steps is None else start + steps + 1
    series = read_series(initial, transient.fields, pattern=transient.series_file, dt=transient.dt,
                         start=start - h, stop=stop)  # fmt: skip
    available = len(series.times) - 1 - h  # snapshots after the start in the file
    if steps is None:
        steps = available
        if steps < 1:
            raise InvalidInputError(f"{series.source}: snapshot {start} is its last; give --steps to roll out past it")
    if steps < 1:
        raise InvalidInputError(f"--steps {steps}: roll out at least one step")
    name = name or _case_name(initial)
    folder, pvd = out / name, out / f"{name}.pvd"
    files = {"json": out / f"{name}.json", "png": out / f"{name}_rollout.png"}
    check_outputs(out, [pvd, *files.values()], folders=[folder], inputs=series.files, input_name="the input series")

    # --- the case: geometry, tree order and conditions, once ---------------------------------------------
    channels, stats = ckpt.channels, ckpt.stats
    geometry = mesh_geometry(series)
    points = geometry["mesh/points"]
    order = ball_tree_order(points)
    static = static_features(stats, geometry)
    operators = operators_of(geometry) if needs_operators(transient, noisy=False) else None
    params = _params_of(initial, ckpt)
    values = condition_values(transient, {**params, **(conditions or {})}, series.dt, source=str(series.source))
    truth = field_matrix(series.fields, channels)  # (T', N, F) from snapshot start - h
    states = [truth[j] for j in range(h + 1)]
    dt, t0 = series.dt, float(series.times[h])

    # --- the rollout -------------------------------------------------------------------------------------
    result = Rollout(name=name, start=start)
    predicted: list[np.ndarray] = []
    started = time.perf_counter()
    for step in range(1, steps + 1):
        inputs = step_inputs(stats, channels, transient, static, states[-(h + 1) :], values, operators)
        (out_step,) = predict_clouds(ckpt.model, [points], [inputs], orders=[order], device=device,
                                     chunk_points=chunk_points)  # fmt: skip
        state = next_state(stats, channels, states[-1], out_step)
        if not np.isfinite(state).all():
            result.diverged_at = step
            break
        states.append(state)
        predicted.append(state)
        if progress is not None:
            progress(step, steps)
    result.steps = len(predicted)
    result.seconds_per_step = (time.perf_counter() - started) / max(len(predicted), 1)
    if not predicted:
        raise MsptError("the rollout diverged at its first step (non-finite fields); nothing was written")
    times = t0 + dt * np.arange(1, result.steps + 1)
    true_at = [h + k if h + k < len(truth) else None for k in range(1, result.steps + 1)]

    # --- errors, forces ----------------------------------------------------------------------------------
    for fname, _ in channels.volume:
        cols = split_fields(np.stack(predicted), channels)[fname]
        errs: list[float | None] = []
        for k, row in enumerate(true_at):
            if row is None:
                errs.append(None)
                continue
            ref = split_fields(truth[row], channels)[fname]
            errs.append(relative_l2(cols[k], ref))
        result.errors[fname] = errs
    forces = _forces(ckpt, series, geometry, params, np.stack(predicted), truth, true_at, times)
    result.summary = forces.pop("summary", {})

    # --- outputs: the VTU folder under a temporary name, renamed; JSON, PNG; the .pvd last ----------------
    make_dirs(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out))
    try:
        written = []
        for k, state in enumerate(predicted):
            mesh = series.mesh.copy(deep=False)
            mesh.clear_data()
            pred = split_fields(state, channels)
            row = true_at[k]
            ref = split_fields(truth[row], channels) if row is not None else None
            for fname, k_comp in channels.volume:
                mesh.point_data[fname] = _shape(pred[fname], k_comp)
                if ref is not None:
                    mesh.point_data[f"{fname}_true"] = _shape(ref[fname], k_comp)
                    mesh.point_data[f"{fname}_error"] = _shape(pred[fname] - ref[fname], k_comp)
            mesh.field_data["TimeValue"] = np.array([times[k]])
            file = f"{name}_{k + 1:03d}.vtu"
            write_mesh(mesh, tmp / file, inputs=tuple(series.files))
            written.append((times[k], f"{name}/{file}"))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary = {
        "name": name,
        "checkpoint": str(ckpt.path),
        "checkpoint_epoch": ckpt.epoch,
        "initial": str(series.source),
        "start": start,
        "start_time": t0,
        "steps": result.steps,
        "diverged_at": result.diverged_at,
        "dt": dt,
        "num_points": len(points),
        "conditions": values,
        "fields": [n for n, _ in channels.volume],
        "times": times.tolist(),
        "relative_l2": result.errors,
        "forces": forces,
        "shedding": result.summary,
        "seconds_per_step": result.seconds_per_step,
        "notes": _range_notes(ckpt, values),
    }
    write_json(files["json"], summary)
    _plot(files["png"], name, times, forces, result.errors)
    write_pvd(pvd, written)
    result.files = [pvd, folder, files["json"], files["png"]]
    return result


def _forces(
    ckpt: Checkpoint,
    series: Series,
    geometry: dict[str, np.ndarray],
    params: dict[str, Any],
    predicted: np.ndarray,
    truth: np.ndarray,
    true_at: list[int | None],
    times: np.ndarray,
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
    if len(geometry["body/edges"]) == 0:
        return {"note": "no body: the mesh has no inner boundary"}
    nu = transient.viscosity if transient.viscosity is not None else lookup(params, transient.viscosity_key or "")
    nu = float(nu) if isinstance(nu, (int, float)) and not isinstance(nu, bool) else None
    kw = dict(
        nu=nu or 0.0,
        density=ckpt.config.data.density,
        velocity=ckpt.config.data.reference_velocity,
        length=transient.reference_length if ref is None else ref.length,
    )

    def coefficients(states: np.ndarray) -> dict[str, np.ndarray]:
        f = split_fields(states, ckpt.channels)
        return body_forces(series.mesh, geometry["body/edges"], f[velocity_name], f[pressure_name], **kw)

    out: dict[str, Any] = {"viscous": nu is not None, "reference": kw}
    pred = coefficients(predicted)
    out["predicted"] = {"cd": np.asarray(pred["cd"]).tolist(), "cl": np.asarray(pred["cl"]).tolist()}
    summary: dict[str, Any] = {"predicted": shedding_summary(times, np.asarray(pred["cd"]), np.asarray(pred["cl"]))}
    rows = [r for r in true_at if r is not None]
    if rows:
        true = coefficients(truth[rows])
        out["fields"] = {"cd": np.asarray(true["cd"]).tolist(), "cl": np.asarray(true["cl"]).tolist()}
        summary["fields"] = shedding_summary(times[: len(rows)], np.asarray(true["cd"]), np.asarray(true["cl"]))
    solver = params.get("forces", {}) if isinstance(params.get("forces"), dict) else {}
    picked = {k: solver[k] for k in ("St", "Cd_mean", "Cl_amp", "Cl_rms") if isinstance(solver.get(k), (int, float))}
    if picked:
        summary["solver"] = picked
    out["summary"] = summary
    return out


def _range_notes(ckpt: Checkpoint, values: dict[str, float]) -> list[str]:
    """Say where a condition lies outside the training cases' range: the model extrapolates there."""
    transient = ckpt.reference.transient
    training = {} if transient is None else transient.training_conditions
    notes = []
    for key in condition_names(ckpt.config.data.transient):
        seen = [c[key] for c in training.values() if isinstance(c.get(key), (int, float))]
        if seen and not min(seen) * (1 - 1e-6) <= values[key] <= max(seen) * (1 + 1e-6):
            notes.append(f"{key} = {values[key]:.4g} is outside the training cases' {min(seen):.4g}..{max(seen):.4g}")
    return notes


def _params_of(initial: Path, ckpt: Checkpoint) -> dict[str, Any]:
    """The case's params: the data config's params file beside the series, or nothing."""
    folder = initial if initial.is_dir() else initial.parent
    return read_params(find_params(folder, ckpt.config.data.params_file))


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
