"""The portable model: a trained network as one ONNX or TorchScript graph for any number of points and clouds.

The exported graph is the network's own forward pass, called on plain tensors (nothing re-implemented), through
``graph.py``'s ``ExportableNetwork``; its inputs (the layout's index tensors, and with anchors the queries') are
listed there, and ``layout_inputs`` / ``query_inputs`` build them. Here the graph is written (atomically), run in
its own runtime and verified against PyTorch.

ONNX goes through ``torch.onnx.export(dynamo=True)`` (``torch.export`` + onnxscript):
it keeps every axis symbolic and translates every variant; TorchScript through
``torch.jit.trace``, whose tracer records the same shape reads as graph ops.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import logging
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import get_args

import numpy as np
import torch
from torch import Tensor

from msptcli.choices import ExportFormat
from msptcli.errors import InvalidInputError, MsptError
from msptcli.io.atomic import atomic_output
from msptcli.model.config import ModelConfig
from msptcli.model.network import Network
from msptcli.runtime.graph import (
    AXES,
    DEFAULT_EXAMPLE_SIZES,
    OUTPUT_NAME,
    ExportableNetwork,
    QueryExample,
    layout_inputs,
    query_axes,
    query_inputs,
    random_example,
)
from msptcli.runtime.inference import PackedClouds, predict

Format = ExportFormat
FORMATS: tuple[str, ...] = get_args(Format)


def export_model(
    model: Network, path: str | Path, *, fmt: Format = "onnx", example: PackedClouds | QueryExample | None = None
) -> Path:
    """Write ``model`` to ``path`` as an ONNX or TorchScript graph that takes any batch of clouds.

    Args:
        model: a trained MSPT (any device and dtype; the graph is float32 on the CPU). Not modified.
        path: the output file; it appears whole or not at all.
        fmt: ``onnx`` (recommended) or ``torchscript``.
        example: the batch traced; only its shapes are used and the graph does not keep them.
            Default: three clouds of ``DEFAULT_EXAMPLE_SIZES`` points (random inputs), and for an
            anchor-query model as many random queries of each cloud.

    Returns:
        ``path``, as a ``Path``.
    """
    if fmt not in FORMATS:
        raise InvalidInputError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if example is None:
        example = random_example(model, DEFAULT_EXAMPLE_SIZES)
    arrays = query_inputs(example) if isinstance(example, QueryExample) else layout_inputs(example)
    inputs = {name: torch.from_numpy(a) for name, a in arrays.items()}
    if inputs["features"].shape[1] != model.in_features:
        raise InvalidInputError(
            f"example features have {inputs['features'].shape[1]} columns, the model takes {model.in_features}"
        )
    wrapper = ExportableNetwork(copy.deepcopy(model).to("cpu", torch.float32)).eval()  # a copy: model untouched
    final = Path(path)
    try:
        with atomic_output(final) as tmp, torch.no_grad(), _quiet_exporters():
            _WRITERS[fmt](wrapper, inputs, tmp)
    except OSError as e:
        raise MsptError(f"cannot write {final}: {e.strerror or e}") from e
    return final


def run_exported(path: str | Path, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N, out_features) output of an exported file, run in its own runtime (onnxruntime or TorchScript).

    ``inputs`` are the arrays of ``layout_inputs``; the format is read from the file.
    """
    path = Path(path)
    if not path.is_file():
        raise MsptError(f"no exported model at {path}")
    if zipfile.is_zipfile(path):  # TorchScript archives are zip files, ONNX files protobuf
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated")
            module = torch.jit.load(str(path), map_location="cpu")
        names = [a.name for a in module.forward.schema.arguments[1:]]  # after self
        _check_names(path, names, inputs)
        with torch.no_grad():
            return module(**{k: torch.from_numpy(np.asarray(inputs[k])) for k in names}).numpy()
    ort = _require("onnxruntime", "running ONNX models")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for unreadable files
        raise MsptError(f"cannot load {path} as ONNX: {str(e).splitlines()[0]}") from e
    names = [i.name for i in session.get_inputs()]
    _check_names(path, names, inputs)
    return session.run([OUTPUT_NAME], {k: inputs[k] for k in names})[0]


#: The default tolerance of :func:`verify_export`, and the backbones that need a wider one: Erwin-NSA's top-k choice
#: of balls is discrete, and where two balls score within float32 rounding (nearly untrained weights) onnxruntime and
#: PyTorch may choose differently; outputs then differ by up to about 1e-3 (measured 6e-4 at initialisation).
TOLERANCE = 1e-4
BACKBONE_TOLERANCE = {"erwin-nsa": 2e-3}


def verify_export(
    path: str | Path,
    model: Network,
    batch: PackedClouds | QueryExample,
    *,
    atol: float | None = None,
    rtol: float | None = None,
) -> float:
    """Max abs difference between an exported file and ``model`` on ``batch``; raises beyond tolerance.

    Both run the same inference path (:func:`msptcli.runtime.inference.predict`, whole batch, float32 on the
    CPU; for an anchor-query model its forward pass on the anchors and queries); passes where
    ``|exported - model| <= atol + rtol * |model|`` at every output (as ``np.allclose``); both default to
    ``TOLERANCE``, or the backbone's ``BACKBONE_TOLERANCE``.
    """
    default = BACKBONE_TOLERANCE.get(model.config.backbone, TOLERANCE)
    atol = default if atol is None else atol
    rtol = default if rtol is None else rtol
    if isinstance(batch, QueryExample):
        got = run_exported(path, query_inputs(batch))
        net = copy.deepcopy(model).to("cpu", torch.float32).eval()
        a = batch.anchors
        with torch.no_grad():
            want = net(a.features, a.layout, queries=batch.queries, trees=a.trees).numpy().astype(np.float64)
    else:
        got = batch.unpack(run_exported(path, layout_inputs(batch)))
        want = predict(model, batch, device="cpu", bf16=False, chunk_points=None).astype(np.float64)  # (N, out)
    if got.shape != want.shape:
        raise MsptError(f"exported model {path} gives outputs of shape {got.shape}, PyTorch {want.shape}")
    diff = np.abs(got.astype(np.float64) - want)
    worst = float(diff.max()) if diff.size else 0.0
    if not np.all(diff <= atol + rtol * np.abs(want)):  # also fails on NaN
        raise MsptError(
            f"exported model {path} disagrees with PyTorch: max abs difference {worst:.3g} "
            f"(atol {atol:g}, rtol {rtol:g})"
        )
    return worst


def _write_onnx(wrapper: ExportableNetwork, inputs: dict[str, Tensor], tmp: Path) -> None:
    _require("onnxscript", "ONNX export")
    torch.onnx.export(
        wrapper,
        (),
        str(tmp),
        kwargs=inputs,  # graph inputs in this order
        input_names=list(inputs),
        output_names=[OUTPUT_NAME],
        dynamic_shapes=_dynamic_shapes(wrapper.model.config, inputs),
        dynamo=True,
        external_data=False,  # one self-contained file (weights inline; fine below 2 GB)
        verbose=False,
    )


def _dynamic_shapes(config: ModelConfig, inputs: dict[str, Tensor]) -> dict[str, dict[int, object]]:
    """The symbolic axes of every input; Erwin's number of points as a multiple of its whole balls (its reshapes
    into balls need it, and torch.export must be told)."""
    axes = {**AXES, **query_axes(2, nearest="query_key_rows" in inputs)}
    shapes: dict[str, dict[int, object]] = {name: dict(axes[name]) for name in inputs}
    if config.backbone == "erwin":
        points = config.erwin_settings.cloud_multiple() * torch.export.Dim("num_point_balls")
        for dims in shapes.values():
            for axis, name in dims.items():
                if name == "num_points":
                    dims[axis] = points
    return shapes


def _write_torchscript(wrapper: ExportableNetwork, inputs: dict[str, Tensor], tmp: Path) -> None:
    traced = torch.jit.trace(wrapper, example_kwarg_inputs=inputs, check_trace=False)
    torch.jit.save(traced, str(tmp))


_WRITERS: dict[str, Callable[[ExportableNetwork, dict[str, Tensor], Path], None]] = {
    "onnx": _write_onnx,
    "torchscript": _write_torchscript,
}


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Silence the exporters' notes that say nothing about our graph (torchvision absent, deprecations)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnx_ir", "onnxscript")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
        warnings.filterwarnings("ignore", message="# The axis name")  # shared axes: named once, as intended
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")  # inside torch.export
        # The width c of `qkv.split(c)` is a constant of the model: recording it as one is right.
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python integer")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def _check_names(path: Path, names: list[str], inputs: Mapping[str, np.ndarray]) -> None:
    missing = [n for n in names if n not in inputs]
    extra = [n for n in inputs if n not in names]
    if missing or extra:
        raise InvalidInputError(f"{path} takes inputs {names}; missing {missing}, unexpected {extra}")


def _require(module: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or say in one line how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MsptError(f"{purpose} needs the package {module!r}: pip install onnx onnxscript onnxruntime") from e
