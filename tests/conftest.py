import os

import numpy as np
import pytest

# Off-screen rendering without an X display (pyvista screenshots in tests).
os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261126)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """How many faithfulness tests (marked ``faithfulness``: against the official code) ran and how many skipped,
    so that a run without the references (tests/references.py) says so at its end."""
    ran = skipped = 0
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            if "faithfulness" not in getattr(report, "keywords", {}) or report.when not in ("call", "setup"):
                continue
            if outcome == "skipped":
                skipped += 1
            elif report.when == "call" or outcome == "error":
                ran += 1
    if ran or skipped:
        note = "" if not skipped else " (no references found: `make references`, see tests/references.py)"
        terminalreporter.write_line(f"faithfulness tests: {ran} ran, {skipped} skipped{note}")
