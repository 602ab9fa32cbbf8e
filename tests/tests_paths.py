"""Paths of the example data shipped with the project, and the tiny training config, for the tests."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_CASE = ROOT / "examples" / "ahmed" / "case_0000"
EXAMPLE_SURFACE = EXAMPLE_CASE / "surface.vtu"

#: Three example cases, a tiny model, two short epochs: training tests in seconds.
TINY_CONFIG = """
data:
  max_volume_points: 1500
  split: {val: [case_0002], test: []}
model: {width: 16, num_heads: 2, depth: 1}
train: {epochs: 2, surface_points: 512, volume_points: 512, warmup_epochs: 1, threads: 1}
"""
