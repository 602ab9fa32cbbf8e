"""Training throughput of the default model: samples/s, points/s and peak memory per step.

    python benchmarks/train_throughput.py                    # GPU (bf16): 100k and 1M points per sample
    python benchmarks/train_throughput.py --device cpu --points 16384 65536 --steps 3
    python benchmarks/train_throughput.py --real --device cpu  # a real `mspt train` step next to the bare step

``--real``: the steady-state step of a real training run (``train_model`` on the example cases
shipped in ``examples/ahmed``, prepared into a temporary directory: the loader draws the anchors and
queries, builds their trees and layout in the main process, then forward, backward, clipping, AdamW
and the scheduler) next to the bare step of the same network on one batch collated once, both at the
default 8192 + 8192 query points per sample on 8192 anchors. Step times are the median of the
intervals between steps inside an epoch (epoch ends, with checkpoints and validation, are left out).

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


def real_versus_bare(device: str, epochs: int, num_workers: int) -> None:
    """The real run's step next to the bare step (see the module docstring)."""
    import functools
    import tempfile
    from pathlib import Path

    from msptcli.config import load_config
    from msptcli.data.features import IN_FEATURES, Channels
    from msptcli.data.manifest import read_manifest
    from msptcli.model import build_network
    from msptcli.prepare import prepare_dataset
    from msptcli.train.dataset import TrainClouds, collate
    from msptcli.train.loop import train_model
    from msptcli.train.objective import masked_mse

    examples = Path(__file__).resolve().parents[1] / "examples" / "ahmed"
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            examples / "config.yaml",
            values={
                "model.width": 128, "model.num_heads": 8, "model.depth": 4,  # the default network
                "train.surface_points": 8192, "train.volume_points": 8192, "train.epochs": epochs,
                "train.val_every": 1000, "train.device": device, "train.num_workers": num_workers,
            },
        )  # fmt: skip
        cases = sorted(str(p) for p in examples.glob("case_*"))
        prepare_dataset(cases, Path(tmp) / "data", config=cfg, workers=1)

        times: list[float] = []

        class Clock:
            last = None

            def begin(self, start) -> None: ...

            def start(self, total_steps: int, done_steps: int, time_limit: float | None, elapsed: float) -> None: ...

            def step(self, loss: float | None, lr: float, elapsed: float) -> None:
                now = time.perf_counter()
                if self.last is not None:
                    times.append(now - self.last)
                self.last = now

            def epoch(self, epoch: int, row: dict) -> None:
                self.last = None  # the epoch end (checkpoints, validation) is not a step

        summary = train_model(Path(tmp) / "data", Path(tmp) / "run", config=cfg, reporter=Clock())
        real = statistics.median(times[len(times) // 4 :])  # steady state: the first quarter left out

        manifest = read_manifest(Path(tmp) / "data")
        channels = Channels.from_fields(manifest.fields)
        torch.manual_seed(0)
        model = build_network(cfg.model, in_features=IN_FEATURES, out_features=channels.total).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        data = TrainClouds(
            Path(tmp) / "data", manifest, manifest.split("train"), surface_points=8192, volume_points=8192,
            seed=0, anchors=cfg.model.anchors,
        )  # fmt: skip
        batch = functools.partial(collate, model_config=cfg.model)([data[0]]).to(torch.device(device))
        a = batch.anchors
        bare_times = []
        for i in range(8):
            start = time.perf_counter()
            pred = model(a.features, a.layout, queries=batch.queries, trees=a.trees)
            loss = masked_mse(pred, batch.targets, batch.mask, torch.ones(channels.total, device=device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= 2:
                bare_times.append(time.perf_counter() - start)
        bare = statistics.median(bare_times)
        load_times = []
        for i in range(6):
            start = time.perf_counter()
            functools.partial(collate, model_config=cfg.model)([data[i % len(data)]])
            load_times.append(time.perf_counter() - start)
        load = statistics.median(load_times)
    print("| step | s/step | vs bare |")
    print("|---|---:|---:|")
    print(f"| bare model step (one batch collated once) | {bare:.3f} | 1.00x |")
    print(f"| real `mspt train` step ({len(times)} steps, {summary.epochs_done} epochs, "
          f"{num_workers} loader workers) | {real:.3f} | {real / bare:.2f}x |")  # fmt: skip
    print(f"| loading one sample alone (draw, trees, layout, query placement) | {load:.3f} | {load / bare:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--points", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--real", action="store_true", help="a real `mspt train` step next to the bare step")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of the real run (4 training cases each)")
    parser.add_argument("--num-workers", type=int, default=0, help="loader workers of the real run")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.real:
        name = f"CPU, {os.cpu_count()} cores" if args.device == "cpu" else torch.cuda.get_device_name()
        print(f"# real vs bare training step, {datetime.date.today().isoformat()}, {name}, torch {torch.__version__}")
        print()
        real_versus_bare(args.device, args.epochs, args.num_workers)
        return
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
