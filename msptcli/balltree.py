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
from msptcli.geometry.balltree import ball_tree_order, default_num_threads, tree_depth
from msptcli.geometry.patches import PatchSummary, patch_ids, patch_level, summarize_patches
from msptcli.io.meshes import read_mesh, write_mesh
from msptcli.io.render import render_png


@dataclass(frozen=True)
class PatchReport:
    """A mesh, its ball-tree order and the patches at one level."""

    source: Path
    mesh: Any  # pyvista.DataSet
    perm: np.ndarray
    summary: PatchSummary
    build_seconds: float
    threads: int


def patch_report(
    mesh_path: str | os.PathLike[str],
    *,
    level: int | None = None,
    patch_size: int | None = None,
    num_threads: int | None = None,
) -> PatchReport:
    """Read ``mesh_path``, build its ball tree and summarise the patches.

    The depth is ``level`` if given, else the one whose patches hold about
    ``patch_size`` points, else the default K ~ sqrt(N) (``geometry.patches.patch_level``).
    """
    if level is not None and patch_size is not None:
        raise InvalidInputError("give --level or --patch-size, not both")
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
    return PatchReport(
        source=source,
        mesh=mesh,
        perm=perm,
        summary=summarize_patches(points, perm, level),
        build_seconds=seconds,
        threads=num_threads or default_num_threads(),
    )


def write_patch_mesh(report: PatchReport, *, output: Path | None, screenshot: Path | None) -> list[Path]:
    """Write the mesh with point arrays ``patch`` and ``tree_rank``, and/or a PNG coloured by patch."""
    if screenshot is not None and screenshot.suffix.lower() != ".png":
        raise InvalidInputError(f"{screenshot}: the screenshot is written as .png")
    n = report.summary.num_points
    rank = np.empty(n, dtype=np.int64)
    rank[report.perm] = np.arange(n)
    mesh = report.mesh.copy()
    mesh.point_data["tree_rank"] = rank
    mesh.point_data["patch"] = patch_ids(n, report.summary.level)[rank]
    written = []
    if output is not None:
        written.append(write_mesh(mesh, output, inputs=(report.source,)))
    if screenshot is not None:
        written.append(_screenshot(mesh, screenshot, report.summary.num_patches))
    return written


def _screenshot(mesh: Any, path: Path, num_patches: int) -> Path:
    import pyvista as pv

    # Neighbouring patches get distant colours: shuffle the ids before the colour map.
    shuffle = np.random.default_rng(0).permutation(num_patches)
    if isinstance(mesh, pv.PolyData):
        surface = mesh.copy()
    else:
        with warnings.catch_warnings():  # pyvista announces a change of default we do not depend on
            warnings.simplefilter("ignore")
            surface = mesh.extract_surface()
    surface.point_data["patch_colour"] = shuffle[surface.point_data["patch"]].astype(np.float64)
    # Colour cells, not points: interpolating ids between patches would paint stripes of other colours.
    surface = surface.point_data_to_cell_data(pass_point_data=False)
    return render_png(surface, path, scalars="patch_colour", cmap="tab20", show_scalar_bar=False)
