"""The manifest of a prepared dataset: fields, split, normalisation statistics, version.

``DATA_DIR/manifest.json`` is written last and atomically: a dataset without
it is incomplete (``prepare`` was interrupted) and is refused by ``train``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from msptcli import __version__
from msptcli.config import MsptConfig, SplitConfig, validate_config
from msptcli.data.sample import Sample, load_sample, map_sample
from msptcli.errors import DatasetError
from msptcli.io.atomic import atomic_output

MANIFEST = "manifest.json"


class FieldStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mean: list[float]
    std: list[float]


class Stats(BaseModel):
    """Normalisation statistics, from the training split only."""

    model_config = ConfigDict(extra="forbid")

    coord_mean: list[float]  # (3,)
    coord_scale: float  # one scale for all axes: geometry is not distorted
    surface: dict[str, FieldStats]
    volume: dict[str, FieldStats]
    #: Transient datasets: the one-step change of each field (the targets' scale) and the conditions (inputs).
    increments: dict[str, FieldStats] = {}
    conditions: dict[str, FieldStats] = {}

    def check(self, fields: dict[str, dict[str, int]]) -> None:
        """Raise ``ValueError`` (one line) unless these statistics fit ``fields`` (part -> field -> components):
        three finite coordinate means, a positive finite scale, and per field as many finite means and
        positive finite standard deviations as it has components."""
        if len(self.coord_mean) != 3 or not np.isfinite(self.coord_mean).all():
            raise ValueError(f"coordinate means must be 3 finite numbers, got {self.coord_mean}")
        if not (np.isfinite(self.coord_scale) and self.coord_scale > 0):
            raise ValueError(f"the coordinate scale must be positive, got {self.coord_scale}")
        for part, table in (("surface", self.surface), ("volume", self.volume)):
            for name, k in fields.get(part, {}).items():
                s = table.get(name)
                if s is None:
                    raise ValueError(f"no statistics for the {part} field {name!r}")
                if len(s.mean) != k or len(s.std) != k:
                    raise ValueError(
                        f"statistics of the {part} field {name!r} have {len(s.mean)} means and {len(s.std)} "
                        f"deviations for {k} components"
                    )
                if not (np.isfinite(s.mean).all() and np.isfinite(s.std).all() and min(s.std) > 0):
                    raise ValueError(f"statistics of the {part} field {name!r} are not finite and positive")


class SampleEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    file: str
    split: str
    num_surface: int
    num_volume: int
    reference_area: float | None = None
    params: dict[str, Any] = {}
    num_steps: int | None = None  # transient: snapshots in the series
    dt: float | None = None  # transient: their spacing


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mspt_version: str
    config: dict[str, Any]
    fields: dict[str, dict[str, int]]  # part -> field -> components
    surface_location: str
    samples: list[SampleEntry]
    stats: Stats
    skipped: list[dict[str, str]] = []
    kind: Literal["steady", "transient"] = "steady"

    def split(self, name: str) -> list[SampleEntry]:
        return [s for s in self.samples if s.split == name]

    @property
    def mspt_config(self) -> MsptConfig:
        return validate_config(self.config, source="manifest")

    def check_samples(self, data_dir: Path, entries: list[SampleEntry]) -> None:
        """:meth:`check_sample` for each of ``entries``; only the files' headers are read."""
        for entry in entries:
            path = data_dir / entry.file
            self.check_sample(map_sample(path), path)

    def check_sample(self, sample: Sample, path: Path) -> None:
        """Raise :class:`DatasetError` (naming ``path``) unless ``sample`` holds every field of the manifest,
        one row per point, with the manifest's number of components: an edited manifest or a sample of
        another dataset would otherwise be trained on (broadcast) or fail deep inside training."""
        if self.kind == "transient":
            self._check_series(sample, path)
            return
        points = {part: sample.arrays.get(f"{part}/points") for part in ("surface", "volume")}
        for part, names in self.fields.items():
            for name, k in names.items():
                values, cloud = sample.arrays.get(f"{part}/{name}"), points.get(part)
                if values is None or cloud is None:
                    raise DatasetError(f"{path}: no {part} field {name!r}, which the manifest lists")
                n = len(cloud)
                if values.ndim != 2 or len(values) != n:
                    raise DatasetError(
                        f"{path}: {part} field {name!r} has shape {values.shape}, expected ({n}, {k}) for {n} points"
                    )
                if values.shape[1] != k:
                    raise DatasetError(
                        f"{path}: {part} field {name!r} has {values.shape[1]} components, the manifest says {k}"
                    )

    def _check_series(self, sample: Sample, path: Path) -> None:
        """A transient sample: every field as (T, N, k) on its N mesh points, T snapshot times."""
        points, times = sample.arrays.get("mesh/points"), sample.arrays.get("times")
        if points is None or times is None or "order" not in sample.arrays:
            raise DatasetError(f"{path}: not a prepared transient sample (no mesh/points, times or order)")
        for name, k in self.fields.get("volume", {}).items():
            values = sample.arrays.get(f"series/{name}")
            expected = (len(times), len(points), k)
            if values is None:
                raise DatasetError(f"{path}: no series of the field {name!r}, which the manifest lists")
            if tuple(values.shape) != expected:
                raise DatasetError(f"{path}: field {name!r} has shape {tuple(values.shape)}, expected {expected}")


def assign_split(names: list[str], split: SplitConfig) -> dict[str, str]:
    """Deterministic split: explicit lists first, the rest by seeded fractions (sorted names, then shuffled)."""
    out: dict[str, str] = {}
    for part in ("train", "val", "test"):
        for name in getattr(split, part) or []:
            if name not in names:
                raise DatasetError(f"split.{part} names {name!r}, which is not among the prepared cases")
            out[name] = part
    rest = sorted(n for n in names if n not in out)
    order = np.random.default_rng(split.seed).permutation(len(rest))
    n = len(rest)
    n_val = round(split.fractions[1] * n)
    n_test = round(split.fractions[2] * n)
    if split.fractions[0] > 0 and n_val + n_test >= n and n > 0:  # keep at least one training case
        n_test = max(0, n - 1 - n_val)
        n_val = min(n_val, n - 1)
    for rank, i in enumerate(order):
        out[rest[i]] = "val" if rank < n_val else "test" if rank < n_val + n_test else "train"
    return out


def compute_stats(data_dir: Path, entries: list[SampleEntry], fields: dict[str, dict[str, int]]) -> Stats:
    """Means and standard deviations over every point of the training samples (float64 sums)."""
    return stats_from_moments([sample_moments(load_sample(data_dir / e.file), fields) for e in entries], fields)


class ArrayMoments(BaseModel):
    """The float64 count, sum and sum of squares of each component of one array of one sample."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    n: int
    sum: list[float]
    sum_sq: list[float]


def sample_moments(sample: Sample, fields: dict[str, dict[str, int]]) -> dict[str, ArrayMoments]:
    """The moments of a sample's arrays that the statistics sum: its points (``surface/points``,
    ``volume/points``) and each of ``fields`` (``PART/NAME``). Summed in the training samples' order by
    :func:`stats_from_moments`, they give what one pass over the samples gives, bit for bit."""
    keys = ["surface/points", *(["volume/points"] if "volume/points" in sample.arrays else [])]
    keys += [f"{part}/{name}" for part, names in fields.items() for name in names]
    moments = {}
    for key in keys:
        x = np.asarray(sample.arrays[key], dtype=np.float64)
        x = x.reshape(len(x), -1)
        moments[key] = ArrayMoments(n=len(x), sum=x.sum(0).tolist(), sum_sq=(x * x).sum(0).tolist())
    return moments


def stats_from_moments(samples: list[dict[str, ArrayMoments]], fields: dict[str, dict[str, int]]) -> Stats:
    """The statistics of the training samples from their :func:`sample_moments`, in the samples' order."""
    if not samples:
        raise DatasetError("no training samples: the split leaves the training set empty")
    coord = _Moments()
    parts = {part: {name: _Moments() for name in names} for part, names in fields.items()}
    for moments in samples:
        coord.add(moments["surface/points"])
        if "volume/points" in moments:
            coord.add(moments["volume/points"])
        for part, names in parts.items():
            for name, m in names.items():
                m.add(moments[f"{part}/{name}"])
    mean, std = coord.result()
    return Stats(
        coord_mean=mean.tolist(),
        coord_scale=float(np.sqrt(np.mean(std**2))),
        surface={n: FieldStats(**_ms(m)) for n, m in parts.get("surface", {}).items()},
        volume={n: FieldStats(**_ms(m)) for n, m in parts.get("volume", {}).items()},
    )


def write_manifest(manifest: Manifest, data_dir: Path) -> Path:
    path = data_dir / MANIFEST
    with atomic_output(path) as tmp:
        tmp.write_text(manifest.model_dump_json(indent=1))
    return path


def read_manifest(data_dir: str | os.PathLike[str]) -> Manifest:
    """The manifest of a prepared dataset; :class:`DatasetError` if missing, incomplete or foreign, or if a
    sample's file is not a relative path inside the dataset folder (``../../etc/passwd`` would be read)."""
    d = Path(data_dir)
    if not d.is_dir():
        raise DatasetError(f"{d}: no such dataset directory (run `mspt prepare` first)")
    path = d / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{d}: no {MANIFEST}; the dataset is incomplete (re-run `mspt prepare`)")
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text()))
        manifest.stats.check(manifest.fields)
    except Exception as exc:
        raise DatasetError(f"{path}: not a valid mspt manifest ({str(exc).splitlines()[0]})") from None
    for entry in manifest.samples:
        file = PurePosixPath(entry.file)
        if file.is_absolute() or ".." in file.parts or not file.parts:
            raise DatasetError(f"{path}: sample {entry.name!r} is {entry.file!r}, a path outside the dataset folder")
    return manifest


def new_manifest(config: MsptConfig, **kwargs: Any) -> Manifest:
    return Manifest(mspt_version=__version__, config=config.model_dump(mode="json"), **kwargs)


class _Moments:
    def __init__(self) -> None:
        self.n = 0
        self.s1: np.ndarray | float = 0.0
        self.s2: np.ndarray | float = 0.0

    def add(self, m: ArrayMoments) -> None:
        self.n += m.n
        self.s1 = self.s1 + np.asarray(m.sum, dtype=np.float64)
        self.s2 = self.s2 + np.asarray(m.sum_sq, dtype=np.float64)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        mean = np.asarray(self.s1) / max(self.n, 1)
        var = np.maximum(np.asarray(self.s2) / max(self.n, 1) - mean**2, 0.0)
        return mean, np.sqrt(var)


def _ms(m: _Moments) -> dict[str, list[float]]:
    mean, std = m.result()
    return {"mean": mean.tolist(), "std": np.maximum(std, 1e-12).tolist()}
