"""The spread over anchor draws on the validation bodies, and the calibration ``mspt train`` stores with it.

See :mod:`msptcli.trust.uncertainty` for the method. Here the validation bodies are predicted as validation
predicts them (every mesh point a query of anchors drawn from the prepared sample, ``evaluate.py``), once per
draw, and the errors of the mean prediction are set against the spread of the draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from msptcli.data.anchors import sample_anchors, seeds_of
from msptcli.data.features import Channels, cloud_inputs, cloud_part, to_physical
from msptcli.data.manifest import Manifest, SampleEntry
from msptcli.data.sample import Sample, load_sample
from msptcli.evaluate import drag_lift
from msptcli.model import Network
from msptcli.model.config import AnchorConfig
from msptcli.physics.force_reference import ForceReference
from msptcli.runtime import predict_queries
from msptcli.trust.latent import TrainingLatents, check_latent, sample_latent
from msptcli.trust.uncertainty import DRAWS, Calibration, fit_calibration, magnitude, smoothed, spread

Fields = dict[str, dict[str, np.ndarray]]


def draw_configs(anchors: AnchorConfig, count: int = DRAWS) -> list[AnchorConfig]:
    """The anchor draws of the spread: seeds ``anchors.seed`` on, at least the model's own ``anchors.draws``."""
    return seeds_of(anchors.model_copy(update={"draws": max(count, anchors.draws)}))


def mean_and_spread(
    draws: Sequence[Fields], own: int, points: dict[str, np.ndarray] | None = None
) -> tuple[Fields, Fields]:
    """The prediction (the mean of the first ``own`` draws, as without the spread) and the spread of all draws,
    smoothed over each point's nearest ``points`` of its part ("surface", "volume": (n, 3) each; None: as it is)."""
    mean = {part: {name: np.mean([d[part][name] for d in draws[:own]], axis=0).astype(np.float32)
                   for name in draws[0][part]} for part in draws[0]}  # fmt: skip
    raw = {part: {name: spread([d[part][name] for d in draws]) for name in draws[0][part]} for part in draws[0]}
    if points is not None:
        raw = {part: {name: smoothed(r, points[part]) for name, r in fields.items()} for part, fields in raw.items()}
    return mean, raw


def body_spread(
    model: Network, sample: Sample, manifest: Manifest, reference: ForceReference, *,
    device: torch.device | str = "cpu", bf16: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], tuple[float, float, float, float] | None]:  # fmt: skip
    """One body predicted as validation predicts it, once per draw of :func:`draw_configs`: per field the points'
    |error| of the prediction and raw spread (magnitudes), and (|Cd error|, Cd spread, |Cl error|, Cl spread)
    where drag and lift can be computed."""
    anchors = model.config.anchors
    assert anchors is not None
    channels = Channels.from_fields(manifest.fields)
    a, n = sample.arrays, sample.num_surface
    volume = cloud_part(a, "volume") if channels.volume and sample.num_volume else None
    points, inputs = cloud_inputs(manifest.stats, cloud_part(a, "surface"), volume)
    draws = []
    for config in draw_configs(anchors):
        a_points, a_inputs = sample_anchors(sample, manifest.stats, config, np.random.default_rng(config.seed))
        (pred,) = predict_queries(model, [a_points], [a_inputs], [points], [inputs], device=device, bf16=bf16)
        draws.append(to_physical(manifest.stats, channels, pred, n))
    where = {"surface": a["surface/points"], "volume": a["volume/points"] if volume is not None else np.zeros((0, 3))}
    mean, raw = mean_and_spread(draws, anchors.draws, where)
    errors, raws = {}, {}
    for part in mean:
        for name in mean[part]:
            if len(mean[part][name]):  # a sample without volume points has none
                key = f"{part}/{name}"
                errors[key], raws[key] = magnitude(mean[part][name] - a[key]), magnitude(raw[part][name])
    area = sample.meta.get("reference_area") or reference.reference_area
    truth = {name: a[f"surface/{name}"] for name, _ in channels.surface}
    solver = drag_lift(a["surface/area"], a["surface/area_norm"], truth, reference, ref_area=area) if area else None
    if solver is None:
        return errors, raws, None
    per_draw = [drag_lift(a["surface/area"], a["surface/area_norm"], d["surface"], reference, ref_area=area)
                for d in draws]  # fmt: skip
    predicted = drag_lift(a["surface/area"], a["surface/area_norm"], mean["surface"], reference, ref_area=area)
    cds, cls = zip(*per_draw, strict=True)
    cd_error, cl_error = abs(predicted[0] - solver[0]), abs(predicted[1] - solver[1])
    return errors, raws, (cd_error, float(np.std(cds, ddof=1)), cl_error, float(np.std(cls, ddof=1)))


def calibrate(
    model: Network,
    data_dir: Path,
    manifest: Manifest,
    entries: Sequence[SampleEntry],
    reference: ForceReference,
    *,
    device: torch.device | str = "cpu",
    bf16: bool = True,
    latents: TrainingLatents | None = None,
) -> Calibration | None:
    """The :class:`Calibration` of ``model`` on the validation ``entries``; None without anchors or bodies. With the
    training designs' ``latents``, Cd and Cl are calibrated over each body's latent distance to them."""
    if model.config.anchors is None or not entries:
        return None
    errors: dict[str, list[np.ndarray]] = {}
    raws: dict[str, list[np.ndarray]] = {}
    forces, distances = [], []
    for entry in entries:
        sample = load_sample(data_dir / entry.file)
        e, r, f = body_spread(model, sample, manifest, reference, device=device, bf16=bf16)
        for key in e:
            errors.setdefault(key, []).append(e[key])
            raws.setdefault(key, []).append(r[key])
        if f is not None:
            forces.append(f)
            if latents is not None:
                distances.append(latent_distance(model, sample, manifest, latents, device=device, bf16=bf16))
    return fit_calibration(errors, raws, forces, draws=len(draw_configs(model.config.anchors)),
                           distances=distances if latents is not None else None)  # fmt: skip


def latent_distance(
    model: Network, sample: Sample, manifest: Manifest, latents: TrainingLatents, *,
    device: torch.device | str = "cpu", bf16: bool = True,
) -> float:  # fmt: skip
    """A prepared body's latent distance to the training designs' (``latent.check_latent``'s score), from anchors
    drawn as the training latents' are."""
    return check_latent(latents, sample_latent(model, sample, manifest.stats, device=device, bf16=bf16)).score
