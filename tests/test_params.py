"""A case's params file: one reader (data/params.py) with one behaviour on a bad file, through prepare and
predict alike, and predict finding the file by the checkpoint's ``data.params_file``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import EXAMPLES, invoke, one_line_error

from msptcli.checkpoint import load_checkpoint
from msptcli.data.cases import find_params
from msptcli.data.params import positive_param, read_params
from msptcli.errors import InvalidInputError
from msptcli.predict import output_names, predict_geometry

pytest_plugins = ["helpers"]

BAD_FILES = {"not-json": '{"frontal_area": 0.1', "not-an-object": "[0.1, 0.2]"}
REASONS = {"not-json": "not valid JSON", "not-an-object": "expected a JSON object"}


def test_read_params(tmp_path):
    assert read_params(None) == {}
    good = tmp_path / "params.json"
    good.write_text('{"frontal_area": 0.1}')
    assert read_params(good) == {"frontal_area": 0.1}
    for kind, text in BAD_FILES.items():
        good.write_text(text)
        with pytest.raises(InvalidInputError, match=f"{good}: {REASONS[kind]}"):
            read_params(good)


def test_positive_param(tmp_path):
    path = tmp_path / "params.json"
    assert positive_param({"a": 2}, "a", path) == 2.0
    assert positive_param({"a": 2}, "b", path) is None and positive_param({"a": 2}, None, path) is None
    for bad in (0, -1.0, float("nan"), True, "2"):
        with pytest.raises(InvalidInputError, match=f"{path}: a must be a positive number"):
            positive_param({"a": bad}, "a", path)


def test_find_params(tmp_path):
    assert find_params(tmp_path, "*.json") is None
    (tmp_path / "specs.json").write_text("{}")
    assert find_params(tmp_path, "*.json") == tmp_path / "specs.json"
    assert find_params(tmp_path, None) is None
    (tmp_path / "other.json").write_text("{}")
    assert find_params(tmp_path, "*.json") is None  # several: none is the case's


def case_with_bad_params(root: Path, text: str) -> Path:
    folder = root / "case_bad"
    folder.mkdir(parents=True)
    for f in ("surface.vtu", "volume.vtu"):
        (folder / f).symlink_to(EXAMPLES / "case_0000" / f)
    (folder / "params.json").write_text(text)
    return folder


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_prepare_refuses_bad_params(tmp_path, kind):
    case = case_with_bad_params(tmp_path, BAD_FILES[kind])
    out = tmp_path / "data"
    one_line_error(invoke("prepare", case, "-o", out), str(case / "params.json"), REASONS[kind])
    assert not (out / "manifest.json").exists()


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_predict_refuses_bad_params_beside_the_geometry(trained, design_case, tmp_path, kind):
    design = tmp_path / "design"
    design.mkdir()
    shutil.copy(design_case / "geometry.stl", design)
    (design / "params.json").write_text(BAD_FILES[kind])
    out = tmp_path / "out"
    result = invoke("predict", trained.run, design / "geometry.stl", "--volume-points", 0, "-o", out)
    one_line_error(result, str(design / "params.json"), REASONS[kind])
    assert not out.exists() or list(out.iterdir()) == []


def test_predict_finds_the_params_by_the_checkpoint_config(trained, design_case, tmp_path):
    ckpt = load_checkpoint(trained.run)
    data = ckpt.config.data.model_copy(update={"params_file": "*_specs.json"})
    ckpt.config = ckpt.config.model_copy(update={"data": data})
    design = tmp_path / "design"
    design.mkdir()
    shutil.copy(design_case / "geometry.stl", design)
    (design / "params.json").write_text("not read: not the configured params file")
    (design / "body_specs.json").write_text(json.dumps({"frontal_area": 0.25, "Cd_fields": 0.3}))
    result = predict_geometry(ckpt, design / "geometry.stl", tmp_path / "out", volume_points=0, preview=False)
    assert result.coefficients is not None
    assert result.coefficients.reference_area == 0.25
    assert result.coefficients.reference_area_source == "body_specs.json frontal_area"
    assert result.solver == {"Cd_fields": 0.3}
    names = output_names([design / "geometry.stl"], params_file="*_specs.json")
    assert names == ["design_geometry"]  # a case folder by its params file
    assert output_names([design / "geometry.stl"], params_file="none.json") == ["geometry"]
