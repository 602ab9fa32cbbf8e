"""``mspt train``: the training loop as one flat sequence of named phases.

setup -> (resume) -> for each epoch: [steps -> validation -> checkpoints -> metrics row] -> plot.
Checkpoints and the training state are written at the end of every epoch and
when the loop is interrupted (Ctrl-C); ``resume`` restarts at the exact step
where the state was saved, with the same optimiser, scheduler and RNG state.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import yaml
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from msptcli.checkpoint import force_reference, save_checkpoint
from msptcli.config import MsptConfig
from msptcli.data.features import Channels
from msptcli.data.manifest import Manifest, Stats, read_manifest
from msptcli.data.sample import load_sample
from msptcli.data.template import volume_template
from msptcli.data.transient import input_width, time_levels
from msptcli.device import autocast, pick_device
from msptcli.errors import DatasetError, InvalidInputError
from msptcli.evaluate import evaluate_sample
from msptcli.io.atomic import atomic_output, make_dirs
from msptcli.io.guard import check_outputs
from msptcli.model import ModelConfig, Network, build_layout, build_network
from msptcli.train import finetune
from msptcli.train.dataset import Batch, QueryBatch, TrainClouds, collate, loader_workers
from msptcli.train.distributed import World, join, leave, rank_batches
from msptcli.train.log import append_metrics, plot_curves, truncate_metrics
from msptcli.train.objective import channel_weights, lr_factor, masked_mse
from msptcli.train.state import STATE, load_train_state, run_lock, save_train_state
from msptcli.train.transient import StepPairs, validate_steps

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
    interrupted: bool = False
    model: Network | None = None  # the trained network of this process (under torchrun: of this rank)
    main: bool = True  # this process speaks for the run (rank 0 under torchrun)
    parent: dict[str, Any] | None = None  # fine-tuned (train.init): the parent's record (finetune.parent_record)


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
    manifest.check_samples(data_dir, [*manifest.split("train"), *manifest.split("val")])
    _check_run_dir(run_dir, data_dir)
    start = None  # fine-tuning (train.init): the parent and its field pairs, checked before anything is written
    transient = config.data.transient if manifest.kind == "transient" else None
    if manifest.kind == "transient" and transient is None:
        raise InvalidInputError(f"{data_dir}: is a transient dataset; train it with its own config (data.transient)")
    if manifest.kind == "steady" and config.data.transient is not None:
        raise InvalidInputError(f"{data_dir}: is a steady dataset, but the config sets data.transient")
    if transient is not None and tc.init is not None:
        raise InvalidInputError("fine-tuning (--init) of transient runs is not supported yet")
    if tc.init is not None and not resume:
        parent = finetune.load_parent(tc.init)
        finetune.check_network(parent, config.model, f"--init {parent.path}")
        start = (parent, finetune.field_pairs(parent, Channels.from_fields(manifest.fields), tc.field_map))
    world, device = join(tc.device)
    try:
        lock = run_lock(run_dir) if world.main else contextlib.nullcontext()
        with lock:  # first: a run another process is writing is refused as such, whatever it holds yet
            if not resume and (run_dir / "checkpoints" / "last.safetensors").exists():
                raise InvalidInputError(f"{run_dir}: already holds a run; use --resume to continue it or another -o")
            return _train(
                data_dir,
                run_dir,
                manifest,
                config,
                world,
                device or pick_device(tc.device),
                resume=resume,
                start=start,
                reporter=reporter if world.main else None,
                should_stop=should_stop,
            )
    finally:
        leave(world)


def _check_run_dir(run_dir: Path, data_dir: Path) -> None:
    """The run directory is a directory of its own: not a file, not the dataset, not inside it."""
    check_outputs(run_dir, option="-o")
    resolved, data = run_dir.resolve(), data_dir.resolve()
    if resolved == data or data in resolved.parents:
        raise InvalidInputError(f"{run_dir}: is inside the dataset {data_dir}; write the run elsewhere (-o)")


def _train(
    data_dir: Path,
    run_dir: Path,
    manifest: Manifest,
    config: MsptConfig,
    world: World,
    device: torch.device,
    *,
    resume: bool,
    start: tuple[finetune.Parent, dict[str, str]] | None,
    reporter: Reporter | None,
    should_stop: Callable[[], bool],
) -> TrainSummary:
    tc = config.train
    train_entries, val_entries = manifest.split("train"), manifest.split("val")
    ckpt_dir = run_dir / "checkpoints"
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)

    channels = Channels.from_fields(manifest.fields)
    model_config = config.model
    transient = config.data.transient if manifest.kind == "transient" else None
    width = input_width(transient, channels)
    model = build_network(
        model_config, in_features=width, out_features=channels.total, levels=time_levels(transient, channels)
    )
    # --- fine-tuning (train.init): the parent's weights, its coordinate normalisation, frozen groups --
    state = load_train_state(run_dir / STATE) if resume else None
    parent_record = None
    if tc.init is not None:
        if state is not None:  # the weights come from the state; what the run started from was recorded there
            fine = json.loads(state.get("fine_tune") or "null")
            if fine is None:
                raise InvalidInputError(f"{run_dir}: was not started with --init; resume it without train.init")
            manifest = manifest.model_copy(update={"stats": Stats.model_validate(fine["stats"])})
            parent_record = fine["parent"]
        else:
            assert start is not None  # loaded and checked by train_model
            parent, pairs = start
            manifest = manifest.model_copy(update={"stats": finetune.fine_tune_stats(parent, manifest.stats)})
            finetune.start_from_parent(model, parent, channels, manifest.stats, pairs)
        counts = finetune.freeze(model, tc.freeze)
        if parent_record is None:
            parent_record = finetune.parent_record(parent, pairs, channels, tc.freeze, counts)
    model = model.to(device)
    if world.main:  # after the fine-tuning checks: a refused --init leaves no run directory behind
        make_dirs(ckpt_dir)
    net = (
        DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        if (world.distributed)
        else model
    )  # what the steps call; ``model`` is what is saved and validated
    if tc.compile:
        net = torch.compile(net, dynamic=True)  # every batch has its own layout: shapes vary
    dataset = (
        TrainClouds(
            data_dir,
            manifest,
            train_entries,
            surface_points=tc.surface_points,
            volume_points=tc.volume_points,
            seed=tc.seed,
            anchors=model_config.anchors,
        )
        if transient is None
        else StepPairs(data_dir, manifest, train_entries, transient, points=tc.volume_points, seed=tc.seed)
    )
    steps_per_epoch = math.ceil(len(dataset) / (tc.batch_size * world.size))
    total_steps = tc.epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],  # frozen parameters (train.freeze) stay out
        lr=tc.lr,
        weight_decay=tc.weight_decay,
        fused=device.type == "cuda",
    )
    warmup = tc.warmup_epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup, total_steps, tc.min_lr_ratio)
    )
    weights = channel_weights(channels, tc).to(device)
    reference = force_reference(config, train_entries)
    template = volume_template(data_dir, train_entries) if channels.volume and transient is None else None
    save_kw = dict(
        config=config,
        channels=channels,
        stats=manifest.stats,
        surface_location=manifest.surface_location,
        reference=reference,
        volume_template=template,
        parent=parent_record,
    )

    # --- resume --------------------------------------------------------------------------------------
    epoch, step_in_epoch, best = 0, 0, None
    loss_sum, loss_count = 0.0, 0  # the running training loss of the current epoch
    if state is not None:
        _check_same_model(state, model, run_dir)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        epoch, step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
        best = None if float(state["best"]) != float(state["best"]) else float(state["best"])  # NaN: none yet
        loss_sum, loss_count = float(state.get("loss_sum", 0.0)), int(state.get("loss_count", 0))
        truncate_metrics(run_dir / "metrics.csv", epoch)
    if world.main:  # after the resume checks: a refused --resume leaves the run's config as it was
        with atomic_output(run_dir / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    if reporter:
        reporter.start(total_steps, epoch * steps_per_epoch + step_in_epoch)

    def save_state(next_epoch: int, next_step: int) -> None:
        if not world.main:
            return
        save_checkpoint(ckpt_dir / "last.safetensors", model, epoch=next_epoch, **save_kw)
        save_train_state(
            run_dir / STATE,
            {
                "model_config": model.config.model_dump_json(),
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "epoch": next_epoch,
                "step_in_epoch": next_step,
                "best": float("nan") if best is None else best,
                "loss_sum": loss_sum,
                "loss_count": loss_count,
                "fine_tune": json.dumps(
                    None
                    if parent_record is None
                    else {"parent": parent_record, "stats": manifest.stats.model_dump(mode="json")}
                ),
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
            num_workers=loader_workers(tc.num_workers, steps_per_epoch),
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
                return TrainSummary(run_dir, epoch, interrupted=True, model=model, main=world.main)
            if isinstance(cpu_batch, Batch) and cpu_batch.unrolls:  # pushforward (transient)
                cpu_batch = _push_forward(cpu_batch, dataset, model, model_config, device, bf16=tc.bf16)
            batch = cpu_batch.to(device)
            with autocast(device, tc.bf16):
                if isinstance(batch, QueryBatch):  # anchor-query MSPT: the loss counts on the queries
                    a = batch.anchors
                    pred = net(a.features, a.layout, queries=batch.queries, trees=a.trees)
                else:
                    pred = net(batch.features, batch.layout)
            loss = masked_mse(pred, batch.targets, batch.mask, weights)
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
            if transient is None:
                row.update(_validate(model, data_dir, manifest, val_entries, device, reference, bf16=tc.bf16))
            else:
                row.update(validate_steps(model, data_dir, manifest, val_entries, transient, device, bf16=tc.bf16))
        row["seconds"] = time.perf_counter() - started
        score = row.get("val_loss")
        if score is not None and (best is None or score < best):
            best = score
            if world.main:
                save_checkpoint(ckpt_dir / "best.safetensors", model, epoch=epoch, metrics=row, **save_kw)
        if world.main:
            append_metrics(run_dir / "metrics.csv", row)  # before the state: a kill between them is re-done
        save_state(epoch, 0)
        world.barrier()
        if reporter:
            reporter.epoch(epoch, row)
    if world.main:
        if not val_entries:  # no validation split: the last model is the best we know
            save_checkpoint(ckpt_dir / "best.safetensors", model, epoch=epoch, metrics=row, **save_kw)
        plot_curves(run_dir / "metrics.csv", run_dir / "curves.png")
    return TrainSummary(run_dir, epoch, model=model, main=world.main, parent=parent_record)


def _push_forward(
    batch: Batch, dataset: StepPairs, model: Network, model_config: ModelConfig, device: torch.device, *, bf16: bool
) -> Batch:
    """The batch with the inputs and targets of its pushforward clouds (``StepPairs.push_forward``) filled in."""
    features, targets = batch.features, batch.targets  # the collated batch's own tensors: filled in place
    for index, start, stop in batch.unrolls:
        features[start:stop], targets[start:stop] = dataset.push_forward(model, index, device, bf16=bf16)
    layout = batch.layout
    if model_config.adaptive is not None:  # the patches follow the inputs
        layout = build_layout(layout.sizes, model_config, features)
    return replace(batch, features=features, targets=targets, layout=layout, unrolls=())


def _validate(model, data_dir, manifest, entries, device, reference, *, bf16) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Mean over the validation samples of their whole-mesh metrics (``evaluate_sample``), as ``val_*``."""
    rows = [
        evaluate_sample(model, load_sample(data_dir / e.file), manifest, reference=reference, device=device, bf16=bf16)
        for e in entries
    ]
    keys = sorted({k for r in rows for k in r if not k.startswith(("cd_pred", "cd_true", "cl_pred", "cl_true"))})
    return {f"val_{k}": float(np.mean([r[k] for r in rows if k in r])) for k in keys}


def _check_same_model(state: dict[str, Any], model: Network, run_dir: Path) -> None:
    """``--resume`` continues the network the run trained: refuse another ``model:`` config in one line."""
    saved = state.get("model_config")
    if saved is not None and saved != model.config.model_dump_json():
        old, new = json.loads(saved), model.config.model_dump(mode="json")
        diff = ", ".join(f"model.{k} {old.get(k)} there, {new.get(k)} now" for k in new if old.get(k) != new.get(k))
        raise InvalidInputError(f"{run_dir}: cannot resume with another network ({diff})")
    own = model.state_dict()
    for key, value in state["model"].items():
        if key not in own or own[key].shape != value.shape:
            raise InvalidInputError(f"{run_dir}: cannot resume: its saved weights do not fit this network ({key})")
