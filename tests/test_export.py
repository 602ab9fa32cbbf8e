"""Export: ONNX and TorchScript graphs traced on one batch run any other batch in their own runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from msptcli.errors import InvalidInputError, MsptError
from msptcli.model import MSPT, ModelConfig
from msptcli.runtime import (
    LAYOUT_INPUTS,
    PackedClouds,
    export_model,
    layout_inputs,
    pack_clouds,
    query_inputs,
    random_example,
    run_exported,
    verify_export,
)

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
pytest_plugins = ["helpers"]

VARIANTS = {  # together: every pooling, Q = 1, 2, 4, every patch rule
    "mean-keys": {},
    "max-keys-q2": {"pooling": "max", "num_supernodes": 2},
    "softmax-keys-q4": {"pooling": "softmax", "num_supernodes": 4},
    "mean-keys-q2-l8": {"num_supernodes": 2, "patch_size": 8},
    "max-keys-k2": {"pooling": "max", "num_patches": 2},
    "softmax-keys-q4-k4": {"pooling": "softmax", "num_supernodes": 4, "num_patches": 4},
}
EXAMPLE_SIZES = [150, 40]  # the traced batch
PADDED_SIZES = [700, 33, 1, 130]  # another N, several clouds of different sizes, a single point
UNPADDED_SIZES = [256]  # a power of two: every patch and sub-run full, no key bias


def make(seed: int = 0, in_features: int = 3, **overrides) -> MSPT:
    torch.manual_seed(seed)
    cfg = {"width": 32, "num_heads": 4, "depth": 2, "anchors": None, **overrides}  # the plain graph; anchors below
    return MSPT(ModelConfig(**cfg), in_features=in_features, out_features=2)


def batch(model: MSPT, sizes: list[int], seed: int = 1) -> PackedClouds:
    """Random clouds of ``sizes`` points, packed for ``model``."""
    rng = np.random.default_rng(seed)
    points = [rng.normal(size=(n, 3)) for n in sizes]
    features = [rng.normal(size=(n, model.in_features)).astype(np.float32) for n in sizes]
    return pack_clouds(points, features, model.config)


@pytest.fixture(scope="module", params=[(v, f) for f in ("onnx", "torchscript") for v in VARIANTS], ids="-".join)
def exported(request, tmp_path_factory) -> tuple[MSPT, Path]:
    variant, fmt = request.param
    model = make(**VARIANTS[variant])
    example = batch(model, EXAMPLE_SIZES, seed=0)
    path = tmp_path_factory.mktemp("export") / f"{variant}.{fmt}"
    assert export_model(model, path, fmt=fmt, example=example) == path
    return model, path


@pytest.mark.parametrize("sizes", [PADDED_SIZES, UNPADDED_SIZES], ids=["padded", "unpadded"])
def test_exported_graph_equals_pytorch_on_other_batches(exported, sizes):
    model, path = exported
    packed = batch(model, sizes)
    assert (packed.layout.whole.key_bias is None) == (sizes == UNPADDED_SIZES)
    assert verify_export(path, model, packed, atol=1e-4, rtol=1e-4) < 1e-4


@pytest.mark.parametrize("exported", [(v, "onnx") for v in VARIANTS], ids="-".join, indirect=True)
def test_onnx_graph_has_named_symbolic_axes(exported):
    model, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["features", *LAYOUT_INPUTS]
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert shapes["features"] == ["num_points", model.in_features]
    assert shapes["patch_index"] == ["num_patches", "patch_len"]
    assert shapes["key_bias"] == ["num_patches", 1, 1, "num_keys"]
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("prediction", ["num_points", 2])]


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_verification_fails_for_another_model(tmp_path, fmt):
    # The comparison is real: the same architecture with other weights is refused.
    path = export_model(make(seed=0), tmp_path / f"m.{fmt}", fmt=fmt)
    other = make(seed=1)
    packed = batch(other, PADDED_SIZES)
    with pytest.raises(MsptError, match="disagrees with PyTorch: max abs difference"):
        verify_export(path, other, packed)
    with torch.no_grad():  # and a small change of one weight too
        model = make(seed=0)
        model.head.bias += 1e-2
    with pytest.raises(MsptError, match="disagrees"):
        verify_export(path, model, packed)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize(
    ("rotate", "reads"),
    [(False, "patch"), (True, "patch"), (True, "nearest"), (False, "blend")],
    ids=["one-tree", "rotated-trees", "nearest-anchors", "two-patches-blended"],
)
def test_anchor_query_models_export_as_one_graph(tmp_path, fmt, rotate, reads):
    anchors = {"surface": 64, "volume": 64, "reads": reads, "neighbours": 16}
    model = make(anchors=anchors, rotate_trees=rotate, fourier_features=2)
    path = export_model(model, tmp_path / f"m.{fmt}", fmt=fmt)
    example = random_example(model, (700, 333, 41), seed=3)  # other clouds than the traced ones
    names = list(query_inputs(example))
    assert names[: len(LAYOUT_INPUTS) + 1] == ["features", *LAYOUT_INPUTS]
    assert ("tree_reorder_1" in names) == rotate and names[len(LAYOUT_INPUTS) + 1] == "query_features"
    assert ("query_key_bias" in names) == (reads == "nearest") and "query_slot_0" in names
    assert ("query_second_weight" in names) == (reads == "blend")
    assert verify_export(path, model, example) < 1e-4
    with torch.no_grad():  # the check can fail: a small change of one weight is seen
        model.head.bias += 1e-2
    with pytest.raises(MsptError, match="disagrees"):
        verify_export(path, model, example)


def test_layout_inputs_names_dtypes_and_zero_bias():
    model = make()
    packed = batch(model, UNPADDED_SIZES)
    arrays = layout_inputs(packed)
    assert list(arrays) == ["features", *LAYOUT_INPUTS]
    assert {k: a.dtype for k, a in arrays.items()} == {
        k: np.dtype(np.float32 if k in ("features", "key_bias") else np.int64) for k in arrays
    }
    p, length = arrays["patch_index"].shape
    assert arrays["key_bias"].shape == (p, 1, 1, length + arrays["sub_index"].shape[1])
    assert not arrays["key_bias"].any()
    same = layout_inputs(packed.layout, packed.features.double())  # a bare layout and float64 features
    assert all(np.array_equal(same[k], arrays[k]) for k in arrays)
    with pytest.raises(InvalidInputError, match="needs the features"):
        layout_inputs(packed.layout)
    with pytest.raises(InvalidInputError, match=r"features must be \(256, F\)"):
        layout_inputs(packed, features=packed.features[:10])


def test_model_is_not_modified_and_float64_is_exported_as_float32(tmp_path):
    model = make(pooling="softmax").double().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = export_model(model, tmp_path / "m.pt", fmt="torchscript")
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    packed = batch(model, PADDED_SIZES)
    assert run_exported(path, layout_inputs(packed)).dtype == np.float32
    assert verify_export(path, model, packed) < 1e-4  # float32 graph against the float64 model


def test_output_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    path = tmp_path / "out" / "model.pt"
    path.parent.mkdir()
    path.write_bytes(b"previous export")

    def interrupted(module, f):  # writes half a file, then fails
        Path(f).write_bytes(b"PK\x03\x04 half")
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(torch.jit, "save", interrupted)
        with pytest.raises(KeyboardInterrupt):
            export_model(make(), path, fmt="torchscript")
    assert path.read_bytes() == b"previous export"
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary left behind
    export_model(make(), path, fmt="torchscript")
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]
    packed = batch(make(), [64, 9])
    verify_export(path, make(), packed)


def test_errors_are_one_clear_line(tmp_path):
    model = make()
    with pytest.raises(InvalidInputError, match="unknown export format 'tflite'; choose one of onnx, torchscript"):
        export_model(model, tmp_path / "m.tflite", fmt="tflite")  # type: ignore[arg-type]
    (tmp_path / "file").write_text("")
    with pytest.raises(MsptError, match=r"cannot write into .*file: .*file is a file, not a directory"):
        export_model(model, tmp_path / "file" / "m.pt", fmt="torchscript")  # the parent is a file
    with pytest.raises(MsptError, match="cannot write"):
        export_model(model, tmp_path, fmt="torchscript")  # a directory
    wrong = batch(make(in_features=5), [20])
    with pytest.raises(InvalidInputError, match="example features have 5 columns, the model takes 3"):
        export_model(model, tmp_path / "m.pt", fmt="torchscript", example=wrong)
    with pytest.raises(MsptError, match="no exported model at"):
        run_exported(tmp_path / "missing.onnx", {})
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(MsptError, match=r"cannot load .*junk\.onnx as ONNX"):
        run_exported(tmp_path / "junk.onnx", {})
    path = export_model(model, tmp_path / "c.pt", fmt="torchscript")
    arrays = layout_inputs(batch(model, [20]))
    del arrays["key_bias"]
    with pytest.raises(InvalidInputError, match=r"missing \['key_bias'\]"):
        run_exported(path, arrays)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "file", "junk.onnx"]


def test_export_run_writes_nothing_when_verification_fails(tmp_path, monkeypatch, trained):
    """``mspt export``: the graph is verified under a temporary name; a failure leaves neither file behind."""
    import msptcli.export as command

    checkpoint = trained.run

    def disagree(path, model, batch, **kw):
        assert Path(path).is_file() and Path(path).name.startswith(".model.")  # the temporary graph
        raise MsptError(f"exported model {path} disagrees with PyTorch")

    monkeypatch.setattr(command, "verify_export", disagree)
    with pytest.raises(MsptError, match="disagrees"):
        command.export_run(checkpoint, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    path, fmt, diff = command.export_run(checkpoint, tmp_path / "model.pt")
    assert path == tmp_path / "model.pt"
    assert fmt == "torchscript" and diff < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model.pt.json"]
