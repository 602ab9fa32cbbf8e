"""The one builder of a cloud's model inputs (data/features.py::cloud_inputs), which training batches,
validation, the anchors and predict all call: the rows of each part where the module docstring puts them."""

from __future__ import annotations

import numpy as np

from msptcli.data.features import IN_FEATURES, cloud_inputs, cloud_part
from msptcli.data.manifest import FieldStats, Stats

STATS = Stats(coord_mean=[1.0, 2.0, 3.0], coord_scale=2.0, surface={"p": FieldStats(mean=[0.0], std=[1.0])}, volume={})


def arrays(n: int, m: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A sample's geometry arrays: ``n`` surface and ``m`` volume points (float32, as prepared)."""
    rng = np.random.default_rng(seed)
    out = {f"surface/{k}": rng.normal(size=(n, 3)).astype(np.float32) for k in ("points", "normals")}
    out |= {f"volume/{k}": rng.normal(size=(m, 3)).astype(np.float32) for k in ("points", "direction")}
    out["volume/distance"] = rng.random(m).astype(np.float32)
    return out


def test_cloud_inputs_put_each_part_where_the_docstring_says():
    a = arrays(5, 7)
    points, inputs = cloud_inputs(STATS, cloud_part(a, "surface"), cloud_part(a, "volume"))
    assert points.shape == (12, 3) and points.dtype == np.float32  # the points keep their dtype
    assert inputs.shape == (12, IN_FEATURES) and inputs.dtype == np.float32
    assert np.array_equal(points, np.concatenate([a["surface/points"], a["volume/points"]]))
    coords = (points.astype(np.float64) - np.array([1.0, 2.0, 3.0])) / 2.0
    assert np.allclose(inputs[:, 0:3], coords, atol=1e-6)
    s, v = inputs[:5], inputs[5:]
    assert np.array_equal(s[:, 3:6], a["surface/normals"]) and not s[:, 6:10].any() and (s[:, 10] == 1).all()
    assert not v[:, 3:6].any() and not v[:, 10].any()
    assert np.allclose(v[:, 6], a["volume/distance"] / 2.0) and np.array_equal(v[:, 7:10], a["volume/direction"])


def test_cloud_inputs_of_chosen_rows_and_of_the_surface_alone():
    a = arrays(6, 4)
    s_rows, v_rows = np.array([4, 0, 2]), np.array([3, 1])
    points, inputs = cloud_inputs(STATS, cloud_part(a, "surface", s_rows), cloud_part(a, "volume", v_rows))
    whole_points, whole = cloud_inputs(STATS, cloud_part(a, "surface"), cloud_part(a, "volume"))
    rows = np.concatenate([s_rows, 6 + v_rows])
    assert np.array_equal(points, whole_points[rows]) and np.array_equal(inputs, whole[rows])
    alone_points, alone = cloud_inputs(STATS, cloud_part(a, "surface"))
    assert np.array_equal(alone_points, whole_points[:6]) and np.array_equal(alone, whole[:6])
    assert np.array_equal(cloud_inputs(STATS, cloud_part(a, "surface"), {})[1], alone)  # an empty volume: none
