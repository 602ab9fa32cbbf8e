"""The portable model: a trained MSPT as one ONNX or TorchScript graph for any number of points and clouds.

The exported graph is ``MSPT.forward`` itself, called on plain tensors (nothing re-implemented). Everything that depends
on the cloud sizes (patches, padding, supernodes) stays outside it: the caller
builds the layout with ``build_layout`` and feeds its index tensors, named as in
``PatchLayout``. Inside, every size is read from a tensor shape, so the graph
has no Python ints of one batch baked in:

    features    (N, F)           float32  packed, tree-ordered inputs
    patch_index (P, L)           int64    packed row of every patch slot (0 where padded)
    point_slot  (N,)             int64    flat slot (p * L + i) of every point
    patch_cloud (P,)             int64    cloud of every patch
    sub_slots   (P * Q, Ls)      int64    packed rows of every sub-run, padded (0 where padded)
    sub_count   (P * Q,)         int64    points pooled into every supernode
    sub_index   (B, S)           int64    supernodes of every cloud (0 where padded)
    key_bias    (P, 1, 1, L + S) float32  0 / -inf; all zeros when nothing is padded
    -> prediction (N, out_features) float32, in the same (tree) order

An anchor-query model (``model.anchors``) takes the same inputs for its anchors, then its queries:

    query_features  (M, F)        float32  inputs of the query points, in any order
    query_slots_t   (P, Lq_t)     int64    per tree t: query row of every slot of its anchor patch
    query_slot_t    (M,)          int64    per tree t: flat slot (p * Lq_t + j) of every query
    tree_reorder_1  (N,)          int64    with rotate_trees: packed anchor row of each row of tree 1
    tree_restore_1  (N,)          int64    its inverse
    -> prediction (M, out_features) float32, the queries in their own order

and with ``anchors.reads: nearest`` the queries' slots in their groups (``query_slots_0``, ``query_slot_0``), then:

    query_key_rows    (G, U)            int64    packed anchor rows of every query group's keys (0 where padded)
    query_key_bias    (G, Lq, U + S)    float32  bias of each (query slot, key): log window weight, -inf where
                                                 not among its k; 0 / -inf for the supernodes
    query_group_cloud (G,)              int64    cloud of every group

(``QueryGroups``, ``NearestKeys`` and ``AnchorTrees`` of ``model/queries.py``; ``query_inputs`` builds them all.)

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import get_args

import numpy as np
import torch
from torch import Tensor, nn

from msptcli.choices import ExportFormat
from msptcli.errors import InvalidInputError, MsptError
from msptcli.io.atomic import atomic_output
from msptcli.model.anchors import ONE_TREE, AnchorTrees, PackedAnchors, pack_anchors
from msptcli.model.config import ModelConfig
from msptcli.model.inference import PackedClouds, pack_clouds, predict
from msptcli.model.layout import PatchChunk, PatchLayout
from msptcli.model.network import Network
from msptcli.model.queries import NearestKeys, Queries, QueryGroups, locate_queries, place_queries

Format = ExportFormat
FORMATS: tuple[str, ...] = get_args(Format)

#: Graph inputs after ``features``, in order.
LAYOUT_INPUTS = ("patch_index", "point_slot", "patch_cloud", "sub_slots", "sub_count", "sub_index", "key_bias")
OUTPUT_NAME = "prediction"

#: The symbolic axes of every graph input, named as in docs/model.md.
AXES: dict[str, dict[int, str]] = {
    "features": {0: "num_points"},
    "patch_index": {0: "num_patches", 1: "patch_len"},
    "point_slot": {0: "num_points"},
    "patch_cloud": {0: "num_patches"},
    "sub_slots": {0: "num_subruns", 1: "subrun_len"},
    "sub_count": {0: "num_subruns"},
    "sub_index": {0: "num_clouds", 1: "cloud_supernodes"},
    "key_bias": {0: "num_patches", 3: "num_keys"},
}

#: Cloud sizes of the batch traced when no example is given: padded patches and supernodes.
DEFAULT_EXAMPLE_SIZES = (160, 97, 33)


def query_axes(trees: int, *, nearest: bool = False) -> dict[str, dict[int, str]]:
    """The symbolic axes of the query inputs of a model with ``trees`` ball trees (``nearest``: reads: nearest)."""
    axes = {
        "query_features": {0: "num_queries"},
        "query_key_rows": {0: "query_groups", 1: "query_keys"},
        "query_key_bias": {0: "query_groups", 1: "query_group_len", 2: "query_keys_and_supernodes"},
        "query_group_cloud": {0: "query_groups"},
    }
    for t in range(trees):
        axes[f"query_slots_{t}"] = {0: "num_patches", 1: f"query_patch_len_{t}"}
        axes[f"query_slot_{t}"] = {0: "num_queries"}
    if nearest:  # the queries' slots are in groups of anchors, not in the patches
        axes["query_slots_0"] = {0: "query_groups", 1: "query_group_len"}
    for t in range(1, trees):
        axes[f"tree_reorder_{t}"] = {0: "num_points"}
        axes[f"tree_restore_{t}"] = {0: "num_points"}
    return axes


class ExportableNetwork(nn.Module):
    """``MSPT.forward`` on the layout's index tensors, for tracing; it owns no weights of its own.

    A ``PatchLayout`` is rebuilt from the inputs: ``whole`` and ``sub_index`` are
    all the forward pass reads on one chunk, and its host-side fields (sizes, patch
    bounds) are left empty so that no size of the traced batch enters the graph.
    """

    def __init__(self, model: Network) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        features: Tensor,
        patch_index: Tensor,
        point_slot: Tensor,
        patch_cloud: Tensor,
        sub_slots: Tensor,
        sub_count: Tensor,
        sub_index: Tensor,
        key_bias: Tensor,
        query_features: Tensor | None = None,
        query_slots_0: Tensor | None = None,
        query_slot_0: Tensor | None = None,
        query_slots_1: Tensor | None = None,
        query_slot_1: Tensor | None = None,
        tree_reorder_1: Tensor | None = None,
        tree_restore_1: Tensor | None = None,
        query_key_rows: Tensor | None = None,
        query_key_bias: Tensor | None = None,
        query_group_cloud: Tensor | None = None,
    ) -> Tensor:
        n, p = features.shape[0], patch_index.shape[0]
        whole = PatchChunk(0, p, 0, n, patch_index, point_slot, patch_cloud, sub_slots, sub_count, key_bias)
        layout = PatchLayout(
            sizes=(),
            num_supernodes=self.model.config.num_supernodes,
            patch_len=patch_index.shape[1],
            patch_start=np.zeros(0, dtype=np.int64),
            sub_index=sub_index,
            whole=whole,
        )
        if query_features is None:
            return self.model(features, layout)  # (N, out_features)
        trees = ONE_TREE
        if tree_reorder_1 is not None:
            trees = AnchorTrees((None, tree_reorder_1), (None, tree_restore_1))
        if query_key_rows is not None:  # reads: nearest
            groups = QueryGroups(query_slots_0, query_slot_0)
            nearest = NearestKeys(groups, query_key_rows, query_key_bias, query_group_cloud)
            queries = Queries(query_features, (), nearest)
        else:
            groups = [QueryGroups(query_slots_0, query_slot_0)]
            if tree_reorder_1 is not None:
                groups.append(QueryGroups(query_slots_1, query_slot_1))
            queries = Queries(query_features, tuple(groups))
        return self.model(features, layout, queries=queries, trees=trees)  # (M, out)


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


@dataclass(frozen=True)
class QueryExample:
    """Anchors and queries of an anchor-query model, as fed to its exported graph."""

    anchors: PackedAnchors
    queries: Queries


def random_example(model: Network, sizes: Sequence[int], seed: int = 0) -> PackedClouds | QueryExample:
    """Clouds of random points and inputs of ``sizes`` (anchors and as many queries, for an anchor-query model)."""
    rng = np.random.default_rng(seed)
    if model.config.backbone == "erwin":  # whole balls at every level
        m = model.config.erwin_settings.cloud_multiple()
        sizes = [-(-n // m) * m for n in sizes]
    points = [rng.normal(size=(n, 3)) for n in sizes]
    features = [rng.normal(size=(n, model.in_features)).astype(np.float32) for n in sizes]
    if model.config.anchors is None:
        return pack_clouds(points, features, model.config)
    anchors = pack_anchors(points, features, model.config)
    queries = [rng.normal(size=(n, 3)) for n in sizes]
    q_features = np.concatenate([rng.normal(size=(n, model.in_features)) for n in sizes]).astype(np.float32)
    return QueryExample(anchors, place_queries(anchors, locate_queries(anchors, queries), q_features))


def query_inputs(example: QueryExample) -> dict[str, np.ndarray]:
    """The named arrays to feed an exported anchor-query model, in the order of its graph inputs."""
    a, q = example.anchors, example.queries
    arrays = layout_inputs(a.layout, a.features)
    arrays["query_features"] = _float32(q.features)
    for t, groups in enumerate(q.groups):
        arrays[f"query_slots_{t}"] = groups.slots.cpu().numpy().astype(np.int64)
        arrays[f"query_slot_{t}"] = groups.query_slot.cpu().numpy().astype(np.int64)
    for t in range(1, a.trees.count):
        arrays[f"tree_reorder_{t}"] = a.trees.reorder[t].cpu().numpy().astype(np.int64)
        arrays[f"tree_restore_{t}"] = a.trees.restore[t].cpu().numpy().astype(np.int64)
    if q.nearest is not None:
        arrays["query_slots_0"] = q.nearest.groups.slots.cpu().numpy().astype(np.int64)
        arrays["query_slot_0"] = q.nearest.groups.query_slot.cpu().numpy().astype(np.int64)
        arrays["query_key_rows"] = q.nearest.key_rows.cpu().numpy().astype(np.int64)
        arrays["query_key_bias"] = _float32(q.nearest.key_bias)
        arrays["query_group_cloud"] = q.nearest.group_cloud.cpu().numpy().astype(np.int64)
    return arrays


def layout_inputs(
    batch_or_layout: PackedClouds | PatchLayout, features: Tensor | np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The named arrays to feed an exported model, in the order of its graph inputs.

    Args:
        batch_or_layout: a ``PackedClouds`` (its features are the default), or a ``PatchLayout``.
        features: (N, F) packed, tree-ordered and normalised inputs; required with a bare layout.
    """
    if isinstance(batch_or_layout, PackedClouds):
        layout = batch_or_layout.layout
        features = batch_or_layout.features if features is None else features
    else:
        layout = batch_or_layout
    if features is None:
        raise InvalidInputError("layout_inputs needs the features of the batch")
    w = layout.whole
    p, length = w.patch_index.shape
    s = layout.sub_index.shape[1]
    bias = torch.zeros(p, 1, 1, length + s) if w.key_bias is None else w.key_bias  # one graph signature
    arrays = {"features": _float32(features)}
    tensors = (w.patch_index, w.point_slot, w.patch_cloud, w.sub_slots, w.sub_count, layout.sub_index)
    arrays.update(
        {name: t.detach().cpu().numpy().astype(np.int64) for name, t in zip(LAYOUT_INPUTS[:-1], tensors, strict=True)}
    )
    arrays["key_bias"] = _float32(bias)
    if arrays["features"].ndim != 2 or len(arrays["features"]) != layout.num_points:
        raise InvalidInputError(f"features must be ({layout.num_points}, F), got {arrays['features'].shape}")
    return arrays


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

    Both run the same inference path (:func:`msptcli.model.inference.predict`, whole batch, float32 on the
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


def _float32(a: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(a, Tensor):
        a = a.detach().cpu().numpy()
    return np.ascontiguousarray(a, dtype=np.float32)


def _require(module: str, purpose: str) -> ModuleType:
    """Import an optional dependency, or say in one line how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MsptError(f"{purpose} needs the package {module!r}: pip install onnx onnxscript onnxruntime") from e
