"""``mspt info PATH``: what a run directory, a checkpoint file or a prepared dataset holds.

Read from the records alone, never by building a network: a checkpoint's safetensors header (its metadata and
the weights' shapes, ``checkpoint.read_header``), a dataset's manifest, a run's ``metrics.csv`` and the numbers of
its training state. What a record does not hold (the device of a run trained before runs recorded it) is None,
which the CLI shows as "not recorded".

=================  ===========================================================================================
record             what it shows
=================  ===========================================================================================
CheckpointInfo     one checkpoint: its epoch and metrics row, fields, network and parameter count, force
                   reference, what it trained on and with (``TrainingRecord``), calibration, parent, versions
RunInfo            a run directory: its best checkpoint (a CheckpointInfo), the best epoch of ``metrics.csv``,
                   the last epoch, steps and time trained, the time limit
DatasetInfo        a prepared dataset: cases per split, fields and their statistics, reference values, config
=================  ===========================================================================================
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from msptcli.checkpoint import OLD_FORMATS, TEMPLATE_KEY, ParentRecord, TrainingRecord, read_header
from msptcli.data.manifest import MANIFEST, read_manifest
from msptcli.errors import CheckpointError, InvalidInputError
from msptcli.train.log import read_metrics
from msptcli.train.state import STATE, load_train_state
from msptcli.trust.uncertainty import Calibration

SPLITS = ("train", "val", "test")
#: The network's settings ``mspt info`` shows (with the backbone's own block), in this order.
MODEL_KEYS = ("width", "depth", "num_heads", "mlp_ratio", "patch_size", "num_patches", "num_supernodes", "anchors")


@dataclass(frozen=True)
class Reference:
    """What drag and lift are made dimensionless with: U_ref, rho and where A_ref comes from."""

    velocity: float
    density: float
    area: float | None  # data.reference_area: A_ref where a case's params give none
    area_key: str | None  # data.reference_area_key: A_ref's key in a case's params
    case_areas: list[float]  # the (training) cases' A_ref, read from their params

    @property
    def area_source(self) -> str:
        if self.case_areas:
            low, high = min(self.case_areas), max(self.case_areas)
            values = f"{low:.4g}" if low == high else f"{low:.4g} to {high:.4g}"
            return f"params key {self.area_key!r} of each case ({values})"
        if self.area is not None:
            return f"data.reference_area {self.area:.4g}"
        return "none (no drag or lift)"


@dataclass(frozen=True)
class NetworkInfo:
    backbone: str
    settings: dict[str, Any]  # MODEL_KEYS and the backbone's own block, as the checkpoint's network config has them
    parameters: int  # from the weights' shapes
    in_features: int
    out_features: int


@dataclass(frozen=True)
class CheckpointInfo:
    path: str
    format: str
    mspt_version: str
    epoch: int
    metrics: dict[str, Any]  # the metrics row it was saved with (the best checkpoint: its epoch's validation)
    fields: dict[str, dict[str, int]]  # part -> field -> components
    network: NetworkInfo
    reference: Reference
    time_limit: float | None  # train.time_limit, seconds
    training: TrainingRecord | None  # None: trained before runs recorded it
    calibration: Calibration | None
    parent: ParentRecord | None

    @property
    def validation(self) -> dict[str, float]:
        """The validation metrics of its epoch: ``val_loss``, ``val_rel_l2/<part>/<field>``, ``val_cd_abs_error``."""
        return {k: v for k, v in self.metrics.items() if k.startswith("val_") and isinstance(v, int | float)}


@dataclass(frozen=True)
class RunInfo:
    path: str
    best: CheckpointInfo | None  # checkpoints/best.safetensors (else last); None: no checkpoint yet
    best_epoch_in_metrics: int | None  # the row of metrics.csv with the lowest val_loss
    epochs_in_metrics: int  # rows of metrics.csv
    last_epoch: int | None  # whole epochs done, of checkpoints/last.safetensors
    steps_done: int | None  # of the training state (None: not recorded)
    seconds_trained: float | None
    time_limit: float | None


@dataclass(frozen=True)
class FieldInfo:
    components: int
    mean: list[float]  # per component, over the training split
    std: list[float]


@dataclass(frozen=True)
class DatasetInfo:
    path: str
    kind: str  # steady or transient
    mspt_version: str
    cases: dict[str, list[str]]  # split -> case names
    skipped: list[dict[str, str]]
    fields: dict[str, dict[str, FieldInfo]]  # part -> field -> components and statistics
    surface_location: str
    reference: Reference
    config: dict[str, Any]  # the config it was prepared with


AnyInfo = RunInfo | CheckpointInfo | DatasetInfo


def describe(path: str | os.PathLike[str]) -> AnyInfo:
    """What ``path`` holds: a run directory, a checkpoint file or a prepared dataset; :class:`InvalidInputError`
    (one line) for anything else, :class:`CheckpointError` or ``DatasetError`` for a broken one."""
    p = Path(path)
    if p.is_dir() and (p / MANIFEST).is_file():
        return dataset_info(p)
    if p.is_dir() and ((p / "checkpoints").is_dir() or (p / STATE).is_file()):
        return run_info(p)
    if p.is_file() and p.suffix == ".safetensors":
        return checkpoint_info(p)
    what = "is not" if p.exists() else "does not exist; expected"
    raise InvalidInputError(f"{p}: {what} a run directory (from `mspt train`), a checkpoint file (.safetensors) or "
                            f"a prepared dataset (a folder with {MANIFEST}, from `mspt prepare`)")  # fmt: skip


def to_json(info: AnyInfo) -> dict[str, Any]:
    """``info`` as one JSON object, what it describes under ``"type"`` (run, checkpoint, dataset); NaN and
    infinities become null."""
    what = {RunInfo: "run", CheckpointInfo: "checkpoint", DatasetInfo: "dataset"}[type(info)]
    return {"type": what, **_finite(asdict(info))}


def checkpoint_info(path: str | os.PathLike[str]) -> CheckpointInfo:
    """One checkpoint file, from its header (:func:`checkpoint.read_header`)."""
    p = Path(path)
    meta, shapes = read_header(p)
    try:
        net, config = json.loads(meta["model_config"]), json.loads(meta["config"])
        channels = json.loads(meta["channels"])
        ref = json.loads(meta["reference"])
        dropped = (lambda k: k.endswith("score.bias")) if meta["format"] in OLD_FORMATS else (lambda k: False)
        network = NetworkInfo(
            backbone=str(net.get("backbone", "mspt")),
            settings={k: net[k] for k in (*MODEL_KEYS, net.get("backbone", "mspt")) if net.get(k) is not None},
            parameters=sum(math.prod(s) for k, s in shapes.items() if k != TEMPLATE_KEY and not dropped(k)),
            in_features=int(meta.get("in_features", net.get("in_features", 0))),
            out_features=int(meta.get("out_features", net.get("out_features", 0))),
        )
        return CheckpointInfo(
            path=str(p),
            format=meta["format"],
            mspt_version=meta.get("mspt_version", "?"),
            epoch=int(meta["epoch"]),
            metrics=json.loads(meta.get("metrics", "{}")),
            fields={part: {str(n): int(k) for n, k in channels.get(part, [])} for part in ("surface", "volume")},
            network=network,
            reference=Reference(
                velocity=float(ref["velocity"]),
                density=float(ref["density"]),
                area=ref.get("reference_area"),
                area_key=ref.get("area_key"),
                case_areas=list(ref.get("training_reference_areas") or []),
            ),
            time_limit=config.get("train", {}).get("time_limit"),
            training=TrainingRecord.from_json(json.loads(meta["training"])) if "training" in meta else None,
            calibration=Calibration.from_json(json.loads(meta["calibration"])) if "calibration" in meta else None,
            parent=ParentRecord.from_json(json.loads(meta["parent"])) if "parent" in meta else None,
        )
    except Exception as exc:
        raise CheckpointError(f"{p}: inconsistent checkpoint metadata: {str(exc).splitlines()[0]}") from None


def run_info(run_dir: str | os.PathLike[str]) -> RunInfo:
    """A run directory: its best checkpoint, ``metrics.csv`` and the numbers of its training state."""
    run = Path(run_dir)
    ckpts = {name: run / "checkpoints" / f"{name}.safetensors" for name in ("best", "last")}
    best = next((checkpoint_info(f) for f in ckpts.values() if f.is_file()), None)
    last = int(read_header(ckpts["last"])[0]["epoch"]) if ckpts["last"].is_file() else None
    rows = read_metrics(run / "metrics.csv")
    scored = [(float(r["val_loss"]), int(float(r["epoch"]))) for r in rows if r.get("val_loss") not in (None, "")]
    state: dict[str, Any] = {}
    if (run / STATE).is_file():
        try:
            state = load_train_state(run / STATE, mmap=True)
        except CheckpointError:
            state = {}
    return RunInfo(
        path=str(run),
        best=best,
        best_epoch_in_metrics=min(scored)[1] if scored else None,  # the first of equal losses, as training keeps
        epochs_in_metrics=len(rows),
        last_epoch=last,
        steps_done=int(state["steps_done"]) if "steps_done" in state else None,
        seconds_trained=float(state["elapsed"]) if "elapsed" in state else None,
        time_limit=best.time_limit if best is not None else None,
    )


def dataset_info(data_dir: str | os.PathLike[str]) -> DatasetInfo:
    """A prepared dataset, from its manifest."""
    d = Path(data_dir)
    m = read_manifest(d)
    data = m.mspt_config.data
    stats = {"surface": m.stats.surface, "volume": m.stats.volume}
    return DatasetInfo(
        path=str(d),
        kind=m.kind,
        mspt_version=m.mspt_version,
        cases={split: [s.name for s in m.split(split)] for split in SPLITS},
        skipped=list(m.skipped),
        fields={
            part: {n: FieldInfo(k, list(stats[part][n].mean), list(stats[part][n].std)) for n, k in names.items()}
            for part, names in m.fields.items()
        },
        surface_location=m.surface_location,
        reference=Reference(
            velocity=data.velocity,
            density=data.density,
            area=data.reference_area,
            area_key=data.reference_area_key,
            case_areas=[s.reference_area for s in m.split("train") if s.reference_area],
        ),
        config=m.config,
    )


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
