"""The one output guard (io/guard.py) that prepare, train, predict, the rollout, export and write_mesh call
before they write: each refusal on its own, and what it lets through."""

from __future__ import annotations

import os

import pytest

from msptcli.errors import InvalidInputError, OutputError
from msptcli.io.guard import check_outputs


@pytest.fixture
def layout(tmp_path):
    """An input file and a series folder holding one, an existing output folder, a plain file."""
    (tmp_path / "inputs" / "series").mkdir(parents=True)
    (tmp_path / "inputs" / "series" / "t0.vtu").write_text("x")
    (tmp_path / "inputs" / "body.stl").write_text("x")
    (tmp_path / "out").mkdir()
    (tmp_path / "afile").write_text("x")
    return tmp_path


def test_new_outputs_pass(layout):
    inputs = [layout / "inputs" / "body.stl"]
    check_outputs(layout / "out", [layout / "out" / "body.vtp"], folders=[layout / "out" / "body"], inputs=inputs)
    check_outputs(layout / "new" / "folder", [layout / "new" / "folder" / "a.json"], inputs=inputs)
    check_outputs(None)


def test_an_output_folder_that_is_a_file(layout):
    with pytest.raises(OutputError, match=f"{layout / 'afile'}: exists and is not a directory; choose another -o"):
        check_outputs(layout / "afile", option="-o")


def test_an_output_file_that_is_a_directory(layout):
    with pytest.raises(OutputError, match=f"cannot write {layout / 'out'}: it is a directory"):
        check_outputs(layout, [layout / "out"])


def test_an_output_that_is_an_input(layout):
    body = layout / "inputs" / "body.stl"
    message = f"{body}: refusing to overwrite an input file; choose another --output"
    with pytest.raises(InvalidInputError, match=message):
        check_outputs(layout / "inputs", [body], inputs=[body])
    link = layout / "out" / "link.stl"  # the same file under another name
    os.link(body, link)
    with pytest.raises(InvalidInputError, match="refusing to overwrite the checkpoint"):
        check_outputs(None, [link], inputs=[body], input_name="the checkpoint")


def test_a_replaced_folder_that_holds_an_input(layout):
    series = layout / "inputs" / "series"
    inputs = [series / "t0.vtu"]
    for folder in (series, layout / "inputs"):
        with pytest.raises(InvalidInputError, match="refusing to overwrite the input series"):
            check_outputs(None, folders=[folder], inputs=inputs, input_name="the input series")
    check_outputs(None, folders=[layout / "inputs" / "other"], inputs=inputs)
