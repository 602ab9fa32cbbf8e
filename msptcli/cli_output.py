"""The terminal side of the ``mspt`` commands, kept apart from the parsing in ``cli.py``: the consoles, the
error boundary (a user mistake is one line on stderr and exit code 1), progress bars, Ctrl-C during
training, and the result tables (rich). Results go to stdout, progress and warnings to stderr; a bar is
drawn only on a terminal, except training's, which also prints one line per epoch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from msptcli.duration import format_duration
from msptcli.errors import MsptError

if TYPE_CHECKING:
    from msptcli.balltree import PatchReport
    from msptcli.info import CheckpointInfo, DatasetInfo, Reference, RunInfo
    from msptcli.inspect_mesh import Inspection, MeshInfo
    from msptcli.prepare import PrepareReport
    from msptcli.rollout import Rollout
    from msptcli.train.report import TrainStart, TrainSummary

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


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


def warn_lines(lines: list[str], *, already: set[str] | None = None) -> set[str]:
    """Print each of ``lines`` not in ``already`` as a yellow warning on stderr; the lines said so far."""
    said = set(already or ())
    for line in lines:
        if line not in said:
            err_console.print(f"[yellow]warning:[/] {escape(line)}", highlight=False, soft_wrap=True)
            said.add(line)
    return said


@contextmanager
def progress_bar(label: str, *, total: int | None = None, describe: bool = False) -> Iterator[Callable[..., None]]:
    """A bar on stderr that disappears when done (drawn on a terminal only); yields ``update(**fields)`` of
    its one task (``advance``, ``completed``, ``total``, ``description`` shown when ``describe``)."""
    columns = [TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
    if describe:
        columns.append(TextColumn("{task.description}"))
    with Progress(*columns, console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        yield functools.partial(bar.update, bar.add_task("", total=total))


@contextmanager
def ctrl_c_stops() -> Iterator[Callable[[], bool]]:
    """While inside, Ctrl-C asks training to stop after its step (it saves a checkpoint); yields the question."""
    import signal

    asked: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: asked.append(signum))
    try:
        yield lambda: bool(asked)
    finally:
        signal.signal(signal.SIGINT, previous)


class TrainProgress:
    """A rich progress bar over all steps, with the loss, the learning rate and one line per epoch; with a time
    limit, over the time (counting down the time left, the steps beside it).

    The bar appears at ``start``, once the inputs are checked, so an error is the only output.
    """

    def __init__(self) -> None:
        self.bar: Any = None
        self.time_limit: float | None = None
        self.steps = 0

    def __enter__(self) -> TrainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def start(self, total_steps: int, done_steps: int, time_limit: float | None = None, elapsed: float = 0.0) -> None:
        self.time_limit, self.steps = time_limit, done_steps
        counts: tuple[Any, ...] = (MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
        total, done = float(total_steps), float(done_steps)
        if time_limit is not None:  # the bar counts the time down, the steps beside it
            counts = (TextColumn("{task.fields[left]} left, step {task.fields[steps]}"),)
            total, done = time_limit, elapsed
        columns = (TextColumn("train"), BarColumn(), *counts, TextColumn("{task.description}"))
        self.bar = Progress(*columns, console=err_console)
        self.bar.__enter__()
        self.task = self.bar.add_task("", total=total, completed=done, **self._time(elapsed))

    def step(self, loss: float | None, lr: float, elapsed: float = 0.0) -> None:
        self.steps += 1
        shown = {} if loss is None else {"description": f"loss {loss:.4g} lr {lr:.2e}"}
        if self.time_limit is None:
            self.bar.update(self.task, advance=1, **shown)
        else:
            self.bar.update(self.task, completed=min(elapsed, self.time_limit), **self._time(elapsed), **shown)

    def _time(self, elapsed: float) -> dict[str, Any]:
        """The time limit's columns: the time left and the steps done."""
        left = format_duration(max(0.0, self.time_limit - elapsed)) if self.time_limit is not None else ""
        return {"left": left, "steps": self.steps}

    def begin(self, start: TrainStart) -> None:
        """Before the bar: the device, precision and network, the cases and the points of a step."""
        processes = f", {start.processes} processes" if start.processes > 1 else ""
        trainable = f" ({start.trainable:,} trainable)" if start.trainable != start.parameters else ""
        cases = ", ".join(f"{start.cases.get(s, 0)} {s}" for s in ("train", "val", "test"))
        points = f"; {start.points_per_step:,} points per step" if start.points_per_step else ""
        err_console.print(f"training on {start.device}{processes}, {start.precision}; {start.parameters:,} parameters"
                          f"{trainable}", highlight=False, soft_wrap=True)  # fmt: skip
        err_console.print(f"cases: {cases} (held out){points}", highlight=False, soft_wrap=True)

    def epoch(self, epoch: int, row: dict) -> None:
        parts = [f"epoch {epoch}", f"train {row['train_loss']:.4g}", *validation_parts(row)]
        self.bar.console.print("  ".join(parts), highlight=False)


def validation_parts(row: dict[str, Any]) -> list[str]:
    """A metrics row's validation as short parts: ``val 0.123``, ``surface/p 0.231``, ``|dCd| 0.0123``."""
    parts = [f"val {row['val_loss']:.4g}"] if "val_loss" in row else []
    parts += [f"{k.removeprefix('val_rel_l2/')} {v:.3f}" for k, v in row.items() if k.startswith("val_rel_l2/")]
    if "val_cd_abs_error" in row:
        parts.append(f"|dCd| {row['val_cd_abs_error']:.4f}")
    return parts


def training_ended(summary: TrainSummary, *, time_limit: float | None, data_dir: Path, output: Path) -> int:
    """Say how ``mspt train`` ended (rank 0 under torchrun speaks for the run); its exit code."""
    if not summary.main:
        return 130 if summary.interrupted else 0
    again = f"mspt train {data_dir} -o {output} --resume"
    if summary.interrupted:
        err_console.print(f"interrupted: checkpoint saved in {output}; continue with: {again}")
        return 130
    limit = format_duration(time_limit or 0.0)
    if summary.already_spent:
        console.print(f"time limit {limit} already spent ({format_duration(summary.elapsed)} trained): nothing to "
                      f"train; to train on: {again} --time-limit LONGER", soft_wrap=True)  # fmt: skip
        return 0
    if summary.parent is not None:
        console.print(summary.parent.describe())
    if summary.time_up:
        console.print(f"time limit {limit} reached after {summary.steps_done} steps ({summary.epochs_done} whole "
                      f"epochs): checkpoints in {output / 'checkpoints'}")  # fmt: skip
    else:
        console.print(f"trained {summary.epochs_done} epochs: checkpoints in {output / 'checkpoints'}")
    console.print(f"metrics in {output / 'metrics.csv'}, curves in {output / 'curves.png'}")
    if summary.best_metrics and "val_loss" in summary.best_metrics:
        console.print(f"best epoch {summary.best_epoch}: {'  '.join(validation_parts(summary.best_metrics))}",
                      highlight=False, soft_wrap=True)  # fmt: skip
    c = summary.calibration
    if c is not None:
        factors = ", ".join(f"{k.split('/', 1)[1]} {v:.3g}" for k, v in c.fields.items())
        forces = f"; Cd {c.cd:.3g}" if c.cd is not None else ""
        forces += " times the design's latent distance" if c.cd is not None and c.forces_from == "latent" else ""
        console.print(f"uncertainty calibrated on {c.bodies} validation bodies ({c.draws} anchor draws): the 90% "
                      f"intervals are the draws' spread times {factors}{forces}", soft_wrap=True)  # fmt: skip
    return 0


def balltree_table(report: PatchReport, mesh: Path) -> Table:
    """The patches of ``mspt balltree``: sizes, build time, and how compact they are next to a random split."""
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
    return table


def prepare_table(report: PrepareReport, output: Path) -> Table:
    """The dataset ``mspt prepare`` wrote: cases, split, fields (or, transient, series and conditions)."""
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
    return table


def rollout_table(result: Rollout, *, epoch: int) -> Table:
    """A rollout's shedding summary (predicted, from the series' fields, the solver's) and its field errors."""
    table = Table(
        title=f"{result.name}: {result.steps} steps from snapshot {result.start} (checkpoint of epoch {epoch})"
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
    return table


NOT_RECORDED = "not recorded"
#: The validation metrics ``mspt info`` shows, by their ``metrics.csv`` names.
METRIC_LABELS = {"val_loss": "val loss", "val_cd_abs_error": "|dCd|", "val_cl_abs_error": "|dCl|"}


def run_table(info: RunInfo) -> Table:
    """``mspt info RUN_DIR``: its best checkpoint, the epochs, steps and time it trained."""
    table = Table(title=f"Run {info.path}", show_header=False)
    ckpt = info.best
    if ckpt is None:
        table.add_row("checkpoints", "none yet")
    else:
        _trained_rows(table, ckpt)
        csv = f"; metrics.csv: epoch {info.best_epoch_in_metrics}" if info.best_epoch_in_metrics is not None else ""
        table.add_row("best epoch", f"{ckpt.epoch} ({Path(ckpt.path).name}{csv})")
        _metric_rows(table, ckpt.metrics)
    last = NOT_RECORDED if info.last_epoch is None else f"{info.last_epoch} whole epochs"
    steps = NOT_RECORDED if info.steps_done is None else f"{info.steps_done:,}"
    table.add_row("last epoch, steps", f"{last}, {steps} steps ({info.epochs_in_metrics} rows in metrics.csv)")
    trained = NOT_RECORDED if info.seconds_trained is None else format_duration(info.seconds_trained)
    limit = "none" if info.time_limit is None else format_duration(info.time_limit)
    table.add_row("time trained", f"{trained} (time limit: {limit})")
    if ckpt is not None:
        _model_rows(table, ckpt)
    return table


def checkpoint_table(info: CheckpointInfo) -> Table:
    """``mspt info CHECKPOINT``: what one checkpoint file holds."""
    table = Table(title=f"Checkpoint {info.path}", show_header=False)
    _trained_rows(table, info)
    table.add_row("epoch", str(info.epoch))
    _metric_rows(table, info.metrics)
    _model_rows(table, info)
    return table


def dataset_table(info: DatasetInfo) -> Table:
    """``mspt info DATA_DIR``: a prepared dataset's cases, fields and their statistics, reference values."""
    table = Table(title=f"Dataset {info.path} ({info.kind})", show_header=False)
    table.add_row("cases", ", ".join(f"{len(names)} {split}" for split, names in info.cases.items())
                  + (f"; {len(info.skipped)} skipped" if info.skipped else ""))  # fmt: skip
    for split, names in info.cases.items():
        if names:
            table.add_row(f"  {split}", ", ".join(names))
    for part, fields in info.fields.items():
        for name, f in fields.items():
            table.add_row(f"{part} {name} ({f.components})", f"mean {_numbers(f.mean)}, std {_numbers(f.std)}")
    table.add_row("surface fields at", info.surface_location)
    table.add_row("reference", _reference(info.reference))
    config = Path(info.path) / "config.yaml"
    shown = config if config.is_file() else "in manifest.json"
    table.add_row("prepared with", f"mspt {info.mspt_version}; config {shown}")
    return table


def _trained_rows(table: Table, ckpt: CheckpointInfo) -> None:
    """What a checkpoint was trained on: the dataset, its cases and the fields."""
    record = ckpt.training
    table.add_row("trained on", NOT_RECORDED if record is None else record.dataset)
    if record is not None:
        table.add_row("cases", ", ".join(f"{n} {split}" for split, n in record.cases.items()))
    table.add_row("fields", "; ".join(f"{part} " + ", ".join(f"{n} ({k})" for n, k in names.items())
                                      for part, names in ckpt.fields.items() if names))  # fmt: skip


def _metric_rows(table: Table, metrics: dict[str, Any]) -> None:
    """The validation metrics of a checkpoint's metrics row, one row each: the loss, the fields, the forces."""
    fields = sorted(k for k in metrics if k.startswith("val_rel_l2/"))
    shown = [k for k in ("val_loss", *fields, "val_cd_abs_error", "val_cl_abs_error") if k in metrics]
    for key in shown:
        label = METRIC_LABELS.get(key) or f"rel. L2 {key.removeprefix('val_rel_l2/')}"
        value = metrics[key]
        table.add_row(f"  {label}", f"{value:.4g}" if isinstance(value, int | float) else "-")
    if not metrics:
        table.add_row("  validation", "not in this checkpoint (the last one keeps none; see metrics.csv)")
    elif not shown:
        table.add_row("  validation", "none (no validation split)")


def _model_rows(table: Table, ckpt: CheckpointInfo) -> None:
    """The network, the force reference, device and precision, calibration, parent and versions."""
    net = ckpt.network
    settings = ", ".join(f"{k} {_setting(v)}" for k, v in net.settings.items())
    table.add_row("network", f"{net.backbone}: {settings}")
    table.add_row("parameters", f"{net.parameters:,} ({net.in_features} inputs, {net.out_features} outputs a point)")
    table.add_row("reference", _reference(ckpt.reference))
    record = ckpt.training
    if record is None:
        table.add_row("device, precision", NOT_RECORDED)
    else:
        processes = f" x {record.processes} processes" if record.processes > 1 else ""
        table.add_row("device, precision", f"{record.device}{processes}, {record.precision}")
    c = ckpt.calibration
    if c is not None:
        factors = ", ".join(f"{k} {v:.3g}" for k, v in c.fields.items())
        forces = "" if c.cd is None else f"; Cd {c.cd:.3g} ({c.forces_from})"
        table.add_row("uncertainty", f"{c.draws} draws on {c.bodies} validation bodies: {factors}{forces}")
    else:
        table.add_row("uncertainty", "not calibrated")
    table.add_row("parent", "none (trained from scratch)" if ckpt.parent is None else ckpt.parent.describe())
    torch = NOT_RECORDED if record is None else record.torch
    table.add_row("versions", f"mspt {ckpt.mspt_version} ({ckpt.format}), torch {torch}")


def _reference(ref: Reference) -> str:
    return f"U_ref {ref.velocity:.4g}, rho {ref.density:.4g}; A_ref from {ref.area_source}"


def _setting(value: Any) -> str:
    """A network setting in a table cell: a block of settings as ``(key value, ...)`` without its nulls."""
    if isinstance(value, dict):
        return "(" + ", ".join(f"{k} {_setting(v)}" for k, v in value.items() if v is not None) + ")"
    return str(value)


def _numbers(values: list[float]) -> str:
    text = ", ".join(f"{v:.4g}" for v in values)
    return text if len(values) == 1 else f"[{text}]"


def inspection_output(found: Inspection) -> list[Any]:
    """``mspt inspect``: a table per mesh of the input (its size, cells, bounds, surface; its arrays), then the
    suggested config lines and the notes behind them."""
    shown: list[Any] = []
    for role, mesh in found.meshes.items():
        title = f"{mesh.path}" + (f" ({role} of {found.case})" if found.case else "")
        shown += [_mesh_table(mesh, title)] + ([_arrays_table(mesh)] if mesh.arrays else [])
    if found.params is not None:
        shown.append(f"params: {found.params}")
    text = found.suggestion.yaml()
    if text:
        shown.append(Text("suggested config:\n" + text.rstrip("\n")))
    shown += [Text(f"note: {note}") for note in found.suggestion.notes]
    return shown


def _mesh_table(mesh: MeshInfo, title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_row("mesh", f"{mesh.dataset}, {mesh.kind}")
    table.add_row("points / cells", f"{mesh.points:,} / {mesh.cells:,}")
    table.add_row("cell types", ", ".join(f"{name} {count:,}" for name, count in mesh.cell_types.items()) or "none")
    b = mesh.bounds
    table.add_row("bounds", f"x {b[0]:.4g} to {b[1]:.4g}, y {b[2]:.4g} to {b[3]:.4g}, z {b[4]:.4g} to {b[5]:.4g}")
    table.add_row("length x width x height", " x ".join(f"{v:.4g}" for v in mesh.extent))
    table.add_row("size", f"{_bytes(mesh.file_bytes)} on disk, about {_bytes(mesh.memory_bytes)} in memory")
    if not mesh.arrays:
        table.add_row("arrays", "none")
    if mesh.surface_problem is not None:
        table.add_row("surface", f"not analysed: {mesh.surface_problem}")
    if mesh.surface is not None:
        c = mesh.surface.closure
        edges = f"no: {c.boundary_edges:,} boundary edges, {c.non_manifold_edges:,} non-manifold edges"
        table.add_row("closed", "yes" if c.closed else edges)
        table.add_row("regions", str(c.regions))
        table.add_row("area", f"{c.area:.6g}")
        if c.enclosed_volume is not None:
            table.add_row("enclosed volume", f"{c.enclosed_volume:.6g}")
        table.add_row("vertex order", f"{c.orientation} (the file's face normals; mspt turns every face outward)")
        normals = mesh.surface.normals
        table.add_row("normals arrays", ", ".join(f"{k} ({100 * v:.1f}% outward)" for k, v in normals.items())
                      or "none")  # fmt: skip
        if mesh.surface.skipped_cells:
            table.add_row("left out", f"{mesh.surface.skipped_cells:,} cells that are not faces (lines, vertices)")
    return table


def _arrays_table(mesh: MeshInfo) -> Table:
    """Every array of a mesh; a vector's row is of its magnitude, with a row for each component's range below."""
    table = Table(title=f"{len(mesh.arrays)} arrays", title_justify="left",
                  caption="a vector: its magnitude, then each component [i]", caption_justify="left")  # fmt: skip
    for column in ("array", "at", "dtype", "min", "max", "median", "NaN/Inf"):
        table.add_column(column, justify="left" if column in ("array", "at", "dtype") else "right", no_wrap=True)
    for a in mesh.arrays:
        dtype = a.dtype + (f" x{a.components}" if a.is_vector else "")
        name = f"|{a.name}|" if a.is_vector else a.name
        table.add_row(name, a.location, dtype, _number(a.min), _number(a.max), _number(a.median),
                      str(a.nonfinite) if a.nonfinite else "")  # fmt: skip
        for i, (low, high) in enumerate(zip(a.component_min or [], a.component_max or [], strict=True)):
            table.add_row(f"  [{i}]", "", "", _number(low), _number(high), "", "")
    return table


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"
