"""``mspt export``: a run's checkpoint to a portable file, verified in its own runtime, with a sidecar.

The sidecar ``<file>.json`` holds what deployment code needs around the graph:
the input features and their normalisation, the output channels and their
de-normalisation, and the patch rule (see docs/export.md).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from msptcli.data.features import IN_FEATURES
from msptcli.export import Format, export_model, verify_export
from msptcli.io.atomic import atomic_output
from msptcli.model import pack_clouds
from msptcli.train.checkpoint import load_checkpoint

#: Cloud sizes of the verification batch: several clouds, padded patches, other sizes than the trace.
VERIFY_SIZES = (3000, 1234, 77)


def export_run(run: str | os.PathLike[str], output: str | os.PathLike[str], *, fmt: Format) -> tuple[Path, float]:
    """Export the checkpoint of ``run`` to ``output``; return the path and the verified max |difference|."""
    ckpt = load_checkpoint(run)
    model = ckpt.model.float().eval()
    path = export_model(model, output, fmt=fmt)
    rng = np.random.default_rng(0)
    points = [rng.normal(size=(n, 3)) for n in VERIFY_SIZES]
    features = [torch.from_numpy(rng.normal(size=(n, IN_FEATURES)).astype(np.float32)) for n in VERIFY_SIZES]
    diff = verify_export(path, model, pack_clouds(points, features, model.config))
    sidecar = Path(f"{path}.json")
    with atomic_output(sidecar) as tmp:
        tmp.write_text(json.dumps(_sidecar(ckpt), indent=1))
    return path, diff


def _sidecar(ckpt) -> dict:  # type: ignore[no-untyped-def]
    return {
        "inputs": {
            "features": [
                "(x - coord_mean) / coord_scale (3)",
                "outward unit normal on surface points, 0 on volume points (3)",
                "distance to the body surface / coord_scale on volume points, 0 on surface points (1)",
                "unit direction to the body surface on volume points, 0 on surface points (3)",
                "1 on surface points, 0 on volume points (1)",
            ],
            "order": "rows in ball-tree order (msptcli.geometry.ball_tree_order) of the cloud [surface ; volume]",
            "layout": "msptcli.model.build_layout(cloud sizes, model_config); see docs/export.md",
        },
        "outputs": {
            "channels": {"surface": list(ckpt.channels.surface), "volume": list(ckpt.channels.volume)},
            "denormalise": "value = output * std + mean per field and component (stats below)",
        },
        "stats": ckpt.stats.model_dump(),
        "model_config": json.loads(ckpt.model.config.model_dump_json()),
        "surface_location": ckpt.surface_location,
        "reference": ckpt.reference,
        "mspt_version": ckpt.version,
    }
