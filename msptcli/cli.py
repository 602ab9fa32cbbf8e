"""The ``mspt`` command line: a thin Typer layer over the library.

Each command parses its options, calls one library function and prints the
result. A user mistake (an :class:`~msptcli.errors.MsptError`) becomes one line
on stderr and exit code 1; Typer's own usage errors exit with 2.
"""

from __future__ import annotations

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
    threads: Threads = None,
) -> None:
    """Order a mesh's points by the ball tree and show the patches MSPT would use.

    Prints the build time, the patch sizes and how compact the patches are next
    to a random split; with --output, writes the mesh with the patch of every
    point (open it in ParaView and colour by `patch`).
    """
    from msptcli.treeview import patch_report, write_patch_mesh

    if level is not None and patch_size is not None:
        raise MsptError("give --level or --patch-size, not both")
    started = time.perf_counter()
    report = patch_report(mesh, level=level, patch_size=patch_size, num_threads=threads)
    written = write_patch_mesh(report, output=output, screenshot=screenshot)
    summary = report.summary
    table = Table(title=f"Ball-tree patches of {mesh.name}", show_header=False)
    table.add_row("points", f"{summary.num_points:,}")
    table.add_row("tree build", f"{report.build_seconds * 1e3:.1f} ms ({report.threads} threads)")
    table.add_row("level / patches K", f"{summary.level} / {summary.num_patches}")
    table.add_row("points per patch", f"{summary.min_size} to {summary.max_size}")
    table.add_row(
        "mean patch radius",
        f"{summary.mean_radius:.4g} (random split: {summary.random_radius:.4g}, "
        f"{summary.random_radius / max(summary.mean_radius, 1e-300):.1f}x larger)",
    )
    console.print(table)
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"done in {time.perf_counter() - started:.1f} s")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
