"""One transient case, a time series of snapshots on a fixed mesh, to a prepared :class:`Sample`.

The mesh does not move, so its geometry features and its ball-tree order are computed once per case:

    mesh/points (N, 3), mesh/normals (N, 3)    the body's outward normal on wall points, else 0
    mesh/distance (N,), mesh/direction (N, 3)  to the body's outline (0 on the wall)
    mesh/wall (N,)                             1 on the body's outline, else 0
    body/edges (E, 2)                          the outline's mesh edges (``physics/shedding.py``)
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
from msptcli.physics.shedding import body_edges

#: What a prepared transient sample holds; part of the fingerprint.
SERIES_CONTENT = "series-2"  # since the mesh edges (derivative inputs)


def series_fingerprint(case: CaseFiles, data: DataConfig) -> str:
    """Changes when a snapshot, the params or the data config change: decides whether a sample is reused."""
    h = hashlib.sha256((SERIES_CONTENT + data.model_dump_json(exclude={"split"})).encode())
    folder = case.surface if case.surface.is_dir() else case.surface.parent
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
    normals = np.zeros_like(points)
    edge_normals = outward_normals(points, edges)  # (E, 3) unit, into the fluid
    np.add.at(normals, edges[:, 0], edge_normals)
    np.add.at(normals, edges[:, 1], edge_normals)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    normals = np.divide(normals, length, out=np.zeros_like(normals), where=length > 0)
    wall = np.zeros(len(points), dtype=np.float32)
    wall[edges.ravel()] = 1.0
    distance, direction = distance_to_outline(points, edges)
    distance[wall > 0], direction[wall > 0] = 0.0, 0.0
    return {
        "mesh/points": points.astype(np.float32),
        "mesh/normals": normals.astype(np.float32),
        "mesh/distance": distance.astype(np.float32),
        "mesh/direction": direction.astype(np.float32),
        "mesh/wall": wall,
        "body/edges": edges.astype(np.int64),
        "mesh/edges": mesh_edges(series.mesh),
    }


def outward_normals(points: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """(E, 3) unit normals of the outline's edges, out of the body (``body_edges`` orients the edges so that
    the fluid lies to the right of a->b: the normal is (dy, -dx))."""
    d = points[edges[:, 1]] - points[edges[:, 0]]
    n = np.stack([d[:, 1], -d[:, 0], np.zeros(len(d))], axis=1)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-300)


def distance_to_outline(points: np.ndarray, edges: np.ndarray, *, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(N,) distance of every point to the nearest outline segment, in the plane, and (N, 3) the unit
    direction towards it (0 where the distance is 0; both 0 everywhere without an outline)."""
    if len(edges) == 0:
        return np.zeros(len(points)), np.zeros((len(points), 3))
    a, b = points[edges[:, 0], :2], points[edges[:, 1], :2]  # (E, 2)
    ab = b - a
    length2 = np.maximum((ab**2).sum(1), 1e-300)
    distance = np.empty(len(points))
    direction = np.zeros((len(points), 3))
    for start in range(0, len(points), chunk):
        p = points[start : start + chunk, None, :2]  # (n, 1, 2)
        t = np.clip(((p - a) * ab).sum(-1) / length2, 0.0, 1.0)  # (n, E)
        closest = a + t[..., None] * ab  # (n, E, 2)
        d2 = ((closest - p) ** 2).sum(-1)
        best = d2.argmin(1)
        rows = np.arange(len(best))
        vec = closest[rows, best] - p[:, 0]
        dist = np.sqrt(d2[rows, best])
        distance[start : start + len(best)] = dist
        direction[start : start + len(best), :2] = np.divide(
            vec, dist[:, None], out=np.zeros_like(vec), where=dist[:, None] > 0
        )
    return distance, direction


def series_case_folder(case: CaseFiles) -> Path:
    """The folder the case's series lives in."""
    return case.surface if case.surface.is_dir() else case.surface.parent
