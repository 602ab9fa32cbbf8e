"""Deploying an exported model: a geometry to the inputs of its graph, the graph's outputs to physical fields.

``mspt export RUN -o FILE`` writes the network as one graph (ONNX or TorchScript, ``runtime/portable.py``) and
beside it the sidecar ``FILE.json`` (``export.py``): the statistics, the field channels, the model config and, for
an anchor-query model, the volume template its anchors are drawn from. Around the graph, two functions:

    graph_inputs(sidecar, surface, volume_points)  ->  GraphRuns: the input dicts, one per call of the graph
    graph_fields(sidecar, runs, outputs)           ->  {'surface': {field: (n, k)}, 'volume': {field: (m, k)}}

with exactly the steps of ``mspt predict`` (the same functions, called the same way), so that the graph's fields
are ``mspt predict``'s. The steps, and what each needs:

=====================================================  ===========================================================
step                                                   needs
=====================================================  ===========================================================
read the sidecar (:func:`read_sidecar`)                ``json``, mspt's pydantic models (``Stats``, ``ModelConfig``)
read the surface; its points (or cell centres),        pyvista / VTK (``io/meshes.py``, ``prepare_case.surface_
outward normals and area shares                        arrays``)
volume points' distance and direction to the body      SciPy k-d tree over the faces (``geometry/distance.py``)
the 11 input features, normalised                      NumPy (``features.cloud_inputs``)
anchor model: draw ``anchors.draws`` sets of anchors   the compiled ball tree ``msptcli._balltree`` (stratified
(seeds ``anchors.seed``, +1, ...) from the surface      draws), VTK (``anchors.geometry_anchors``)
and the volume template
anchor model: order the anchors by their ball trees,   ``msptcli._balltree`` (``model.anchors.pack_anchors``: the
first tree on coordinates turned by ``FIRST_ROTATION``  first tree on turned coordinates; a plain
(and with ``rotate_trees`` a second on                  ``ball_tree_order`` gives other patches and wrong fields)
``TREE_ROTATION``), cut them into patches
anchor model: place every mesh point as a query        SciPy k-d tree, NumPy (``runtime.inference.query_chunks``,
(nearest anchors, patch groups), in chunks             ``model.queries``)
whole-cloud model: ball-tree order and layout          ``msptcli._balltree``, NumPy (``runtime.pack_clouds``)
run the graph                                          onnxruntime, or ``torch.jit.load`` (no mspt)
average the draws, un-permute, de-normalise            NumPy only (:func:`graph_fields`)
=====================================================  ===========================================================

Preparing the inputs thus needs mspt installed (its Python and its compiled ball tree); running the graph needs
only its runtime; the fields come back with NumPy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from msptcli.data.anchors import geometry_anchors, seeds_of
from msptcli.data.features import Channels, cloud_inputs, cloud_part, to_physical
from msptcli.data.manifest import Stats
from msptcli.data.prepare_case import surface_arrays, volume_arrays
from msptcli.data.read import FieldMesh
from msptcli.errors import InvalidInputError
from msptcli.io.meshes import as_polydata, is_surface, read_mesh
from msptcli.model.anchors import pack_anchors
from msptcli.model.config import ModelConfig
from msptcli.runtime.graph import QueryExample, layout_inputs, query_inputs
from msptcli.runtime.inference import DEFAULT_CHUNK_POINTS, pack_clouds, query_chunks


@dataclass(frozen=True)
class Sidecar:
    """What deployment needs of an export's sidecar ``FILE.json``, as the objects mspt's functions take."""

    stats: Stats  # coord_mean, coord_scale; per field mean and std
    channels: Channels  # the output channels: (field, components) per part, in output order
    model_config: ModelConfig  # anchors (None: a whole-cloud model), patches, trees
    surface_location: str  # 'points' or 'cells': where the surface fields are
    volume_template: np.ndarray | None  # (M, 3) float32, the volume anchors' template; None without one
    source: str = "the sidecar"  # the file it was read from, for messages


@dataclass(frozen=True)
class GraphRuns:
    """The inputs of an exported graph for one geometry, one dict per call (:func:`graph_inputs`).

    Run the graph on every dict of ``inputs`` in turn and give the outputs, in the same order, to
    :func:`graph_fields`. An anchor model gets ``draws`` x chunks calls (each with the draw's anchors and one
    chunk of queries); a whole-cloud model one call, the whole cloud.
    """

    inputs: tuple[dict[str, np.ndarray], ...]  # the graph's named inputs, one dict per call
    rows: tuple[np.ndarray, ...]  # per call, the row of the cloud [surface ; volume] of every output row
    draws: int  # anchor draws the calls cover (averaged); 1 for a whole-cloud model
    num_surface: int  # the cloud's first rows: surface points (or cell centres)
    num_volume: int  # its last rows: the volume points given
    points: np.ndarray  # (num_surface + num_volume, 3) the cloud [surface ; volume], float32

    def __len__(self) -> int:
        return len(self.inputs)


def read_sidecar(source: str | os.PathLike[str] | Mapping[str, Any]) -> Sidecar:
    """The sidecar of an export: ``source`` is the exported file (its ``FILE.json`` is read), the JSON file itself,
    or its contents as a dict."""
    name = "the sidecar"
    if not isinstance(source, Mapping):
        path = Path(source)
        if path.suffix.lower() != ".json":
            path = Path(f"{path}.json")
        name = str(path)
        if not path.is_file():
            raise InvalidInputError(f"no sidecar {path}: `mspt export RUN -o FILE` writes FILE.json beside FILE")
        try:
            source = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise InvalidInputError(f"{path}: not a sidecar of `mspt export` (not JSON: {e})") from e
        if not isinstance(source, Mapping):
            raise InvalidInputError(f"{path}: not a sidecar of `mspt export` (not a JSON object)")
    missing = [k for k in ("stats", "outputs", "model_config", "surface_location") if k not in source]
    if missing:
        raise InvalidInputError(f"{name}: not a sidecar of `mspt export` (no {', '.join(missing)}); export again")
    if "transient" in source:
        raise InvalidInputError(
            f"{name}: a transient model's graph takes one step's inputs (docs/transient.md), not a geometry's"
        )
    try:
        stats = Stats.model_validate(source["stats"])
        config = ModelConfig.model_validate(source["model_config"])
        channels = source["outputs"]["channels"]
        parts = [tuple((str(f), int(k)) for f, k in channels.get(part, [])) for part in ("surface", "volume")]
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        first = str(e).splitlines()[0]
        raise InvalidInputError(f"{name}: not a sidecar of `mspt export` ({first}); export again") from e
    template = None
    if config.anchors is not None:
        encoded = source.get("anchors", {}).get("volume_template")
        template = None if encoded is None else decode_array(encoded)
    return Sidecar(stats, Channels(*parts), config, str(source["surface_location"]), template, name)


def decode_array(value: Mapping[str, Any]) -> np.ndarray:
    """An array of the sidecar (``{"dtype", "shape", "base64"}``: little-endian bytes in base64)."""
    import base64

    return np.frombuffer(base64.b64decode(value["base64"]), dtype="<f4").reshape(value["shape"])


def graph_inputs(
    sidecar: Sidecar | str | os.PathLike[str] | Mapping[str, Any],
    surface: Any,
    volume_points: np.ndarray | None = None,
    *,
    chunk_queries: int | None = DEFAULT_CHUNK_POINTS,
) -> GraphRuns:
    """The inputs of the exported graph for a geometry: one dict per call of the graph (:class:`GraphRuns`).

    Args:
        sidecar: a :class:`Sidecar`, or what :func:`read_sidecar` reads (the exported file, its JSON, a dict).
        surface: the body's surface: a surface mesh file mspt reads (STL, OBJ, PLY, VTP, a VTU of faces) or a
            pyvista dataset of polygons; in the training data's units (``mspt predict --scale`` is yours to apply).
            The surface fields are predicted at its points, or at its cell centres where the model's are.
        volume_points: (m, 3) points where the volume fields are wanted (None: the surface only).
        chunk_queries: an anchor model's queries per call (None: all in one call). A query's output does not
            depend on the other queries, so the chunks change the memory only. A whole-cloud model sees the
            whole cloud in one call.
    """
    side = sidecar if isinstance(sidecar, Sidecar) else read_sidecar(sidecar)
    poly, source = _read_surface(surface)
    arrays = surface_part(poly, side.surface_location, source)
    volume = None
    if volume_points is not None and len(volume_points):
        if not side.channels.volume:
            raise InvalidInputError("the model predicts no volume fields: leave volume_points out")
        points = np.asarray(volume_points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 3 or not np.isfinite(points).all():
            raise InvalidInputError(f"volume_points must be a finite (m, 3) array, got shape {points.shape}")
        arrays.update(volume_arrays(points, poly, source=source))
        volume = cloud_part(arrays, "volume")
    points, inputs = cloud_inputs(side.stats, cloud_part(arrays, "surface"), volume)
    n, m = len(arrays["surface/points"]), 0 if volume is None else len(volume["points"])
    config = side.model_config
    if config.anchors is None:
        packed = pack_clouds([points], [inputs], config)
        return GraphRuns((layout_inputs(packed),), (packed.order,), 1, n, m, points)
    calls, rows = [], []
    draws = seeds_of(config.anchors)  # anchors.draws draws, seeds anchors.seed, + 1, ...
    for draw in draws:
        a_points, a_inputs = geometry_anchors(poly, side.stats, draw, side.volume_template)
        anchors = pack_anchors([a_points], [a_inputs], config)  # ball trees on the turned coordinates
        for chunk, queries in query_chunks(anchors, [points], [inputs], chunk_queries):
            calls.append(query_inputs(QueryExample(anchors, queries)))
            rows.append(chunk)
    return GraphRuns(tuple(calls), tuple(rows), len(draws), n, m, points)


def graph_fields(
    sidecar: Sidecar | str | os.PathLike[str] | Mapping[str, Any], runs: GraphRuns, outputs: Sequence[np.ndarray]
) -> dict[str, dict[str, np.ndarray]]:
    """The physical fields of a geometry from the graph's ``outputs`` on ``runs.inputs`` (in that order).

    The draws are averaged, the rows put back in the order of the surface's points (or cells) and of the volume
    points given, and every field de-normalised (``output * std + mean``): ``{'surface': {field: (n, k)},
    'volume': {field: (m, k)}}``, float32, as ``mspt predict`` writes them. NumPy only.
    """
    side = sidecar if isinstance(sidecar, Sidecar) else read_sidecar(sidecar)
    if len(outputs) != len(runs.inputs):
        raise InvalidInputError(f"{len(outputs)} outputs for {len(runs.inputs)} calls of the graph: run every one")
    total = np.zeros((runs.num_surface + runs.num_volume, side.channels.total), dtype=np.float32)
    for i, (rows, out) in enumerate(zip(runs.rows, outputs, strict=True)):
        out = np.asarray(out)
        if out.shape != (len(rows), total.shape[1]):
            raise InvalidInputError(
                f"output {i} has shape {out.shape}, the graph's on inputs {i} is {(len(rows), total.shape[1])}: "
                "give the outputs in the order of runs.inputs"
            )
        total[rows] += out
    fields = to_physical(side.stats, side.channels, total / runs.draws, runs.num_surface)  # the draws' mean
    if not runs.num_volume:
        fields["volume"] = {}
    return fields


def surface_part(surface: Any, location: str, source: Path | None = None) -> dict[str, np.ndarray]:
    """Points, outward normals and area shares of ``surface`` (PolyData) at its points or, with ``location``
    ``cells``, at its cell centres: the surface of the cloud as ``mspt predict`` and the graph's inputs take it."""
    at_cells = location == "cells"
    points = np.asarray(surface.cell_centers().points if at_cells else surface.points, dtype=np.float64)
    return surface_arrays(FieldMesh(mesh=surface, points=points, location="cells" if at_cells else "points",
                                    source=source))  # fmt: skip


def _read_surface(surface: Any) -> tuple[Any, Path | None]:
    """The surface as PolyData (a file read, a dataset as given: it is not modified) and its file, if any."""
    source = None
    if isinstance(surface, (str, os.PathLike)):
        source = Path(surface)
        surface = read_mesh(source)
    name = source or "the surface"
    if not hasattr(surface, "points") or not is_surface(surface):
        raise InvalidInputError(f"{name}: is not a surface mesh; pass the body's surface (STL/OBJ/PLY/VTP)")
    poly = as_polydata(surface)
    if poly.n_cells == 0:
        raise InvalidInputError(f"{name}: has points but no faces; a surface mesh is needed")
    return poly, source
