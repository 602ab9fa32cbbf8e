"""A case's parameters: the JSON file of ``data.params_file`` beside its meshes (``data.cases.find_params``), read
and checked.

``mspt prepare`` (steady and transient cases), ``mspt predict`` (beside a geometry) and the
rollout (beside a series) read a case's params only through here, so they find the same file
and refuse the same bad file: a file that is not JSON, or not a JSON object, is one
:class:`~msptcli.errors.InvalidInputError` naming it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from msptcli.errors import InvalidInputError


def read_params(path: Path | None) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` for None.

    Raises:
        InvalidInputError: a file that cannot be read, is not JSON or holds no JSON object (naming it).
    """
    if path is None:
        return {}
    try:
        params = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(params, dict):
        raise InvalidInputError(f"{path}: expected a JSON object")
    return params


def positive_param(params: dict[str, Any], key: str | None, path: Path | None) -> float | None:
    """``params[key]`` as a float (a reference area), None where ``key`` is not set or not in ``params``.

    Raises:
        InvalidInputError: a value that is not a positive finite number (naming ``path`` and ``key``).
    """
    if not key or key not in params:
        return None
    value = params[key]
    if not is_number(value) or value <= 0:
        raise InvalidInputError(f"{path}: {key} must be a positive number, got {value}")
    return float(value)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool (JSON's numbers)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))
