"""``mspt balltree``: look at a mesh through the ball tree and the patches MSPT would cut it into."""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from msptcli.errors import InvalidInputError
from msptcli.geometry.adaptive import PatchCut, adaptive_cut, uniform_cut
from msptcli.geometry.balltree import ball_tree_order, default_num_threads, tree_depth
from msptcli.geometry.orientation import point_normals
from msptcli.geometry.patches import PatchSummary, patch_level, summarize_patches
from msptcli.io.meshes import read_mesh, write_mesh
from msptcli.io.render import render_png


@dataclass(frozen=True)
class PatchReport:
    """A mesh, its ball-tree order and its patches: uniform at one level, or a variance-adaptive cut."""

    source: Path
    mesh: Any  # pyvista.DataSet
    perm: np.ndarray
    cut: PatchCut
    summary: PatchSummary
    build_seconds: float
    threads: int
    adaptive_on: tuple[str, ...] = ()  # the point arrays whose variance refined the cut; () for uniform patches

    @property
    def adaptive(self) -> bool:
        return bool(self.adaptive_on)


def patch_report(
    mesh_path: str | os.PathLike[str],
    *,
    level: int | None = None,
    patch_size: int | None = None,
    num_threads: int | None = None,
    adaptive: bool = False,
    refine: int = 1,
    adaptive_on: list[str] | None = None,
) -> PatchReport:
    """Read ``mesh_path``, build its ball tree and summarise the patches.

    The depth is ``level`` if given, else the one whose patches hold about
    ``patch_size`` points, else the default K ~ sqrt(N) (``geometry.patches.patch_level``).
    With ``adaptive``, the ``2^level`` patches are cut where the point arrays ``adaptive_on``
    vary most (``geometry.adaptive.adaptive_cut``, ``refine`` levels either side of ``level``);
    by default the mesh's own point arrays, or the surface normals of a mesh without any.
    """
    if level is not None and patch_size is not None:
        raise InvalidInputError("give --level or --patch-size, not both")
    if adaptive_on and not adaptive:
        raise InvalidInputError("--adaptive-on chooses the arrays of --adaptive patches: give --adaptive too")
    source = Path(mesh_path)
    mesh = read_mesh(source)
    points = np.asarray(mesh.points)
    n = points.shape[0]
    if level is None:
        level = patch_level(n, patch_size=patch_size)
    elif level > tree_depth(n):
        raise InvalidInputError(f"--level {level} is deeper than the tree of {n} points (depth {tree_depth(n)})")
    started = time.perf_counter()
    perm = ball_tree_order(points, num_threads=num_threads)
    seconds = time.perf_counter() - started
    names: tuple[str, ...] = ()
    if adaptive:
        names, values = _variance_values(mesh, adaptive_on)
        cut = adaptive_cut(values[perm], level, refine=refine)
    else:
        cut = uniform_cut(n, level)
    return PatchReport(
        source=source,
        mesh=mesh,
        perm=perm,
        cut=cut,
        summary=summarize_patches(points, perm, level, bounds=cut.bounds()),
        build_seconds=seconds,
        threads=num_threads or default_num_threads(),
        adaptive_on=names,
    )


def _variance_values(mesh: Any, names: list[str] | None) -> tuple[tuple[str, ...], np.ndarray]:
    """(names, (n, C) values) whose variance drives an adaptive cut, each channel standardised.

    Standardising puts pressure in pascals and velocity in m/s on one scale, as the
    normalised inputs of the model are.
    """
    n = mesh.n_points
    available = [k for k in mesh.point_data if np.issubdtype(np.asarray(mesh.point_data[k]).dtype, np.number)]
    if names:
        missing = [k for k in names if k not in available]
        if missing:
            have = ", ".join(available) or "none"
            raise InvalidInputError(f"the mesh has no point array {missing[0]!r} (its point arrays: {have})")
        chosen = list(names)
    else:
        chosen = available
    if chosen:
        columns = [np.asarray(mesh.point_data[k], dtype=np.float64).reshape(n, -1) for k in chosen]
        values = np.concatenate(columns, axis=1)
    else:
        # No fields: refine on the geometry, the outward normals of the surface points (0 inside a volume).
        chosen = ["normals"]
        surface = _outer_surface(mesh)
        values = np.zeros((n, 3))
        ids = surface.point_data.get("vtkOriginalPointIds")
        values[np.arange(n) if ids is None else np.asarray(ids)] = point_normals(surface.triangulate())
    std = values.std(axis=0)
    values = (values - values.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return tuple(chosen), values


def write_patch_mesh(report: PatchReport, *, output: Path | None, screenshot: Path | None) -> list[Path]:
    """Write the mesh with point arrays ``patch`` and ``tree_rank``, and/or a PNG coloured by patch."""
    if screenshot is not None and screenshot.suffix.lower() != ".png":
        raise InvalidInputError(f"{screenshot}: the screenshot is written as .png")
    n = report.summary.num_points
    rank = np.empty(n, dtype=np.int64)
    rank[report.perm] = np.arange(n)
    mesh = report.mesh.copy()
    bounds = report.cut.bounds()
    patch = np.repeat(np.arange(len(report.cut), dtype=np.int64), np.diff(bounds))  # patch of each tree position
    mesh.point_data["tree_rank"] = rank
    mesh.point_data["patch"] = patch[rank]
    mesh.point_data["patch_size"] = np.diff(bounds)[patch][rank]
    mesh.point_data["patch_depth"] = report.cut.depth[patch][rank]
    written = []
    if output is not None:
        written.append(write_mesh(mesh, output, inputs=(report.source,)))
    if screenshot is not None:
        if report.adaptive:
            written.append(_size_screenshot(mesh, screenshot))
        else:
            written.append(_screenshot(mesh, screenshot, report.summary.num_patches))
    return written


def _outer_surface(mesh: Any) -> Any:
    """The outer surface of ``mesh`` (itself if it is one), carrying its point arrays."""
    import pyvista as pv

    if isinstance(mesh, pv.PolyData):
        return mesh.copy()
    with warnings.catch_warnings():  # pyvista announces a change of default we do not depend on
        warnings.simplefilter("ignore")
        return mesh.extract_surface()


def _surface_cells(mesh: Any, arrays: dict[str, np.ndarray]) -> Any:
    """The outer surface of ``mesh`` with ``arrays`` (point data of ``mesh``) moved to its cells, for a picture."""
    carrier = mesh.copy()
    carrier.clear_data()
    for name, values in arrays.items():
        carrier.point_data[name] = values
    # Colour cells, not points: interpolating ids between patches would paint stripes of other colours.
    return _outer_surface(carrier).point_data_to_cell_data(pass_point_data=False)


def _size_screenshot(mesh: Any, path: Path) -> Path:
    sizes = np.asarray(mesh.point_data["patch_size"], dtype=np.float64)
    surface = _surface_cells(mesh, {"points per patch": sizes})
    return render_png(
        surface, path, scalars="points per patch", cmap="viridis", log_scale=bool(sizes.max() > 2 * sizes.min())
    )


def _screenshot(mesh: Any, path: Path, num_patches: int) -> Path:
    # Neighbouring patches get distant colours: shuffle the ids before the colour map.
    shuffle = np.random.default_rng(0).permutation(num_patches)
    colour = shuffle[np.asarray(mesh.point_data["patch"])].astype(np.float64)
    surface = _surface_cells(mesh, {"patch_colour": colour})
    return render_png(surface, path, scalars="patch_colour", cmap="tab20", show_scalar_bar=False)
