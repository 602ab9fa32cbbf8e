"""One prepared sample: a compact safetensors file of named float arrays plus JSON metadata.

Keys: ``surface/points`` (n, 3), ``surface/normals`` (n, 3) outward,
``surface/area`` (n, 3) and ``surface/area_norm`` (n,) — each point's share of
the area vectors (pointing into the body) and areas of its cells, so that
forces of point fields are sums over points — ``surface/<field>`` (n, k);
``volume/points`` (m, 3), ``volume/distance`` (m,), ``volume/direction``
(m, 3) (unit, towards the surface), ``volume/<field>`` (m, k); ``anchors/surface_points`` and
``anchors/surface_normals`` (262144, 3), area-weighted samples of the faces (``data/anchors.py``); and ``order``
(n + m,) int64, the ball-tree order of the cloud [surface ; volume]. Files are
written under a temporary name and renamed; reading never unpickles anything.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msptcli.errors import DatasetError
from msptcli.io.atomic import atomic_output


@dataclass
class Sample:
    """The arrays and metadata of one prepared case."""

    name: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_surface(self) -> int:
        return int(self.arrays["surface/points"].shape[0])

    @property
    def num_volume(self) -> int:
        return int(self.arrays["volume/points"].shape[0]) if "volume/points" in self.arrays else 0

    def field(self, part: str, name: str) -> np.ndarray:
        return self.arrays[f"{part}/{name}"]


def save_sample(sample: Sample, path: str | os.PathLike[str]) -> Path:
    """Write ``sample`` atomically as safetensors (float arrays as float32, ``order`` as int64)."""
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(v) for k, v in sample.arrays.items()}
    meta = {"name": sample.name, "meta": json.dumps(sample.meta, sort_keys=True)}
    with atomic_output(path) as tmp:
        save_file(arrays, str(tmp), metadata=meta)
    return Path(path)


def load_sample(path: str | os.PathLike[str], *, keys: list[str] | None = None) -> Sample:
    """Read a sample (memory-mapped; only ``keys`` if given). :class:`DatasetError` if unreadable."""
    from safetensors import safe_open

    p = Path(path)
    try:
        with safe_open(str(p), framework="numpy") as f:
            header = f.metadata() or {}
            available = list(f.keys())
            names = available if keys is None else [k for k in keys if k in available]
            arrays = {k: f.get_tensor(k) for k in names}
    except Exception as exc:  # a truncated or foreign file
        raise DatasetError(f"{p}: not a readable prepared sample ({str(exc).splitlines()[0]})") from None
    return Sample(name=header.get("name", p.stem), arrays=arrays, meta=json.loads(header.get("meta", "{}")))


_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8, "BOOL": np.bool_}


def map_sample(path: str | os.PathLike[str]) -> Sample:
    """A sample whose arrays are memory-mapped from the file: nothing is read until it is indexed.

    Training draws a few thousand rows of each array per step; with a map only those pages are
    read, so a dataset of million-point samples need not fit in memory. The safetensors layout is
    an 8-byte header length, a JSON header of dtypes, shapes and byte offsets, then the data.
    """
    p = Path(path)
    try:
        with p.open("rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
        meta = header.pop("__metadata__", {}) or {}
        start = 8 + header_len
        arrays = {}
        for key, info in header.items():
            begin, end = info["data_offsets"]
            dtype = _DTYPES[info["dtype"]]
            count = (end - begin) // np.dtype(dtype).itemsize
            flat = (
                np.memmap(p, dtype=dtype, mode="r", offset=start + begin, shape=(count,))
                if count
                else np.zeros(0, dtype)
            )
            arrays[key] = flat.reshape(info["shape"])
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"{p}: not a readable prepared sample ({exc})") from None
    return Sample(name=meta.get("name", p.stem), arrays=arrays, meta=json.loads(meta.get("meta", "{}")))


def read_sample_meta(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The metadata of a sample file, or None if the file is missing or unreadable (e.g. cut short)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return json.loads((f.metadata() or {}).get("meta", "{}"))
    except Exception:
        return None
