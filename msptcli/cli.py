"""The ``mspt`` command line: a thin Typer layer over the library.

Each command parses its options, calls one library function and prints the result. Beside it: the
options several commands share (``cli_options.py``), the tables, progress bars and error boundary
(``cli_output.py``), the options' text forms and rules (``options.py``). A user mistake (an
:class:`~msptcli.errors.MsptError`) is one line on stderr and exit code 1; usage errors exit with 2.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from msptcli import __version__
from msptcli.cli_options import (
    ConditionOption,
    ConfigOption,
    DeviceOption,
    ExportFormat,
    Freeze,
    OnError,
    PredictionsOption,
    RunArgument,
    SetOption,
    StartOption,
    StepsOption,
    Threads,
    Units,
    show_flags_as_flags,
)
from msptcli.cli_output import console, err_console, user_errors, warn_lines

show_flags_as_flags()
app = typer.Typer(
    name="mspt",
    help="Multi-Scale Patch Transformer surrogates for CFD: prepare, train, predict, roll out, export.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"mspt {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Multi-Scale Patch Transformer surrogates for CFD: prepare, train, predict, roll out, export."""


@app.command()
@user_errors
def balltree(
    mesh: Annotated[Path, typer.Argument(help="Mesh file: .vtu, .vtp, .vtk, .stl, .obj or .ply.")],
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the mesh with `patch` and `tree_rank` point arrays here."),
    ] = None,
    level: Annotated[
        int | None, typer.Option("--level", min=0, help="Tree depth of the patches: K = 2^level patches.")
    ] = None,
    patch_size: Annotated[
        int | None,
        typer.Option("--patch-size", min=1, help="Pick the depth whose patches hold about this many points."),
    ] = None,
    screenshot: Annotated[
        Path | None, typer.Option("--screenshot", help="Save a PNG of the mesh coloured by patch.")
    ] = None,
    adaptive: Annotated[
        bool,
        typer.Option(
            "--adaptive", help="Variance-adaptive patches (MATEY): the same budget of 2^level, small where fields vary."
        ),
    ] = False,
    refine: Annotated[
        int, typer.Option("--refine", min=1, max=8, help="With --adaptive: levels coarser and finer than --level.")
    ] = 1,
    adaptive_on: Annotated[
        str | None,
        typer.Option(
            "--adaptive-on",
            help="With --adaptive: comma-separated point arrays to refine on (default: all; normals if none).",
        ),
    ] = None,
    threads: Threads = None,
) -> None:
    """Order a mesh's points by the ball tree and show the patches MSPT would use.

    Prints the build time, the patch sizes and how compact the patches are next
    to a random split; with --output, writes the mesh with the patch of every
    point (open it in ParaView and colour by `patch` or `patch_size`). With
    --adaptive the patches are cut where the point arrays vary most and the PNG
    shows the points per patch.
    """
    from msptcli.balltree import patch_report, write_patch_mesh
    from msptcli.cli_output import balltree_table
    from msptcli.options import names

    started = time.perf_counter()
    report = patch_report(
        mesh,
        level=level,
        patch_size=patch_size,
        num_threads=threads,
        adaptive=adaptive,
        refine=refine,
        adaptive_on=names(adaptive_on) if adaptive_on else None,
    )
    written = write_patch_mesh(report, output=output, screenshot=screenshot)
    console.print(balltree_table(report, mesh))
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"done in {time.perf_counter() - started:.1f} s")


@app.command()
@user_errors
def prepare(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Case folders (each with surface.vtu, volume.vtu, params.json by default; docs/pipeline.md), "
            "OpenFOAM case folders, mesh files or quoted globs, e.g. \"examples/ahmed/case_*\".",
            metavar="CASE...",
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Dataset directory to write.")],
    config: ConfigOption = None,
    surface_fields: Annotated[
        str | None, typer.Option("--surface-fields", help="Comma-separated surface fields, e.g. p,wallShearStress.")
    ] = None,
    volume_fields: Annotated[
        str | None, typer.Option("--volume-fields", help="Comma-separated volume fields, e.g. U,p ('' for none).")
    ] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Cases prepared in parallel.")] = 1,
    on_error: Annotated[
        OnError, typer.Option("--on-error", help="fail: stop at the first bad case; skip: leave it out, report it.")
    ] = OnError.fail,
    overrides: SetOption = None,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            metavar="I/N",
            help="Prepare only shard I of N (I from 1 to N) into the shared -o, e.g. "
            "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT; then --merge (docs/distributed.md).",
        ),
    ] = None,
    merge: Annotated[
        bool,
        typer.Option("--merge", help="Write the manifest of the shards prepared in -o (the same CASE..., -c, --set)."),
    ] = False,
) -> None:
    """Read CFD results into a prepared dataset: fields, geometry features, split, statistics, tree order."""
    from msptcli.cli_output import prepare_table, progress_bar
    from msptcli.config import load_config
    from msptcli.data.shards import parse_shard
    from msptcli.errors import InvalidInputError
    from msptcli.options import names
    from msptcli.prepare import merge_shards, prepare_dataset

    if shard is not None and merge:
        raise InvalidInputError("--shard and --merge: give one; prepare every shard first, then merge")
    part = parse_shard(shard) if shard is not None else None
    values = {}
    if surface_fields is not None:
        values["data.surface_fields"] = names(surface_fields)
    if volume_fields is not None:
        values["data.volume_fields"] = names(volume_fields)
    cfg = load_config(config, overrides, values=values)
    with progress_bar("prepare", describe=True) as update:

        def advance(name: str, status: str) -> None:
            update(advance=1, description=f"{name}: {status}")

        try:
            if merge:
                report = merge_shards(inputs, output, config=cfg)
            else:
                report = prepare_dataset(
                    inputs, output, config=cfg, workers=workers, on_error=on_error.value, progress=advance, shard=part
                )
        except KeyboardInterrupt:
            done = f"interrupted: no dataset written; the samples finished in {output} are reused next time"
            err_console.print(done, highlight=False, soft_wrap=True)
            raise typer.Exit(130) from None
    if report.record is not None:
        counts = f"{len(report.written)} written, {len(report.reused)} reused, {len(report.failed)} failed"
        done = f"shard {part}: {counts}; recorded in {report.record}. When every shard is done: the same with --merge"
        console.print(done, highlight=False, soft_wrap=True)
    else:
        console.print(prepare_table(report, output))
    for name, error in report.failed:
        err_console.print(f"[yellow]skipped[/] {name}: {error}", highlight=False, soft_wrap=True)
    warn_lines(report.warnings)


@app.command()
@user_errors
def train(
    data_dir: Annotated[Path, typer.Argument(help="A dataset written by `mspt prepare`.")],
    positional_overrides: Annotated[
        list[str] | None,
        typer.Argument(help="Config overrides section.key=value, the same as --set.", metavar="[KEY=VALUE]..."),
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Run directory (checkpoints, metrics, plots).")] = Path(
        "runs/mspt"
    ),
    config: ConfigOption = None,
    overrides: SetOption = None,
    epochs: Annotated[int | None, typer.Option("--epochs", min=1, help="Number of epochs (train.epochs).")] = None,
    time_limit: Annotated[
        str | None,
        typer.Option(
            "--time-limit",
            help="Train for this long instead of --epochs: 90s, 30m, 1.5h, 1h30m or seconds (train.time_limit). "
            "The learning rate follows the elapsed share; --resume goes on with the time left.",
        ),
    ] = None,
    device: DeviceOption = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --output where it stopped.")] = False,
    init: Annotated[
        Path | None,
        typer.Option("--init", help="Fine-tune: start from this trained run directory or checkpoint (its network)."),
    ] = None,
    freeze: Annotated[
        Freeze | None,
        typer.Option("--freeze", help="With --init: keep these parameters as the parent's (train.freeze)."),
    ] = None,
    field_map: Annotated[
        str | None,
        typer.Option(
            "--field-map",
            help="With --init: NEW=OLD,... this dataset's field <- the parent's, e.g. surface/pMean=surface/p.",
        ),
    ] = None,
) -> None:
    """Train MSPT on a prepared dataset (GPU with bf16 when present), with checkpoints and validation.

    Without --config, the run's own config.yaml (with --resume) or the dataset's is used. With --init the
    network (the model: section) is the parent's, changed only by --set model.*=...; the fields'
    normalisation is this dataset's (docs/finetune.md).
    """
    from msptcli import options
    from msptcli.cli_output import TrainProgress, ctrl_c_stops, training_ended
    from msptcli.train.loop import train_model

    values: dict[str, object] = {"train.epochs": epochs, "train.device": device.value if device else None}
    if time_limit is not None:
        values["train.time_limit"] = options.time_limit(time_limit)
    cfg = options.train_config(
        data_dir,
        output,
        config_file=config,
        overrides=[*(positional_overrides or []), *(overrides or [])],
        values={k: v for k, v in values.items() if v is not None},
        resume=resume,
        init=init,
        freeze=freeze.value if freeze is not None else None,
        field_map=options.field_map(field_map) if field_map is not None else None,
    )
    with ctrl_c_stops() as should_stop, TrainProgress() as reporter:
        summary = train_model(data_dir, output, config=cfg, resume=resume, reporter=reporter, should_stop=should_stop)
    code = training_ended(summary, time_limit=cfg.train.time_limit, data_dir=data_dir, output=output)
    if code:
        raise typer.Exit(code)


@app.command()
@user_errors
def predict(
    run: RunArgument,
    geometry: Annotated[
        list[Path] | None,
        typer.Argument(help="New designs: STL/OBJ/PLY, a VTK surface or an OpenFOAM case (its body patches; steady "
                       "models).", metavar="[GEOMETRY]..."),
    ] = None,
    output: PredictionsOption = Path("predictions"),
    volume: Annotated[
        Path | None, typer.Option("--volume", help="Predict the volume fields on this volume mesh (or OpenFOAM case).")
    ] = None,
    volume_points: Annotated[
        int | None,
        typer.Option(
            "--volume-points",
            min=0,
            help="Else on N points uniform in a box around the body (0: none). Default: points placed "
            "around the body as in the training volume meshes.",
        ),
    ] = None,
    volume_grid: Annotated[
        str,
        typer.Option(
            "--volume-grid",
            metavar="NX,NY,NZ|auto|off",
            help="Also write the volume fields on a structured grid over the training volumes' extent "
            "(<name>_grid.vti, for ParaView's Slice, Contour, Stream Tracer; in the body vtkValidPointMask and "
            "the fields are 0). auto: about 200,000 points, cubic cells (it about doubles the time of predict). "
            "With --volume-points 0: the grid alone.",
        ),
    ] = "off",
    reference_area: Annotated[
        float | None, typer.Option("--reference-area", help="A_ref for Cd/Cl (> 0; default: the case's params, "
                                   "else data.reference_area, else the training bodies' median).")
    ] = None,
    reference_velocity: Annotated[
        float | None, typer.Option("--reference-velocity", help="U_ref for Cd/Cl (> 0; default: the training "
                                   "config's data.reference_velocity).")
    ] = None,
    density: Annotated[
        float | None, typer.Option("--density", help="rho for Cd/Cl (> 0; 1 for kinematic fields; default: the "
                                   "training config's data.density).")
    ] = None,
    units: Annotated[
        Units | None,
        typer.Option("--units", help="The geometry's length unit: its coordinates are converted to metres, the "
                     "training bodies' unit. The written meshes keep the input's coordinates.", show_default=False),
    ] = None,
    scale: Annotated[
        float | None,
        typer.Option("--scale", help="Multiply the geometry's coordinates by this (> 0) before predicting "
                     "(instead of --units).", show_default=False),
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Predict even a body whose size says its units are not the training "
                     "bodies' (its prediction is marked out of range)."),
    ] = False,
    uncertainty: Annotated[
        int,
        typer.Option("--uncertainty", min=0, help="Anchor draws whose spread gives every field a standard deviation "
                     "(<field>_std) and Cd/Cl theirs, calibrated on the validation bodies; 0 or 1: none (the "
                     "queries then cost a third)."),
    ] = 3,
    initial: Annotated[
        Path | None,
        typer.Option(
            "--initial", help="The same as `mspt rollout RUN SERIES`: roll a transient model out from SERIES."
        ),
    ] = None,
    start: StartOption = None,
    steps: StepsOption = None,
    conditions: ConditionOption = None,
    device: DeviceOption = None,
) -> None:
    """Predict the trained fields on new geometries: VTK, a PNG preview, drag/lift.

    For a transient model, `mspt predict RUN --initial SERIES` (with --start, --steps, --condition) is an
    alias of `mspt rollout RUN SERIES`.
    """
    from msptcli.checkpoint import load_checkpoint
    from msptcli.cli_output import progress_bar
    from msptcli.data.openfoam import refuse_output_in_case
    from msptcli.geometry.grid import parse_grid_size
    from msptcli.options import check_prediction, rolls_out
    from msptcli.predict import output_names, predict_geometry
    from msptcli.trust.check import unit_scale

    geometry = geometry or []
    if rolls_out(geometries=geometry, initial=initial, start=start, steps=steps, conditions=conditions or []):
        rollout(run, initial, output, start=start, steps=steps, conditions=conditions, device=device, force=force)  # type: ignore[arg-type]
        return
    check_prediction(geometries=geometry, volume=volume, volume_points=volume_points)
    refuse_output_in_case(output, [*geometry, *([volume] if volume else [])])  # before the first geometry's files
    grid = parse_grid_size(volume_grid)
    factor = unit_scale(None if units is None else units.value, scale)
    torch_device = _device(device)
    ckpt = load_checkpoint(run)
    warned: set[str] = set()  # a line about the checkpoint's forces is said once, not per geometry
    for g, name in zip(geometry, output_names(geometry, params_file=ckpt.config.data.params_file), strict=True):
        with progress_bar(f"predicting {g.name}", describe=True) as update:
            result = predict_geometry(
                ckpt,
                g,
                output,
                name=name,
                volume_mesh=volume,
                volume_points=volume_points,
                volume_grid=grid,
                reference_area=reference_area,
                reference_velocity=reference_velocity,
                density=density,
                device=torch_device,
                scale=factor,
                force=force,
                uncertainty=uncertainty,
                progress=lambda phase, done, total: update(completed=done, total=total, description=phase),
            )
        for f in result.files:
            console.print(f"wrote {f}")
        console.print(f"{result.points:,} points in {result.seconds:.1f} s ({result.points_per_second:,.0f} points/s)")
        if volume is None and grid is None and any(Path(f).name.endswith("_volume.vtu") for f in result.files):
            console.print("[dim]the volume fields are on points (ParaView: Point Gaussian); --volume-grid auto also "
                          "writes them on a grid for Slice, Contour and Stream Tracer[/]")  # fmt: skip
        console.print(_prediction_table(result, epoch=ckpt.epoch))
        _trust_notes(g, result.trust)
        warned = warn_lines(result.warnings, already=warned)


@app.command()
@user_errors
def rollout(
    run: RunArgument,
    series: Annotated[Path, typer.Argument(help="A series of the case: a .pvd, a case folder or numbered snapshots.")],
    output: PredictionsOption = Path("predictions"),
    start: StartOption = None,
    steps: StepsOption = None,
    conditions: ConditionOption = None,
    device: DeviceOption = None,
    force: Annotated[
        bool,
        typer.Option("--force", help="Roll out even a mesh whose size says its units are not the training "
                     "cases' (its rollout is marked out of range)."),
    ] = False,
) -> None:
    """Roll a transient model out from a snapshot of a series: a ParaView series, drag/lift, Strouhal number."""
    from msptcli.checkpoint import load_checkpoint
    from msptcli.cli_output import progress_bar, rollout_table
    from msptcli.options import conditions as parse_conditions
    from msptcli.rollout import rollout_series

    values = parse_conditions(conditions or [])
    torch_device = _device(device)
    ckpt = load_checkpoint(run)
    with progress_bar("rollout", total=steps) as update:
        result = rollout_series(
            ckpt, series, output, start=start, steps=steps, conditions=values, device=torch_device,
            progress=lambda done, total: update(completed=done, total=total), force=force,
        )  # fmt: skip
    for f in result.files:
        console.print(f"wrote {f}")
    if result.diverged_at is not None:
        err_console.print(f"[yellow]the rollout diverged at step {result.diverged_at}[/]: it stops before it")
    verdict = result.trust.get("verdict", "warn")
    colour = "yellow" if verdict == "warn" else "red"
    for note in result.trust.get("out_of_range", {}).values():
        err_console.print(f"[{colour}]{series}: {verdict}:[/] {note}")
    console.print(rollout_table(result, epoch=ckpt.epoch))


def _device(device: Any) -> Any:
    """The torch device of a ``--device`` option (auto when not given)."""
    from msptcli.device import pick_device

    return pick_device(device.value if device is not None else "auto")


def _prediction_table(result: Any, *, epoch: int) -> Table:
    c, s = result.coefficients, result.solver  # predict.Coefficients (None: no drag and lift), the params' values
    table = Table(title=f"{result.name} (checkpoint of epoch {epoch})")
    for col in ("", "predicted", "solver (saved fields)", "input's own fields"):
        table.add_column(col, justify="right")
    if c is not None:
        table.caption = f"Cd, Cl integrated on {c.integrated_on}" + (
            f"; ± one standard deviation over {c.uncertainty}" if c.uncertainty else "")
        rows = (("Cd", c.cd, c.cd_mesh, c.cd_true_fields), ("Cl", c.cl, c.cl_mesh, c.cl_true_fields))
        spread = {"Cd": c.cd_std, "Cl": c.cl_std}
        for label, value, _, true in rows:
            solver = s.get(f"{label}_fields")
            shown = "-" if true is None or c.refined else f"{true:.4f}"
            std = spread[label]
            value_text = f"{value:.4f}" if std is None else f"{value:.4f} ± {std:.4f}"
            table.add_row(label, value_text, "-" if solver is None else f"{solver:.4f}", shown)
        for label, _, on_mesh, true in rows if c.refined else ():  # the same quadrature as the input's own fields
            table.add_row(f"{label} (mesh points)", f"{on_mesh:.4f}", "", "-" if true is None else f"{true:.4f}")
        table.add_row("A_ref", f"{c.reference_area:.4g}", "", c.reference_area_source)
    for field_name, err in result.errors.items():
        table.add_row(f"rel. L2 {field_name}", f"{err:.3f}", "", "")
    t = result.trust
    if t is not None:
        table.add_row("trust", t.verdict, "", f"{t.percentile:.0f}th pct. of training bodies' distance")
    return table


def _trust_notes(geometry: Path, trust: Any) -> None:
    """One line per finding of the trust check (``trust.check.ShapeCheck``) on stderr, after the table."""
    if trust is None:
        err_console.print(f"[dim]{geometry}: not checked against the training bodies (the checkpoint has no record "
                          "of them)[/]")  # fmt: skip
        return
    colour = {"ok": "green", "warn": "yellow"}.get(trust.verdict, "red")
    if trust.units:
        err_console.print(f"[red]{geometry}: {trust.units.split(', or pass --force')[0]}[/] (predicted with --force)")
    for note in trust.notes():
        err_console.print(f"[{colour}]{geometry}: {trust.verdict}:[/] {note}")


@app.command()
@user_errors
def export(
    run: RunArgument,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write (.onnx or .pt).")],
    fmt: Annotated[
        ExportFormat,
        typer.Option("--format", help="onnx or torchscript; default: from the suffix (.pt or .ts: torchscript, else "
                     "onnx).", show_default=False),
    ] = None,  # type: ignore[assignment]
) -> None:
    """Export the model for deployment without mspt, and verify it in its own runtime."""
    from msptcli.export import export_run

    path, chosen, diff = export_run(run, output, fmt=fmt.value if fmt is not None else None)
    console.print(f"wrote {path} ({chosen}); verified in its runtime: max |difference| {diff:.2e}")


@app.command()
@user_errors
def info(
    path: Annotated[Path, typer.Argument(help="A run directory, a checkpoint file or a prepared dataset.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document instead of the table.")] = False,
) -> None:
    """Show what a run, a checkpoint or a dataset holds: data, network, best epoch and its metrics, device."""
    import json

    from msptcli.cli_output import checkpoint_table, dataset_table, run_table
    from msptcli.info import CheckpointInfo, RunInfo, describe, to_json

    found = describe(path)
    if as_json:
        typer.echo(json.dumps(to_json(found), indent=1))
    elif isinstance(found, RunInfo):
        console.print(run_table(found))
    elif isinstance(found, CheckpointInfo):
        console.print(checkpoint_table(found))
    else:
        console.print(dataset_table(found))


@app.command()
@user_errors
def inspect(
    inputs: Annotated[
        list[Path],
        typer.Argument(
            help="Mesh files (.vtu, .vtp, .vtk, .stl, .obj, .ply, ...) or case folders.", metavar="INPUT..."
        ),
    ],
    config: ConfigOption = None,
    overrides: SetOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document (a list of one object per mesh) instead.")
    ] = False,
) -> None:
    """Show what mesh files and case folders hold, and the config lines that would read them.

    For every mesh: points, cells and their types, bounds and size, every
    point and cell array (components, dtype, range, NaN/Inf count); for a
    surface, whether it is closed, its pieces, area, enclosed volume and which
    way its faces point. A case folder's surface, volume and params files are
    found as `mspt prepare` finds them (-c, --set). Then the arrays that look
    like pressure, wall shear and velocity as a data: section for a config,
    with notes (e.g. the density that the pressure's size suggests).
    """
    import json

    from msptcli.cli_output import inspection_output
    from msptcli.config import load_config
    from msptcli.inspect_mesh import inspect_inputs

    found = inspect_inputs(inputs, config=load_config(config, overrides))
    if as_json:
        typer.echo(json.dumps([entry for item in found for entry in item.to_json()], indent=1))
        return
    for item in found:
        for shown in inspection_output(item):
            console.print(shown, highlight=False)


@app.command(name="config")
@user_errors
def show_config(
    config: ConfigOption = None,
    overrides: SetOption = None,
    defaults: Annotated[
        bool, typer.Option("--defaults", help="Print every key at its default, described in comments, instead.")
    ] = False,
) -> None:
    """Print the effective configuration as YAML: the defaults, then -c CONFIG, then --set overrides.

    It is exactly the config.yaml that `mspt prepare` saves in the dataset.
    With --defaults: every section and key at its default, its description
    as a comment above it (a template that loads back as the defaults).
    """
    from msptcli.config import load_config
    from msptcli.config_text import config_template, config_yaml
    from msptcli.errors import OptionError

    if defaults and (config is not None or overrides):
        raise OptionError("--defaults prints the defaults alone: leave out -c and --set, or drop --defaults")
    typer.echo(config_template() if defaults else config_yaml(load_config(config, overrides)), nl=False)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
