"""Whole-mesh evaluation: streaming inference on a full sample, metrics in physical units."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from msptcli.data.features import Channels, to_physical
from msptcli.data.manifest import Manifest, Stats
from msptcli.data.sample import Sample
from msptcli.model import MSPT, build_layout, stream_forward
from msptcli.train.dataset import Cloud, cloud_of
from msptcli.train.metrics import coefficients, force_from_points, relative_l2


def predict_cloud(model: MSPT, cloud: Cloud, device: torch.device, *, chunk_points: int = 1 << 16) -> np.ndarray:
    """Standardised predictions (N, C) of a whole cloud, rows back in the cloud's own order."""
    layout = build_layout([len(cloud.features)], model.config).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        out = stream_forward(model, cloud.features.to(device), layout, chunk_points=chunk_points)
    pred = np.empty(out.shape, dtype=np.float32)
    pred[cloud.order] = out.float().cpu().numpy()
    return pred


def evaluate_sample(
    model: MSPT, sample: Sample, manifest: Manifest, device: torch.device, *, reference: dict[str, Any]
) -> dict[str, float]:
    """Loss, relative L2 per field and drag/lift errors of one full sample."""
    channels = Channels.from_fields(manifest.fields)
    n, m = sample.num_surface, sample.num_volume if channels.volume else 0
    cloud = cloud_of(sample, manifest, channels, np.arange(n), np.arange(m))
    pred = predict_cloud(model, cloud, device)
    targets = np.empty_like(pred)
    targets[cloud.order] = cloud.targets.numpy()
    mask = np.empty(pred.shape, dtype=bool)
    mask[cloud.order] = cloud.mask.numpy()
    out: dict[str, float] = {"loss": float(np.mean(((pred - targets) ** 2)[mask]))}
    phys = to_physical(manifest.stats, channels, pred, n)
    for part, rows in (("surface", slice(0, n)), ("volume", slice(n, n + m))):
        for name, _ in getattr(channels, part):
            true = sample.arrays[f"{part}/{name}"]
            out[f"rel_l2/{part}/{name}"] = relative_l2(phys[part][name], true[: rows.stop - rows.start])
    out.update(force_errors(sample, phys["surface"], manifest.stats, reference))
    return out


def force_errors(
    sample: Sample, predicted: dict[str, np.ndarray], stats: Stats, reference: dict[str, Any]
) -> dict[str, float]:
    """Predicted and true Cd/Cl of a sample (point-wise integration of both), where the fields allow."""
    p_name, tau_name = reference.get("pressure_field"), reference.get("wall_shear_field")
    area = sample.meta.get("reference_area") or reference.get("reference_area")
    if not p_name or p_name not in predicted or not area:
        return {}
    a = sample.arrays
    tau_pred = predicted.get(tau_name) if tau_name else None
    tau_true = a.get(f"surface/{tau_name}") if tau_pred is not None else None
    kw = {"ref_area": float(area), "velocity": reference["velocity"], "density": reference["density"]}
    cd_p, cl_p = coefficients(
        force_from_points(a["surface/area"], a["surface/area_norm"], predicted[p_name], tau_pred), **kw
    )
    cd_t, cl_t = coefficients(
        force_from_points(a["surface/area"], a["surface/area_norm"], a[f"surface/{p_name}"], tau_true), **kw
    )
    return {
        "cd_pred": cd_p,
        "cd_true": cd_t,
        "cd_abs_error": abs(cd_p - cd_t),
        "cl_pred": cl_p,
        "cl_true": cl_t,
        "cl_abs_error": abs(cl_p - cl_t),
    }
