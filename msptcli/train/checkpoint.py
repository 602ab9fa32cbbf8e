"""Checkpoints: weights as safetensors with everything needed to predict in the metadata.

A checkpoint (``best.safetensors``, ``last.safetensors``) holds the model's
weights and, as JSON metadata, the full validated config, the model config,
the field channels, the normalisation statistics, the reference values for
forces and the mspt version: the file alone is enough to predict. The
optimiser, scheduler and RNG state for ``--resume`` live beside it in
``train_state.pt``, a plain tensor file read with ``torch.load(weights_only=True)``.
Nothing is ever unpickled.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msptcli import __version__
from msptcli.config import MsptConfig, validate_config
from msptcli.data.features import Channels
from msptcli.data.manifest import Stats
from msptcli.errors import CheckpointError
from msptcli.io.atomic import atomic_output
from msptcli.model import MSPT, ModelConfig

FORMAT = "mspt-checkpoint-1"
#: Not a weight: where the training volume points lie relative to the body (see predict.py).
TEMPLATE_KEY = "extra/volume_template"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, CPU) and what it needs around it."""

    model: MSPT
    config: MsptConfig
    channels: Channels
    stats: Stats
    surface_location: str
    reference: dict[str, Any]  # reference_area (or None), velocity, density, area_key
    epoch: int
    metrics: dict[str, Any]
    version: str
    volume_template: np.ndarray | None = None  # (M, 3) training volume points relative to the body's box


def save_checkpoint(
    path: str | os.PathLike[str],
    model: MSPT,
    *,
    config: MsptConfig,
    channels: Channels,
    stats: Stats,
    surface_location: str,
    reference: dict[str, Any],
    epoch: int,
    metrics: dict[str, Any] | None = None,
    volume_template: np.ndarray | None = None,
) -> Path:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in _unwrap(model).state_dict().items()}
    if volume_template is not None:
        state[TEMPLATE_KEY] = torch.from_numpy(np.ascontiguousarray(volume_template, dtype=np.float32))
    meta = {
        "format": FORMAT,
        "mspt_version": __version__,
        "config": json.dumps(config.model_dump(mode="json")),
        "model_config": _unwrap(model).config.model_dump_json(),
        "channels": json.dumps({"surface": list(channels.surface), "volume": list(channels.volume)}),
        "stats": stats.model_dump_json(),
        "surface_location": surface_location,
        "reference": json.dumps(reference),
        "epoch": str(epoch),
        "metrics": json.dumps(metrics or {}),
    }
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load a checkpoint file, or the best (else last) checkpoint of a run directory."""
    from safetensors import safe_open

    p = resolve_checkpoint(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except Exception as exc:
        raise CheckpointError(f"{p}: not a safetensors checkpoint ({str(exc).splitlines()[0]})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{p}: not an mspt checkpoint (format {meta.get('format')!r})")
    try:
        model = MSPT(ModelConfig.model_validate_json(meta["model_config"]))
        template = state.pop(TEMPLATE_KEY, None)
        model.load_state_dict(state)
        channels_json = json.loads(meta["channels"])
        ckpt = Checkpoint(
            model=model.eval(),
            config=validate_config(json.loads(meta["config"]), source=str(p)),
            channels=Channels(
                tuple((n, int(k)) for n, k in channels_json["surface"]),
                tuple((n, int(k)) for n, k in channels_json["volume"]),
            ),
            stats=Stats.model_validate_json(meta["stats"]),
            surface_location=meta["surface_location"],
            reference=json.loads(meta["reference"]),
            epoch=int(meta["epoch"]),
            metrics=json.loads(meta.get("metrics", "{}")),
            version=meta.get("mspt_version", "?"),
            volume_template=None if template is None else template.numpy(),
        )
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{p}: inconsistent checkpoint ({str(exc).splitlines()[0]})") from None
    return ckpt


def resolve_checkpoint(path: str | os.PathLike[str]) -> Path:
    """A checkpoint file itself, or ``RUN_DIR/checkpoints/best.safetensors`` (else ``last``)."""
    p = Path(path)
    if p.is_dir():
        for name in ("best", "last"):
            candidate = p / "checkpoints" / f"{name}.safetensors"
            if candidate.is_file():
                return candidate
        raise CheckpointError(f"{p}: no checkpoint (expected checkpoints/best.safetensors; run `mspt train`)")
    if not p.is_file():
        raise CheckpointError(f"{p}: no such run directory or checkpoint file")
    return p


def save_train_state(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    """Optimizer, scheduler, RNG and loop state: tensors, numbers and strings only."""
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def load_train_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``train_state.pt`` with ``weights_only=True``: a file with arbitrary objects is refused, not run."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no training state to resume from (train without --resume first)")
    try:
        with warnings.catch_warnings():  # torch warns about old pickle protocols before refusing them
            warnings.simplefilter("ignore")
            return torch.load(p, map_location="cpu", weights_only=True)
    except Exception:
        raise CheckpointError(
            f"{p}: refusing to load training state: not a plain tensor file (it may hold arbitrary Python objects)"
        ) from None


def _unwrap(model: torch.nn.Module) -> MSPT:
    """The MSPT inside DistributedDataParallel or torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model  # type: ignore[return-value]
