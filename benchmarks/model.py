"""MSPT against dense attention: time and peak memory against the number of points.

    python benchmarks/model.py                      # CPU: 8k .. 256k points, plus 1M streaming
    python benchmarks/model.py --sizes 8192 16384   # a quick run
    python benchmarks/model.py --device cuda        # GPU: 100k .. 4M points, bf16, plus 10M streaming

Each measurement runs in a fresh subprocess so that peak memory is its own:
on the CPU the growth of peak resident memory (ru_maxrss) over the resident
memory just before the timed call; on a GPU ``torch.cuda.max_memory_allocated``
over the memory allocated before it. The model is the default configuration
(width 128, 8 heads, 4 blocks, MLP ratio 4, Q = 1, K ~ sqrt(N)) on one cloud of
uniform random points with 6 input and 4 output channels. Full attention runs
until it fails for memory, or until its projected time exceeds ``--full-budget``.
The last lines fit log-log slopes of time and memory against N.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch
from machine import memory_now, peak_bytes

from msptcli.model import MSPT, ModelConfig, build_layout


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
    parser.add_argument("--worker", nargs=3, metavar=("N", "VARIANT", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
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
    print(f"# MSPT vs dense attention, {datetime.date.today().isoformat()}, {name}, torch {torch.__version__}")
    print(
        "default model: width 128, 8 heads, depth 4, MLP ratio 4, Q = 1, K ~ sqrt(N); "
        + ("float32" if cpu else "bf16 autocast")
    )
    print()
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


if __name__ == "__main__":
    main()
