import os

import numpy as np
import pytest

# Off-screen rendering without an X display (pyvista screenshots in tests).
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261126)
