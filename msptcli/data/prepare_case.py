"""One case from its mesh files to a prepared :class:`Sample` (geometry features, fields, tree order)."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from msptcli.config import DataConfig
from msptcli.data.cases import CaseFiles
from msptcli.data.openfoam import read_case, source_files
from msptcli.data.params import positive_param, read_params
from msptcli.data.read import FieldMesh, read_fields, read_fields_subset
from msptcli.data.sample import Sample
from msptcli.errors import InvalidInputError
from msptcli.geometry.balltree import ball_tree_order
from msptcli.geometry.sampling import sample_on_surface
from msptcli.io.meshes import as_polydata

#: Area-weighted surface samples stored per case (the candidates of the surface anchors, ``data/anchors.py``).
SURFACE_POOL = 1 << 18
#: ``data.streaming: auto`` reads a .vtu/.vtp volume of at least this size by the streaming reader.
STREAMING_BYTES = 256 << 20
#: What a prepared sample holds; part of the fingerprint, so that older samples are prepared again.
SAMPLE_CONTENT = "anchors-2"  # since mspt 0.3: the area-weighted surface pool of the anchors


def case_fingerprint(case: CaseFiles, data: DataConfig) -> str:
    """Changes when a source file or the data config changes: decides whether a prepared sample is reused."""
    h = hashlib.sha256((SAMPLE_CONTENT + data.model_dump_json(exclude={"split", "streaming"})).encode())
    sources = (case.surface, case.volume, case.params)
    if case.openfoam:  # the mesh and time files read, and the params
        sources = (*source_files(case.surface, data.openfoam), case.params)
    for path in sources:
        if path is not None:
            stat = path.stat()
            h.update(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def prepare_case(case: CaseFiles, data: DataConfig) -> Sample:
    """Read one case and compute everything the model and the metrics need of it."""
    foam = None  # an OpenFOAM case: its body surface and internal mesh, read once (data/openfoam.py)
    if case.openfoam:
        with_volume = case.volume is not None and bool(data.volume_fields)
        fields = [*data.surface_fields, *(data.volume_fields if with_volume else [])]
        foam = read_case(case.surface, data.openfoam, volume=with_volume, fields=fields)
    surface = read_fields(case.surface, data.surface_fields, mesh=foam and foam.surface)
    arrays = surface_arrays(surface)
    for name, values in surface.fields.items():
        arrays[f"surface/{name}"] = values
    with _naming(surface.source):
        pool, pool_normals = sample_on_surface(
            as_polydata(surface.mesh), SURFACE_POOL, seed=zlib.crc32(case.name.encode())
        )
    arrays["anchors/surface_points"] = pool.astype(np.float32)
    arrays["anchors/surface_normals"] = pool_normals.astype(np.float32)
    n_volume = 0
    if case.volume is not None and data.volume_fields:
        volume = read_volume(case.volume, data, name=case.name, mesh=foam and foam.volume)
        points = volume.points
        arrays.update(volume_arrays(points, surface.mesh, source=surface.source))
        for name, values in volume.fields.items():
            arrays[f"volume/{name}"] = values
        n_volume = len(points)
    cloud = np.concatenate([arrays["surface/points"], arrays.get("volume/points", np.zeros((0, 3), np.float32))])
    arrays["order"] = ball_tree_order(cloud)
    params = read_params(case.params)
    meta: dict[str, Any] = {
        "case": case.name,
        "sources": {k: str(v) for k, v in (("surface", case.surface), ("volume", case.volume)) if v is not None},
        "surface_location": surface.location,
        "fields": {
            "surface": {n: int(v.shape[1]) for n, v in surface.fields.items()},
            "volume": {n: int(arrays[f"volume/{n}"].shape[1]) for n in data.volume_fields if f"volume/{n}" in arrays},
        },
        "num_surface": len(surface.points),
        "num_volume": n_volume,
        "params": params,
        "reference_area": positive_param(params, data.reference_area_key, case.params) or data.reference_area,
        "fingerprint": case_fingerprint(case, data),
    }
    if foam is not None:
        meta["openfoam"] = foam.describe()  # the time folder and body patches read
    return Sample(name=case.name, arrays=arrays, meta=meta)


def surface_arrays(surface: FieldMesh) -> dict[str, np.ndarray]:
    """Points, outward normals and area shares of a surface, at its points or at its cell centres.

    Raises:
        InvalidInputError: a surface without faces or of zero area; the message names ``surface.source``.
    """
    from msptcli.geometry.orientation import cell_normals, outward_area_vectors, point_normals

    with _naming(surface.source):
        poly = as_polydata(surface.mesh)
        if poly.n_cells == 0:
            raise InvalidInputError("the surface has no cells: normals and forces need faces")
        extent = float(np.ptp(np.asarray(poly.points, dtype=np.float64), axis=0).max())
        if not extent > 0:
            raise InvalidInputError("the surface has zero area (all its points coincide)")
        cells = -outward_area_vectors(poly)  # (C, 3): area vectors pointing into the body
        total = float(np.linalg.norm(cells, axis=1).sum())
        if not total > 1e-12 * extent**2:
            raise InvalidInputError(f"the surface has zero area (its faces are degenerate; total area {total:.3g})")
        if surface.location == "points":
            normals = point_normals(poly)
            share = _cell_to_point_matrix(poly)
            area, area_norm = share @ cells, share @ np.linalg.norm(cells, axis=1)
        else:
            normals = cell_normals(poly)
            area, area_norm = cells, np.linalg.norm(cells, axis=1)
    return {
        "surface/points": surface.points.astype(np.float32),
        "surface/normals": np.asarray(normals, dtype=np.float32),
        "surface/area": np.asarray(area, dtype=np.float32),
        "surface/area_norm": np.asarray(area_norm, dtype=np.float32),
    }


def volume_arrays(
    points: np.ndarray, surface_mesh: Any, *, source: Path | None = None, progress: Any = None
) -> dict[str, np.ndarray]:
    """Volume points with their distance to the body surface and the unit direction towards it.

    ``source``, the surface's file, is named by errors about the surface; ``progress(done, total)``: points done.
    """
    from msptcli.geometry.distance import distance_to_surface

    with _naming(source):
        distance, direction = distance_to_surface(points, as_polydata(surface_mesh), progress=progress)
    return {
        "volume/points": points.astype(np.float32),
        "volume/distance": np.asarray(distance, dtype=np.float32),
        "volume/direction": np.asarray(direction, dtype=np.float32),
    }


@contextmanager
def _naming(source: Path | None) -> Iterator[None]:
    """Prefix the :class:`InvalidInputError` of geometry code with the file the surface came from."""
    try:
        yield
    except InvalidInputError as exc:
        if source is None or str(exc).startswith(f"{source}:"):
            raise
        raise InvalidInputError(f"{source}: {exc}") from None


def _cell_to_point_matrix(poly: Any) -> Any:
    """Sparse (points x cells) matrix: each cell's value shared equally among its points."""
    from scipy.sparse import csr_matrix
    from vtk.util.numpy_support import vtk_to_numpy

    polys = poly.GetPolys()
    offsets = vtk_to_numpy(polys.GetOffsetsArray()).astype(np.int64)
    conn = vtk_to_numpy(polys.GetConnectivityArray()).astype(np.int64)
    sizes = np.diff(offsets)
    cell_of = np.repeat(np.arange(len(sizes)), sizes)
    return csr_matrix((1.0 / sizes[cell_of], (conn, cell_of)), shape=(poly.n_points, len(sizes)))


def read_volume(path: Path, data: DataConfig, *, name: str, mesh: Any = None) -> FieldMesh:
    """The volume fields at the case's seeded subset of ``data.max_volume_points`` points or cells.

    A large VTK XML file is read by the streaming reader (``io/vtkxml.py``), only the subset, in
    memory of about the subset's size; other files through VTK, whole. Both take the same subset.
    """
    choose = partial(_subsample, limit=data.max_volume_points, name=name)
    if mesh is None and streams(path, data):
        return read_fields_subset(path, data.volume_fields, choose=choose)
    volume = read_fields(path, data.volume_fields, mesh=mesh)
    keep = choose(len(volume.points))
    fields = {k: v[keep] for k, v in volume.fields.items()}
    return FieldMesh(mesh=volume.mesh, points=volume.points[keep], location=volume.location, fields=fields,
                     source=volume.source)  # fmt: skip


def streams(path: Path, data: DataConfig) -> bool:
    """Whether the volume at ``path`` is read by the streaming reader (``data.streaming``)."""
    if data.streaming == "never" or path.suffix.lower() not in (".vtu", ".vtp") or not path.is_file():
        return False
    if data.streaming == "always":
        return True
    return data.max_volume_points is not None and path.stat().st_size >= STREAMING_BYTES


def _subsample(n: int, limit: int | None, name: str) -> np.ndarray:
    if limit is None or n <= limit:
        return np.arange(n)
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # the same subset on every run
    if n > 10_000 and limit > n // 50:  # where Generator.choice would shuffle all of range(n): 8 bytes per point
        return _sparse_choice(rng, n, limit)
    return np.sort(rng.choice(n, size=limit, replace=False))  # Floyd's algorithm: memory of the subset's size


def _sparse_choice(rng: np.random.Generator, n: int, limit: int) -> np.ndarray:
    """A uniformly random sorted subset of ``limit`` of ``range(n)`` (``limit < n``), in memory of its size.

    Distinct values of uniform draws are, given their number, a uniform subset; drawn until there
    are enough, a uniform subset of those is one of ``range(n)``.
    """
    chosen = np.zeros(0, np.int64)
    while len(chosen) < limit:
        missing = limit - len(chosen)
        draws = int(missing * n / (n - len(chosen)) * 1.05) + 16
        chosen = np.sort(np.concatenate([chosen, rng.integers(0, n, size=draws, dtype=np.int64)]))
        chosen = chosen[np.concatenate([[True], chosen[1:] != chosen[:-1]])]  # np.unique is slower here
    return np.sort(rng.choice(chosen, size=limit, replace=False))
