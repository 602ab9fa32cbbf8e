"""``--help`` tells the truth: flags shown as flags, ranges as accepted, formats as chosen; completion works."""

from __future__ import annotations

import os
import re
import subprocess
from typing import Annotated

import pytest
import typer
from helpers import invoke, mspt_command, one_line_error

from msptcli.cli import app

pytest_plugins = ["helpers"]


def _commands() -> list[list[str]]:
    """Every command line whose help can be asked: the app, each command (and each command of a group)."""
    group = typer.main.get_command(app)
    found = [[]]
    for name, command in sorted(group.commands.items()):  # type: ignore[attr-defined]
        found.append([name])
        found.extend([name, sub] for sub in sorted(getattr(command, "commands", {})))
    return found


def _help(words: list[str]) -> str:
    result = invoke(*words, "--help")
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("words", _commands(), ids=lambda w: " ".join(w) or "mspt")
def test_no_flag_reads_as_taking_a_value(words):
    """A boolean flag takes no value, and a list's Python type is not a metavar."""
    text = _help(words)
    assert "<bool>" not in text and "<list[" not in text, text


def test_the_check_can_fail():
    """Without the fix, Typer's own help shows the type of a flag: the test above would see it."""
    demo = typer.Typer()

    @demo.command()
    def run(
        flag: Annotated[bool, typer.Option("--flag")] = False,
        items: Annotated[list[str] | None, typer.Option("--item")] = None,
    ) -> None:
        """A command."""

    from typer.testing import CliRunner

    text = CliRunner().invoke(demo, ["--help"], env={"COLUMNS": "120"}).output
    assert "--flag" in text and "<bool>" not in text  # our fix applies to every Typer app in the process
    assert "<list[str]>" in text  # a list option without a metavar is caught by the test above


def test_ranges_shown_are_the_ranges_accepted():
    """Options that refuse 0 do not advertise x>=0; 0 is refused in one line that names the option."""
    text = _help(["predict"])
    for option in ("--reference-area", "--reference-velocity", "--density", "--scale"):
        row = next(line for line in text.splitlines() if option in line)
        assert "x>=0" not in row, row


@pytest.mark.parametrize("option", ["--reference-area", "--reference-velocity", "--density"])
def test_zero_reference_value_refused_in_one_line(trained, design_case, tmp_path, option):
    result = invoke("predict", trained.run, design_case / "geometry.stl", option, "0", "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert f"{option} must be a positive number" in one_line_error(result)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_export_help_says_the_suffix_decides():
    text = re.sub(r"[\s│]+", " ", _help(["export"]))  # one line, the help panel's borders dropped
    assert "onnx (default)" not in text
    assert "default: from the suffix" in text


def test_shell_completion(tmp_path):
    """``--show-completion`` prints a script; the completion protocol completes commands and flags;
    ``--install-completion`` installs into the (here temporary) home."""
    env = {**os.environ, "HOME": str(tmp_path), "SHELL": "/bin/bash"}
    shown = subprocess.run([*mspt_command(), "--show-completion", "bash"], env=env, capture_output=True, text=True)
    assert shown.returncode == 0 and "_MSPT_COMPLETE=complete_bash" in shown.stdout
    asked = {**env, "_MSPT_COMPLETE": "complete_bash", "COMP_WORDS": "mspt train --re", "COMP_CWORD": "2"}
    done = subprocess.run(mspt_command(), env=asked, capture_output=True, text=True)
    assert done.stdout.split() == ["--resume"], done.stdout + done.stderr
    installed = subprocess.run([*mspt_command(), "--install-completion", "bash"], env=env, capture_output=True,
                               text=True)  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    assert (tmp_path / ".bash_completions" / "mspt.sh").is_file()


def test_resume_given_a_value_says_flags_take_none(tmp_path):
    result = invoke("train", tmp_path, "--resume", "true", "-o", tmp_path / "run")
    assert "flags such as --resume take no value" in one_line_error(result, "'true'")
