"""Which backbone on the user's data: MSPT, Erwin, Erwin-NSA and Transolver at equal size and equal budget.

    python benchmarks/backbones.py                       # CPU: accuracy (400 steps each) and the cost table
    python benchmarks/backbones.py --steps 800           # a larger budget
    python benchmarks/backbones.py --cost-only           # time and memory only (minutes)
    python benchmarks/backbones.py --accuracy-only --reuse   # evaluate finished runs again
    python benchmarks/backbones.py --device cuda --sizes 65536 262144 1048576

Every backbone runs in the default anchor-query design (8192 anchors per body, every mesh point a
query; ``docs/model.md``), with the settings of ``SIZES`` below: the default MSPT (205,512 parameters at
width 64), the others about 0.8M parameters each, the old default MSPT's size (the count is printed beside
every row).

**Accuracy**: ``benchmarks/accuracy.py``'s split (train 20 Ahmed bodies, test case_0003, 0009, 0015,
0021), its training budget in optimiser steps (batch 1) and its ``--quick`` evaluation: rel. L2 of
the fields on the CFD meshes, drag from the CFD surface and from the STL alone. The runs go to
``out/accuracy/run-<backbone>-<steps>`` and are reused with ``--reuse``.

**Cost**, each measurement in a fresh process (peak memory is its own; CPU: growth of peak resident
memory over the resident memory before the call, GPU: ``torch.cuda.max_memory_allocated``):

- *train step at N*: forward + backward of the network on one cloud of N points (the backbone on
  all N, as with ``model.anchors: null``; Erwin on its N-point ball tree), 11 inputs, 8 outputs;
  the mean of 2 steps after one warm-up step.
- *predict 1M*: ``predict_queries`` (what ``mspt predict`` runs) of 1,048,576 query points on 8192
  anchors, chunks of 65,536 queries: the anchors run the backbone once, the queries stream.

Tables are printed as Markdown; record them in docs/benchmarks.md with the machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name, memory_now, peak_bytes

#: Settings of every backbone, as config overrides: MSPT as it is by default (width 64, 205,512 parameters since
#: the time-budget study; the backbone table of docs/benchmarks.md was measured with the 812,424-parameter MSPT at
#: width 128, `model.width=128,model.num_heads=8`), the others at about 0.8M parameters.
SIZES: dict[str, list[str]] = {
    "mspt": [],  # the default
    "erwin": [  # width 64 with 4 heads (head dim 16, as in Erwin's configs), 128 channels at the coarse level
        "model.backbone=erwin",
        "model.width=64",
        "model.num_heads=4",
        "model.mlp_ratio=3",
        "model.erwin.ball_sizes=[128,128]",
        "model.erwin.strides=[4]",
        "model.erwin.enc_depths=[2,2]",
        "model.erwin.dec_depths=[2]",
        "model.erwin.width_multipliers=[1,2]",
        "model.query_depth=2",
    ],
    "erwin-nsa": [  # 818,616
        "model.backbone=erwin-nsa",
        "model.width=128",
        "model.num_heads=8",
        "model.depth=2",
        "model.query_depth=2",
    ],
    "transolver": [  # 800,088
        "model.backbone=transolver",
        "model.width=128",
        "model.num_heads=8",
        "model.depth=2",
        "model.query_depth=2",
    ],
}
STEP_SIZES = (16_384, 65_536, 262_144)
QUERIES = 1 << 20


def model_config(backbone: str):  # type: ignore[no-untyped-def]
    from msptcli.config import load_config

    return load_config(None, SIZES[backbone]).model


def parameters(backbone: str) -> int:
    from msptcli.model import build_network

    model = build_network(model_config(backbone), in_features=11, out_features=8)
    return sum(p.numel() for p in model.parameters())


def worker(backbone: str, mode: str, n: int, device: str, memory_limit_gb: float) -> dict:
    """One measurement in this (fresh) process, its address space capped at ``memory_limit_gb`` on the CPU
    (a run that needs more fails cleanly as "out of memory" instead of pushing the machine into swap)."""
    if device == "cpu" and memory_limit_gb > 0:
        limit = int(memory_limit_gb * 1e9)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from msptcli.model import build_network
    from msptcli.model.anchors import pack_anchors
    from msptcli.runtime import predict_queries

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    config = model_config(backbone)
    model = build_network(config, in_features=11, out_features=8).to(device)
    use_bf16 = device == "cuda"

    def cloud(m: int) -> tuple[np.ndarray, np.ndarray]:
        points = rng.random((m, 3))
        return points, np.concatenate([points, rng.standard_normal((m, 8))], axis=1).astype(np.float32)

    if mode == "step":
        points, features = cloud(n)
        packed = pack_anchors([points], [features], config).to(device)  # the ball tree(s) of the N points

        def run() -> None:
            with torch.autocast(device, dtype=torch.bfloat16, enabled=use_bf16):
                out = model(packed.features, packed.layout, trees=packed.trees)
            out.float().square().mean().backward()

        repeats = 2
        run()  # warm-up
    else:
        anchors = config.anchors.surface + config.anchors.volume
        a_points, a_features = cloud(anchors)
        q_points, q_features = cloud(n)

        def run() -> None:
            predict_queries(model, [a_points], [a_features], [q_points], [q_features], device=device)

        repeats = 1
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = memory_now(device)
    started = time.perf_counter()
    for _ in range(repeats):
        run()
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / repeats
    peak = peak_bytes(device) - base
    return {"seconds": seconds, "peak_gb": max(peak, 0) / 1e9}


def measure(backbone: str, mode: str, n: int, device: str, timeout: float, memory_limit_gb: float) -> dict | None:
    cmd = [sys.executable, __file__, "--device", device, "--memory-limit-gb", str(memory_limit_gb)]
    cmd += ["--worker", backbone, mode, str(n)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["killed"])[-1]
        return {"error": "out of memory" if "memory" in last.lower() or done.returncode < 0 else last[:60]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def cell(result: dict | None) -> str:
    if result is None or "error" in result:
        return f"({result['error']})" if result else "-"
    return f"{result['seconds']:.2f} s, {result['peak_gb']:.2f} GB"


def cost_table(backbones: list[str], sizes: list[int], device: str, timeout: float, memory_limit_gb: float) -> None:
    print("Cost (time, peak memory):")
    print()
    cols = [f"train step {n:,}" for n in sizes] + [f"predict {QUERIES:,} queries"]
    print("| backbone | parameters | " + " | ".join(cols) + " |")
    print("|---|---:|" + "---:|" * len(cols))
    for backbone in backbones:
        cells = [f"{parameters(backbone):,}"]
        for n in sizes:
            cells.append(cell(measure(backbone, "step", n, device, timeout, memory_limit_gb)))
        cells.append(cell(measure(backbone, "predict", QUERIES, device, timeout, memory_limit_gb)))
        print(f"| {backbone} | " + " | ".join(cells) + " |", flush=True)
    print()


def accuracy_table(backbones: list[str], steps: int, device: str, *, reuse: bool) -> None:
    import accuracy

    data_dir = accuracy.prepare(accuracy.DATA, Path("out/accuracy"), min(2, os.cpu_count() or 1))
    print(f"Accuracy: {steps} steps per backbone, batch 1, split of benchmarks/accuracy.py (rel. L2, mean of 4):")
    print()
    print("| backbone | parameters | train s | s / step | surface p | wall shear | volume U | volume p "
          "| Cd err mesh | Cd err STL |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for backbone in backbones:
        name = f"{backbone}-{steps}"
        run, seconds = accuracy.train(data_dir, Path("out/accuracy"), name, SIZES[backbone], steps, device, reuse=reuse)
        rows = accuracy.evaluate(data_dir, run, accuracy.DATA, device, quick=True)
        lead = [f"{parameters(backbone):,}", f"{seconds:.0f}", f"{seconds / steps:.2f}"]
        accuracy.quick_row(backbone, rows, lead)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--backbones", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--steps", type=int, default=400, help="optimiser steps per backbone (accuracy)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(STEP_SIZES), help="points of the train steps")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds before a measurement is abandoned")
    parser.add_argument(
        "--memory-limit-gb", type=float, default=16.0, help="address space of a CPU measurement (0: no limit)"
    )
    parser.add_argument("--cost-only", action="store_true")
    parser.add_argument("--accuracy-only", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="evaluate finished accuracy runs again")
    parser.add_argument("--worker", nargs=3, metavar=("BACKBONE", "MODE", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        backbone, mode, n = args.worker
        print(json.dumps(worker(backbone, mode, int(n), args.device, args.memory_limit_gb)))
        return
    print(f"# Backbones, {datetime.date.today().isoformat()}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, device {args.device}")
    print()
    if not args.cost_only:
        accuracy_table(args.backbones, args.steps, args.device, reuse=args.reuse)
    if not args.accuracy_only:
        cost_table(args.backbones, args.sizes, args.device, args.timeout, args.memory_limit_gb)


if __name__ == "__main__":
    main()
