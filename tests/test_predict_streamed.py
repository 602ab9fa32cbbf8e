"""``mspt predict`` at size: the meshes streamed to their files equal the ones VTK writes whole, the queries
streamed in chunks equal the queries in one chunk, the long phases report progress, the throughput is said,
and a large surface's preview is rendered coarsened."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import pyvista as pv
from helpers import sphere_surface, temp_files

import msptcli.predict as predict_module
from msptcli.checkpoint import load_checkpoint
from msptcli.io.meshes import write_mesh
from msptcli.predict import predict_geometry, preview_surface

pytest_plugins = ["helpers"]


def arrays_of(mesh: pv.DataSet) -> dict[str, np.ndarray]:
    return {f"{where}/{name}": np.asarray(getattr(mesh, where)[name])
            for where in ("point_data", "cell_data") for name in getattr(mesh, where).keys()}  # noqa: SIM118  # fmt: skip


@pytest.fixture(scope="module")
def large_body(tmp_path_factory, design_case) -> Path:
    """The design's STL subdivided to about 147,000 points."""
    surface = pv.read(design_case / "geometry.stl").clean().subdivide(3, "linear")
    path = tmp_path_factory.mktemp("large") / "body.vtp"
    surface.save(path)
    return path


@pytest.mark.slow
def test_streamed_prediction_equals_the_whole_one(trained, large_body, tmp_path, monkeypatch):
    """About 200,000 points (147k surface, 60k volume), three anchor draws: streamed (small query chunks, the
    streaming writer) and whole (one chunk, VTK's writer through ``write_mesh``) give the same files' arrays.
    The surface has enough points for the forces: it is queried once (no "forces" phase)."""
    ckpt = load_checkpoint(trained.run)
    kw = dict(volume_points=60_000, preview=False, uncertainty=3)
    seen: list[tuple[str, int, int]] = []
    streamed = predict_geometry(ckpt, large_body, tmp_path / "streamed", chunk_points=1 << 14,
                                progress=lambda *args: seen.append(args), **kw)  # fmt: skip
    monkeypatch.setattr(predict_module, "write_prediction",
                        lambda mesh, path, *, inputs, progress=None: write_mesh(mesh, path, inputs=inputs))  # fmt: skip
    whole = predict_geometry(ckpt, large_body, tmp_path / "whole", chunk_points=None, **kw)

    for name in ("body.vtp", "body_volume.vtu"):
        a, b = pv.read(tmp_path / "streamed" / name), pv.read(tmp_path / "whole" / name)
        assert np.array_equal(a.points, b.points) and a.n_cells == b.n_cells
        arrays_a, arrays_b = arrays_of(a), arrays_of(b)
        assert sorted(arrays_a) == sorted(arrays_b) and any(k.endswith("_std") for k in arrays_a)
        for key in arrays_a:
            np.testing.assert_allclose(arrays_a[key], arrays_b[key], rtol=1e-5, atol=1e-6, err_msg=key)
    assert streamed.points == whole.points == 60_000 + pv.read(large_body).n_points
    assert streamed.coefficients is not None and whole.coefficients is not None
    assert streamed.coefficients.cd == pytest.approx(whole.coefficients.cd, rel=1e-5)
    assert streamed.coefficients.cd_std is not None and streamed.coefficients.cd_std > 0
    assert streamed.coefficients.integrated_on.endswith(f"refined to {pv.read(large_body).n_points:,} points")
    summary = json.loads((tmp_path / "streamed" / "body.json").read_text())
    assert summary["seconds"] > 0 and summary["points_per_second"] == pytest.approx(
        summary["num_points"] / summary["seconds"], rel=1e-2)  # fmt: skip
    assert temp_files(tmp_path) == []

    phases: dict[str, list[tuple[int, int]]] = {}
    for phase, done, total in seen:
        phases.setdefault(phase, []).append((done, total))
    assert set(phases) == {"distances", "queries", "writing body.vtp", "writing body_volume.vtu"}
    for phase, calls in phases.items():
        dones = [d for d, _ in calls]
        assert dones == sorted(dones) and dones[-1] == calls[-1][1], phase  # rising to the total
        assert len({t for _, t in calls}) == 1, phase
    assert phases["distances"][-1][1] == 60_000
    assert phases["queries"][-1][1] == 3 * streamed.points  # every query of every draw
    assert len(phases["queries"]) >= 3 * streamed.points // (1 << 14)  # chunk by chunk


def test_the_throughput_is_said(predicted_stl):
    summary = json.loads(next(predicted_stl.out.glob("*.json")).read_text())
    line = next(line for line in predicted_stl.result.output.splitlines() if "points/s" in line)
    assert re.fullmatch(rf"{summary['num_points']:,} points in [\d.]+ s \([\d,]+ points/s\)", line.strip()), line
    assert summary["points_per_second"] > 0


@pytest.mark.parametrize("at_cells", [False, True])
def test_preview_surface_is_coarser_and_keeps_the_field(at_cells):
    surface = sphere_surface(200)  # 39,600 triangles
    values = surface.cell_centers().points[:, 2] if at_cells else surface.points[:, 2]
    (surface.cell_data if at_cells else surface.point_data)["p"] = values.astype(np.float32)
    surface.point_data["other"] = np.zeros(surface.n_points)
    coarse = preview_surface(surface, "p", at_cells=at_cells, divisions=30)
    assert 100 < coarse.n_cells < surface.n_cells // 10
    assert list(coarse.cell_data.keys()) == ["p"] and "other" not in coarse.point_data
    p = np.asarray(coarse.cell_data["p"])
    assert p.min() >= values.min() - 1e-6 and p.max() <= values.max() + 1e-6 and p.std() > 0.1
    assert "other" in surface.point_data  # the given surface keeps its arrays
