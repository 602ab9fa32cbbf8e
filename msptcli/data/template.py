"""Volume points for a geometry that comes without a volume mesh, placed as in the training meshes.

At training time the volume points of the first training case are stored relative to
their body's bounding box (the *template*, kept in every checkpoint); ``mspt predict``
maps them onto a new body's box and keeps those outside the body, so the model sees
volume points spread as in training (domain extent, refinement near the body).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from msptcli.data.manifest import SampleEntry
from msptcli.data.sample import load_sample
from msptcli.geometry.sampling import outside_body

#: Volume points kept in a template.
TEMPLATE_POINTS = 1 << 17


def volume_template(data_dir: Path, entries: list[SampleEntry]) -> np.ndarray | None:
    """(M, 3) float32: the first of ``entries``' volume points relative to its body's box, or None."""
    sample = load_sample(data_dir / entries[0].file, keys=["surface/points", "volume/points"])
    if "volume/points" not in sample.arrays:
        return None
    body = sample.arrays["surface/points"].astype(np.float64)
    lo, size = body.min(axis=0), np.ptp(body, axis=0)
    volume = sample.arrays["volume/points"].astype(np.float64)
    keep = np.random.default_rng(0).permutation(len(volume))[:TEMPLATE_POINTS]
    return ((volume[np.sort(keep)] - lo) / size).astype(np.float32)


def place_template(template: np.ndarray, surface: Any) -> np.ndarray:
    """(m, 3) float64: ``template`` mapped onto the bounding box of ``surface``, points inside the body dropped."""
    body = np.asarray(surface.points, dtype=np.float64)
    lo, size = body.min(axis=0), np.ptp(body, axis=0)
    points = lo + template.astype(np.float64) * size
    return points[outside_body(points, surface)]
