"""Ball-tree construction: mspt against sklearn's BallTree and balltree-erwin, side by side.

    python benchmarks/balltree.py            # the full table (a few minutes on 2 cores)
    python benchmarks/balltree.py --quick    # N up to 16k, for a smoke run

For every cloud kind (a uniform cube; a non-uniform surface-like cloud sampled on the
shipped Ahmed body with refinement toward the rear), size N, batch size B and thread
count, it prints the median time of repeated builds, points per second and mspt's
speed-up over each baseline, as a Markdown table for docs/benchmarks.md.

- mspt: ``ball_tree_order`` on a float32 torch tensor with offsets (a full tree, leaves of 1).
- balltree-erwin: ``balltree.build_balltree`` on the same tensor and batch index, its
  user-facing call (it converts to float64 itself; leaves of 2). Skipped with a note
  where the package is not installed (``pip install balltree-erwin``). It shares torch's
  OpenMP runtime, so ``torch.set_num_threads`` sets its thread count.
- sklearn: ``sklearn.neighbors.BallTree`` construction (default leaf size 40), one cloud
  after another; it has no thread option, so its time is the same in every thread row.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name

from msptcli.geometry import ball_tree_order, default_num_threads

# This file is named balltree.py too: keep its folder off the path so that `import balltree`
# finds the balltree-erwin package, not this script.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
try:
    from balltree import build_balltree as erwin_build
except ImportError:  # optional baseline
    erwin_build = None

EXAMPLE_SURFACE = Path(__file__).resolve().parents[1] / "examples" / "ahmed" / "case_0000" / "surface.vtu"


def uniform_cube(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.random((n, 3), dtype=np.float32)


def surface_like(n: int, rng: np.random.Generator) -> np.ndarray:
    """Points on the Ahmed body surface, area-weighted, four times denser over the rear third."""
    import pyvista as pv

    surface = pv.read(EXAMPLE_SURFACE).extract_surface(algorithm="dataset_surface").triangulate()
    tri = surface.regular_faces
    corners = np.asarray(surface.points, dtype=np.float64)[tri]  # (T, 3, 3)
    area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    x = corners[:, :, 0].mean(axis=1)
    weight = area * np.where(x > x.min() + 2 / 3 * (x.max() - x.min()), 4.0, 1.0)
    pick = rng.choice(len(tri), size=n, p=weight / weight.sum())
    u, v = rng.random(n), rng.random(n)
    flip = u + v > 1
    u[flip], v[flip] = 1 - u[flip], 1 - v[flip]
    c = corners[pick]
    return (c[:, 0] + u[:, None] * (c[:, 1] - c[:, 0]) + v[:, None] * (c[:, 2] - c[:, 0])).astype(np.float32)


def median_seconds(fn: Callable[[], object], *, min_repeats: int, budget: float) -> float:
    """Median of at least ``min_repeats`` runs (after one warm-up), more while under ``budget`` seconds."""
    fn()
    times: list[float] = []
    while len(times) < min_repeats or (sum(times) < budget and len(times) < 25):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sklearn_build(clouds: list[np.ndarray]) -> None:
    from sklearn.neighbors import BallTree

    for cloud in clouds:
        BallTree(cloud)


def run(sizes: list[int], batches: list[int], thread_counts: list[int], repeats: int, budget: float) -> None:
    rng = np.random.default_rng(0)
    print(f"# Ball-tree construction, {datetime.date.today().isoformat()}")
    print(
        f"machine: {cpu_name()}, {os.cpu_count()} cores; "
        f"torch {torch.__version__}; OpenMP default threads {default_num_threads()}"
    )
    if erwin_build is None:
        print("balltree-erwin: not installed, its columns are skipped (pip install balltree-erwin)")
    print()
    print("| cloud | N | B | threads | mspt ms | mspt Mpts/s | erwin ms | sklearn ms | vs erwin | vs sklearn |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind, make in (("uniform cube", uniform_cube), ("surface-like", surface_like)):
        for n in sizes:
            for b in batches:
                clouds = [make(n, rng) for _ in range(b)]
                points = torch.from_numpy(np.concatenate(clouds))
                offsets = np.arange(b + 1, dtype=np.int64) * n
                batch_idx = torch.arange(b).repeat_interleave(n)
                t_sklearn = median_seconds(lambda: sklearn_build(clouds), min_repeats=repeats, budget=budget)  # noqa: B023
                for threads in thread_counts:
                    torch.set_num_threads(threads)
                    t_ours = median_seconds(
                        lambda: ball_tree_order(points, offsets=offsets, num_threads=threads),  # noqa: B023
                        min_repeats=repeats,
                        budget=budget,
                    )
                    if erwin_build is not None:
                        t_erwin = median_seconds(
                            lambda: erwin_build(points, batch_idx),  # noqa: B023
                            min_repeats=repeats,
                            budget=budget,
                        )
                        erwin_cols = f"{t_erwin * 1e3:.2f} | "
                        ratio_erwin = f"{t_erwin / t_ours:.2f}x"
                    else:
                        erwin_cols, ratio_erwin = "n/a | ", "n/a"
                    print(
                        f"| {kind} | {n:,} | {b} | {threads} | {t_ours * 1e3:.2f} | {n * b / t_ours / 1e6:.1f} | "
                        f"{erwin_cols}{t_sklearn * 1e3:.2f} | {ratio_erwin} | {t_sklearn / t_ours:.1f}x |",
                        flush=True,
                    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N up to 16k only")
    parser.add_argument("--sizes", type=int, nargs="+", help="cloud sizes (default 1k 16k 131k 1M)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16], help="batch sizes (default 1 16)")
    parser.add_argument("--repeats", type=int, default=5, help="at least this many timed runs (default 5)")
    parser.add_argument("--budget", type=float, default=1.0, help="keep repeating while under this many seconds")
    args = parser.parse_args()
    sizes = args.sizes or ([1_000, 16_384] if args.quick else [1_000, 16_384, 131_072, 1_048_576])
    all_threads = default_num_threads()
    thread_counts = sorted({1, all_threads})
    run(sizes, args.batches, thread_counts, args.repeats, args.budget)


if __name__ == "__main__":
    main()
