"""The prepared-sample file: loaded whole or memory-mapped, the same arrays."""

from __future__ import annotations

import numpy as np
import pytest

from msptcli.data.sample import Sample, load_sample, map_sample, save_sample
from msptcli.errors import DatasetError


def test_memory_map_equals_load(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "surface/points": rng.random((50, 3), dtype=np.float32),
        "surface/p": rng.random((50, 1), dtype=np.float32),
        "volume/distance": rng.random(7).astype(np.float32),
        "order": rng.permutation(57).astype(np.int64),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }
    path = save_sample(Sample("case", arrays, {"num_surface": 50}), tmp_path / "case.safetensors")
    loaded, mapped = load_sample(path), map_sample(path)
    assert mapped.name == loaded.name == "case" and mapped.meta == loaded.meta == {"num_surface": 50}
    for key, value in arrays.items():
        assert mapped.arrays[key].dtype == value.dtype and mapped.arrays[key].shape == value.shape
        assert np.array_equal(mapped.arrays[key], value) and np.array_equal(loaded.arrays[key], value)
    assert isinstance(mapped.arrays["surface/points"], np.memmap)


def test_truncated_sample_is_refused(tmp_path):
    path = save_sample(Sample("c", {"x": np.ones((10, 3), np.float32)}), tmp_path / "c.safetensors")
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DatasetError, match="not a readable prepared sample"):
        map_sample(path)
    with pytest.raises(DatasetError, match="not a readable prepared sample"):
        load_sample(path)
