"""``mspt train``: the training loop as one flat sequence of named phases.

setup -> (resume) -> for each epoch: [steps -> validation -> checkpoints -> metrics row] -> plot.
Checkpoints and the training state are written at the end of every epoch and
when the loop is interrupted (Ctrl-C); ``resume`` restarts at the exact step
where the state was saved, with the same optimiser, scheduler and RNG state.
"""

from __future__ import annotations

import csv
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from msptcli.config import MsptConfig
from msptcli.data.features import IN_FEATURES, Channels
from msptcli.data.manifest import Manifest, read_manifest
from msptcli.data.sample import load_sample
from msptcli.errors import DatasetError, InvalidInputError
from msptcli.io.atomic import atomic_output
from msptcli.model import MSPT, ModelConfig
from msptcli.train.checkpoint import load_train_state, save_checkpoint, save_train_state
from msptcli.train.dataset import Batch, TrainClouds, collate
from msptcli.train.distributed import World, join, leave, rank_batches
from msptcli.train.evaluate import evaluate_sample

#: Steps between two readings of the loss for the progress bar.
LOG_EVERY = 10


class Reporter(Protocol):
    """What the loop tells its caller (the CLI draws a progress bar from it)."""

    def start(self, total_steps: int, done_steps: int) -> None: ...
    def step(self, loss: float | None, lr: float) -> None: ...
    def epoch(self, epoch: int, row: dict[str, Any]) -> None: ...


@dataclass
class TrainSummary:
    run_dir: Path
    epochs_done: int
    best_val: float | None
    last_row: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False
    model: MSPT | None = None  # the trained network of this process (under torchrun: of this rank)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("--device cuda: no CUDA device is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError("--device mps: MPS is not available")
    return torch.device(name)


def model_config_for(config: MsptConfig, manifest: Manifest) -> ModelConfig:
    channels = Channels.from_fields(manifest.fields)
    return ModelConfig(in_features=IN_FEATURES, out_features=channels.total, **config.model.model_dump())


def reference_of(config: MsptConfig) -> dict[str, Any]:
    d = config.data
    return {
        "reference_area": d.reference_area,
        "area_key": d.reference_area_key,
        "velocity": d.reference_velocity,
        "density": d.density,
        "pressure_field": d.pressure_field,
        "wall_shear_field": d.wall_shear_field,
    }


def train_model(
    data_dir: str | Path,
    run_dir: str | Path,
    *,
    config: MsptConfig,
    resume: bool = False,
    reporter: Reporter | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> TrainSummary:
    """Train on a prepared dataset, writing checkpoints, ``metrics.csv`` and ``curves.png`` in ``run_dir``."""
    # --- setup ---------------------------------------------------------------------------------------
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    manifest = read_manifest(data_dir)
    tc = config.train
    if not manifest.split("train"):
        raise DatasetError(f"{data_dir}: the split has no training samples")
    ckpt_dir = run_dir / "checkpoints"
    if not resume and (ckpt_dir / "last.safetensors").exists():
        raise InvalidInputError(f"{run_dir}: already holds a run; use --resume to continue it or another -o")
    world, device = join(tc.device)
    try:
        return _train(
            data_dir,
            run_dir,
            manifest,
            config,
            world,
            device or pick_device(tc.device),
            resume=resume,
            reporter=reporter if world.main else None,
            should_stop=should_stop,
        )
    finally:
        leave(world)


def _train(
    data_dir: Path,
    run_dir: Path,
    manifest: Manifest,
    config: MsptConfig,
    world: World,
    device: torch.device,
    *,
    resume: bool,
    reporter: Reporter | None,
    should_stop: Callable[[], bool],
) -> TrainSummary:
    tc = config.train
    train_entries, val_entries = manifest.split("train"), manifest.split("val")
    ckpt_dir = run_dir / "checkpoints"
    if world.main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        with atomic_output(run_dir / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)

    channels = Channels.from_fields(manifest.fields)
    model_config = model_config_for(config, manifest)
    model = MSPT(model_config).to(device)
    net = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if (world.distributed)
        else model
    )  # what the steps call; ``model`` is what is saved and validated
    if tc.compile:
        net = torch.compile(net, dynamic=True)  # every batch has its own layout: shapes vary
    dataset = TrainClouds(
        data_dir,
        manifest,
        train_entries,
        surface_points=tc.surface_points,
        volume_points=tc.volume_points,
        seed=tc.seed,
    )
    steps_per_epoch = math.ceil(len(dataset) / (tc.batch_size * world.size))
    total_steps = tc.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay, fused=device.type == "cuda"
    )
    warmup = tc.warmup_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: _lr_factor(s, warmup, total_steps, tc.min_lr_ratio)
    )
    weights = _channel_weights(channels, config).to(device)
    reference = reference_of(config)
    reference["training_reference_areas"] = [e.reference_area for e in train_entries if e.reference_area]
    template = volume_template(data_dir, manifest, train_entries) if channels.volume else None
    save_kw = dict(
        config=config,
        channels=channels,
        stats=manifest.stats,
        surface_location=manifest.surface_location,
        reference=reference,
        volume_template=template,
    )

    # --- resume --------------------------------------------------------------------------------------
    epoch, step_in_epoch, best = 0, 0, None
    loss_sum, loss_count = 0.0, 0  # the running training loss of the current epoch
    if resume:
        state = load_train_state(run_dir / "train_state.pt")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        epoch, step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        best = None if float(state["best"]) != float(state["best"]) else float(state["best"])  # NaN: none yet
        loss_sum, loss_count = float(state.get("loss_sum", 0.0)), int(state.get("loss_count", 0))
        _truncate_metrics(run_dir / "metrics.csv", epoch)
    if reporter:
        reporter.start(total_steps, epoch * steps_per_epoch + step_in_epoch)

    def save_state(next_epoch: int, next_step: int) -> None:
        if not world.main:
            return
        save_checkpoint(ckpt_dir / "last.safetensors", model, epoch=next_epoch, **save_kw)
        save_train_state(
            run_dir / "train_state.pt",
            {
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "epoch": next_epoch,
                "step_in_epoch": next_step,
                "best": float("nan") if best is None else best,
                "loss_sum": loss_sum,
                "loss_count": loss_count,
            },
        )

    # --- epochs --------------------------------------------------------------------------------------
    row: dict[str, Any] = {}
    while epoch < tc.epochs:
        started = time.perf_counter()
        model.train()
        dataset.set_epoch(epoch)
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(tc.seed * 100_003 + epoch))
        batches = rank_batches(order.tolist(), tc.batch_size, world)
        loader = DataLoader(
            dataset,
            batch_sampler=batches[step_in_epoch:],  # resume mid-epoch at the exact step
            num_workers=tc.num_workers,
            collate_fn=functools.partial(collate, model_config=model_config),
            pin_memory=device.type == "cuda",
        )
        losses = []  # this epoch's step losses since the loop (re)started, on the device: no sync per step
        for step, cpu_batch in enumerate(loader, start=step_in_epoch):
            # A stop request (Ctrl-C) is shared between ranks by an all-reduce every LOG_EVERY steps, on the
            # same steps everywhere; a single process checks every step.
            if world.distributed:
                stop_now = step % LOG_EVERY == 0 and world.any(should_stop(), device)
            else:
                stop_now = should_stop()
            if stop_now:
                loss_sum += float(torch.stack(losses).double().sum()) if losses else 0.0
                loss_count += len(losses)
                save_state(epoch, step)
                return TrainSummary(run_dir, epoch, best, row, interrupted=True, model=model)
            batch = cpu_batch.to(device)
            loss = _loss(net, batch, weights, device, tc.bf16)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if tc.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            scheduler.step()
            losses.append(loss.detach())
            if reporter:  # reading the loss is a device sync: never on a GPU inside the loop, every few steps on CPU
                read = device.type == "cpu" and (step % LOG_EVERY == 0 or step == steps_per_epoch - 1)
                reporter.step(float(losses[-1]) if read else None, scheduler.get_last_lr()[0])
        step_in_epoch = 0
        epoch += 1

        # --- validation, checkpoints, metrics -------------------------------------------------------
        loss_sum += float(torch.stack(losses).double().sum()) if losses else 0.0
        loss_count += len(losses)
        epoch_sum, epoch_count = world.sum(loss_sum, device), world.sum(float(loss_count), device)
        row = {
            "epoch": epoch,
            "lr": scheduler.get_last_lr()[0],
            "train_loss": epoch_sum / epoch_count if epoch_count else float("nan"),
        }
        loss_sum, loss_count = 0.0, 0
        if val_entries and (epoch % tc.val_every == 0 or epoch == tc.epochs) and world.main:
            row.update(_validate(model, data_dir, manifest, val_entries, device, reference))
        row["seconds"] = time.perf_counter() - started
        score = row.get("val_loss")
        if score is not None and (best is None or score < best):
            best = score
            if world.main:
                save_checkpoint(ckpt_dir / "best.safetensors", model, epoch=epoch, metrics=row, **save_kw)
        if world.main:
            _append_metrics(run_dir / "metrics.csv", row)  # before the state: a kill between them is re-done
        save_state(epoch, 0)
        world.barrier()
        if reporter:
            reporter.epoch(epoch, row)
    if world.main:
        if not val_entries:  # no validation split: the last model is the best we know
            save_checkpoint(ckpt_dir / "best.safetensors", model, epoch=epoch, metrics=row, **save_kw)
        plot_curves(run_dir / "metrics.csv", run_dir / "curves.png")
    return TrainSummary(run_dir, epoch, best, row, model=model)


#: Volume points kept in the checkpoint's template.
TEMPLATE_POINTS = 40_000


def volume_template(data_dir: Path, manifest: Manifest, entries: list) -> np.ndarray | None:  # type: ignore[type-arg]
    """Where the first training case's volume points lie relative to its body's bounding box, (M, 3).

    ``predict`` maps these onto a new body's box when no volume mesh is given, so that the model sees
    volume points distributed as in training (domain extent, refinement near the body)."""
    sample = load_sample(data_dir / entries[0].file, keys=["surface/points", "volume/points"])
    if "volume/points" not in sample.arrays:
        return None
    body = sample.arrays["surface/points"].astype(np.float64)
    lo, size = body.min(axis=0), np.ptp(body, axis=0)
    volume = sample.arrays["volume/points"].astype(np.float64)
    keep = np.random.default_rng(0).permutation(len(volume))[:TEMPLATE_POINTS]
    return ((volume[np.sort(keep)] - lo) / size).astype(np.float32)


def _loss(
    model: torch.nn.Module, batch: Batch, weights: torch.Tensor, device: torch.device, bf16: bool
) -> torch.Tensor:
    """Weighted MSE per channel over the rows where the channel counts (surface or volume points)."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
        pred = model(batch.features, batch.layout)
    err = (pred.float() - batch.targets) ** 2 * batch.mask
    per_channel = err.sum(0) / batch.mask.sum(0).clamp(min=1)
    return (per_channel * weights).sum() / weights.sum().clamp(min=1e-12)


def _validate(model: MSPT, data_dir: Path, manifest: Manifest, entries, device, reference) -> dict[str, float]:  # type: ignore[no-untyped-def]
    model.eval()
    rows = [
        evaluate_sample(model, load_sample(data_dir / e.file), manifest, device, reference=reference) for e in entries
    ]
    keys = sorted({k for r in rows for k in r if not k.startswith(("cd_pred", "cd_true", "cl_pred", "cl_true"))})
    out = {f"val_{k}": float(np.mean([r[k] for r in rows if k in r])) for k in keys}
    return out


def _channel_weights(channels: Channels, config: MsptConfig) -> torch.Tensor:
    """Per output channel: part weight x field weight / components (each field counts once)."""
    w = []
    for part, part_weight in (("surface", config.train.surface_weight), ("volume", config.train.volume_weight)):
        for name, k in getattr(channels, part):
            w += [part_weight * config.train.field_weights.get(name, 1.0) / k] * k
    return torch.tensor(w, dtype=torch.float32)


def _lr_factor(step: int, warmup: float, total: int, floor: float) -> float:
    """Linear warm-up, then cosine decay from 1 to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1.0, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    rows = _read_metrics(path)
    rows.append(row)
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_output(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _truncate_metrics(path: Path, epoch: int) -> None:
    """Drop rows of epochs after the resumed state (written after it was saved)."""
    rows = [r for r in _read_metrics(path) if int(float(r["epoch"])) <= epoch]
    if path.is_file():
        with atomic_output(path) as tmp, tmp.open("w", newline="") as f:
            if rows:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)


def plot_curves(metrics: Path, png: Path) -> Path | None:
    """Loss and validation curves from ``metrics.csv`` as a PNG (matplotlib, no display)."""
    rows = _read_metrics(metrics)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [float(r["epoch"]) for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("train_loss", "val_loss"):
        vals = [float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows]
        ax1.plot(epochs, vals, label=key)
    ax1.set_yscale("log")
    ax1.set_xlabel("epoch")
    ax1.set_title("loss (standardised MSE)")
    ax1.legend()
    for key in [k for k in rows[-1] if k.startswith("val_rel_l2/")]:
        vals = [float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows]
        ax2.plot(epochs, vals, label=key.removeprefix("val_rel_l2/"))
    ax2.set_xlabel("epoch")
    ax2.set_title("validation relative L2 (physical units)")
    if ax2.lines:
        ax2.legend()
    fig.tight_layout()
    with atomic_output(png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return png
