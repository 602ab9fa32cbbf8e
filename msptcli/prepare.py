"""``mspt prepare``: mesh files in, a prepared dataset out (one sample file per case + manifest).

Cases are processed in parallel worker processes. Every file is written under
a temporary name and renamed, and the manifest comes last, so an interrupted
run leaves either finished samples (reused on the next run) or nothing.

Ctrl-C (SIGINT) raises ``KeyboardInterrupt`` from :func:`prepare_dataset` whenever it comes before
the manifest is complete, and then no manifest is left: the workers ignore SIGINT and are ended by
the parent (no worker prints a trace), and the parent remembers the signal, so that one whose
``KeyboardInterrupt`` Python swallowed (raised inside a ``__del__``) still stops the run.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import glob
import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from msptcli.choices import OnError
from msptcli.config import DataConfig, MsptConfig
from msptcli.config_text import config_yaml
from msptcli.data.cases import CaseFiles, find_cases
from msptcli.data.manifest import (
    ArrayMoments,
    Manifest,
    SampleEntry,
    Stats,
    assign_split,
    compute_stats,
    new_manifest,
    sample_moments,
    stats_from_moments,
    write_manifest,
)
from msptcli.data.openfoam import refuse_output_in_case
from msptcli.data.prepare_case import case_fingerprint, prepare_case
from msptcli.data.prepare_series import prepare_series_case, series_fingerprint
from msptcli.data.sample import load_sample, read_sample_meta, save_sample
from msptcli.data.shards import Shard, ShardCase, ShardRecord, new_record, read_records, start_shard, write_record
from msptcli.data.transient import series_stats
from msptcli.errors import DatasetError, InvalidInputError, MsptError, OutputError
from msptcli.io.atomic import atomic_output, make_dirs
from msptcli.io.guard import check_outputs
from msptcli.physics.force_notes import force_notes, missing_area_note

SAMPLES = "samples"


@dataclass
class PrepareReport:
    """What a prepare run did (a shard's: no manifest, its record)."""

    manifest: Manifest
    record: Path | None = None  # ``--shard``: DATA/shards/I-of-N.json
    written: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # where drag and lift rest on a default or are missing


#: Called after each case with (case name, "written" | "reused" | "failed").
Progress = Callable[[str, str], None]


def prepare_dataset(
    inputs: Sequence[str],
    out_dir: str | os.PathLike[str],
    *,
    config: MsptConfig,
    workers: int = 1,
    on_error: OnError = "fail",
    progress: Progress | None = None,
    shard: Shard | None = None,
) -> PrepareReport:
    """Prepare every case of ``inputs`` into ``out_dir``; see the module docstring.

    Raises the case's :class:`MsptError` (one line naming the file) on the first
    bad case with ``on_error="fail"``; with ``"skip"`` the case is left out and
    reported in ``PrepareReport.failed`` and the manifest. An output that cannot be
    written (:class:`OutputError`: a full disk) is no bad case and always stops the run.

    With ``shard``, only that shard's cases, and a shard record instead of the manifest
    (``data/shards.py``; :func:`merge_shards` writes the manifest); other shards may write
    into ``out_dir`` at the same time.
    """
    cases = find_cases(inputs, config.data)
    out = Path(out_dir)
    _check_output_dir(out, cases)
    names = [case.name for case in cases]
    if shard is not None:
        cases = [case for case in cases if case.name in set(shard.pick(names))]
    make_dirs(out / SAMPLES)
    if shard is not None:
        start_shard(out, shard)
    _remove_temporary_files(out, cases if shard else None)  # from a killed run
    with atomic_output(out / "config.yaml") as tmp:
        tmp.write_text(config_yaml(config))

    report_metas: dict[str, dict] = {}
    report = PrepareReport(manifest=None)  # type: ignore[arg-type]

    def take(name: str, status: str, payload: object) -> None:
        if status == "failed":
            if on_error == "fail" or isinstance(payload, OutputError):  # a full disk is not a bad case: stop
                raise InvalidInputError(payload) if not isinstance(payload, MsptError) else payload
            report.failed.append((name, str(payload)))
        else:
            report_metas[name] = payload  # type: ignore[assignment]
            (report.written if status == "written" else report.reused).append(name)
        if progress is not None:
            progress(name, status)

    with _Interrupts() as interrupts:
        try:
            work = _prepare_measured if shard else _prepare_one
            _run_all(cases, config.data, out, workers, take, interrupts, work=work)
            if shard is None:
                _refuse_nothing_prepared(report_metas, report.failed)
                report.manifest = _build_manifest(out, config, report_metas, report.failed)
            interrupts.raising = False  # from here a Ctrl-C is only noted: the manifest is written whole, or removed
            interrupts.check()
            if shard is not None:
                record = new_record(shard, config=config.model_dump(mode="json"), names=names)
                record.prepared, record.failed = report_metas, sorted(report.failed)
                finished = report.record = write_record(record, out)
            else:
                finished = write_manifest(report.manifest, out)
            if interrupts.asked:
                finished.unlink()
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            _remove_temporary_files(out, cases if shard else None)  # of the workers ended midway
            raise
    if shard is not None:
        return report
    report.warnings = _force_warnings(config.data, report.manifest)
    return report


def merge_shards(inputs: Sequence[str], out_dir: str | os.PathLike[str], *, config: MsptConfig) -> PrepareReport:
    """Write the manifest of a dataset prepared in shards (``prepare_dataset(shard=...)``) from their records:
    the manifest (split, statistics, skipped cases) that one run over every case of ``inputs`` writes.

    Raises :class:`DatasetError` (one line) for a missing shard, a shard of other inputs, config or mspt
    version (``data/shards.py``), or a recorded sample since removed or prepared again."""
    cases = find_cases(inputs, config.data)
    out = Path(out_dir)
    _check_output_dir(out, cases)
    records = read_records(out, config=config.model_dump(mode="json"), names=[case.name for case in cases])
    prepared: dict[str, ShardCase] = {}
    report = PrepareReport(manifest=None)  # type: ignore[arg-type]
    for record in records:
        for name, case in record.prepared.items():
            _check_recorded_sample(out, record, name, case)
            prepared[name] = case
        report.failed += record.failed
    report.failed.sort()
    for name in sorted(prepared):
        (report.written if prepared[name].status == "written" else report.reused).append(name)
    _refuse_nothing_prepared(prepared, report.failed)
    _remove_temporary_files(out)  # of shards that were killed: the merge runs when none does
    with atomic_output(out / "config.yaml") as tmp:
        tmp.write_text(config_yaml(config))
    metas = {name: case.meta for name, case in prepared.items()}
    moments = None if config.data.transient else {name: case.moments for name, case in prepared.items()}
    report.manifest = _build_manifest(out, config, metas, report.failed, moments=moments)  # type: ignore[arg-type]
    write_manifest(report.manifest, out)
    report.warnings = _force_warnings(config.data, report.manifest)
    return report


def _check_recorded_sample(out: Path, record: ShardRecord, name: str, case: ShardCase) -> None:
    """The sample of ``name`` is still the one ``record`` describes (same fingerprint)."""
    path = out / SAMPLES / f"{name}.safetensors"
    meta = read_sample_meta(path)
    if meta is None or meta.get("fingerprint") != case.meta.get("fingerprint"):
        state = "is missing or unreadable" if meta is None else "was prepared again since"
        raise DatasetError(f"{path}: {state}, not the sample shard {record.name} recorded; run that shard again")


def _refuse_nothing_prepared(prepared: dict, failed: list[tuple[str, str]]) -> None:
    if not prepared:
        raise DatasetError("no case could be prepared" + (f": {failed[0][1]}" if failed else ""))


def _force_warnings(data: DataConfig, manifest: Manifest) -> list[str]:
    """One line for each way the dataset's drag and lift rest on a default or are missing (``physics/force_notes.py``);
    a transient dataset's only concern the reference velocity."""
    velocity_given = data.reference_velocity is not None
    if data.transient is not None:
        return force_notes(surface_fields=[data.pressure_field or "p"], pressure_field=data.pressure_field or "p",
                           wall_shear_field=None, velocity_given=velocity_given)  # fmt: skip
    notes = force_notes(surface_fields=list(manifest.fields.get("surface", {})), pressure_field=data.pressure_field,
                        wall_shear_field=data.wall_shear_field, velocity_given=velocity_given)  # fmt: skip
    if data.pressure_field in manifest.fields.get("surface", {}):
        without = [e.name for e in manifest.samples if not e.reference_area]
        area = missing_area_note(without, len(manifest.samples), area_key=data.reference_area_key)
        notes += [area] if area else []
    return notes


class _Interrupts:
    """SIGINT in the main thread, for the time of a ``with``: ``KeyboardInterrupt`` as usual (unless
    ``raising`` is off), and remembered in ``asked``, which :meth:`check` raises again."""

    def __init__(self) -> None:
        self.asked = False
        self.raising = True
        self._previous: object = None

    def __call__(self, signum: int, frame: object) -> None:
        self.asked = True
        if self.raising:
            raise KeyboardInterrupt

    def check(self) -> None:
        if self.asked:
            raise KeyboardInterrupt

    def __enter__(self) -> _Interrupts:
        main = threading.current_thread() is threading.main_thread()
        if main and signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where SIGINT is ignored
            self._previous = signal.signal(signal.SIGINT, self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)  # type: ignore[arg-type]


def _run_all(
    cases: list[CaseFiles],
    data: DataConfig,
    out: Path,
    workers: int,
    take: Callable[[str, str, object], None],
    interrupts: _Interrupts,
    *,
    work: Callable[[CaseFiles, DataConfig, Path], tuple[str, object]],
) -> None:
    """Call ``take(name, *work(case, data, out))`` per case as they finish, in worker processes if workers > 1.

    Workers ignore SIGINT: on Ctrl-C (or an error of ``take``) the parent cancels the cases not begun,
    and on Ctrl-C also ends the running ones at once."""
    if workers <= 1:
        for case in cases:
            interrupts.check()
            take(case.name, *work(case, data, out))
        return
    ctx = multiprocessing.get_context("fork")
    pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_ignore_interrupts)
    futures: dict[cf.Future, str] = {}
    try:
        with _interrupts_deferred():  # the workers are forked here: none may run the parent's handler
            futures = {pool.submit(work, case, data, out): case.name for case in cases}
        pending = set(futures)
        while pending:
            done, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_COMPLETED)
            interrupts.check()
            for future in done:
                take(futures[future], *future.result())
    except KeyboardInterrupt:
        for process in (pool._processes or {}).values():  # Python 3.14: pool.terminate_workers()
            process.terminate()
        raise
    finally:
        for f in futures:
            f.cancel()
        pool.shutdown(wait=True)


def _ignore_interrupts() -> None:
    """A worker's start: Ctrl-C is the parent's to handle (no worker prints a ``KeyboardInterrupt`` trace)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """SIGINT held back for the block (forked workers start with it blocked); delivered when it ends."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _remove_temporary_files(out: Path, cases: list[CaseFiles] | None = None) -> None:
    """The temporary files of writes that were cut short (``atomic_output``'s ``.NAME.XXXX.tmpSUFFIX``);
    given ``cases`` (a shard, beside others writing), only those of their samples."""
    if cases is None:
        leftovers = [*out.glob(".*.tmp*"), *(out / SAMPLES).glob(".*.tmp*")]
    else:  # mkstemp's eight random characters: case_1's pattern matches no temporary file of case_1.b
        leftovers = [p for c in cases for p in (out / SAMPLES).glob(f".{glob.escape(c.name)}.????????.tmp.safetensors")]
    for leftover in leftovers:
        leftover.unlink(missing_ok=True)


def _prepare_one(case: CaseFiles, data: DataConfig, out: Path) -> tuple[str, object]:
    """(status, meta) for a case: reuse a finished sample with the same fingerprint, else prepare it."""
    path = out / SAMPLES / f"{case.name}.safetensors"
    transient = data.transient is not None
    try:
        existing = read_sample_meta(path) if path.exists() else None
        fingerprint = series_fingerprint(case, data) if transient else case_fingerprint(case, data)
        if existing and existing.get("fingerprint") == fingerprint:
            return "reused", existing
        sample = prepare_series_case(case, data) if transient else prepare_case(case, data)
        save_sample(sample, path)
        return "written", sample.meta
    except MsptError as exc:
        return "failed", exc
    except Exception as exc:  # a reader or geometry failure we did not anticipate: still one line
        where = case.surface.parent if case.volume and not case.openfoam else case.surface
        return "failed", InvalidInputError(f"{where}: {exc}")


def _prepare_measured(case: CaseFiles, data: DataConfig, out: Path) -> tuple[str, object]:
    """A shard's :func:`_prepare_one`: a prepared case as a :class:`ShardCase`, with the moments of its sample's
    arrays (steady datasets), for the statistics of the merge."""
    status, meta = _prepare_one(case, data, out)
    if status == "failed":
        return status, meta
    assert isinstance(meta, dict)
    moments = None
    if data.transient is None:
        try:
            moments = sample_moments(load_sample(out / SAMPLES / f"{case.name}.safetensors"), meta["fields"])
        except MsptError as exc:
            return "failed", exc
    return status, ShardCase(status=status, meta=meta, moments=moments)  # type: ignore[arg-type]


def _build_manifest(
    out: Path,
    config: MsptConfig,
    metas: dict[str, dict],
    failed: list[tuple[str, str]],
    *,
    moments: dict[str, dict[str, ArrayMoments]] | None = None,
) -> Manifest:
    """The manifest of the prepared cases' ``metas``; the statistics from the training samples' ``moments``
    if given (a merge of shards), else from their files."""
    names, failed = sorted(metas), sorted(failed)  # the skipped in case order, as the workers finish in any
    fields = _in_config_order(metas[names[0]]["fields"], config)
    location = metas[names[0]]["surface_location"]
    for name in names[1:]:
        if metas[name]["fields"] != fields:
            raise DatasetError(
                f"case {name}: fields {metas[name]['fields']} differ from {names[0]}'s {fields} (components)"
            )
        if metas[name]["surface_location"] != location:
            raise DatasetError(f"case {name}: surface fields at {metas[name]['surface_location']}, not {location}")
    split = assign_split(names, config.data.split)
    transient = config.data.transient is not None
    entries = [_entry(n, split[n], metas[n], transient=transient) for n in names]
    if transient:
        return _series_manifest(out, config, metas, failed, entries)
    train = [e for e in entries if e.split == "train"]
    if moments is None:
        stats = compute_stats(out, train, fields)
    else:
        stats = stats_from_moments([moments[e.name] for e in train], fields)
    return new_manifest(
        config,
        fields=fields,
        surface_location=location,
        samples=entries,
        stats=stats,
        skipped=[{"case": n, "error": e} for n, e in failed],
    )


def _entry(name: str, split: str, meta: dict, *, transient: bool) -> SampleEntry:
    """A case's line in the manifest; a transient case's params are its conditions (the model's inputs)."""
    if transient:
        extra = {"params": dict(meta["conditions"]), "num_steps": meta["num_steps"], "dt": meta["dt"]}
    else:
        extra = {"params": meta.get("params", {}), "reference_area": meta.get("reference_area")}
    return SampleEntry(
        name=name,
        file=f"{SAMPLES}/{name}.safetensors",
        split=split,
        num_surface=meta["num_surface"],
        num_volume=meta["num_volume"],
        **extra,
    )


def _series_manifest(
    out: Path, config: MsptConfig, metas: dict[str, dict], failed: list[tuple[str, str]], entries: list[SampleEntry]
) -> Manifest:
    """The manifest of a transient dataset: statistics of the fields, their increments and the conditions."""
    names = [e.name for e in entries]
    conditions = list(metas[names[0]]["conditions"])
    train = [e for e in entries if e.split == "train"]
    if not train:
        raise DatasetError("no training samples: the split leaves the training set empty")
    fields = _in_config_order(metas[names[0]]["fields"], config)
    samples = [load_sample(out / e.file) for e in train]
    values, increments, condition_stats, coord_mean, coord_scale = series_stats(samples, fields["volume"], conditions)
    stats = Stats(
        coord_mean=coord_mean.tolist(),
        coord_scale=coord_scale,
        surface={},
        volume=values,
        increments=increments,
        conditions=condition_stats,
    )
    return new_manifest(
        config,
        fields=fields,
        surface_location=metas[names[0]]["surface_location"],
        samples=entries,
        stats=stats,
        skipped=[{"case": n, "error": e} for n, e in failed],
        kind="transient",
    )


def _check_output_dir(out: Path, cases: list[CaseFiles]) -> None:
    check_outputs(out)
    resolved = out.resolve()
    for case in cases:
        for src in (case.surface, case.volume, case.params):
            if src is not None and src.resolve().parent == resolved:
                raise InvalidInputError(f"{out}: holds input files; choose an empty output directory")
    refuse_output_in_case(out, [case.surface for case in cases if case.openfoam])


def _in_config_order(fields: dict[str, dict[str, int]], config: MsptConfig) -> dict[str, dict[str, int]]:
    """A sample's fields (part -> name -> components) in the config's order: a sample stores its metadata with
    sorted keys, so a dataset prepared again from reused samples would list them otherwise (and the model's
    output channels follow this order)."""
    data = config.data
    order = {"surface": data.surface_fields, "volume": data.transient.fields if data.transient else data.volume_fields}
    return {
        part: {n: names[n] for n in sorted(names, key=lambda n: (order.get(part, []) + list(names)).index(n))}
        for part, names in fields.items()
    }
