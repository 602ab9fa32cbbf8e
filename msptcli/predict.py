"""``mspt predict``: a new design's surface in, predicted fields (VTK), drag and lift out.

The geometry (STL/OBJ/PLY or a VTK surface) gets the same features as the
training data; the surface fields are predicted on it and the volume fields on
a given volume mesh or on points sampled around the body. Every mesh goes
through streaming inference, so meshes far larger than a training sample fit.
With anchor-query MSPT (``model.anchors``, the default) the network reads anchors
drawn from the body alone and every mesh point is a query: the prediction at a
point does not depend on which other points are asked about.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msptcli.checkpoint import Checkpoint
from msptcli.data.anchors import geometry_anchors, seeds_of
from msptcli.data.features import model_inputs, to_physical
from msptcli.data.prepare_case import surface_arrays, volume_arrays
from msptcli.data.read import FieldMesh
from msptcli.data.template import place_template
from msptcli.errors import InvalidInputError
from msptcli.evaluate import drag_lift, relative_l2
from msptcli.geometry.faces import refined
from msptcli.io.atomic import write_json
from msptcli.io.guard import check_outputs
from msptcli.io.meshes import as_polydata, is_surface, read_mesh, write_mesh
from msptcli.io.render import render_png
from msptcli.model import DEFAULT_CHUNK_POINTS, predict_clouds, predict_queries_averaged

#: Volume points sampled around the body when no volume mesh is given.
DEFAULT_VOLUME_POINTS = 50_000
#: Drag and lift of an anchor-query model are integrated on the surface refined to at least this many points.
FORCE_POINTS = 30_000  # the 2,048-point example STL reaches 32,738 after two subdivisions (not 130,946 after three)


@dataclass
class Prediction:
    name: str
    files: list[Path]
    coefficients: dict[str, Any] = field(default_factory=dict)  # cd, cl, reference values and their sources
    errors: dict[str, float] = field(default_factory=dict)  # relative L2 per field, where the input had it
    solver: dict[str, float] = field(default_factory=dict)  # the solver's values from params.json, if any


def output_names(geometries: Sequence[Path]) -> list[str]:
    """The name of each geometry's outputs: its stem, or ``<folder>_<stem>`` when stems repeat or the
    file sits in a case folder (beside a ``params.json``), whose files have generic names."""
    stems = [g.stem for g in geometries]
    return [
        g.stem if stems.count(g.stem) == 1 and not (g.parent / "params.json").is_file() else f"{g.parent.name}_{g.stem}"
        for g in geometries
    ]


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
    chunk_points: int = DEFAULT_CHUNK_POINTS,
    preview: bool = True,
) -> Prediction:
    """Predict every trained field on ``geometry``; write ``<name>.vtp``, ``<name>_volume.vtu``, ``.json``, ``.png``.

    Every input is checked and every output path chosen before the first file is written.
    """
    geometry, out = Path(geometry), Path(out_dir)
    name = name or geometry.stem
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for option, value in (("--reference-area", reference_area), ("--reference-velocity", reference_velocity),
                          ("--density", density)):  # fmt: skip
        if value is not None and not (np.isfinite(value) and value > 0):
            raise InvalidInputError(f"{option} must be a positive number, got {value}")
    inputs_given = (geometry,) if volume_mesh is None else (geometry, Path(volume_mesh))
    files = _output_files(
        out, name, with_volume=bool(ckpt.channels.volume) and (volume_mesh is not None or volume_points != 0)
    )
    check_outputs(out, files.values(), inputs=inputs_given + ((ckpt.path,) if ckpt.path else ()))

    mesh = read_mesh(geometry)
    if not is_surface(mesh):
        raise InvalidInputError(f"{geometry}: is a volume mesh; pass the body's surface (STL/OBJ/PLY/VTP)")
    surface = as_polydata(mesh)
    if surface.n_cells == 0:
        raise InvalidInputError(f"{geometry}: has points but no faces; a surface mesh is needed")
    channels, stats = ckpt.channels, ckpt.stats
    at_cells = ckpt.surface_location == "cells"
    points = np.asarray(surface.cell_centers().points if at_cells else surface.points, dtype=np.float64)
    s_arrays = surface_arrays(
        FieldMesh(mesh=surface, points=points, location="cells" if at_cells else "points", source=geometry)
    )

    v_arrays: dict[str, np.ndarray] = {}
    volume = None
    if "volume" in files:
        if volume_mesh is not None:
            volume = read_mesh(volume_mesh)
            v_points = np.asarray(volume.points, dtype=np.float64)
        else:
            v_points = _volume_points(ckpt, surface, volume_points)
            import pyvista as pv

            volume = pv.PolyData(v_points).cast_to_unstructured_grid()
        v_arrays = volume_arrays(v_points, surface, source=geometry)
    params = _params_beside(geometry)
    area, area_source = _reference_area(ckpt, params, reference_area, geometry)

    # --- the model, on the whole cloud [surface ; volume] ----------------------------------------------
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
    model, bf16 = ckpt.model.to(device), ckpt.config.train.bf16
    anchors = model.config.anchors
    run_kw = dict(device=device, bf16=bf16, chunk_points=chunk_points)
    refined_force = None
    if anchors is not None:  # anchor-query MSPT: anchors from the body alone, every point a query
        draws = [
            tuple([x] for x in geometry_anchors(surface, stats, draw, ckpt.volume_template))
            for draw in seeds_of(anchors)
        ]
        fine = _refined_surface(ckpt, surface)  # queried beside the mesh, in one pass of the anchors
        queries, query_inputs = [cloud, fine["surface/points"]], [inputs, fine["inputs"]]
        (both,) = predict_queries_averaged(
            model, draws, [np.concatenate(queries)], [np.concatenate(query_inputs)], **run_kw
        )
        pred, fine_pred = both[: len(cloud)], both[len(cloud) :]
        refined_force = (to_physical(stats, channels, fine_pred, len(fine_pred))["surface"], fine)
    else:
        (pred,) = predict_clouds(model, [cloud], [inputs], **run_kw)
    phys = to_physical(stats, channels, pred, n)

    # --- outputs -----------------------------------------------------------------------------------------
    result = Prediction(name=name, files=[])
    data = surface.cell_data if at_cells else surface.point_data
    result.errors.update(_attach(data, phys["surface"], "surface"))
    result.files.append(write_mesh(surface, files["surface"], inputs=inputs_given))
    if volume is not None:
        result.errors.update(_attach(volume.point_data, phys["volume"], "volume"))
        result.files.append(write_mesh(volume, files["volume"], inputs=inputs_given))
    result.coefficients = _coefficients(
        ckpt, s_arrays, phys["surface"], data, (area, area_source), reference_velocity, density, refined_force
    )
    result.solver = {k: float(params[k]) for k in ("Cd", "Cl", "Cd_fields", "Cl_fields") if _is_number(params.get(k))}
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
    write_json(files["json"], summary)
    result.files.append(files["json"])
    pressure = ckpt.reference.get("pressure_field")
    if preview and pressure and pressure in phys["surface"]:
        result.files.append(_preview(surface, pressure, files["png"], at_cells))
    return result


def _output_files(out: Path, name: str, *, with_volume: bool) -> dict[str, Path]:
    files = {"surface": out / f"{name}.vtp", "json": out / f"{name}.json", "png": out / f"{name}.png"}
    if with_volume:
        files["volume"] = out / f"{name}_volume.vtu"
    return files


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _volume_points(ckpt: Checkpoint, surface: Any, count: int | None) -> np.ndarray:
    """Volume points for a geometry without a volume mesh: by default the checkpoint's template placed around
    this body (``data/template.py``); with ``count``, that many points uniform in a box around the body."""
    from msptcli.geometry.sampling import sample_points_around

    if count is not None or ckpt.volume_template is None:
        return sample_points_around(surface, count or DEFAULT_VOLUME_POINTS, seed=0)
    return place_template(ckpt.volume_template, surface)


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


def _reference_area(
    ckpt: Checkpoint, params: dict[str, Any], given: float | None, geometry: Path
) -> tuple[float | None, str]:
    """A_ref and where it comes from: the option, else params.json beside the geometry, else the config, else
    the median of the training cases; (None, reason) when nothing gives one or no pressure is predicted."""
    ref = ckpt.reference
    key = ref.get("area_key")
    if given is not None:
        return given, "--reference-area"
    if key and key in params:
        if not (_is_number(params[key]) and params[key] > 0):
            params_file = geometry.parent / "params.json"
            raise InvalidInputError(f"{params_file}: {key} must be a positive number, got {params[key]}")
        return float(params[key]), f"params.json {key}"
    if ref.get("reference_area"):
        return float(ref["reference_area"]), "config data.reference_area"
    if ref.get("training_reference_areas"):
        return float(statistics.median(ref["training_reference_areas"])), "median of the training cases"
    if ref.get("pressure_field") in dict(ckpt.channels.surface):
        raise InvalidInputError("no reference area is known for drag and lift: pass --reference-area")
    return None, "no pressure field"


def _refined_surface(ckpt, surface) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    """Points, normals, area shares and model inputs of the surface refined to at least ``FORCE_POINTS`` points.

    A query's prediction does not depend on the other queries, so the fields there are the same function of
    position as on the given mesh; integrated on finer faces, drag and lift no longer depend on how coarsely
    the body was tessellated (a 2k-point STL and the 11k-point CFD surface of one body agree).
    """
    at_cells = ckpt.surface_location == "cells"
    fine = refined(surface, FORCE_POINTS)
    points = np.asarray(fine.cell_centers().points if at_cells else fine.points, dtype=np.float64)
    arrays = surface_arrays(FieldMesh(mesh=fine, points=points, location="cells" if at_cells else "points"))
    arrays["inputs"] = model_inputs(ckpt.stats, arrays["surface/points"], arrays["surface/normals"])
    return arrays


def _coefficients(
    ckpt, s_arrays, surface_pred, data, area_and_source, velocity, density, refined_force=None
) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Drag and lift of the predicted fields: on the refined surface for an anchor-query model (``refined_force``),
    else on the given mesh; ``cd_mesh``/``cl_mesh`` always on the given mesh, as the solver's fields there."""
    area, area_source = area_and_source
    ref = ckpt.reference
    velocity = velocity if velocity is not None else ref["velocity"]
    density = density if density is not None else ref["density"]
    kw = dict(ref_area=area, velocity=velocity, density=density)
    shares = (s_arrays["surface/area"], s_arrays["surface/area_norm"])
    predicted = drag_lift(*shares, surface_pred, ref, **kw) if area else None
    if predicted is None:
        return {}
    on_mesh = predicted
    integrated_on = "the given surface's points" if ckpt.surface_location == "points" else "the given surface's cells"
    if refined_force is not None:
        fields, arrays = refined_force
        predicted = drag_lift(arrays["surface/area"], arrays["surface/area_norm"], fields, ref, **kw)
        integrated_on = f"the given surface refined to {len(arrays['surface/area']):,} {ckpt.surface_location}"
    out: dict[str, Any] = {
        "cd": predicted[0],
        "cl": predicted[1],
        "integrated_on": integrated_on,
        "cd_mesh": on_mesh[0],
        "cl_mesh": on_mesh[1],
        "reference_area": area,
        "reference_area_source": area_source,
        "reference_velocity": velocity,
        "density": density,
    }
    # The solver's own fields on this mesh, where the input carries them (attached as <field>_true).
    names = [ref.get("pressure_field"), ref.get("wall_shear_field")]
    true = {f: np.asarray(data[f"{f}_true"]) for f in names if f and f in surface_pred and f"{f}_true" in data.keys()}  # noqa: SIM118
    if len(true) == len([f for f in names if f and f in surface_pred]):
        cd_t, cl_t = drag_lift(*shares, true, ref, **kw)
        out.update({"cd_true_fields": cd_t, "cl_true_fields": cl_t})
    return out


def _params_beside(geometry: Path) -> dict[str, Any]:
    path = geometry.parent / "params.json"
    try:
        params = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}
    return params if isinstance(params, dict) else {}


def _preview(surface: Any, field_name: str, path: Path, at_cells: bool) -> Path:
    return render_png(
        surface,
        path,
        scalars=field_name,
        preference="cell" if at_cells else "point",
        cmap="coolwarm",
        scalar_bar_args={"title": f"predicted {field_name}"},
    )
