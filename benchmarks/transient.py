"""Transient MSPT on real vortex shedding: one-step error, rollouts, Strouhal number and mean drag.

    python benchmarks/transient.py                 # CPU: prepare, train (~35 min), evaluate
    python benchmarks/transient.py --reuse         # evaluate a finished run again
    python benchmarks/transient.py --pushforward 2 --compare out/bench-transient --work out/bench-pushforward
    python benchmarks/transient.py --advection none --pushforward 0 --work out/before  # the defaults before 12-04

Data: the six pimpleFoam runs of ``../shared/data/transient`` (laminar shedding past 2D bluff bodies,
48 snapshots each, about 12 per shedding period). Split (documented in docs/benchmarks.md):

- **train** case_0000 (circle, Re 279), case_0001 (ellipse, Re 363), case_0003 (square, Re 422),
  case_0004 (rounded rectangle 2.0, Re 194): every shape family, the extremes of Re;
- **test** case_0002 (rounded rectangle 0.73, Re 263) and case_0005 (ellipse 0.52 at 58°, Re 194):
  shapes and Reynolds numbers the model has not seen, inside the training range.

The model is the default MSPT (width 128, 4 blocks, 8 heads) on every mesh point, trained on every
step of the training cases (``data.transient``: increments, history 1 carried along U, noise 0.5, pushforward
1, conditions Re and dt). On each case:

- **one step**: from every true snapshot t, the predicted t + 1 (teacher forcing): mean rel. L2 of U
  and p, next to *persistence* (f(t+1) = f(t)), the error of not predicting at all;
- **rollout**: ``mspt rollout`` from snapshot h (the history) to the end (``msptcli.rollout``): rel.
  L2 after 1, 10 and 47 steps, the Strouhal number of the predicted lift (zero up-crossings, the
  data's README) and the mean Cd over its whole cycles, against the solver's (``params.json``) and
  against the same method on the series' own fields; seconds per step.

Tables are printed as Markdown and the plot is written to docs/images/transient_rollout.png.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name

from msptcli.checkpoint import load_checkpoint
from msptcli.config import load_config
from msptcli.data.features import Channels
from msptcli.data.manifest import read_manifest
from msptcli.data.sample import load_sample
from msptcli.data.step import StepCase, take_step
from msptcli.data.transient import step_operators
from msptcli.prepare import prepare_dataset
from msptcli.rollout import rollout_series
from msptcli.train.loop import train_model
from msptcli.train.transient import step_errors, step_states

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "transient"
TRAIN = ["case_0000", "case_0001", "case_0003", "case_0004"]
TEST = ["case_0002", "case_0005"]
IMAGE = Path(__file__).resolve().parents[1] / "docs" / "images" / "transient_rollout.png"


def config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    return load_config(
        values={
            "data.reference_velocity": 1.0,
            "data.transient": {
                "fields": ["U", "p"],
                "conditions": ["Re"],
                "history": args.history,
                "noise": args.noise,
                "noise_smoothing": args.noise_smoothing,
                "pushforward": args.pushforward,
                "advection": None if args.advection.lower() == "none" else args.advection,
                "derivatives": not args.no_derivatives,
            },
            "data.split.train": TRAIN,
            "data.split.test": TEST,
            "data.split.val": [],
            "data.split.fractions": [1, 0, 0],
            "model.time_axis": args.time_axis,
            "train.epochs": args.epochs,
            "train.warmup_epochs": 0.5,
            "train.lr": args.lr,
            "train.val_every": 1000,
            "train.threads": args.threads,
            "train.seed": args.seed,
        }
    )


def one_step(ckpt, data_dir: Path, manifest, name: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Mean one-step rel. L2 per field over every snapshot of a case, and persistence's."""
    channels = Channels.from_fields(manifest.fields)
    entry = next(e for e in manifest.samples if e.name == name)
    sample = load_sample(data_dir / entry.file)
    transient = ckpt.config.data.transient
    rows = np.arange(len(sample.arrays["mesh/points"]))
    case = StepCase.of(ckpt.stats, channels, transient, sample.arrays, sample.meta["conditions"],
                       operators=step_operators(transient, sample.arrays), order=sample.arrays["order"])  # fmt: skip
    model_errs: dict[str, list[float]] = {}
    still_errs: dict[str, list[float]] = {}
    for t in range(transient.history, entry.num_steps - 1):
        out, _ = take_step(ckpt.model, case, step_states(sample, channels, transient, t, rows))
        for f, e in step_errors(sample, channels, ckpt_manifest(ckpt, manifest), t, out).items():
            model_errs.setdefault(f, []).append(e)
        for f, e in step_errors(sample, channels, ckpt_manifest(ckpt, manifest), t, 0 * out).items():
            still_errs.setdefault(f, []).append(e)
    return {
        **{f"{f}": float(np.mean(v)) for f, v in model_errs.items()},
        **{f"{f}_max": float(np.max(v)) for f, v in model_errs.items()},
        **{f"{f}_persistence": float(np.mean(v)) for f, v in still_errs.items()},
    }


def ckpt_manifest(ckpt, manifest):  # type: ignore[no-untyped-def]
    """The manifest with the checkpoint's statistics (what the network was trained with)."""
    return manifest.model_copy(update={"stats": ckpt.stats})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("out/bench-transient"))
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--history", type=int, default=1)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--pushforward", type=int, default=1, help="data.transient.pushforward: unrolled steps")
    parser.add_argument(
        "--noise-smoothing",
        type=int,
        default=0,
        help="data.transient.noise_smoothing: neighbour-averaging sweeps of the training noise",
    )
    parser.add_argument(
        "--advection",
        default="U",
        help="data.transient.advection: the velocity field that carries the history increments; 'none': off",
    )
    parser.add_argument(
        "--time-axis",
        choices=["channels", "attention"],
        default="channels",
        help="model.time_axis: the history as input channels, or attention over time levels (MATEY)",
    )
    parser.add_argument("--image", type=Path, default=IMAGE, help="where the plot goes (default: the docs' image)")
    parser.add_argument("--seed", type=int, default=0, help="train.seed: the initial weights, order and noise")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-derivatives", action="store_true", help="the plain variant: no mesh-derivative inputs")
    parser.add_argument("--reuse", action="store_true", help="evaluate the finished run in --work again")
    parser.add_argument("--compare", type=Path, help="the --work of another variant: its results beside these")
    parser.add_argument("--compare-label", default=None, help="what the --compare variant is, for the plot")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"no data at {DATA}: this benchmark needs ../shared/data/transient")
    work = args.work
    data_dir, run = work / "data", work / "run"
    cfg = config(args)
    started = time.perf_counter()
    if not (args.reuse and (run / "checkpoints" / "last.safetensors").is_file()):
        shutil.rmtree(run, ignore_errors=True)
        prepare_dataset([str(DATA / c) for c in TRAIN + TEST], data_dir, config=cfg, workers=2)
        summary = train_model(data_dir, run, config=cfg)
        print(f"trained {summary.epochs_done} epochs in {time.perf_counter() - started:.0f} s", flush=True)
    rows = [r.split(",") for r in (run / "metrics.csv").read_text().splitlines()]
    seconds = sum(float(r[rows[0].index("seconds")]) for r in rows[1:])
    manifest = read_manifest(data_dir)
    ckpt = load_checkpoint(run)
    steps_per_epoch = sum(e.num_steps - 1 - args.history for e in manifest.split("train"))
    results = {}
    for name in TRAIN + TEST:
        one = one_step(ckpt, data_dir, manifest, name)
        roll = rollout_series(ckpt, DATA / name / "series.pvd", work / "rollouts", start=args.history)
        results[name] = {
            "one_step": one,
            "rollout": roll,
            "params": json.loads((DATA / name / "params.json").read_text()),
        }
        print(f"{name}: one-step U {one['U']:.4f} p {one['p']:.4f}; rollout of {roll.steps} steps", flush=True)

    print(f"\n## Transient MSPT ({cpu_name()}, {torch.get_num_threads()} threads, {datetime.date.today()})\n")
    epochs = len(rows) - 1  # done (a run stopped early has fewer than --epochs)
    per_step = seconds / (epochs * steps_per_epoch)
    print(f"{epochs} epochs of {steps_per_epoch} steps, {seconds / 60:.1f} min of training, {per_step:.2f} s per "
          f"step; history {args.history}, noise {args.noise}, derivatives {not args.no_derivatives}, pushforward "
          f"{args.pushforward}, noise smoothing {args.noise_smoothing}, advection {args.advection}, "
          f"time axis {args.time_axis}, seed {args.seed}\n")  # fmt: skip
    print(
        "| case | split | shape, Re | one-step U (persistence) | one-step p (persistence) | U after 1 / 10 / all "
        "| p after 1 / 10 / all | St predicted / fields / solver | St error | mean Cd predicted / solver "
        "| Cd error | s / step |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        one, roll, params = r["one_step"], r["rollout"], r["params"]
        s = roll.summary
        st = [s.get(k, {}).get("St") for k in ("predicted", "fields", "solver")]
        cd = [s.get(k, {}).get("Cd_mean") for k in ("predicted", "solver")]
        u, p = roll.errors["U"], roll.errors["p"]
        last = len(u) - 1
        st_err = abs(st[0] / st[2] - 1) if st[0] and st[2] else float("nan")
        cd_err = abs(cd[0] / cd[1] - 1) if cd[0] and cd[1] else float("nan")
        print(
            f"| {name} | {'train' if name in TRAIN else 'test'} | {params['shape']}, {params['Re']:.0f} "
            f"| {one['U']:.4f} ({one['U_persistence']:.3f}) | {one['p']:.4f} ({one['p_persistence']:.3f}) "
            f"| {u[0]:.3f} / {u[min(9, last)]:.3f} / {u[last]:.3f} "
            f"| {p[0]:.3f} / {p[min(9, last)]:.3f} / {p[last]:.3f} "
            f"| {_f(st[0])} / {_f(st[1])} / {_f(st[2])} | {st_err:.1%} | {_f(cd[0])} / {_f(cd[1])} | {cd_err:.1%} "
            f"| {roll.seconds_per_step:.3f} |"
        )
    saved = {n: {"one_step": r["one_step"], "errors": r["rollout"].errors, "shedding": r["rollout"].summary}
             for n, r in results.items()}  # fmt: skip
    (work / "results.json").write_text(json.dumps(saved, indent=1, default=float))
    other = json.loads((args.compare / "results.json").read_text()) if args.compare else None
    if other:
        print(f"\n### Against {args.compare} (test cases)\n")
        print("| case | variant | one-step U | one-step p | U after 1 / 10 / all | St error | Cd error |")
        print("|---|---|---|---|---|---|---|")
        for name in TEST:
            for label, r in (("this run", saved[name]), (str(args.compare), other[name])):
                u, sh = r["errors"]["U"], r["shedding"]
                st = [sh.get(k, {}).get("St") for k in ("predicted", "solver")]
                cd = [sh.get(k, {}).get("Cd_mean") for k in ("predicted", "solver")]
                st_err = f"{abs(st[0] / st[1] - 1):.1%}" if st[0] and st[1] else "-"
                cd_err = f"{abs(cd[0] / cd[1] - 1):.1%}" if cd[0] and cd[1] else "-"
                print(f"| {name} | {label} | {r['one_step']['U']:.4f} | {r['one_step']['p']:.4f} "
                      f"| {u[0]:.3f} / {u[min(9, len(u) - 1)]:.3f} / {u[-1]:.3f} | {st_err} | {cd_err} |")  # fmt: skip
    plot(results, args.image, other, args.compare_label or (args.compare.name if args.compare else ""))
    print(f"\nplot: {args.image}")


def _f(x: float | None) -> str:
    return "-" if x is None or x != x else f"{x:.4f}"


def plot(results: dict, path: Path, other: dict | None = None, label: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for name, r in results.items():
        roll = r["rollout"]
        style = "-" if name in TEST else ":"
        steps = np.arange(1, roll.steps + 1)
        axes[0].plot(steps, roll.errors["U"], style, label=f"{name} ({'test' if name in TEST else 'train'})")
        axes[1].plot(steps, roll.errors["p"], style, label=name)
    for name in TEST if other else ():
        for ax, key in zip(axes[:2], ("U", "p"), strict=True):
            errs = other[name]["errors"][key]
            ax.plot(np.arange(1, len(errs) + 1), errs, "--", color="0.6", lw=1,
                    label=f"{name}, {label}" if key == "U" else None)  # fmt: skip
    axes[0].set_title("rel. L2 of U along the rollout")
    axes[1].set_title("rel. L2 of p along the rollout")
    for ax in axes[:2]:
        ax.set_xlabel("rollout step (about 12 per shedding period)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    test = TEST[0]
    data = json.loads((Path(results[test]["rollout"].files[2])).read_text())
    times = np.asarray(data["times"])
    axes[2].plot(times, data["forces"]["predicted"]["cl"], "-o", ms=3, label="predicted (rollout)")
    if "fields" in data["forces"]:
        axes[2].plot(times, data["forces"]["fields"]["cl"], "-k", label="from the solver's fields")
    axes[2].set_title(f"{test} (test): lift coefficient")
    axes[2].set_xlabel("t (D/U)")
    axes[2].legend(fontsize=8)
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
