"""Adaptive against uniform patches: accuracy on held-out Ahmed bodies against attention cost.

    python benchmarks/adaptive.py                    # CPU: 5 variants, 200 steps each (~60 min)
    python benchmarks/adaptive.py --steps 100        # a smoke run
    python benchmarks/adaptive.py --reuse            # evaluate finished runs again

Split, budget rule and evaluation are ``benchmarks/accuracy.py``'s (train 20 Ahmed bodies, test
case_0003/0009/0015/0021, ``--quick`` evaluation: rel. L2 of the fields on the CFD meshes, drag
from the CFD surface and from the STL). Every variant is the default model (8192 anchors, width
128, 4 blocks) with its patches changed only:

- ``uniform-L``: uniform patches of L anchors (``model.patch_size=L``; K = 8192 / L patches);
- ``adaptive-L-rR``: the same budget of K patches, cut where the anchors' input features vary
  most (``model.adaptive.refine=R``), so patch sizes range from L / 2^R to L * 2^R.

**Attention cost** is counted, not timed, from the layouts the loader builds for the first 8
training samples (the patches of every anchor cloud and the patch each query reads), in attention
scores per point per block and head: an anchor in a patch of size L_p scores L_p + S keys (its
patch and the S = K Q supernodes of its cloud), a query scores the L_p + S keys of the patch it
reads. ``rel. cost`` divides by the default's (``uniform-128``). The seconds per step are
wall-clock of the whole training step (loader, projections and MLPs included), so they move less.

Tables are printed as Markdown; record them in docs/benchmarks.md with the machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time
from pathlib import Path

import accuracy
import numpy as np
import torch
from machine import cpu_name

from msptcli.config import load_config
from msptcli.data.manifest import read_manifest
from msptcli.train.dataset import TrainClouds, collate

VARIANTS: dict[str, list[str]] = {
    "uniform-512": ["model.patch_size=512"],
    "uniform-256": ["model.patch_size=256"],
    "uniform-128": ["model.patch_size=128"],  # the default cut of 8192 anchors (K Q ~ sqrt N)
    "adaptive-256-r2": ["model.patch_size=256", "model.adaptive.refine=2"],
    "adaptive-128-r2": ["model.patch_size=128", "model.adaptive.refine=2"],
}
BASELINE = "uniform-128"


def attention_cost(data_dir: Path, overrides: list[str], samples: int = 8) -> dict[str, float]:
    """Mean attention scores per anchor and per query, and the patch sizes, over the first ``samples`` samples."""
    cfg = load_config(data_dir / "config.yaml", overrides)
    manifest = read_manifest(data_dir)
    entries = manifest.split("train")[:samples]
    clouds = TrainClouds(
        data_dir,
        manifest,
        entries,
        surface_points=cfg.train.surface_points,
        volume_points=cfg.train.volume_points,
        seed=cfg.train.seed,
        anchors=cfg.model.anchors,
    )
    anchor_scores, query_scores, smallest, largest = [], [], [], []
    for i in range(len(clouds)):
        batch = collate([clouds[i]], cfg.model)
        layout = batch.anchors.layout
        sizes = layout.patch_sizes.astype(np.float64)
        keys = sizes + layout.sub_index.shape[1]  # own patch + every supernode of the (single) cloud
        anchor_scores.append(float((sizes * keys).sum() / sizes.sum()))
        group = batch.queries.groups[0]
        patch_of_query = (group.query_slot // group.slots.shape[1]).numpy()
        query_scores.append(float(keys[patch_of_query].mean()))
        smallest.append(sizes.min())
        largest.append(sizes.max())
    return {
        "anchor": float(np.mean(anchor_scores)),
        "query": float(np.mean(query_scores)),
        "min_size": float(np.min(smallest)),
        "max_size": float(np.max(largest)),
    }


def step_times(data_dir: Path, names: list[str], repeats: int = 2, samples: int = 2) -> None:
    """Forward + backward of the default-size network on real training batches, variants alternating."""
    import statistics

    from msptcli.data.features import IN_FEATURES, Channels
    from msptcli.model import build_network

    manifest = read_manifest(data_dir)
    out = Channels.from_fields(manifest.fields).total
    runs = {}
    for name in names:
        cfg = load_config(data_dir / "config.yaml", VARIANTS[name])
        t = cfg.train
        clouds = TrainClouds(data_dir, manifest, manifest.split("train")[:samples], surface_points=t.surface_points,
                             volume_points=t.volume_points, seed=0, anchors=cfg.model.anchors)  # fmt: skip
        batches = [collate([clouds[i]], cfg.model) for i in range(len(clouds))]
        torch.manual_seed(0)
        model = build_network(cfg.model, in_features=IN_FEATURES, out_features=out)
        runs[name] = (model, batches)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for key, (model, batches) in runs.items():
            for b in batches:
                started = time.perf_counter()
                pred = model(b.anchors.features, b.anchors.layout, queries=b.queries, trees=b.anchors.trees)
                pred.square().mean().backward()
                times[key].append(time.perf_counter() - started)
    base = statistics.median(times[BASELINE]) if BASELINE in times else None
    print(f"Forward + backward of one training batch (median of {repeats} x {samples} samples, variants alternating):")
    print()
    print("| variant | s / step | vs " + BASELINE + " |")
    print("|---|---:|---:|")
    for key, t in times.items():
        median = statistics.median(t)
        print(f"| {key} | {median:.2f} | {median / base:.2f}x |" if base else f"| {key} | {median:.2f} | - |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("out/accuracy"), help="prepared data and runs")
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps per variant")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--reuse", action="store_true", help="evaluate finished runs again")
    parser.add_argument("--plot", type=Path, help="write the plot of error against attention cost here (PNG)")
    parser.add_argument("--step-times", action="store_true", help="only time training steps of the variants")
    parser.add_argument("--plot-from", type=Path, help="only plot the table of an earlier run's output (Markdown)")
    args = parser.parse_args()
    if args.step_times:
        step_times(args.work / "data", args.variants)
        return
    if args.plot_from:
        plot(read_table(args.plot_from), args.plot or args.plot_from.with_suffix(".png"))
        return
    data_dir = accuracy.prepare(accuracy.DATA, args.work, min(2, os.cpu_count() or 1))
    print(f"# Adaptive patches, {datetime.date.today().isoformat()}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, device {args.device}")
    print(f"split of benchmarks/accuracy.py; {args.steps} steps per variant, batch 1; rel. L2, mean of 4 test cases")
    print()
    costs = {name: attention_cost(data_dir, VARIANTS[name]) for name in args.variants}
    base = costs.get(BASELINE) or attention_cost(data_dir, VARIANTS[BASELINE])
    print("| variant | patch sizes | scores / anchor | scores / query | rel. cost | s / step | surface p "
          "| wall shear | volume U | volume p | Cd err mesh | Cd err STL |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    table: dict[str, dict[str, float]] = {}
    for name in args.variants:
        cost = costs[name]
        run, seconds = accuracy.train(
            data_dir, args.work, f"{name}-{args.steps}", VARIANTS[name], args.steps, args.device, reuse=args.reuse
        )
        rows = accuracy.evaluate(data_dir, run, accuracy.DATA, args.device, quick=True)
        rel = (cost["anchor"] + cost["query"]) / (base["anchor"] + base["query"])
        lead = [f"{cost['min_size']:.0f} to {cost['max_size']:.0f}", f"{cost['anchor']:.0f}", f"{cost['query']:.0f}"]
        mean = accuracy.quick_row(name, rows, [*lead, f"{rel:.2f}x", f"{seconds / args.steps:.2f}"])
        table[name] = {"cost": rel, **{f: mean[f] for f in accuracy.FIELDS}, "cd": mean["cd_mesh_rel"]}
    if args.plot:
        plot(table, args.plot)


def read_table(path: Path) -> dict[str, dict[str, float]]:
    """The rows of a printed table: variant -> rel. cost, the four field errors and the Cd error (fraction)."""
    table = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 12 and cells[0] in VARIANTS:
            fields = dict(zip(accuracy.FIELDS, map(float, cells[6:10]), strict=True))
            table[cells[0]] = {"cost": float(cells[4].rstrip("x")), **fields, "cd": float(cells[10].rstrip("%")) / 100}
    return table


def plot(table: dict[str, dict[str, float]], path: Path) -> None:
    """Mean field rel. L2 and Cd error against the relative attention cost, uniform and adaptive marked apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for kind, marker in (("uniform", "o-"), ("adaptive", "s--")):
        names = sorted((n for n in table if n.startswith(kind)), key=lambda n: table[n]["cost"])
        costs = [table[n]["cost"] for n in names]
        axes[0].plot(costs, [np.mean([table[n][f] for f in accuracy.FIELDS]) for n in names], marker, label=kind)
        axes[1].plot(costs, [100 * table[n]["cd"] for n in names], marker, label=kind)
        for n, c in zip(names, costs, strict=True):
            axes[0].annotate(n.split("-", 1)[1], (c, np.mean([table[n][f] for f in accuracy.FIELDS])), fontsize=8)
    for ax, title in zip(axes, ("mean rel. L2 of the 4 fields", "Cd error from the CFD mesh (%)"), strict=True):
        ax.set_xlabel(f"attention cost (scores per point, relative to {BASELINE})")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
