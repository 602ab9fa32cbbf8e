"""Fine-tuning in the low-data regime: a network pretrained on one family of Ahmed bodies, adapted to another.

    python benchmarks/finetune.py                  # CPU: pretraining + 12 short runs (~50 min)
    python benchmarks/finetune.py --reuse          # evaluate finished runs again

Families (``params.json``, slant angle of the rear window — the parameter that changes the wake
most): **pretraining** the 12 bodies with a slant below 20°, **fine-tuning** the 12 with 20° or
more. Of the second family, the first 1, 2 and 4 of ``FINE_TUNE`` (nested sets, spread over the
angles) are trained on, and the 8 others (or every other of them, ``--test-cases 4``) are the test set
of every run.

Runs, each the default model (8192 anchors, width 128, 4 blocks), batch 1, no validation:

- **pretrain**: ``--pretrain-steps`` optimiser steps on the pretraining family;
- per size k in 1, 2, 4, ``--steps`` optimiser steps on the k cases (so every run of a size costs the
  same number of steps): **scratch** (a new network, the default lr), and ``mspt train --init`` of
  the pretrained run with **none**, **attention** and **encoder** frozen (``train.freeze``; the lr
  ``--fine-tune-lr``, the usual lower rate of fine-tuning).

Every run is evaluated on the whole meshes of the 8 test bodies (``evaluate_sample``, as validation:
rel. L2 of surface p, wall shear, volume U and p in physical units; Cd from the CFD surface) with the
normalisation of its own checkpoint. ``s / step`` is the wall-clock of the run over its steps (a frozen
group needs no gradients: cheaper steps), ``trained`` the parameters the optimiser updates.

Tables are printed as Markdown; record them in docs/benchmarks.md with the machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name

from msptcli.checkpoint import load_checkpoint
from msptcli.config import load_config
from msptcli.data.manifest import read_manifest
from msptcli.data.sample import load_sample
from msptcli.evaluate import evaluate_sample
from msptcli.options import train_config
from msptcli.prepare import prepare_dataset
from msptcli.train.loop import train_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ahmed"
SPLIT_DEG = 20.0
#: Fine-tuning cases in the order they join the training set: 1 = [0], 2 = [0, 1], 4 = [0, 1, 2, 3].
FINE_TUNE = ["case_0000", "case_0005", "case_0018", "case_0017"]  # 34.3°, 24.9°, 38.4°, 22.2°
SIZES = (1, 2, 4)
MODES = ("scratch", "none", "attention", "encoder")
FIELDS = ["surface/p", "surface/wallShearStress", "volume/U", "volume/p"]


def families(data: Path) -> tuple[list[str], list[str]]:
    """(pretraining, fine-tuning) case names, split by the slant angle."""
    low, high = [], []
    for case in sorted(data.glob("case_*")):
        slant = json.loads((case / "params.json").read_text())["params"]["slant_deg"]
        (low if slant < SPLIT_DEG else high).append(case.name)
    return low, high


def prepare(data: Path, work: Path, name: str, train: list[str], test: list[str]) -> Path:
    out = work / f"data-{name}"
    values = {"data.split.test": test, "data.split.val": [], "data.split.fractions": [1, 0, 0]}
    prepare_dataset([str(data / c) for c in train + test], out, config=load_config(values=values), workers=2)
    return out


def train(data_dir: Path, run: Path, steps: int, *, init: Path | None, freeze: str, lr: float, reuse: bool) -> float:
    """Train ``steps`` optimiser steps (whole epochs, rounded up); the wall-clock seconds. The config is
    built as ``mspt train DATA -o RUN [--init INIT --freeze FREEZE]`` builds it (the parent's model)."""
    if reuse and (run / "checkpoints" / "last.safetensors").is_file():
        rows = (run / "metrics.csv").read_text().splitlines()[1:]
        return sum(float(r.split(",")[-1]) for r in rows)
    per_epoch = len(read_manifest(data_dir).split("train"))
    values: dict[str, object] = {"train.epochs": max(1, math.ceil(steps / per_epoch)), "train.lr": lr}
    cfg = train_config(data_dir, run, values=values, init=init, freeze=None if init is None else freeze)
    if run.exists():
        shutil.rmtree(run)
    started = time.perf_counter()
    train_model(data_dir, run, config=cfg)
    return time.perf_counter() - started


def evaluate(data_dir: Path, run: Path) -> dict[str, float]:
    """Mean over the test split of the whole-mesh metrics, with the checkpoint's own normalisation."""
    ckpt = load_checkpoint(run)
    manifest = read_manifest(data_dir)
    manifest = manifest.model_copy(update={"stats": ckpt.stats})
    rows = []
    for entry in manifest.split("test"):
        m = evaluate_sample(ckpt.model, load_sample(data_dir / entry.file), manifest, reference=ckpt.reference,
                            device=torch.device("cpu"))  # fmt: skip
        cd = abs(m["cd_pred"] - m["cd_true"]) / abs(m["cd_true"])
        rows.append({**{f: m[f"rel_l2/{f}"] for f in FIELDS}, "cd": cd})
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def trained_parameters(run: Path) -> int:
    ckpt = load_checkpoint(run)
    if ckpt.parent is not None:
        return ckpt.parent.trainable_parameters
    return sum(p.numel() for p in ckpt.model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the 24 Ahmed cases")
    parser.add_argument("--work", type=Path, default=Path("out/finetune"), help="prepared data and runs")
    parser.add_argument("--pretrain-steps", type=int, default=300)
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps of every low-data run")
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of pretraining and scratch runs")
    parser.add_argument("--fine-tune-lr", type=float, default=3e-4)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument(
        "--test-cases",
        type=int,
        default=8,
        help="test on every (8 / this)-th of the 8 test bodies (whole-mesh "
        "evaluation costs about 20 s a body on 2 cores: 4 halves it)",
    )
    parser.add_argument("--reuse", action="store_true", help="evaluate finished runs again")
    parser.add_argument("--plot", type=Path, help="write the plot of error against training cases here (PNG)")
    args = parser.parse_args()
    low, high = families(args.data)
    if len(low) + len(high) != 24 or not set(FINE_TUNE) <= set(high):
        sys.exit(f"expected the 24 Ahmed cases in {args.data} (fine-tuning cases with a slant of {SPLIT_DEG}° or more)")
    test = [c for c in high if c not in FINE_TUNE]
    test = test[:: max(1, len(test) // max(1, args.test_cases))][: args.test_cases]
    work = args.work
    print(f"# Fine-tuning, {datetime.date.today().isoformat()}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, device cpu")
    print(f"pretraining family (slant < {SPLIT_DEG:g}°): {', '.join(low)}")
    print(f"fine-tuning cases in order: {', '.join(FINE_TUNE)}; test: {', '.join(test)}")
    print(f"pretraining {args.pretrain_steps} steps (lr {args.lr:g}); every low-data run {args.steps} steps "
          f"(scratch lr {args.lr:g}, fine-tuning lr {args.fine_tune_lr:g}); batch 1")  # fmt: skip
    print()
    pre_data = prepare(args.data, work, "pretrain", low, [])
    pretrained = work / "run-pretrain"
    seconds = train(pre_data, pretrained, args.pretrain_steps, init=None, freeze="none", lr=args.lr, reuse=args.reuse)
    print(f"pretrained in {seconds:.0f} s", flush=True)
    print()
    print("| cases | run | trained parameters | s / step | surface p | wall shear | volume U | volume p | Cd err |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    results = {}
    for k in args.sizes:
        data_dir = prepare(args.data, work, f"fine-{k}", FINE_TUNE[:k], test)
        epochs = max(1, math.ceil(args.steps / k))
        for mode in MODES:
            run = work / f"run-{k}-{mode}"
            init = None if mode == "scratch" else pretrained
            lr = args.lr if mode == "scratch" else args.fine_tune_lr
            seconds = train(data_dir, run, args.steps, init=init, freeze=mode, lr=lr, reuse=args.reuse)
            mean = evaluate(data_dir, run)
            results[(k, mode)] = mean
            cells = [f"{trained_parameters(run):,}", f"{seconds / (epochs * k):.2f}"]
            cells += [f"{mean[f]:.3f}" for f in FIELDS] + [f"{100 * mean['cd']:.1f}%"]
            label = "scratch" if mode == "scratch" else f"--init, freeze {mode}"
            print(f"| {k} | {label} | " + " | ".join(cells) + " |", flush=True)
    print()
    print(f"<!-- {json.dumps({f'{k}-{m}': v for (k, m), v in results.items()})} -->")
    if args.plot:
        plot(results, args.plot)


def plot(results: dict[tuple[int, str], dict[str, float]], path: Path) -> None:
    """Mean field rel. L2 on the test bodies against training cases, one line per run kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    sizes = sorted({k for k, _ in results})
    for mode in MODES:
        label = "scratch" if mode == "scratch" else f"fine-tuned, freeze {mode}"
        fields = [np.mean([results[(k, mode)][f] for f in FIELDS]) for k in sizes]
        axes[0].plot(sizes, fields, "o-", label=label)
        axes[1].plot(sizes, [100 * results[(k, mode)]["cd"] for k in sizes], "o-", label=label)
    for ax, title in zip(axes, ("mean rel. L2 of the 4 fields", "Cd error (%)"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(k) for k in sizes])
        ax.set_xlabel("training cases of the new family")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
