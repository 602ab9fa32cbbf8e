"""The config as YAML text: the effective config as every output saves it, and the commented template of defaults.

``config_yaml`` is what ``mspt prepare`` writes to ``DATASET/config.yaml`` and ``mspt train`` to
``RUN/config.yaml`` (and ``mspt config`` prints). ``config_template`` is every section and key of
:class:`~msptcli.config.MsptConfig` at its default, each under its ``Field(description=...)`` (and its
choices) as a comment; an optional section that is off by default (``data.transient``, ``model.adaptive``,
...) is ``null`` with its keys' defaults commented out beneath it. Loaded back, the template is the defaults.
"""

from __future__ import annotations

import textwrap
import typing
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from msptcli.config import MsptConfig

WIDTH = 100  #: comment lines are wrapped at this many characters


def config_yaml(config: MsptConfig) -> str:
    """The full validated config as YAML, keys in the order of their definition."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def config_template() -> str:
    """Every key of the config at its default, described in YAML comments (see the module docstring)."""
    head = ("# mspt configuration: every key at its default. A config file needs only the keys it changes;\n"
            "# `--set section.key=value` overrides any of them on the command line (docs/config.md).\n")  # fmt: skip
    return head + "".join(_section(name, info, MsptConfig(), 0) for name, info in MsptConfig.model_fields.items())


def _section(name: str, info: FieldInfo, parent: BaseModel, depth: int) -> str:
    """The lines of key ``name`` of ``parent``: a nested section, or one ``key: value`` line, under its comment."""
    pad = "  " * depth
    value = getattr(parent, name)
    text = _comment(_describe(info), pad)
    model = _model_type(info.annotation)
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        return text + f"{pad}{name}:\n" + "".join(_section(k, f, value, depth + 1) for k, f in fields.items())
    text += f"{pad}{name}: {yaml_value(parent.model_dump(mode='json')[name])}\n"
    if model is not None and value is None:  # an optional section, off: its keys commented out beneath
        inner = "".join(_section(k, f, model(), depth + 1) for k, f in model.model_fields.items())
        text += _comment(f"{name}: (set this section instead of null to use it)", pad)
        text += "".join(f"{pad}# {line[len(pad) :]}\n" for line in inner.splitlines() if line.strip())
    return text


def _describe(info: FieldInfo) -> str:
    """The field's description, with its choices when it takes one of a few values."""
    parts = [info.description or ""]
    choices = [a for a in typing.get_args(info.annotation) if isinstance(a, str)]
    if typing.get_origin(info.annotation) is typing.Literal and choices:
        parts.append("one of: " + ", ".join(choices))
    return "; ".join(p for p in parts if p)


def _model_type(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model of an ``X`` or ``X | None`` annotation, else None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _comment(text: str, pad: str) -> str:
    if not text:
        return ""
    lines = textwrap.wrap(text, WIDTH - len(pad) - 2, break_on_hyphens=False, break_long_words=False)
    return "".join(f"{pad}# {line}\n" for line in lines)


def yaml_value(value: Any) -> str:
    """A value as one line of YAML (lists and mappings in flow style)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("...\n").strip()
