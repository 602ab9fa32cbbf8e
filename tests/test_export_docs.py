"""docs/export.md runs as written: every Python block of the page, in sequence, on a model exported by `mspt export`,
gives `mspt predict`'s fields on the same geometry, with ONNX and with TorchScript, for an anchor-query model (the
default) and a whole-cloud model; and the deployment functions (``msptcli/data/deploy.py``) it rests on."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import pyvista as pv
from helpers import ROOT, ok

from msptcli.checkpoint import load_checkpoint
from msptcli.data.anchors import geometry_anchors, seeds_of
from msptcli.data.deploy import graph_fields, graph_inputs, read_sidecar, surface_part
from msptcli.data.features import cloud_inputs, cloud_part, to_physical
from msptcli.errors import InvalidInputError
from msptcli.model.config import AnchorConfig
from msptcli.runtime import predict_queries_averaged, run_exported

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest_plugins = ["helpers"]

DOC = ROOT / "docs" / "export.md"
#: The paths the page's first block sets and the test replaces with its own (nothing else of the page is changed).
PLACEHOLDERS = ("RUN", "ONNX_MODEL", "TORCHSCRIPT_MODEL")
#: |graph's field - mspt predict's| at most this many of the field's standard deviation (the training statistics').
TOLERANCE = 1e-5


def python_blocks(text: str) -> list[str]:
    """Every ```python block of a Markdown page, in order."""
    return re.findall(r"^```python\n(.*?)^```[ \t]*$", text, flags=re.S | re.M)


def with_paths(blocks: list[str], paths: dict[str, Path]) -> list[str]:
    """The blocks with the placeholders of the first one set to ``paths``; each is set there once and nowhere else."""
    first = blocks[0]
    for name, path in paths.items():
        pattern = rf'^{name} = "[^"\n]*"[ \t]*$'
        assert len(re.findall(pattern, first, flags=re.M)) == 1, f"docs/export.md's first block sets no {name}"
        assert not any(re.search(rf"^{name} =", b, flags=re.M) for b in blocks[1:]), f"{name} set again"
        first = re.sub(pattern, f"{name} = {str(path)!r}", first, flags=re.M)
    return [first, *blocks[1:]]


def run_page(paths: dict[str, Path], workdir: Path, *, until: str | None = None) -> dict:
    """Run the page's Python blocks in one namespace, in ``workdir`` (where ``examples/`` is the repository's),
    until one defines ``until`` (None: every block); the namespace."""
    blocks = with_paths(python_blocks(DOC.read_text()), paths)
    workdir.mkdir(parents=True, exist_ok=True)
    if not (workdir / "examples").exists():
        (workdir / "examples").symlink_to(ROOT / "examples")
    namespace: dict = {"__name__": "docs_export_md"}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        for i, block in enumerate(blocks, start=1):
            exec(compile(block, f"docs/export.md, python block {i}", "exec"), namespace)
            if until is not None and until in namespace:
                break
    return namespace


@dataclasses.dataclass
class Page:
    run: Path
    onnx: Path
    scripted: Path
    namespace: dict
    workdir: Path
    predicted: dict[str, pv.DataSet]  # mspt predict's meshes, 'surface' and 'volume', on the page's geometry


def predict_like_the_page(run: Path, namespace: dict, workdir: Path, out: Path) -> dict[str, pv.DataSet]:
    """``mspt predict RUN SURFACE --volume V`` (default options: 3 anchor draws for the spread), V holding the
    page's volume points."""
    volume = workdir / "points.vtu"
    pv.PolyData(np.asarray(namespace["volume_points"])).cast_to_unstructured_grid().save(volume)
    ok("predict", run, workdir / namespace["SURFACE"], "--volume", volume, "-o", out)
    (surface,) = [p for p in out.glob("*.vtp")]
    (grid,) = [p for p in out.glob("*_volume.vtu")]
    return {"surface": pv.read(surface), "volume": pv.read(grid)}


def errors(fields: dict, predicted: dict[str, pv.DataSet], sidecar) -> dict[str, float]:
    """Per field, max |fields - predict's| over its points and components, in standard deviations of the field
    (each component's, from the training statistics)."""
    out = {}
    for part, mesh in predicted.items():
        for name, values in fields[part].items():
            want = np.asarray(mesh.point_data[name], dtype=np.float64).reshape(values.shape)
            std = np.asarray(getattr(sidecar.stats, part)[name].std)
            out[f"{part}/{name}"] = float((np.abs(values - want) / std).max())
    return out


def exported_page(tmp_path_factory, run: Path) -> Page:
    folder = tmp_path_factory.mktemp("exported")
    onnx, scripted = folder / "model.onnx", folder / "model.pt"
    ok("export", run, "-o", onnx)
    ok("export", run, "-o", scripted)
    workdir = folder / "work"
    namespace = run_page({"RUN": run, "ONNX_MODEL": onnx, "TORCHSCRIPT_MODEL": scripted}, workdir)
    predicted = predict_like_the_page(run, namespace, workdir, folder / "predicted")
    return Page(run, onnx, scripted, namespace, workdir, predicted)


@pytest.fixture(scope="module")
def anchor_page(tmp_path_factory, trained) -> Page:
    """The page on the tiny trained run, an anchor-query model like the default."""
    config = load_checkpoint(trained.run).model.config
    default = AnchorConfig()
    assert config.anchors is not None and config.backbone == "mspt" and not config.rotate_trees
    assert (config.anchors.reads, config.anchors.draws, config.anchors.seed) == (default.reads, 1, default.seed)
    return exported_page(tmp_path_factory, trained.run)


@pytest.fixture(scope="module")
def whole_cloud_page(tmp_path_factory, trained) -> Page:
    """The page on a run of the tiny config without anchors: every point runs the blocks."""
    run = tmp_path_factory.mktemp("whole_cloud") / "run"
    data, config = trained.prepared.data, trained.prepared.config
    ok("train", data, "-o", run, "-c", config, "--set", "model.anchors=null", "--set", "train.epochs=1")
    assert load_checkpoint(run).model.config.anchors is None
    return exported_page(tmp_path_factory, run)


@pytest.fixture(params=["anchors", "whole-cloud"])
def page(request) -> Page:
    return request.getfixturevalue("anchor_page" if request.param == "anchors" else "whole_cloud_page")


def test_the_page_has_the_blocks_the_test_runs():
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 5
    text = "\n".join(blocks)
    for call in ("read_sidecar(", "graph_inputs(", "graph_fields(", "ort.InferenceSession(", "torch.jit.load("):
        assert call in text, call
    with pytest.raises(AssertionError, match="sets no ONNX_MODEL"):  # the substitution is checked
        with_paths(["x = 1"], {"ONNX_MODEL": Path("m.onnx")})


def test_every_block_of_the_page_gives_mspt_predicts_fields(page):
    ns, sidecar = page.namespace, read_sidecar(page.onnx)
    runs = ns["runs"]
    for fields in (ns["fields"], ns["scripted_fields"]):  # onnxruntime, TorchScript
        assert {p: list(f) for p, f in fields.items()} == {
            "surface": [n for n, _ in sidecar.channels.surface],
            "volume": [n for n, _ in sidecar.channels.volume],
        }
        assert len(fields["surface"]["p"]) == runs.num_surface == 2048  # the STL's points
        assert len(fields["volume"]["U"]) == runs.num_volume == len(ns["volume_points"])
        worst = errors(fields, page.predicted, sidecar)
        assert max(worst.values()) <= TOLERANCE, worst
    # every row of the cloud answered once per draw; an anchor model's queries in several chunks
    rows = np.sort(np.concatenate(runs.rows))
    assert np.array_equal(rows, np.repeat(np.arange(runs.num_surface + runs.num_volume), runs.draws))
    anchors = sidecar.model_config.anchors is not None
    assert (len(runs) > 1) == anchors and runs.draws == 1
    # the page's other blocks did what they say
    written = pv.read(page.workdir / "design.vtp")
    assert np.array_equal(np.asarray(written.point_data["p"]).reshape(-1), ns["fields"]["surface"]["p"].reshape(-1))
    assert ns["difference"] < 1e-4 and (page.workdir / "copy.onnx").is_file()
    side = json.loads(Path(f"{page.onnx}.json").read_text())
    assert "graph_inputs" in side["deploy"] and ("FIRST_ROTATION" in side["inputs"]["order"]) == anchors


def test_the_comparison_fails_when_the_anchors_tree_is_not_turned(anchor_page, tmp_path, monkeypatch):
    """The anchors ordered by a plain ball tree (not on the coordinates turned by FIRST_ROTATION) fall into other
    patches: the page's fields are then far from mspt predict's, and the comparison says so."""
    import msptcli.model.anchors

    monkeypatch.setattr(msptcli.model.anchors, "FIRST_ROTATION", np.eye(3))
    paths = {"RUN": anchor_page.run, "ONNX_MODEL": anchor_page.onnx, "TORCHSCRIPT_MODEL": anchor_page.scripted}
    ns = run_page(paths, tmp_path / "work", until="fields")
    worst = errors(ns["fields"], anchor_page.predicted, read_sidecar(anchor_page.onnx))
    assert max(worst.values()) > 1e3 * TOLERANCE, worst


def test_anchor_draws_are_averaged_as_predict_averages_them(anchor_page):
    """With ``anchors.draws: 2`` the calls cover two draws of anchors (seeds 0 and 1), and the fields are their mean,
    as ``mspt predict``'s path (``predict_queries_averaged``) gives it."""
    ckpt = load_checkpoint(anchor_page.run)
    one = read_sidecar(anchor_page.onnx)
    anchors = one.model_config.anchors.model_copy(update={"draws": 2})
    two = dataclasses.replace(one, model_config=one.model_config.model_copy(update={"anchors": anchors}))
    surface = pv.read(ROOT / "examples" / "ahmed" / "case_0005" / "geometry.stl")
    runs = graph_inputs(two, surface, chunk_queries=1000)
    assert runs.draws == 2 and len(runs) == 2 * 3  # 2,048 queries in chunks of 1,000, per draw
    fields = graph_fields(two, runs, [run_exported(anchor_page.onnx, inputs) for inputs in runs.inputs])

    arrays = surface_part(surface, one.surface_location)
    points, inputs = cloud_inputs(one.stats, cloud_part(arrays, "surface"))
    draws = [geometry_anchors(surface, one.stats, d, one.volume_template) for d in seeds_of(anchors)]
    (pred,) = predict_queries_averaged(ckpt.model.float(), [([p], [i]) for p, i in draws], [points], [inputs],
                                       bf16=False)  # fmt: skip
    want = to_physical(one.stats, one.channels, pred, len(points))["surface"]
    first = graph_inputs(one, surface)
    single = graph_fields(one, first, [run_exported(anchor_page.onnx, i) for i in first.inputs])["surface"]
    for name, values in fields["surface"].items():
        std = np.asarray(one.stats.surface[name].std)
        assert (np.abs(values - want[name]) / std).max() <= TOLERANCE, name
        assert (np.abs(values - single[name]) / std).max() > 1e3 * TOLERANCE, name  # the second draw counts


def test_a_given_surface_is_not_modified(anchor_page):
    surface = pv.read(ROOT / "examples" / "ahmed" / "case_0005" / "geometry.stl")
    before = surface.copy(deep=True)
    graph_inputs(anchor_page.onnx, surface)
    assert surface == before and list(surface.point_data) == list(before.point_data)


def test_deployment_errors_are_one_clear_line(anchor_page, tmp_path):
    with pytest.raises(InvalidInputError, match=r"no sidecar .*missing\.onnx\.json: `mspt export RUN -o FILE`"):
        read_sidecar(tmp_path / "missing.onnx")
    (tmp_path / "other.json").write_text('{"a": 1}')
    with pytest.raises(InvalidInputError, match="not a sidecar of `mspt export` \\(no stats, outputs"):
        read_sidecar(tmp_path / "other.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InvalidInputError, match="not a sidecar of `mspt export` \\(not JSON"):
        read_sidecar(tmp_path / "bad.json")
    side = json.loads(Path(f"{anchor_page.onnx}.json").read_text())
    with pytest.raises(InvalidInputError, match="a transient model's graph takes one step's inputs"):
        read_sidecar({**side, "transient": {}})
    case = ROOT / "examples" / "ahmed" / "case_0005"
    with pytest.raises(InvalidInputError, match=r"volume\.vtu: is not a surface mesh"):
        graph_inputs(side, case / "volume.vtu")
    with pytest.raises(InvalidInputError, match=r"volume_points must be a finite \(m, 3\) array, got shape \(4, 2\)"):
        graph_inputs(side, case / "geometry.stl", np.zeros((4, 2)))
    surface_only = {**side, "outputs": {**side["outputs"], "channels": {**side["outputs"]["channels"], "volume": []}}}
    with pytest.raises(InvalidInputError, match="predicts no volume fields: leave volume_points out"):
        graph_inputs(surface_only, case / "geometry.stl", np.zeros((4, 3)))
    runs = anchor_page.namespace["runs"]
    with pytest.raises(InvalidInputError, match=rf"1 outputs for {len(runs)} calls of the graph"):
        graph_fields(side, runs, [np.zeros((1, 8))])
    with pytest.raises(InvalidInputError, match=r"output 0 has shape \(1, 8\)"):
        graph_fields(side, runs, [np.zeros((1, 8))] * len(runs))
