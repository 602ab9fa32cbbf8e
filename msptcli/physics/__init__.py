"""Physics on surfaces: forces and force coefficients from cell or point fields (see ``forces.py``)."""

from msptcli.physics.forces import *  # noqa: F403  (the public API is forces' __all__)
from msptcli.physics.forces import __all__ as __all__
