"""A dataset prepared in shards: ``mspt prepare --shard I/N`` on several machines, then ``--merge``.

Shard ``I`` of ``N`` (numbered from 1, as ``$SLURM_ARRAY_TASK_ID`` of ``#SBATCH --array=1-N``) prepares
the cases ``I, I+N, I+2N, ...`` (counted from 1) of the sorted case list into the shared dataset folder
and records what it did in ``DATA/shards/I-of-N.json`` (a :class:`ShardRecord`): no manifest. The merge
reads the ``N`` records and writes the manifest that one run over every case would have written.

``ShardRecord`` (JSON, one per shard):

===============  ====================================================================================
mspt_version     the mspt that prepared the shard (the merge refuses another version)
shard, count     ``I`` and ``N``
config           the whole config the shard ran with (the merge refuses another one)
cases            every case of the dataset, sorted: the shard's own are ``cases[I-1::N]``
prepared         case -> :class:`ShardCase`: ``written`` or ``reused``, the sample's metadata and, for a
                 steady dataset, the moments of its arrays (count, sum, sum of squares per component)
failed           ``[case, error]`` of the cases that failed under ``--on-error skip``, in case order
===============  ====================================================================================
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from msptcli import __version__
from msptcli.data.manifest import ArrayMoments
from msptcli.errors import DatasetError, InvalidInputError
from msptcli.io.atomic import atomic_output

SHARDS = "shards"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (1 to ``count``) of a dataset prepared in ``count`` shards."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def pick(self, names: list[str]) -> list[str]:
        """This shard's share of the sorted case ``names``: every ``count``-th, from the ``index``-th."""
        return names[self.index - 1 :: self.count]

    def record_path(self, out: Path) -> Path:
        return out / SHARDS / f"{self.index}-of-{self.count}.json"


def parse_shard(text: str) -> Shard:
    """``I/N`` (``--shard``) as a :class:`Shard`; :class:`InvalidInputError` (one line) unless 1 <= I <= N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if m is None:
        raise InvalidInputError(f"--shard {text}: expected I/N, this shard and the number of shards, e.g. --shard 1/4")
    index, count = int(m[1]), int(m[2])
    if count < 1:
        raise InvalidInputError(f"--shard {text}: the number of shards must be at least 1")
    if index == 0:
        raise InvalidInputError(
            f"--shard {text}: shards are numbered from 1 to {count} (as $SLURM_ARRAY_TASK_ID with --array=1-{count})"
        )
    if index > count:
        raise InvalidInputError(f"--shard {text}: there are {count} shards, numbered from 1 to {count}")
    return Shard(index, count)


class ShardCase(BaseModel):
    """A prepared case of a shard: what the merge needs of it without reading its sample."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    status: Literal["written", "reused"]
    meta: dict[str, Any]
    moments: dict[str, ArrayMoments] | None = None  # steady datasets; transient ones are summed from the samples


class ShardRecord(BaseModel):
    """What one shard did; see the module docstring."""

    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")

    mspt_version: str
    shard: int
    count: int
    config: dict[str, Any]
    cases: list[str]
    prepared: dict[str, ShardCase]
    failed: list[tuple[str, str]]

    @property
    def name(self) -> str:
        return f"{self.shard}/{self.count}"


def start_shard(out: Path, shard: Shard) -> None:
    """Before a shard writes: the dataset is no longer whole (its manifest goes), and the records of a
    sharding into another number of parts are stale. What concurrent shards remove is removed once."""
    (out / "manifest.json").unlink(missing_ok=True)
    for path in (out / SHARDS).glob("*-of-*.json"):
        if not path.name.endswith(f"-of-{shard.count}.json"):
            path.unlink(missing_ok=True)


def read_records(out: Path, *, config: dict[str, Any], names: list[str]) -> list[ShardRecord]:
    """The records of every shard of ``out``, in shard order, each checked against this merge: the same
    mspt version, ``config`` and case ``names``. :class:`DatasetError` (one line) for a missing shard (all
    of them named), records of two shardings, or a record that does not match."""
    folder = out / SHARDS
    paths = sorted(folder.glob("*-of-*.json")) if folder.is_dir() else []
    parsed = [(p, re.fullmatch(r"(\d+)-of-(\d+)\.json", p.name)) for p in paths]
    found = {(int(m[1]), int(m[2])): p for p, m in parsed if m}
    if not found:
        raise DatasetError(f"{out}: no shard records in {folder}; run `mspt prepare ... --shard I/N` first")
    counts = sorted({count for _, count in found})
    if len(counts) > 1:
        raise DatasetError(
            f"{folder}: records of {' and '.join(map(str, counts))} shards; remove the stale ones and merge again"
        )
    count = counts[0]
    missing = [f"{i}/{count}" for i in range(1, count + 1) if (i, count) not in found]
    if missing:
        which = f"shard {missing[0]} is" if len(missing) == 1 else f"shards {', '.join(missing)} are"
        raise DatasetError(
            f"{out}: {which} missing (no record in {folder}); run `mspt prepare ... --shard {missing[0]}` first"
        )
    paths = [found[(i, count)] for i in range(1, count + 1)]
    records = [_read(path) for path in paths]
    for path, record in zip(paths, records, strict=True):
        _check(path, record, config=config, names=names)
    return records


def write_record(record: ShardRecord, out: Path) -> Path:
    path = Shard(record.shard, record.count).record_path(out)
    with atomic_output(path) as tmp:
        tmp.write_text(record.model_dump_json(indent=1))
    return path


def new_record(shard: Shard, *, config: dict[str, Any], names: list[str]) -> ShardRecord:
    """An empty record of ``shard``: the cases it prepared and failed are added when it is done."""
    return ShardRecord(
        mspt_version=__version__,
        shard=shard.index,
        count=shard.count,
        config=config,
        cases=names,
        prepared={},
        failed=[],
    )


def _read(path: Path) -> ShardRecord:
    try:
        return ShardRecord.model_validate_json(path.read_text())
    except Exception as exc:
        raise DatasetError(
            f"{path}: not a valid shard record ({str(exc).splitlines()[0]}); prepare that shard again"
        ) from None


def _check(path: Path, record: ShardRecord, *, config: dict[str, Any], names: list[str]) -> None:
    again = f"prepare shard {record.name} again with the same inputs, -c and --set as the merge"
    if record.mspt_version != __version__:
        raise DatasetError(f"{path}: prepared by mspt {record.mspt_version}, not {__version__}; {again}")
    if record.config != config:
        key, theirs, ours = _first_difference(record.config, config)
        raise DatasetError(f"{path}: prepared with another config ({key}: {theirs} there, {ours} here); {again}")
    if record.cases != names:
        extra = sorted(set(record.cases) - set(names))
        lacking = sorted(set(names) - set(record.cases))
        what = f"{extra[0]} is not among the merge's cases" if extra else f"it lacks {lacking[0]}" if lacking else ""
        raise DatasetError(f"{path}: prepared from other cases ({what or 'another order'}); {again}")
    own = Shard(record.shard, record.count).pick(names)
    done = sorted([*record.prepared, *(name for name, _ in record.failed)])
    if done != sorted(own):
        raise DatasetError(f"{path}: records {len(done)} cases, not the shard's {len(own)}; {again}")


def _first_difference(a: Any, b: Any, key: str = "") -> tuple[str, str, str]:
    """(dotted key, a's value, b's value) of the first place where ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in [*a, *(k for k in b if k not in a)]:
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{key}.{k}" if key else str(k))
    return key or "config", json.dumps(a), json.dumps(b)
