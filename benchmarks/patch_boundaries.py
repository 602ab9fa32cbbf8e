"""Do predictions jump where the ball-tree patches meet? Edge gradients across and within patches.

    python benchmarks/patch_boundaries.py out/accuracy/run-default ../shared/data/ahmed/case_0003

Runs the checkpoint on a case's CFD surface (``surface.vtu``) as ``mspt predict`` does (with the
default volume points; an anchor-query model needs none: its surface points are queries of the
anchors, and a point's patch is the patch of its nearest anchor in the first tree), and for every
edge (i, j) of the surface's triangles takes the gradient estimate ``|p_i - p_j| / |x_i - x_j|``
of the predicted and of the solver's pressure. Edges whose two points fall in different patches
of the model's ball tree are *crossing*, the others *within*. If the patches leave marks, the
predicted gradient across patch boundaries is larger than within patches by more than the
solver's is (the solver has no patches: its ratio says how the boundary edges differ by geometry
alone). Prints one Markdown table.

    python benchmarks/patch_boundaries.py RUN_A ../shared/data/ahmed/case_0003 --compare RUN_B \
        --picture docs/images/patch_boundaries.png

``--compare`` adds the rows of more runs; ``--picture`` renders the first case seen from above
(the roof and the slant): the solver's pressure, then each run's prediction with its patch
boundaries (edges between two patches) drawn in black, on one colour scale.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from msptcli.checkpoint import load_checkpoint
from msptcli.data.anchors import geometry_anchors
from msptcli.data.features import cloud_inputs, cloud_part, to_physical
from msptcli.data.prepare_case import surface_arrays, volume_arrays
from msptcli.data.read import read_fields
from msptcli.data.template import place_template
from msptcli.geometry.faces import fan_triangulation, parse_faces
from msptcli.io.meshes import as_polydata
from msptcli.model.anchors import pack_anchors
from msptcli.model.queries import nearest_anchors
from msptcli.runtime import pack_clouds, predict, predict_queries


def across_over_within(values: np.ndarray, i: np.ndarray, j: np.ndarray, length: np.ndarray, crossing) -> float:  # type: ignore[no-untyped-def]
    """Mean edge gradient |v_i - v_j| / |x_i - x_j| over crossing edges, divided by that over the others."""
    grad = np.abs(values[i] - values[j]) / length
    return float(grad[crossing].mean() / grad[~crossing].mean())


def predict_with_patches(ckpt, poly, s, field):  # type: ignore[no-untyped-def]
    """The predicted field on the surface points and the ball-tree patch (first tree) each point falls into."""
    config = ckpt.model.config
    n = len(s["surface/points"])
    if config.anchors is not None:  # anchor-query: a point's patch is its nearest anchor's
        a_points, a_inputs = geometry_anchors(poly, ckpt.stats, config.anchors, ckpt.volume_template)
        _, inputs = cloud_inputs(ckpt.stats, cloud_part(s, "surface"))
        (out,) = predict_queries(ckpt.model, [a_points], [a_inputs], [s["surface/points"]], [inputs])
        anchors = pack_anchors([a_points], [a_inputs], config)
        patch_of_row = np.repeat(np.arange(anchors.layout.num_patches), np.diff(anchors.layout.patch_start))
        patch = patch_of_row[nearest_anchors(anchors, [s["surface/points"]])]
    else:  # every point in the cloud [surface ; default volume points]
        v = volume_arrays(place_template(ckpt.volume_template, poly), poly)
        cloud, inputs = cloud_inputs(ckpt.stats, cloud_part(s, "surface"), cloud_part(v, "volume"))
        packed = pack_clouds([cloud], [inputs], config)
        out = predict(ckpt.model, packed)
        patch_of_row = np.repeat(np.arange(packed.layout.num_patches), np.diff(packed.layout.patch_start))
        patch = np.empty(len(cloud), dtype=np.int64)
        patch[packed.order] = patch_of_row  # patch of each point of [surface ; volume]
    pred = to_physical(ckpt.stats, ckpt.channels, out, n)
    return pred["surface"][field][:, 0], patch[:n]


def edges_of(poly):  # type: ignore[no-untyped-def]
    """(i, j, length) of every edge of the surface's triangles (the faces fan-triangulated), zero lengths dropped."""
    faces = parse_faces(poly)
    tri, _ = fan_triangulation(faces)
    edges = np.unique(np.sort(np.concatenate([tri[:, [0, 1]], tri[:, [1, 2]], tri[:, [2, 0]]]), axis=1), axis=0)
    i, j = edges[:, 0], edges[:, 1]
    length = np.linalg.norm(faces.points[i] - faces.points[j], axis=1)
    keep = length > 0
    return i[keep], j[keep], length[keep]


def picture(poly, true, panels, path: Path, field: str) -> None:  # type: ignore[no-untyped-def]
    """The solver's field and each run's prediction (with its crossing edges in black) from above, one PNG."""
    import os

    import pyvista as pv

    from msptcli.io.atomic import atomic_output

    if not os.environ.get("DISPLAY"):  # off-screen through EGL, as msptcli.io.render
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

    titles = ["solver (OpenFOAM)", *(title for title, _, _ in panels)]
    plotter = pv.Plotter(off_screen=True, shape=(len(titles), 1), window_size=(1200, 340 * len(titles)), border=False)
    lo, hi = np.percentile(true, [5, 95])  # the roof's range: a jump of a few percent shows
    points = np.asarray(poly.points)
    for k, title in enumerate(titles):
        plotter.subplot(k, 0)
        mesh = poly.copy()
        mesh.point_data[field] = true if k == 0 else panels[k - 1][1]
        plotter.add_mesh(mesh, scalars=field, cmap="coolwarm", clim=(lo, hi), show_scalar_bar=k == 0,
                         scalar_bar_args={"title": f"{field} [m2/s2]", "vertical": True})  # fmt: skip
        if k:
            i, j = panels[k - 1][2]
            lines = np.column_stack([np.full(len(i), 2), i, j]).ravel()
            plotter.add_mesh(pv.PolyData(points, lines=lines), color="black", line_width=1.0, opacity=0.3)
        plotter.add_text(title, font_size=11)
        plotter.view_xy()
        plotter.camera.zoom(2.1)
    with atomic_output(path) as tmp:
        plotter.screenshot(str(tmp))
    plotter.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run directory or checkpoint")
    parser.add_argument("cases", type=Path, nargs="+", help="case folders with surface.vtu")
    parser.add_argument("--compare", type=Path, action="append", default=[], help="another run (repeatable)")
    parser.add_argument("--field", default="p")
    parser.add_argument("--picture", type=Path, help="PNG of the first case: the solver's field and every run's")
    args = parser.parse_args()
    runs = [args.run, *args.compare]
    print("| run | case | edges crossing | predicted across / within | solver across / within | ratio |")
    print("|---|---|---:|---:|---:|---:|")
    panels = []
    for run in runs:
        ckpt = load_checkpoint(run)
        label = run.name if run.is_dir() else run.parent.parent.name
        reads = "whole cloud" if ckpt.model.config.anchors is None else f"reads {ckpt.model.config.anchors.reads}"
        for c, case in enumerate(args.cases):
            surface = read_fields(case / "surface.vtu", [args.field])  # at the points (the file has point data)
            poly = as_polydata(surface.mesh)
            s = surface_arrays(surface)
            true = surface.fields[args.field][:, 0]
            predicted, patch = predict_with_patches(ckpt, poly, s, args.field)
            i, j, length = edges_of(poly)
            crossing = patch[i] != patch[j]
            r_pred, r_true = (across_over_within(x, i, j, length, crossing) for x in (predicted, true))
            share = f"{crossing.sum():,} of {len(crossing):,}"
            cells = f"{share} | {r_pred:.2f} | {r_true:.2f} | {r_pred / r_true:.2f}"
            print(f"| {label} | {case.name} | {cells} |", flush=True)
            if c == 0:
                panels.append((f"{label} ({reads})", predicted, (i[crossing], j[crossing])))
                first = (poly, true)
    if args.picture:
        picture(*first, panels, args.picture, args.field)
        print(f"picture: {args.picture}")


if __name__ == "__main__":
    main()
