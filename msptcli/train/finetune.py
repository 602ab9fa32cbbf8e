"""Fine-tuning: a training run that starts from a trained network (``train.init``, ``mspt train --init``).

MATEY (Zhang et al.) adapts a pretrained model to new physics from few cases by training it further
with its attention frozen. Here a run with ``train.init`` builds the parent's network (its ``model``
config, taken from the parent by ``options.train_config``), loads all of its weights but the head's,
and then:

- **Head** — every output field of the new dataset that the parent also predicts (same part and
  name, or mapped with ``train.field_map``) keeps the parent's head rows, re-expressed for the new
  dataset's normalisation so that, before the first step, the fine-tuned network predicts exactly
  the parent's physical field:  with  y = sd_old (W_old h + b_old) + mu_old,

      W_new = W_old sd_old / sd_new,   b_new = (b_old sd_old + mu_old - mu_new) / sd_new.

  Fields the parent does not predict get new rows (the usual initialisation).
- **Normalisation** — the field statistics are the new dataset's; the coordinate normalisation
  (mean and scale of the inputs' positions) stays the parent's, because the embedding's weights
  were learnt on it (``fine_tune_stats``).
- **Freezing** (``train.freeze``) — ``attention``: every parameter of an attention module (``*.attn.*``:
  the q/k/v and output projections, pooling scores, slice temperatures), MATEY's frozen attention;
  the embeddings, MLPs, norms and head train. ``encoder``: everything but the final norm and the
  head. ``none``: all train. Frozen parameters get ``requires_grad = False`` and stay out of the
  optimiser, so they are bit for bit the parent's at the end.

The checkpoints record the parent (file, SHA-256, epoch, fields), what was frozen and how the head
rows were mapped (:class:`msptcli.checkpoint.ParentRecord`, ``Checkpoint.parent``).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from msptcli.checkpoint import Checkpoint, ParentRecord, load_checkpoint, resolve_checkpoint
from msptcli.config import TrainConfig
from msptcli.data.features import Channels
from msptcli.data.manifest import Manifest, Stats
from msptcli.errors import InvalidInputError
from msptcli.model import ModelConfig, Network, build_network

#: Parameters ``train.freeze: encoder`` leaves trainable (``norm`` only at the top level: the final norm).
HEAD_PREFIXES = ("head.", "norm.")


@dataclass(frozen=True)
class Parent:
    """A loaded parent network and where it came from."""

    checkpoint: Checkpoint
    path: Path  # the checkpoint file
    sha256: str

    @property
    def fields(self) -> dict[str, int]:
        """``part/name`` -> components of every field the parent predicts."""
        return _field_keys(self.checkpoint.channels)


def load_parent(init: str | Path) -> Parent:
    """The checkpoint of ``init`` (a run directory: its best, else last checkpoint; or a checkpoint file)."""
    path = resolve_checkpoint(init)
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return Parent(checkpoint=load_checkpoint(path), path=path.resolve(), sha256=digest.hexdigest())


def check_network(parent: Parent, config: ModelConfig, where: str) -> None:
    """The run's network is the parent's: same backbone, and every weight but the head's of the same shape
    (checked on a network built from ``config``, so no option that changes a weight is missed)."""
    own = parent.checkpoint.config.model
    if own.backbone != config.backbone:
        raise InvalidInputError(
            f"{where}: the parent's backbone is {own.backbone}, this run's model.backbone {config.backbone} "
            "(fine-tuning keeps the parent's backbone)"
        )
    theirs = parent.checkpoint.model
    mine = build_network(config, in_features=theirs.in_features, out_features=theirs.out_features).state_dict()
    body = theirs.state_dict()
    bad = [
        k
        for k in sorted(mine.keys() | body.keys())
        if not k.startswith("head.") and (k not in mine or k not in body or mine[k].shape != body[k].shape)
    ]
    if bad:
        changed = [
            f"model.{k} {getattr(own, k)} there, {getattr(config, k)} here"
            for k in type(config).model_fields
            if getattr(own, k) != getattr(config, k)
        ]
        raise InvalidInputError(f"{where}: the parent's network has other weights ({(changed or bad)[0]})")


def field_pairs(parent: Parent, channels: Channels, field_map: dict[str, str]) -> dict[str, str]:
    """This dataset's field -> the parent's field whose head rows it keeps (``part/name`` keys)."""
    new, old = _field_keys(channels), parent.fields
    for target, source in field_map.items():
        if target not in new:
            raise InvalidInputError(
                f"train.field_map: {target!r} is not a field of this dataset (its fields: {', '.join(new)})"
            )
        if source not in old:
            raise InvalidInputError(
                f"train.field_map: {source!r} is not a field of the parent {parent.path} (its fields: {', '.join(old)})"
            )
        if new[target] != old[source]:
            raise InvalidInputError(
                f"train.field_map: {target!r} has {new[target]} components, the parent's {source!r} {old[source]}"
            )
    pairs = {k: k for k in new if k in old}
    pairs.update(field_map)
    return pairs


def fine_tune_stats(parent: Parent, stats: Stats) -> Stats:
    """The new dataset's field statistics with the parent's coordinate normalisation (module docstring)."""
    own = parent.checkpoint.stats
    return stats.model_copy(update={"coord_mean": list(own.coord_mean), "coord_scale": own.coord_scale})


def start_from_parent(model: Network, parent: Parent, channels: Channels, stats: Stats, pairs: dict[str, str]) -> None:
    """Load the parent's weights into ``model`` (built for ``channels``), mapping its head rows (module docstring)."""
    source = parent.checkpoint.model.state_dict()  # its shapes fit ``model``'s: ``check_network``
    own = model.state_dict()
    body = {k: v for k, v in source.items() if not k.startswith("head.")}
    weight, bias = own["head.weight"].clone(), own["head.bias"].clone()
    old_w, old_b = source["head.weight"], source["head.bias"]
    old_channels, old_stats = parent.checkpoint.channels, parent.checkpoint.stats
    for target, origin in pairs.items():
        rows, old_rows = _rows(channels, target), _rows(old_channels, origin)
        mu, sd = _moments(stats, target)
        old_mu, old_sd = _moments(old_stats, origin)
        weight[rows] = old_w[old_rows] * (old_sd / sd)[:, None]
        bias[rows] = (old_b[old_rows] * old_sd + old_mu - mu) / sd
    model.load_state_dict({**body, "head.weight": weight, "head.bias": bias})


def freeze(model: Network, group: str) -> tuple[int, int]:
    """Freeze the parameters of ``group`` (``none``, ``attention``, ``encoder``); (frozen, trainable) counts."""
    frozen = trainable = 0
    for name, p in model.named_parameters():
        keep = _is_frozen(name, group)
        p.requires_grad_(not keep)
        if keep:
            frozen += p.numel()
        else:
            trainable += p.numel()
    if group != "none" and frozen == 0:
        raise InvalidInputError(f"train.freeze {group}: this network has no such parameters")
    return frozen, trainable


def parent_record(
    parent: Parent, pairs: dict[str, str], channels: Channels, group: str, counts: tuple[int, int]
) -> ParentRecord:
    """What a fine-tuned checkpoint says about where it came from."""
    return ParentRecord(
        path=str(parent.path),
        sha256=parent.sha256,
        epoch=parent.checkpoint.epoch,
        backbone=parent.checkpoint.config.model.backbone,
        fields=list(parent.fields),
        kept_fields=pairs,
        new_fields=[k for k in _field_keys(channels) if k not in pairs],
        freeze=group,
        frozen_parameters=counts[0],
        trainable_parameters=counts[1],
    )


def begin(
    model: Network,
    manifest: Manifest,
    channels: Channels,
    tc: TrainConfig,
    run_dir: Path,
    *,
    state: dict[str, Any] | None,
    start: tuple[Parent, dict[str, str]] | None,
) -> tuple[Manifest, ParentRecord | None]:
    """The start of a run with ``train.init`` (none without): the parent's weights in ``model`` (resuming: they come
    with the state, which recorded what the run started from, :func:`state_entry`), the parent's coordinate
    normalisation and the frozen groups; the manifest with these statistics, and the run's record of its parent."""
    if tc.init is None:
        return manifest, None
    if state is not None:
        fine = json.loads(state.get("fine_tune") or "null")
        if fine is None:
            raise InvalidInputError(f"{run_dir}: was not started with --init; resume it without train.init")
        manifest = manifest.model_copy(update={"stats": Stats.model_validate(fine["stats"])})
        freeze(model, tc.freeze)
        return manifest, ParentRecord.from_json(fine["parent"])
    assert start is not None  # loaded and checked before the run began
    parent, pairs = start
    manifest = manifest.model_copy(update={"stats": fine_tune_stats(parent, manifest.stats)})
    start_from_parent(model, parent, channels, manifest.stats, pairs)
    counts = freeze(model, tc.freeze)
    return manifest, parent_record(parent, pairs, channels, tc.freeze, counts)


def state_entry(parent: ParentRecord | None, stats: Stats) -> str:
    """What the training state keeps of a fine-tuned run for :func:`begin` to resume it (JSON; ``null``: none)."""
    return json.dumps(None if parent is None else {"parent": parent.to_json(), "stats": stats.model_dump(mode="json")})


def _is_frozen(name: str, group: str) -> bool:
    if group == "attention":
        return ".attn." in f".{name}"
    if group == "encoder":
        return not name.startswith(HEAD_PREFIXES)
    return False


def _field_keys(channels: Channels) -> dict[str, int]:
    return {**{f"surface/{n}": k for n, k in channels.surface}, **{f"volume/{n}": k for n, k in channels.volume}}


def _rows(channels: Channels, key: str) -> slice:
    part, name = key.split("/", 1)
    return channels.slices(part)[name]


def _moments(stats: Stats, key: str) -> tuple[torch.Tensor, torch.Tensor]:
    part, name = key.split("/", 1)
    s = (stats.surface if part == "surface" else stats.volume)[name]
    return torch.tensor(s.mean, dtype=torch.float32), torch.tensor(s.std, dtype=torch.float32)
