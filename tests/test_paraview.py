"""Debian's ParaView opens what `mspt predict` writes and renders the predicted fields.

Runs ``pvpython`` (ParaView's own Python and VTK, not ours) under a virtual X display; skipped
only where ``pvpython`` or ``xvfb-run`` is not installed.
"""

from __future__ import annotations

import pyvista as pv
from helpers import distinct_colours, is_png, needs_pvpython, run_pvpython

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
