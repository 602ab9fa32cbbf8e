"""``mspt train``: the training loop as a flat sequence of named phases.

    setup -> restore (--resume) -> for each epoch: [steps -> validation, checkpoints, metrics row] -> end

What differs between steady and transient runs is chosen once, as the run's task (``train/task.py``).
Checkpoints and the training state are written at the end of every epoch and when the loop is
interrupted (Ctrl-C); ``resume`` restarts at the exact step where the state was saved, with the same
optimiser, scheduler and RNG state. With a time limit (``train.time_limit``, ``train/budget.py``) the
epochs go on until the budget is spent; the epoch it ends in is cut short after the current step, validated
and saved like a whole one, and ``resume`` goes on with the time left.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from msptcli.checkpoint import (
    ParentRecord,
    TrainingRecord,
    force_reference,
    load_checkpoint,
    read_header,
    save_checkpoint,
)
from msptcli.config import MsptConfig
from msptcli.config_text import config_yaml
from msptcli.data.features import Channels
from msptcli.data.manifest import Manifest, read_manifest
from msptcli.device import autocast, describe_device, pick_device, precision
from msptcli.errors import DatasetError, InvalidInputError
from msptcli.io.atomic import atomic_output, make_dirs
from msptcli.io.guard import check_outputs
from msptcli.model import Network
from msptcli.train import finetune
from msptcli.train.budget import Budget
from msptcli.train.dataset import collate, loader_workers
from msptcli.train.distributed import World, join, leave, rank_batches
from msptcli.train.log import append_metrics, plot_curves, truncate_metrics
from msptcli.train.objective import channel_weights, follow_time, masked_mse, schedule
from msptcli.train.report import Reporter, TrainStart, TrainSummary
from msptcli.train.state import STATE, check_same_model, load_train_state, run_lock, save_train_state
from msptcli.train.task import AnyBatch, Task, TrainItems, task_for
from msptcli.trust.calibrate import calibrate
from msptcli.trust.check import training_shapes
from msptcli.trust.latent import training_latents
from msptcli.trust.uncertainty import Calibration

#: Steps between two readings of the loss for the progress bar.
LOG_EVERY = 10


@dataclass
class _Run:
    """What the epochs work with, built once by :func:`_setup`."""

    data_dir: Path
    run_dir: Path
    config: MsptConfig
    manifest: Manifest  # with a fine-tuned run's statistics
    task: Task
    world: World
    device: torch.device
    model: Network  # what is saved and validated
    net: nn.Module  # what the steps call: the model, maybe wrapped (torchrun) and compiled
    dataset: TrainItems
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    weights: Tensor  # (C,) loss weight of each output channel
    steps_per_epoch: int
    budget: Budget  # the time limit, and the time trained
    save_kw: dict[str, Any]  # what every checkpoint holds besides the weights
    parent: ParentRecord | None

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"


@dataclass
class _Progress:
    """Where the run is: what the training state saves and ``--resume`` restores."""

    epoch: int = 0
    step_in_epoch: int = 0
    best: float | None = None  # the lowest val_loss so far
    loss_sum: float = 0.0  # the running training loss of the current epoch
    loss_count: int = 0

    def add(self, losses: list[Tensor]) -> None:
        """Count this process's step losses (on the device: read once, here)."""
        self.loss_sum += float(torch.stack(losses).double().sum()) if losses else 0.0
        self.loss_count += len(losses)


def train_model(
    data_dir: str | Path,
    run_dir: str | Path,
    *,
    config: MsptConfig,
    resume: bool = False,
    reporter: Reporter | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    clock: Callable[[], float] = time.monotonic,
) -> TrainSummary:
    """Train on a prepared dataset, writing checkpoints, ``metrics.csv`` and ``curves.png`` in ``run_dir``.

    ``clock`` (seconds) measures the time the run trains, which ``train.time_limit`` limits."""
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    manifest = read_manifest(data_dir)
    tc = config.train
    if not manifest.split("train"):
        raise DatasetError(f"{data_dir}: the split has no training samples")
    manifest.check_samples(data_dir, [*manifest.split("train"), *manifest.split("val")])
    _check_run_dir(run_dir, data_dir)
    task = task_for(data_dir, manifest, config)
    start = None  # fine-tuning (train.init): the parent and its field pairs, checked before anything is written
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
            state = load_train_state(run_dir / STATE) if resume else None
            budget = Budget(tc.time_limit, spent=float(state.get("elapsed", 0.0)) if state else 0.0, clock=clock)
            if state is not None and budget.spent:  # resumed with no time left: nothing is built, trained or written
                summary = TrainSummary(run_dir, int(state["epoch"]), main=world.main, time_up=True,
                                       already_spent=True, elapsed=budget.agreed)  # fmt: skip
            else:
                run = _setup(data_dir, run_dir, manifest, config, task, world, device or pick_device(tc.device),
                             state=state, start=start, budget=budget)  # fmt: skip
                summary = _epochs(run, _restore(run, state), reporter if world.main else None, should_stop)
    except BaseException:
        leave(world)
        raise
    leave(world, together=True)  # no rank closes the group while another still works in it (gloo aborts then)
    return summary


def _check_run_dir(run_dir: Path, data_dir: Path) -> None:
    """The run directory is a directory of its own: not a file, not the dataset, not inside it."""
    check_outputs(run_dir, option="-o")
    resolved, data = run_dir.resolve(), data_dir.resolve()
    if resolved == data or data in resolved.parents:
        raise InvalidInputError(f"{run_dir}: is inside the dataset {data_dir}; write the run elsewhere (-o)")


def _setup(
    data_dir: Path,
    run_dir: Path,
    manifest: Manifest,
    config: MsptConfig,
    task: Task,
    world: World,
    device: torch.device,
    *,
    state: dict[str, Any] | None,
    start: tuple[finetune.Parent, dict[str, str]] | None,
    budget: Budget,
) -> _Run:
    """The network (with a fine-tuned run's start), its data, optimiser and schedule; the run's folders."""
    tc = config.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    torch.manual_seed(tc.seed)
    channels = Channels.from_fields(manifest.fields)
    model = task.network(channels)
    manifest, parent = finetune.begin(model, manifest, channels, tc, run_dir, state=state, start=start)
    model = model.to(device)
    if world.main:  # after the fine-tuning checks: a refused --init leaves no run directory behind
        make_dirs(run_dir / "checkpoints")
    net: nn.Module = model
    if world.distributed:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if tc.compile:
        net = torch.compile(net, dynamic=True)  # every batch has its own layout: shapes vary
    train_entries = manifest.split("train")
    dataset = task.dataset(manifest, train_entries)
    steps_per_epoch = math.ceil(len(dataset) / (tc.batch_size * world.size))
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad],  # frozen parameters (train.freeze) stay out
        lr=tc.lr,
        weight_decay=tc.weight_decay,
        fused=device.type == "cuda",
    )
    scheduler = schedule(optimizer, tc, steps_per_epoch, budget)
    weights = channel_weights(channels, tc).to(device)
    save_kw = dict(
        config=config,
        channels=channels,
        stats=manifest.stats,
        surface_location=manifest.surface_location,
        reference=force_reference(config, train_entries),
        volume_template=task.volume_template(channels, train_entries),
        parent=parent,
        shapes=training_shapes(
            data_dir,
            train_entries,
            "surface" if config.data.transient is None else "outline",
            flow=config.data.flow_direction,
            up=config.data.up_direction,
        ),
        record=TrainingRecord(
            dataset=str(data_dir.resolve()),
            cases={split: len(manifest.split(split)) for split in ("train", "val", "test")},
            device=describe_device(device),
            precision=precision(device, tc.bf16),
            processes=world.size,
            torch=torch.__version__,
        ),
    )
    return _Run(
        data_dir=data_dir, run_dir=run_dir, config=config, manifest=manifest, task=task, world=world, device=device,
        model=model, net=net, dataset=dataset, optimizer=optimizer, scheduler=scheduler, weights=weights,
        steps_per_epoch=steps_per_epoch, budget=budget, save_kw=save_kw, parent=parent,
    )  # fmt: skip


def _restore(run: _Run, state: dict[str, Any] | None) -> _Progress:
    """Resuming: the saved weights, optimiser, schedule, RNG and position (``metrics.csv`` cut back to it);
    then the run's config written (after the checks: a refused --resume leaves it as it was)."""
    progress = _Progress()
    if state is not None:
        check_same_model(state, run.model, run.run_dir)
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scheduler.load_state_dict(state["scheduler"])
        if run.budget.limited:
            follow_time(run.scheduler)
        torch.set_rng_state(state["torch_rng"])
        best = float(state["best"])
        progress = _Progress(
            epoch=int(state["epoch"]),
            step_in_epoch=int(state["step_in_epoch"]),
            best=None if best != best else best,  # NaN: none yet
            loss_sum=float(state.get("loss_sum", 0.0)),
            loss_count=int(state.get("loss_count", 0)),
        )
        truncate_metrics(run.run_dir / "metrics.csv", progress.epoch)
    if run.world.main:
        with atomic_output(run.run_dir / "config.yaml") as tmp:
            tmp.write_text(config_yaml(run.config))
    return progress


def _epochs(run: _Run, progress: _Progress, reporter: Reporter | None, should_stop: Callable[[], bool]) -> TrainSummary:
    """The epochs from ``progress`` on, until ``train.epochs`` or the time limit; then the end: the best
    checkpoint without validation, the curves."""
    tc, world, budget = run.config.train, run.world, run.budget
    if reporter:
        reporter.begin(_start(run))
        done = progress.epoch * run.steps_per_epoch + progress.step_in_epoch
        reporter.start(tc.epochs * run.steps_per_epoch, done, budget.seconds, budget.agreed)
    budget.start()
    row: dict[str, Any] = {}
    while budget.limited or progress.epoch < tc.epochs:
        started = time.perf_counter()
        ended = _steps(run, progress, reporter, should_stop)
        if ended == "stopped":
            return _summary(run, progress, interrupted=True)
        row = _end_epoch(run, progress, started, partial=ended == "time up")
        if reporter:
            reporter.epoch(row["epoch"], row)
        if budget.spent:
            break
    calibration = None
    if world.main:
        if not run.manifest.split("val"):  # no validation split: the last model is the best we know
            save_checkpoint(run.ckpt_dir / "best.safetensors", run.model, epoch=progress.epoch, metrics=row,
                            **run.save_kw)  # fmt: skip
        plot_curves(run.run_dir / "metrics.csv", run.run_dir / "curves.png")
        _validate_best_whole(run)
        calibration = _finish_best(run)
    summary = _summary(run, progress, time_up=budget.spent)
    summary.calibration = calibration
    if world.main and (run.ckpt_dir / "best.safetensors").is_file():
        meta, _ = read_header(run.ckpt_dir / "best.safetensors")
        summary.best_epoch, summary.best_metrics = int(meta["epoch"]), json.loads(meta.get("metrics", "{}"))
    return summary


def _start(run: _Run) -> TrainStart:
    """What the run trains with, for the reporter: device, precision, network, cases, points per step."""
    tc, record = run.config.train, run.save_kw["record"]
    if run.config.data.transient is not None:  # drawn per sample: volume points; steady: surface (and volume) points
        drawn = [tc.volume_points]
    else:
        drawn = [tc.surface_points, tc.volume_points] if run.manifest.fields.get("volume") else [tc.surface_points]
    return TrainStart(
        device=record.device,
        precision=record.precision,
        processes=record.processes,
        parameters=sum(p.numel() for p in run.model.parameters()),
        trainable=sum(p.numel() for p in run.model.parameters() if p.requires_grad),
        cases=record.cases,
        points_per_step=None if None in drawn else sum(drawn) * tc.batch_size,  # type: ignore[arg-type]
    )


def _validate_best_whole(run: _Run) -> None:
    """The best checkpoint's metrics on the validation cases' whole meshes, where validation during training
    evaluated a subsample of them (``train.val_points``); they replace its metrics (the ``val_*`` keys)."""
    limit, entries = run.config.train.val_points, run.manifest.split("val")
    best = run.ckpt_dir / "best.safetensors"
    if run.config.data.transient is not None or limit is None or not best.is_file():
        return
    if all(e.num_surface <= limit and e.num_volume <= limit for e in entries):
        return  # what was validated was whole
    ckpt = load_checkpoint(best)
    whole = run.task.validate(ckpt.model.to(run.device), run.manifest, entries, run.device, run.save_kw["reference"],
                              whole=True)  # fmt: skip
    metrics = {k: v for k, v in (ckpt.metrics or {}).items() if not k.startswith("val_")} | whole
    save_checkpoint(best, ckpt.model, epoch=ckpt.epoch, metrics=metrics, **run.save_kw)


def _finish_best(run: _Run) -> Calibration | None:
    """Write into the best checkpoint what the trust checks need of its weights (steady anchor-query models; the
    others have no anchors): the training designs' latents (``trust/latent.py``) and, with validation bodies,
    the spread's calibration (``trust/uncertainty.py``), which is returned."""
    if run.config.data.transient is not None or run.config.model.anchors is None:
        return None
    best = run.ckpt_dir / "best.safetensors"
    if not best.is_file():
        return None
    ckpt = load_checkpoint(best)
    model, kw = ckpt.model.to(run.device), dict(device=run.device, bf16=run.config.train.bf16)
    latents = training_latents(model, run.data_dir, run.manifest, run.manifest.split("train"), **kw)
    calibration = calibrate(model, run.data_dir, run.manifest, run.manifest.split("val"), ckpt.reference,
                            latents=latents, **kw)  # fmt: skip
    save_checkpoint(best, ckpt.model, epoch=ckpt.epoch, metrics=ckpt.metrics, **run.save_kw, calibration=calibration,
                    latents=latents)  # fmt: skip
    return calibration


def _summary(run: _Run, progress: _Progress, **ended: bool) -> TrainSummary:
    """What the run did, from where it is; ``ended``: how it ended (``interrupted``, ``time_up``, ...)."""
    steps = progress.epoch * run.steps_per_epoch + progress.step_in_epoch
    return TrainSummary(run.run_dir, progress.epoch, model=run.model, main=run.world.main, parent=run.parent,
                        steps_done=steps, elapsed=run.budget.elapsed(), **ended)  # fmt: skip


def _steps(
    run: _Run, progress: _Progress, reporter: Reporter | None, should_stop: Callable[[], bool]
) -> Literal["epoch", "stopped", "time up"]:
    """The optimiser steps of one epoch from ``progress``; "stopped" when a stop was asked (the state is saved),
    "time up" when the time limit ends the epoch early (``progress`` says after which step)."""
    tc, world, device = run.config.train, run.world, run.device
    run.model.train()
    run.dataset.set_epoch(progress.epoch)
    generator = torch.Generator().manual_seed(tc.seed * 100_003 + progress.epoch)
    order = torch.randperm(len(run.dataset), generator=generator)
    batches = rank_batches(order.tolist(), tc.batch_size, world)
    loader = DataLoader(
        run.dataset,
        batch_sampler=batches[progress.step_in_epoch :],  # resume mid-epoch at the exact step
        num_workers=loader_workers(tc.num_workers, run.steps_per_epoch),
        collate_fn=functools.partial(collate, model_config=run.config.model),
        pin_memory=device.type == "cuda",
    )
    losses: list[Tensor] = []  # this epoch's step losses since the loop (re)started, on the device: no sync per step
    for step, cpu_batch in enumerate(loader, start=progress.step_in_epoch):
        if _stop_asked(world, step, should_stop, device):
            progress.add(losses)
            progress.step_in_epoch = step
            _save_state(run, progress)
            return "stopped"
        losses.append(_step(run, run.task.prepare(cpu_batch, run.dataset, run.model, device).to(device)))
        if reporter:  # reading the loss is a device sync: never on a GPU inside the loop, every few steps on CPU
            read = device.type == "cpu" and (step % LOG_EVERY == 0 or step == run.steps_per_epoch - 1)
            lr = run.optimizer.param_groups[0]["lr"]  # the one this step used
            reporter.step(float(losses[-1]) if read else None, lr, run.budget.elapsed())
        time_up = _time_up(run, step)
        run.scheduler.step()  # the next step's learning rate (by time: the share spent at this tick)
        if time_up and step + 1 < run.steps_per_epoch:  # at the epoch's last step, the epoch ends as always
            progress.add(losses)
            progress.step_in_epoch = step + 1
            return "time up"
    progress.step_in_epoch = 0
    progress.epoch += 1
    progress.add(losses)
    return "epoch"


def _stop_asked(world: World, step: int, should_stop: Callable[[], bool], device: torch.device) -> bool:
    """A stop request (Ctrl-C) is shared between ranks by an all-reduce every LOG_EVERY steps, on the same steps
    everywhere; a single process checks every step."""
    if world.distributed:
        return step % LOG_EVERY == 0 and world.any(should_stop(), device)
    return should_stop()


def _time_up(run: _Run, step: int) -> bool:
    """After ``step``: whether the time limit is reached. A single process reads the clock after every step;
    under torchrun, as for a stop request, the ranks agree (on the largest elapsed time) every LOG_EVERY steps and
    at the epoch's end, on the same steps everywhere: they step with the same learning rate and stop together."""
    budget, world = run.budget, run.world
    if not budget.limited:
        return False
    if world.distributed and (step + 1) % LOG_EVERY and step + 1 < run.steps_per_epoch:
        return budget.spent
    return budget.tick(lambda elapsed: world.max(elapsed, run.device))


def _step(run: _Run, batch: AnyBatch) -> Tensor:
    """One optimiser step on ``batch`` (on the device); its loss, detached."""
    tc, device = run.config.train, run.device
    with autocast(device, tc.bf16):
        pred = run.task.forward(run.net, batch)
    loss = masked_mse(pred, batch.targets, batch.mask, run.weights)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if tc.grad_clip:
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), tc.grad_clip)
    run.optimizer.step()
    return loss.detach()


def _end_epoch(run: _Run, progress: _Progress, started: float, *, partial: bool) -> dict[str, Any]:
    """The epoch's row (training loss over every rank, validation), the best checkpoint, metrics.csv, the state.

    ``partial``: the time limit ended the epoch after ``progress.step_in_epoch`` steps. Its row, numbered as the
    epoch it is part of, is validated; the state keeps the epoch's running loss for ``--resume`` to finish it."""
    tc, world, device = run.config.train, run.world, run.device
    epoch = progress.epoch + 1 if partial else progress.epoch
    last = run.budget.spent if run.budget.limited else epoch == tc.epochs
    epoch_sum, epoch_count = world.sum(progress.loss_sum, device), world.sum(float(progress.loss_count), device)
    row: dict[str, Any] = {
        "epoch": epoch,
        "lr": run.optimizer.param_groups[0]["lr"],
        "train_loss": epoch_sum / epoch_count if epoch_count else float("nan"),
    }
    if not partial:
        progress.loss_sum, progress.loss_count = 0.0, 0
    val_entries = run.manifest.split("val")
    if val_entries and (epoch % tc.val_every == 0 or last) and world.main:
        row.update(run.task.validate(run.model, run.manifest, val_entries, device, run.save_kw["reference"]))
    row["seconds"] = time.perf_counter() - started
    score = row.get("val_loss")
    if score is not None and (progress.best is None or score < progress.best):
        progress.best = score
        if world.main:
            save_checkpoint(run.ckpt_dir / "best.safetensors", run.model, epoch=epoch, metrics=row, **run.save_kw)
    if world.main:
        append_metrics(run.run_dir / "metrics.csv", row)  # before the state: a kill between them is re-done
    _save_state(run, progress)
    world.barrier()
    return row


def _save_state(run: _Run, progress: _Progress) -> None:
    """The last checkpoint and the training state that ``--resume`` continues from, at ``progress`` (the main
    process only)."""
    if not run.world.main:
        return
    model = run.model
    save_checkpoint(run.ckpt_dir / "last.safetensors", model, epoch=progress.epoch, **run.save_kw)
    save_train_state(
        run.run_dir / STATE,
        {
            "model_config": model.config.model_dump_json(),
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "epoch": progress.epoch,
            "step_in_epoch": progress.step_in_epoch,
            "best": float("nan") if progress.best is None else progress.best,
            "loss_sum": progress.loss_sum,
            "loss_count": progress.loss_count,
            "elapsed": run.budget.elapsed(),  # seconds trained, every session: the time limit counts on from it
            "steps_done": progress.epoch * run.steps_per_epoch + progress.step_in_epoch,  # every session's
            "fine_tune": finetune.state_entry(run.parent, run.manifest.stats),
        },
    )
