"""What the tests share: example paths, the one tiny config, small meshes built in code, a write -> read
round trip, running mspt, checking its outputs, and one prepared dataset / trained run / prediction.

Test modules import names from here and load it as a pytest plugin (``pytest_plugins = ["helpers"]``),
so the session-scoped fixtures below are built once for the whole run, whichever module asks first:

    pipeline_cases  three shipped OpenFOAM cases copied to a temporary folder (inputs we can hash)
    design_case     a fourth case (geometry.stl, surface.vtu, volume.vtu, params.json) to predict
    prepared        `mspt prepare` of the three cases with the tiny config
    trained         `mspt train` of that dataset: two epochs of a width-16 model
    predicted_stl   `mspt predict RUN geometry.stl --volume-points 2000`

PYTEST_DONT_REWRITE: the test modules import this file before pytest could rewrite its asserts, so the
helpers give their own assertion messages.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner, Result

from msptcli.cli import app

if TYPE_CHECKING:
    import pyvista as pv

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "ahmed"
EXAMPLE_CASE = EXAMPLES / "case_0000"
EXAMPLE_SURFACE = EXAMPLE_CASE / "surface.vtu"
CASES = ("case_0000", "case_0001", "case_0002")  # prepared and trained on
DESIGN = "case_0003"  # predicted
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_VOLUME_POINTS = 1500

#: The one tiny config of the tests: prepare + train + predict of three cases take seconds on two cores.
TINY_CONFIG = {
    "data": {"max_volume_points": MAX_VOLUME_POINTS, "split": {"val": ["case_0002"], "test": []}},
    "model": {"width": 16, "num_heads": 2, "depth": 1, "anchors": {"surface": 256, "volume": 256}},
    "train": {"epochs": 2, "surface_points": 512, "volume_points": 512, "warmup_epochs": 1, "val_every": 1},
}

runner = CliRunner()


# --- small meshes built in code ----------------------------------------------------------------------


def box_surface(size: float = 1.0) -> pv.PolyData:
    """A closed box of 12 outward-oriented triangles, ``size`` on a side, corner at the origin."""
    import pyvista as pv

    return pv.Box(bounds=(0, size, 0, size, 0, size)).triangulate().clean()


def sphere_surface(resolution: int = 16) -> pv.PolyData:
    """A closed triangulated unit sphere."""
    import pyvista as pv

    return pv.Sphere(radius=1.0, theta_resolution=resolution, phi_resolution=resolution)


def points_only(n: int = 10, seed: int = 0) -> pv.PolyData:
    """A cloud of ``n`` points with vertex cells only: no faces."""
    import pyvista as pv

    return pv.PolyData(np.random.default_rng(seed).random((n, 3)))


def coincident_surface() -> pv.PolyData:
    """Two triangles whose corners all lie on one point: faces of zero area."""
    import pyvista as pv

    return pv.PolyData.from_regular_faces(np.zeros((4, 3)), np.array([[0, 1, 2], [1, 2, 3]]))


def roundtrip(mesh: pv.DataSet, path: Path) -> pv.DataSet:
    """Write ``mesh`` with mspt's writer, read it back with mspt's reader; the input must be unchanged."""
    from msptcli.io.meshes import read_mesh, write_mesh

    before = mesh.copy(deep=True)
    write_mesh(mesh, path)
    back = read_mesh(path)
    assert mesh == before, "write_mesh modified its input"
    assert back.n_points == mesh.n_points and back.n_cells == mesh.n_cells, (back, mesh)
    return back


def tiny_config_file(path: Path, **sections: dict) -> Path:
    """The tiny config (one training thread) with ``sections`` merged in, as YAML at ``path``."""
    return write_config(path, train={"threads": 1, **sections.pop("train", {})}, **sections)


# --- running mspt ------------------------------------------------------------------------------------


def invoke(*args: object) -> Result:
    """``mspt ARGS`` in this process (stdout and stderr together in ``result.output``)."""
    return runner.invoke(app, [str(a) for a in args])


def ok(*args: object) -> Result:
    """``mspt ARGS``, which must succeed."""
    result = invoke(*args)
    assert result.exit_code == 0, f"mspt {' '.join(map(str, args))} failed:\n{result.output}"
    return result


#: Skip marker of the tests that run Debian's ParaView under a virtual X display.
needs_pvpython = pytest.mark.skipif(
    shutil.which("pvpython") is None or shutil.which("xvfb-run") is None,
    reason="needs Debian's ParaView (pvpython) and xvfb-run: apt-get install paraview xvfb xauth",
)


def run_pvpython(script: Path, *args: object, timeout: float = 180) -> subprocess.CompletedProcess:
    """``pvpython SCRIPT ARGS`` under ``xvfb-run`` (ParaView needs an X display even off screen).

    The server number starts from one of our own (two test runs at once would both try :99). A virtual
    display that dies under it ("bad X server connection", seen on a loaded machine) is an environment
    failure, not ParaView's answer: it is tried once more on another server, and only then reported.
    """
    for attempt in range(2):
        server = 100 + (os.getpid() * 7 + attempt * 1000 + time.monotonic_ns() // 1000) % 30_000
        xvfb = ["xvfb-run", "-a", "-n", str(server), "-s", "-screen 0 1280x1024x24"]
        done = subprocess.run([*xvfb, "pvpython", str(script), *map(str, args)], capture_output=True, text=True,
                              timeout=timeout)  # fmt: skip
        if done.returncode == 0 or "bad X server connection" not in done.stdout + done.stderr:
            return done
    return done


def torchrun(*args: object, nproc: int = 2, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone ARGS`` with one thread a rank. Each rank's own output is teed
    into ours, each line tagged ``[default<rank>]:``: when a rank fails, ``ranks_said`` shows why (torchrun alone
    says only which rank died of which signal)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone", "--tee", "3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def ranks_said(done: subprocess.CompletedProcess, *, chars: int = 4000) -> str:
    """The end of what the ranks of a ``torchrun`` printed (their tagged lines), for an assertion message."""
    tagged = [line for line in (done.stdout + done.stderr).splitlines() if re.match(r"\[default\d+\]:", line)]
    return "\n".join(tagged)[-chars:] or done.stderr[-chars:]


def mspt_command() -> list[str]:
    """The console script of this environment, else ``python -m msptcli``."""
    script = Path(sys.executable).with_name("mspt")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "msptcli"]


def spawn(args: list[object], log_dir: Path) -> subprocess.Popen:
    """``mspt ARGS`` as a real process in its own process group; output to files (a full pipe never blocks it)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "COLUMNS": "200"}
    with (log_dir / "stdout.txt").open("w") as out, (log_dir / "stderr.txt").open("w") as err:
        return subprocess.Popen(
            [*mspt_command(), *map(str, args)], stdout=out, stderr=err, start_new_session=True, env=env
        )


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen, *, timeout: float = 120, what: str) -> None:
    """Poll ``condition`` every 5 ms while ``proc`` runs; fail if it ends first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the process ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            kill_group(proc, signal.SIGKILL)
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def finish(proc: subprocess.Popen, *, timeout: float) -> int:
    """The exit code of ``proc``; killed (and the test failed) if it runs past ``timeout`` seconds."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc, signal.SIGKILL)
        pytest.fail(f"mspt ran past {timeout} s")


def kill_group(proc: subprocess.Popen, sig: int) -> int:
    """Send ``sig`` to the process group of ``proc`` (started by :func:`spawn`) and wait for it to end."""
    os.killpg(proc.pid, sig)
    return proc.wait(timeout=120)


# --- checking outputs --------------------------------------------------------------------------------


def one_line_error(result: Result, *needles: str) -> str:
    """Exit code 1 and, blank lines aside, exactly one line of output: ``error: ...`` with every needle."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line of output, got {len(lines)}:\n{result.output}"
    assert lines[0].startswith("error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def temp_files(folder: Path) -> list[Path]:
    """Temporary files of ``atomic_output`` (``.NAME.XXXX.tmpSUFFIX``) anywhere under ``folder``."""
    return sorted(p for p in folder.rglob(".*") if ".tmp" in p.name) if folder.exists() else []


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under ``folder``."""
    return {str(p.relative_to(folder)): digest(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def write_config(path: Path, **sections: dict) -> Path:
    """The tiny config with ``sections`` merged in, as YAML at ``path``."""
    config = {name: {**TINY_CONFIG.get(name, {}), **sections.get(name, {})} for name in {*TINY_CONFIG, *sections}}
    path.write_text(yaml.safe_dump(config))
    return path


def is_png(path: Path, *, min_bytes: int = 10_000) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC and path.stat().st_size > min_bytes


def distinct_colours(path: Path) -> int:
    """Number of distinct RGB colours of a PNG: a blank or one-colour image has very few."""
    import matplotlib.image
    import numpy as np

    rgb = (matplotlib.image.imread(path)[..., :3] * 255).astype(np.uint8).reshape(-1, 3)
    return len(np.unique(rgb, axis=0))


# --- the shared pipeline -----------------------------------------------------------------------------


@dataclass
class Prepared:
    cases: list[Path]
    config: Path
    data: Path
    result: Result


@dataclass
class Trained:
    prepared: Prepared
    run: Path
    result: Result


@dataclass
class Predicted:
    geometry: Path
    out: Path
    result: Result


@pytest.fixture(scope="session")
def pipeline_cases(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("cases")
    for name in CASES:
        shutil.copytree(EXAMPLES / name, root / name)
    return [root / name for name in CASES]


@pytest.fixture(scope="session")
def design_case(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("designs") / DESIGN
    shutil.copytree(EXAMPLES / DESIGN, folder)
    return folder


@pytest.fixture(scope="session")
def input_digests(pipeline_cases, design_case) -> dict[str, dict[str, str]]:
    """Every input file's hash, taken before any command ran on it."""
    return {str(folder): tree_digest(folder) for folder in [*pipeline_cases, design_case]}


@pytest.fixture(scope="session")
def prepared(tmp_path_factory, pipeline_cases, input_digests) -> Prepared:
    work = tmp_path_factory.mktemp("prepared")
    config = write_config(work / "config.yaml")
    data = work / "data"
    result = ok("prepare", *pipeline_cases, "-o", data, "-c", config)
    return Prepared(pipeline_cases, config, data, result)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, prepared) -> Trained:
    run = tmp_path_factory.mktemp("trained") / "run"
    result = ok("train", prepared.data, "-o", run, "-c", prepared.config)
    return Trained(prepared, run, result)


@pytest.fixture(scope="session")
def predicted_stl(tmp_path_factory, trained, design_case) -> Predicted:
    out = tmp_path_factory.mktemp("predicted_stl")
    geometry = design_case / "geometry.stl"
    result = ok("predict", trained.run, geometry, "--volume-points", 2000, "-o", out)
    return Predicted(geometry, out, result)
