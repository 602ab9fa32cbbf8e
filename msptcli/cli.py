"""The ``mspt`` command line: a thin Typer layer over the library.

Each command parses its options, calls one library function and prints the
result. A user mistake (an :class:`~msptcli.errors.MsptError`) becomes one line
on stderr and exit code 1; Typer's own usage errors exit with 2.
"""

from __future__ import annotations

import enum
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from msptcli import __version__
from msptcli.errors import MsptError

app = typer.Typer(
    name="mspt",
    help="Multi-Scale Patch Transformer surrogates for CFD: prepare, train, predict, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


class Device(str, enum.Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class ExportFormat(str, enum.Enum):
    onnx = "onnx"
    torchscript = "torchscript"


class Freeze(str, enum.Enum):
    none = "none"
    attention = "attention"
    encoder = "encoder"


class OnError(str, enum.Enum):
    fail = "fail"
    skip = "skip"


def user_errors(fn: F) -> F:
    """Turn an ``MsptError`` raised by the library into one line on stderr and exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MsptError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


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
    """Multi-Scale Patch Transformer surrogates for CFD: prepare, train, predict, export."""


Threads = Annotated[
    int | None, typer.Option("--threads", min=1, help="CPU threads for the ball tree (default: all cores).")
]
ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (data/model/train sections).")]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Config override section.key=value, e.g. train.lr=3e-4 (repeatable)."),
]
DeviceOption = Annotated[
    Device | None, typer.Option("--device", help="auto (a GPU when present), cpu, cuda or mps.", show_default=False)
]


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

    started = time.perf_counter()
    report = patch_report(
        mesh,
        level=level,
        patch_size=patch_size,
        num_threads=threads,
        adaptive=adaptive,
        refine=refine,
        adaptive_on=_names(adaptive_on) if adaptive_on else None,
    )
    written = write_patch_mesh(report, output=output, screenshot=screenshot)
    summary = report.summary
    table = Table(title=f"Ball-tree patches of {mesh.name}", show_header=False)
    table.add_row("points", f"{summary.num_points:,}")
    table.add_row("tree build", f"{report.build_seconds * 1e3:.1f} ms ({report.threads} threads)")
    table.add_row("level / patches K", f"{summary.level} / {summary.num_patches}")
    table.add_row("points per patch", f"{summary.min_size} to {summary.max_size}")
    if report.adaptive:
        depths = report.cut.depth.tolist()
        table.add_row("adaptive on", ", ".join(report.adaptive_on))
        table.add_row("patches per depth", ", ".join(f"{m}: {depths.count(m)}" for m in sorted(set(depths))))
    table.add_row(
        "mean patch radius",
        f"{summary.mean_radius:.4g} (random split: {summary.random_radius:.4g}, "
        f"{summary.random_radius / max(summary.mean_radius, 1e-300):.1f}x larger)",
    )
    console.print(table)
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"done in {time.perf_counter() - started:.1f} s")


@app.command()
@user_errors
def prepare(
    inputs: Annotated[list[str], typer.Argument(help="Case folders, mesh files or globs.")],
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
) -> None:
    """Read CFD results into a prepared dataset: fields, geometry features, split, statistics, tree order."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from msptcli.config import load_config
    from msptcli.prepare import prepare_dataset

    values = {}
    if surface_fields is not None:
        values["data.surface_fields"] = _names(surface_fields)
    if volume_fields is not None:
        values["data.volume_fields"] = _names(volume_fields)
    cfg = load_config(config, overrides, values=values)
    columns = (
        TextColumn("prepare"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.description}"),
    )
    with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task("", total=None)

        def advance(name: str, status: str) -> None:
            bar.update(task, advance=1, description=f"{name}: {status}")

        report = prepare_dataset(inputs, output, config=cfg, workers=workers, on_error=on_error.value, progress=advance)
    m = report.manifest
    table = Table(title=f"Prepared {output}", show_header=False)
    table.add_row("cases", f"{len(report.written)} written, {len(report.reused)} reused, {len(report.failed)} failed")
    table.add_row("split", ", ".join(f"{s} {len(m.split(s))}" for s in ("train", "val", "test")))
    if m.kind == "transient":
        steps = sorted({s.num_steps for s in m.samples})
        dts = [s.dt for s in m.samples]
        table.add_row("series", f"{steps[0]}-{steps[-1]} snapshots per case, dt {min(dts):.4g}-{max(dts):.4g}")
        table.add_row("fields", ", ".join(f"{n} ({k})" for n, k in m.fields["volume"].items()))
        table.add_row("conditions", ", ".join(m.stats.conditions))
    else:
        for part, fields in m.fields.items():
            table.add_row(f"{part} fields", ", ".join(f"{n} ({k})" for n, k in fields.items()) or "none")
        table.add_row("surface fields at", m.surface_location)
    console.print(table)
    for name, error in report.failed:
        err_console.print(f"[yellow]skipped[/] {name}: {error}", highlight=False, soft_wrap=True)


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
    import signal

    from msptcli.config import load_config, train_config_file
    from msptcli.train.loop import train_model

    if init is not None and resume:
        raise MsptError("--init starts a new run from a trained network, --resume continues this run: give one")
    if init is None and (freeze is not None or field_map is not None):
        raise MsptError("--freeze and --field-map fine-tune a trained network: give --init RUN too")
    values: dict[str, object] = {}
    sections: dict[str, object] = {}
    if epochs is not None:
        values["train.epochs"] = epochs
    if device is not None:
        values["train.device"] = device.value
    if init is not None:
        from msptcli.checkpoint import load_checkpoint

        sections["model"] = load_checkpoint(init).config.model.model_dump(mode="json")
        values["train.init"] = str(init)
        values["train.freeze"] = (freeze or Freeze.none).value
        values["train.field_map"] = _field_map(field_map or "")
    if config is None:
        config = train_config_file(data_dir, output, resume=resume)
    cfg = load_config(config, [*(positional_overrides or []), *(overrides or [])], values=values, sections=sections)
    stop = {"asked": False}

    def ask_stop(signum: int, frame: object) -> None:
        stop["asked"] = True

    previous = signal.signal(signal.SIGINT, ask_stop)
    try:
        with _TrainProgress() as reporter:
            summary = train_model(
                data_dir, output, config=cfg, resume=resume, reporter=reporter, should_stop=lambda: stop["asked"]
            )
    finally:
        signal.signal(signal.SIGINT, previous)
    if not summary.main:  # under torchrun, rank 0 speaks for the run
        raise typer.Exit(130 if summary.interrupted else 0)
    if summary.interrupted:
        err_console.print(
            f"interrupted: checkpoint saved in {output}; continue with: mspt train {data_dir} -o {output} --resume"
        )
        raise typer.Exit(130)
    if summary.parent is not None:
        p = summary.parent
        kept = ", ".join(k if k == v else f"{k} <- {v}" for k, v in p["kept_fields"].items()) or "none"
        console.print(
            f"fine-tuned from {p['path']} (epoch {p['epoch']}): kept {kept}; new {', '.join(p['new_fields']) or 'none'}"
            f"; frozen {p['freeze']} ({p['frozen_parameters']:,} of "
            f"{p['frozen_parameters'] + p['trainable_parameters']:,} parameters)"
        )
    console.print(f"trained {summary.epochs_done} epochs: checkpoints in {output / 'checkpoints'}")
    console.print(f"metrics in {output / 'metrics.csv'}, curves in {output / 'curves.png'}")


@app.command()
@user_errors
def predict(
    run: Annotated[Path, typer.Argument(help="A run directory (its best checkpoint) or a checkpoint file.")],
    geometry: Annotated[
        list[Path] | None, typer.Argument(help="New designs: STL/OBJ/PLY or a VTK surface (steady models).")
    ] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory for the predicted files.")] = Path(
        "predictions"
    ),
    volume: Annotated[
        Path | None, typer.Option("--volume", help="Predict the volume fields on this volume mesh.")
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
    reference_area: Annotated[float | None, typer.Option("--reference-area", min=0, help="A_ref for Cd/Cl.")] = None,
    reference_velocity: Annotated[
        float | None, typer.Option("--reference-velocity", min=0, help="U_ref for Cd/Cl.")
    ] = None,
    density: Annotated[float | None, typer.Option("--density", min=0, help="rho (1 for kinematic fields).")] = None,
    initial: Annotated[
        Path | None,
        typer.Option(
            "--initial", help="Transient models: roll out from a snapshot of this series (.pvd or case folder)."
        ),
    ] = None,
    start: Annotated[
        int | None,
        typer.Option(
            "--start", min=0, help="With --initial: the snapshot to start from (default: the first possible)."
        ),
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, help="With --initial: steps to roll out (default: to its end).")
    ] = None,
    conditions: Annotated[
        list[str] | None,
        typer.Option("--condition", help="With --initial: a condition KEY=VALUE (e.g. Re=250), else from params."),
    ] = None,
    device: DeviceOption = None,
) -> None:
    """Predict the trained fields on new geometries (VTK, a PNG preview, drag/lift), or roll a transient model
    out from a snapshot of a series (--initial: a ParaView series, drag/lift histories, Strouhal number)."""
    from msptcli.checkpoint import load_checkpoint
    from msptcli.device import pick_device
    from msptcli.predict import output_names, predict_geometry

    if initial is not None:
        if geometry:
            raise MsptError("give geometries (steady models) or --initial (transient models), not both")
        _rollout(run, initial, output, start=start, steps=steps, conditions=conditions or [], device=device)
        return
    if not geometry:
        raise MsptError("give the geometries to predict on (or --initial SERIES for a transient model)")
    if start is not None or steps is not None or conditions:
        raise MsptError("--start, --steps and --condition belong to --initial (transient models)")
    if volume is not None and volume_points is not None:
        raise MsptError("give --volume or --volume-points, not both")
    if volume is not None and len(geometry) > 1:
        raise MsptError("--volume belongs to one geometry; predict one geometry at a time with it")
    torch_device = pick_device(device.value if device is not None else "auto")
    ckpt = load_checkpoint(run)
    for g, name in zip(geometry, output_names(geometry), strict=True):
        with err_console.status(f"predicting {g}"):
            result = predict_geometry(
                ckpt,
                g,
                output,
                name=name,
                volume_mesh=volume,
                volume_points=volume_points,
                reference_area=reference_area,
                reference_velocity=reference_velocity,
                density=density,
                device=torch_device,
            )
        for f in result.files:
            console.print(f"wrote {f}")
        console.print(_prediction_table(result, epoch=ckpt.epoch))


def _rollout(
    run: Path, initial: Path, output: Path, *, start: int | None, steps: int | None, conditions: list[str], device: Any
) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from msptcli.checkpoint import load_checkpoint
    from msptcli.device import pick_device
    from msptcli.rollout import rollout_series

    values = {}
    for item in conditions:
        key, sep, raw = item.partition("=")
        try:
            values[key.strip()] = float(raw)
        except ValueError:
            raise MsptError(f"--condition {item!r}: expected KEY=NUMBER, e.g. Re=250") from None
        if not sep or not key.strip():
            raise MsptError(f"--condition {item!r}: expected KEY=NUMBER, e.g. Re=250")
    torch_device = pick_device(device.value if device is not None else "auto")
    ckpt = load_checkpoint(run)
    columns = (TextColumn("rollout"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task("", total=steps)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        result = rollout_series(
            ckpt, initial, output, start=start, steps=steps, conditions=values, device=torch_device, progress=advance
        )
    for f in result.files:
        console.print(f"wrote {f}")
    if result.diverged_at is not None:
        err_console.print(f"[yellow]the rollout diverged at step {result.diverged_at}[/]: it stops before it")
    table = Table(
        title=f"{result.name}: {result.steps} steps from snapshot {result.start} (checkpoint of epoch {ckpt.epoch})"
    )
    for col in ("", "predicted", "series' fields", "solver"):
        table.add_column(col, justify="right")
    s = result.summary
    for key, label, fmt in (
        ("St", "Strouhal number", ".4f"),
        ("Cd_mean", "mean Cd", ".4f"),
        ("Cl_amp", "Cl amplitude", ".4f"),
    ):
        cells = [s.get(src, {}).get(key) for src in ("predicted", "fields", "solver")]
        table.add_row(label, *("-" if v is None or v != v else format(v, fmt) for v in cells))
    for name, errs in result.errors.items():
        known = [e for e in errs if e is not None]
        if known:
            table.add_row(f"rel. L2 {name}, step 1 / last", f"{known[0]:.4f} / {known[-1]:.4f}", "", "")
    table.caption = f"{result.seconds_per_step:.3f} s per step"
    console.print(table)


def _prediction_table(result: Any, *, epoch: int) -> Table:
    c, s = result.coefficients, result.solver
    table = Table(title=f"{result.name} (checkpoint of epoch {epoch})")
    for col in ("", "predicted", "solver (saved fields)", "input's own fields"):
        table.add_column(col, justify="right")
    refined = "refined" in c.get("integrated_on", "")
    if "integrated_on" in c:
        table.caption = f"Cd, Cl integrated on {c['integrated_on']}"
    for key, solver_key in (("cd", "Cd_fields"), ("cl", "Cl_fields")):
        if key in c:
            true = c.get(f"{key}_true_fields")
            table.add_row(
                key.capitalize(),
                f"{c[key]:.4f}",
                f"{s[solver_key]:.4f}" if solver_key in s else "-",
                "-" if true is None or refined else f"{true:.4f}",
            )
    for key in ("cd", "cl") if refined else ():  # the same quadrature as the input's own fields
        true = c.get(f"{key}_true_fields")
        table.add_row(
            f"{key.capitalize()} (mesh points)", f"{c[f'{key}_mesh']:.4f}", "", f"{true:.4f}" if true else "-"
        )
    if "reference_area" in c:
        table.add_row("A_ref", f"{c['reference_area']:.4g}", "", c["reference_area_source"])
    for field_name, err in result.errors.items():
        table.add_row(f"rel. L2 {field_name}", f"{err:.3f}", "", "")
    return table


@app.command()
@user_errors
def export(
    run: Annotated[Path, typer.Argument(help="A run directory (its best checkpoint) or a checkpoint file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write (.onnx or .pt).")],
    fmt: Annotated[ExportFormat, typer.Option("--format", help="onnx (default) or torchscript.")] = None,  # type: ignore[assignment]
) -> None:
    """Export the model for deployment without mspt, and verify it in its own runtime."""
    from msptcli.export import export_run

    path, chosen, diff = export_run(run, output, fmt=fmt.value if fmt is not None else None)
    console.print(f"wrote {path} ({chosen}); verified in its runtime: max |difference| {diff:.2e}")


class _TrainProgress:
    """A rich progress bar over all steps, with the loss, the learning rate and one line per epoch.

    The bar appears at ``start``, once the inputs are checked, so an error is the only output.
    """

    def __init__(self) -> None:
        self.bar: Any = None

    def __enter__(self) -> _TrainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def start(self, total_steps: int, done_steps: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        self.bar = Progress(*columns, TextColumn("{task.description}"), console=err_console)
        self.bar.__enter__()
        self.task = self.bar.add_task("", total=total_steps, completed=done_steps)

    def step(self, loss: float | None, lr: float) -> None:
        if loss is None:
            self.bar.update(self.task, advance=1)
        else:
            self.bar.update(self.task, advance=1, description=f"loss {loss:.4g} lr {lr:.2e}")

    def epoch(self, epoch: int, row: dict) -> None:
        parts = [f"epoch {epoch}", f"train {row['train_loss']:.4g}"]
        if "val_loss" in row:
            parts.append(f"val {row['val_loss']:.4g}")
        parts += [f"{k.removeprefix('val_rel_l2/')} {v:.3f}" for k, v in row.items() if k.startswith("val_rel_l2/")]
        if "val_cd_abs_error" in row:
            parts.append(f"|dCd| {row['val_cd_abs_error']:.4f}")
        self.bar.console.print("  ".join(parts), highlight=False)


def _field_map(text: str) -> dict[str, str]:
    """``NEW=OLD,...`` -> {NEW: OLD}; each side ``part/name`` (surface/p, volume/U)."""
    pairs: dict[str, str] = {}
    for item in _names(text):
        new, sep, old = item.partition("=")
        if not sep or not all("/" in k and k.split("/", 1)[0] in ("surface", "volume") for k in (new, old)):
            raise MsptError(f"--field-map {item!r}: expected NEW=OLD of part/name fields, e.g. surface/pm=surface/p")
        pairs[new.strip()] = old.strip()
    return pairs


def _names(csv_names: str) -> list[str]:
    """``"p, wallShearStress"`` -> ``["p", "wallShearStress"]``; ``""`` -> ``[]``."""
    return [n.strip() for n in csv_names.split(",") if n.strip()]


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
