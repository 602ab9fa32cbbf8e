"""What the commands' options mean beyond their types: their text forms, the combinations the commands
refuse, and the config a training run starts from.

Plain functions, so every rule is tested without Typer and a script builds a run's config the way
``mspt train`` does (``benchmarks/finetune.py``). Each refusal is one :class:`OptionError` line that
names the options. Importing this module loads neither torch nor the config: ``mspt balltree`` and
``mspt --help`` stay quick.

| function | reads | gives |
|---|---|---|
| ``names`` | ``"p, wallShearStress"`` (``--surface-fields``, ``--adaptive-on``) | ``["p", "wallShearStress"]`` |
| ``field_map`` | ``"surface/pm=surface/p,..."`` (``--field-map``) | ``{"surface/pm": "surface/p"}`` |
| ``conditions`` | ``["Re=250", ...]`` (``--condition``, repeatable) | ``{"Re": 250.0}`` |
| ``time_limit`` | ``"1h30m"`` (``--time-limit``; the forms of ``duration.py``) | ``5400.0`` (seconds) |
| ``check_fine_tuning`` | ``--init``, ``--resume``, ``--freeze``, ``--field-map`` (``mspt train``) | refuses a bad mix |
| ``rolls_out`` | geometries, ``--initial`` and the rollout options (``mspt predict``) | whether it is a rollout |
| ``check_prediction`` | geometries, ``--volume``, ``--volume-points`` (``mspt predict``) | refuses a bad mix |
| ``train_config`` | the config file, overrides, option values, the fine-tuning parent | the run's ``MsptConfig`` |
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from msptcli.choices import Freeze
from msptcli.duration import FORMS, parse_duration
from msptcli.errors import OptionError

if TYPE_CHECKING:
    from msptcli.config import MsptConfig

#: The parts a field belongs to, the ``part`` of ``part/name``.
PARTS = ("surface", "volume")


def names(text: str) -> list[str]:
    """``"p, wallShearStress"`` -> ``["p", "wallShearStress"]``; ``""`` -> ``[]``."""
    return [n.strip() for n in text.split(",") if n.strip()]


def field_map(text: str) -> dict[str, str]:
    """``"NEW=OLD,..."`` -> ``{NEW: OLD}``, each side a ``part/name`` field (``surface/p``, ``volume/U``)."""
    pairs: dict[str, str] = {}
    for item in names(text):
        new, sep, old = item.partition("=")
        if not sep or not all("/" in k and k.split("/", 1)[0] in PARTS for k in (new, old)):
            raise OptionError(f"--field-map {item!r}: expected NEW=OLD of part/name fields, e.g. surface/pm=surface/p")
        pairs[new.strip()] = old.strip()
    return pairs


def conditions(items: Sequence[str]) -> dict[str, float]:
    """``["Re=250", "dt=0.1"]`` -> ``{"Re": 250.0, "dt": 0.1}``; a later key replaces an earlier one."""
    values: dict[str, float] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        try:
            values[key.strip()] = float(raw)
        except ValueError:
            raise OptionError(f"--condition {item!r}: expected KEY=NUMBER, e.g. Re=250") from None
        if not sep or not key.strip():
            raise OptionError(f"--condition {item!r}: expected KEY=NUMBER, e.g. Re=250")
    return values


def time_limit(text: str) -> float:
    """``--time-limit``: ``"1h30m"`` -> ``5400.0`` seconds, ``"90"`` -> ``90.0``; a positive duration only."""
    try:
        return parse_duration(text)
    except ValueError:
        raise OptionError(f"--time-limit {text!r}: expected a positive duration, {FORMS}") from None


def check_fine_tuning(
    *, init: object | None, resume: bool, freeze: Freeze | None, field_map: Mapping[str, str] | None
) -> None:
    """``mspt train``: ``--init`` starts a new run, so not with ``--resume``; ``--freeze`` and ``--field-map``
    (given at all, even as ``none`` or empty) only with ``--init``."""
    if init is not None and resume:
        raise OptionError("--init starts a new run from a trained network, --resume continues this run: give one")
    if init is None and (freeze is not None or field_map is not None):
        raise OptionError("--freeze and --field-map fine-tune a trained network: give --init RUN too")


def rolls_out(
    *,
    geometries: Sequence[object],
    initial: object | None,
    start: int | None = None,
    steps: int | None = None,
    conditions: Sequence[str] = (),
) -> bool:
    """Whether ``mspt predict`` rolls a series out (``--initial``, the alias of ``mspt rollout``) rather than
    predicting on geometries; ``--start``, ``--steps`` and ``--condition`` belong to a rollout."""
    if initial is not None:
        if geometries:
            raise OptionError("give geometries (steady models) or --initial (transient models), not both")
        return True
    if not geometries:
        raise OptionError("give the geometries to predict on (a transient model: mspt rollout RUN SERIES)")
    if start is not None or steps is not None or conditions:
        raise OptionError("--start, --steps and --condition belong to --initial (transient models)")
    return False


def check_prediction(*, geometries: Sequence[object], volume: object | None, volume_points: int | None) -> None:
    """``mspt predict``: the volume is a mesh (``--volume``) or points (``--volume-points``), and a volume mesh
    belongs to one geometry."""
    if volume is not None and volume_points is not None:
        raise OptionError("give --volume or --volume-points, not both")
    if volume is not None and len(geometries) > 1:
        raise OptionError("--volume belongs to one geometry; predict one geometry at a time with it")


def train_config(
    data_dir: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    config_file: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    values: Mapping[str, Any] | None = None,
    resume: bool = False,
    init: str | os.PathLike[str] | None = None,
    freeze: Freeze | None = None,
    field_map: Mapping[str, str] | None = None,
) -> MsptConfig:
    """The config of a training run, as ``mspt train`` builds it.

    ``config_file``, else the run's own ``config.yaml`` (``resume``) or the dataset's (``train_config_file``);
    then the ``section.key=value`` ``overrides``, then ``values`` (dotted key -> typed value). Fine-tuning
    (``init``, a run directory or checkpoint): the ``model:`` section is the parent's, changed only by
    overrides, and ``train.init``, ``train.freeze`` (default ``none``) and ``train.field_map`` are set.
    """
    from msptcli.checkpoint import load_checkpoint  # torch: only when a run is configured
    from msptcli.config import load_config, train_config_file

    check_fine_tuning(init=init, resume=resume, freeze=freeze, field_map=field_map)
    merged = dict(values or {})
    sections: dict[str, Any] = {}
    if init is not None:
        sections["model"] = load_checkpoint(init).config.model.model_dump(mode="json")
        merged.update({"train.init": str(init), "train.freeze": freeze or "none", "train.field_map": field_map or {}})
    if config_file is None:
        config_file = train_config_file(data_dir, run_dir, resume=resume)
    return load_config(config_file, list(overrides), values=merged, sections=sections)
