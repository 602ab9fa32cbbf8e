"""``mspt predict``: a new design's surface in, predicted fields (VTK), drag and lift out.

The geometry (STL/OBJ/PLY or a VTK surface) gets the same features as the
training data; the surface fields are predicted on it and the volume fields on
a given volume mesh or on points sampled around the body. Every mesh goes
through streaming inference, so meshes far larger than a training sample fit.
With anchor-query MSPT (``model.anchors``, the default) the network reads anchors
drawn from the body alone and every mesh point is a query: the prediction at a
point does not depend on which other points are asked about.

:func:`predict_geometry` runs four phases: read the geometry (:func:`read_body`), predict the fields
on it (:func:`predict_fields`), drag and lift (:func:`predicted_forces`, on the surface refined to
``FORCE_POINTS`` for an anchor-query model), then write the VTK files, the JSON and the preview.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msptcli.checkpoint import Checkpoint
from msptcli.data.anchors import geometry_anchors, seeds_of
from msptcli.data.cases import find_params
from msptcli.data.deploy import surface_part
from msptcli.data.features import cloud_inputs, cloud_part, to_physical
from msptcli.data.openfoam import case_folder, read_mesh_or_case, refuse_output_in_case
from msptcli.data.params import is_number, positive_param, read_params
from msptcli.data.prepare_case import volume_arrays
from msptcli.data.template import place_template
from msptcli.errors import InvalidInputError
from msptcli.evaluate import drag_lift, relative_l2
from msptcli.geometry.faces import refined
from msptcli.geometry.grid import GridSize, body_grid, fill_grid, grid_summary, rescaled
from msptcli.io.atomic import write_json
from msptcli.io.guard import check_outputs
from msptcli.io.meshes import as_polydata, is_surface, write_mesh
from msptcli.io.render import render_png
from msptcli.model import Network
from msptcli.physics.force_notes import force_notes, median_area_note
from msptcli.runtime import DEFAULT_CHUNK_POINTS, predict_clouds, predict_queries_averaged
from msptcli.trust.calibrate import draw_configs, mean_and_spread
from msptcli.trust.check import ShapeCheck, body_features, check_shape, volume_problem
from msptcli.trust.latent import check_latent, design_latent
from msptcli.trust.uncertainty import DRAWS, calibrated_std

#: Volume points sampled around the body when no volume mesh is given.
DEFAULT_VOLUME_POINTS = 50_000
#: The source of a reference area that is the training cases' median (predict's last resort).
MEDIAN_AREA = "median of the training cases"
#: Drag and lift of an anchor-query model are integrated on the surface refined to at least this many points.
FORCE_POINTS = 30_000  # the 2,048-point example STL reaches 32,738 after two subdivisions (not 130,946 after three)

#: Called with (phase, done, total) as a long phase goes: "distances" (volume points), "queries" (queries of
#: all anchor draws), "forces" (queries on the refined surface), "writing" (bytes of array data).
Progress = Callable[[str, int, int], None]
#: A surface of more cells than this is rendered coarsened for the preview (geometry clustered, ``_preview``).
PREVIEW_CELLS = 1_000_000

#: An anchor draw as the inference takes it: ([anchor points (n, 3)], [anchor inputs (n, 11)]), one cloud.
Draw = tuple[list[np.ndarray], list[np.ndarray]]
#: Fields by part and name in physical units: {'surface': {field: (n, k)}, 'volume': {field: (m, k)}}.
Fields = dict[str, dict[str, np.ndarray]]


@dataclass(frozen=True)
class Coefficients:
    """Drag and lift of a prediction and what they were computed from: the ``coefficients`` of its JSON."""

    cd: float  # of the predicted fields, integrated on ``integrated_on``
    cl: float
    integrated_on: str  # the given surface's points or cells, or the given surface refined to FORCE_POINTS
    cd_mesh: float  # of the predicted fields on the given mesh (the quadrature of the solver's fields there)
    cl_mesh: float
    reference_area: float
    reference_area_source: str  # the option, the params file's key, the config or the training cases' median
    reference_velocity: float
    density: float
    cd_true_fields: float | None = None  # of the input's own (solver) fields on the given mesh, where it has them
    cl_true_fields: float | None = None
    cd_std: float | None = None  # over anchor draws, calibrated where the checkpoint is (trust/uncertainty.py)
    cl_std: float | None = None
    uncertainty: str | None = None  # how cd_std/cl_std and the <field>_std arrays were made

    @property
    def refined(self) -> bool:
        """Integrated on the refined surface, not on the given mesh (as the input's own fields are)."""
        return self.integrated_on.startswith("the given surface refined")

    def to_json(self) -> dict[str, Any]:
        """The JSON's ``coefficients``: every field, the true-field ones only where the input had the fields."""
        optional = ("_true_fields", "_std", "uncertainty")
        return {k: v for k, v in asdict(self).items() if v is not None or not k.endswith(optional)}


@dataclass
class Prediction:
    name: str
    files: list[Path]
    coefficients: Coefficients | None = None  # None: no reference area, or no pressure predicted
    errors: dict[str, float] = field(default_factory=dict)  # relative L2 per field, where the input had it
    solver: dict[str, float] = field(default_factory=dict)  # the solver's values from the case's params, if any
    trust: ShapeCheck | None = None  # the body against the training bodies (None: the checkpoint has no record)
    scale: float = 1.0  # the factor the geometry's coordinates were multiplied by (--units, --scale)
    warnings: list[str] = field(default_factory=list)  # where drag and lift rest on a default or are missing
    points: int = 0  # surface and volume points predicted
    seconds: float = 0.0  # from the call to the meshes written (reading, features, queries, forces, writing)

    @property
    def points_per_second(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else float("nan")


@dataclass
class Body:
    """A geometry read for prediction (:func:`read_body`)."""

    surface: Any  # pyvista.PolyData, as read; the surface fields are written on it
    at_cells: bool  # the surface fields at its cells (else at its points), as the checkpoint's
    arrays: dict[str, np.ndarray]  # surface/{points, normals, area, area_norm} and volume/{points, distance, direction}
    volume: Any | None = None  # the mesh the volume fields are written on; None: no volume asked

    @property
    def num_surface(self) -> int:
        return len(self.arrays["surface/points"])

    @property
    def num_volume(self) -> int:
        return len(self.arrays["volume/points"]) if self.volume is not None else 0

    def data(self) -> dict[str, Any]:
        """Per part, the mesh and the data arrays its fields are read from and written to."""
        out = {"surface": (self.surface, self.surface.cell_data if self.at_cells else self.surface.point_data)}
        return out if self.volume is None else {**out, "volume": (self.volume, self.volume.point_data)}


def output_names(geometries: Sequence[Path], *, params_file: str | None = "params.json") -> list[str]:
    """The name of each geometry's outputs: its stem, or ``<folder>_<stem>`` when stems repeat or the
    file sits in a case folder (beside its params file, ``data.params_file``), whose files have generic names.
    An OpenFOAM case (its folder or marker file) is named by its folder."""
    named = [(f.parent, f.name, True) if (f := case_folder(g)) else (g.parent, g.stem, False) for g in geometries]
    stems = [stem for _, stem, _ in named]
    return [
        stem
        if stems.count(stem) == 1 and (foam or find_params(parent, params_file) is None)
        else f"{parent.name}_{stem}"
        for parent, stem, foam in named
    ]


def predict_geometry(
    ckpt: Checkpoint,
    geometry: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    name: str | None = None,
    volume_mesh: str | os.PathLike[str] | None = None,
    volume_points: int | None = None,
    volume_grid: GridSize | None = None,
    reference_area: float | None = None,
    reference_velocity: float | None = None,
    density: float | None = None,
    device: torch.device | None = None,
    chunk_points: int = DEFAULT_CHUNK_POINTS,
    preview: bool = True,
    scale: float = 1.0,
    force: bool = False,
    uncertainty: int = DRAWS,
    progress: Progress | None = None,
) -> Prediction:
    """Predict every trained field on ``geometry``; write ``<name>.vtp``, ``<name>_volume.vtu``, ``.json``, ``.png``.

    Every input is checked and every output path chosen before the first file is written. The geometry (and
    ``volume_mesh``) is multiplied by ``scale`` before anything is computed (``--units``, ``--scale``); the
    written meshes keep the input's own coordinates. A body of other units than the training bodies (the
    :func:`~msptcli.trust.check.check_shape` of the checkpoint's record) is refused unless ``force``. With an
    anchor-query model and ``uncertainty`` >= 2, that many anchor draws give every field a standard deviation
    (``<field>_std``) and Cd/Cl theirs (``trust/uncertainty.py``); the fields themselves are the same either way.
    With ``volume_grid`` (and volume fields trained), the volume fields on a structured grid too
    (``<name>_grid.vti``, :func:`predict_grid`). ``progress(phase, done, total)`` follows the long phases.
    """
    started = time.perf_counter()
    geometry, out = Path(geometry), Path(out_dir)
    name = name or geometry.stem
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _check_positive({"--reference-area": reference_area, "--reference-velocity": reference_velocity,
                     "--density": density})  # fmt: skip
    inputs_given = (geometry,) if volume_mesh is None else (geometry, Path(volume_mesh))
    with_volume = bool(ckpt.channels.volume) and (volume_mesh is not None or volume_points != 0)
    files = _output_files(out, name, with_volume=with_volume)
    if volume_grid is not None and ckpt.channels.volume:
        files["grid"] = out / f"{name}_grid.vti"
    check_outputs(out, files.values(), inputs=inputs_given + ((ckpt.path,) if ckpt.path else ()))
    refuse_output_in_case(out, inputs_given)

    # --- read: the surface, the volume points, the case's params ---------------------------------------------
    body = read_body(ckpt, geometry, volume_mesh=volume_mesh, volume_points=volume_points, with_volume=with_volume,
                     scale=scale, progress=_phase(progress, "distances"))  # fmt: skip
    axes = dict(flow=ckpt.reference.flow_direction, up=ckpt.reference.up_direction)  # the training run's
    trust = check_shape(ckpt.shapes, body_features(body.arrays, **axes)) if ckpt.shapes is not None else None
    if trust is not None and trust.units is not None and not force:
        raise InvalidInputError(f"{geometry}: {trust.units}")
    if volume_mesh is not None and body.volume is not None and not force:
        mismatch = volume_problem(body.arrays["surface/points"], np.asarray(body.volume.points))
        if mismatch is not None:
            raise InvalidInputError(f"{volume_mesh}: {mismatch}; or pass --force to predict anyway")
    params_file = find_params(case_folder(geometry) or geometry.parent, ckpt.config.data.params_file)
    params = read_params(params_file)
    area = _reference_area(ckpt, params, reference_area, params_file)

    # --- the fields, then drag and lift ------------------------------------------------------------------------
    model = ckpt.model.to(device)
    run = dict(device=device, bf16=ckpt.config.train.bf16, chunk_points=chunk_points)
    own = ckpt.model.config.anchors.draws if ckpt.model.config.anchors is not None else 0
    spread_draws = uncertainty if own and uncertainty >= 2 else 0
    draws = anchor_draws(ckpt, body.surface, spread_draws)
    # a surface fine enough for the forces is queried once: its fields (and each draw's) are the refined surface's
    reuse = draws is not None and area is not None and refines_to_itself(body.surface)
    surface_draws: list[dict[str, np.ndarray]] | None = [] if reuse and spread_draws else None
    fields, raw = predict_fields(model, ckpt, body, draws, own=own if spread_draws else None,
                                 progress=_phase(progress, "queries"), surface_draws=surface_draws, **run)  # fmt: skip
    grid = predict_grid(model, ckpt, body, draws, volume_grid, own=own if spread_draws else None, **run) \
        if "grid" in files and volume_grid is not None else None  # fmt: skip
    if trust is not None and ckpt.latents is not None and draws is not None:
        (a_points,), (a_features,) = draws[0]
        latent = design_latent(model, a_points, a_features, device=device, bf16=ckpt.config.train.bf16)
        trust.add_model(check_latent(ckpt.latents, latent))
    true = {part: _true_fields(data, fields[part]) for part, (_, data) in body.data().items()}
    coefficients = None
    if area is not None:
        velocity = reference_velocity if reference_velocity is not None else ckpt.reference.velocity
        rho = density if density is not None else ckpt.reference.density
        if reuse:
            forces = ({k: v for k, v in body.arrays.items() if k.startswith("surface/")}, fields["surface"],
                      surface_draws)  # fmt: skip
        elif draws is not None:
            forces = force_surface(model, ckpt, body.surface, draws, own=own if spread_draws else None,
                                   progress=_phase(progress, "forces"), **run)  # fmt: skip
        else:
            forces = None
        coefficients = predicted_forces(ckpt, body, fields, true["surface"], area, velocity, rho, forces)
        if coefficients is not None and forces is not None and forces[2] is not None:
            distance = trust.model.score if trust is not None and trust.model is not None else None
            coefficients = _with_spread(ckpt, coefficients, forces[0], forces[2], area, velocity, rho, distance)

    # --- outputs -----------------------------------------------------------------------------------------
    result = Prediction(name=name, files=[], coefficients=coefficients, trust=trust, scale=scale,
                        points=body.num_surface + body.num_volume)  # fmt: skip
    result.warnings = _force_warnings(ckpt, coefficients, reference_velocity is not None, params_file)
    result.solver = {k: float(params[k]) for k in ("Cd", "Cl", "Cd_fields", "Cl_fields") if is_number(params.get(k))}
    for part, (mesh, data) in body.data().items():
        result.errors.update(_attach(data, fields[part], true[part], part))
        if raw is not None:
            _attach_spread(ckpt, data, raw[part], part)
        if scale != 1.0:  # back to the input's coordinates
            mesh.points = np.asarray(mesh.points) / scale
        result.files.append(write_prediction(mesh, files[part], inputs=inputs_given,
                                             progress=_phase(progress, f"writing {files[part].name}")))  # fmt: skip
    result.seconds = time.perf_counter() - started  # all but the JSON and the preview
    summary = _summary(ckpt, body, result, geometry)
    if grid is not None:
        result.files.append(write_mesh(rescaled(grid, scale), files["grid"], inputs=inputs_given))
        summary["volume_grid"] = grid_summary(grid, files["grid"])
    write_json(files["json"], summary)
    result.files.append(files["json"])
    pressure = ckpt.reference.pressure_field
    if preview and pressure and pressure in fields["surface"]:
        result.files.append(_preview(body.surface, pressure, files["png"], body.at_cells))
    return result


def read_body(
    ckpt: Checkpoint,
    geometry: Path,
    *,
    volume_mesh: str | os.PathLike[str] | None,
    volume_points: int | None,
    with_volume: bool,
    scale: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> Body:
    """The surface of ``geometry`` with its points, outward normals and area shares (at the checkpoint's surface
    location), and with ``with_volume`` the volume points: ``volume_mesh``'s, else placed around the body
    (:func:`_volume_points`), with their distance and direction to the body; every coordinate times ``scale``.
    ``progress(done, total)``: volume points whose distance is known."""
    foam = ckpt.config.data.openfoam  # how an OpenFOAM case given as the geometry or volume is read
    mesh = _scaled(read_mesh_or_case(geometry, part="surface", config=foam), scale)
    if not is_surface(mesh):
        raise InvalidInputError(f"{geometry}: is a volume mesh; pass the body's surface (STL/OBJ/PLY/VTP)")
    surface = as_polydata(mesh)
    if surface.n_cells == 0:
        raise InvalidInputError(f"{geometry}: has points but no faces; a surface mesh is needed")
    at_cells = ckpt.surface_location == "cells"
    body = Body(surface=surface, at_cells=at_cells, arrays=_surface_arrays(ckpt, surface, source=geometry))
    if with_volume:
        if volume_mesh is not None:
            body.volume = _scaled(read_mesh_or_case(volume_mesh, part="volume", config=foam), scale)
            points = np.asarray(body.volume.points, dtype=np.float64)
        else:
            import pyvista as pv

            points = _volume_points(ckpt, surface, volume_points)
            body.volume = pv.PolyData(points).cast_to_unstructured_grid()
        body.arrays.update(volume_arrays(points, surface, source=geometry, progress=progress))
    return body


def _scaled(mesh: Any, scale: float) -> Any:
    """``mesh`` (a copy read from a file: nothing the user gave is changed) with its points times ``scale``."""
    if scale != 1.0:
        mesh.points = np.asarray(mesh.points, dtype=np.float64) * scale
    return mesh


def predict_grid(
    model: Network, ckpt: Checkpoint, body: Body, draws: list[Draw] | None, size: GridSize, *,
    own: int | None = None, **run: Any,
) -> Any:
    """The volume fields on a structured grid around ``body`` (``geometry/grid.py``): a pyvista ImageData whose
    fluid points are volume queries like any volume points (distance and direction to the body), with ``own`` (as
    :func:`predict_fields`) their ``<field>_std`` too; the points in the body masked. An anchor-query model queries
    the grid points alone (the same values as the same points given with ``--volume``); a model without anchors
    runs the body's surface and the grid points through its blocks."""
    grid, fluid = body_grid(body.surface, size, ckpt.volume_template)
    rows = slice(None) if draws is None else slice(0, 0)  # no surface queries where the queries are independent
    arrays = {k: v[rows] for k, v in body.arrays.items() if k.startswith("surface/")}
    arrays.update(volume_arrays(np.asarray(grid.points, dtype=np.float64)[fluid], body.surface))
    on_grid = Body(surface=body.surface, at_cells=body.at_cells, arrays=arrays, volume=grid)
    fields, raw = predict_fields(model, ckpt, on_grid, draws, own=own, **run)
    values = {fname: _written(v) for fname, v in fields["volume"].items()}
    if raw is not None:
        _attach_spread(ckpt, values, raw["volume"], "volume")
    return fill_grid(grid, fluid, values)


def anchor_draws(ckpt: Checkpoint, surface: Any, spread: int = 0) -> list[Draw] | None:
    """The anchors of an anchor-query model, drawn from the body alone (``anchors.draws`` seeded draws, or with
    ``spread`` >= 2 that many and at least those); None for a model that runs every point through its blocks."""
    anchors = ckpt.model.config.anchors
    if anchors is None:
        return None
    configs = draw_configs(anchors, spread) if spread >= 2 else seeds_of(anchors)
    draws = [geometry_anchors(surface, ckpt.stats, draw, ckpt.volume_template) for draw in configs]
    return [([points], [inputs]) for points, inputs in draws]


def predict_fields(
    model: Network, ckpt: Checkpoint, body: Body, draws: list[Draw] | None, *, own: int | None = None,
    progress: Callable[[int, int], None] | None = None, surface_draws: list[dict[str, np.ndarray]] | None = None,
    **run: Any,
) -> tuple[Fields, Fields | None]:
    """The fields on the cloud [surface ; volume] of ``body``, in physical units: every point a query of the
    anchor ``draws`` (their mean), or (``draws`` None) the whole cloud through the blocks. With ``own``, the mean of
    the first ``own`` draws and the spread of all of them (:func:`~msptcli.trust.calibrate.mean_and_spread`).
    ``progress(done, total)``: queries answered, over all draws. ``surface_draws`` (with ``own``): a list that
    each draw's surface fields are appended to."""
    volume = cloud_part(body.arrays, "volume") if body.volume is not None else None
    points, inputs = cloud_inputs(ckpt.stats, cloud_part(body.arrays, "surface"), volume)
    if draws is None:
        (pred,) = predict_clouds(model, [points], [inputs], **run)
        return to_physical(ckpt.stats, ckpt.channels, pred, body.num_surface), None
    if own is None:
        (pred,) = predict_queries_averaged(model, draws, [points], [inputs], progress=progress, **run)
        return to_physical(ckpt.stats, ckpt.channels, pred, body.num_surface), None
    where = {"surface": body.arrays["surface/points"],
             "volume": body.arrays["volume/points"] if body.volume is not None else np.zeros((0, 3))}  # fmt: skip
    each = _per_draw(model, ckpt, draws, points, inputs, body.num_surface, progress=progress, **run)
    if surface_draws is not None:
        surface_draws.extend(e["surface"] for e in each)
    return mean_and_spread(each, own, where)


def force_surface(
    model: Network, ckpt: Checkpoint, surface: Any, draws: list[Draw], *, own: int | None = None,
    progress: Callable[[int, int], None] | None = None, **run: Any,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], list[dict[str, np.ndarray]] | None]:
    """The surface refined to at least ``FORCE_POINTS`` points (its arrays, as :func:`read_body`'s), the
    surface fields predicted there, as queries of the same anchor ``draws``, and with ``own`` (the fields the
    mean of the first ``own`` draws) every draw's fields.

    A query's prediction does not depend on the other queries, so the fields there are the same function of
    position as on the given mesh; integrated on finer faces, drag and lift no longer depend on how coarsely
    the body was tessellated (a 2k-point STL and the 11k-point CFD surface of one body agree).
    """
    arrays = _surface_arrays(ckpt, refined(surface, FORCE_POINTS))
    points, inputs = cloud_inputs(ckpt.stats, cloud_part(arrays, "surface"))
    if own is None:
        (pred,) = predict_queries_averaged(model, draws, [points], [inputs], progress=progress, **run)
        return arrays, to_physical(ckpt.stats, ckpt.channels, pred, len(pred))["surface"], None
    each = _per_draw(model, ckpt, draws, points, inputs, len(points), progress=progress, **run)
    mean, _ = mean_and_spread(each, own)
    return arrays, mean["surface"], [e["surface"] for e in each]


def refines_to_itself(surface: Any) -> bool:
    """Whether ``surface`` is its own refinement for the forces (``refined(surface, FORCE_POINTS)``): triangles
    only and at least ``FORCE_POINTS`` points, so nothing is cut (:func:`force_surface`)."""
    return surface.n_points >= FORCE_POINTS and bool(surface.is_all_triangles)


def _per_draw(
    model: Network, ckpt: Checkpoint, draws: list[Draw], points: np.ndarray, inputs: np.ndarray, num_surface: int,
    progress: Callable[[int, int], None] | None = None, **run: Any,
) -> list[Fields]:
    """Every draw's own prediction of the queries, in physical units (the first ``num_surface`` rows surface)."""
    out = []
    for k, d in enumerate(draws):
        each = None if progress is None else _of_draw(progress, k, len(draws))
        (pred,) = predict_queries_averaged(model, [d], [points], [inputs], progress=each, **run)
        out.append(to_physical(ckpt.stats, ckpt.channels, pred, num_surface))
        del pred
    return out


def _of_draw(progress: Callable[[int, int], None], draw: int, draws: int) -> Callable[[int, int], None]:
    return lambda done, total: progress(draw * total + done, draws * total)


def predicted_forces(
    ckpt: Checkpoint,
    body: Body,
    fields: Fields,
    true: dict[str, np.ndarray],
    area: tuple[float, str],
    velocity: float,
    density: float,
    refined_surface: tuple[dict[str, np.ndarray], dict[str, np.ndarray], Any] | None = None,
) -> Coefficients | None:
    """Drag and lift of the predicted fields: on ``refined_surface`` (its arrays and fields, :func:`force_surface`)
    where given, else on the given mesh; ``cd_mesh``/``cl_mesh`` always on the given mesh, as the input's own
    fields there (``true``, where it has every force field). None where no pressure is predicted."""
    ref, a = ckpt.reference, body.arrays
    kw = dict(ref_area=area[0], velocity=velocity, density=density)
    on_mesh = drag_lift(a["surface/area"], a["surface/area_norm"], fields["surface"], ref, **kw)
    if on_mesh is None:
        return None
    predicted, integrated_on = on_mesh, f"the given surface's {ckpt.surface_location}"
    if refined_surface is not None:
        fine, fine_fields = refined_surface[0], refined_surface[1]
        predicted = drag_lift(fine["surface/area"], fine["surface/area_norm"], fine_fields, ref, **kw)
        integrated_on = f"the given surface refined to {len(fine['surface/area']):,} {ckpt.surface_location}"
    assert predicted is not None  # the refined surface's fields are the mesh's
    names = [f for f in (ref.pressure_field, ref.wall_shear_field) if f and f in fields["surface"]]
    on_true = drag_lift(a["surface/area"], a["surface/area_norm"], true, ref, **kw) if set(names) <= set(true) else None
    return Coefficients(
        cd=predicted[0], cl=predicted[1], integrated_on=integrated_on, cd_mesh=on_mesh[0], cl_mesh=on_mesh[1],
        reference_area=area[0], reference_area_source=area[1], reference_velocity=velocity, density=density,
        cd_true_fields=None if on_true is None else on_true[0], cl_true_fields=None if on_true is None else on_true[1],
    )  # fmt: skip


def _with_spread(
    ckpt: Checkpoint, c: Coefficients, fine: dict[str, np.ndarray], each: list[dict[str, np.ndarray]],
    area: tuple[float, str], velocity: float, density: float, distance: float | None = None,
) -> Coefficients:
    """``c`` with Cd/Cl standard deviations: the spread of the draws' own Cd and Cl on the refined surface,
    calibrated by the checkpoint's factors where it has them; with factors over the latent distance
    (``trust/uncertainty.py``), the design's ``distance`` times them."""
    kw = dict(ref_area=area[0], velocity=velocity, density=density)
    per_draw = [drag_lift(fine["surface/area"], fine["surface/area_norm"], e, ckpt.reference, **kw) for e in each]
    cd, cl = (float(np.std([d[i] for d in per_draw if d is not None], ddof=1)) for i in (0, 1))
    cal = ckpt.calibration
    how = (f"calibrated on {cal.bodies} validation bodies: ± 1.645 std is the 90% interval" if cal is not None else
           "uncalibrated (no validation bodies): the raw spread")  # fmt: skip
    factors = (cal.cd, cal.cl) if cal is not None else (None, None)
    if cal is not None and cal.forces_from == "latent" and distance is not None:
        how += "; Cd, Cl: the design's latent distance to the training designs times their factors"
        cd = cl = distance
    elif cal is not None and cal.forces_from != "bodies":
        why = "fewer than 5 validation bodies" if cal.forces_from == "none" else "no latent distance"
        how += f"; Cd, Cl uncalibrated ({why}): their raw spread"
        factors = (None, None)
    return replace(c, cd_std=float(calibrated_std(np.array(cd), factors[0])),
                   cl_std=float(calibrated_std(np.array(cl), factors[1])),
                   uncertainty=f"{len(each)} anchor draws, {how}")  # fmt: skip


def _attach_spread(ckpt: Checkpoint, data: Any, raw: dict[str, np.ndarray], part: str) -> None:
    """Store ``<field>_std`` beside every predicted field: the draws' spread, calibrated where the checkpoint is."""
    cal = ckpt.calibration
    for fname, values in raw.items():
        factor = cal.fields.get(f"{part}/{fname}") if cal is not None else None
        data[f"{fname}_std"] = _written(calibrated_std(values, factor))


def _check_positive(options: dict[str, float | None]) -> None:
    """Refuse a reference value given as an option that is not a positive number."""
    for option, value in options.items():
        if value is not None and not (np.isfinite(value) and value > 0):
            raise InvalidInputError(f"{option} must be a positive number, got {value}")


def _output_files(out: Path, name: str, *, with_volume: bool) -> dict[str, Path]:
    files = {"surface": out / f"{name}.vtp", "json": out / f"{name}.json", "png": out / f"{name}.png"}
    if with_volume:
        files["volume"] = out / f"{name}_volume.vtu"
    return files


def _surface_arrays(ckpt: Checkpoint, surface: Any, source: Path | None = None) -> dict[str, np.ndarray]:
    """Points, outward normals and area shares of ``surface`` at the checkpoint's surface location (as an
    exported graph's inputs take them, ``data/deploy.py``)."""
    return surface_part(surface, ckpt.surface_location, source)


def _volume_points(ckpt: Checkpoint, surface: Any, count: int | None) -> np.ndarray:
    """Volume points for a geometry without a volume mesh: by default the checkpoint's template placed around
    this body (``data/template.py``); with ``count``, that many points uniform in a box around the body."""
    from msptcli.geometry.sampling import sample_points_around

    if count is not None or ckpt.volume_template is None:
        return sample_points_around(surface, count or DEFAULT_VOLUME_POINTS, seed=0)
    return place_template(ckpt.volume_template, surface)


def _true_fields(data: Any, predicted: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The input's own values of the predicted fields (float32, shaped as written), where it has them finite."""
    true = {}
    for fname, values in predicted.items():
        if fname in data.keys():  # noqa: SIM118 (pyvista's data arrays)
            values = np.asarray(data[fname], dtype=np.float32)
            if values.shape == _written(predicted[fname]).shape and np.isfinite(values).all():
                true[fname] = values
    return true


def _attach(data: Any, predicted: dict[str, np.ndarray], true: dict[str, np.ndarray], part: str) -> dict[str, float]:
    """Store predicted arrays under the trained names; where the input had the true field, add
    ``<field>_true`` and ``<field>_error`` and return the relative L2."""
    errors = {}
    for fname, values in predicted.items():
        values = _written(values)
        if fname in true:
            data[f"{fname}_true"] = true[fname]
            data[f"{fname}_error"] = values - true[fname]
            errors[f"{part}/{fname}"] = relative_l2(values, true[fname])
        data[fname] = values
    return errors


def _written(values: np.ndarray) -> np.ndarray:
    """A field as written to VTK: (n,) for one component, else (n, k)."""
    return values[:, 0] if values.shape[1] == 1 else values


def _reference_area(
    ckpt: Checkpoint, params: dict[str, Any], given: float | None, params_file: Path | None
) -> tuple[float, str] | None:
    """A_ref and where it comes from: the option, else the case's params file beside the geometry, else the config,
    else the median of the training cases; None when nothing gives one and no pressure is predicted."""
    ref = ckpt.reference
    if given is not None:
        return given, "--reference-area"
    from_params = positive_param(params, ref.area_key, params_file)
    if from_params is not None and params_file is not None:
        return from_params, f"{params_file.name} {ref.area_key}"
    if ref.reference_area:
        return float(ref.reference_area), "config data.reference_area"
    if ref.training_reference_areas:
        return float(statistics.median(ref.training_reference_areas)), MEDIAN_AREA
    if ref.pressure_field in dict(ckpt.channels.surface):
        raise InvalidInputError("no reference area is known for drag and lift: pass --reference-area")
    return None


def _force_warnings(
    ckpt: Checkpoint, coefficients: Coefficients | None, velocity_option: bool, params_file: Path | None
) -> list[str]:
    """One line for each way this prediction's drag and lift rest on a default or are missing
    (``physics/force_notes.py``): the checkpoint's fields and velocity, and a median reference area."""
    ref = ckpt.reference
    notes = force_notes(surface_fields=[n for n, _ in ckpt.channels.surface], pressure_field=ref.pressure_field,
                        wall_shear_field=ref.wall_shear_field,
                        velocity_given=velocity_option or ckpt.config.data.reference_velocity is not None,
                        velocity_option="--reference-velocity")  # fmt: skip
    if coefficients is not None and coefficients.reference_area_source == MEDIAN_AREA:
        name = params_file.name if params_file is not None else ckpt.config.data.params_file
        notes.append(median_area_note(coefficients.reference_area, area_key=ref.area_key, params_file=name))
    return notes


def _summary(ckpt: Checkpoint, body: Body, result: Prediction, geometry: Path) -> dict[str, Any]:
    """The JSON written beside the meshes."""
    return {
        "name": result.name,
        "geometry": str(geometry),
        "checkpoint_epoch": ckpt.epoch,
        "num_surface": body.num_surface,
        "num_volume": body.num_volume,
        "num_points": body.num_surface + body.num_volume,
        "coefficients": {} if result.coefficients is None else result.coefficients.to_json(),
        "relative_l2": result.errors,
        "solver": result.solver,
        "fields": {p: [n for n, _ in getattr(ckpt.channels, p)] for p in ("surface", "volume")},
        "scale": result.scale,
        "seconds": round(result.seconds, 3),  # reading to the meshes written, this machine
        "points_per_second": round(result.points_per_second, 1),
        "trust": result.trust.to_json() if result.trust is not None else {
            "verdict": "unchecked", "why": "the checkpoint records no training bodies (a transient or older run)"},
    }  # fmt: skip


def _preview(surface: Any, field_name: str, path: Path, at_cells: bool) -> Path:
    """The surface coloured by ``field_name``: as it is up to ``PREVIEW_CELLS`` cells, else its geometry clustered
    to a few hundred thousand cells (each keeping one of its cells' value; a preview needs no finer faces)."""
    where, title = "cell" if at_cells else "point", {"title": f"predicted {field_name}"}
    if surface.n_cells > PREVIEW_CELLS:
        surface, where = preview_surface(surface, field_name, at_cells=at_cells), "cell"
    return render_png(surface, path, scalars=field_name, preference=where, cmap="coolwarm", scalar_bar_args=title)


def preview_surface(surface: Any, field_name: str, *, at_cells: bool, divisions: int = 400) -> Any:
    """``surface`` coarsened for a picture: vertices merged in a grid of about ``divisions`` bins a side
    (VTK's quadric clustering), each face coloured by ``field_name`` at one of the faces it replaces."""
    import pyvista as pv
    import vtk

    lean = pv.PolyData()
    lean.ShallowCopy(surface)
    lean.clear_data()  # the one field shown, not every array
    if at_cells:
        lean.cell_data[field_name] = surface.cell_data[field_name]
    else:
        lean.point_data[field_name] = surface.point_data[field_name]
        lean = lean.point_data_to_cell_data(pass_point_data=False)
    clustering = vtk.vtkQuadricClustering()
    clustering.SetInputData(lean)
    clustering.SetNumberOfDivisions(divisions, divisions, divisions)
    clustering.AutoAdjustNumberOfDivisionsOn()
    clustering.CopyCellDataOn()
    clustering.Update()
    return pv.wrap(clustering.GetOutput())


def write_prediction(
    mesh: Any, path: Path, *, inputs: tuple[Path, ...], progress: Callable[[int, int], None] | None = None
) -> Path:
    """A predicted mesh streamed to its file (``io/vtkxml_write.py``), raw: not the whole file in memory, and
    quicker than zlib; a mesh the streaming writer cannot write (polyhedra, a ``.vtk`` path) through ``write_mesh``."""
    from msptcli.io.vtkxml_write import streamable, write_streamed

    if streamable(mesh) and path.suffix.lower() == (".vtp" if is_polydata(mesh) else ".vtu"):
        return write_streamed(mesh, path, inputs=inputs, progress=progress)
    return write_mesh(mesh, path, inputs=inputs)


def is_polydata(mesh: Any) -> bool:
    import pyvista as pv

    return isinstance(mesh, pv.PolyData)


def _phase(progress: Progress | None, phase: str) -> Callable[[int, int], None] | None:
    """``progress`` of one phase: called with (done, total)."""
    return None if progress is None else lambda done, total: progress(phase, done, total)
