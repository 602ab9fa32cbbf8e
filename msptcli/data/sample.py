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
    read_header(p)  # a foreign or cut file is named before safetensors allocates what its header claims
    try:
        with safe_open(str(p), framework="numpy") as f:
            header = f.metadata() or {}
            available = list(f.keys())
            names = available if keys is None else [k for k in keys if k in available]
            arrays = {k: f.get_tensor(k) for k in names}
    except Exception as exc:  # a truncated or foreign file
        raise DatasetError(f"{p}: not a readable prepared sample ({str(exc).splitlines()[0]})") from None
    return Sample(name=header.get("name", p.stem), arrays=arrays, meta=json.loads(header.get("meta", "{}")))


_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32, "I16": np.int16,
    "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}  # fmt: skip
_MAX_HEADER = 100_000_000  # bytes; safetensors' own limit


def read_header(path: Path) -> tuple[dict[str, Any], dict[str, Any], int]:
    """The tensors, metadata and data offset of a safetensors file, checked before anything is allocated.

    The layout is an 8-byte little-endian header length n, n bytes of JSON {key: {dtype, shape,
    data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the data from byte 8 + n. A header
    length past the file's end, JSON that is not such a table, or a tensor whose bytes are not
    dtype x shape or lie past the end is one :class:`DatasetError` naming ``path``: a foreign file
    (a zip, a text file) or one cut short would otherwise ask for gigabytes or read garbage.
    """

    def refuse(why: str) -> DatasetError:
        return DatasetError(f"{path}: not a readable prepared sample ({why})")

    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            n = int.from_bytes(f.read(8), "little")
            if size < 8 or not 2 <= n <= min(size - 8, _MAX_HEADER):
                raise refuse(f"a header of {n} bytes in a file of {size} bytes: not a safetensors file")
            raw = f.read(n)
    except OSError as exc:
        raise refuse(exc.strerror or str(exc)) from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise refuse("its header is not JSON: not a safetensors file") from None
    if not isinstance(header, dict):
        raise refuse("its header is not a table of tensors")
    meta = header.pop("__metadata__", None) or {}
    data_size = size - 8 - n
    for key, info in header.items():
        if not (
            isinstance(info, dict)
            and info.get("dtype") in _DTYPES
            and isinstance(info.get("shape"), list)
            and all(isinstance(d, int) and d >= 0 for d in info["shape"])
            and isinstance(info.get("data_offsets"), list)
            and len(info["data_offsets"]) == 2
            and all(isinstance(o, int) for o in info["data_offsets"])
        ):
            raise refuse(f"tensor {key!r} has no dtype, shape and data offsets that mspt reads")
        begin, end = info["data_offsets"]
        expected = int(np.prod(info["shape"], dtype=np.int64)) * np.dtype(_DTYPES[info["dtype"]]).itemsize
        if not 0 <= begin <= end <= data_size or end - begin != expected:
            raise refuse(
                f"tensor {key!r} of shape {info['shape']} ({info['dtype']}) lies at bytes [{begin}, {end}) of "
                f"{data_size}: the file is cut short or not a safetensors file"
            )
    if not isinstance(meta, dict):
        raise refuse("its metadata is not a table")
    return header, meta, 8 + n


def map_sample(path: str | os.PathLike[str]) -> Sample:
    """A sample whose arrays are memory-mapped from the file: nothing is read until it is indexed.

    Training draws a few thousand rows of each array per step; with a map only those pages are
    read, so a dataset of million-point samples need not fit in memory. The layout is checked
    first (:func:`read_header`).
    """
    p = Path(path)
    header, meta, start = read_header(p)
    arrays = {}
    try:
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
        sample_meta = json.loads(meta.get("meta", "{}"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{p}: not a readable prepared sample ({exc})") from None
    return Sample(name=meta.get("name", p.stem), arrays=arrays, meta=sample_meta)


def read_sample_meta(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The metadata of a sample file, or None if the file is missing or unreadable (e.g. cut short)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            return json.loads((f.metadata() or {}).get("meta", "{}"))
    except Exception:
        return None
