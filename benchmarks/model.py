"""MSPT against dense attention and against the official Transolver: time and peak memory against N.

    python benchmarks/model.py                      # CPU: 8k .. 256k points, plus 1M streaming
    python benchmarks/model.py --sizes 8192 16384   # a quick run
    python benchmarks/model.py --device cuda        # GPU: 100k .. 4M points, bf16, plus 10M streaming
    python benchmarks/model.py --versus-transolver --sizes 16384 32768 --repeats 3   # the side-by-side only
    python benchmarks/model.py --versus-transolver --keep-freed-memory ...   # glibc keeping freed memory

Each measurement runs in a fresh subprocess so that peak memory is its own:
on the CPU the growth of peak resident memory (ru_maxrss) over the resident
memory just before the timed call; on a GPU ``torch.cuda.max_memory_allocated``
over the memory allocated before it. The model is the default configuration
(width 128, 8 heads, 4 blocks, MLP ratio 4, Q = 1, K ~ sqrt(N)) on one cloud of
uniform random points with 6 input and 4 output channels. Full attention runs
until it fails for memory, or until its projected time exceeds ``--full-budget``.
The last lines fit log-log slopes of time and memory against N.

The side-by-side against Transolver runs the official car-design model of thuml/Transolver
(``Car-Design-ShapeNetCar/models/Transolver.py`` at the commit of ``tests/references.py``, read
from a fetched snapshot; the table is skipped with a note when none is there) at about the same
size as MSPT's default (128 hidden, 4 layers, 8 heads, MLP ratio 4, 32 slices: 0.77M parameters
against MSPT's 0.81M), both on one cloud with the pipeline's 11 input and 8 output channels.
The two models alternate, ``--repeats`` times each, every run in a fresh process; the table shows
the median and the ratio of the first call (time and peak memory) and, for forward + backward on
the CPU, of the steady-state step: the median of the steps after the first few in the same process,
which is what an epoch costs (the first step also pays for fresh memory pages).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import torch
from machine import memory_now, peak_bytes

from msptcli.model import MSPT, ModelConfig, build_layout


def official_transolver(in_features: int, out_features: int) -> torch.nn.Module:
    """The official Transolver car-design model at MSPT's default size (raises LookupError without a snapshot)."""
    import pytest

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from references import TRANSOLVER, load_reference

    try:  # timm is not installed: the file imports only trunc_normal_ from it
        stand_in = {"timm.models.layers": {"trunc_normal_": torch.nn.init.trunc_normal_}}
        ref = load_reference(*TRANSOLVER, stand_ins=stand_in)
    except pytest.skip.Exception as exc:
        raise LookupError(str(exc)) from None
    return ref.Model(
        space_dim=3, fun_dim=in_features - 3, n_hidden=128, n_layers=4, n_head=8, mlp_ratio=4,
        out_dim=out_features, slice_num=32,
    )  # fmt: skip


def worker_versus(n: int, variant: str, mode: str, device: str) -> dict:
    """One forward (+ backward) of MSPT or the official Transolver on n points, 11 in, 8 out, in this process."""
    torch.manual_seed(0)
    features = torch.randn(n, 11, device=device)
    if variant == "transolver":
        model = official_transolver(11, 8).to(device)

        def forward() -> torch.Tensor:
            return model((types.SimpleNamespace(x=features), None))  # forward((cfd_data, geom_data)) reads .x
    else:
        cfg = ModelConfig()
        model = MSPT(cfg, in_features=11, out_features=8).to(device)
        layout = build_layout([n], cfg).to(device)

        def forward() -> torch.Tensor:
            return model(features, layout)

    def run() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            if mode == "forward":
                with torch.no_grad():
                    forward()
            else:
                forward().float().square().mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    cold = timed(run, device)
    if device == "cpu" and mode == "train":  # the steps after the first: what an epoch of training costs
        times = []
        for _ in range(STEADY_STEPS):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        cold["steady_seconds"] = statistics.median(times[1:])
    return cold


#: Steps a side-by-side worker runs after its first, timed one; the median of all but the first of them
#: is the steady-state step (the allocator and caches warmed up), which the first step overstates.
STEADY_STEPS = 4


#: glibc settings that keep freed memory in the process (``--keep-freed-memory``): no block is given its own
#: mapping and the heap is never trimmed, so a step reuses the pages of the last instead of faulting in new ones.
KEEP_FREED_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40)}


def versus_transolver(sizes: list[int], device: str, repeats: int, timeout: float, keep_freed: bool = False) -> None:
    """The side-by-side table (see the module docstring)."""
    env = {**os.environ, **(KEEP_FREED_MEMORY if keep_freed else {})}
    try:
        official_transolver(11, 8)
    except LookupError as exc:
        print(f"MSPT vs Transolver skipped: {exc}")
        return
    print("| N | mode | MSPT s | Transolver s | time ratio | MSPT peak MB | Transolver peak MB | memory ratio "
          "| steady-state step, MSPT / Transolver s | steady ratio |")  # fmt: skip
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in sizes:
        for mode in ("forward", "train"):
            runs: dict[str, list[dict]] = {"mspt": [], "transolver": []}
            for _ in range(repeats):
                for variant in runs:  # alternating: a busy spell of the machine hits both
                    cmd = [sys.executable, __file__, "--versus-worker", str(n), variant, mode, "--device", device]
                    try:
                        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
                    except subprocess.TimeoutExpired:
                        continue
                    if out.returncode == 0:
                        runs[variant].append(json.loads(out.stdout.strip().splitlines()[-1]))
            if not runs["mspt"] or not runs["transolver"]:
                print(f"| {n:,} | {mode} | failed | | | | | |", flush=True)
                continue
            t = {v: statistics.median(r["seconds"] for r in rs) for v, rs in runs.items()}
            m = {v: statistics.median(r["peak_bytes"] for r in rs) for v, rs in runs.items()}
            print(
                f"| {n:,} | {'forward + backward' if mode == 'train' else 'forward'} | {t['mspt']:.3f} "
                f"| {t['transolver']:.3f} | {t['mspt'] / t['transolver']:.2f}x | {m['mspt'] / 2**20:,.0f} "
                f"| {m['transolver'] / 2**20:,.0f} | {m['mspt'] / max(m['transolver'], 1):.2f}x | {_steady(runs)} |",
                flush=True,
            )
    p = {v: worker_param_count(v) for v in ("mspt", "transolver")}
    print(f"\nparameters: MSPT {p['mspt']:,}, Transolver {p['transolver']:,}; median of {repeats} alternating runs")


def _steady(runs: dict[str, list[dict]]) -> str:
    """The steady-state cells of a side-by-side row: medians over the runs and their ratio, or blanks."""
    steady = {v: [r["steady_seconds"] for r in rs if "steady_seconds" in r] for v, rs in runs.items()}
    if not all(steady.values()):
        return " | "
    t = {v: statistics.median(x) for v, x in steady.items()}
    return f"{t['mspt']:.3f} / {t['transolver']:.3f} | {t['mspt'] / t['transolver']:.2f}x"


def worker_param_count(variant: str) -> int:
    if variant == "transolver":
        model = official_transolver(11, 8)
    else:
        model = MSPT(ModelConfig(), in_features=11, out_features=8)
    return sum(p.numel() for p in model.parameters())


def worker(n: int, variant: str, mode: str, device: str, chunk_points: int) -> dict:
    """One measurement in this (fresh) process."""
    torch.manual_seed(0)
    # Dense attention is MSPT with one patch (K = 1): every point attends to all N points (and one supernode).
    cfg = ModelConfig(num_patches=1) if variant == "full" else ModelConfig()
    model = MSPT(cfg, in_features=6, out_features=4).to(device)
    layout = build_layout([n], cfg).to(device)
    features = torch.randn(n, 6, device=device)
    use_bf16 = device == "cuda"

    def run() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16):
            if mode == "stream":
                with torch.no_grad():
                    model(features, layout, chunk_points=chunk_points)
            elif mode == "forward":
                with torch.no_grad():
                    model(features, layout)
            else:
                model(features, layout).float().square().mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()

    return timed(run, device)


def timed(run, device: str) -> dict:  # type: ignore[no-untyped-def]
    """Seconds and peak memory of one ``run()`` (on a GPU after one warm-up run)."""
    if device == "cuda":
        run()  # warm-up (kernels, allocator)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    base = memory_now(device)
    start = time.perf_counter()
    run()
    seconds = time.perf_counter() - start
    total = peak_bytes(device)
    return {"seconds": seconds, "peak_bytes": max(total - base, 0), "peak_total_bytes": total}


def measure(n: int, variant: str, mode: str, device: str, chunk_points: int, timeout: float) -> dict | None:
    cmd = [sys.executable, __file__, "--worker", str(n), variant, mode, "--device", device]
    cmd += ["--chunk-points", str(chunk_points)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if out.returncode != 0:
        reason = "out of memory" if "out of memory" in out.stderr.lower() or out.returncode == -9 else "failed"
        return {"error": reason}
    return json.loads(out.stdout.strip().splitlines()[-1])


def slope(ns: list[int], values: list[float]) -> float:
    return float(np.polyfit(np.log(ns), np.log(values), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", type=int, nargs="+", help="numbers of points (default: by device)")
    parser.add_argument(
        "--stream-size", type=int, help="points for the streaming-inference row (default 1M CPU, 10M GPU)"
    )
    parser.add_argument("--chunk-points", type=int, default=1 << 16, help="points per streaming chunk")
    parser.add_argument("--full-budget", type=float, default=60.0, help="seconds a dense-attention run may take")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before a run is abandoned")
    parser.add_argument("--stream-only", action="store_true", help="only the streaming-inference row")
    parser.add_argument("--versus-transolver", action="store_true", help="only the side-by-side with Transolver")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs per model in the side-by-side")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="run the side-by-side's workers with glibc's MALLOC_MMAP_MAX_=0 and no heap trimming (Linux)",
    )
    parser.add_argument("--worker", nargs=3, metavar=("N", "VARIANT", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--versus-worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.versus_worker:
        n, variant, mode = args.versus_worker
        print(json.dumps(worker_versus(int(n), variant, mode, args.device)))
        return
    if args.worker:
        n, variant, mode = args.worker
        print(json.dumps(worker(int(n), variant, mode, args.device, args.chunk_points)))
        return

    cpu = args.device == "cpu"
    sizes = args.sizes or (
        [8192 * 2**i for i in range(6)] if cpu else [100_000, 250_000, 500_000, 1_000_000, 2_000_000, 4_000_000]
    )
    stream_size = args.stream_size or (1_048_576 if cpu else 10_000_000)
    name = torch.cuda.get_device_name() if not cpu else f"{platform.machine()} CPU, {os.cpu_count()} cores"
    title = "MSPT vs the official Transolver" if args.versus_transolver else "MSPT vs dense attention"
    print(f"# {title}, {datetime.date.today().isoformat()}, {name}, torch {torch.__version__}")
    print(
        "default model: width 128, 8 heads, depth 4, MLP ratio 4, Q = 1, K ~ sqrt(N); "
        + ("float32" if cpu else "bf16 autocast")
    )
    print()
    if args.versus_transolver:
        versus_transolver(
            args.sizes or [8192 * 2**i for i in range(6)], args.device, args.repeats, args.timeout,
            args.keep_freed_memory,
        )  # fmt: skip
        return
    print("| model | N | K x L | forward s | forward peak MB | fwd+bwd s | fwd+bwd peak MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    fits: dict[str, dict[str, list[float]]] = {}
    for variant in () if args.stream_only else ("mspt", "full"):
        last_time = 0.0
        for n in sizes:
            k = 2 ** ModelConfig().patch_level(n)
            shape = f"{k} x {math.ceil(n / k)}" if variant == "mspt" else "1 x N"
            if variant == "full" and last_time * 4.5 > args.full_budget:
                print(f"| full attention | {n:,} | {shape} | skipped: projected over {args.full_budget:.0f} s | | | |")
                continue
            fwd = measure(n, variant, "forward", args.device, args.chunk_points, args.timeout)
            bwd = measure(n, variant, "train", args.device, args.chunk_points, args.timeout)
            cells = []
            for r in (fwd, bwd):
                if r is None or "error" in r:
                    cells += [r["error"] if r else "failed", ""]
                else:
                    cells += [f"{r['seconds']:.3f}", f"{r['peak_bytes'] / 2**20:,.0f}"]
            label = "MSPT" if variant == "mspt" else "full attention"
            print(f"| {label} | {n:,} | {shape} | " + " | ".join(cells) + " |", flush=True)
            for key, r in (("forward", fwd), ("train", bwd)):
                if r and "error" not in r:
                    f = fits.setdefault(f"{label} {key}", {"n": [], "t": [], "m": []})
                    f["n"].append(n)
                    f["t"].append(r["seconds"])
                    f["m"].append(max(r["peak_bytes"], 1))
            if fwd and "error" not in fwd:
                last_time = max(fwd["seconds"], bwd["seconds"] if bwd and "error" not in bwd else 0.0)
            else:
                break
    print()
    print("| fit (log-log, all sizes measured) | time slope | memory slope |")
    print("|---|---:|---:|")
    for label, f in fits.items():
        if len(f["n"]) >= 2:
            print(f"| {label} | {slope(f['n'], f['t']):.2f} | {slope(f['n'], f['m']):.2f} |")
    print()
    r = measure(stream_size, "mspt", "stream", args.device, args.chunk_points, args.timeout)
    if r is None or "error" in r:
        print(f"streaming inference, {stream_size:,} points: {r['error'] if r else 'failed'}")
    else:
        what = "peak resident memory of the whole process" if cpu else "peak GPU memory allocated"
        print(
            f"streaming inference, {stream_size:,} points, chunks of {args.chunk_points:,}: "
            f"{r['seconds']:.1f} s; peak memory growth during the call {r['peak_bytes'] / 2**20:,.0f} MB; "
            f"{what} {r['peak_total_bytes'] / 2**30:.2f} GB (model, inputs, layout and interpreter included)"
        )
    print()
    print("## MSPT vs the official Transolver, equal size, 11 input and 8 output channels")
    print()
    versus_transolver(sizes[:-1] if cpu else sizes[:4], args.device, args.repeats, args.timeout)


if __name__ == "__main__":
    main()
