"""Debian's ParaView opens what `mspt predict` writes and renders the predicted fields.

Runs ``pvpython`` (ParaView's own Python and VTK, not ours) under a virtual X display; skipped
only where ``pvpython`` or ``xvfb-run`` is not installed.
"""

from __future__ import annotations

import json

import numpy as np
import pyvista as pv
from helpers import distinct_colours, is_png, needs_pvpython, ok, run_pvpython

pytest_plugins = ["helpers"]

SCRIPT = """
import sys
from paraview.simple import ColorBy, CreateView, Delete, OpenDataFile, ResetCamera, SaveScreenshot, Show

for path, field, png in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):
    source = OpenDataFile(path)
    source.UpdatePipeline()
    data = source.GetDataInformation()
    info = source.GetPointDataInformation()
    names = sorted(info.GetArray(i).GetName() for i in range(info.GetNumberOfArrays()))
    print(f"OPENED {path} points={data.GetNumberOfPoints()} arrays={','.join(names)}")
    view = CreateView("RenderView")
    view.ViewSize = [800, 600]
    display = Show(source, view)
    ColorBy(display, ("POINTS", field))
    display.RescaleTransferFunctionToDataRange(True)
    low, high = source.PointData[field].GetRange(-1)
    print(f"COLOURED {path} by={field} range={low:.6g}..{high:.6g}")
    ResetCamera(view)
    SaveScreenshot(png, view, ImageResolution=[800, 600])
    Delete(view)
"""


@needs_pvpython
def test_paraview_renders_predicted_surface_and_volume(predicted_stl, tmp_path):
    name = "case_0003_geometry"
    surface, volume = predicted_stl.out / f"{name}.vtp", predicted_stl.out / f"{name}_volume.vtu"
    script = tmp_path / "render.py"
    script.write_text(SCRIPT)
    pngs = {"p": tmp_path / "surface_p.png", "U": tmp_path / "volume_U.png"}
    args = [surface, "p", pngs["p"], volume, "U", pngs["U"]]
    done = run_pvpython(script, *args)
    assert done.returncode == 0, done.stdout + done.stderr

    lines = done.stdout.splitlines()
    for path, field in ((surface, "p"), (volume, "U")):
        mesh = pv.read(path)
        opened = f"OPENED {path} points={mesh.n_points} arrays={','.join(sorted(mesh.point_data.keys()))}"
        assert opened in lines, done.stdout
        coloured = next(line for line in lines if line.startswith(f"COLOURED {path} by={field} "))
        low, high = (float(x) for x in coloured.rsplit("=", 1)[1].split(".."))
        assert low < high  # a field that varies, not an empty or constant array
    assert "arrays=p,p_std,wallShearStress,wallShearStress_std" in done.stdout  # the fields and their std (sorted)
    assert "arrays=U,U_std,p,p_std" in done.stdout
    for png in pngs.values():
        assert is_png(png, min_bytes=10_000) and distinct_colours(png) > 50


GRID_SCRIPT = """
import json
import sys
from paraview import servermanager
from paraview.simple import Contour, OpenDataFile, Slice, StreamTracer
from vtk.util.numpy_support import vtk_to_numpy

path, (z, level, x0, y0, y1) = sys.argv[1], json.load(open(sys.argv[2]))  # ParaView reads "-100" as an option
source = OpenDataFile(path)
cut = Slice(Input=source)
cut.SliceType = "Plane"
cut.SliceType.Origin = [0, 0, z]
cut.SliceType.Normal = [0, 0, 1]
data = servermanager.Fetch(cut)
p = vtk_to_numpy(data.GetPointData().GetArray("p"))
print(f"SLICE points={data.GetNumberOfPoints()} p={p.min():.9g}..{p.max():.9g}")
contour = Contour(Input=source, ContourBy=["POINTS", "p"], Isosurfaces=[level])
contour.UpdatePipeline()
print(f"CONTOUR points={contour.GetDataInformation().GetNumberOfPoints()}")
tracer = StreamTracer(Input=source, SeedType="Line")
tracer.Vectors = ["POINTS", "U"]
tracer.SeedType.Point1, tracer.SeedType.Point2, tracer.SeedType.Resolution = [x0, y0, z], [x0, y1, z], 10
lines = servermanager.Fetch(tracer)
print(f"STREAM points={lines.GetNumberOfPoints()} lines={lines.GetNumberOfCells()}")
"""


@needs_pvpython
def test_paraview_slices_contours_and_traces_the_volume_grid(trained, design_case, tmp_path):
    geometry = design_case / "geometry.stl"
    args = ("--volume-points", 0, "--volume-grid", "48,16,16", "--uncertainty", 0)
    ok("predict", trained.run, geometry, *args, "-o", tmp_path / "out")
    path = tmp_path / "out" / "case_0003_geometry_grid.vti"
    grid, body = pv.read(path), pv.read(geometry)
    z = 0.5 * (body.bounds[4] + body.bounds[5])  # through the body: the slice has a masked hole
    level = float(np.median(grid["p"]))
    x0 = grid.bounds[0] + 0.1 * (grid.bounds[1] - grid.bounds[0])  # upstream of the body
    script, numbers = tmp_path / "grid.py", tmp_path / "numbers.json"
    script.write_text(GRID_SCRIPT)
    numbers.write_text(json.dumps([z, level, x0, body.bounds[2], body.bounds[3]]))
    done = run_pvpython(script, path, numbers)
    assert done.returncode == 0, done.stdout + done.stderr
    said = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.split(" ")[0].isupper())

    cut = grid.slice(normal="z", origin=(0.0, 0.0, z))  # VTK's own cutter, here
    points, p_range = said["SLICE"].split()
    assert int(points.split("=")[1]) > 0
    low, high = (float(x) for x in p_range.split("=")[1].split(".."))
    # the values ParaView interpolates on the slice are the grid's (5.11 gave garbage with a vector active)
    assert low < high and np.allclose([low, high], [cut["p"].min(), cut["p"].max()], rtol=1e-4)
    assert int(said["CONTOUR"].split("=")[1]) > 0
    stream = dict(kv.split("=") for kv in said["STREAM"].split())
    assert int(stream["lines"]) > 0 and int(stream["points"]) > 2 * int(stream["lines"])  # lines that advance
