"""PNG pictures of meshes, rendered off-screen (no display needed), written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from msptcli.io.atomic import atomic_output


def render_png(mesh: Any, path: str | os.PathLike[str], **add_mesh: Any) -> Path:
    """An isometric view of ``mesh`` (a pyvista dataset) as a 1280x800 PNG at ``path``.

    ``add_mesh`` goes to ``pyvista.Plotter.add_mesh`` (scalars, colour map, scalar bar, ...).
    """
    if not os.environ.get("DISPLAY"):
        # Render through EGL without an X server (VTK would otherwise try X first and warn).
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    import pyvista as pv

    plotter = pv.Plotter(off_screen=True, window_size=(1280, 800))
    try:
        plotter.add_mesh(mesh, **add_mesh)
        plotter.view_isometric()
        with atomic_output(path) as tmp:
            plotter.screenshot(str(tmp))
    finally:
        plotter.close()
    return Path(path)
