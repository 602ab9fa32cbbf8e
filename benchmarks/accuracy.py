"""Accuracy on held-out Ahmed bodies at a fixed training budget: from the CFD meshes and from the STL alone.

    python benchmarks/accuracy.py                                  # CPU: the default model, 800 steps (~30 min)
    python benchmarks/accuracy.py --steps 100                      # a smoke run
    python benchmarks/accuracy.py --variant wide=model.width=192,model.num_heads=8
    python benchmarks/accuracy.py --device cuda --steps 20000      # a GPU budget

Data: the 24 real OpenFOAM cases of ``../shared/data/ahmed`` (k-omega SST, 40 m/s). Split, fixed:
test = case_0003, case_0009, case_0015, case_0021 (every sixth case), train = the other 20, no
validation during training (its cost would count against the budget). One prepared dataset
(whole meshes, nothing subsampled) serves every variant.

Per variant: ``train.epochs`` is chosen so that the run makes ``--steps`` optimiser steps (20
samples, batch 1: 20 steps an epoch); the training time is wall-clock seconds of ``train_model``.
Then, per test case:

- **CFD mesh**: the prepared sample (the solver's surface and volume points) through the same
  evaluation as validation: relative L2 of surface p, wall shear, volume U and p in physical units,
  and Cd/Cl of the predicted surface fields against the same point-share integration of the CFD
  fields (so the error is the model's, not the integration's).
- **STL alone**: ``mspt predict`` on ``geometry.stl`` (a designer's file, about 2k points, no CFD on
  it) with the default volume points; Cd/Cl against ``Cd_fields``/``Cl_fields`` of params.json (the
  exact cell integration of the solver's fields).
- **Floor of STL vs mesh**: the solver's own surface fields carried to both surfaces (each refined as
  ``mspt predict`` refines it; inverse-distance weights of the 4 nearest CFD surface points) and
  integrated there: how far apart the two tessellations put Cd for a perfect model.
- **Consistency**: Cd predicted on ``surface.vtu`` with ``--volume-points 0``, with the default
  volume points, with 1,000,000 volume points and with the CFD ``volume.vtu``; and on
  ``geometry.stl``: the spread (max - min) / |mean| over these five answers for one body, and the
  spread over the four answers from ``surface.vtu`` alone (the volume points asked about); and the
  Cd of ``geometry.stl`` cut into a 4x finer tessellation (each triangle into four) against the
  original's.

Tables are printed as Markdown; record them in docs/benchmarks.md with the machine and date.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyvista as pv
import torch
from machine import cpu_name

from msptcli.checkpoint import load_checkpoint
from msptcli.config import load_config
from msptcli.data.manifest import read_manifest
from msptcli.data.sample import load_sample
from msptcli.evaluate import evaluate_sample
from msptcli.predict import predict_geometry
from msptcli.prepare import prepare_dataset
from msptcli.train.loop import train_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ahmed"
TEST = ["case_0003", "case_0009", "case_0015", "case_0021"]
FIELDS = ["surface/p", "surface/wallShearStress", "volume/U", "volume/p"]


def prepare(data: Path, work: Path, workers: int) -> Path:
    cases = sorted(str(p) for p in data.glob("case_*"))
    if len(cases) != 24:
        sys.exit(f"expected the 24 Ahmed cases in {data}, found {len(cases)}")
    cfg = load_config(values={"data.split.test": TEST, "data.split.val": [], "data.split.fractions": [1, 0, 0]})
    out = work / "data"
    started = time.perf_counter()
    prepare_dataset(cases, out, config=cfg, workers=workers)  # reuses finished samples
    print(f"prepared 24 cases in {time.perf_counter() - started:.0f} s ({out})", file=sys.stderr)
    return out


def train(
    data_dir: Path, work: Path, name: str, overrides: list[str], steps: int, device: str, *, reuse: bool = False
) -> tuple[Path, float]:
    run = work / f"run-{name}"
    if reuse and (run / "checkpoints" / "last.safetensors").is_file():  # evaluate a finished run again
        rows = list(csv.DictReader((run / "metrics.csv").open()))
        return run, sum(float(r["seconds"]) for r in rows)
    manifest = read_manifest(data_dir)
    per_epoch = len(manifest.split("train"))
    epochs = max(1, math.ceil(steps / per_epoch))
    cfg = load_config(data_dir / "config.yaml", overrides, values={"train.epochs": epochs, "train.device": device})
    if run.exists():
        import shutil

        shutil.rmtree(run)
    started = time.perf_counter()
    train_model(data_dir, run, config=cfg)
    return run, time.perf_counter() - started


def stl_vs_mesh_floor(case: Path) -> float:
    """|Cd(STL) / Cd(CFD surface) - 1| of the solver's own fields carried to both refined surfaces (a model's floor)."""
    import json

    from scipy.spatial import cKDTree

    from msptcli.data.prepare_case import surface_arrays
    from msptcli.data.read import FieldMesh, read_fields
    from msptcli.geometry.faces import refined
    from msptcli.io.meshes import as_polydata
    from msptcli.physics.forces import coefficients, force_from_points
    from msptcli.predict import FORCE_POINTS

    params = json.loads((case / "params.json").read_text())
    cfd = read_fields(case / "surface.vtu", ["p", "wallShearStress"])
    p, tau = (np.asarray(cfd.mesh.point_data[f]) for f in ("p", "wallShearStress"))
    tree = cKDTree(np.asarray(cfd.mesh.points, dtype=np.float64))
    cd = []
    for surface in (as_polydata(cfd.mesh), pv.read(case / "geometry.stl")):
        fine = refined(surface, FORCE_POINTS)
        points = np.asarray(fine.points, dtype=np.float64)
        arrays = surface_arrays(FieldMesh(mesh=fine, points=points, location="points"))
        distance, index = tree.query(points, k=4)
        w = 1.0 / np.maximum(distance, 1e-9) ** 2
        w /= w.sum(axis=1, keepdims=True)
        p_at, tau_at = (p[index] * w).sum(1), (tau[index] * w[..., None]).sum(1)
        force = force_from_points(arrays["surface/area"], arrays["surface/area_norm"], p_at, tau_at)
        cd.append(coefficients(force, ref_area=params["frontal_area"], velocity=params["params"]["U"])[0])
    return abs(cd[1] / cd[0] - 1.0)


def evaluate(data_dir: Path, run: Path, data: Path, device: str, *, quick: bool = False) -> dict[str, list[float]]:
    """Per metric, one value per test case (``quick``: the fields, Cd and STL vs mesh only)."""
    ckpt = load_checkpoint(run)
    manifest = read_manifest(data_dir)
    dev = torch.device(device)
    rows: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        rows.setdefault(key, []).append(float(value))

    for entry in manifest.split("test"):
        sample = load_sample(data_dir / entry.file)
        m = evaluate_sample(ckpt.model, sample, manifest, reference=ckpt.reference, device=dev)
        for field in FIELDS:
            add(field, m[f"rel_l2/{field}"])
        add("cd_mesh_rel", abs(m["cd_pred"] - m["cd_true"]) / abs(m["cd_true"]))
        add("cl_mesh_abs", abs(m["cl_pred"] - m["cl_true"]))
        case = data / entry.name
        params = sample.meta.get("params", {})
        cds = {}
        with tempfile.TemporaryDirectory() as tmp:
            for label, geometry, kw in (
                ("stl", case / "geometry.stl", {}),
                ("mesh, no volume", case / "surface.vtu", {"volume_points": 0}),
                ("mesh, default volume", case / "surface.vtu", {}),
                ("mesh, CFD volume", case / "surface.vtu", {"volume_mesh": case / "volume.vtu"}),
                ("mesh, 1M volume", case / "surface.vtu", {"volume_points": 1_000_000}),
            ):
                if quick and label not in ("stl", "mesh, default volume"):
                    continue
                p = predict_geometry(ckpt, geometry, tmp, name=label.replace(" ", "_").replace(",", ""), device=dev,
                                     preview=False, **kw)  # fmt: skip
                cds[label] = p.coefficients.cd
                if label == "stl":
                    add("cd_stl_rel", abs(p.coefficients.cd - params["Cd_fields"]) / abs(params["Cd_fields"]))
                    add("cl_stl_abs", abs(p.coefficients.cl - params["Cl_fields"]))
            if quick:
                add("cd_stl_vs_mesh", abs(cds["stl"] - cds["mesh, default volume"]) / abs(cds["mesh, default volume"]))
                add("cd_stl_vs_mesh_floor", stl_vs_mesh_floor(case))
                continue
            fine = Path(tmp) / "fine" / entry.name  # the same STL, each triangle cut into 4: a finer tessellation
            fine.mkdir(parents=True)
            (fine / "params.json").write_text((case / "params.json").read_text())
            pv.read(case / "geometry.stl").triangulate().subdivide(1, "linear").save(fine / "geometry.stl")
            p = predict_geometry(ckpt, fine / "geometry.stl", tmp, name="fine", device=dev, preview=False)
            add("cd_stl_vs_subdivided", abs(p.coefficients.cd - cds["stl"]) / abs(cds["stl"]))
        values = list(cds.values())
        add("cd_spread", (max(values) - min(values)) / abs(statistics.mean(values)))
        mesh_values = [v for k, v in cds.items() if k.startswith("mesh")]
        add("cd_spread_volume", (max(mesh_values) - min(mesh_values)) / abs(statistics.mean(mesh_values)))
        add("cd_stl_vs_mesh", abs(cds["stl"] - cds["mesh, default volume"]) / abs(cds["mesh, default volume"]))
        add("cd_stl_vs_mesh_floor", stl_vs_mesh_floor(case))
    return rows


def quick_row(
    label: str, rows: dict[str, list[float]], lead: list[str], tail: list[str] | None = None
) -> dict[str, float]:
    """Print a table row of a ``--quick`` evaluation (``lead`` cells, the 4 fields, Cd from the mesh and
    the STL, ``tail`` cells) and one comment line per test case with every number; the means by metric."""
    mean = {k: float(np.mean(v)) for k, v in rows.items()}
    cells = [*lead, *(f"{mean[f]:.3f}" for f in FIELDS)]
    cells += [f"{100 * mean['cd_mesh_rel']:.1f}%", f"{100 * mean['cd_stl_rel']:.1f}%", *(tail or [])]
    print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    for i, case in enumerate(TEST):
        detail = ", ".join(f"{k} {v[i]:.3f}" for k, v in rows.items())
        print(f"<!-- {label} {case}: {detail} -->", flush=True)
    return mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA, help="folder of the 24 Ahmed cases")
    parser.add_argument("--work", type=Path, default=Path("out/accuracy"), help="prepared data and runs")
    parser.add_argument("--steps", type=int, default=800, help="optimiser steps per variant")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="prepare workers")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=KEY=VALUE,...",
        help="a variant: a name and config overrides (repeatable); default: the default config",
    )
    parser.add_argument("--reuse", action="store_true", help="evaluate finished runs of the same names again")
    parser.add_argument(
        "--quick", action="store_true", help="fields, Cd and STL vs mesh only (no volume-point and 4x-STL checks)"
    )
    args = parser.parse_args()
    variants = {"default": []}
    if args.variant:
        variants = {}
        for spec in args.variant:
            name, _, overrides = spec.partition("=")
            variants[name] = [o for o in overrides.split(",") if o] if overrides else []
    data_dir = prepare(args.data, args.work, args.workers)

    print(f"# Accuracy on held-out Ahmed bodies, {datetime.date.today().isoformat()}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, device {args.device}")
    print(f"split: train 20, test {', '.join(TEST)}; {args.steps} steps per variant, batch 1")
    print()
    print("rel. L2 on the CFD meshes (mean over the 4 test cases; physical units):")
    print()
    header = "| variant | train s | surface p | wall shear | volume U | volume p | Cd err mesh | Cd err STL |"
    header += " |dCl| mesh | |dCl| STL | Cd spread | Cd spread, volume points"
    header += " | Cd STL vs mesh (floor) | Cd STL vs 4x STL |"
    print(header)
    print("|---" + "|---:" * 13 + "|")
    for name, overrides in variants.items():
        run, seconds = train(data_dir, args.work, name, overrides, args.steps, args.device, reuse=args.reuse)
        rows = evaluate(data_dir, run, args.data, args.device, quick=args.quick)
        mean = {k: float(np.mean(v)) for k, v in rows.items()}
        for key in ("cd_spread", "cd_spread_volume", "cd_stl_vs_subdivided"):  # not run with --quick
            mean.setdefault(key, math.nan)
        cells = [f"{seconds:.0f}", *(f"{mean[f]:.3f}" for f in FIELDS)]
        cells += [f"{100 * mean['cd_mesh_rel']:.1f}%", f"{100 * mean['cd_stl_rel']:.1f}%"]
        cells += [f"{mean['cl_mesh_abs']:.3f}", f"{mean['cl_stl_abs']:.3f}"]
        cells += [f"{100 * mean['cd_spread']:.1f}%", f"{100 * mean['cd_spread_volume']:.2f}%"]
        cells += [f"{100 * mean['cd_stl_vs_mesh']:.1f}% ({100 * mean['cd_stl_vs_mesh_floor']:.1f}%)"]
        cells += [f"{100 * mean['cd_stl_vs_subdivided']:.2f}%"]
        print(f"| {name} {' '.join(overrides)} | " + " | ".join(cells) + " |", flush=True)
        for i, case in enumerate(TEST):
            detail = ", ".join(f"{k} {v[i]:.3f}" for k, v in rows.items())
            print(f"<!-- {name} {case}: {detail} -->", flush=True)


if __name__ == "__main__":
    main()
