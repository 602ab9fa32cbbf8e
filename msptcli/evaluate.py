"""How good a prediction is: relative L2 per field and drag/lift, on whole prepared samples.

Used by validation during training and by the accuracy benchmark; ``mspt predict`` uses
:func:`relative_l2` and :func:`drag_lift` for a geometry that carries its solver fields.
Predictions come from the one inference path (:func:`msptcli.runtime.predict_clouds`).
"""

from __future__ import annotations

import numpy as np
import torch

from msptcli.data.anchors import sample_anchors, seeds_of
from msptcli.data.features import Channels, cloud_inputs, cloud_part, model_targets, to_physical
from msptcli.data.manifest import Manifest
from msptcli.data.sample import Sample
from msptcli.model import Network
from msptcli.physics import coefficients, force_from_points
from msptcli.physics.force_reference import ForceReference
from msptcli.runtime import predict_clouds, predict_queries_averaged


def relative_l2(pred: np.ndarray, true: np.ndarray) -> float:
    """||pred - true|| / ||true|| over all points and components."""
    denom = float(np.linalg.norm(true))
    return float(np.linalg.norm(pred - true)) / max(denom, 1e-30)


def drag_lift(
    area: np.ndarray,
    area_norm: np.ndarray,
    fields: dict[str, np.ndarray],
    reference: ForceReference,
    *,
    ref_area: float,
    velocity: float | None = None,
    density: float | None = None,
) -> tuple[float, float] | None:
    """(Cd, Cl) of surface point fields (``fields`` by name) with each point's area share, or None when the
    fields lack the pressure named in ``reference`` (a checkpoint's, see ``checkpoint.force_reference``).
    The wall shear counts where ``reference`` names one and ``fields`` has it; Cd and Cl are along the
    reference's flow and up directions."""
    p_name, tau_name = reference.pressure_field, reference.wall_shear_field
    if not p_name or p_name not in fields:
        return None
    tau = fields.get(tau_name) if tau_name else None
    force = force_from_points(area, area_norm, fields[p_name], tau)
    return coefficients(
        force,
        ref_area=ref_area,
        velocity=reference.velocity if velocity is None else velocity,
        density=reference.density if density is None else density,
        flow=reference.flow_direction,
        up=reference.up_direction,
    )


def evaluate_sample(
    model: Network,
    sample: Sample,
    manifest: Manifest,
    *,
    reference: ForceReference,
    device: torch.device | str = "cpu",
    bf16: bool = True,
    max_points: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Loss, relative L2 per field and drag/lift errors of one sample (streaming inference): of its whole
    meshes, or with ``max_points`` of at most that many of its surface points and as many volume points (a
    subsample drawn with ``seed``: the same every time). Drag and lift of a subsample integrate its points'
    area shares times (surface points / points drawn), for the prediction and the solver's fields alike.
    ``evaluated_points``: the surface and volume points evaluated."""
    channels = Channels.from_fields(manifest.fields)
    a = sample.arrays
    n, m = sample.num_surface, sample.num_volume if channels.volume else 0
    rows = {"surface": subsample_rows(n, max_points, seed), "volume": subsample_rows(m, max_points, seed + 1)}
    if any(r is not None for r in rows.values()):  # the parts' arrays at the rows drawn (no tree order: not whole)
        a = {k: v if rows[k.split("/")[0]] is None else np.asarray(v)[rows[k.split("/")[0]]]
             for k, v in a.items() if k.startswith(("surface/", "volume/"))}  # fmt: skip
        for key in ("surface/area", "surface/area_norm"):  # the points drawn stand for all
            a[key] = np.asarray(a[key]) * (n / len(a["surface/points"]))
        n, m = len(a["surface/points"]), len(a["volume/points"]) if m else 0
    points, inputs = cloud_inputs(manifest.stats, cloud_part(a, "surface"), cloud_part(a, "volume") if m else None)
    anchors = model.config.anchors
    if anchors is not None:  # every point a query of anchors drawn from the sample's geometry, seeded
        draws = []
        for draw in seeds_of(anchors):
            a_points, a_inputs = sample_anchors(sample, manifest.stats, draw, np.random.default_rng(draw.seed))
            draws.append(([a_points], [a_inputs]))
        (pred,) = predict_queries_averaged(model, draws, [points], [inputs], device=device, bf16=bf16)
    else:
        whole = "order" in a and n == sample.num_surface and m == sample.num_volume
        order = np.asarray(a["order"]) if whole else None  # the tree of prepare
        (pred,) = predict_clouds(model, [points], [inputs], orders=[order], device=device, bf16=bf16)

    true = {part: {name: a[f"{part}/{name}"] for name, _ in getattr(channels, part)} for part in ("surface", "volume")}
    targets, mask = model_targets(manifest.stats, channels, true["surface"], true["volume"] if m else {}, n, m)
    out: dict[str, float] = {"loss": float(np.mean(((pred - targets) ** 2)[mask])), "evaluated_points": n + m}
    phys = to_physical(manifest.stats, channels, pred, n)
    for part in ("surface", "volume") if m else ("surface",):
        for name, values in phys[part].items():
            out[f"rel_l2/{part}/{name}"] = relative_l2(values, true[part][name])
    area = sample.meta.get("reference_area") or reference.reference_area
    if area:
        predicted = drag_lift(a["surface/area"], a["surface/area_norm"], phys["surface"], reference, ref_area=area)
        solver = drag_lift(a["surface/area"], a["surface/area_norm"], true["surface"], reference, ref_area=area)
        if predicted is not None and solver is not None:
            (cd_p, cl_p), (cd_t, cl_t) = predicted, solver
            out.update(
                cd_pred=cd_p, cd_true=cd_t, cd_abs_error=abs(cd_p - cd_t),
                cl_pred=cl_p, cl_true=cl_t, cl_abs_error=abs(cl_p - cl_t),
            )  # fmt: skip
    return out


def subsample_rows(count: int, limit: int | None, seed: int) -> np.ndarray | None:
    """``limit`` of ``count`` rows drawn with ``seed``, ascending (the same for the same arguments); None: all."""
    if limit is None or count <= limit:
        return None
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))
