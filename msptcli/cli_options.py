"""The options of the ``mspt`` commands that more than one command takes, declared once so that an option
reads the same everywhere, and the enums of their choices, derived from ``choices.py``'s Literals (the
config's fields are typed by the same Literals, so the two cannot drift apart).
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated, Any, get_args

import typer

from msptcli import choices


def _choices(name: str, values: Any) -> Any:
    """The str enum Typer shows as the choices of an option, made from one of ``choices.py``'s Literals."""
    return enum.Enum(name, [(v, v) for v in get_args(values)], type=str)


Device = _choices("Device", choices.Device)
ExportFormat = _choices("ExportFormat", choices.ExportFormat)
Freeze = _choices("Freeze", choices.Freeze)
OnError = _choices("OnError", choices.OnError)
Units = _choices("Units", choices.Units)


Threads = Annotated[
    int | None, typer.Option("--threads", min=1, help="CPU threads for the ball tree (default: all cores).")
]
ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config (data/model/train sections).")]
SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set", metavar="KEY=VALUE", help="Config override section.key=value, e.g. train.lr=3e-4 (repeatable)."
    ),
]
DeviceOption = Annotated[
    Device | None, typer.Option("--device", help="auto (a GPU when present), cpu, cuda or mps.", show_default=False)
]
RunArgument = Annotated[Path, typer.Argument(help="A run directory (its best checkpoint) or a checkpoint file.")]
PredictionsOption = Annotated[Path, typer.Option("--output", "-o", help="Directory for the predicted files.")]
StartOption = Annotated[
    int | None,
    typer.Option("--start", min=0, help="Rollout: the snapshot to start from (default: the first possible)."),
]
StepsOption = Annotated[
    int | None, typer.Option("--steps", min=1, help="Rollout: steps to roll out (default: to its end).")
]
ConditionOption = Annotated[
    list[str] | None,
    typer.Option(
        "--condition", metavar="KEY=VALUE", help="Rollout: a condition KEY=VALUE (e.g. Re=250), else from params."
    ),
]


def show_flags_as_flags() -> None:
    """Make ``--help`` show a boolean flag without a value and an argument by its metavar alone.

    Typer 0.2x prints a type column for every parameter, flags included (``--resume <bool>``, ``--help
    <bool>``), which reads as if the flag took a value, and an argument's Python type beside its metavar
    (``[KEY=VALUE]... <list[str]>``). Typer versions without that column are left as they are.
    """
    from typer import core

    option, argument = getattr(core, "TyperOption", None), getattr(core, "TyperArgument", None)
    for cls, hide in ((option, lambda p: getattr(p, "is_flag", False)), (argument, lambda p: p.metavar is not None)):
        shown = getattr(cls, "display_type_rich", None)
        if shown is None or getattr(shown, "_mspt", False):
            continue

        def display(self: Any, ctx: Any, _shown: Any = shown, _hide: Any = hide) -> str | None:
            return None if _hide(self) else _shown(self, ctx)

        display._mspt = True  # type: ignore[attr-defined]
        cls.display_type_rich = display  # type: ignore[union-attr]
