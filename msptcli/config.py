"""The one validated configuration of mspt: data, model and training, with defaults.

A YAML file (``-c CONFIG``) holds any subset of it; ``section.key=value``
overrides on the command line come last. The full validated config is saved in
every prepared dataset, run directory and checkpoint, so a checkpoint alone is
enough to rebuild the model and its normalisation.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from msptcli.choices import Device, Freeze
from msptcli.duration import parse_duration
from msptcli.errors import ConfigError
from msptcli.geometry.axes import AXES_TOLERANCE, FLOW, UP, cosine, unit
from msptcli.model.config import ModelConfig
from msptcli.physics.force_notes import DEFAULT_REFERENCE_VELOCITY

#: Unknown keys are errors and numbers must be finite.
Strict = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class SplitConfig(BaseModel):
    """A deterministic train/val/test split: fractions with a seed, or explicit case names."""

    model_config = Strict

    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    train: list[str] | None = None
    val: list[str] | None = None
    test: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if any(f < 0 for f in self.fractions) or abs(sum(self.fractions) - 1) > 1e-6:
            raise ValueError(f"split fractions must be non-negative and add up to 1, got {self.fractions}")
        return self


class TransientConfig(BaseModel):
    """A transient dataset (``data.transient``): each case is a time series of snapshots on one fixed mesh.

    ``mspt train`` then learns the step ``fields(t) [+ history] -> fields(t + dt)`` and ``mspt rollout``
    rolls it out (docs/transient.md).
    """

    model_config = Strict

    series_file: str = Field(
        "series.pvd",
        description="glob, inside a case folder, of its series: a ParaView .pvd collection, or numbered snapshot "
        "files (e.g. 'fields_*.vtu', ordered by the last number in the name)",
    )
    fields: list[str] = Field(["U", "p"], min_length=1, description="point (or cell) fields of every snapshot")
    dt: float | None = Field(
        None, gt=0, description="snapshot spacing of numbered files that carry no TimeValue field data"
    )
    conditions: list[str] = Field(
        ["Re"],
        description="keys of the case's params (dotted, e.g. 'reference.nu') given to the model as inputs, "
        "besides the snapshot spacing dt, which always is",
    )
    history: int = Field(1, ge=0, le=8, description="previous steps' increments given to the model as inputs")
    derivatives: bool = Field(
        True,
        description="the mesh gradient and Laplacian of the current fields, times the local cell size h and h^2, "
        "and log h as inputs (least squares over the mesh edges): the stencil a step needs, which attention "
        "alone learns slowly",
    )
    advection: str | None = Field(
        "U",
        description="the velocity field (one of fields) along which each history increment "
        "f(t-j+1) - f(t-j) is carried for j dt (semi-Lagrangian) as inputs besides it: a wake's pattern of "
        "change moves downstream with the flow (geometry/transport.py); needs history >= 1 (the default is "
        "ignored with history 0 or without that field); null: off",
    )
    noise: float = Field(
        0.5,
        ge=0,
        description="training noise on the input fields, in units of each channel's one-step change; the target "
        "is the step from the noisy state (noise injection: rollouts recover from their own errors)",
    )
    noise_smoothing: int = Field(
        0,
        ge=0,
        le=1024,
        description="sweeps of neighbour averaging over the mesh edges that make the training noise spatially "
        "smooth (then rescaled to the same deviation); 0: independent at every point. Measured worse with 64 "
        "sweeps (docs/transient.md): independent noise teaches the step to damp a rollout's fine-scale errors",
    )
    pushforward: int = Field(
        1,
        ge=0,
        le=8,
        description="pushforward training: each training step's input state is the network's own rollout of a "
        "random 0..pushforward steps from the data (no gradient through it), so it learns to correct the errors "
        "it makes in a rollout; 0: every input comes from the data. Default 1: with the advection inputs it keeps "
        "rollouts bounded that drift without it (docs/transient.md)",
    )
    reference_length: float = Field(1.0, gt=0, description="L_ref of the 2D force coefficients (per unit depth)")
    viscosity: float | None = Field(None, gt=0, description="kinematic viscosity for the viscous forces")
    viscosity_key: str | None = Field(
        "reference.nu", description="key of the kinematic viscosity in the case's params (dotted)"
    )

    @model_validator(mode="after")
    def _check(self) -> TransientConfig:
        if self.advection is not None and "advection" in self.model_fields_set:  # set, not the default
            if self.advection not in self.fields:
                raise ValueError(f"advection {self.advection!r} must be one of the fields {self.fields}")
            if self.history == 0:
                raise ValueError("advection carries the history increments along the flow: it needs history >= 1")
        return self

    @property
    def advects(self) -> bool:
        """Whether a step's inputs carry the history increments along the flow (``advection``, history >= 1)."""
        return self.advection is not None and self.advection in self.fields and self.history > 0


#: Patches of a wind-tunnel or road domain, not of the body (``data.openfoam.domain_patches``).
DOMAIN_PATCHES = ["inlet*", "outlet*", "ground*", "road*", "floor*", "top*", "bottom*", "side*", "symmetry*",
                  "frontAndBack", "front", "back", "left", "right", "lowerWall", "upperWall", "farfield*",
                  "freestream*", "tunnel*", "domain*", "wall", "walls"]  # fmt: skip


class OpenFOAMConfig(BaseModel):
    """How a case given as an OpenFOAM case folder is read (``data.openfoam``; ``msptcli/data/openfoam.py``)."""

    model_config = Strict

    time: float | Literal["latest"] = Field(
        "latest", description="the time folder read: latest, or a time's value (e.g. 500); the latest of the "
        "reconstructed or decomposed times, whichever is later"
    )
    body_patches: list[str] | None = Field(
        None, min_length=1, description="glob patterns (case-insensitive) of the boundary patches that form the "
        "body's surface, merged into one; null: every patch of type wall not matched by domain_patches"
    )
    domain_patches: list[str] = Field(
        DOMAIN_PATCHES, description="glob patterns (case-insensitive) of the domain's own wall patches (ground, "
        "tunnel walls), left out of the body when body_patches is null"
    )
    fields_at: Literal["cells", "points"] = Field(
        "cells", description="cells: the solver's cell values (at cell and face centres); points: VTK's "
        "interpolation of them to the mesh points"
    )

    @field_validator("time", mode="before")
    @classmethod
    def _time(cls, value: Any) -> Any:
        if value == "latest":
            return value
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise ValueError(f"latest or a time's value such as 500, got {value!r}")
        return number


class DataConfig(BaseModel):
    """What ``mspt prepare`` reads from each case and which fields become targets.

    A case is a folder (or a single surface file). Inside a folder, the surface,
    volume and parameter files are found by glob patterns, so public datasets'
    layouts need configuration only (see docs/datasets.md).
    """

    model_config = Strict

    surface_file: str = Field("surface.vtu", description="glob, inside a case folder, of the surface mesh")
    volume_file: str | None = Field("volume.vtu", description="glob of the volume mesh; null: surface only")
    params_file: str | None = Field("params.json", description="glob of a JSON file of case parameters")
    surface_fields: list[str] = ["p", "wallShearStress"]
    volume_fields: list[str] = ["U", "p"]
    max_volume_points: int | None = Field(
        None, ge=1, description="keep a seeded random subset of at most this many volume points per case"
    )
    streaming: Literal["auto", "always", "never"] = Field(
        "auto",
        description="read only the volume subset of a .vtu/.vtp file, in bounded memory: auto when "
        "max_volume_points is set and the file is 256 MB or more; never: always read the whole file through VTK",
    )
    pressure_field: str | None = Field("p", description="surface field integrated into drag and lift")
    wall_shear_field: str | None = Field("wallShearStress", description="surface wall-shear field for drag")
    reference_area_key: str | None = Field("frontal_area", description="key of the reference area in params")
    reference_area: float | None = Field(None, gt=0, description="reference area when params do not give it")
    reference_velocity: float | None = Field(
        None,
        gt=0,
        description=f"U in q = 1/2 rho U^2 A_ref (m/s); null: {DEFAULT_REFERENCE_VELOCITY:g} m/s, which prepare and "
        "predict then say in one line",
    )
    density: float = Field(1.0, gt=0, description="1 for kinematic fields (p / rho)")
    flow_direction: tuple[float, float, float] = Field(
        FLOW,
        description="free-stream direction (normalised on load): drag is the force along it, a body's length its "
        "extent along it (steady cases; geometry/axes.py)",
    )
    up_direction: tuple[float, float, float] = Field(
        UP,
        description="up, at right angles to flow_direction (normalised on load): lift is the force along it, the "
        "side force along up x flow, a body's height its extent along it",
    )
    split: SplitConfig = SplitConfig()
    transient: TransientConfig | None = Field(
        None, description="time series of snapshots on a fixed mesh instead of steady cases (docs/transient.md)"
    )
    openfoam: OpenFOAMConfig = Field(
        OpenFOAMConfig(), description="OpenFOAM case folders given as cases: time, body patches (docs/pipeline.md)"
    )

    @field_validator("flow_direction", "up_direction", mode="before")
    @classmethod
    def _three(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or len(value) != 3:
            raise ValueError(f"a direction is a 3-vector such as [1, 0, 0], got {value!r}")
        return value

    @field_validator("flow_direction", "up_direction")
    @classmethod
    def _unit(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        return unit(value)

    @model_validator(mode="after")
    def _axes(self) -> DataConfig:
        cos = cosine(self.flow_direction, self.up_direction)
        if abs(cos) > AXES_TOLERANCE:
            flow, up = (_vector(v) for v in (self.flow_direction, self.up_direction))
            angle = math.degrees(math.acos(max(-1.0, min(1.0, cos))))
            raise ValueError(f"data.up_direction {up} is not at right angles to data.flow_direction {flow} "
                             f"({angle:.3g} degrees): give an up direction perpendicular to the flow")  # fmt: skip
        if self.transient is not None and (self.flow_direction != FLOW or self.up_direction != UP):
            raise ValueError("data.flow_direction, data.up_direction: a transient case's flow is along +x of its "
                             "plane (docs/transient.md); leave both out")  # fmt: skip
        return self

    @property
    def velocity(self) -> float:
        """U of Cd and Cl: ``reference_velocity``, else ``DEFAULT_REFERENCE_VELOCITY``."""
        return DEFAULT_REFERENCE_VELOCITY if self.reference_velocity is None else self.reference_velocity


class TrainConfig(BaseModel):
    """``mspt train``: optimisation, sampling and logging."""

    model_config = Strict

    epochs: int = Field(100, ge=1, description="epochs to train (with time_limit: only the warm-up's share)")
    time_limit: float | None = Field(
        None,
        description="train for this long instead (seconds, or a text such as 90s, 30m, 1.5h, 1h30m; saved as "
        "seconds): the run ends when the time is spent, however many epochs that is, and the learning-rate "
        "schedule follows the elapsed share of it; counted across --resume (docs/config.md)",
    )
    batch_size: int = Field(1, ge=1, description="samples per step")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    warmup_epochs: float = Field(5, ge=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1, description="cosine decay ends at lr * this")
    grad_clip: float | None = Field(1.0, gt=0)
    surface_points: int | None = Field(4096, ge=1, description="surface points drawn per sample and step")
    volume_points: int | None = Field(4096, ge=1, description="volume points drawn per sample and step")
    surface_weight: float = Field(1.0, ge=0)
    volume_weight: float = Field(1.0, ge=0)
    field_weights: dict[str, Annotated[float, Field(ge=0)]] = Field(
        default_factory=dict, description="per-field loss weight, default 1"
    )
    val_every: int = Field(5, ge=1, description="validate every this many epochs (and after the last)")
    val_points: int | None = Field(
        200_000, ge=1, description="validation during training on at most this many surface and as many volume "
        "points of each validation case (seeded, the same every epoch; null: whole meshes); the best checkpoint is "
        "validated on whole meshes at the end",
    )  # fmt: skip
    seed: int = 0
    device: Device = "auto"
    bf16: bool = Field(True, description="bf16 autocast on a GPU (ignored on the CPU)")
    compile: bool = Field(False, description="torch.compile the training forward pass (dynamic shapes)")
    num_workers: int | None = Field(
        None,
        ge=0,
        description="DataLoader worker processes; null: 1 where this process may use 2 cores or more and an "
        "epoch has at least 8 steps (the next sample is drawn while the step runs), else 0",
    )
    threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: all cores)")
    init: str | None = Field(
        None,
        description="fine-tuning: start from the network of this run directory or checkpoint (`mspt train --init`); "
        "the network config is the parent's (docs/finetune.md)",
    )
    freeze: Freeze = Field(
        "none",
        description="fine-tuning: parameters kept as the parent's. attention: every attention module (MATEY's "
        "frozen-attention fine-tuning; embeddings, MLPs, norms and head train); encoder: all but the final norm "
        "and the head",
    )
    field_map: dict[str, str] = Field(
        default_factory=dict,
        description="fine-tuning: this dataset's field <- the parent's, e.g. {'surface/pMean': 'surface/p'}; "
        "fields of the same part and name map by default, the others get new head rows",
    )

    @field_validator("time_limit", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> float | None:
        return None if value is None else parse_duration(value)

    @model_validator(mode="after")
    def _fine_tuning_needs_a_parent(self) -> TrainConfig:
        if self.init is None and (self.freeze != "none" or self.field_map):
            raise ValueError("train.freeze and train.field_map fine-tune a parent network: give train.init too")
        return self


class MsptConfig(BaseModel):
    """Everything mspt needs, saved with every output."""

    model_config = Strict

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    @model_validator(mode="before")
    @classmethod
    def _transient_runs_on_the_mesh(cls, data: Any) -> Any:
        """A transient step reads the current fields at every mesh point, so its network runs on the points:
        ``model.anchors`` defaults to null there (anchors asked for explicitly are an error), and
        ``train.volume_points`` to null (every step sees the whole mesh)."""
        if not isinstance(data, dict) or not isinstance(data.get("data"), dict) or not data["data"].get("transient"):
            return data
        train = data.get("train")
        if train is None or isinstance(train, dict):  # a step sees the whole mesh unless asked otherwise
            data = {**data, "train": {"volume_points": None, **(train or {})}}
        model = data.get("model")
        if model is None or isinstance(model, dict):
            model = dict(model or {})
            if model.get("anchors") is not None:
                raise ValueError(
                    "model.anchors: a transient step reads the current fields at every mesh point; set "
                    "model.anchors: null (the default of transient datasets)"
                )
            model["anchors"] = None
            data = {**data, "model": model}
        return data

    @model_validator(mode="after")
    def _time_attention_needs_a_history(self) -> MsptConfig:
        if self.model.time_axis == "attention":
            transient = self.data.transient
            if transient is None or transient.history < 1:
                what = "data.transient is not set" if transient is None else "data.transient.history is 0"
                raise ValueError(f"model.time_axis: attention attends over a transient step's history, but {what}")
        return self


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    *,
    values: dict[str, Any] | None = None,
    sections: dict[str, Any] | None = None,
) -> MsptConfig:
    """The defaults, updated by the YAML file ``path``, then by ``section.key=value`` overrides (text, parsed
    as YAML), then by ``values`` (dotted key -> value, already typed, e.g. from command-line options).
    ``sections`` replace whole sections of the file before the overrides (fine-tuning: the parent's ``model``).

    Raises :class:`ConfigError` with one line naming the bad key or value.
    """
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such config file")
        try:
            loaded = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"{p}: not a text file (a config is YAML in UTF-8)") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
        except OSError as exc:
            raise ConfigError(f"{p}: cannot be read ({exc.strerror or exc})") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: expected a mapping of sections (data, model, train)")
        data = loaded
    for section, value in (sections or {}).items():
        data[section] = value
    for item in overrides or []:
        key, value = _parse_override(item)
        _set(data, key, value, item)
    for key, value in (values or {}).items():
        _set(data, key, value, f"{key}={value}")
    return validate_config(data, source=str(path) if path else "config")


def validate_config(data: dict[str, Any], *, source: str = "config") -> MsptConfig:
    """Validate a plain dict (from a file, a checkpoint or a manifest) into an :class:`MsptConfig`."""
    try:
        return MsptConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            raise ConfigError(f"{source}: unknown key '{where}'") from None
        msg = err["msg"].removeprefix("Value error, ")
        where = "" if msg.startswith(f"{where}.") else f"{where}: "  # a message that names its own key in full
        raise ConfigError(f"{source}: {where}{msg}") from None


def train_config_file(
    data_dir: str | os.PathLike[str], run_dir: str | os.PathLike[str], *, resume: bool
) -> Path | None:
    """The config ``mspt train`` starts from when none is given: the run's own when resuming, else the
    one the dataset was prepared with, else none (the defaults)."""
    run_config, data_config = Path(run_dir) / "config.yaml", Path(data_dir) / "config.yaml"
    if resume and run_config.is_file():
        return run_config
    return data_config if data_config.is_file() else None


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep and item.strip().lower() in {"true", "false", "yes", "no", "on", "off"}:
        raise ConfigError(f"{item!r} is not an override section.key=value: flags such as --resume take no value, "
                          "drop it")  # fmt: skip
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form section.key=value")
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError:
        return key.strip(), raw


def _vector(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:.4g}" for v in values) + "]"


def _set(data: dict[str, Any], key: str, value: Any, item: str) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if child is None:  # an optional section left out (model.erwin: null): the override gives it
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value
