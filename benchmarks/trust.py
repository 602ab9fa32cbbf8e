"""Does `mspt predict` say when not to trust it? The shape check on designs in and out of the training family.

    python benchmarks/trust.py                        # the shape check, with the accuracy split's 20 bodies
    python benchmarks/trust.py --run out/accuracy/run  # and the uncertainty of a model trained on that split

Data: the 24 real OpenFOAM Ahmed cases of ``../shared/data/ahmed``, split as ``benchmarks/accuracy.py``
splits them (test = case_0003, 0009, 0015, 0021; the other 20 train). The training bodies' shape features
are those ``mspt train`` records in a checkpoint (``trust.check.training_shapes`` of the prepared training
samples), or a run's own record with ``--run``.

Designs, each through the same features ``mspt predict`` computes (its reader, outward normals and area
shares of ``geometry.stl``):

- **in the family**: the four test cases' STL and CFD surface (``surface.vtu``), as they are, and every
  training body's STL against the other 19 (left out);
- **out of the family**, derived from each test case's STL: 1.3x longer, 1.3x wider, 0.7x as high (about its
  bottom), turned 90 and 10 degrees about the vertical, moved 1 m downstream, lifted 0.2 m;
- **units**: every one of the 24 cases' STL in millimetres, centimetres and inches (x1000, x100, x39.37),
  and in metres as it is.

Prints, per design kind, how many were flagged (``warn`` or ``out of range``) and how many refused as a
units problem, then the detection rate (out of the family) and the false-alarm rate (in the family).

**Model-level check** (``--run``, a model trained on the split): the designs above once more, with the
latent check of ``trust/latent.py`` joined to the shape check as ``mspt predict`` joins them (the units
rows excepted: predict refuses them first); the column *model flagged* counts the designs it flags.

**Uncertainty** (``--run``; the split has no validation bodies, so the
calibration is cross-fitted on the test bodies: fitted on two, measured on the other two, and the
other way round): the four test bodies predicted as validation predicts them, with the spread of the
anchor draws of ``mspt predict`` (``trust/calibrate.py``'s ``body_spread``). Per field: the share of
points inside their calibrated 90% interval (``mean ± factor · spread``) on the bodies the factor
was not fitted on, and the Spearman correlation between the spread and |error| over each body's
points (mean over the bodies); for Cd, the same coverage over the bodies and the Spearman
correlation between the spread of Cd and |Cd error| over the four, and between the design's latent
distance (what Cd's standard deviation is scaled by where 5+ validation bodies calibrate it) and
|Cd error|. Then the cost: ``predict_geometry``
of a test body's CFD surface and volume with the spread (3 draws) against without, side by side.
Record the tables in docs/benchmarks.md with the machine and date.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import accuracy
import numpy as np
import pyvista as pv
from machine import cpu_name

from msptcli.data.manifest import read_manifest
from msptcli.data.prepare_case import surface_arrays
from msptcli.data.read import FieldMesh
from msptcli.io.meshes import as_polydata, read_mesh
from msptcli.trust.check import ShapeCheck, TrainingShapes, body_features, check_shape, training_shapes

sys.path.insert(0, str(Path(__file__).resolve().parent))

Change = Callable[[pv.PolyData], pv.PolyData]


def _scaled(factors: tuple[float, float, float], *, about_bottom: bool = False) -> Change:
    def change(body: pv.PolyData) -> pv.PolyData:
        p = np.asarray(body.points, dtype=np.float64)
        origin = np.array([p[:, 0].min(), p[:, 1].mean(), p[:, 2].min()]) if about_bottom else np.zeros(3)
        out = body.copy()
        out.points = origin + (p - origin) * np.asarray(factors)
        return out

    return change


def _turned(degrees: float) -> Change:
    return lambda body: body.rotate_z(degrees, point=body.center, inplace=False)


def _moved(offset: tuple[float, float, float]) -> Change:
    return lambda body: body.translate(offset, inplace=False)


OUT_OF_FAMILY: dict[str, Change] = {
    "1.3x longer": _scaled((1.3, 1, 1), about_bottom=True),
    "1.3x wider": _scaled((1, 1.3, 1), about_bottom=True),
    "0.7x as high": _scaled((1, 1, 0.7), about_bottom=True),
    "turned 90 deg": _turned(90),
    "turned 10 deg": _turned(10),
    "moved 1 m downstream": _moved((1.0, 0, 0)),
    "lifted 0.2 m": _moved((0, 0, 0.2)),
}
UNITS = {"mm": 1000.0, "cm": 100.0, "in": 1 / 0.0254, "m": 1.0}


def check(shapes: TrainingShapes, body: pv.PolyData) -> ShapeCheck:
    """The shape check ``mspt predict`` runs on ``body`` (area shares at its points)."""
    surface = as_polydata(body)
    points = np.asarray(surface.points, dtype=np.float64)
    return check_shape(shapes, body_features(surface_arrays(FieldMesh(mesh=surface, points=points, location="points"))))


class ModelCheck:
    """The model-level check of a trained run: its training designs' latents from the prepared training samples
    (as ``mspt train`` records them) and a design's latent from anchors drawn as ``mspt predict`` draws them."""

    def __init__(self, run: Path, prepared: Path) -> None:
        from msptcli.checkpoint import load_checkpoint
        from msptcli.data.anchors import seeds_of
        from msptcli.trust.latent import training_latents

        self.ckpt = load_checkpoint(run)
        manifest = read_manifest(prepared)
        latents = training_latents(self.ckpt.model, prepared, manifest, manifest.split("train"))
        assert latents is not None, f"{run}: not an anchor-query model"
        self.latents, self.draw = latents, seeds_of(self.ckpt.model.config.anchors)[0]

    def check(self, mesh: pv.DataSet, left_out: list[str]) -> Any:
        from msptcli.data.anchors import geometry_anchors
        from msptcli.trust.latent import TrainingLatents, check_latent, design_latent

        points, features = geometry_anchors(as_polydata(mesh), self.ckpt.stats, self.draw, self.ckpt.volume_template)
        keep = [i for i, n in enumerate(self.latents.names) if n not in left_out]
        latents = TrainingLatents(tuple(self.latents.names[i] for i in keep), self.latents.values[keep])
        return check_latent(latents, design_latent(self.ckpt.model, points, features))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=accuracy.DATA, help="folder of the 24 Ahmed cases")
    parser.add_argument("--prepared", type=Path, default=Path("out/accuracy/data"),
                        help="the accuracy split prepared by accuracy.py (prepared here if missing)")  # fmt: skip
    parser.add_argument("--run", type=Path, help="a model trained on the split: its model-level check and uncertainty")
    args = parser.parse_args()

    prepared = args.prepared if (args.prepared / "manifest.json").is_file() else accuracy.prepare(
        args.data, args.prepared.parent, workers=2)  # fmt: skip
    shapes = training_shapes(prepared, read_manifest(prepared).split("train"))
    assert shapes is not None
    print(f"{cpu_name()}, {datetime.date.today()}; {len(shapes.names)} training bodies\n")

    model = ModelCheck(args.run, prepared) if args.run is not None else None
    train_stl = {n: pv.read(args.data / n / "geometry.stl") for n in shapes.names}
    designs: list[tuple[str, str, list[tuple[pv.DataSet, list[str]]]]] = []  # kind, label, (mesh, bodies left out)
    for label, source in (("test STL", "geometry.stl"), ("test CFD surface", "surface.vtu")):
        designs.append(("in", label, [(read_mesh(args.data / c / source), []) for c in accuracy.TEST]))
    designs.append(("in", "training STL, left out", [(train_stl[n], [n]) for n in shapes.names]))
    for label, change in OUT_OF_FAMILY.items():
        designs.append(("out", label, [(change(pv.read(args.data / c / "geometry.stl")), [])
                                       for c in accuracy.TEST]))  # fmt: skip
    cases = sorted(p.name for p in args.data.glob("case_*"))
    for unit, factor in UNITS.items():
        kind = "metres" if unit == "m" else "units"
        meshes = [(_scaled((factor,) * 3)(pv.read(args.data / c / "geometry.stl")), []) for c in cases]
        designs.append((kind, f"every STL in {unit}", meshes))

    rows: list[tuple[str, str, list[ShapeCheck]]] = []
    for kind, label, meshes in designs:
        checks = []
        for mesh, left_out in meshes:
            keep = [i for i, n in enumerate(shapes.names) if n not in left_out]
            c = check(TrainingShapes(tuple(shapes.names[i] for i in keep), shapes.values[keep]), mesh)
            if model is not None and kind != "units":
                c.add_model(model.check(mesh, left_out))
            checks.append(c)
        rows.append((kind, label, checks))
    if model is not None:
        print(f"with the model-level check of {args.run} (its training designs' latents)\n")

    print("| designs | kind | n | ok | warn | out of range | refused (units) | flagged by | model flagged |")
    print("|---|---|---:|---:|---:|---:|---:|---|---:|")
    for kind, label, checks in rows:
        count = {v: sum(c.verdict == v for c in checks) for v in ("ok", "warn", "out of range")}
        refused = sum(c.units is not None for c in checks)
        by = sorted({f for c in checks for f in c.out_of_range} | ({"distance"} if any(
            c.score > c.threshold for c in checks) else set()))  # fmt: skip
        by_model = sum(c.model is not None and c.model.flagged for c in checks) if model is not None else "-"
        print(f"| {label} | {kind} | {len(checks)} | {count['ok']} | {count['warn']} | {count['out of range']} | "
              f"{refused} | {', '.join(by) or '-'} | {by_model} |")  # fmt: skip

    def rate(kind: str, flagged: Callable[[ShapeCheck], bool]) -> str:
        checks = [c for k, _, cs in rows if k == kind for c in cs]
        return f"{sum(map(flagged, checks))}/{len(checks)} ({100 * np.mean(list(map(flagged, checks))):.0f}%)"

    print()
    print(f"- out of the family, flagged (warn or worse): {rate('out', lambda c: c.verdict != 'ok')}")
    print(f"- in the family, flagged (false alarms): {rate('in', lambda c: c.verdict != 'ok')}")
    print(f"- other units, refused: {rate('units', lambda c: c.units is not None)}")
    print(f"- the same STLs in metres, refused as units: {rate('metres', lambda c: c.units is not None)}")
    if args.run is not None:
        uncertainty(args.run, prepared, args.data)


def uncertainty(run: Path, prepared: Path, data: Path) -> None:
    """Coverage and rank correlation of the calibrated spread on the test bodies (cross-fitted), and its cost."""
    import tempfile
    import time

    from scipy.stats import spearmanr

    from msptcli.checkpoint import load_checkpoint
    from msptcli.data.sample import load_sample
    from msptcli.predict import predict_geometry
    from msptcli.trust.calibrate import body_spread, latent_distance
    from msptcli.trust.latent import training_latents
    from msptcli.trust.uncertainty import DRAWS, fit_calibration

    ckpt = load_checkpoint(run)
    manifest = read_manifest(prepared)
    bodies = {e.name: body_spread(ckpt.model, load_sample(prepared / e.file), manifest, ckpt.reference)
              for e in manifest.split("test")}  # fmt: skip
    names = list(bodies)
    folds = [names[0::2], names[1::2]]
    fields = list(bodies[names[0]][0])
    covered: dict[str, list[float]] = {k: [] for k in [*fields, "Cd"]}
    for fit, held in ((folds[0], folds[1]), (folds[1], folds[0])):
        cal = fit_calibration({k: [bodies[n][0][k] for n in fit] for k in fields},
                              {k: [bodies[n][1][k] for n in fit] for k in fields},
                              [bodies[n][2] for n in fit if bodies[n][2] is not None], draws=DRAWS)  # fmt: skip
        for n in held:
            errors, raws, forces = bodies[n]
            for k in fields:
                covered[k].append(float(np.mean(errors[k] <= cal.fields[k] * raws[k])))
            if forces is not None:  # two fitted bodies: Cd is uncalibrated (MIN_FORCE_BODIES), its raw spread counts
                covered["Cd"].append(float(forces[0] <= (cal.cd if cal.cd is not None else 1.0) * forces[1]))
    print(f"\n{run}: {len(names)} test bodies, {DRAWS} anchor draws, calibration cross-fitted ({folds[0]} / "
          f"{folds[1]})\n")  # fmt: skip
    print("| field | 90% interval coverage (held-out bodies) | Spearman(spread, abs error) per point | per body |")
    print("|---|---:|---:|---|")
    for k in fields:
        rho = [float(spearmanr(bodies[n][1][k], bodies[n][0][k]).statistic) for n in names]
        print(f"| {k} | {100 * np.mean(covered[k]):.0f}% | {np.mean(rho):.2f} | {', '.join(f'{r:.2f}' for r in rho)} |")
    forces = [bodies[n][2] for n in names if bodies[n][2] is not None]
    rho_cd = float(spearmanr([f[1] for f in forces], [f[0] for f in forces]).statistic)
    print(f"| Cd | {100 * np.mean(covered['Cd']):.0f}% of {len(covered['Cd'])} bodies | {rho_cd:.2f} over the "
          f"{len(forces)} bodies | " + ", ".join(f"{n}: error {f[0]:.4f}, spread {f[1]:.4f}" for n, f in
                                               zip(names, forces, strict=True)) + " |")  # fmt: skip
    latents = ckpt.latents or training_latents(ckpt.model, prepared, manifest, manifest.split("train"))
    if latents is not None:  # what Cd's standard deviation is scaled by when calibrated on 5+ validation bodies
        distance = {e.name: latent_distance(ckpt.model, load_sample(prepared / e.file), manifest, latents)
                    for e in manifest.split("test")}  # fmt: skip
        rho_latent = float(spearmanr([distance[n] for n in names], [bodies[n][2][0] for n in names]).statistic)
        print(f"| Cd, by the latent distance | (factor needs 5+ bodies) | {rho_latent:.2f} over the {len(names)} "
              "bodies | " + ", ".join(f"{n}: distance {distance[n]:.2f}" for n in names) + " |")  # fmt: skip

    case = data / accuracy.TEST[0]
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for draws in (0, DRAWS, 0, DRAWS):  # twice each, alternating: the second of each counts
            started = time.perf_counter()
            predict_geometry(ckpt, case / "surface.vtu", tmp, name=f"u{draws}", volume_mesh=case / "volume.vtu",
                             uncertainty=draws)  # fmt: skip
            seconds[draws] = time.perf_counter() - started
    print(f"\npredict_geometry of {case.name}'s CFD surface and volume (VTK, JSON, preview): without the spread "
          f"{seconds[0]:.1f} s, with {DRAWS} draws {seconds[DRAWS]:.1f} s ({seconds[DRAWS] / seconds[0]:.2f}x)")


if __name__ == "__main__":
    main()
