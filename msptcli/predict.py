"""``mspt predict``: a new design's surface in, predicted fields (VTK), drag and lift out.

The geometry (STL/OBJ/PLY or a VTK surface) gets the same features as the
training data; the surface fields are predicted on it and the volume fields on
a given volume mesh or on points sampled around the body. Every mesh goes
through streaming inference, so meshes far larger than a training sample fit.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msptcli.data.features import model_inputs, to_physical
from msptcli.data.prepare_case import surface_arrays, volume_arrays
from msptcli.data.read import FieldMesh
from msptcli.errors import InvalidInputError
from msptcli.geometry.balltree import ball_tree_order
from msptcli.io.atomic import atomic_output
from msptcli.io.meshes import as_polydata, is_surface, read_mesh, write_mesh
from msptcli.model import build_layout, stream_forward
from msptcli.train.checkpoint import Checkpoint
from msptcli.train.metrics import coefficients, force_from_points, relative_l2

#: Volume points sampled around the body when no volume mesh is given.
DEFAULT_VOLUME_POINTS = 50_000


@dataclass
class Prediction:
    name: str
    files: list[Path]
    coefficients: dict[str, Any] = field(default_factory=dict)  # cd, cl, reference values and their sources
    errors: dict[str, float] = field(default_factory=dict)  # relative L2 per field, where the input had it
    solver: dict[str, float] = field(default_factory=dict)  # the solver's values from params.json, if any


def predict_geometry(
    ckpt: Checkpoint,
    geometry: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    volume_mesh: str | os.PathLike[str] | None = None,
    volume_points: int | None = None,
    reference_area: float | None = None,
    reference_velocity: float | None = None,
    density: float | None = None,
    device: torch.device | None = None,
    chunk_points: int = 1 << 16,
    preview: bool = True,
) -> Prediction:
    """Predict every trained field on ``geometry``; write ``<name>.vtp``, ``<name>_volume.vtu``, ``.json``, ``.png``."""
    geometry, out = Path(geometry), Path(out_dir)
    name = name or geometry.stem
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    mesh = read_mesh(geometry)
    if not is_surface(mesh):
        raise InvalidInputError(f"{geometry}: is a volume mesh; pass the body's surface (STL/OBJ/PLY/VTP)")
    surface = as_polydata(mesh)
    if surface.n_cells == 0:
        raise InvalidInputError(f"{geometry}: has points but no faces; a surface mesh is needed")
    channels, stats = ckpt.channels, ckpt.stats
    at_cells = ckpt.surface_location == "cells"
    points = np.asarray(surface.cell_centers().points if at_cells else surface.points, dtype=np.float64)
    s_arrays = surface_arrays(FieldMesh(mesh=surface, points=points, location="cells" if at_cells else "points"))

    v_arrays: dict[str, np.ndarray] = {}
    volume = None
    if channels.volume and (volume_mesh is not None or volume_points != 0):
        if volume_mesh is not None:
            volume = read_mesh(volume_mesh)
            v_points = np.asarray(volume.points, dtype=np.float64)
        else:
            v_points = _volume_points(ckpt, surface, volume_points)
            import pyvista as pv

            volume = pv.PolyData(v_points).cast_to_unstructured_grid()
        v_arrays = volume_arrays(v_points, surface)

    # --- the model, on the whole cloud [surface ; volume] in its ball-tree order ----------------------
    n = len(s_arrays["surface/points"])
    inputs = model_inputs(
        stats,
        s_arrays["surface/points"],
        s_arrays["surface/normals"],
        v_arrays.get("volume/points"),
        v_arrays.get("volume/distance"),
        v_arrays.get("volume/direction"),
    )
    cloud = np.concatenate([s_arrays["surface/points"], v_arrays.get("volume/points", np.zeros((0, 3), np.float32))])
    order = ball_tree_order(cloud)
    model = ckpt.model.to(device)
    layout = build_layout([len(cloud)], model.config).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out_ordered = stream_forward(
            model, torch.from_numpy(inputs[order]).to(device), layout, chunk_points=chunk_points
        )
    pred = np.empty(out_ordered.shape, dtype=np.float32)
    pred[order] = out_ordered.float().cpu().numpy()
    phys = to_physical(stats, channels, pred, n)

    # --- outputs -----------------------------------------------------------------------------------------
    result = Prediction(name=name, files=[])
    data = surface.cell_data if at_cells else surface.point_data
    result.errors.update(_attach(data, phys["surface"], "surface"))
    out.mkdir(parents=True, exist_ok=True)
    result.files.append(write_mesh(surface, out / f"{name}.vtp", inputs=(geometry,)))
    if volume is not None:
        result.errors.update(_attach(volume.point_data, phys["volume"], "volume"))
        inputs_given = (geometry, Path(volume_mesh)) if volume_mesh is not None else (geometry,)
        result.files.append(write_mesh(volume, out / f"{name}_volume.vtu", inputs=inputs_given))

    params = _params_beside(geometry)
    result.coefficients = _coefficients(
        ckpt, s_arrays, phys["surface"], data, params, reference_area, reference_velocity, density
    )
    result.solver = {k: float(params[k]) for k in ("Cd", "Cl", "Cd_fields", "Cl_fields") if k in params}
    summary = {
        "name": name,
        "geometry": str(geometry),
        "checkpoint_epoch": ckpt.epoch,
        "num_surface": n,
        "num_volume": len(cloud) - n,
        "num_points": len(cloud),
        "coefficients": result.coefficients,
        "relative_l2": result.errors,
        "solver": result.solver,
        "fields": {p: [n for n, _ in getattr(channels, p)] for p in ("surface", "volume")},
    }
    json_path = out / f"{name}.json"
    with atomic_output(json_path) as tmp:
        tmp.write_text(json.dumps(_finite(summary), indent=1, allow_nan=False))
    result.files.append(json_path)
    pressure = ckpt.reference.get("pressure_field")
    if preview and pressure and pressure in phys["surface"]:
        result.files.append(_preview(surface, pressure, out / f"{name}.png", at_cells))
    return result


def _volume_points(ckpt: Checkpoint, surface: Any, count: int | None) -> np.ndarray:
    """Volume points for a geometry without a volume mesh.

    By default the checkpoint's template — the training volume points relative to their body's
    bounding box — mapped onto this body's box, keeping the points outside the body: the model then
    sees volume points spread as in training, on which its whole-cloud supernodes depend. With
    ``count``, that many points uniform in a box around the body instead.
    """
    from msptcli.geometry.surface import outside_body, sample_points_around

    if count is not None or ckpt.volume_template is None:
        return sample_points_around(surface, count or DEFAULT_VOLUME_POINTS, seed=0)
    body = np.asarray(surface.points, dtype=np.float64)
    lo, size = body.min(axis=0), np.ptp(body, axis=0)
    points = lo + ckpt.volume_template.astype(np.float64) * size
    return points[outside_body(points, surface)]


def _attach(data: Any, predicted: dict[str, np.ndarray], part: str) -> dict[str, float]:
    """Store predicted arrays under the trained names; where the input had the true field, add
    ``<field>_true`` and ``<field>_error`` and return the relative L2."""
    errors = {}
    for fname, values in predicted.items():
        values = values[:, 0] if values.shape[1] == 1 else values
        true = np.asarray(data[fname], dtype=np.float32) if fname in data.keys() else None  # noqa: SIM118
        if true is not None and true.shape == values.shape and np.isfinite(true).all():
            data[f"{fname}_true"] = true
            data[f"{fname}_error"] = values - true
            errors[f"{part}/{fname}"] = relative_l2(values, true)
        data[fname] = values
    return errors


def _coefficients(ckpt: Checkpoint, s_arrays, surface_pred, data, params, area, velocity, density) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    ref = ckpt.reference
    p_name, tau_name = ref.get("pressure_field"), ref.get("wall_shear_field")
    if not p_name or p_name not in surface_pred:
        return {}
    key = ref.get("area_key")
    if area is not None:
        area_source = "--reference-area"
    elif key and isinstance(params.get(key), (int, float)):
        area, area_source = float(params[key]), f"params.json {key}"
    elif ref.get("reference_area"):
        area, area_source = float(ref["reference_area"]), "config data.reference_area"
    elif ref.get("training_reference_areas"):
        area, area_source = float(statistics.median(ref["training_reference_areas"])), "median of the training cases"
    else:
        raise InvalidInputError("no reference area is known for drag and lift: pass --reference-area")
    velocity = velocity if velocity is not None else ref["velocity"]
    density = density if density is not None else ref["density"]
    kw = {"ref_area": area, "velocity": velocity, "density": density}
    tau = surface_pred.get(tau_name) if tau_name else None
    cd, cl = coefficients(
        force_from_points(s_arrays["surface/area"], s_arrays["surface/area_norm"], surface_pred[p_name], tau), **kw
    )
    out: dict[str, Any] = {
        "cd": cd,
        "cl": cl,
        "reference_area": area,
        "reference_area_source": area_source,
        "reference_velocity": velocity,
        "density": density,
    }
    true_p = f"{p_name}_true"
    true_tau = f"{tau_name}_true" if tau is not None else None
    if true_p in data.keys() and (true_tau is None or true_tau in data.keys()):  # noqa: SIM118
        tau_true = np.asarray(data[true_tau]) if true_tau else None
        cd_t, cl_t = coefficients(
            force_from_points(
                s_arrays["surface/area"], s_arrays["surface/area_norm"], np.asarray(data[true_p]), tau_true
            ),
            **kw,
        )
        out.update({"cd_true_fields": cd_t, "cl_true_fields": cl_t})
    return out


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: such numbers become null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _params_beside(geometry: Path) -> dict[str, Any]:
    path = geometry.parent / "params.json"
    try:
        params = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return params if isinstance(params, dict) else {}


def _preview(surface: Any, field_name: str, path: Path, at_cells: bool) -> Path:
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    import pyvista as pv

    plotter = pv.Plotter(off_screen=True, window_size=(1280, 800))
    plotter.add_mesh(
        surface,
        scalars=field_name,
        preference="cell" if at_cells else "point",
        cmap="coolwarm",
        scalar_bar_args={"title": f"predicted {field_name}"},
    )
    plotter.view_isometric()
    with atomic_output(path) as tmp:
        plotter.screenshot(str(tmp))
    plotter.close()
    return path
