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
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from msptcli.duration import format_duration
from msptcli.errors import MsptError

if TYPE_CHECKING:
    from msptcli.balltree import PatchReport
    from msptcli.prepare import PrepareReport
    from msptcli.rollout import Rollout
    from msptcli.train.report import TrainSummary

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

    def epoch(self, epoch: int, row: dict) -> None:
        parts = [f"epoch {epoch}", f"train {row['train_loss']:.4g}"]
        if "val_loss" in row:
            parts.append(f"val {row['val_loss']:.4g}")
        parts += [f"{k.removeprefix('val_rel_l2/')} {v:.3f}" for k, v in row.items() if k.startswith("val_rel_l2/")]
        if "val_cd_abs_error" in row:
            parts.append(f"|dCd| {row['val_cd_abs_error']:.4f}")
        self.bar.console.print("  ".join(parts), highlight=False)


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
