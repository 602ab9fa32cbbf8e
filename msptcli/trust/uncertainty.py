"""How far to trust each predicted value: the spread over anchor draws, calibrated on the validation bodies.

An anchor-query model predicts from anchors drawn from the body (``data/anchors.py``). Another seed
draws other anchors and gives a slightly different answer; where the model is unsure (near edges, in
the wake, on shapes unlike the training set's) the answers differ more. ``mspt predict`` runs
``DRAWS`` draws (seeds ``anchors.seed``, ``+1``, ...) and takes, per point and channel, their standard
deviation ``s`` (a test-time ensemble the anchor design gives at the cost of the queries alone), and
the standard deviation of Cd and Cl over the draws. The prediction itself stays the mean of the
checkpoint's own ``anchors.draws`` first draws (so it is the same with or without the spread).

Three draws estimate a standard deviation poorly (its relative error is about half), and that noise
is independent of where the model errs; the spread of a point is therefore the root mean square of
the spread over its ``NEIGHBOURS`` nearest points of the same part (surface or volume, itself
included), where the spread the draws estimate varies slowly. On the shared Ahmed split this raised
the rank correlation of spread and error by 0.02-0.06 per field (``benchmarks/trust.py``).

The raw spread is far smaller than the error (the draws are stratified, so they are much alike), so
it is **calibrated** (split-conformal) at the end of ``mspt train`` on the validation bodies: per field,
the factor ``c`` is the 90% quantile of ``|error| / s`` over all their points, so that ``mean ± c s``
holds 90% of the validation points; for Cd and Cl, the 90% quantile of ``|error| / s`` over the bodies
when there are at least ``MIN_FORCE_BODIES``; with fewer, Cd and Cl keep their raw spread, called
uncalibrated (one or two bodies' drag errors say nothing of the next body's). The checkpoint stores
the factors; predict writes ``c s / 1.645`` as the standard deviation (``<field>_std``; a normal's 90%
interval is ± 1.645 of them), and Cd ± its calibrated standard deviation. Without validation bodies
the spread is written as it is and called uncalibrated.

**Cd and Cl are scaled by the design's distance, not by the draws' spread**, where the checkpoint has
the training designs' latents (``latent.py``): a body's drag errs most where the model sees the body
unlike its training designs, and the draws (the same network, other anchors) hardly differ there.
On the shared Ahmed split (four test bodies, 30-minute runs, two seeds), the draws' spread of Cd
ranked the Cd errors at Spearman 0.0 with either seed; the latent distance at 0.8 and 0.4. The factor
is then the COVERAGE quantile of ``|Cd error| / distance`` over the validation bodies
(``forces_from`` "latent"); without latents, of ``|Cd error| / Cd spread`` ("bodies").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

DRAWS = 3  # anchor draws of the spread (the default of mspt predict --uncertainty)
#: Rows of a field handled at a time by :func:`spread` and :func:`smoothed` (their temporaries: a chunk's).
_ROWS = 1 << 16
NEIGHBOURS = 16  # a point's spread is the RMS over its nearest points of the same part (module docstring)
MIN_FORCE_BODIES = 5  # with fewer validation bodies, Cd and Cl are not calibrated (their raw spread is written)
COVERAGE = 0.9  # the interval the calibration is for
Z90 = 1.6448536269514722  # a normal's 90% interval: mean ± Z90 standard deviations


@dataclass(frozen=True)
class Calibration:
    """The factors that turn the raw spread over draws into 90% intervals (``mean ± factor * spread``)."""

    fields: dict[str, float]  # "surface/p": factor, ...
    cd: float | None
    cl: float | None
    bodies: int  # validation bodies it was fitted on
    draws: int
    # Cd's and Cl's factors: "latent" (|error| over the design's latent distance), "bodies" (over the draws' spread
    # of Cd and Cl) or "none" (too few validation bodies: the raw spread is written, uncalibrated)
    forces_from: str = "bodies"

    def to_json(self) -> dict[str, Any]:
        return {"fields": self.fields, "cd": self.cd, "cl": self.cl, "bodies": self.bodies, "draws": self.draws,
                "forces_from": self.forces_from}  # fmt: skip

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Calibration:
        return cls({str(k): float(v) for k, v in value["fields"].items()}, value.get("cd"), value.get("cl"),
                   int(value["bodies"]), int(value["draws"]), str(value.get("forces_from", "bodies")))  # fmt: skip


def spread(draws: Sequence[np.ndarray]) -> np.ndarray:
    """Per row and channel, the standard deviation (ddof 1) of the draws' predictions; zeros for one draw."""
    first = np.asarray(draws[0])
    out = np.zeros(first.shape, dtype=np.float32)
    if len(draws) < 2:
        return out
    for start in range(0, len(first), _ROWS):  # in rows of _ROWS: float64 temporaries of a chunk, not of all
        rows = slice(start, start + _ROWS)
        out[rows] = np.stack([np.asarray(d[rows], dtype=np.float64) for d in draws]).std(axis=0, ddof=1)
    return out


def smoothed(raw: np.ndarray, points: np.ndarray, neighbours: int = NEIGHBOURS) -> np.ndarray:
    """Per point and channel, the root mean square of the spread ``raw`` (n, ...) over the point's ``neighbours``
    nearest of ``points`` (n, 3), itself included (as it is with fewer than two points)."""
    from scipy.spatial import cKDTree

    raw = np.asarray(raw, dtype=np.float32)
    k = min(int(neighbours), len(points))
    if k < 2:
        return raw
    tree = cKDTree(np.asarray(points, dtype=np.float64))
    variance = np.square(raw.astype(np.float64))
    out = np.empty_like(raw)
    for start in range(0, len(points), _ROWS):  # the neighbours of a chunk at a time: (rows, k) indices, not (n, k)
        rows = slice(start, start + _ROWS)
        _, index = tree.query(points[rows], k=k, workers=-1)
        out[rows] = np.sqrt(variance[index].mean(axis=1))
    return out


def magnitude(values: np.ndarray) -> np.ndarray:
    """A vector field's per-point norm (of its error or of its per-component spread); a scalar as it is."""
    values = np.asarray(values, dtype=np.float64)
    return np.linalg.norm(values, axis=1) if values.ndim > 1 else np.abs(values)


def conformal_factor(error: np.ndarray, raw: np.ndarray) -> float:
    """The COVERAGE quantile of ``|error| / raw`` (points where both are zero count as covered), with the
    finite-sample correction of split conformal prediction (quantile level ceil((n+1) q) / n)."""
    error, raw = np.asarray(error, dtype=np.float64).ravel(), np.asarray(raw, dtype=np.float64).ravel()
    ratio = np.where(raw > 0, error / np.where(raw > 0, raw, 1.0), np.where(error > 0, np.inf, 0.0))
    n = len(ratio)
    if n == 0:
        return float("nan")
    level = min(np.ceil((n + 1) * COVERAGE) / n, 1.0)
    value = float(np.quantile(ratio, level, method="higher"))
    return value if np.isfinite(value) else float(np.max(ratio[np.isfinite(ratio)], initial=0.0))


def calibrated_std(raw: np.ndarray, factor: float | None) -> np.ndarray:
    """The standard deviation written beside a field: ``factor * raw / Z90`` (its ± Z90 the 90% interval);
    the raw spread where there is no factor (uncalibrated)."""
    if factor is None or not np.isfinite(factor):
        return np.asarray(raw, dtype=np.float32)
    return (np.asarray(raw, dtype=np.float64) * factor / Z90).astype(np.float32)


def fit_calibration(
    errors: dict[str, list[np.ndarray]], raws: dict[str, list[np.ndarray]],
    forces: list[tuple[float, float, float, float]], draws: int, distances: list[float] | None = None,
) -> Calibration:  # fmt: skip
    """The :class:`Calibration` of validation bodies: per field their points' |error| and raw spread (magnitudes,
    one array per body), and per body (|Cd error|, Cd spread, |Cl error|, Cl spread) and, where the model records
    training latents, the body's latent distance (``distances``, one per ``forces`` row): Cd's and Cl's factors are
    then over the distance (module docstring).

    Cd and Cl are one number a body: below ``MIN_FORCE_BODIES`` bodies their own quantile is the largest of a
    few ratios, which one well-predicted body makes near zero (a falsely sure drag), and a field's factor does
    not carry over (the pointwise errors partly cancel in the integral: on the demo the pressure's factor
    made the drag's interval ten times its error). There they get no factor: the raw spread is written, and
    called uncalibrated."""
    fields = {k: conformal_factor(np.concatenate(errors[k]), np.concatenate(raws[k])) for k in errors}
    cd = cl = None
    forces_from = "bodies"
    if len(forces) >= MIN_FORCE_BODIES:
        f = np.asarray(forces, dtype=np.float64)
        by_distance = distances is not None and len(distances) == len(forces) and min(distances) > 0
        scale_cd = np.asarray(distances, dtype=np.float64) if by_distance else f[:, 1]
        scale_cl = np.asarray(distances, dtype=np.float64) if by_distance else f[:, 3]
        cd, cl = conformal_factor(f[:, 0], scale_cd), conformal_factor(f[:, 2], scale_cl)
        forces_from = "latent" if by_distance else "bodies"
    elif forces:
        forces_from = "none"
    return Calibration(fields, cd, cl, bodies=len(next(iter(errors.values()), [])), draws=draws,
                       forces_from=forces_from)  # fmt: skip
