"""Training throughput of the default model: samples/s, points/s and peak memory per step.

    python benchmarks/train_throughput.py                    # GPU (bf16): 100k and 1M points per sample
    python benchmarks/train_throughput.py --device cpu --points 16384 65536 --steps 3

One training step is forward + backward + AdamW on one sample of N points (uniform random
cloud, the 11 input features of mspt's pipeline, 8 output channels), with the default
model (width 128, 8 heads, 4 blocks, K ~ sqrt(N)); bf16 autocast on a GPU, with and
without ``torch.compile``. The layout is built once per sample, as the data loader does.
Timings are the median of ``--steps`` steps after two warm-up steps. Peak memory: CUDA's
max allocated, or on the CPU the growth of peak resident memory (in a fresh process each).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

import torch
from machine import memory_now, peak_bytes

from msptcli.model import MSPT, ModelConfig, build_layout


def worker(n: int, device: str, compiled: bool, steps: int) -> dict:
    torch.manual_seed(0)
    cfg = ModelConfig()
    model = MSPT(cfg, in_features=11, out_features=8).to(device)
    net = torch.compile(model, dynamic=False) if compiled else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    layout = build_layout([n], cfg).to(device)
    x = torch.randn(n, 11, device=device)
    y = torch.randn(n, 8, device=device)
    cuda = device == "cuda"

    def step() -> None:
        with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
            loss = (net(x, layout).float() - y).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()

    for _ in range(2):
        step()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    base = memory_now(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    peak = peak_bytes(device)
    return {
        "seconds": statistics.median(times),
        "peak_bytes": peak if cuda else max(peak - base, 0),
        "peak_total": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--points", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(int(args.worker[0]), args.device, args.worker[1] == "1", args.steps)))
        return
    name = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {os.cpu_count()} cores"
    print(
        f"# training throughput, default model, {datetime.date.today().isoformat()}, {name}, torch {torch.__version__}"
    )
    print()
    print("| points per sample | torch.compile | s/step | samples/s | points/s | peak memory |")
    print("|---:|---|---:|---:|---:|---:|")
    for n in args.points:
        for compiled in (False,) if args.no_compile else (False, True):
            cmd = [sys.executable, __file__, "--device", args.device, "--steps", str(args.steps)]
            cmd += ["--worker", str(n), "1" if compiled else "0"]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                reason = "out of memory" if "out of memory" in out.stderr.lower() else "failed"
                print(f"| {n:,} | {'yes' if compiled else 'no'} | {reason} | | | |", flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            s = r["seconds"]
            print(
                f"| {n:,} | {'yes' if compiled else 'no'} | {s:.3f} | {1 / s:.2f} | {n / s:,.0f} "
                f"| {r['peak_bytes'] / 2**30:.2f} GB |",
                flush=True,
            )


if __name__ == "__main__":
    main()
