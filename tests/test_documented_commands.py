"""Every ``mspt`` command in README.md and docs/*.md that uses shipped paths runs as written.

The commands are taken from the pages' fenced code blocks (a line that starts with ``mspt``, with its
``\\`` continuations; a trailing ``# comment`` dropped). A command *uses shipped paths* when every path in
it is a file or folder of the repository (``examples/...``) or an output under ``out/``; commands with
placeholders (``MESH``, ``RUN_DIR``, ``[--level L | ...]``) or a user's paths (``runs/``, ``drivaerml/``)
show a form, not a run, and are left out. The runnable ones run in order (a command that several
pages repeat, once) — README.md first, then the
docs in name order — in one scratch folder where ``examples`` links to the repository's, so a page
may use what an earlier command wrote under ``out/``. The one change made to a command is its length
of training: ``mspt train`` runs one epoch (``--epochs 1``, or a ``--time-limit`` of 10 s), since a
test checks that the command works, not what it learns.
"""

from __future__ import annotations

import glob
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import invoke

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: Suffixes that make a word a path even without a slash.
PATH_SUFFIXES = (".stl", ".obj", ".ply", ".vtu", ".vtp", ".vtk", ".vti", ".pvd", ".yaml", ".yml", ".onnx", ".pt",
                 ".ts", ".json", ".png", ".foam", ".safetensors")  # fmt: skip
FENCE = re.compile(r"^\s*```")


@dataclass(frozen=True)
class Documented:
    page: str
    line: int
    text: str

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text, comments=True)

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def documented_commands(pages: list[Path] = PAGES) -> list[Documented]:
    """Every ``mspt ...`` line of the pages' fenced code blocks, continuations joined, in page order."""
    found = []
    for page in pages:
        inside, pending, start = False, "", 0
        for number, line in enumerate(page.read_text().splitlines(), start=1):
            if FENCE.match(line):
                inside, pending = not inside, ""
                continue
            if not inside:
                continue
            text = line.strip().removeprefix("$ ")
            if pending:
                text = pending + " " + text
            elif not text.startswith("mspt "):
                continue
            else:
                start = number
            if text.endswith("\\"):
                pending = text[:-1].rstrip()
                continue
            pending = ""
            name = str(page.relative_to(ROOT)) if page.is_relative_to(ROOT) else page.name
            found.append(Documented(name, start, text))
    return found


def _is_placeholder(word: str) -> bool:
    return bool(re.fullmatch(r"[A-Z][A-Z0-9_]*(\.[A-Za-z]+)?", word)) or word in {"|", "]"} or word.startswith("[")


def _is_path(word: str) -> bool:
    return not word.startswith("-") and "=" not in word and ("/" in word or word.lower().endswith(PATH_SUFFIXES))


def _exists(word: str) -> bool:
    return bool(glob.glob(str(ROOT / word))) if glob.has_magic(word) else (ROOT / word).exists()


def uses_shipped_paths(command: Documented) -> bool:
    """No placeholder, and every path shipped with the repository or written under ``out/``."""
    words = command.words[1:]
    if any(_is_placeholder(w) for w in words):
        return False
    return all(w.startswith("out/") or _exists(w) for w in words if _is_path(w))


def as_run(words: list[str]) -> list[str]:
    """The command as the test runs it: ``mspt train`` for one epoch (or 10 s of its time limit)."""
    args = words[1:]
    if args[:1] != ["train"]:
        return args
    if "--time-limit" in args:
        i = args.index("--time-limit")
        return [*args[: i + 1], "10s", *args[i + 2 :]]
    return [*args, "--epochs", "1"]


def run_in_order(commands: list[Documented], folder: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run the commands in ``folder`` (``examples`` linked in), a command written on several pages once; the
    failures, each with its output's end (or its exception). Prints each command's time."""
    (folder / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    monkeypatch.chdir(folder)
    failures, done = [], set()
    for command in commands:
        words = as_run(command.words)
        if tuple(words) in done:
            continue
        done.add(tuple(words))
        started = time.perf_counter()
        result = invoke(*words)
        print(f"{time.perf_counter() - started:6.1f} s  {command}")
        if result.exit_code != 0:
            said = result.output.strip()[-600:] or repr(result.exception)
            failures.append(f"{command}\n    exit {result.exit_code}: {said}")
    return failures


def test_documented_commands_are_found():
    """The collector sees the quick start and the pages' commands, and tells forms from runs."""
    commands = documented_commands()
    runnable = [c for c in commands if uses_shipped_paths(c)]
    assert len(commands) >= 40 and len(runnable) >= 10, "\n".join(map(str, runnable))
    readme = [c for c in runnable if c.page == "README.md"]
    assert [c.words[1] for c in readme[:4]] == ["prepare", "train", "predict", "export"], readme[:4]
    forms = {c.text.split()[1] for c in commands if not uses_shipped_paths(c)}
    assert forms, "every documented command was classed as runnable: the placeholder rule no longer works"


def test_a_broken_documented_command_is_reported(tmp_path, monkeypatch):
    """The runner reports a command that fails (the check can fail)."""
    page = tmp_path / "page.md"
    command = "mspt balltree examples/ahmed/case_0000/surface.vtu --level 99999 \\\n  -o out/x.vtu"
    page.write_text(f"```bash\n{command}\n```\n")
    commands = documented_commands([page])
    assert len(commands) == 1 and commands[0].text.endswith("-o out/x.vtu") and uses_shipped_paths(commands[0])
    (tmp_path / "work").mkdir()
    failures = run_in_order(commands, tmp_path / "work", monkeypatch)
    assert len(failures) == 1 and "page.md:2:" in failures[0] and "exit" in failures[0]


def test_every_documented_command_runs(tmp_path, monkeypatch):
    commands = [c for c in documented_commands() if uses_shipped_paths(c)]
    failures = run_in_order(commands, tmp_path, monkeypatch)
    assert not failures, f"{len(failures)} of {len(commands)} documented commands failed:\n" + "\n".join(failures)
