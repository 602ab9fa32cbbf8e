"""Paths of the example data shipped with the project, for the tests."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CASE = ROOT / "examples" / "ahmed" / "case_0000"
EXAMPLE_SURFACE = EXAMPLE_CASE / "surface.vtu"
