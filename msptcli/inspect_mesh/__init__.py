"""``mspt inspect``: what mesh files and case folders hold, and the config lines that would read them.

``mesh.py`` describes one file (size, cells, bounds, arrays, a surface's closure), ``suggest.py`` guesses
which arrays are pressure, wall shear and velocity, and ``inputs.py`` resolves the command's inputs (files,
or case folders found as ``mspt prepare`` finds them) into one :class:`Inspection` each.
"""

from msptcli.inspect_mesh.inputs import Inspection, inspect_inputs
from msptcli.inspect_mesh.mesh import ArrayInfo, MeshInfo, SurfaceInfo, describe_mesh
from msptcli.inspect_mesh.suggest import Suggestion, suggest

__all__ = ["ArrayInfo", "Inspection", "MeshInfo", "Suggestion", "SurfaceInfo", "describe_mesh", "inspect_inputs",
           "suggest"]  # fmt: skip
