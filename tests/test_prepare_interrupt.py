"""Ctrl-C of ``mspt prepare``, at set moments: exit 130, one line, no manifest, no trace, no worker left.

Each run is a real process in its own group, and SIGINT goes to the whole group, as a terminal's Ctrl-C
does. The moment is made exact by a hook (``HELD``): the run stops at a named phase, marks it with a
file, and the test sends SIGINT once the mark is there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import CASES, EXAMPLES, finish, temp_files

#: ``python -c HELD PHASE MARK prepare ...``: mspt whose run is held at PHASE (``case``: every case,
#: before it is read; ``sample``: every case after the first sample is written; ``manifest``: the
#: manifest about to be written, for 5 s), MARK written when it is reached.
HELD = """
import sys, time
from pathlib import Path

import msptcli.prepare as prepare
from msptcli.cli import main

phase, mark = sys.argv.pop(1), Path(sys.argv.pop(1))
prepare_case, save_sample, write_manifest = prepare.prepare_case, prepare.save_sample, prepare.write_manifest


def held_case(case, data):
    if phase == "case":
        mark.touch()
    if phase == "case" or (phase == "sample" and case.name != "case_0000"):
        time.sleep(600)
    return prepare_case(case, data)


def saved(sample, path):
    save_sample(sample, path)
    if phase == "sample":
        mark.touch()


def held_manifest(manifest, out):
    mark.touch()
    time.sleep(5)
    return write_manifest(manifest, out)


prepare.prepare_case, prepare.save_sample = held_case, saved
if phase == "manifest":
    prepare.write_manifest = held_manifest
sys.argv[0] = "mspt"
main()
"""


def interrupted_prepare(tmp_path: Path, phase: str, workers: int) -> tuple[subprocess.CompletedProcess, Path]:
    """``mspt prepare`` of the three cases held at ``phase``, sent SIGINT there; its result and output folder."""
    out, mark = tmp_path / "data", tmp_path / "mark"
    args = ["prepare", *(str(EXAMPLES / c) for c in CASES), "-o", str(out), "--workers", str(workers)]
    log_out, log_err = (tmp_path / "stdout.txt").open("w+"), (tmp_path / "stderr.txt").open("w+")
    with log_out, log_err:
        command = [sys.executable, "-c", HELD, phase, str(mark), *args]
        proc = subprocess.Popen(command, stdout=log_out, stderr=log_err, start_new_session=True)
        deadline = time.monotonic() + 120
        while not mark.exists():
            assert proc.poll() is None, f"ended (exit {proc.returncode}) before {phase}"
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                pytest.fail(f"timed out waiting for the {phase} phase")
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGINT)
        code = finish(proc, timeout=60)  # held workers sleep for 600 s: they must be ended, not waited for
        log_out.seek(0)
        log_err.seek(0)
        done = subprocess.CompletedProcess(proc.args, code, log_out.read(), log_err.read())
    _no_process_left(proc.pid)
    return done, out


def _no_process_left(group: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            os.killpg(group, signal.SIGKILL)
            pytest.fail("a worker of the interrupted prepare was still running 10 s after it ended")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize(("phase", "workers"), [("case", 2), ("case", 1), ("sample", 2), ("manifest", 2)])
def test_ctrl_c_ends_with_130_one_line_and_no_manifest(tmp_path, phase, workers):
    done, out = interrupted_prepare(tmp_path, phase, workers)
    assert done.returncode == 130, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("interrupted"), done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr
    assert done.stdout.strip() == ""
    assert not (out / "manifest.json").exists() and temp_files(out) == []
    written = sorted(p.name for p in (out / "samples").iterdir())
    assert written == {"case": [], "sample": ["case_0000.safetensors"]}.get(phase, written)
