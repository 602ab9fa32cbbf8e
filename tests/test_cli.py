"""The ``mspt`` command line end to end on real mesh files."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import meshio
import numpy as np
import pytest
import pyvista as pv
from helpers import EXAMPLE_CASE, one_line_error
from typer.testing import CliRunner

from msptcli import __version__
from msptcli.cli import app

EXAMPLE = EXAMPLE_CASE
runner = CliRunner()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def surface(tmp_path) -> Path:
    """A copy of the shipped OpenFOAM surface, so a test can also check it is not modified."""
    dst = tmp_path / "in" / "surface.vtu"
    dst.parent.mkdir()
    shutil.copy(EXAMPLE / "surface.vtu", dst)
    return dst


def test_version_and_help():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "balltree" in result.output


def test_rollout_is_a_command_and_predict_initial_its_alias():
    result = runner.invoke(app, ["--help"])
    assert "rollout" in result.output
    result = runner.invoke(app, ["rollout", "--help"])
    assert result.exit_code == 0
    for option in ("--output", "--start", "--steps", "--condition", "--device", "auto|cpu|cuda|mps"):
        assert option in result.output, option
    result = runner.invoke(app, ["predict", "--help"])
    assert result.exit_code == 0 and "alias of `mspt rollout RUN SERIES`" in " ".join(result.output.split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["rollout", "{tmp}/run", "{tmp}/series.pvd", "--condition", "Re=fast"], "KEY=NUMBER"),
        (["rollout", "{tmp}/run", "{tmp}/series.pvd"], "no such run directory"),
        (["predict", "{tmp}/run"], "mspt rollout RUN SERIES"),
        (["predict", "{tmp}/run", "a.stl", "--initial", "{tmp}/series.pvd"], "not both"),
        (["predict", "{tmp}/run", "a.stl", "--steps", "3"], "belong to --initial"),
        (["predict", "{tmp}/run", "a.stl", "--volume", "v.vtu", "--volume-points", "9"], "not both"),
        (["predict", "{tmp}/run", "a.stl", "b.stl", "--volume", "v.vtu"], "one geometry"),
        (["train", "{tmp}/data", "-o", "{tmp}/run", "--field-map", "volume/a=volume/b"], "give --init RUN too"),
        (["train", "{tmp}/data", "-o", "{tmp}/run", "--init", "{tmp}/parent", "--resume"], "give one"),
        (["train", "{tmp}/data", "-o", "{tmp}/run", "--init", "{tmp}/p", "--field-map", "a=b"], "NEW=OLD"),
    ],
)
def test_option_mistakes_give_one_line_and_no_output(tmp_path, args, message):
    one_line_error(runner.invoke(app, [a.format(tmp=tmp_path) for a in args]), message)
    assert not any(tmp_path.iterdir())


def test_choices_outside_the_configs_are_usage_errors(tmp_path):
    assert runner.invoke(app, ["train", str(tmp_path), "--device", "tpu"]).exit_code == 2
    assert runner.invoke(app, ["train", str(tmp_path), "--init", "x", "--freeze", "head"]).exit_code == 2
    assert runner.invoke(app, ["prepare", str(tmp_path), "-o", "x", "--on-error", "retry"]).exit_code == 2
    assert runner.invoke(app, ["export", str(tmp_path), "-o", "x.onnx", "--format", "tflite"]).exit_code == 2


def test_console_script_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "msptcli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"mspt {__version__}"


def test_balltree_writes_patches_readable_by_meshio_and_pyvista(surface, tmp_path):
    before = digest(surface)
    out = tmp_path / "out" / "patches.vtu"
    result = runner.invoke(app, ["balltree", str(surface), "--level", "5", "-o", str(out), "--threads", "2"])
    assert result.exit_code == 0, result.output
    assert "32" in result.output and "wrote" in result.output
    assert digest(surface) == before

    source = meshio.read(surface)
    written = meshio.read(out)
    n = len(source.points)
    assert np.array_equal(written.points, source.points)
    assert np.array_equal(written.point_data["p"], source.point_data["p"])  # fields carried over
    rank = written.point_data["tree_rank"]
    patch = written.point_data["patch"]
    assert np.array_equal(np.sort(rank), np.arange(n))
    sizes = np.bincount(patch)
    assert len(sizes) == 32 and sizes.max() - sizes.min() <= 1
    # Patches follow the order: patch = position in the tree order // patch size.
    assert np.array_equal(patch, np.searchsorted(np.arange(33) * n // 32, rank, side="right") - 1)
    grid = pv.read(out)
    assert grid.n_points == n and "patch" in grid.point_data
    assert [p.name for p in out.parent.iterdir()] == ["patches.vtu"]  # no temporary file left


def test_balltree_on_stl_writes_vtp_and_png(tmp_path):
    out = tmp_path / "geometry.vtp"
    png = tmp_path / "geometry.png"
    result = runner.invoke(
        app, ["balltree", str(EXAMPLE / "geometry.stl"), "--patch-size", "64", "-o", str(out), "--screenshot", str(png)]
    )
    assert result.exit_code == 0, result.output
    surface = pv.read(out)
    assert surface.n_points == pv.read(EXAMPLE / "geometry.stl").n_points
    assert len(np.unique(surface.point_data["patch"])) == 32  # 2296 points / 64 -> 2^5 patches
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_balltree_adaptive_shows_patch_sizes_in_vtu_and_png(tmp_path):
    source = EXAMPLE / "surface.vtu"
    out, png = tmp_path / "adaptive.vtu", tmp_path / "adaptive.png"
    args = ["balltree", str(source), "--level", "5", "--adaptive", "--refine", "2", "-o", str(out)]
    result = runner.invoke(app, [*args, "--screenshot", str(png)])
    assert result.exit_code == 0, result.output
    assert "adaptive on" in result.output and "p, wallShearStress" in result.output
    written = pv.read(out)
    patch, size, depth = (np.asarray(written.point_data[k]) for k in ("patch", "patch_size", "patch_depth"))
    counts = np.bincount(patch)
    assert len(counts) == 32  # the budget: as many patches as the uniform level 5
    assert np.array_equal(size, counts[patch])  # patch_size is the size of the point's patch
    assert depth.min() >= 3 and depth.max() <= 7 and len(np.unique(depth)) > 1  # refined within 5 +- 2
    assert counts.max() > 4 * counts.min()  # sizes really vary
    # Small patches where the pressure varies most: the patch of the largest |dp| is smaller than average.
    p = np.asarray(written.point_data["p"])
    assert size[np.argmax(np.abs(p - np.median(p)))] < np.median(size)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    again = tmp_path / "again.vtu"
    assert runner.invoke(app, [*args[:-1], str(again)]).exit_code == 0
    assert np.array_equal(pv.read(again).point_data["patch"], patch)  # deterministic


def test_balltree_adaptive_on_geometry_of_an_stl(tmp_path):
    out = tmp_path / "geometry.vtp"
    args = ["balltree", str(EXAMPLE / "geometry.stl"), "--level", "5", "--adaptive", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "normals" in result.output
    counts = np.bincount(pv.read(out).point_data["patch"])
    assert len(counts) == 32 and counts.max() > counts.min() + 1


@pytest.mark.parametrize(
    ("make_input", "extra", "message"),
    [
        (lambda d: d / "missing.vtu", [], "no such file"),
        (lambda d: d, [], "is a directory"),
        (lambda d: _write(d / "notes.txt", "hello"), [], "unsupported mesh format '.txt'"),
        (lambda d: _write(d / "garbage.vtu", "this is not xml"), [], "garbage.vtu"),
        (lambda d: _truncated(d / "truncated.vtu"), [], "truncated.vtu"),
        (lambda d: _write(d / "empty.stl", ""), [], "empty.stl"),
        (lambda d: EXAMPLE / "surface.vtu", ["--level", "3", "--patch-size", "8"], "not both"),
        (lambda d: EXAMPLE / "surface.vtu", ["--level", "30"], "deeper than the tree"),
        (lambda d: EXAMPLE / "surface.vtu", ["-o", "{tmp}/out.stl"], "written as one of .vtp, .vtu, .vtk"),
        (lambda d: EXAMPLE / "surface.vtu", ["--screenshot", "{tmp}/shot.jpg"], "written as .png"),
        (lambda d: EXAMPLE / "surface.vtu", ["--adaptive-on", "p"], "give --adaptive too"),
        (lambda d: EXAMPLE / "surface.vtu", ["--adaptive", "--adaptive-on", "q"], "no point array 'q'"),
    ],
)
def test_bad_input_gives_one_line_and_no_output(tmp_path, make_input, extra, message):
    target = make_input(tmp_path)
    args = ["balltree", str(target), *[a.format(tmp=tmp_path / "out") for a in extra]]
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert message in result.output
    assert result.output.count("\n") == 1 and "Traceback" not in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_refuses_to_overwrite_its_input(surface):
    before = digest(surface)
    result = runner.invoke(app, ["balltree", str(surface), "-o", str(surface)])
    assert result.exit_code == 1 and "refusing to overwrite an input" in result.output
    assert digest(surface) == before


def test_usage_error_exits_2():
    result = runner.invoke(app, ["balltree", str(EXAMPLE / "surface.vtu"), "--level", "-1"])
    assert result.exit_code == 2


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _truncated(path: Path) -> Path:
    data = (EXAMPLE / "surface.vtu").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
