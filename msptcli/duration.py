"""Durations as users write them (``--time-limit 1h30m``, ``train.time_limit: 90s``) and as mspt prints them.

| form | examples -> seconds |
|---|---|
| a number of seconds | ``5400`` -> 5400, ``"90"`` -> 90 |
| h, m, s in that order, each optional | ``"90s"`` -> 90, ``"1.5h"`` -> 5400, ``"1h 30m 10s"`` -> 5410 |

The config stores the seconds (a number), so a saved config reads one way only. Nothing of mspt is imported.
"""

from __future__ import annotations

import math
import re

#: What a duration may look like, as said in every refusal.
FORMS = "seconds (5400) or hours, minutes, seconds with units h, m, s (90s, 30m, 1.5h, 1h30m)"

_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_SECONDS = re.compile(_NUMBER)
_UNITS = re.compile(rf"(?:{_NUMBER}h)?(?:{_NUMBER}m)?(?:{_NUMBER}s)?")


def parse_duration(value: object) -> float:
    """The seconds of ``value``: a positive number of seconds, or a text of the forms in :data:`FORMS`.

    Raises ``ValueError`` (one line: the accepted forms and the value) for anything else: no unit or an unknown
    one, units out of order, zero, negative, infinite, a bool.
    """
    seconds = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = re.sub(r"\s+", "", value.lower())
        units = _UNITS.fullmatch(text)
        if _SECONDS.fullmatch(text):
            seconds = float(text)
        elif units and text:
            hours, minutes, secs = (float(g) if g else 0.0 for g in units.groups())
            seconds = hours * 3600 + minutes * 60 + secs
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"expected a positive duration, {FORMS}; got {value!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """``5410`` -> ``"1h30m10s"``, ``1800`` -> ``"30m"``, ``2.5`` -> ``"2.5s"``: what :func:`parse_duration` reads
    back. Whole seconds from a minute on; below, to a tenth."""
    if seconds < 60:
        return f"{round(seconds, 1):g}s"
    total = round(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n) or "0s"
