"""Checkpoints: weights as safetensors with everything needed to predict in the metadata.

A checkpoint (``best.safetensors``, ``last.safetensors``) holds the model's
weights and, as JSON metadata, the full validated config, the network's input and
output widths, the field channels, the normalisation statistics, the reference
values for forces and the mspt version: the file alone is enough to predict. A run's checkpoints
also record what it trained on and with (:class:`TrainingRecord`: dataset, cases, device, precision).
Nothing is ever unpickled. Loading checks that these parts agree with each other,
so an edited or truncated file is one line ("... does not match ...") rather than
a traceback or NaN fields.

Formats: ``mspt-checkpoint-2`` (this one). ``mspt-checkpoint-1`` files (mspt 0.1.0
before the restructure) are read and give the same predictions: their network
config is translated (``pooling: linear`` -> ``softmax``, the never-used conditions
and attention options dropped, the input and output widths moved beside it) and
their dead weights dropped (the score bias of softmax pooling). A network of the
removed variant ``supernodes: carried`` (format 1: ``stream``) is refused in one line.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from msptcli import __version__
from msptcli.config import MsptConfig, validate_config
from msptcli.data.features import Channels
from msptcli.data.manifest import SampleEntry, Stats
from msptcli.data.transient import input_width, time_levels
from msptcli.errors import CheckpointError
from msptcli.io.atomic import atomic_output
from msptcli.model import ModelConfig, Network, build_network
from msptcli.model.config import RENAMED, without_removed_keys
from msptcli.physics.force_reference import ForceReference, TransientReference
from msptcli.trust.check import TrainingShapes
from msptcli.trust.latent import TrainingLatents
from msptcli.trust.uncertainty import Calibration

FORMAT = "mspt-checkpoint-2"
OLD_FORMATS = ("mspt-checkpoint-1",)
#: Not a weight: where the training volume points lie relative to the body (see predict.py).
TEMPLATE_KEY = "extra/volume_template"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model (eval mode, CPU) and what it needs around it."""

    model: Network
    config: MsptConfig
    channels: Channels
    stats: Stats
    surface_location: str
    reference: ForceReference
    epoch: int
    metrics: dict[str, Any]
    version: str
    path: Path | None = None
    volume_template: np.ndarray | None = None  # (M, 3) training volume points relative to the body's box
    parent: ParentRecord | None = None  # fine-tuned: the network it started from and what was frozen
    shapes: TrainingShapes | None = None  # the training bodies' shape features (None: transient, or an older run)
    calibration: Calibration | None = None  # the spread's 90% factors, fitted on the validation bodies (or None)
    latents: TrainingLatents | None = None  # the training designs' latents (trust/latent.py), best checkpoint


@dataclass(frozen=True)
class ParentRecord:
    """What a fine-tuned run records of where it came from; a checkpoint holds it as a JSON object of these keys
    (``Checkpoint.parent``), and the run's training state too, so that ``--resume`` keeps it."""

    path: str  # the parent's checkpoint file
    sha256: str
    epoch: int
    backbone: str
    fields: list[str]  # the parent's ``part/name`` fields
    kept_fields: dict[str, str]  # this dataset's field -> the parent's field whose head rows it kept
    new_fields: list[str]  # this dataset's fields with new head rows
    freeze: str  # train.freeze
    frozen_parameters: int
    trainable_parameters: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> ParentRecord:
        return cls(**value)

    def describe(self) -> str:
        """One line for the user: the parent, the kept, new and frozen parts."""
        kept = ", ".join(k if k == v else f"{k} <- {v}" for k, v in self.kept_fields.items()) or "none"
        total = self.frozen_parameters + self.trainable_parameters
        return (
            f"fine-tuned from {self.path} (epoch {self.epoch}): kept {kept}; new {', '.join(self.new_fields) or 'none'}"
            f"; frozen {self.freeze} ({self.frozen_parameters:,} of {total:,} parameters)"
        )


@dataclass(frozen=True)
class TrainingRecord:
    """What a run trained on and with, as its checkpoints hold it (metadata key ``training``, a JSON object of these
    keys; checkpoints of runs before it have none): ``mspt info`` shows it. Device and precision are those of the
    session that wrote the checkpoint (a run resumed elsewhere records the new ones)."""

    dataset: str  # the prepared dataset's folder, resolved
    cases: dict[str, int]  # split -> cases (train, val, test)
    device: str  # ``device.describe_device``: "cpu (2 threads)", "cuda:0 NVIDIA H100 80GB HBM3"
    precision: str  # ``device.precision``: "float32" or "bf16 autocast"
    processes: int  # 1, or the processes under torchrun
    torch: str  # torch's version

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> TrainingRecord:
        return cls(**value)


def force_reference(config: MsptConfig, train_entries: list[SampleEntry]) -> ForceReference:
    """What drag and lift need besides the fields, as saved in a checkpoint: field names, the reference
    area (config, its key in a case's params, and the training cases' values), velocity, density, the flow and
    up directions; for a
    transient run L_ref, the viscosity and the training cases' conditions."""
    d, t = config.data, config.data.transient
    transient = None
    if t is not None:
        conditions = {e.name: e.params for e in train_entries}
        transient = TransientReference(t.reference_length, t.viscosity, t.viscosity_key, conditions)
    return ForceReference(
        velocity=d.velocity,
        density=d.density,
        pressure_field=d.pressure_field,
        wall_shear_field=d.wall_shear_field,
        reference_area=d.reference_area,
        area_key=d.reference_area_key,
        training_reference_areas=[e.reference_area for e in train_entries if e.reference_area],
        transient=transient,
        flow_direction=d.flow_direction,
        up_direction=d.up_direction,
    )


def save_checkpoint(
    path: str | os.PathLike[str],
    model: torch.nn.Module,
    *,
    config: MsptConfig,
    channels: Channels,
    stats: Stats,
    surface_location: str,
    reference: ForceReference,
    epoch: int,
    metrics: dict[str, Any] | None = None,
    volume_template: np.ndarray | None = None,
    parent: ParentRecord | None = None,
    shapes: TrainingShapes | None = None,
    calibration: Calibration | None = None,
    latents: TrainingLatents | None = None,
    record: TrainingRecord | None = None,
) -> Path:
    from safetensors.torch import save_file

    net = unwrap(model)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    if volume_template is not None:
        state[TEMPLATE_KEY] = torch.from_numpy(np.ascontiguousarray(volume_template, dtype=np.float32))
    meta = {
        "format": FORMAT,
        "mspt_version": __version__,
        "config": json.dumps(config.model_dump(mode="json")),
        "model_config": net.config.model_dump_json(),
        "in_features": str(net.in_features),
        "out_features": str(net.out_features),
        "channels": json.dumps({"surface": list(channels.surface), "volume": list(channels.volume)}),
        "stats": stats.model_dump_json(),
        "surface_location": surface_location,
        "reference": json.dumps(reference.to_json()),
        "epoch": str(epoch),
        "metrics": json.dumps(metrics or {}),
    }
    if parent is not None:
        meta["parent"] = json.dumps(parent.to_json())
    if shapes is not None:
        meta["shapes"] = json.dumps(shapes.to_json())
    if calibration is not None:
        meta["calibration"] = json.dumps(calibration.to_json())
    if latents is not None:
        meta["latents"] = json.dumps(latents.to_json())
    if record is not None:
        meta["training"] = json.dumps(record.to_json())
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
    fmt = meta.get("format")
    if fmt not in (FORMAT, *OLD_FORMATS):
        raise CheckpointError(f"{p}: not an mspt checkpoint (format {fmt!r})")
    try:
        if fmt != FORMAT:
            meta, state = _upgrade_v1(meta, state)
        _refuse_removed_variants(meta, p)
        meta = _without_anchors_if_older(meta)
        template = state.pop(TEMPLATE_KEY, None)
        channels_json = json.loads(meta["channels"])
        channels = Channels(
            tuple((str(n), int(k)) for n, k in channels_json["surface"]),
            tuple((str(n), int(k)) for n, k in channels_json["volume"]),
        )
        stats = Stats.model_validate_json(meta["stats"])
        in_features, out_features = int(meta["in_features"]), int(meta["out_features"])
        config = validate_config(json.loads(meta["config"]), source=str(p))
        expected = input_width(config.data.transient, channels)
        if in_features != expected:
            raise ValueError(f"the network takes {in_features} input features, mspt computes {expected}")
        _check_parts(channels, stats, out_features, template, transient=config.data.transient is not None)
        model = build_network(
            ModelConfig.model_validate_json(meta["model_config"]),
            in_features=in_features,
            out_features=out_features,
            levels=time_levels(config.data.transient, channels),
        )
        _load_weights(model, state)
        reference = ForceReference.from_json(json.loads(meta["reference"]))
        return Checkpoint(
            model=model.eval(),
            config=config,
            channels=channels,
            stats=stats,
            surface_location=meta["surface_location"],
            reference=reference,
            epoch=int(meta["epoch"]),
            metrics=json.loads(meta.get("metrics", "{}")),
            version=meta.get("mspt_version", "?"),
            path=p,
            volume_template=None if template is None else template.numpy(),
            parent=ParentRecord.from_json(json.loads(meta["parent"])) if "parent" in meta else None,
            shapes=TrainingShapes.from_json(json.loads(meta["shapes"])) if "shapes" in meta else None,
            calibration=Calibration.from_json(json.loads(meta["calibration"])) if "calibration" in meta else None,
            latents=TrainingLatents.from_json(json.loads(meta["latents"])) if "latents" in meta else None,
        )
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"{p}: inconsistent checkpoint: {str(exc).splitlines()[0]}") from None


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


def read_header(path: str | os.PathLike[str]) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """The metadata and the tensors' shapes of a checkpoint file, from its safetensors header alone (no weight is
    read, no network built): ``mspt info`` and the end of ``mspt train``. :class:`CheckpointError` (one line) for
    a file that is not an mspt checkpoint."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            size = int.from_bytes(f.read(8), "little")
            if not 2 <= size <= min(p.stat().st_size - 8, 1 << 30):
                raise ValueError(f"a header of {size} bytes")
            header = json.loads(f.read(size))
        meta = header.pop("__metadata__", None) or {}
        shapes = {str(k): tuple(int(n) for n in v["shape"]) for k, v in header.items()}
    except Exception as exc:
        raise CheckpointError(f"{p}: not a safetensors checkpoint ({str(exc).splitlines()[0]})") from None
    if meta.get("format") not in (FORMAT, *OLD_FORMATS):
        raise CheckpointError(f"{p}: not an mspt checkpoint (format {meta.get('format')!r})")
    return meta, shapes


def unwrap(model: torch.nn.Module) -> Network:
    """The MSPT inside DistributedDataParallel or torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model  # type: ignore[return-value]


def _check_parts(
    channels: Channels, stats: Stats, out_features: int, template: torch.Tensor | None, *, transient: bool
) -> None:
    """The parts of a checkpoint agree: widths, channels, statistics, template."""
    if transient:
        missing = [n for n, _ in channels.volume if n not in stats.increments]
        if missing or channels.surface:
            raise ValueError(f"a transient network needs increment statistics of every field (not of {missing})")
    if out_features != channels.total:
        raise ValueError(f"the network predicts {out_features} channels but the fields have {channels.total}")
    if not channels.total:
        raise ValueError("no predicted fields")
    stats.check({"surface": dict(channels.surface), "volume": dict(channels.volume)})
    if template is not None and (template.ndim != 2 or template.shape[1] != 3 or not torch.isfinite(template).all()):
        raise ValueError(f"the volume template must be finite (M, 3) points, got shape {tuple(template.shape)}")


def _load_weights(model: Network, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"weights do not match the network (missing {missing[:3]}, unexpected {unexpected[:3]})")
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise ValueError(f"weight {key} has shape {tuple(value.shape)}, the network {tuple(own[key].shape)}")
        if not torch.isfinite(value).all():
            raise ValueError(f"weight {key} is not finite")
    model.load_state_dict(state)


def _upgrade_v1(meta: dict[str, str], state: dict[str, torch.Tensor]) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """A ``mspt-checkpoint-1`` file as this format (see the module docstring)."""
    net = json.loads(meta["model_config"])
    if net.pop("condition_features", 0) or net.pop("attention", "pmsa") != "pmsa":
        raise CheckpointError("a format-1 checkpoint with conditions or dense attention cannot be read")
    in_features, out_features = net.pop("in_features"), net.pop("out_features")
    config = json.loads(meta["config"])
    for section in (net, config.get("model", {})):
        for key, renames in RENAMED.items():
            if section.get(key) in renames:
                section[key] = renames[section[key]]
    state = {k: v for k, v in state.items() if not k.endswith("score.bias")}
    meta = {
        **meta,
        "model_config": json.dumps(net),
        "config": json.dumps(config),
        "in_features": str(in_features),
        "out_features": str(out_features),
    }
    return meta, state


def _refuse_removed_variants(meta: dict[str, str], path: Path) -> None:
    """One line for a network of a removed variant (``supernodes: carried``), which no network here can load."""
    try:
        without_removed_keys(json.loads(meta["model_config"]))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _without_anchors_if_older(meta: dict[str, str]) -> dict[str, str]:
    """Defaults of networks saved before an option existed, made explicit, so that a later default cannot change
    them: no ``anchors`` key (before anchor-query MSPT): every point ran through the blocks; anchors without
    ``reads``: queries read their nearest anchor's patch; no ``query_reading``: MSPT's queries read every block."""
    net, config = json.loads(meta["model_config"]), json.loads(meta["config"])
    transient = config.get("data", {}).get("transient")
    if isinstance(transient, dict) and not {"derivatives", "advection"} <= transient.keys():
        transient.setdefault("derivatives", False)  # before the derivative inputs
        transient.setdefault("advection", None)  # before the transported increment
        meta = {**meta, "config": json.dumps(config)}
    if "query_reading" not in net:  # before the reading of the final features
        net["query_reading"] = "blocks"
        config.setdefault("model", {})["query_reading"] = "blocks"
        meta = {**meta, "model_config": json.dumps(net), "config": json.dumps(config)}
    if "anchors" not in net:
        net["anchors"] = None
        config.setdefault("model", {})["anchors"] = None
    elif isinstance(net["anchors"], dict) and "reads" not in net["anchors"]:
        net["anchors"]["reads"] = "patch"
        config.setdefault("model", {}).setdefault("anchors", {})
        if isinstance(config["model"]["anchors"], dict):
            config["model"]["anchors"]["reads"] = "patch"
    else:
        return meta
    return {**meta, "model_config": json.dumps(net), "config": json.dumps(config)}
