"""Validation metrics that are not forces (the force code and its tests live in ``msptcli.physics``)."""

from __future__ import annotations

import numpy as np

from msptcli.evaluate import relative_l2


def test_relative_l2():
    true = np.array([[3.0, 4.0]])
    assert relative_l2(true, true) == 0
    assert np.isclose(relative_l2(true * 1.1, true), 0.1)
