"""``mspt export``: a run's checkpoint to a portable file, verified in its own runtime, with a sidecar.

The sidecar ``<file>.json`` holds what deployment code needs around the graph:
the input features and their normalisation, the output channels and their
de-normalisation, and the patch rule (see docs/export.md).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import numpy as np

from msptcli.checkpoint import Checkpoint, load_checkpoint
from msptcli.data.transient import StepColumns, condition_names, step_columns
from msptcli.errors import InvalidInputError
from msptcli.io.atomic import atomic_output
from msptcli.io.guard import check_outputs
from msptcli.model.config import ModelConfig
from msptcli.runtime.portable import FORMATS, Format, export_model, random_example, verify_export

#: Cloud sizes of the verification batch: several clouds, padded patches, other sizes than the trace.
VERIFY_SIZES = (3000, 1234, 77)
#: The sidecar's ``inputs.order`` and ``deploy`` entries.
ORDER_CLOUD = "rows in ball-tree order (msptcli.geometry.ball_tree_order) of the cloud [surface ; volume]"
ORDER_ANCHORS = (
    "features: the anchors' inputs in their first ball tree's order, the tree built on coordinates turned by "
    "msptcli.model.anchors.FIRST_ROTATION (msptcli.model.anchors.pack_anchors; a plain ball_tree_order gives other "
    "patches and wrong fields); query_features: the inputs of the cloud [surface ; volume], in chunks, any order"
)
DEPLOY = (
    "msptcli.data.deploy.graph_inputs(FILE, surface, volume_points) gives the graph's input dicts for a geometry "
    "(anchors.draws anchor draws, queries in chunks); graph_fields(FILE, runs, outputs) the fields in physical "
    "units, the draws averaged, in the points' own order (docs/export.md)"
)


def format_of(output: str | os.PathLike[str], fmt: str | None = None) -> Format:
    """The export format: ``fmt`` if given, else from the suffix (``.pt``/``.ts``: TorchScript, else ONNX)."""
    if fmt is None:
        return "torchscript" if Path(output).suffix.lower() in (".pt", ".ts") else "onnx"
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return fmt  # type: ignore[return-value]


def export_run(
    run: str | os.PathLike[str], output: str | os.PathLike[str], *, fmt: Format | None = None
) -> tuple[Path, Format, float]:
    """Export the checkpoint of ``run`` to ``output``; return the path, the format and the verified max |difference|.

    The graph is written under a temporary name and verified there; ``output`` and its sidecar appear only
    when the exported model agrees with PyTorch.
    """
    fmt = format_of(output, fmt)
    ckpt = load_checkpoint(run)
    sidecar = Path(f"{output}.json")
    checkpoint = () if ckpt.path is None else (ckpt.path,)
    check_outputs(
        None, [Path(output), sidecar], inputs=checkpoint, input_name="the checkpoint being exported", option="-o"
    )
    model = ckpt.model.float().eval()
    with atomic_output(output) as tmp:
        export_model(model, tmp, fmt=fmt)
        diff = verify_export(tmp, model, random_example(model, VERIFY_SIZES, seed=1))
    with atomic_output(sidecar) as tmp:
        tmp.write_text(json.dumps(_sidecar(ckpt), indent=1))
    return Path(output), fmt, diff


def _sidecar(ckpt: Checkpoint) -> dict:
    anchors = {}
    if ckpt.model.config.anchors is not None:
        template = ckpt.volume_template
        anchors = {
            "anchors": {
                "rule": "msptcli.data.anchors.geometry_anchors(surface, stats, model_config.anchors, volume_template): "
                "surface points area-weighted from the faces and volume points from volume_template placed on the "
                "body's bounding box, each stratified by ball-tree runs; the graph's first inputs are the anchors, "
                "every mesh point is a query (docs/export.md)",
                "queries": "msptcli.model.queries.locate_queries + place_queries: each query's nearest anchor's "
                "patch per tree (query_slots_t, query_slot_t); with model_config.anchors.reads = 'nearest' the "
                "first tree's slots and every group's keys, the union of its queries' k nearest anchors, with "
                "their log window weights (query_key_rows, query_key_bias); with 'blend' also the second patch of "
                "the queries near a patch boundary and its weight (query_second_*)",
                "volume_template": None if template is None else _array_json(template),
            }
        }
        if ckpt.model.config.backbone != "mspt":
            anchors["anchors"]["backbone"] = _backbone_note(ckpt.model.config)
    transient = ckpt.config.data.transient
    if transient is not None:
        anchors["transient"] = {
            "step": "one step of the rollout: inputs(t) -> standardised increment; f(t+1) = f(t) + output * "
            "stats.increments (docs/transient.md)",
            "inputs": "the 11 geometry features below (wall points as surface points), then f(t) standardised with "
            "stats.volume, then (with derivatives) h Dx f, h Dy f, h^2 L f over the field deviations and log(h / "
            "coord_scale) (msptcli.geometry.mesh_gradient over the mesh edges), then f(t-j+1) - f(t-j) / "
            "stats.increments for j = 1..history, then (with advection) f(t) - f(t-1) carried for dt along the "
            "advection field's (x, y), semi-Lagrangian in 4 midpoint substeps, linear on a Delaunay triangulation "
            "of the points, / stats.increments (msptcli.geometry.transport), then the conditions standardised with "
            "stats.conditions (msptcli.data.transient.step_inputs)",
            "derivatives": transient.derivatives,
            "advection": transient.advection if transient.advects else None,
            "fields": [n for n, _ in ckpt.channels.volume],
            "history": transient.history,
            "conditions": condition_names(transient),
            "columns": _column_ranges(step_columns(transient, ckpt.channels)),
        }
    return {
        **anchors,
        "inputs": {
            "features": [
                "(x - coord_mean) / coord_scale (3)",
                "outward unit normal on surface points, 0 on volume points (3)",
                "distance to the body surface / coord_scale on volume points, 0 on surface points (1)",
                "unit direction to the body surface on volume points, 0 on surface points (3)",
                "1 on surface points, 0 on volume points (1)",
            ],
            "order": ORDER_ANCHORS if ckpt.model.config.anchors is not None else ORDER_CLOUD,
            "layout": "msptcli.model.build_layout(cloud sizes, model_config) of the anchors (anchor model) or the "
            "cloud; see docs/export.md",
        },
        **({} if transient is not None else {"deploy": DEPLOY}),
        "outputs": {
            "channels": {"surface": list(ckpt.channels.surface), "volume": list(ckpt.channels.volume)},
            "denormalise": "value = output * std + mean per field and component (stats below)",
        },
        "stats": ckpt.stats.model_dump(),
        "model_config": ckpt.model.config.model_dump(mode="json"),
        "in_features": ckpt.model.in_features,
        "out_features": ckpt.model.out_features,
        "surface_location": ckpt.surface_location,
        "reference": ckpt.reference.to_json(),
        "mspt_version": ckpt.version,
    }


def _column_ranges(columns: StepColumns) -> dict[str, list[int]]:
    """Each part of a step's inputs as [start, stop) columns: static, current, derivatives, history_j, carried_j,
    conditions (``StepColumns``); a part that is off is left out."""
    parts = {"static": columns.static, "current": columns.current, "derivatives": columns.derivatives}
    parts |= {f"history_{j}": r for j, r in enumerate(columns.history, start=1)}
    parts |= {f"carried_{j}": r for j, r in enumerate(columns.carried, start=1)}
    parts["conditions"] = columns.conditions
    return {name: [r.start, r.stop] for name, r in parts.items() if len(r)}


def _backbone_note(config: ModelConfig) -> str:
    note = f"{config.backbone} runs on the anchors; the queries read its anchor features in query_depth blocks"
    if config.num_trees == 2:
        note += "; tree_reorder_1 / tree_restore_1: the anchors' rotated ball tree (msptcli.model.anchors.pack_anchors)"
    if config.backbone == "erwin":
        note += f"; every cloud's anchors a multiple of {config.erwin_settings.cloud_multiple()} (whole balls)"
    return note


def _array_json(array: np.ndarray) -> dict:
    """A float32 array, exactly, as JSON: its shape and its little-endian bytes in base64."""
    data = np.ascontiguousarray(array, dtype="<f4")
    return {"dtype": "float32", "shape": list(data.shape), "base64": base64.b64encode(data.tobytes()).decode()}
