"""The run's record: ``metrics.csv`` (one row per epoch) and ``curves.png`` drawn from it."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from msptcli.io.atomic import atomic_output


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    """Add one epoch's row; columns are the union of every row's keys, in order of appearance."""
    rows = read_metrics(path)
    rows.append(row)
    _write(path, rows)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def truncate_metrics(path: Path, epoch: int) -> None:
    """Drop rows of epochs after ``epoch`` (written after the state a run resumes from was saved)."""
    if path.is_file():
        _write(path, [r for r in read_metrics(path) if int(float(r["epoch"])) <= epoch])


def _write(path: Path, rows: list[dict[str, Any]]) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_output(path) as tmp, tmp.open("w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


def plot_curves(metrics: Path, png: Path) -> Path | None:
    """Loss and validation curves from ``metrics.csv`` as a PNG (matplotlib, no display)."""
    rows = read_metrics(metrics)
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [float(r["epoch"]) for r in rows]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("train_loss", "val_loss"):
        ax1.plot(epochs, _column(rows, key), label=key)
    ax1.set_yscale("log")
    ax1.set_xlabel("epoch")
    ax1.set_title("loss (standardised MSE)")
    ax1.legend()
    for key in [k for k in rows[-1] if k.startswith("val_rel_l2/")]:
        ax2.plot(epochs, _column(rows, key), label=key.removeprefix("val_rel_l2/"))
    ax2.set_xlabel("epoch")
    ax2.set_title("validation relative L2 (physical units)")
    if ax2.lines:
        ax2.legend()
    fig.tight_layout()
    with atomic_output(png) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return png


def _column(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) if r.get(key) not in (None, "") else np.nan for r in rows]
