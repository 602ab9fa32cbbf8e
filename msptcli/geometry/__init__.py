"""Geometry on point clouds: the ball-tree ordering and its patches (see ``balltree.py``)."""

from msptcli.geometry.balltree import *  # noqa: F403  (the public API is balltree's __all__)
from msptcli.geometry.balltree import __all__ as __all__
