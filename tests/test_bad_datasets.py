"""``mspt train`` on datasets whose manifest or sample files are not what they claim, and the run lock.

A manifest that points a sample outside the dataset folder, or a sample file that is not safetensors
(a zip archive, text, a file cut short, a header whose tensors lie past the end), is one line naming the
file, exit 1, before anything is allocated or written. A refused or finished run leaves no lock file.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import invoke, one_line_error, tree_digest

from msptcli.data.sample import Sample, load_sample, map_sample, read_header, save_sample
from msptcli.errors import DatasetError, InvalidInputError
from msptcli.train.state import LOCK, run_lock

pytest_plugins = ["helpers"]


def copied_dataset(prepared, root: Path) -> Path:
    data = root / "data"
    shutil.copytree(prepared.data, data)
    return data


def train(prepared, data: Path, run: Path):
    return invoke("train", data, "-o", run, "-c", prepared.config, "train.threads=1")


@pytest.mark.parametrize("file", ["../../../../etc/passwd", "/etc/passwd", "samples/../../x.safetensors", ""])
def test_a_sample_path_outside_the_dataset_is_refused(prepared, tmp_path, file):
    data = copied_dataset(prepared, tmp_path)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["samples"][0]["file"] = file
    (data / "manifest.json").write_text(json.dumps(manifest))
    run = tmp_path / "run"
    one_line_error(train(prepared, data, run), str(data / "manifest.json"), repr(file), "outside the dataset folder")
    assert not run.exists()


def zip_archive(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("a.txt", "x" * 1000)


def text(path: Path) -> None:
    path.write_text("root:x:0:0:root:/root:/bin/bash\n" * 20)


def cut_in_the_header(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:100])


def cut_in_the_data(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-16])


def header_not_json(path: Path) -> None:
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    path.write_bytes(data[:8] + b"\xff" * n + data[8 + n :])


def offsets_past_the_end(path: Path) -> None:
    """A well-formed header whose last tensor claims bytes the file does not hold (and so does not match its shape)."""
    data = path.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    key = max((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1])
    header[key]["data_offsets"][1] += 10**12
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + n :])


BAD_SAMPLES = {
    "zip": (zip_archive, "not a safetensors file"),
    "text": (text, "not a safetensors file"),
    "cut-in-the-header": (cut_in_the_header, "not a safetensors file"),
    "cut-in-the-data": (cut_in_the_data, "cut short"),
    "header-not-json": (header_not_json, "header is not JSON"),
    "offsets-past-the-end": (offsets_past_the_end, "cut short"),
}


@pytest.mark.parametrize("kind", BAD_SAMPLES)
def test_a_sample_that_is_not_safetensors_is_one_line(prepared, tmp_path, kind):
    write, needle = BAD_SAMPLES[kind]
    data = copied_dataset(prepared, tmp_path)
    sample = data / "samples" / "case_0000.safetensors"
    write(sample)
    run = tmp_path / "run"
    one_line_error(train(prepared, data, run), str(sample), "not a readable prepared sample", needle)
    assert not run.exists()


def test_a_sample_linked_to_a_foreign_file_is_one_line(prepared, tmp_path):
    data = copied_dataset(prepared, tmp_path)
    sample = data / "samples" / "case_0000.safetensors"
    sample.unlink()
    sample.symlink_to("/etc/passwd")
    one_line_error(train(prepared, data, tmp_path / "run"), str(sample), "not a safetensors file")


@pytest.mark.parametrize("kind", BAD_SAMPLES)
def test_both_readers_refuse_a_bad_header_before_reading(tmp_path, kind):
    write, needle = BAD_SAMPLES[kind]
    path = save_sample(Sample("c", {"x": np.ones((10, 3), np.float32), "o": np.arange(4)}), tmp_path / "c.safetensors")
    header, _, start = read_header(path)
    assert header["x"]["shape"] == [10, 3] and start > 8  # the check accepts what save_sample writes
    write(path)
    for read in (read_header, map_sample, load_sample):
        with pytest.raises(DatasetError, match=needle):
            read(path)


# --- the run lock ------------------------------------------------------------------------------------


def test_a_refused_or_finished_run_leaves_no_lock(prepared, trained, tmp_path):
    assert not (trained.run / LOCK).exists()  # a finished run
    run = tmp_path / "run"
    shutil.copytree(trained.run, run)
    before = tree_digest(run)
    one_line_error(train(prepared, prepared.data, run), str(run), "already holds a run")
    assert not (run / LOCK).exists() and tree_digest(run) == before


def test_the_lock_refuses_a_second_holder_and_is_removed_when_released(tmp_path):
    with run_lock(tmp_path):
        assert (tmp_path / LOCK).is_file()
        with pytest.raises(InvalidInputError, match="another `mspt train`"), run_lock(tmp_path):
            pass
        assert (tmp_path / LOCK).is_file()  # the refused one does not remove the holder's file
    assert not (tmp_path / LOCK).exists()
    (tmp_path / LOCK).write_text("12345\n")  # left by a killed run: no obstacle
    with run_lock(tmp_path):
        pass
    assert not (tmp_path / LOCK).exists()
