"""One transient case, a time series of snapshots on a fixed mesh, to a prepared :class:`Sample`.

The mesh does not move, so its geometry features and its ball-tree order are computed once per case:

    mesh/points (N, 3), mesh/normals (N, 3)    the body's outward normal on wall points, else 0
    mesh/distance (N,), mesh/direction (N, 3)  to the body's outline (0 on the wall)
    mesh/wall (N,)                             1 on the body's outline, else 0
    body/edges (E, 2)                          the outline's mesh edges (``geometry/outline.py``)
    mesh/edges (M, 2)                          every edge of the mesh (its derivatives, ``geometry/mesh_gradient.py``)
    order (N,)                                 the ball-tree order of the mesh points
    times (T,)                                 the snapshot times, equally spaced
    series/<field> (T, N, k)                   the fields of every snapshot

The body is the mesh's inner boundary (none: a flow without a body; its wall channels are 0). Meshes
are planar (2D, one plane of a one-cell-thick OpenFOAM case): distances are to the outline's
segments, in the plane.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from msptcli.config import DataConfig
from msptcli.data.cases import CaseFiles
from msptcli.data.params import read_params
from msptcli.data.sample import Sample
from msptcli.data.series import Series, read_series
from msptcli.data.transient import condition_values
from msptcli.errors import InvalidInputError
from msptcli.geometry.balltree import ball_tree_order
from msptcli.geometry.mesh_gradient import mesh_edges
from msptcli.geometry.outline import body_edges, outline_features

#: What a prepared transient sample holds; part of the fingerprint.
SERIES_CONTENT = "series-2"  # since the mesh edges (derivative inputs)


def series_fingerprint(case: CaseFiles, data: DataConfig) -> str:
    """Changes when a snapshot, the params or the data config change: decides whether a sample is reused."""
    h = hashlib.sha256((SERIES_CONTENT + data.model_dump_json(exclude={"split", "streaming"})).encode())
    folder = series_case_folder(case)
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if path.is_file():
            stat = path.stat()
            h.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def prepare_series_case(case: CaseFiles, data: DataConfig) -> Sample:
    """Read one case's series and compute its geometry, tree order and conditions."""
    transient = data.transient
    assert transient is not None
    series = read_series(case.surface, transient.fields, pattern=transient.series_file, dt=transient.dt)
    arrays = mesh_geometry(series)
    arrays["order"] = ball_tree_order(arrays["mesh/points"])
    arrays["times"] = series.times.astype(np.float64)
    for name, values in series.fields.items():
        arrays[f"series/{name}"] = values
    params = read_params(case.params)
    conditions = condition_values(transient, params, series.dt, source=str(case.params or case.surface))
    meta: dict[str, Any] = {
        "case": case.name,
        "kind": "transient",
        "sources": {"series": str(series.source)},
        "surface_location": series.location,
        "fields": {"surface": {}, "volume": {n: int(v.shape[-1]) for n, v in series.fields.items()}},
        "num_surface": int(arrays["mesh/wall"].sum()),
        "num_volume": len(series.points),
        "num_steps": len(series.times),
        "dt": series.dt,
        "conditions": conditions,
        "params": params,
        "reference_area": None,
        "fingerprint": series_fingerprint(case, data),
    }
    return Sample(name=case.name, arrays=arrays, meta=meta)


def mesh_geometry(series: Series) -> dict[str, np.ndarray]:
    """The static arrays of the module docstring (all but ``order``, ``times`` and the fields)."""
    points = np.asarray(series.points, dtype=np.float64)
    if series.location != "points":
        raise InvalidInputError(f"{series.source}: transient fields must be point data (found cell data)")
    edges = body_edges(series.mesh, required=False)  # (E, 2); none for a flow without a body
    body = outline_features(points, edges)
    return {
        "mesh/points": points.astype(np.float32),
        "mesh/normals": body.normals.astype(np.float32),
        "mesh/distance": body.distance.astype(np.float32),
        "mesh/direction": body.direction.astype(np.float32),
        "mesh/wall": body.wall,
        "body/edges": edges.astype(np.int64),
        "mesh/edges": mesh_edges(series.mesh),
    }


def series_case_folder(case: CaseFiles) -> Path:
    """The folder the case's series lives in."""
    return case.surface if case.surface.is_dir() else case.surface.parent
