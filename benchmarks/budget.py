"""Accuracy per hour of training: every backbone trained for the same wall-clock minutes, and what it costs to predict.

    python benchmarks/budget.py                                  # every backbone, 30 min, seeds 0 and 1
    python benchmarks/budget.py --minutes 15 --seeds 0 1 --variants mspt erwin
    python benchmarks/budget.py --minutes 60 --seeds 0 --variants mspt
    python benchmarks/budget.py --minutes 30 --variants mspt --half   # trained on 10 of the 20 bodies
    python benchmarks/budget.py --variant old=model.query_reading=blocks,model.anchors.reads=patch
    python benchmarks/budget.py --device cuda --minutes 30       # the GPU rows
    python benchmarks/budget.py --variants erwin --set train.surface_points=4096 --tag=-pts4k   # every variant

The split, prepared data and ``--quick`` evaluation of ``benchmarks/accuracy.py`` (train 20 Ahmed bodies,
test case_0003, 0009, 0015, 0021; rel. L2 of the four fields on the CFD meshes, Cd from the CFD surface and
from the STL alone). Every run trains with ``train.time_limit`` (``mspt train --time-limit``): the learning
rate's warm-up and cosine decay are laid over the minutes, and the run ends when they are spent, so the
rows compare what each network learns in the same time, and the *steps* column says how many optimiser
steps that was. The backbones are those of ``benchmarks/backbones.py`` (the default MSPT; the others about
0.8M parameters);
``--variant NAME=KEY=VALUE,...`` adds config overrides of the default MSPT; ``--set KEY=VALUE`` adds one to
every variant (a backbone's too), ``--tag`` names those runs apart. ``--half`` trains on every
second training body (10 of 20), the same test cases: whether the error is bound by the data or the time.

Per variant (after its first run) two prediction times, each measured alone:

- *predict case*: ``mspt predict RUN surface.vtu --volume volume.vtu`` of case_0003 (about 10k surface and
  110k volume points, with Cd/Cl on the refined surface, the VTK files and the preview PNG), end to end in a
  fresh process, as a user runs it;
- *predict 1M*: ``predict_queries`` of 1,048,576 query points on the 8192 anchors of one body (random
  points and features), in chunks of 65,536: the network's share of a million-point prediction.

Runs go to ``out/accuracy/budget-<variant>-<minutes>m-s<seed>[-half]`` and are evaluated again with
``--reuse``. Tables are printed as Markdown; record them in docs/benchmarks.md with the machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import accuracy
import numpy as np
import torch
from backbones import SIZES
from machine import cpu_name

from msptcli.checkpoint import load_checkpoint
from msptcli.config import load_config
from msptcli.data.manifest import read_manifest
from msptcli.train.loop import train_model

WORK = Path("out/accuracy")
CASE = "case_0003"  # the test case whose CFD meshes are predicted for the time column
QUERIES = 1 << 20


def prepare_half(data: Path) -> Path:
    """The same test cases and every second of the 20 training bodies (10), prepared apart (their own statistics)."""
    from msptcli.prepare import prepare_dataset

    cases = sorted(p for p in data.glob("case_*"))
    train = [p for p in cases if p.name not in accuracy.TEST][::2]
    test = [p for p in cases if p.name in accuracy.TEST]
    cfg = load_config(values={"data.split.test": accuracy.TEST, "data.split.val": [],
                              "data.split.fractions": [1, 0, 0]})  # fmt: skip
    out = WORK / "data-half"
    prepare_dataset([str(p) for p in [*train, *test]], out, config=cfg, workers=min(2, os.cpu_count() or 1))
    return out


def train(data_dir: Path, name: str, overrides: list[str], minutes: float, seed: int, device: str, *,
          half: bool, reuse: bool) -> tuple[Path, int]:  # fmt: skip
    """Train one variant for ``minutes``; its run and the optimiser steps it reached."""
    from msptcli.train.state import load_train_state

    run = WORK / f"budget-{name}-{minutes:g}m-s{seed}{'-half' if half else ''}"
    if not (reuse and (run / "checkpoints" / "last.safetensors").is_file()):
        values = {"train.time_limit": minutes * 60, "train.seed": seed, "train.device": device}
        cfg = load_config(data_dir / "config.yaml", overrides, values=values)
        if run.exists():
            import shutil

            shutil.rmtree(run)
        train_model(data_dir, run, config=cfg)
    saved = load_train_state(run / "train_state.pt")
    per_epoch = len(read_manifest(data_dir).split("train"))  # batch 1: one step per training body
    return run, int(saved["epoch"]) * per_epoch + int(saved["step_in_epoch"])


def predict_case(run: Path, data: Path, device: str) -> float:
    """Seconds of ``mspt predict`` of the test case's CFD meshes, end to end in a fresh process."""
    case = data / CASE
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "msptcli", "predict", str(run), str(case / "surface.vtu"), "--volume",
               str(case / "volume.vtu"), "-o", out, "--device", device]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"mspt predict failed on {run}:\n{done.stderr[-2000:]}")
    return seconds


def predict_million(run: Path, device: str) -> float:
    """Seconds of ``predict_queries`` of 1,048,576 random queries on one body's anchors (the network alone)."""
    from msptcli.runtime import predict_queries

    model = load_checkpoint(run / "checkpoints" / "last.safetensors").model.to(device).eval()
    config, f = model.config, model.in_features
    rng = np.random.default_rng(0)

    def cloud(m: int) -> tuple[np.ndarray, np.ndarray]:
        points = rng.random((m, 3))
        return points, np.concatenate([points, rng.standard_normal((m, f - 3))], axis=1).astype(np.float32)

    a_points, a_features = cloud(config.anchors.surface + config.anchors.volume)
    q_points, q_features = cloud(QUERIES)
    started = time.perf_counter()
    predict_queries(model, [a_points], [a_features], [q_points], [q_features], device=device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[30.0], help="training budgets")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", choices=list(SIZES),
                        help="backbones of benchmarks/backbones.py (default: all, without --variant)")  # fmt: skip
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE,...",
                        help="a variant of the default MSPT: a name and config overrides (repeatable)")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every variant (repeatable; values may hold commas)")  # fmt: skip
    parser.add_argument("--tag", default="", help="appended to every variant's name (its run folder)")
    parser.add_argument("--half", action="store_true", help="train on 10 of the 20 training bodies")
    parser.add_argument("--data", type=Path, default=accuracy.DATA, help="folder of the 24 Ahmed cases")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--reuse", action="store_true", help="evaluate finished runs of the same names again")
    parser.add_argument("--no-predict", action="store_true", help="skip the two prediction times")
    args = parser.parse_args()
    names = args.variants if args.variants is not None else ([] if args.variant else list(SIZES))
    variants = {name: SIZES[name] for name in names}
    for spec in args.variant:  # overrides without commas inside values (lists: use --variants)
        name, _, overrides = spec.partition("=")
        variants[name] = [o for o in overrides.split(",") if o]
    variants = {name + args.tag: [*overrides, *args.set] for name, overrides in variants.items()}
    data_dir = accuracy.prepare(args.data, WORK, min(2, os.cpu_count() or 1))
    if args.half:
        data_dir = prepare_half(args.data)

    print(f"# Accuracy per training time, {datetime.date.today().isoformat()}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, device {args.device}")
    print(f"split: train {'10 (every second)' if args.half else '20'}, test {', '.join(accuracy.TEST)}; "
          f"minutes {args.minutes}, seeds {args.seeds}")  # fmt: skip
    print()
    print("| variant | minutes | seed | steps | surface p | wall shear | volume U | volume p | Cd err mesh "
          "| Cd err STL | predict case s | predict 1M s |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    results = []
    for name, overrides in variants.items():
        timed: tuple[float, float] | None = None
        for minutes in args.minutes:
            for seed in args.seeds:
                run, steps = train(data_dir, name, overrides, minutes, seed, args.device, half=args.half,
                                      reuse=args.reuse)  # fmt: skip
                rows = accuracy.evaluate(data_dir, run, args.data, args.device, quick=True)
                if timed is None and not args.no_predict:
                    timed = (predict_case(run, args.data, args.device), predict_million(run, args.device))
                lead = [f"{minutes:g}", str(seed), str(steps)]
                lead_tail = [f"{timed[0]:.1f}", f"{timed[1]:.1f}"] if timed else ["-", "-"]
                mean = accuracy.quick_row(f"{name} {' '.join(overrides)}".strip(), rows, lead, tail=lead_tail)
                results.append({"variant": name, "minutes": minutes, "seed": seed, "steps": steps, **mean})
    print()
    out = WORK / f"budget-{datetime.date.today().isoformat()}.json"
    out.write_text(json.dumps(results, indent=1))
    print(f"(every number: {out})", file=sys.stderr)


if __name__ == "__main__":
    main()
