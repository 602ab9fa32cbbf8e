"""Is a new body like the bodies the model was trained on? Units, frame and range, before the model runs.

A checkpoint records the :mod:`~msptcli.trust.shape` features of every training body
(:class:`TrainingShapes`). A new body is compared with them in three ways:

1. **Units.** Its size (the square root of its area; a transient case's outline: its perimeter) over the
   training bodies' median size. A ratio beyond ``UNITS_FACTOR`` (or below its inverse) is no design
   variation but a file in other units: it is refused unless the user says ``--force``, and the message
   names the unit that fits (mm, cm, in, ft) with the option that fixes it (``--units mm`` or
   ``--scale 0.001``; a rollout's series: written in the training cases' units).
2. **Range.** Each feature against the training bodies' range; a value beyond it by more than ``WARN``
   (``OUT``) of the range's span is out of range (far out of range). Sizes are compared as logarithms
   (twice as long is as far as half as long); a span is never taken below a floor
   (``LOG_FLOOR`` for sizes, ``POSITION_FLOOR`` of the median length for positions, ``RATIO_FLOOR``),
   so a training set whose bodies all sit at the same place does not flag a millimetre's move.
3. **Nearest training body.** The distance to the nearest training body in the features scaled by the
   training spread (the same floors), as a root mean square over the features. Its *percentile* is the
   share of training bodies that are nearer to their own nearest other training body (leave one out):
   0-100 inside the training family, 100 beyond every training body's distance. A new body further than
   ``NEIGHBOUR_FACTOR`` times the largest leave-one-out distance is flagged even when each feature on its
   own is in range (a combination the training set never had).

The verdict: ``out of range`` (a feature far out of range), ``warn`` (a feature out of range, or the
nearest-body distance beyond its threshold, or the model-level check of ``latent.py`` beyond its own)
or ``ok``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from msptcli.geometry.axes import FLOW, UP
from msptcli.trust.shape import KINDS, Kind, outline_shape_features, shape_features

UNITS: dict[str, float] = {"mm": 1e-3, "cm": 1e-2, "m": 1.0, "in": 0.0254, "ft": 0.3048}  # metres per unit
UNITS_FACTOR = 5.0  # a body this many times larger (or smaller) than the training bodies is in other units
WARN, OUT = 0.1, 1.0  # beyond the training range by these shares of its span: out of range, far out of range
LOG_FLOOR = 0.1  # the least span of a size feature, as a log ratio (about 10%)
POSITION_FLOOR = 0.1  # the least span of a position feature, as a share of the median length
RATIO_FLOOR = 0.1  # the least span of a dimensionless feature
NEIGHBOUR_FACTOR = 1.5

VERDICTS = ("ok", "warn", "out of range")


@dataclass(frozen=True)
class TrainingShapes:
    """The shape features of the training bodies, as a checkpoint records them: a steady model's surfaces, or
    a transient model's outlines (``kind``, ``trust.shape.KINDS``)."""

    names: tuple[str, ...]
    values: np.ndarray  # (n, F) in the order of the kind's features
    kind: str = "surface"

    @property
    def spec(self) -> Kind:
        return KINDS[self.kind]

    def to_json(self) -> dict[str, Any]:
        bodies = {n: [float(v) for v in row] for n, row in zip(self.names, self.values, strict=True)}
        return {"kind": self.kind, "features": list(self.spec.features), "bodies": bodies}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TrainingShapes:
        kind = str(value.get("kind", "surface"))
        if kind not in KINDS:
            raise ValueError(f"shape records of kind {kind!r} are not this mspt's ({', '.join(KINDS)})")
        expected = list(KINDS[kind].features)
        if list(value["features"]) != expected:
            raise ValueError(f"shape features {value['features']} are not this mspt's {expected}")
        names = tuple(value["bodies"])
        rows = np.array([value["bodies"][n] for n in names], dtype=np.float64).reshape(-1, len(expected))
        return cls(names, rows, kind)

    def feature(self, name: str) -> np.ndarray:
        return self.values[:, list(self.spec.features).index(name)]


def training_shapes(
    data_dir: Path,
    entries: Sequence[Any],
    kind: str = "surface",
    *,
    flow: Sequence[float] = FLOW,
    up: Sequence[float] = UP,
) -> TrainingShapes | None:
    """The :class:`TrainingShapes` of a prepared dataset's ``entries``: their surfaces' points and area shares
    (``kind`` "surface", in the frame of the ``flow`` and ``up`` directions), or their planar meshes' points and
    body outlines ("outline", transient samples). None where no sample has a surface (an outline)."""
    from msptcli.data.sample import load_sample

    keys = ["surface/points", "surface/area_norm"] if kind == "surface" else ["mesh/points", "body/edges"]
    names, rows = [], []
    for entry in entries:
        arrays = load_sample(data_dir / entry.file, keys=keys).arrays
        if len(arrays) < 2 or not len(arrays[keys[1]]):
            continue
        names.append(entry.name)
        values = (shape_features(*(arrays[k] for k in keys), flow=flow, up=up) if kind == "surface"
                  else outline_shape_features(*(arrays[k] for k in keys)))  # fmt: skip
        rows.append(list(values.values()))
    return TrainingShapes(tuple(names), np.array(rows, dtype=np.float64), kind) if rows else None


@dataclass
class ShapeCheck:
    """How a body compares with the training bodies (:func:`check_shape`): the ``trust`` of a prediction's JSON."""

    verdict: str
    scale: float  # its size over the training bodies' median size
    score: float  # RMS distance to the nearest training body, in training spreads
    threshold: float  # the score beyond which it is flagged
    percentile: float  # share (%) of training bodies nearer to their own nearest neighbour
    nearest: str  # the nearest training body
    features: dict[str, float]
    out_of_range: dict[str, str] = field(default_factory=dict)  # feature: what it is against the training range
    units: str | None = None  # the refusal for a body in other units, with the fix
    model: Any = None  # the model-level check (trust.latent.LatentCheck), where the checkpoint records latents

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict, "scale": self.scale, "score": self.score, "threshold": self.threshold,
            "percentile": self.percentile, "nearest_training_body": self.nearest, "features": self.features,
            "out_of_range": self.out_of_range, **({"units": self.units} if self.units else {}),
            **({"model": self.model.to_json()} if self.model is not None else {}),
        }  # fmt: skip

    def add_model(self, check: Any) -> None:
        """Join the model-level check (``trust.latent.LatentCheck``): a flagged one makes an ``ok`` a ``warn``."""
        self.model = check
        if check.flagged and self.verdict == "ok":
            self.verdict = "warn"

    def distance_note(self) -> str | None:
        """The finding of the nearest-body distance, where it is beyond its threshold and no feature is out of
        range (which would say more); else None."""
        if self.score > self.threshold and not self.out_of_range:
            return (f"unlike every training body: {self.score:.2f} training spreads from the nearest "
                    f"({self.nearest}), beyond the {self.threshold:.2f} of the training bodies' own")  # fmt: skip
        return None

    def notes(self) -> list[str]:
        """One line per finding, for the terminal."""
        lines = [f"{name} {text}" for name, text in self.out_of_range.items()]
        if (distance := self.distance_note()) is not None:
            lines.append(distance)
        if self.model is not None and self.model.flagged:
            lines.append(self.model.note())
        return lines


def check_shape(shapes: TrainingShapes, features: dict[str, float], *, rescale: bool = True) -> ShapeCheck:
    """Compare a body's features (:func:`~msptcli.trust.shape.shape_features`, or
    :func:`~msptcli.trust.shape.outline_shape_features` for outline records) with the training bodies'.
    ``rescale``: the units refusal names ``--units``/``--scale`` (predict); else it asks for the input in
    metres (a rollout's series: its velocities and time step would need the same conversion)."""
    spec = shapes.spec
    names = list(spec.features)
    train = _comparable(spec, shapes.values)  # (n, F)
    new = _comparable(spec, np.array([[features[n] for n in names]]))[0]  # (F,)
    median_length = float(np.median(shapes.feature("length")))
    floors = np.array([LOG_FLOOR if n in spec.sizes else RATIO_FLOOR if n in spec.ratios
                       else POSITION_FLOOR * median_length for n in names])  # fmt: skip
    low, high = train.min(axis=0), train.max(axis=0)
    span = np.maximum(high - low, floors)
    excess = np.maximum(low - new, new - high) / span  # (F,) > 0: beyond the range, in spans

    out_of_range = {}
    for j, name in enumerate(names):
        if excess[j] > WARN:
            out_of_range[name] = _describe(spec, name, features[name], shapes.feature(name), excess[j])

    spread = np.maximum(train.std(axis=0), floors / 4)
    scaled_train, scaled_new = train / spread, new / spread
    score, nearest, threshold, percentile = nearest_design(scaled_new, scaled_train)
    threshold = threshold if threshold is not None else 1.0

    scale = spec.size_of(features) / float(np.median([spec.size_of(dict(zip(names, row, strict=True)))
                                                      for row in shapes.values]))  # fmt: skip
    units = _units_problem(scale, rescale=rescale)
    far = bool((excess > OUT).any()) or units is not None
    verdict = "out of range" if far else "warn" if out_of_range or score > threshold else "ok"
    return ShapeCheck(
        verdict=verdict, scale=scale, score=float(score), threshold=threshold, percentile=percentile,
        nearest=shapes.names[nearest], features=features, out_of_range=out_of_range, units=units,
    )  # fmt: skip


def unit_scale(units: str | None, scale: float | None) -> float:
    """The factor every coordinate is multiplied by, from ``--units`` or ``--scale`` (at most one)."""
    from msptcli.errors import OptionError

    if units is not None and scale is not None:
        raise OptionError("--units and --scale both rescale the geometry: give one of them")
    if units is not None:
        if units not in UNITS:
            raise OptionError(f"--units {units}: not one of {', '.join(UNITS)}")
        return UNITS[units]
    if scale is not None and not (math.isfinite(scale) and scale > 0):
        raise OptionError(f"--scale must be a positive number, got {scale}")
    return 1.0 if scale is None else float(scale)


def _comparable(spec: Kind, values: np.ndarray) -> np.ndarray:
    """Features as they are compared: sizes as logarithms, the rest as they are."""
    out = np.array(values, dtype=np.float64)
    for j, name in enumerate(spec.features):
        if name in spec.sizes:
            out[:, j] = np.log(np.maximum(out[:, j], 1e-300))
    return out


def nearest_design(new: np.ndarray, train: np.ndarray, min_designs: int = 2) -> tuple[float, int, float | None, float]:
    """The RMS distance of ``new`` (D,) to the nearest row of ``train`` (n, D), that row, the threshold
    (``NEIGHBOUR_FACTOR`` times the largest leave-one-out distance among the rows; None below ``min_designs`` rows
    or when they coincide) and the percentile of the distance among the leave-one-out distances."""

    def nearest(point: np.ndarray, others: np.ndarray) -> tuple[float, int]:
        d = np.sqrt(((others - point) ** 2).mean(axis=1))
        return float(d.min()), int(d.argmin())

    score, index = nearest(new, train)
    loo = np.array([nearest(train[i], np.delete(train, i, axis=0))[0] for i in range(len(train))]
                   if len(train) > 1 else [0.0])  # fmt: skip
    threshold = NEIGHBOUR_FACTOR * float(loo.max()) if len(train) >= min_designs and loo.max() > 0 else None
    return score, index, threshold, 100.0 * float((loo < score).mean())


def _describe(spec: Kind, name: str, value: float, train: np.ndarray, excess: float) -> str:
    unit = spec.features[name]
    unit = f" {unit}" if unit else ""
    how = "far beyond" if excess > OUT else "beyond"
    hint = {
        "centre_x": " (moved along the flow?)", "centre_y": " (moved sideways?)", "centre_z": " (moved up or down?)",
        "bottom": " (moved up or down?)", "alignment": " (turned away from the flow along +x?)",
        "balance_x": " (turned end for end? the flow runs along +x)", "balance_z": " (upside down? up is +z)",
        "domain_length": " (another channel than the training meshes')",
        "domain_height": " (another channel than the training meshes')",
    }.get(name, "")  # fmt: skip
    return f"{value:.4g}{unit} is {how} the training bodies' {train.min():.4g}..{train.max():.4g}{unit}{hint}"


def _units_problem(scale: float, *, rescale: bool = True) -> str | None:
    """The refusal of a body ``scale`` times the training size, where that is a units problem; else None."""
    if 1.0 / UNITS_FACTOR <= scale <= UNITS_FACTOR:
        return None
    unit, metres = min(UNITS.items(), key=lambda kv: abs(math.log(scale * kv[1])))
    size = f"{scale:.3g}x" if scale >= 1 else f"1/{1 / scale:.3g} of"
    named = unit != "m" and abs(math.log(scale * metres)) < math.log(2.0)  # within 2x of a unit's factor
    if not rescale:
        looks = f"its coordinates look like {unit}: " if named else ""
        return (f"the body is {size} the training bodies' size: {looks}write the series in the training cases' units "
                "(coordinates, velocities and time step alike), or pass --force to roll out anyway")  # fmt: skip
    if named:
        fix = f"its coordinates look like {unit}: rerun with --units {unit} (or --scale {metres:g})"
    else:
        fix = f"rescale it with --scale {1 / scale:.3g}"
    return f"the body is {size} the training bodies' size: {fix}, or pass --force to predict anyway"


VOLUME_FACTOR = 1000.0  # a volume mesh this many times the body's size is in other units than the surface


def volume_problem(body: np.ndarray, volume: np.ndarray) -> str | None:
    """Why a volume mesh does not belong with a body, (n, 3) and (m, 3) points, or None: it must surround the
    body (the body's box inside the volume's) and not be ``VOLUME_FACTOR`` times its size (other units)."""
    if not len(volume):
        return None
    low, high = body.min(axis=0), body.max(axis=0)
    v_low, v_high = volume.min(axis=0), volume.max(axis=0)
    size, v_size = float((high - low).max()), float((v_high - v_low).max())
    slack = 0.01 * size
    if (low < v_low - slack).any() or (high > v_high + slack).any():
        return (f"the volume mesh ({_box(v_low, v_high)}) does not surround the body ({_box(low, high)}): are both "
                "in the same units and frame?")  # fmt: skip
    if v_size > VOLUME_FACTOR * size:
        return (f"the volume mesh is {v_size / size:.3g}x the body's size: are both in the same units? "
                "(--units and --scale apply to both)")  # fmt: skip
    return None


def _box(low: np.ndarray, high: np.ndarray) -> str:
    return ", ".join(f"{axis} {a:.3g}..{b:.3g}" for axis, a, b in zip("xyz", low, high, strict=True))


def body_features(
    arrays: dict[str, np.ndarray], *, flow: Sequence[float] = FLOW, up: Sequence[float] = UP
) -> dict[str, float]:
    """The shape features of a body read for prediction (its ``surface/points`` and ``surface/area_norm``), in the
    frame of the training run's ``flow`` and ``up`` directions."""
    return shape_features(arrays["surface/points"], arrays["surface/area_norm"], flow=flow, up=up)
