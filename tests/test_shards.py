"""``mspt prepare --shard I/N`` then ``--merge``: the dataset one run over every case writes, bit for bit.

The six shipped Ahmed cases with their config (volume points cut to 2000): prepared once in one run,
once in three shards one after the other, and once in two shards by two processes at the same time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import meshio
import numpy as np
import pytest
from helpers import EXAMPLES, ROOT, invoke, ok, one_line_error, temp_files

from msptcli.data.manifest import read_manifest
from msptcli.data.sample import load_sample
from msptcli.data.template import volume_template

pytest_plugins = ["helpers"]

CASES = sorted(EXAMPLES.glob("case_000*"))
NAMES = [case.name for case in CASES]
SETTINGS = ["-c", EXAMPLES / "config.yaml", "--set", "data.max_volume_points=2000"]


def prepare(*args: object) -> str:
    """``mspt prepare`` of ``args`` with the example config, which must succeed; its output."""
    return ok("prepare", *args, *SETTINGS).output


def in_shards(data: Path, cases: list[Path], count: int, *options: object) -> str:
    """``cases`` prepared into ``data`` as ``count`` shards one after the other, then merged; the merge's output."""
    for i in range(1, count + 1):
        prepare(*cases, "-o", data, "--shard", f"{i}/{count}", *options)
    return prepare(*cases, "-o", data, "--merge")


def same_samples(a: Path, b: Path) -> None:
    """The same sample files, holding the same arrays and metadata (safetensors writes its header's metadata
    in any order, so the files' bytes may differ even between two runs of one process)."""
    names = sorted(p.name for p in (a / "samples").iterdir())
    assert names == sorted(p.name for p in (b / "samples").iterdir())
    for name in names:
        x, y = load_sample(a / "samples" / name), load_sample(b / "samples" / name)
        assert x.meta == y.meta, name
        assert sorted(x.arrays) == sorted(y.arrays), name
        for key in x.arrays:
            assert x.arrays[key].dtype == y.arrays[key].dtype and np.array_equal(x.arrays[key], y.arrays[key]), key


def same_dataset(one: Path, sharded: Path) -> None:
    """``sharded`` is what one run wrote into ``one``: manifest bytes, statistics, config, samples, template."""
    assert (sharded / "manifest.json").read_bytes() == (one / "manifest.json").read_bytes()
    assert (sharded / "config.yaml").read_bytes() == (one / "config.yaml").read_bytes()
    a, b = read_manifest(one), read_manifest(sharded)
    for part in ("surface", "volume"):
        for name, s in getattr(a.stats, part).items():
            t = getattr(b.stats, part)[name]
            assert np.allclose(s.mean, t.mean, rtol=1e-12, atol=0) and np.allclose(s.std, t.std, rtol=1e-12, atol=0)
    assert np.allclose(a.stats.coord_mean, b.stats.coord_mean, rtol=1e-12, atol=0)
    same_samples(one, sharded)
    template_a, template_b = volume_template(one, a.split("train")), volume_template(sharded, b.split("train"))
    assert template_a is not None and np.array_equal(template_a, template_b)
    assert temp_files(sharded) == []


@pytest.fixture(scope="module")
def one_run(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("one") / "data"
    prepare(*CASES, "-o", data)
    return data


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("sharded") / "data"
    in_shards(data, CASES, 3)
    return data


def copy_of(data: Path, root: Path, *, manifest: bool = False) -> Path:
    """A copy of a sharded dataset (its samples reused), without its manifest unless asked."""
    copy = root / "data"
    shutil.copytree(data, copy)
    if not manifest:
        (copy / "manifest.json").unlink()
    return copy


# --- three shards merge into the dataset of one run -------------------------------------------------------


def test_three_shards_merge_into_the_one_run_dataset(one_run, sharded):
    same_dataset(one_run, sharded)
    for i in (1, 2, 3):  # round robin over the sorted cases, every case in exactly one shard
        record = json.loads((sharded / "shards" / f"{i}-of-3.json").read_text())
        assert sorted(record["prepared"]) == NAMES[i - 1 :: 3] and record["failed"] == []
        assert record["cases"] == NAMES


def test_the_check_of_equality_can_fail(one_run, sharded, tmp_path):
    other = copy_of(sharded, tmp_path, manifest=True)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["stats"]["coord_scale"] *= 1 + 1e-9
    (other / "manifest.json").write_text(json.dumps(manifest, indent=1))
    with pytest.raises(AssertionError):
        same_dataset(one_run, other)


def test_two_shards_written_at_once_by_two_processes(one_run, tmp_path):
    data = tmp_path / "data"
    command = [sys.executable, "-m", "msptcli", "prepare", *map(str, CASES), "-o", str(data), *map(str, SETTINGS)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    runs = [subprocess.Popen([*command, "--shard", f"{i}/2"], cwd=ROOT, **pipes) for i in (1, 2)]
    for run in runs:
        output = run.communicate(timeout=600)[0].decode()
        assert run.returncode == 0, output
        assert not (data / "manifest.json").exists()
    prepare(*CASES, "-o", data, "--merge")
    same_dataset(one_run, data)


# --- a failing case under --on-error skip -----------------------------------------------------------------


def nan_case(root: Path) -> Path:
    """``case_bad``: case_0000 with a NaN in its surface pressure (a case ``prepare`` refuses)."""
    folder = root / "case_bad"
    shutil.copytree(EXAMPLES / "case_0000", folder)
    mesh = meshio.read(folder / "surface.vtu")
    mesh.point_data["p"] = mesh.point_data["p"].copy()
    mesh.point_data["p"][17] = np.nan
    mesh.write(folder / "surface.vtu")
    return folder


def test_a_failing_case_is_recorded_and_merged_as_in_one_run(one_run, sharded, tmp_path):
    cases = [*CASES, nan_case(tmp_path)]  # case_bad is the seventh case: shard 1's
    one = copy_of(one_run, tmp_path / "one", manifest=True)
    output = prepare(*cases, "-o", one, "--on-error", "skip")
    assert "skipped case_bad" in output
    data = copy_of(sharded, tmp_path / "sharded")
    output = in_shards(data, cases, 3, "--on-error", "skip")
    assert "6 reused, 1 failed" in output and "skipped case_bad" in output
    record = json.loads((data / "shards" / "1-of-3.json").read_text())
    assert [name for name, _ in record["failed"]] == ["case_bad"] and "NaN" in record["failed"][0][1]
    same_dataset(one, data)
    assert [s["case"] for s in read_manifest(data).skipped] == ["case_bad"]


def test_a_failing_case_stops_its_shard_without_a_record(sharded, tmp_path):
    data = copy_of(sharded, tmp_path)
    shutil.rmtree(data / "shards")
    cases = [*CASES, nan_case(tmp_path)]
    one_line_error(invoke("prepare", *cases, "-o", data, *SETTINGS, "--shard", "1/3"), "case_bad")
    assert not (data / "shards" / "1-of-3.json").exists() and temp_files(data) == []


# --- refused: one line, exit code 1 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shard", "needle"),
    [("4/3", "numbered from 1 to 3"), ("x", "expected I/N"), ("0/3", "numbered from 1 to 3"), ("1/0", "at least 1")],
)
def test_a_shard_out_of_range_is_refused(tmp_path, shard, needle):
    data = tmp_path / "data"
    one_line_error(invoke("prepare", *CASES, "-o", data, *SETTINGS, "--shard", shard), f"--shard {shard}", needle)
    assert not data.exists()


def test_shard_and_merge_together_are_refused(tmp_path):
    one_line_error(invoke("prepare", *CASES, "-o", tmp_path / "d", *SETTINGS, "--shard", "1/3", "--merge"), "--merge")


def test_a_missing_shard_is_named(sharded, tmp_path):
    data = copy_of(sharded, tmp_path)
    (data / "shards" / "2-of-3.json").unlink()
    one_line_error(invoke("prepare", *CASES, "-o", data, *SETTINGS, "--merge"), "shard 2/3 is missing", "--shard 2/3")
    assert not (data / "manifest.json").exists()
    (data / "shards" / "3-of-3.json").unlink()
    one_line_error(invoke("prepare", *CASES, "-o", data, *SETTINGS, "--merge"), "shards 2/3, 3/3 are missing")


def test_no_shard_at_all_is_refused(tmp_path):
    one_line_error(invoke("prepare", *CASES, "-o", tmp_path / "d", *SETTINGS, "--merge"), "no shard records")


def test_a_shard_of_another_config_is_refused(sharded, tmp_path):
    data = copy_of(sharded, tmp_path)
    path = data / "shards" / "3-of-3.json"
    record = json.loads(path.read_text())
    record["config"]["data"]["max_volume_points"] = 5000
    path.write_text(json.dumps(record))
    line = one_line_error(invoke("prepare", *CASES, "-o", data, *SETTINGS, "--merge"), "3-of-3.json", "another config")
    assert "data.max_volume_points: 5000 there, 2000 here" in line
    assert not (data / "manifest.json").exists()


def test_a_merge_with_another_config_or_other_cases_is_refused(sharded, tmp_path):
    data = copy_of(sharded, tmp_path)
    merge = ("prepare", "-o", data, "--merge", *SETTINGS)
    one_line_error(invoke(*merge, *CASES, "--set", "data.max_volume_points=1000"), "1-of-3.json", "another config")
    one_line_error(invoke(*merge, *CASES[:-1]), "1-of-3.json", "other cases", "case_0005")
    assert not (data / "manifest.json").exists()


def test_a_sample_removed_since_its_shard_is_refused(sharded, tmp_path):
    data = copy_of(sharded, tmp_path)
    (data / "samples" / "case_0004.safetensors").unlink()
    one_line_error(invoke("prepare", *CASES, "-o", data, *SETTINGS, "--merge"), "case_0004", "shard 2/3")


def test_a_shard_run_removes_the_manifest_and_the_records_of_another_count(sharded, tmp_path):
    data = copy_of(sharded, tmp_path, manifest=True)
    output = prepare(*CASES, "-o", data, "--shard", "2/2")
    assert "0 written, 3 reused, 0 failed" in output
    assert not (data / "manifest.json").exists()
    assert sorted(p.name for p in (data / "shards").iterdir()) == ["2-of-2.json"]
    one_line_error(invoke("prepare", *CASES, "-o", data, *SETTINGS, "--merge"), "shard 1/2 is missing")


def test_a_transient_dataset_merges_into_the_one_run_dataset(tmp_path):
    """Transient statistics are computed from the training samples at the merge, as in one run."""
    cases, settings = (
        sorted((ROOT / "examples" / "transient").glob("case_*")),
        ["-c", ROOT / "examples/transient/config.yaml"],
    )
    ok("prepare", *cases, "-o", tmp_path / "one", *settings)
    for i in (1, 2):
        ok("prepare", *cases, "-o", tmp_path / "sharded", *settings, "--shard", f"{i}/2")
    ok("prepare", *cases, "-o", tmp_path / "sharded", *settings, "--merge")
    assert (tmp_path / "sharded" / "manifest.json").read_bytes() == (tmp_path / "one" / "manifest.json").read_bytes()
    same_samples(tmp_path / "one", tmp_path / "sharded")


def test_field_order_is_the_configs_when_samples_are_reused(tmp_path):
    """A sample keeps its metadata with sorted keys; the manifest (and so the model's output channels) still
    lists the fields in the config's order when a second prepare reuses the samples."""
    data = tmp_path / "data"
    for _ in range(2):  # the second run reuses both samples
        prepare(*CASES[:2], "-o", data, "--volume-fields", "p,U", "--set", "data.split.val=[]",
                "--set", "data.split.test=[]")  # fmt: skip
        assert list(read_manifest(data).fields["volume"]) == ["p", "U"]
