"""The most common first mistakes get one line that names the fix, not a generic complaint."""

from __future__ import annotations

import shutil
from pathlib import Path

from helpers import EXAMPLES, invoke, one_line_error

TRANSIENT = EXAMPLES.parent / "transient"


def test_parent_folder_of_the_cases_names_the_glob(tmp_path):
    result = invoke("prepare", EXAMPLES, "-o", tmp_path / "data")
    line = one_line_error(result, "is not a case but holds 6 case folders", "did you mean")
    assert f"'{EXAMPLES / 'case_*'}'" in line
    assert not (tmp_path / "data").exists()


def test_parent_of_one_case_names_that_case(tmp_path):
    shutil.copytree(EXAMPLES / "case_0000", tmp_path / "runs" / "only")
    result = invoke("prepare", tmp_path / "runs", "-o", tmp_path / "data")
    assert f"did you mean '{tmp_path / 'runs' / 'only'}'?" in one_line_error(result, "holds 1 case folder (only)")


def test_transient_case_without_its_config_names_the_config(tmp_path):
    result = invoke("prepare", TRANSIENT / "case_0000", "-o", tmp_path / "data")
    line = one_line_error(result, "holds a time series", "data.transient", "-c examples/transient/config.yaml")
    assert "surface_file" not in line


def test_transient_parent_without_its_config_names_glob_and_config(tmp_path):
    result = invoke("prepare", TRANSIENT, "-o", tmp_path / "data")
    one_line_error(result, "holds 2 transient case folders", f"'{TRANSIENT / 'case_*'}'", "data.transient")


def test_hydra_style_override_on_prepare_says_use_set(tmp_path):
    result = invoke("prepare", EXAMPLES / "case_0000", "data.max_volume_points=1000", "-o", tmp_path / "data")
    one_line_error(result, "looks like a config override", "use --set data.max_volume_points=1000")


def test_a_missing_case_is_still_a_missing_case(tmp_path):
    """The hints above do not fire on a plain missing path or an empty folder (the checks can tell)."""
    result = invoke("prepare", tmp_path / "nothing_here", "-o", tmp_path / "data")
    one_line_error(result, "no such file or folder")
    (tmp_path / "empty").mkdir()
    line = one_line_error(invoke("prepare", tmp_path / "empty", "-o", tmp_path / "data"), "no surface file matching")
    assert "did you mean" not in line and "time series" not in line


def test_examples_path_is_what_the_tests_use():
    assert (EXAMPLES / "case_0000" / "surface.vtu").is_file() and Path(TRANSIENT / "config.yaml").is_file()
