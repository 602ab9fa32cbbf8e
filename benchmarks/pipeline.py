"""The pipeline's speed and the demo's accuracy: prepare throughput, predict throughput and memory.

    make demo                              # trains out/demo/run, which this benchmark uses
    python benchmarks/pipeline.py          # prints the tables for docs/benchmarks.md

- prepare: the six shipped cases (surface ~11.5k points, volume ~119k points each, the
  distance of every volume point to the body included), 1 and 2 workers, points per second.
- predict: the held-out case_0005 with its CFD surface and volume (~131k points), and its
  STL with 1M points sampled around the body (streaming inference), points per second and
  peak resident memory, each in a fresh process.
- accuracy: relative L2 and drag/lift of the held-out case from the prediction's JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "ahmed"


def run_prepare(workers: int, out: Path) -> tuple[float, int]:
    from msptcli.config import load_config
    from msptcli.prepare import prepare_dataset

    config = load_config(EXAMPLES / "config.yaml", ["data.max_volume_points=null"])
    start = time.perf_counter()
    report = prepare_dataset([str(EXAMPLES / "case_*")], out, config=config, workers=workers)
    seconds = time.perf_counter() - start
    points = sum(s.num_surface + s.num_volume for s in report.manifest.samples)
    return seconds, points


def predict_worker(run: str, geometry: str, out: str, volume: str | None, volume_points: int | None) -> None:
    """In a fresh process: one prediction, then its time and peak memory as JSON."""
    import torch

    from msptcli.checkpoint import load_checkpoint
    from msptcli.predict import predict_geometry

    torch.set_num_threads(os.cpu_count() or 1)
    ckpt = load_checkpoint(run)
    start = time.perf_counter()
    result = predict_geometry(
        ckpt, geometry, out, volume_mesh=volume, volume_points=volume_points, preview=False, name="bench"
    )
    seconds = time.perf_counter() - start
    summary = json.loads((Path(out) / "bench.json").read_text())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {"seconds": seconds, "peak_bytes": peak, "summary": summary, "files": [str(f) for f in result.files]}
        )
    )


def measure_predict(run: Path, geometry: Path, volume: Path | None, volume_points: int | None) -> dict:
    out = tempfile.mkdtemp()
    args = [
        sys.executable,
        __file__,
        "--predict-worker",
        str(run),
        str(geometry),
        out,
        str(volume or ""),
        str(volume_points or 0),
    ]
    proc = subprocess.run(args, capture_output=True, text=True, check=True)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=ROOT / "out" / "demo" / "run", help="a trained run (make demo)")
    parser.add_argument("--large-points", type=int, default=1_000_000, help="volume points of the large prediction")
    parser.add_argument("--predict-worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.predict_worker:
        run, geometry, out, volume, n = args.predict_worker
        predict_worker(run, geometry, out, volume or None, int(n) or None)
        return
    if not (args.run / "checkpoints").is_dir():
        sys.exit(f"{args.run}: no trained run; run `make demo` first (or pass --run)")

    print(f"# mspt pipeline, {datetime.date.today().isoformat()}, {os.cpu_count()} cores")
    print()
    print("| prepare (6 Ahmed cases, all volume points) | workers | seconds | points | points/s | per worker |")
    print("|---|---:|---:|---:|---:|---:|")
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            seconds, points = run_prepare(workers, Path(tmp) / "data")
        rate = points / seconds
        print(f"| | {workers} | {seconds:.1f} | {points:,} | {rate:,.0f} | {rate / workers:,.0f} |")

    print()
    print("| predict | points | seconds | points/s | peak resident memory |")
    print("|---|---:|---:|---:|---:|")
    case = EXAMPLES / "case_0005"
    held_out = measure_predict(args.run, case / "surface.vtu", case / "volume.vtu", None)
    large = measure_predict(args.run, case / "geometry.stl", None, args.large_points)
    for label, r in (
        ("case_0005 CFD surface + volume mesh", held_out),
        (f"case_0005 STL + {args.large_points:,} sampled points", large),
    ):
        s = r["summary"]
        n = s.get("num_points", 0)
        print(f"| {label} | {n:,} | {r['seconds']:.1f} | {n / r['seconds']:,.0f} | {r['peak_bytes'] / 2**30:.2f} GB |")

    print()
    s = held_out["summary"]
    c = s["coefficients"]
    print("| held-out case_0005 (demo model) | value |")
    print("|---|---:|")
    for key, value in s["relative_l2"].items():
        print(f"| relative L2 {key} | {value:.3f} |")
    for k in ("cd", "cl"):
        solver = s["solver"].get(f"{k.capitalize()}_fields", float("nan"))
        label = f"{k.capitalize()} predicted / from the CFD fields / solver"
        print(f"| {label} | {c[k]:.4f} / {c[f'{k}_true_fields']:.4f} / {solver:.4f} |")
    stl = large["summary"]["coefficients"]
    print(f"| Cd / Cl predicted from geometry.stl alone | {stl['cd']:.4f} / {stl['cl']:.4f} |")


if __name__ == "__main__":
    main()
